"""What a load-generator worker does with its clients (one class per scenario).

Each role logs its clients in during ``setup``, starts load on ``start``,
hands back counters since the previous call on ``snapshot`` and closes
everything on ``stop``. Counters are plain ints and a latency histogram
(:mod:`benchmarks.hist`), so the hot loops stay cheap.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import trio

from benchmarks.hist import bucket
from benchmarks.loadgen import Conn, irc_login, login, read_token

#: Logins a worker has in flight at once (each has the server's login timeout).
LOGIN_CONCURRENCY = 64
#: Seconds a stopping role lets messages in flight arrive before closing.
DRAIN_SECONDS = 0.5


class Role:
    def __init__(self, spec: dict, nursery: trio.Nursery) -> None:
        self.spec = spec
        self.host: str = spec["host"]
        self.port: int = spec["port"]
        self.password: str = spec["password"]
        self.nursery = nursery
        self.conns: list[Conn] = []
        self.running = False
        self.count = 0
        self.errors = 0
        self.hist: Counter[int] = Counter()
        self._scope = trio.CancelScope()
        self._done = trio.Event()

    async def login_all(self, names: list[str]) -> dict:
        limit = trio.Semaphore(self.spec.get("login_concurrency", LOGIN_CONCURRENCY))
        conns: list[Conn | None] = [None] * len(names)
        lat: Counter[int] = Counter()

        async def one(i: int, name: str) -> None:
            async with limit:
                t0 = time.monotonic_ns()
                # "ports": where each name logs in, when the instances of a
                # cluster share the load (the scale-out scenario).
                port = self.spec.get("ports", {}).get(name, self.port)
                if self.spec.get("irc"):
                    conns[i] = await irc_login(self.host, port, name)
                else:
                    conns[i] = await login(
                        self.host, port, name, self.password, self.spec.get("tls", False)
                    )
                lat[bucket(time.monotonic_ns() - t0)] += 1

        t0 = time.monotonic()
        async with trio.open_nursery() as nursery:
            for i, name in enumerate(names):
                nursery.start_soon(one, i, name)
        self.conns = [c for c in conns if c is not None]
        return {"logged_in": len(self.conns), "login_s": time.monotonic() - t0, "hist": lat}

    async def setup(self) -> dict:
        return await self.login_all(self.spec["names"])

    def start(self) -> None:
        self.running = True
        self.nursery.start_soon(self._run_load)

    async def _run_load(self) -> None:
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self.load(nursery)
        finally:
            self._done.set()

    def load(self, nursery: trio.Nursery) -> None:
        raise NotImplementedError

    def snapshot(self) -> dict:
        out = {"count": self.count, "errors": self.errors, "hist": self.hist}
        self.count, self.errors, self.hist = 0, 0, Counter()
        return out

    async def stop(self) -> dict:
        if self.running:
            self.running = False
            await trio.sleep(DRAIN_SECONDS)
            self._scope.cancel()
            await self._done.wait()
        out = self.snapshot()
        for conn in self.conns:
            conn.close()
        self.conns = []
        return out


class Idle(Role):
    """Logged-in peers that send ``::ping`` every ``interval`` seconds, like real ones."""

    def load(self, nursery: trio.Nursery) -> None:
        for conn in self.conns:
            nursery.start_soon(self._pinger, conn)

    async def _pinger(self, conn: Conn) -> None:
        interval: float = self.spec["ping_interval"]
        await trio.sleep(random.uniform(0, interval))  # spread the pings out
        n = 0
        while True:
            n += 1
            t0 = time.monotonic_ns()
            await conn.send(b"::ping %d\n" % n)
            with trio.move_on_after(interval * 2) as scope:
                while not any(x.startswith(b"Servidor[PONG]") for x in await conn.read_lines()):
                    pass
            if scope.cancelled_caught:
                self.errors += 1
            else:
                self.count += 1
                self.hist[bucket(time.monotonic_ns() - t0)] += 1
            await trio.sleep(max(0.0, interval - (time.monotonic_ns() - t0) / 1e9))


class Relay(Role):
    """Pairs that play ping-pong through ``msg:``: ``window`` messages in flight
    per pair, each side answering every message it receives. Each message
    carries its send time (CLOCK_MONOTONIC, shared by all processes)."""

    def load(self, nursery: trio.Nursery) -> None:
        by_name = {c.name: c for c in self.conns}
        for a, b in self.spec["pairs"]:
            if a in by_name and b in by_name:
                nursery.start_soon(self._side, by_name[a], b, self.spec["window"])
                nursery.start_soon(self._side, by_name[b], a, 0)

    def frame(self, partner: str) -> tuple[bytes, bytes]:
        """How a message to ``partner`` starts and ends on the wire (the send
        time goes between): chathack's ``msg:`` line here, PRIVMSG in IrcRelay."""
        tail = b" " + b"x" * max(1, self.spec["text_bytes"] - 21) + b"\n"
        return b"msg: " + partner.encode() + b" ", tail

    def stamp_at(self, line: bytes, partner: bytes) -> int:
        """Where the send time starts in a received message from ``partner``
        (-1: the line is not one)."""
        return len(partner) + 2 if line.startswith(partner + b": ") else -1

    async def other(self, conn: Conn, line: bytes) -> None:
        """A line that is not a message (IRC: a PING to answer)."""

    async def _side(self, conn: Conn, partner: str, initial: int) -> None:
        head, tail = self.frame(partner)
        who = partner.encode()
        if initial:
            await conn.send((head + b"%020d" % time.monotonic_ns() + tail) * initial)
        while True:
            lines = await conn.read_lines()
            now = time.monotonic_ns()
            n = 0
            for line in lines:
                at = self.stamp_at(line, who)
                if at >= 0:
                    n += 1
                    self.hist[bucket(now - int(line[at : at + 20]))] += 1
                else:
                    await self.other(conn, line)
            self.count += n
            if n and self.running:
                await conn.send((head + b"%020d" % time.monotonic_ns() + tail) * n)


