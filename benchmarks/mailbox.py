"""Mailbox benchmark: durable stores per second, and a 10,000-message backlog on login.

Run it with ``python -m benchmarks.mailbox`` (``--quick`` for a smoke run).
It starts its own rendezvous processes on 127.0.0.1 (through this module's
``--serve`` mode, so that it can choose the store's ``mail_sync`` and the rate
limits without command-line flags the server may not have yet), drives them
with raw line clients, prints a table and saves it as JSON in
``benchmarks/results/mailbox.json``.

What is measured:

* **durable stores/s** -- ``mail:`` lines answered ``Servidor[STORED]`` per
  second; each answer follows a commit (shared by the lines of one read),
  ``synchronous=FULL`` (survives a power cut) or ``NORMAL`` (survives a
  crash of the process). One client pipelining, and 10 clients at once,
  each to its own recipient. Rate limits off: this measures storage, not
  pacing.
* **backlog on login** -- 10,000 messages waiting; the time from sending
  ``password:`` to receiving the last ``Servidor[MAIL]``, the client acking
  every 128 lines (the server keeps at most 256 in flight). Once with rate
  limits off, once with the server's default limits (acks are lines too).
* **login, empty mailbox** -- the same interval with nothing waiting: the
  password check alone (argon2), to subtract from the above.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import fields
from pathlib import Path

import trio

from chathack.protocol import LineBuffer, parse_mail, parse_server_line

HOST = "127.0.0.1"
#: Seconds any single wait may take before the benchmark gives up.
DEADLINE = 120.0
#: Characters of each stored message (a short chat line as a peer's ciphertext).
TEXT_CHARS = 256
#: The client acks this many MAIL lines at a time (half the server's window).
ACK_EVERY = 128
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "mailbox.json"


# --------------------------------------------------------------------------
# The server, in its own process
# --------------------------------------------------------------------------


def _serve_main(db: str, mail_sync: str, limits: str) -> None:
    """``--serve``: run a rendezvous and print its port on stdout."""
    from rendezvous.server import Limits, Server
    from rendezvous.store import SqliteStore

    if limits == "off":
        names = {f.name for f in fields(Limits)}
        off = ("max_msg_rate", "max_cmd_rate", "max_login_rate", "idle_timeout")
        chosen = Limits(**{k: 0 for k in off if k in names})  # type: ignore[arg-type]
    else:
        chosen = Limits()
    logging.basicConfig(filename=db + ".log", level=logging.INFO)
    store = SqliteStore(db, mail_sync=mail_sync)

    async def main() -> None:
        server = Server(store, limits=chosen)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve, HOST, 0)
            print(listeners[0].socket.getsockname()[1], flush=True)

    try:
        trio.run(main)
    finally:
        store.close()


@asynccontextmanager
async def rendezvous(db: Path, mail_sync: str, limits: str) -> AsyncIterator[int]:
    """A server process on ``db`` (its log beside it); yields its port; killed on the way out."""
    argv = [sys.executable, "-m", "benchmarks.mailbox", "--serve", str(db), mail_sync, limits]
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout is not None
        port = Client(proc.stdout)  # type: ignore[arg-type]
        with trio.fail_after(DEADLINE):
            yield int(await port.line())
    finally:
        proc.kill()
        with trio.move_on_after(DEADLINE):
            await proc.wait()


# --------------------------------------------------------------------------
# A raw line client
# --------------------------------------------------------------------------


class Client:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = LineBuffer(1 << 20)

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(await trio.open_tcp_stream(HOST, port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def line(self) -> str:
        while (line := self.buf.next_line()) is None:
            data = await self.stream.receive_some(1 << 16)
            if not data:
                raise RuntimeError("the server closed the connection")
            self.buf.receive_data(data)
        return line

    async def expect(self, flag: str) -> str:
        line = await self.line()
        prefix = f"Servidor[{flag}]: "
        if not line.startswith(prefix):
            raise RuntimeError(f"expected {flag}, got {line[:100]!r}")
        return line[len(prefix) :]

    async def start_login(self, name: str) -> float:
        """Log in (registering if need be) up to ``SEEN``; when the password went out."""
        await self.expect("USERNAME")
        await self.send(f"username: {name}\n".encode())
        await self.expect("PASSWORD")
        t0 = time.perf_counter()
        await self.send(f"password: {name}-secret\n".encode())
        await self.expect("OK")
        await self.expect("SEEN")
        return t0

    async def login(self, name: str) -> float:
        """Log in; the seconds from password to TOKEN, the last line of the reply."""
        t0 = await self.start_login(name)
        await self.expect("TOKEN")
        return time.perf_counter() - t0

    async def close(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def register(port: int, names: list[str]) -> None:
    for name in names:
        c = await Client.connect(port)
        await c.login(name)
        await c.close()


# --------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------


class StartLine:
    """Lets ``n`` clients log in, then starts them all at once."""

    def __init__(self, n: int) -> None:
        self.waiting = n
        self.go = trio.Event()

    async def ready(self) -> None:
        self.waiting -= 1
        if self.waiting <= 0:
            self.go.set()
        await self.go.wait()


async def store_many(
    port: int, sender: str, to: str, n: int, start: StartLine | None = None
) -> tuple[float, float]:
    """``sender`` logs in, waits for the others at ``start``, then pipelines
    ``n`` mail lines to ``to``; returns (first send, last STORED)."""
    c = await Client.connect(port)
    await c.login(sender)
    text = "x" * TEXT_CHARS
    lines = [f"mail: {to} {to}-{i} {text}\n".encode() for i in range(n)]
    if start is not None:
        await start.ready()
    t0 = time.perf_counter()

    async def writer() -> None:
        for first in range(0, n, 256):
            await c.send(b"".join(lines[first : first + 256]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        for _ in range(n):
            await c.expect("STORED")
    t1 = time.perf_counter()
    await c.close()
    return t0, t1


async def stores_per_second(port: int, clients: int, per_client: int) -> float:
    spans: list[tuple[float, float]] = []
    start = StartLine(clients)  # logins are not measured

    async def one(k: int) -> None:
        spans.append(await store_many(port, f"s{k}", f"r{k}", per_client, start))

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            for k in range(clients):
                nursery.start_soon(one, k)
    elapsed = max(t1 for _, t1 in spans) - min(t0 for t0, _ in spans)
    return clients * per_client / elapsed


async def backlog_on_login(port: int, name: str, expected: int) -> float:
    """Seconds from ``password:`` to the last of ``expected`` MAIL lines, acking as we go."""
    with trio.fail_after(DEADLINE):
        c = await Client.connect(port)
        t0 = await c.start_login(name)  # TOKEN and MAIL follow: the loop skips non-MAIL
        await c.send(b"::ping go\n")  # starts delivery on a server that waits for a line
        got = 0
        unacked: list[str] = []
        while got < expected:
            event = parse_server_line(await c.line())
            if getattr(event, "flag", None) != "MAIL":
                continue
            item = parse_mail(event.text)
            got += 1
            unacked.append(f"{item.origin} {item.msg_id}")
            if len(unacked) == ACK_EVERY or got == expected:
                await c.send(f"ack: {' '.join(unacked)}\n".encode())
                unacked = []
        elapsed = time.perf_counter() - t0
        await c.close()
        return elapsed


async def run(quick: bool) -> dict[str, object]:
    one_n, many_n, backlog = (500, 100, 1000) if quick else (5000, 1000, 10_000)
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        for sync in ("FULL", "NORMAL"):
            db = Path(tmp) / f"mail-{sync.lower()}.sqlite3"
            async with rendezvous(db, sync, "off") as port:
                names = ["s0", "bob", "carol", "alice"] + [f"s{k}" for k in range(1, 10)]
                names += [f"r{k}" for k in range(10)]
                await register(port, names)
                one = await stores_per_second(port, 1, one_n)
                ten = await stores_per_second(port, 10, many_n)
                with trio.fail_after(DEADLINE):
                    await store_many(port, "alice", "bob", backlog)
                    await store_many(port, "alice", "carol", backlog)
                    c = await Client.connect(port)
                    login_alone = await c.login("s9")
                    await c.close()
                delivery = await backlog_on_login(port, "bob", backlog)
            async with rendezvous(db, sync, "default") as port:
                delivery_limited = await backlog_on_login(port, "carol", backlog)
            results[sync] = {
                "stores_per_s_1_client": round(one),
                "stores_per_s_10_clients": round(ten),
                "backlog_messages": backlog,
                "backlog_login_s": round(delivery, 3),
                "backlog_login_default_limits_s": round(delivery_limited, 3),
                "login_empty_mailbox_s": round(login_alone, 3),
            }
    return {
        "benchmark": "mailbox",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": quick,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "text_chars": TEXT_CHARS,
        "results": results,
    }


def table(report: dict[str, object]) -> str:
    res = report["results"]
    assert isinstance(res, dict)
    n = res["FULL"]["backlog_messages"]
    rows = [
        ("durable stores/s, 1 client", "stores_per_s_1_client", "{}"),
        ("durable stores/s, 10 clients", "stores_per_s_10_clients", "{}"),
        (f"backlog of {n:,} on login, s", "backlog_login_s", "{:.2f}"),
        (f"backlog of {n:,}, default limits, s", "backlog_login_default_limits_s", "{:.2f}"),
        ("login, empty mailbox, s", "login_empty_mailbox_s", "{:.3f}"),
    ]
    out = [
        "| measure | mail_sync=FULL | mail_sync=NORMAL |",
        "|---|---:|---:|",
    ]
    for label, key, fmt in rows:
        full, normal = (fmt.format(res[sync][key]) for sync in ("FULL", "NORMAL"))
        out.append(f"| {label} | {full} | {normal} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        _serve_main(*argv[1:4])
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.mailbox", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small numbers, for a smoke run")
    p.add_argument("--output", type=Path, default=RESULTS, help="JSON file (default: %(default)s)")
    args = p.parse_args(argv)
    report = trio.run(run, args.quick)
    print(table(report))
    print(f"({report['machine']}; Python {report['python']}, SQLite {report['sqlite']})")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
