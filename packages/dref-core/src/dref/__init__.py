"""dref: distributed atomic references, locks and change streams over pluggable backends.

```python
import dref

async with dref.connect("inmemory") as ctx:
    counter = await ctx.make(0, "visits")
    await counter.update(lambda n: n + 1)
    async with ctx.lock("daily-report") as guard:
        ...
```
"""

from __future__ import annotations

from dref import errors
from dref.changes import ChangeEvent
from dref.clock import Clock, ManualClock, SystemClock
from dref.context import Connector, DRefContext, connect
from dref.hookspecs import hookimpl
from dref.ids import AutoId, ManualId
from dref.lock import Lock, LockGuard
from dref.ref import ChangeHandle, ChangeStream, DRef
from dref.settings import DRefSettings
from dref.spi import (
    Backend,
    BackendSpec,
    BackendStatus,
    Capabilities,
    LockGrant,
    ReadConsistency,
    WriteFence,
)

__version__ = "0.1.0"

__all__ = [
    "AutoId",
    "Backend",
    "BackendSpec",
    "BackendStatus",
    "Capabilities",
    "ChangeEvent",
    "ChangeHandle",
    "ChangeStream",
    "Clock",
    "Connector",
    "DRef",
    "DRefContext",
    "DRefSettings",
    "Lock",
    "LockGrant",
    "LockGuard",
    "ManualClock",
    "ManualId",
    "ReadConsistency",
    "SystemClock",
    "WriteFence",
    "connect",
    "errors",
    "hookimpl",
]
