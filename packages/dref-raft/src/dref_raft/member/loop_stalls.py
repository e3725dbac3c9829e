"""`LoopStalls`: how long this process's event loop was kept from running ready work.

A task asks to wake every `interval` seconds; how much later than that it runs is how long the
loop was busy in one callback, or waited for the GIL another thread held, or waited for a CPU
(a loaded machine): a stall. Stalls above `threshold` are counted and logged at INFO (logger
`dref_raft.member.loop`) with their length, the CPU time this process used meanwhile — on the
loop's thread and in its other threads (a stall with little of either was the machine's, not
this process's) — and the wall-clock time they ended; the longest is kept. `dref raft node
--log-loop-stalls MS` runs it in a member process (benchmarks/raft_snapshot_bench.py reads those
lines).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

__all__ = ["LoopStalls"]

logger = logging.getLogger("dref_raft.member.loop")


@dataclass
class LoopStalls:
    """Samples the running loop until cancelled (see the module docstring)."""

    threshold: float = 0.05
    """Seconds: longer stalls are counted and logged."""
    interval: float = 0.005
    """Seconds between samples."""
    longest: float = 0.0
    """The longest stall seen, in seconds."""
    over_threshold: int = 0
    """How many stalls were longer than `threshold`."""

    async def run(self) -> None:
        """Sample until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self.interval
            thread_cpu, process_cpu = time.thread_time(), time.process_time()
            await asyncio.sleep(self.interval)
            late = loop.time() - asked
            self.longest = max(self.longest, late)
            if late > self.threshold:
                self.over_threshold += 1
                on_loop = time.thread_time() - thread_cpu
                elsewhere = max(0.0, time.process_time() - process_cpu - on_loop)
                logger.info(
                    "event loop stalled %.1f ms: %.1f ms on the loop's thread, %.1f ms in "
                    "other threads (ended at %.3f)",
                    late * 1000,
                    on_loop * 1000,
                    elsewhere * 1000,
                    time.time(),
                )
