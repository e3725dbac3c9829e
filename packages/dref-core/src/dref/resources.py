"""The one resource protocol of dref: `aclose()`, and `async with` built on it."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self

__all__ = ["AsyncResource"]


class AsyncResource(abc.ABC):
    """`async with resource:` returns the resource and awaits `aclose()` on exit."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release what the resource holds; idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
