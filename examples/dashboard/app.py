"""A live dashboard: cluster-wide counters in the browser, updated through server-sent events.

    pip install starlette uvicorn && python examples/dashboard/app.py     # http://127.0.0.1:8000

The Starlette app keeps one dref context. `GET /` is the page; `GET /events` is an event stream
that sends every counter's current value, then every change as it is committed, whichever process
made it. The app starts a local Raft cluster (unless `DREF_BACKEND` names another store) and
`--writers N` writer processes that bump random counters; any other process can bump them too:

    DREF_BACKEND=raft DREF_RAFT_MODE=client DREF_RAFT_ENDPOINTS=... \
        python examples/dashboard/app.py bump visits 3

(the app prints that line when it starts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "use_cases"))

from _launch import Workers, store

COUNTERS = ("visits", "signups", "errors")
PREFIX = "examples:dashboard:"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dref dashboard</title>
<style>
 body { font-family: sans-serif; margin: 2rem; }
 .counters { display: flex; gap: 1rem; }
 .counter { border: 1px solid #ccc; border-radius: 8px; padding: 1rem 2rem; text-align: center; }
 .value { font-size: 2.5rem; font-weight: bold; }
</style></head>
<body>
<h1>dref dashboard</h1>
<p>Status: <span id="status">connecting</span></p>
<div class="counters">
COUNTERS
</div>
<script>
const source = new EventSource("/events");
source.onopen = () => { document.getElementById("status").textContent = "live"; };
source.onerror = () => { document.getElementById("status").textContent = "reconnecting"; };
source.onmessage = (event) => {
  const change = JSON.parse(event.data);
  document.getElementById(change.name).textContent = change.value;
};
</script>
</body></html>
"""


def build_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, StreamingResponse
    from starlette.routing import Route

    import dref

    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with dref.connect() as ctx:
            state["refs"] = {name: await ctx.make(0, PREFIX + name) for name in COUNTERS}
            yield

    async def page(request: Request) -> HTMLResponse:
        boxes = "\n".join(
            f'<div class="counter"><div>{name}</div><div class="value" id="{name}">…</div></div>'
            for name in COUNTERS
        )
        return HTMLResponse(PAGE.replace("COUNTERS", boxes))

    async def events(request: Request) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
            handles = []
            try:
                for name, ref in state["refs"].items():  # subscribe first, then read: no gap
                    handles.append(await ref.on_change(lambda v, n=name: queue.put_nowait((n, v))))
                for name, ref in state["refs"].items():
                    queue.put_nowait((name, await ref.get()))
                while True:
                    name, value = await queue.get()
                    yield f"data: {json.dumps({'name': name, 'value': value})}\n\n"
            finally:
                for handle in handles:
                    handle.cancel()

        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(routes=[Route("/", page), Route("/events", events)], lifespan=lifespan)


async def bump(name: str, times: int, pause: float) -> None:
    import dref

    async with dref.connect() as ctx:
        counter = await ctx.make(0, PREFIX + name)
        for _ in range(times):
            await counter.update(lambda n: n + 1)
            if pause:
                await asyncio.sleep(pause)


async def write_forever() -> None:
    while True:
        await bump(random.choice(COUNTERS), 1, 0)
        await asyncio.sleep(random.uniform(0.2, 1.0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--writers", type=int, default=2, help="writer processes to start")
    args = parser.parse_args()
    import uvicorn

    with store() as env:
        shown = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("DREF_"))
        print(f"other processes: {shown} python {sys.argv[0]} bump visits 3", flush=True)
        workers = Workers(__file__, env)
        try:
            for i in range(args.writers):
                workers.start(f"writer-{i + 1}")
            print(f"serving http://127.0.0.1:{args.port}", flush=True)
            uvicorn.run(build_app(), host="127.0.0.1", port=args.port, log_level="warning")
        finally:
            workers.stop()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        asyncio.run(write_forever())
    elif sys.argv[1:2] == ["bump"]:
        asyncio.run(bump(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1, 0.05))
    else:
        sys.exit(main())
