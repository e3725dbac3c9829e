"""Names: ManualId verbatim, AutoId from the call site."""

from __future__ import annotations

import hashlib

import pytest

import dref


async def test_manual_and_plain_names() -> None:
    async with dref.connect("inmemory") as ctx:
        assert (await ctx.make(1, dref.ManualId("ids:a"))).name == "ids:a"
        assert (await ctx.make(1, "ids:b")).name == "ids:b"
        with pytest.raises(ValueError, match="non-empty"):
            dref.ManualId("")


async def test_auto_id_is_the_call_site() -> None:
    async with dref.connect("inmemory") as ctx:
        names = [(await ctx.make(0)).name for _ in range(2)]
        other = (await ctx.make(0, dref.AutoId)).name
        lock = ctx.lock()
    assert names[0] == names[1]  # same call site, same name
    assert other != names[0]
    site, digest = names[0].split(" ")
    assert site.startswith(f"{__name__}:")
    assert digest == f"({hashlib.sha256(site.encode()).hexdigest()})"
    assert lock.name.startswith(f"{__name__}:")
