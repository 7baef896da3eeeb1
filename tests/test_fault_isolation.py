"""No input stops the rendezvous: one client's bad line, or a bug met while
serving one client, ends at most that client's connection.

The lines come from a mutation fuzzer run against the server (a carriage
return inside a command killed the whole process: the hub echoed the
command in an ERROR and the formatter refused the line break). The faults
are injected into the handling of one session, and into one writer, to
show the isolation holds for bugs nobody has found yet.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
import trio.testing

from chathack.protocol import CONTROLS_IN_LINE
from rendezvous.hub import Hub
from rendezvous.transport import StreamTransport
from tests.helpers import DEADLINE, LineClient
from tests.procs import Rendezvous
from tests.test_server import make_server, running

#: Lines from the fuzzer's reports, each once fatal, plus their cousins.
HOSTILE_COMMANDS = [
    b"::us\rers",
    b"::he\rlp",
    b"::whois\r alice",
    b"::f\roo",
    b"::ping \x1b]0;pwned\x07",
    b"::end \x1b[2J",
    b"::\rquit",
    "::help\u0085".encode(),
]


async def chat_once(alice: LineClient, bob: LineClient, text: str) -> None:
    await alice.send_line(f"msg: bob {text}")
    assert await bob.expect_user("alice") == text


@pytest.mark.parametrize("line", HOSTILE_COMMANDS, ids=repr)
async def test_a_control_character_in_a_command_is_an_error_not_a_crash(line: bytes) -> None:
    server = make_server()
    async with running(server) as connect:
        alice, bob, mallory = await connect(), await connect(), await connect()
        await alice.login("alice", "pw-alice")
        await bob.login("bob", "pw-bob-secret")
        await mallory.login("mallory", "pw-mallory")
        await mallory.send_raw(line + b"\n")
        assert await mallory.expect("ERROR") == CONTROLS_IN_LINE
        # mallory's connection is still usable, and everyone else never noticed.
        await mallory.send_line("::ping still-here")
        assert await mallory.expect("PONG") == "still-here"
        await chat_once(alice, bob, "nothing happened")
    assert not server.faults


async def test_a_control_character_in_a_password_is_refused_before_any_hash() -> None:
    server = make_server()
    async with running(server) as connect:
        client = await connect()
        await client.expect("USERNAME")
        await client.send_line("username: carol")
        await client.expect("PASSWORD")
        await client.send_raw(b"password: pass\rword\n")
        assert await client.expect("ERROR") == CONTROLS_IN_LINE
    assert server.hub.store.get_account("carol") is None


@pytest.mark.parametrize("tcp", [False, True], ids=["memory", "tcp"])
async def test_a_fault_while_handling_one_session_ends_only_that_session(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tcp: bool
) -> None:
    """A bug in the hub (injected: ``connect:`` to one name raises) ends the
    connection that met it; the others keep chatting, and it is logged once
    and counted. Over TCP it is met by the reactor, which reads every
    logged-in client: still only mallory's connection ends."""
    real_connect = Hub.connect

    def broken_connect(hub: Hub, session: object, name: str) -> None:
        if name == "trigger":
            raise RuntimeError("injected fault")
        real_connect(hub, session, name)  # type: ignore[arg-type]

    monkeypatch.setattr(Hub, "connect", broken_connect)
    server = make_server()
    caplog.set_level(logging.ERROR, logger="chathack.rendezvous")
    async with running(server, tcp=tcp) as connect:
        alice, bob, mallory = await connect(), await connect(), await connect()
        await alice.login("alice", "pw-alice")
        await bob.login("bob", "pw-bob-secret")
        await mallory.login("mallory", "pw-mallory")
        await mallory.send_line("connect: trigger")
        await mallory.read_until_eof()
        await chat_once(alice, bob, "still here")
        newcomer = await connect()
        assert (await newcomer.login("newcomer", "pw-newcomer")).startswith("Registered")
        await newcomer.send_line("::users")
        assert "mallory offline" in await newcomer.expect("USERS")
    assert server.faults == {"RuntimeError": 1}
    [record] = [r for r in caplog.records if "unexpected" in r.getMessage()]
    assert "mallory" in record.getMessage() and "RuntimeError" in record.getMessage()
    assert record.exc_info is None  # one line, no traceback a client could multiply


class ExplodingTransport(StreamTransport):
    """A transport whose writes fail in a way the writer does not expect."""

    armed = False

    def try_send(self, data: bytes) -> int:
        if self.armed:
            raise RuntimeError("injected write fault")
        return super().try_send(data)

    async def send_all(self, data: bytes) -> None:
        if self.armed:
            raise RuntimeError("injected write fault")
        await super().send_all(data)


async def test_a_fault_while_writing_to_one_client_drops_only_that_client() -> None:
    """The write to bob fails unexpectedly while alice's read relays to him:
    bob is dropped, alice (whose task did the write) and carol carry on."""
    server = make_server()
    exploding: list[ExplodingTransport] = []

    async with trio.open_nursery() as nursery:

        async def connect(ip: str = "198.51.100.1", *, explode: bool = False) -> LineClient:
            client_stream, server_stream = trio.testing.memory_stream_pair()
            if explode:
                transport = ExplodingTransport(server_stream)
                exploding.append(transport)

                async def serve() -> None:
                    async with trio.open_nursery() as writers:
                        await server._serve_transport(transport, ip, None, writers.start_soon)

                nursery.start_soon(serve)
            else:
                nursery.start_soon(server.handle_connection, server_stream, ip)
            return LineClient(client_stream)

        alice, carol, bob = await connect(), await connect(), await connect(explode=True)
        await alice.login("alice", "pw-alice")
        await carol.login("carol", "pw-carol")
        await bob.login("bob", "pw-bob-secret")
        exploding[0].armed = True
        await alice.send_line("msg: bob are you there?")
        await bob.read_until_eof()
        await alice.send_line("msg: carol bob just vanished")
        assert await carol.expect_user("alice") == "bob just vanished"
        nursery.cancel_scope.cancel()
    assert server.faults == {"RuntimeError": 1}
    assert "bob" not in server.hub.online


@pytest.mark.e2e
def test_the_real_rendezvous_survives_every_line_that_once_stopped_it(tmp_path: Path) -> None:
    """The reported attack, on a real process: each line is answered with a
    clear error, the process keeps running, two users keep chatting."""

    async def main(port: int) -> None:
        streams = []
        try:
            for _ in range(3):
                with trio.fail_after(DEADLINE):
                    streams.append(await trio.open_tcp_stream("127.0.0.1", port))
            alice, bob, mallory = (LineClient(s) for s in streams)
            await alice.login("alice", "pw-alice-1")
            await bob.login("bob", "pw-bob-12")
            await mallory.login("mallory", "pw-mallory")
            for i, line in enumerate(HOSTILE_COMMANDS):
                await mallory.send_raw(line + b"\n")
                assert await mallory.expect("ERROR") == CONTROLS_IN_LINE
                await chat_once(alice, bob, f"message {i}")
        finally:
            for s in streams:
                await trio.aclose_forcefully(s)

    server = Rendezvous(tmp_path / "r.sqlite3")
    try:
        trio.run(main, server.port)
        assert server.proc.proc.poll() is None, "the rendezvous exited"
    finally:
        server.stop()
