"""The two ends of the direct-link benchmark, each in its own process.

    python -m benchmarks.direct_peers echo  MODE SPEC_JSON   # prints {"port": N} or {"ready": 1}
    python -m benchmarks.direct_peers drive MODE SPEC_JSON   # prints the result, exits

MODE is one of

* ``raw``  — the baseline: plain trio TCP (``SocketStream``), fixed-size
  messages as long as an encoded chat frame, no framing or JSON;
* ``link`` — chathack's direct link: :func:`peer.direct.dial` /
  :func:`peer.direct.accept` (Hello handshake), ``Chat`` frames encoded as
  length + JSON, read by ``FrameReader``, written by ``StreamWriter``;
* ``node`` — two full :class:`peer.node.PeerNode` (``open_peer``) logged in to
  a rendezvous, talking over the direct link they set up themselves
  (conversation sequencing, acks, keepalives, UI events included).

The driver keeps ``window`` messages in flight; the echo end answers each
message with one of the same size. Every message's text starts with its send
time (CLOCK_MONOTONIC ns); the driver records the one-way latency of each
answer. Both ends stop by themselves after ``deadline_s``.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING

import trio

from benchmarks.hist import bucket
from chathack.link import Chat, encode_frame

if TYPE_CHECKING:
    from peer.direct import DirectLink
    from peer.node import PeerConfig

STAMP = 20  # digits of the send time at the start of each message


def stamped(text_bytes: int) -> str:
    return f"{time.monotonic_ns():020d} " + "x" * (text_bytes - STAMP - 1)


def frame_bytes(text_bytes: int) -> int:
    """Bytes on the wire of one chat frame with ``text_bytes`` of text."""
    return len(encode_frame(Chat("0123456789abcdef", 1000, 1000, stamped(text_bytes), 0.0)))


def say(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Tally:
    """Answers received by the driver: count and latency, after the warm-up."""

    def __init__(self, spec: dict) -> None:
        self.start = time.monotonic() + spec["warmup"]
        self.end = self.start + spec["seconds"]
        self.max_count = spec["max_count"]
        self.count = 0
        self.hist: Counter[int] = Counter()
        self.done = trio.Event()

    def got(self, stamp: bytes | str) -> None:
        now = time.monotonic()
        if now >= self.start:
            self.count += 1
            self.hist[bucket(time.monotonic_ns() - int(stamp))] += 1
        if now >= self.end or self.count >= self.max_count:
            self.done.set()

    def result(self) -> dict:
        seconds = min(time.monotonic(), self.end) - self.start
        return {"answers": self.count, "seconds": seconds, "hist": self.hist}


# ---------------------------------------------------------------- raw TCP
async def raw_echo(spec: dict) -> None:
    size = spec["size"]

    async def handler(stream: trio.SocketStream) -> None:
        buf = b""
        while data := await stream.receive_some(65536):
            buf += data
            n = len(buf) // size
            if n:
                buf = buf[n * size :]
                now = b"%020d" % time.monotonic_ns()
                await stream.send_all((now + b"x" * (size - STAMP)) * n)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    say({"port": listeners[0].socket.getsockname()[1]})
    await trio.serve_listeners(handler, listeners)


async def raw_drive(spec: dict) -> dict:
    size, tally = spec["size"], Tally(spec)
    stream = await trio.open_tcp_stream("127.0.0.1", spec["port"])
    pad = b"x" * (size - STAMP)
    await stream.send_all((b"%020d" % time.monotonic_ns() + pad) * spec["window"])
    buf = b""
    while not tally.done.is_set():
        buf += await stream.receive_some(65536)
        n = len(buf) // size
        for i in range(n):
            tally.got(buf[i * size : i * size + STAMP])
        buf = buf[n * size :]
        if n:
            await stream.send_all((b"%020d" % time.monotonic_ns() + pad) * n)
    await stream.aclose()
    return tally.result()


# ------------------------------------------------------- peer.direct link
async def _pump(
    link: DirectLink, tally: Tally | None, nursery: trio.Nursery, text_bytes: int
) -> None:
    seq = 0
    while True:
        frame = await link.reader.next_frame()
        if frame is None:
            return
        if isinstance(frame, Chat):
            if tally is not None:
                tally.got(frame.text[:STAMP])
                if tally.done.is_set():
                    nursery.cancel_scope.cancel()
                    return
            seq += 1
            link.send(Chat("e" * 16, seq, seq, stamped(text_bytes), 0.0))


async def link_echo(spec: dict) -> None:
    from peer import direct

    async def handler(stream: trio.SocketStream) -> None:
        link = await direct.accept(stream, "echo", "e" * 16)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.writer.run)
            await _pump(link, None, nursery, spec["text_bytes"])
            link.writer.finish()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    say({"port": listeners[0].socket.getsockname()[1]})
    await trio.serve_listeners(handler, listeners)


async def link_drive(spec: dict) -> dict:
    from peer import direct

    tally = Tally(spec)
    link = await direct.dial("127.0.0.1", spec["port"], "drive", "echo", "d" * 16)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.writer.run)
        for seq in range(1, spec["window"] + 1):
            link.send(Chat("d" * 16, seq, seq, stamped(spec["text_bytes"]), 0.0))
        await _pump(link, tally, nursery, spec["text_bytes"])
    await link.aclose()
    return tally.result()


# --------------------------------------------------------- full PeerNode
def _config(name: str, spec: dict) -> PeerConfig:
    from peer.node import PeerConfig

    return PeerConfig(
        name, server_host="127.0.0.1", server_port=spec["server_port"], listen_host="127.0.0.1"
    )


async def node_echo(spec: dict) -> None:
    from peer.events import Incoming
    from peer.node import fixed_password, open_peer

    async with open_peer(_config("echo", spec), fixed_password(spec["password"])) as node:
        say({"ready": 1})
        async for ev in node.events:
            if isinstance(ev, Incoming):
                await node.send(ev.origin, stamped(spec["text_bytes"]))


async def node_drive(spec: dict) -> dict:
    from peer.events import Incoming
    from peer.node import fixed_password, open_peer

    async with open_peer(_config("drive", spec), fixed_password(spec["password"])) as node:
        talk = await node.connect("echo")
        assert talk is not None, "the rendezvous did not find the echo peer"
        # The node announces path changes with events: wait for the direct link.
        with trio.move_on_after(10):
            while talk.path == "relayed":
                await node.events.receive()
        path = talk.path
        tally = Tally(spec)  # the clock starts once the link is up
        for _ in range(spec["window"]):
            await node.send("echo", stamped(spec["text_bytes"]))
        async for ev in node.events:
            if isinstance(ev, Incoming):
                tally.got(ev.text[:STAMP])
                if tally.done.is_set():
                    break
                await node.send("echo", stamped(spec["text_bytes"]))
        return {**tally.result(), "path": path}


ECHO = {"raw": raw_echo, "link": link_echo, "node": node_echo}
DRIVE = {"raw": raw_drive, "link": link_drive, "node": node_drive}


async def _main(role: str, mode: str, spec: dict) -> None:
    with trio.move_on_after(spec["deadline_s"]):
        if role == "echo":
            await ECHO[mode](spec)
        else:
            cpu0 = time.process_time()
            result = await DRIVE[mode](spec)
            say({**result, "cpu_s": time.process_time() - cpu0})


if __name__ == "__main__":
    trio.run(_main, sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
