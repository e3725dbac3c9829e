"""A Raft member in this process: the `raft` backend's member mode.

* `backend`: `RaftBackend` (one context's view of the member) and `open_backend`;
* `registry`: `MemberRegistry`, the members and the in-memory network of this process;
* `node`: `RaftNode`, the asyncio driver around the core (inbox, timers, sending, futures);
  every `Ready` goes through `dref_raft.apply.ReadyApplier`;
* `discovery`: upstream's address discovery and the one-time voter-set bootstrap;
* `watch_service`: the `DRefWatch` change stream a member serves to clients;
* `loop_stalls`: `LoopStalls`, how long the event loop was kept from running (a sampler).
"""
