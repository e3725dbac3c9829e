"""Run one Raft member until SIGTERM/SIGINT: `python -m dref_raft --node-id n1 --port 8082 ...`.

Options override `DREF_RAFT_*` (and upstream's `DREF_PORT`) settings. Once serving, it prints
`dref-raft node <id> serving <host:port>` on stdout (scripts and tests wait for that line).
`--status-file PATH` also keeps a small JSON status there (see `dref_raft.local_cluster`).
`dref raft node` is the same member behind click options (`dref_raft.cli.run_member`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from dref_raft.cli import run_member


def _options(argv: list[str] | None) -> tuple[dict[str, Any], Path | None]:
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
    parser.add_argument("--status-file", type=Path)
    parser.add_argument("--log-level", default="WARNING")
    args = vars(parser.parse_args(argv))
    logging.basicConfig(level=args.pop("log_level").upper(), stream=sys.stderr)
    status_file = args.pop("status_file")
    return {k: v for k, v in args.items() if v is not None}, status_file


def main(argv: list[str] | None = None) -> int:
    options, status_file = _options(argv)
    return run_member(options, status_file=status_file)


if __name__ == "__main__":
    sys.exit(main())
