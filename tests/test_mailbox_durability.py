"""The mailbox survives SIGKILL: real ``chathack-rendezvous`` processes, raw line clients.

Conventions: the server listens on 127.0.0.1 on a fixed port found by binding
port 0 (a restarted server must come back where its clients look for it);
clients are :class:`~tests.helpers.LineClient` over TCP, each read bounded by
``READ_DEADLINE`` and each test by ``TEST_DEADLINE`` (``trio.fail_after``);
nothing waits with ``sleep``: a client knows the server has acted on its
lines when the answer to a later line (``Servidor[PONG]``) arrives, because
the server handles one connection's lines in order and commits before it
answers. Every server process is killed in a ``finally``. Randomness is
seeded, so a failure replays.

The rate limits are switched off (``NO_RATE_LIMITS``): these tests send
hundreds of lines a second on purpose, and what they prove is durability, not
pacing.
"""

from __future__ import annotations

import random
import re
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from chathack.protocol import ServerLine, parse_mail, parse_mail_key, parse_server_line
from tests.helpers import LineClient
from tests.procs import Rendezvous

pytestmark = pytest.mark.e2e

NO_RATE_LIMITS = ("--max-msg-rate", "0", "--max-cmd-rate", "0", "--max-login-rate", "0")
#: Seconds one read may take (an fsync-bound burst on a slow disk, a restart).
READ_DEADLINE = 20.0
#: Seconds one whole test may take.
TEST_DEADLINE = 180.0
#: The window of MAIL lines the server keeps in flight (MailLimits.window).
WINDOW = 256


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A rendezvous on one fixed port and database, which can be SIGKILLed and restarted."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.port = free_port()
        self.proc: Rendezvous | None = None
        self.kills = 0

    def start(self) -> None:
        assert self.proc is None
        self.proc = Rendezvous(self.db, *NO_RATE_LIMITS, port=self.port)

    def ensure_running(self) -> None:
        if self.proc is None:
            self.start()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, whatever the server was doing."""
        assert self.proc is not None
        self.proc.stop(signal.SIGKILL)
        self.proc = None
        self.kills += 1

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stop(signal.SIGKILL)
            self.proc = None


@contextmanager
def rendezvous(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "rendezvous.sqlite3")
    try:
        server.start()
        yield server
    finally:
        server.close()


async def connect(server: Server) -> LineClient:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    return LineClient(stream, deadline=READ_DEADLINE)


async def login(server: Server, name: str) -> LineClient:
    client = await connect(server)
    await client.login(name, f"{name}-secret")
    return client


async def register(server: Server, *names: str) -> None:
    for name in names:
        client = await login(server, name)
        await client.send_line("::quit")
        await client.read_until_eof()
        await client.aclose()


def mail_line(msg_id: str) -> bytes:
    return f"mail: bob {msg_id} the text of {msg_id}\n".encode()


async def store_all(server: Server, ids: list[str], chunk: int = 500) -> None:
    """alice stores every id for bob (no kills), ``chunk`` lines at a time."""
    alice = await login(server, "alice")
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        await alice.send_raw(b"".join(mail_line(i) for i in part))
        for i in part:
            assert await alice.expect("STORED") == f"bob {i}"
    await alice.aclose()


class Recipient:
    """bob's side of a delivery: reads MAIL lines, checks them, acks them."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.order = {msg_id: n for n, msg_id in enumerate(ids)}
        self.acked: set[str] = set()  # acks the server has confirmed acting on
        self.ack_sent: set[str] = set()  # acks sent, confirmed or not
        self.received: set[str] = set()
        self.copies = 0  # MAIL lines received in all, duplicates included
        self._pings = 0

    async def session(
        self,
        server: Server,
        rng: random.Random,
        kill_after: int | None = None,
    ) -> list[str]:
        """Log in, receive and ack; with ``kill_after``, SIGKILL the server after
        that many MAIL lines. Return the ids received, in order."""
        bob = await login(server, "bob")
        await bob.send_line("::mailbox")  # also starts delivery with any server version
        waiting: int | None = None
        got: list[str] = []
        unacked: list[str] = []
        barriers: dict[str, list[str]] = {}  # ping token -> acks it confirms
        while waiting is None or len(got) < waiting or barriers:
            event = await bob.read_event()
            assert isinstance(event, ServerLine), event
            if event.flag == "MAILBOX":
                waiting = int(event.text.split()[0])
                continue
            if event.flag == "PONG":
                self.acked.update(barriers.pop(event.text))
                continue
            assert event.flag == "MAIL", event
            item = parse_mail(event.text)
            assert item.origin == "alice" and item.text == f"the text of {item.msg_id}"
            assert item.msg_id not in self.acked, f"{item.msg_id} came back after its ack"
            # Store order, and no gaps: whatever the server passes over was acked.
            start = self.order[got[-1]] + 1 if got else 0
            assert self.order[item.msg_id] >= start, (got[-1], item.msg_id)
            skipped = set(self.ids[start : self.order[item.msg_id]])
            assert skipped <= self.ack_sent, f"{sorted(skipped - self.ack_sent)} skipped"
            got.append(item.msg_id)
            self.received.add(item.msg_id)
            self.copies += 1
            unacked.append(item.msg_id)
            if len(got) == kill_after:
                # Some acks are on their way, some confirmed, some never sent.
                server.kill()
                await bob.aclose()
                return got
            if len(unacked) >= rng.randint(1, 64) or len(got) == waiting:
                await bob.send_line("ack: " + " ".join(f"alice {i}" for i in unacked))
                self.ack_sent.update(unacked)
                if rng.random() < 0.5 or len(got) == waiting:
                    self._pings += 1
                    token = f"b{self._pings}"
                    barriers[token] = unacked
                    await bob.send_line(f"::ping {token}")
                unacked = []
        await bob.aclose()
        return got


