"""A simulated network: seeded loss, duplication, delay (hence reordering), late replays of
stale messages and partitions."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from dref_raft.core.messages import InstallSnapshot, Message

__all__ = ["Network", "NetworkFaults"]


@dataclass(frozen=True, slots=True)
class NetworkFaults:
    """Per-message fault probabilities and delays, in simulation steps."""

    loss: float = 0.02
    duplicate: float = 0.02
    min_delay: int = 1
    max_delay: int = 6
    #: Probability of a long delay (up to `long_delay` steps): heavy reordering.
    long_delay_chance: float = 0.01
    long_delay: int = 120
    #: Probability that a message is also kept and delivered once more much later (after
    #: `replay_min..replay_max` steps): stale messages of old terms, duplicates across terms.
    #: InstallSnapshot messages are replayed five times as often.
    replay_chance: float = 0.0
    #: Probability that a message sent into a partition is held and delivered late (after
    #: the same replay delay) instead of dropped: an old leader's messages reach the others
    #: after the partition healed and terms moved on.
    hold_blocked: float = 0.0
    replay_min: int = 100
    replay_max: int = 1500


class Network:
    """Messages in flight, ordered by delivery step; `blocked` holds one-way cuts (a, b)."""

    def __init__(self, rng: random.Random, faults: NetworkFaults) -> None:
        self._rng = rng
        self.faults = faults
        self.blocked: set[tuple[str, str]] = set()
        self._queue: list[tuple[int, int, Message]] = []
        self._counter = 0
        self.faulty = True
        #: Copies queued for a late replay (a nemesis statistic).
        self.replays = 0

    def send(self, now: int, msg: Message) -> None:
        """Queue `msg` (unless a partition or loss drops it), perhaps twice, perhaps once more
        much later (even a message sent into a partition: it is delivered if the partition
        has healed by then)."""
        f, rng = self.faults, self._rng
        if (msg.sender, msg.to) not in self.blocked and not (self.faulty and rng.random() < f.loss):
            copies = 2 if self.faulty and rng.random() < f.duplicate else 1
            for _ in range(copies):
                delay = rng.randint(f.min_delay, f.max_delay)
                if self.faulty and rng.random() < f.long_delay_chance:
                    delay = rng.randint(f.max_delay, f.long_delay)
                self._push(now + delay, msg)
        replay = f.replay_chance * (5 if isinstance(msg, InstallSnapshot) else 1)
        if (msg.sender, msg.to) in self.blocked:
            replay = f.hold_blocked
        if self.faulty and replay and rng.random() < replay:
            self.replays += 1
            self._push(now + rng.randint(f.replay_min, f.replay_max), msg)

    def _push(self, at: int, msg: Message) -> None:
        self._counter += 1
        heapq.heappush(self._queue, (at, self._counter, msg))

    def due(self, now: int) -> list[Message]:
        """Messages to deliver at step `now` (a partition also cuts messages in flight)."""
        out = []
        while self._queue and self._queue[0][0] <= now:
            _, _, msg = heapq.heappop(self._queue)
            if (msg.sender, msg.to) not in self.blocked:
                out.append(msg)
        return out

    def heal(self) -> None:
        """Remove every partition."""
        self.blocked.clear()

    def partition(self, groups: list[list[str]]) -> None:
        """Cut both directions between different groups."""
        self.blocked.clear()
        for i, a in enumerate(groups):
            for b in groups[i + 1 :]:
                for x in a:
                    for y in b:
                        self.blocked.add((x, y))
                        self.blocked.add((y, x))

    def cut_one_way(self, sender: str, receiver: str) -> None:
        """Drop every message from `sender` to `receiver` (but not back)."""
        self.blocked.add((sender, receiver))
