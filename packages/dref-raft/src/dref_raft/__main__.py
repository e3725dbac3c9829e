"""Run one Raft member until SIGTERM/SIGINT: `python -m dref_raft --node-id n1 --port 8082 ...`.

Options override `DREF_RAFT_*` (and upstream's `DREF_PORT`) settings. Once serving, it prints
`dref-raft node <id> serving <host:port>` on stdout (scripts and tests wait for that line).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from dref.errors import DRefError
from dref.settings import load_settings
from dref_raft.backend import acquire_member, release_member
from dref_raft.settings import RaftSettings


def _options(argv: list[str] | None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m dref_raft", description=__doc__)
    parser.add_argument("--node-id")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--endpoints", help="id=host:port,... (every member, self included)")
    parser.add_argument("--expected-size", type=int)
    parser.add_argument("--storage-dir")
    parser.add_argument("--snapshot-every", type=int)
    parser.add_argument("--heartbeat-interval", type=float)
    parser.add_argument("--election-timeout", type=float)
    parser.add_argument("--log-level", default="WARNING")
    args = vars(parser.parse_args(argv))
    logging.basicConfig(level=args.pop("log_level").upper(), stream=sys.stderr)
    return {k: v for k, v in args.items() if v is not None}


async def _serve(options: dict[str, Any]) -> None:
    settings = load_settings(RaftSettings, options, table="raft")
    member = await acquire_member(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        print(f"dref-raft node {settings.node_id} serving {settings.address}", flush=True)
        await stop.wait()
    finally:
        await release_member(member)


def main(argv: list[str] | None = None) -> int:
    options = _options(argv)
    try:
        asyncio.run(_serve(options))
    except DRefError as exc:
        print(f"dref-raft: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
