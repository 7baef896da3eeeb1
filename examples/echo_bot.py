#!/usr/bin/env python3
"""A bot that answers every message with the same words, through the peer library.

    CHATHACK_PASSWORD=echo-bot-secret python examples/echo_bot.py echo --server 127.0.0.1:7777

Then, from another terminal: ``chathack-peer alice`` and ``connect: echo``.
"""

from __future__ import annotations

import argparse
import os
import sys

import trio

from peer.errors import PeerError
from peer.events import Incoming, System
from peer.node import PeerConfig, fixed_password, open_peer


async def echo(config: PeerConfig, password: str, limit: int | None) -> None:
    async with open_peer(config, fixed_password(password)) as node:
        print(f"{config.name} is listening; stop with Ctrl-C", file=sys.stderr, flush=True)
        answered = 0
        async for event in node.events:
            if isinstance(event, System):
                print(f"* {event.text}", file=sys.stderr, flush=True)
            if isinstance(event, Incoming):
                await node.send(event.origin, f"echo: {event.text}")
                answered += 1
                if limit is not None and answered >= limit:
                    with trio.move_on_after(5):
                        await node.wait_delivered()
                    await node.quit()


def main() -> int:
    p = argparse.ArgumentParser(description="Echo every chathack message back to its sender.")
    p.add_argument("name", nargs="?", default="echo", help="the bot's user name (default: echo)")
    p.add_argument("--server", default="127.0.0.1:7777", metavar="HOST:PORT")
    p.add_argument("--count", type=int, default=None, help="stop after answering N messages")
    args = p.parse_args()
    password = os.environ.get("CHATHACK_PASSWORD")
    if not password:
        p.error("set CHATHACK_PASSWORD to the bot's password")
    host, _, port = args.server.rpartition(":")
    config = PeerConfig(args.name, host, int(port), "0.0.0.0", 0)
    try:
        trio.run(echo, config, password, args.count)
    except PeerError as e:
        print(f"echo_bot: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
