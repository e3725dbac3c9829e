"""The example third-party backend, installed through its entry point, passes the suite."""

from __future__ import annotations

from importlib.metadata import entry_points

import dref
from dref_compat.conformance import BackendConformance


def test_registered_through_its_entry_point_only() -> None:
    (ep,) = [ep for ep in entry_points(group="dref.backends") if ep.name == "example-dict"]
    assert ep.value == "dref_example_plugin"
    assert ep.dist is not None
    assert ep.dist.name == "dref-example-plugin"


async def test_uses_core_fallbacks() -> None:
    async with dref.connect("example-dict") as ctx:
        assert not ctx.backend.capabilities.native_cas
        ref = await ctx.make(0, "example:fallback")
        assert await ref.update_and_get(lambda n: n + 1) == 1  # upstream lock protocol


class TestExamplePlugin(BackendConformance):
    backend = "example-dict"