class IrcRelay(Relay):
    """:class:`Relay`'s load spoken in IRC (``PRIVMSG``), for InspIRCd, ngircd
    and the floor relay: the same pairs, window, text and answers per read."""

    def frame(self, partner: str) -> tuple[bytes, bytes]:
        tail = b" " + b"x" * max(1, self.spec["text_bytes"] - 21) + b"\r\n"
        return b"PRIVMSG " + partner.encode() + b" :", tail

    def stamp_at(self, line: bytes, partner: bytes) -> int:
        # ":nick!user@host PRIVMSG me :TEXT": the text follows the first " :".
        at = line.find(b" :", 1)
        return at + 2 if at > 0 and b" PRIVMSG " in line[:at] else -1

    async def other(self, conn: Conn, line: bytes) -> None:
        if line.startswith(b"PING"):
            await conn.send(b"PONG" + line[4:].rstrip(b"\r") + b"\r\n")


class Lookups(Role):
    """Clients that send ``connect: TARGET`` with ``window`` lookups in flight."""

    def load(self, nursery: trio.Nursery) -> None:
        for conn, target in zip(self.conns, self.spec["targets"], strict=False):
            nursery.start_soon(self._looker, conn, target)

    async def _looker(self, conn: Conn, target: str) -> None:
        ask = f"connect: {target}\n".encode()
        await conn.send(ask * self.spec["window"])
        while True:
            n = 0
            for line in await conn.read_lines():
                if line.startswith(b"Servidor[PEER]"):
                    n += 1
                elif line.startswith(b"Servidor[ERROR]"):
                    self.errors += 1
            self.count += n
            if n and self.running:
                await conn.send(ask * n)


class Logins(Role):
    """Loops that log in, ``::quit`` and do it again, one account per loop."""

    async def setup(self) -> dict:
        return {"logged_in": 0}

    def load(self, nursery: trio.Nursery) -> None:
        for name in self.spec["names"]:
            nursery.start_soon(self._loop, name)

    async def _loop(self, name: str) -> None:
        while self.running:
            t0 = time.monotonic_ns()
            conn = await login(self.host, self.port, name, self.password)
            self.hist[bucket(time.monotonic_ns() - t0)] += 1
            self.count += 1
            try:
                await conn.send(b"::quit\n")
            finally:
                conn.close()


class Resumes(Role):
    """Loops that log in once with the password, then over and over with the
    resume token of the previous login (``resume: NAME TOKEN``) on a new
    connection, one account per loop."""

    async def setup(self) -> dict:
        info = await self.login_all(self.spec["names"])
        self.tokens = [await read_token(c) for c in self.conns]
        return info

    def load(self, nursery: trio.Nursery) -> None:
        for conn, token in zip(self.conns, self.tokens, strict=True):
            nursery.start_soon(self._loop, conn, token)
        self.conns = []  # each loop closes the connections it opens

    async def _loop(self, conn: Conn, token: bytes) -> None:
        name = conn.name
        try:
            while self.running:
                conn.close()
                t0 = time.monotonic_ns()
                conn = await Conn.open(self.host, self.port, name)
                await conn.send(b"resume: %s %s\n" % (name.encode(), token))
                token = await read_token(conn)
                self.hist[bucket(time.monotonic_ns() - t0)] += 1
                self.count += 1
        finally:
            conn.close()


ROLES: dict[str, type[Role]] = {
    "idle": Idle,
    "relay": Relay,
    "irc-relay": IrcRelay,
    "lookups": Lookups,
    "logins": Logins,
    "resumes": Resumes,
}
