"""The exactly-once nemesis shared by `test_exactly_once_procs.py` and `benchmarks/raft_chaos.py`:
tasks of one client-mode context increment one element while the leader process is SIGKILLed
(and restarted from its storage) and other members are paused with SIGSTOP/SIGCONT."""

from __future__ import annotations

import asyncio
import random
import signal
from dataclasses import dataclass, field

from cluster_procs import NodeProcess, ProcCluster

import dref
from dref_raft.transport import LeaderClient


@dataclass
class ChaosReport:
    """What the clients saw: every returned value, how many calls raised, the final value."""

    returned: list[int] = field(default_factory=list)
    raised: int = 0
    final: int = -1
    kills: int = 0
    pauses: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        calls = len(self.returned) + self.raised
        return (
            f"calls {calls}, returned {len(self.returned)}, raised {self.raised}, "
            f"final value {self.final}, distinct returned {len(set(self.returned))}, "
            f"leader kills {self.kills}, pauses {self.pauses}, errors {self.errors}"
        )


async def leader_of(cluster: ProcCluster) -> NodeProcess | None:
    """The process that says it leads (None if none answers so)."""
    for node in cluster.nodes:
        if node.proc is None:
            continue
        client = LeaderClient(node.address, target_id=node.node_id)
        try:
            if (await client.status(timeout=0.5)).role == "leader":
                return node
        except Exception:
            continue
        finally:
            await client.aclose()
    return None


async def run_chaos(
    cluster: ProcCluster,
    *,
    seconds: float,
    tasks: int,
    period: float,
    seed: int = 7,
    exactly_once: bool = True,
) -> ChaosReport:
    report = ChaosReport()
    rng = random.Random(seed)
    options = {
        "mode": "client",
        "endpoints": cluster.endpoints,
        "op_timeout": 15.0,
        "exactly_once": exactly_once,
    }
    loop = asyncio.get_running_loop()
    async with dref.connect("raft", **options) as ctx:
        ref = await ctx.make(0, "chaos:counter")
        end = loop.time() + seconds

        async def worker() -> None:
            while loop.time() < end:
                try:
                    report.returned.append(await ref.update_and_get(lambda n: n + 1))
                except Exception as exc:
                    report.raised += 1
                    name = type(exc).__name__
                    report.errors[name] = report.errors.get(name, 0) + 1

        async def nemesis() -> None:
            turn = 0
            while loop.time() + period < end:
                await asyncio.sleep(period)
                turn += 1
                if turn % 2:
                    victim = await leader_of(cluster)
                    if victim is None:
                        continue
                    victim.kill()
                    report.kills += 1
                    await asyncio.to_thread(victim.start)  # recovers from its storage
                else:
                    victim = rng.choice(cluster.nodes)
                    victim.signal(signal.SIGSTOP)
                    report.pauses += 1
                    try:
                        await asyncio.sleep(period / 2)
                    finally:
                        victim.signal(signal.SIGCONT)

        await asyncio.gather(nemesis(), *(worker() for _ in range(tasks)))
        report.final = await ref.get()
    return report