# --------------------------------------------------------------------------
# SIGKILL while messages are being stored
# --------------------------------------------------------------------------


async def test_sigkill_during_store_loses_nothing_and_retries_store_nothing_twice(
    tmp_path: Path,
) -> None:
    rng = random.Random(20251125)
    ids = [f"s{n:04d}" for n in range(400)]
    with trio.fail_after(TEST_DEADLINE), rendezvous(tmp_path) as server:
        await register(server, "alice", "bob")
        confirmed: set[str] = set()
        retried = 0
        while len(confirmed) < len(ids):
            server.ensure_running()
            pending = [i for i in ids if i not in confirmed]  # unanswered: send again
            retried += len(pending) if confirmed else 0
            kill_at = rng.randrange(len(pending)) if server.kills < 8 else None
            alice = await login(server, "alice")
            await alice.send_raw(b"".join(mail_line(i) for i in pending))
            for n, msg_id in enumerate(pending):
                if n == kill_at:
                    server.kill()  # the server is somewhere in the middle of the batch
                    break
                assert await alice.expect("STORED") == f"bob {msg_id}"
                confirmed.add(msg_id)
            await alice.aclose()
        assert server.kills == 8

        bob = Recipient(ids)
        got = await bob.session(server, rng)
        # Exactly once, in store order: the retries of ids that had been stored
        # (answered or not) stored nothing again.
        assert got == ids
        assert bob.copies == len(ids)


# --------------------------------------------------------------------------
# SIGKILL while messages are being delivered
# --------------------------------------------------------------------------


async def test_sigkill_during_delivery_redelivers_the_rest_in_order_never_an_acked_one(
    tmp_path: Path,
) -> None:
    rng = random.Random(7)
    ids = [f"d{n:04d}" for n in range(1200)]
    with trio.fail_after(TEST_DEADLINE), rendezvous(tmp_path) as server:
        await register(server, "alice", "bob")
        await store_all(server, ids)
        bob = Recipient(ids)
        sessions: list[list[str]] = []
        for _ in range(4):  # each killed part-way (at most 4 x 250 of 1200: always part-way)
            server.ensure_running()
            sessions.append(await bob.session(server, rng, kill_after=rng.randint(20, 250)))
        server.ensure_running()
        sessions.append(await bob.session(server, rng))  # the last one runs to the end
        assert server.kills == 4
        assert bob.received == set(ids)  # nothing lost
        # Every session after a kill went back to the oldest message whose ack
        # had not been acted on (Recipient checks "no gaps" line by line).
        assert all(s for s in sessions)
        print(
            f"\n{len(ids)} messages, {server.kills} SIGKILLs during delivery: "
            f"{bob.copies} MAIL lines, {bob.copies - len(ids)} sent again after a kill"
        )

        # Nothing waits any more, even after one more kill and restart.
        server.kill()
        server.start()
        check = await login(server, "bob")
        await check.send_line("::mailbox")
        assert await check.expect("MAILBOX") == "0 waiting for you (0 B); 0 of yours waiting"
        await check.aclose()

        # The DELIVERED receipts waited for alice through all of it.
        alice = await login(server, "alice")
        await alice.send_line("::mailbox")
        delivered: set[str] = set()
        pending: list[str] = []
        while len(delivered) < len(ids):
            event = await alice.read_event()
            assert isinstance(event, ServerLine)
            if event.flag == "MAILBOX":
                continue
            assert event.flag == "DELIVERED", event
            key = parse_mail_key(event.text)
            assert key.name == "bob"
            delivered.add(key.msg_id)
            pending.append(key.msg_id)
            if len(pending) == 64 or len(delivered) == len(ids):
                await alice.send_line("receipt: " + " ".join(f"DELIVERED bob {i}" for i in pending))
                pending = []
        assert delivered == set(ids)
        await alice.send_line("::ping done")
        assert await alice.expect("PONG") == "done"
        await alice.aclose()


