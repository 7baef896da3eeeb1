"""The reactor (rendezvous/reactor.py): one task reads every logged-in plain
TCP client over an epoll of its own. What a task per connection guaranteed
must still hold; the limits (rate pauses, idle timeout, shutdown) are
checked over TCP in tests/test_limits.py, ``::passwd`` in
tests/test_accounts.py, fault isolation in tests/test_fault_isolation.py.
Here: who reads whom, order across a wait, and the end of a connection.
"""

from __future__ import annotations

import socket
import struct

import trio
import trio.testing

from rendezvous.connection import Connection
from rendezvous.lines import Reader
from rendezvous.server import Limits, Server
from rendezvous.store import SqliteStore
from tests.helpers import DEADLINE, LineClient
from tests.test_accounts import clocked
from tests.test_server import InstantPasswords, make_server, running


def connection_tasks() -> list[str]:
    """The tasks that serve one connection each (``Server._handle_socket``)."""
    found, todo = [], [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task.coro.__qualname__ == "Server._handle_socket":
            found.append(task.name)
        todo.extend(t for n in task.child_nurseries for t in n.child_tasks)
    return found


async def test_logged_in_clients_have_no_task_of_their_own() -> None:
    """A task each until logged in (the dialogue waits for argon2); then the
    reactor reads them all, and idle clients cost no task, no coroutine."""
    server = make_server()
    async with running(server, tcp=True) as connect:
        alice, bob, stranger = await connect(), await connect(), await connect()
        await alice.login("alice", "pw-alice")
        await bob.login("bob", "pw-bob-secret")
        await stranger.expect("USERNAME")
        for client in (alice, bob):  # a round trip: the reader was handed over by now
            await client.send_line("::ping")
            await client.expect("PONG")
        assert server.reactor is not None and len(server.reactor) == 2
        assert len(connection_tasks()) == 1  # the stranger's, still logging in
        await alice.send_line("msg: bob hello")
        assert await bob.expect_user("alice") == "hello"
        for client in (alice, bob, stranger):
            await client.aclose()


async def test_a_wait_in_the_middle_of_a_read_keeps_every_line_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One write: a ``::passwd`` dialogue (two password checks, each a wait in
    a task of its own) between chat lines. Every line is handled, in the
    order sent, and the client goes back to the reactor."""
    server = clocked()
    async with running(server, tcp=True) as connect:
        alice, bob = await connect(), await connect()
        alice.deadline = bob.deadline = 100
        await alice.login("alice", "old-secret")
        await bob.login("bob", "pw-bob-secret")
        burst = [
            "msg: bob before",
            "::passwd",
            "password: old-secret",
            "msg: bob between",
            "password: new-secret",
            "msg: bob after",
            "::ping done",
        ]
        await alice.send_raw("".join(line + "\n" for line in burst).encode())
        assert await alice.expect("PASSWORD") == "Current password for alice"
        assert await alice.expect("PASSWORD") == "New password for alice"
        assert await alice.expect("PASSWD") == "changed"
        assert await alice.expect("PONG") == "done"
        assert [await bob.expect_user("alice") for _ in range(3)] == [
            "before",
            "between",
            "after",
        ]
        assert server.reactor is not None and len(server.reactor) == 2


def _reset(client: LineClient) -> None:
    """Close ``client``'s socket with an RST (SO_LINGER 0), not a FIN."""
    sock = client.stream.socket  # type: ignore[attr-defined]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_hang_ups_and_resets_end_the_connection_and_free_its_place() -> None:
    """A client that closes, and one whose connection is reset, are
    detached (offline for the others), uncounted and their sockets closed."""
    server = make_server()
    async with running(server, tcp=True) as connect:
        alice, bob, carol = await connect(), await connect(), await connect()
        await alice.login("alice", "pw-alice")
        await bob.login("bob", "pw-bob-secret")
        await carol.login("carol", "pw-carol")
        await alice.send_line("::ping")
        await alice.expect("PONG")
        await bob.aclose()
        _reset(carol)
        # The reactor may read alice's line in the same batch as their hang-ups
        # (in any order) and forgets them after it: ask until they are gone.
        with trio.fail_after(DEADLINE):
            while True:
                await alice.send_line("::users")
                users = set((await alice.expect("USERS")).split(", "))
                if users == {"alice online", "bob offline", "carol offline"}:
                    break
        assert server.reactor is not None and len(server.reactor) == 1
        assert server.admission.total == 1
        await alice.aclose()
        with trio.fail_after(DEADLINE):
            await server.wait_no_connections()
        assert len(server.reactor) == 0 and server.admission.total == 0
        assert not server.hub.online
    assert not server.faults


class GatedPasswords(InstantPasswords):
    """A password check that, like argon2 in its thread, does not stop when
    the connection ends: it finishes when the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gated = False
        self.entered = trio.Event()
        self.gate = trio.Event()

    async def verify(self, pw_hash: str, secret: str) -> tuple[bool, str | None]:
        if self.gated:
            self.entered.set()
            with trio.CancelScope(shield=True):
                await self.gate.wait()
            return pw_hash == "plain$" + secret, None  # no checkpoint after it, as a thread
        return await super().verify(pw_hash, secret)


async def test_nothing_is_handled_for_a_connection_that_ended_during_its_wait() -> None:
    """alice's read holds a ``::passwd`` answer and a chat line after it; her
    connection is dropped (as a write failure would) while the password
    check runs. The check finishes, but the line after it is never relayed:
    she is detached once her reader is done, not before and then used."""
    passwords = GatedPasswords()
    server = Server(SqliteStore(":memory:"), passwords=passwords, limits=Limits())
    async with running(server, tcp=True) as connect:
        alice, bob = await connect(), await connect()
        await alice.login("alice", "old-secret")
        await bob.login("bob", "pw-bob-secret")
        passwords.gated = True
        await alice.send_raw(b"::passwd\npassword: old-secret\nmsg: bob after\n")
        await alice.expect("PASSWORD")
        with trio.fail_after(DEADLINE):
            await passwords.entered.wait()
        [conn] = [c for c in server.connections if c.scope is not None and _name(c) == "alice"]
        conn.abort()
        passwords.gate.set()
        with trio.fail_after(DEADLINE):
            while "alice" in server.hub.online or len(server.reactor or ()) != 1:
                await trio.lowlevel.checkpoint()
        await bob.send_line("::ping last")
        assert await bob.expect("PONG") == "last"  # and no "alice: after" before it
    assert not server.faults


def _name(conn: Connection) -> str | None:
    reader = conn.scope
    return reader.session.name if isinstance(reader, Reader) else None
