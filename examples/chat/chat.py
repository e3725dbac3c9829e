"""Upstream's interop chat demo: every replica is a Raft member; they chat through one element.

    docker compose -f examples/chat/docker-compose.yml up --build      # three replicas

Each replica joins the cluster through upstream's discovery variables — `DREF_NODE_SERVICES` (a
DNS name every replica answers to, `dref-interop` in the compose file) or `DREF_NODE_ADDRESSES`,
and `DREF_PORT` — with `DREF_RAFT_EXPECTED_SIZE` members. They share the `ManualId`
`interop-chat-message`, holding a record `{name, message}` (msgpack, upstream's field order), so
Scala and Rust replicas of upstream's demo can join the same chat. Every replica logs each
message it sees and says something every `CHAT_EVERY` seconds (default 5); with a terminal on
stdin, each line typed is sent instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from dataclasses import dataclass

import dref

NAME = "interop-chat-message"
log = logging.getLogger("chat")


@dataclass
class ChatMessage:
    name: str
    message: str


async def chat(me: str, every: float) -> None:
    async with dref.connect("raft") as ctx:
        room = await ctx.make(ChatMessage("", ""), dref.ManualId(NAME))
        handle = await room.on_change(lambda m: log.info("%s says: %s", m.name, m.message))
        log.info("%s joined the chat", me)
        try:
            if sys.stdin is not None and sys.stdin.isatty():
                loop = asyncio.get_running_loop()
                while line := await loop.run_in_executor(None, sys.stdin.readline):
                    await room.set(ChatMessage(me, line.strip()))
            else:
                count = 0
                while True:
                    count += 1
                    await room.set(ChatMessage(me, f"hello #{count} from {me}"))
                    await asyncio.sleep(every)
        finally:
            handle.cancel()


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(message)s", force=True
    )
    os.environ.setdefault("DREF_RAFT_NODE_ID", socket.gethostname())
    me = os.environ.get("CHAT_NAME") or os.environ["DREF_RAFT_NODE_ID"]
    asyncio.run(chat(me, float(os.environ.get("CHAT_EVERY", "5"))))


if __name__ == "__main__":
    main()