async def test_ack_then_kill_then_login_the_unacked_rest_arrives(tmp_path: Path) -> None:
    """The simple case of the above, step by step: ack the first 100 (confirmed),
    send acks for 50 more without waiting, SIGKILL; after a restart the rest comes,
    oldest first, and none of the first 100."""
    ids = [f"k{n:03d}" for n in range(300)]
    with trio.fail_after(TEST_DEADLINE), rendezvous(tmp_path) as server:
        await register(server, "alice", "bob")
        await store_all(server, ids)
        bob = await login(server, "bob")
        await bob.send_line("::mailbox")
        first = [parse_mail((await bob.read_event()).text).msg_id for _ in range(WINDOW)]
        assert first == ids[:WINDOW]
        assert await bob.expect("MAILBOX") == "300 waiting for you (4.7 KiB); 0 of yours waiting"
        await bob.send_line("ack: " + " ".join(f"alice {i}" for i in ids[:100]))
        await bob.send_line("::ping acked")
        while (event := await bob.read_event()) != ServerLine("PONG", "acked"):
            assert isinstance(event, ServerLine) and event.flag == "MAIL"  # the window refilled
        await bob.send_line("ack: " + " ".join(f"alice {i}" for i in ids[100:150]))
        server.kill()
        await bob.aclose()

        server.start()
        bob = await login(server, "bob")
        await bob.send_line("::mailbox")
        got: list[str] = []
        waiting = None
        while waiting is None or len(got) < waiting:
            event = await bob.read_event()
            assert isinstance(event, ServerLine)
            if event.flag == "MAILBOX":
                waiting = int(event.text.split()[0])
                continue
            got.append(parse_mail(event.text).msg_id)
            if len(got) % 128 == 0 or len(got) == waiting:
                await bob.send_line("ack: " + " ".join(f"alice {i}" for i in got[-128:]))
        # The last ack line was acted on before the kill, or not at all: one
        # line is one transaction.
        assert waiting in (150, 200) and got == ids[300 - waiting :]
        await bob.aclose()


# --------------------------------------------------------------------------
# A backlog of 10,000 messages
# --------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_backlog_of_10000_messages_is_delivered_on_login(tmp_path: Path) -> None:
    ids = [f"m{n:05d}" for n in range(10_000)]
    with trio.fail_after(TEST_DEADLINE), rendezvous(tmp_path) as server:
        await register(server, "alice", "bob")
        t_store = time.perf_counter()
        await store_all(server, ids)
        t_store = time.perf_counter() - t_store

        bob = await connect(server)
        await bob.expect("USERNAME")
        await bob.send_line("username: bob")
        await bob.expect("PASSWORD")
        t0 = time.perf_counter()
        await bob.send_line("password: bob-secret")
        await bob.expect("OK")
        await bob.expect("SEEN")
        await bob.expect("TOKEN")
        await bob.send_line("::ping go")  # starts delivery if the server waits for a line
        got: list[str] = []
        unacked: list[str] = []
        while len(got) < len(ids):
            line = await bob.read_line()
            assert line is not None
            event = parse_server_line(line)
            assert isinstance(event, ServerLine)
            if event.flag == "PONG":
                continue
            assert event.flag == "MAIL", event
            got.append(parse_mail(event.text).msg_id)
            unacked.append(got[-1])
            if len(unacked) == WINDOW // 2 or len(got) == len(ids):
                await bob.send_line("ack: " + " ".join(f"alice {i}" for i in unacked))
                unacked = []
        elapsed = time.perf_counter() - t0
        assert got == ids
        await bob.send_line("::mailbox")
        while (event := await bob.read_event()).flag != "MAILBOX":  # type: ignore[union-attr]
            pass
        assert re.match(r"0 waiting for you", event.text)  # type: ignore[union-attr]
        print(
            f"\n10,000 messages: stored in {t_store:.2f} s ({len(ids) / t_store:.0f}/s, "
            f"one durable commit each); delivered on login in {elapsed:.2f} s "
            "(password sent -> last MAIL, acks streaming)"
        )
        await bob.aclose()
