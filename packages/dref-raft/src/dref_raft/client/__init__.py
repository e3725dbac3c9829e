"""Client mode: a context that is not a member and talks to a cluster's leader.

* `backend`: `RaftClientBackend` (leader routing, retries, change streams over `DRefWatch`);
* `ops`: operation helpers over `LeaderApi` shared with the member backend (compare-and-set
  paths, fenced `try_lock`, TTL arithmetic).
"""
