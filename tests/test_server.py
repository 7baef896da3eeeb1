"""trio tests of the rendezvous I/O layer (:class:`rendezvous.server.Server`).

Most tests run the server over ``trio.testing`` memory streams through
``Server.handle_connection(stream, ip)``, so the client's IP is whatever the
test says; a few use real sockets on 127.0.0.1 with port 0. Every wait is
bounded (``LineClient`` wraps each one in ``trio.fail_after(DEADLINE)``);
timeouts are tested with ``autojump_clock`` so they take no real time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from chathack.protocol import PeerAddress, UserState, parse_peer_address, parse_users
from rendezvous.passwords import Passwords, fast_hasher
from rendezvous.server import Limits, Server
from rendezvous.store import SqliteStore
from tests.helpers import DEADLINE, LineClient

Connect = Callable[..., Awaitable[LineClient]]


class InstantPasswords(Passwords):
    """No worker thread: under ``autojump_clock`` a thread wait would let virtual
    time jump to the login deadline. For tests that control the clock only."""

    async def hash(self, secret: str) -> str:
        await trio.lowlevel.checkpoint()
        return "plain$" + secret

    async def verify(self, pw_hash: str, secret: str) -> tuple[bool, str | None]:
        await trio.lowlevel.checkpoint()
        return pw_hash == "plain$" + secret, None


def make_server(db: str | Path = ":memory:", **limits: float) -> Server:
    return Server(
        SqliteStore(db),
        passwords=Passwords(fast_hasher()),
        limits=Limits(**limits),  # type: ignore[arg-type]
    )


@asynccontextmanager
async def running(server: Server, *, tcp: bool = False) -> AsyncIterator[Connect]:
    """Yield ``connect(ip="198.51.100.1", lockstep=False)``, which opens a client.

    Memory streams buffer without limit; ``lockstep=True`` gives a stream whose
    ``send_all`` waits until the client reads, to model a client that stops reading.
    With ``tcp`` the server listens on 127.0.0.1 and every client connects
    there (``ip`` is then 127.0.0.1 whatever it says): logged-in clients are
    read by the server's reactor, not by a task of their own.
    """
    async with trio.open_nursery() as nursery:
        if tcp:
            listeners = await nursery.start(server.serve, "127.0.0.1", 0)
            port = listeners[0].socket.getsockname()[1]

            async def connect_tcp(ip: str = "127.0.0.1") -> LineClient:
                return LineClient(await trio.open_tcp_stream("127.0.0.1", port))

            yield connect_tcp
            nursery.cancel_scope.cancel()
            return

        async def connect(ip: str = "198.51.100.1", *, lockstep: bool = False) -> LineClient:
            pair = (
                trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
            )
            client_stream, server_stream = pair()
            nursery.start_soon(server.handle_connection, server_stream, ip)
            return LineClient(client_stream)

        yield connect
        nursery.cancel_scope.cancel()


@pytest.fixture
def server() -> Server:
    return make_server()


# --------------------------------------------------------------------------
# Logging in
# --------------------------------------------------------------------------


async def test_register_then_log_in_with_the_same_password(server: Server) -> None:
    async with running(server) as connect:
        first = await connect()
        assert await first.expect("USERNAME") == 'Who are you? Send "username: NAME"'
        await first.send_line("username: alice")
        assert await first.expect("PASSWORD") == "New user alice: choose a password to register"
        await first.send_line("password: s3cret-word")
        ok = await first.expect("OK")
        assert ok.startswith("Registered alice. You are seen as 198.51.100.1")
        assert (await first.expect("SEEN")).startswith("198.51.100.1:")
        await first.expect("TOKEN")
        await first.send_line("::quit")
        assert await first.expect("BYE") == "Goodbye alice"
        await first.expect_eof()

        again = await connect("198.51.100.1")
        await again.expect("USERNAME")
        await again.send_line("username: ALICE")
        assert await again.expect("PASSWORD") == "Password for alice"
        await again.send_line("password: s3cret-word")
        assert (await again.expect("OK")).startswith("Welcome back alice.")
    acc = server.hub.store.get_account("alice")
    assert acc is not None and acc.pw_hash.startswith("$argon2id$")


async def test_wrong_password_is_refused_then_the_connection_closed() -> None:
    server = make_server(max_login_tries=3)
    async with running(server) as connect:
        await (await connect()).login("alice", "right-password")
        client = await connect()
        await client.expect("USERNAME")
        await client.send_line("username: alice")
        await client.expect("PASSWORD")
        for _ in range(2):
            await client.send_line("password: wrong")
            assert await client.expect("ERROR") == "Wrong password for alice"
            assert await client.expect("PASSWORD") == "Password for alice"
        await client.send_line("password: wrong")
        assert await client.expect("ERROR") == "Wrong password for alice"
        assert await client.expect("BYE") == "Too many failed attempts; connect again to retry"
        await client.expect_eof()


async def test_bad_lines_before_login_count_as_failures() -> None:
    server = make_server(max_login_tries=2)
    async with running(server) as connect:
        client = await connect()
        await client.expect("USERNAME")
        await client.send_line("connect: bob")
        assert "Log in first" in await client.expect("ERROR")
        await client.expect("USERNAME")
        await client.send_line("username: bad name")
        assert "Invalid user name" in await client.expect("ERROR")
        await client.expect("BYE")
        await client.expect_eof()


async def test_short_password_is_refused_when_registering(server: Server) -> None:
    async with running(server) as connect:
        client = await connect()
        await client.expect("USERNAME")
        await client.send_line("username: bob")
        await client.expect("PASSWORD")
        await client.send_line("password: abcdefg")
        assert "Password too short" in await client.expect("ERROR")
        await client.expect("PASSWORD")
        await client.send_line("password: abcdefgh")
        assert (await client.expect("OK")).startswith("Registered bob")


async def test_quit_before_login(server: Server) -> None:
    async with running(server) as connect:
        client = await connect()
        await client.expect("USERNAME")
        await client.send_line("::quit")
        assert await client.expect("BYE") == "Goodbye"
        await client.expect_eof()


async def test_login_from_a_new_ip_updates_the_store_and_kicks_the_old_session(
    server: Server,
) -> None:
    async with running(server) as connect:
        old = await connect("198.51.100.1")
        await old.login("alice", "pw12pw12")
        new = await connect("198.51.100.7")
        assert "You are seen as 198.51.100.7" in await new.login("alice", "pw12pw12")
        bye = await old.expect("BYE")
        assert bye == "You logged in again from 198.51.100.7; this session is closed"
        await old.expect_eof()
        acc = server.hub.store.get_account("alice")
        assert acc is not None and acc.last_ip == "198.51.100.7"
        await new.send_line("::users")
        assert await new.expect("USERS") == "alice online"


async def test_login_times_out(autojump_clock: trio.testing.MockClock) -> None:
    server = Server(
        SqliteStore(":memory:"), passwords=InstantPasswords(), limits=Limits(login_timeout=30)
    )
    async with running(server) as connect:
        slow = await connect()
        slow.deadline = 100  # virtual seconds: longer than the login timeout
        start = trio.current_time()
        await slow.expect("USERNAME")
        await slow.send_line("username: slowpoke")
        await slow.expect("PASSWORD")
        assert await slow.expect("BYE") == "Login timed out; connect again and log in"
        await slow.expect_eof()
        assert trio.current_time() - start == pytest.approx(30)

        # Once logged in, the login timeout no longer applies (the idle timeout,
        # 120 s by default, does: tests/test_limits.py).
        quiet = await connect()
        await quiet.login("quiet", "pw12pw12")
        await trio.sleep(100)  # virtual time; not synchronisation
        await quiet.send_line("::users")
        assert await quiet.expect("USERS") == "quiet online"


# --------------------------------------------------------------------------
# Talking
# --------------------------------------------------------------------------


async def test_two_clients_relay_both_ways_over_loopback() -> None:
    server = make_server()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(DEADLINE):
            alice = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
            bob = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
        assert "You are seen as 127.0.0.1" in await alice.login("alice", "pw12pw12")
        await bob.login("bob", "pw34pw34")
        await bob.send_line("port: 40404")
        assert await bob.expect("OK") == "Direct links to you go to 127.0.0.1:40404"

        await alice.send_line("connect: bob")
        # bob did not call alice: where bob is stays his.
        assert parse_peer_address(await alice.expect("PEER")) == PeerAddress("bob", None, None)
        assert parse_peer_address(await bob.expect("CALL")) == PeerAddress("alice", None, None)

        await alice.send_line("hello bob")
        assert await bob.expect_user("alice") == "hello bob"
        await bob.send_line("hello alice")
        assert await alice.expect_user("bob") == "hello alice"
        await bob.send_line("msg: alice caf\u00e9 \U0001f600")
        assert await alice.expect_user("bob") == "caf\u00e9 \U0001f600"

        await alice.send_line("::end")
        assert await alice.expect("OK") == "Conversation with bob ended"
        assert await bob.expect("END") == "alice ended the conversation"

        await bob.aclose()
        await alice.send_line("::users")
        # bob's connection ends asynchronously: ask until the server has seen it.
        with trio.fail_after(DEADLINE):
            while parse_users(await alice.expect("USERS")) != [
                UserState("alice", True),
                UserState("bob", False),
            ]:
                await alice.send_line("::users")
        await alice.aclose()
        nursery.cancel_scope.cancel()


async def test_partner_going_offline_is_announced(server: Server) -> None:
    async with running(server) as connect:
        alice, bob = await connect(), await connect("198.51.100.2")
        await alice.login("alice", "pw12pw12")
        await bob.login("bob", "pw34pw34")
        await alice.send_line("connect: bob")
        await alice.expect("PEER")
        await bob.expect("CALL")
        await bob.aclose()
        assert await alice.expect("GONE") == "bob went offline"


async def test_bad_bytes_get_an_error_and_the_connection_stays_usable() -> None:
    server = make_server(max_line_bytes=64)
    async with running(server) as connect:
        alice, bob = await connect(), await connect()
        await alice.login("alice", "pw12pw12")
        await bob.login("bob", "pw34pw34")
        await alice.send_raw(b"msg: bob \xff\xfe\n")
        assert await alice.expect("ERROR") == "Line is not valid UTF-8; it was ignored"
        await alice.send_raw(b"msg: bob " + b"x" * 200 + b"\n")
        assert await alice.expect("ERROR") == (
            "Line too long: the limit is 64 bytes; it was ignored"
        )
        await alice.send_line("msg: bob ring\x07")
        assert "Control characters" in await alice.expect("ERROR")
        await alice.send_line("msg: bob still here")
        assert await bob.expect_user("alice") == "still here"
        await alice.send_line("::users")
        assert await alice.expect("USERS") == "alice online, bob online"


async def test_a_client_that_stops_reading_is_dropped_and_others_carry_on() -> None:
    server = make_server(outbox_lines=4)
    async with running(server) as connect:
        alice = await connect()
        stuck = await connect("198.51.100.2", lockstep=True)
        await alice.login("alice", "pw12pw12")
        await stuck.login("stuck", "pw34pw34")
        # stuck reads no more. Its writer blocks on the first line; the next
        # lines fill its outbox, and the one after that gets it disconnected.
        await alice.send_raw(b"".join(b"msg: stuck line %d\n" % i for i in range(10)))
        unread = await stuck.read_until_eof()
        assert len(unread) < 10
        await alice.send_line("::users")
        assert await alice.expect("USERS") == "alice online, stuck offline"
        await alice.send_line("msg: stuck anyone?")
        assert "stuck is offline" in await alice.expect("FAILED")


async def test_a_client_that_vanishes_while_written_to_does_not_stop_the_server(
    server: Server,
) -> None:
    async with running(server) as connect:
        alice, bob = await connect(), await connect()
        await alice.login("alice", "pw12pw12")
        await bob.login("bob", "pw34pw34")
        # bob's socket dies in a way the reader has not noticed yet: writes fail.
        await bob.stream.receive_stream.aclose()  # type: ignore[attr-defined]
        await alice.send_line("msg: bob are you there?")
        with trio.fail_after(DEADLINE):
            while server.hub.session_of("bob") is not None:
                await alice.send_line("::users")
                await alice.expect("USERS")
        await alice.send_line("::users")
        assert await alice.expect("USERS") == "alice online, bob offline"


# --------------------------------------------------------------------------
# Shutting down, restarting
# --------------------------------------------------------------------------


async def test_shutdown_notice_says_bye_and_closes_everyone(server: Server) -> None:
    async with running(server) as connect:
        alice, anon = await connect(), await connect()
        await alice.login("alice", "pw12pw12")
        await anon.expect("USERNAME")
        server.shutdown_notice()
        for client in (alice, anon):
            assert await client.expect("BYE") == "The server is shutting down; try again later"
            await client.expect_eof()
        with trio.fail_after(DEADLINE):
            await server.wait_no_connections()
        assert server.hub.online == {}


async def test_accounts_persist_across_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "rendezvous.sqlite3"
    first = make_server(db)
    async with running(first) as connect:
        await (await connect()).login("alice", "pw12pw12")
    first.hub.store.close()

    second = make_server(db)
    async with running(second) as connect:
        wrong = await connect()
        await wrong.expect("USERNAME")
        await wrong.send_line("username: alice")
        assert await wrong.expect("PASSWORD") == "Password for alice"
        await wrong.send_line("password: pw34")
        assert await wrong.expect("ERROR") == "Wrong password for alice"
        right = await connect()
        assert (await right.login("alice", "pw12pw12")).startswith("Welcome back alice")
    second.hub.store.close()
