"""A peer's account life: resuming with a token instead of the password, falling
back to the password when the token is refused, and ::passwd."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from peer import server_link
from peer.events import System
from peer.node import PeerConfig, fixed_password, open_peer
from rendezvous.passwords import Passwords, fast_hasher
from rendezvous.server import Server
from rendezvous.store import SqliteStore
from tests.test_node import Watcher


class CountingPasswords(Passwords):
    def __init__(self) -> None:
        super().__init__(fast_hasher())
        self.verified = 0

    async def verify(self, pw_hash: str, secret: str) -> tuple[bool, str | None]:
        self.verified += 1
        return await super().verify(pw_hash, secret)


@pytest.fixture
def fast_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_link, "BACKOFF_FIRST", 0.05)


@asynccontextmanager
async def alice_and_server(
    db: str | Path = ":memory:",
) -> AsyncIterator[tuple[Server, CountingPasswords, Watcher]]:
    passwords = CountingPasswords()
    server = Server(SqliteStore(db), passwords=passwords)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        port = listeners[0].socket.getsockname()[1]
        cfg = PeerConfig("alice", "127.0.0.1", port, "127.0.0.1", 0)
        async with open_peer(cfg, fixed_password("alice-pw-1")) as node:
            w = Watcher(node)
            nursery.start_soon(w.run)
            await w.wait_for(lambda e: node.server.token is not None, "a token")
            yield server, passwords, w
        nursery.cancel_scope.cancel()


def cut(server: Server) -> None:
    """Drop every connection, as a network glitch would."""
    for conn in list(server.connections):
        conn.abort()


async def test_a_reconnecting_peer_resumes_without_its_password(fast_reconnect: None) -> None:
    async with alice_and_server() as (server, passwords, w):
        assert passwords.verified == 0  # registration hashes, it does not verify
        cut(server)
        await w.system("Reconnected to the rendezvous")
        assert passwords.verified == 0  # the token, not the password
        assert w.node.server.token is not None  # and a fresh token for next time


async def test_a_refused_token_falls_back_to_the_password(fast_reconnect: None) -> None:
    async with alice_and_server() as (server, passwords, w):
        server.logins.tokens.revoke("alice")  # e.g. the server restarted, or alice roamed
        cut(server)
        await w.system("Reconnected to the rendezvous")
        assert passwords.verified == 1


async def test_passwd_through_the_node_and_the_next_login_needs_the_new_one(
    fast_reconnect: None,
) -> None:
    async with alice_and_server() as (server, _, w):
        assert await w.node.change_password("wrong", "alice-pw-2") is False
        await w.system("The password was not changed: Wrong password")
        assert await w.node.change_password("alice-pw-1", "alice-pw-2") is True
        account = server.hub.store.get_account("alice")
        assert account is not None
        assert (await server.passwords.verify(account.pw_hash, "alice-pw-2"))[0]
        cut(server)  # the token was revoked with the change: the new password is used
        await w.system("Reconnected to the rendezvous")


async def test_resume_tokens_survive_a_graceful_restart(
    tmp_path: Path, fast_reconnect: None
) -> None:
    """SIGTERM's path (``shut_down``) keeps the tokens in the database; the
    next server on it takes them back, so peers come back without a password
    check -- after a restart every peer reconnects at once, and argon2 admits
    about a dozen a second."""
    db = tmp_path / "rendezvous.sqlite3"
    async with alice_and_server(db) as (first, passwords, w):
        with trio.fail_after(10):
            assert await first.shut_down(5.0)
        first.hub.store.close()
        async with trio.open_nursery() as nursery:
            second = Server(SqliteStore(db), passwords=passwords)
            # The same port, free again now that the first server stopped accepting.
            await nursery.start(second.serve, "127.0.0.1", w.node.config.server_port)
            await w.system("Reconnected to the rendezvous")
            assert passwords.verified == 0  # the token of the first run, not the password
            assert second.hub.store.take_tokens() == []  # read back once, then forgotten
            nursery.cancel_scope.cancel()


class Answers:
    """A password source that answers from a list and records what it was asked."""

    def __init__(self, *secrets: str) -> None:
        self.secrets = list(secrets)
        self.asked: list[tuple[str, bool, int]] = []

    async def __call__(self, prompt: str, is_new: bool, attempt: int) -> str:
        self.asked.append((prompt, is_new, attempt))
        return self.secrets.pop(0)


async def test_a_refused_new_password_is_asked_again_as_a_new_one() -> None:
    server = Server(SqliteStore(":memory:"), passwords=Passwords(fast_hasher()))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        port = listeners[0].socket.getsockname()[1]
        cfg = PeerConfig("newbie", "127.0.0.1", port, "127.0.0.1", 0)
        answers = Answers("short", "long-enough-now")
        async with open_peer(cfg, answers):
            pass
        nursery.cancel_scope.cancel()
    # The second question is still a registration: a typo must be caught by
    # asking twice again, or it would lock the user out.
    assert [is_new for _, is_new, _ in answers.asked] == [True, True]
    first, second = answers.asked[0][0], answers.asked[1][0]
    assert first.startswith("New user newbie")
    assert second.splitlines()[0].startswith("Password too short")  # the reason, on its own line


async def test_wrong_passwords_read_as_a_reason_then_a_question() -> None:
    from peer.errors import LoginFailed
    from rendezvous.limits import Limits

    # Two tries per connection: the back-off after wrong passwords stays short.
    server = Server(
        SqliteStore(":memory:"),
        passwords=Passwords(fast_hasher()),
        limits=Limits(max_login_tries=2),
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        port = listeners[0].socket.getsockname()[1]
        cfg = PeerConfig("dave", "127.0.0.1", port, "127.0.0.1", 0)
        async with open_peer(cfg, fixed_password("daves-real-password")):
            pass
        answers = Answers(*(f"wrong-one-{i}" for i in range(10)))
        with pytest.raises(LoginFailed) as failed:
            async with open_peer(cfg, answers):
                pass
        nursery.cancel_scope.cancel()
    prompts = [p for p, _, _ in answers.asked]
    assert prompts[1].splitlines() == ["Wrong password for dave", "Password for dave"]
    assert str(failed.value).startswith("Wrong password for dave")
    assert not str(failed.value).endswith("Password for dave")  # no question left hanging


async def test_the_terminal_prompt_gives_up_with_the_reason_not_the_question() -> None:
    from peer.cli import MAX_PROMPTS, interactive_password
    from peer.errors import LoginFailed

    source = interactive_password("dave")
    with pytest.raises(LoginFailed) as failed:
        await source("Wrong password for dave\nPassword for dave", False, MAX_PROMPTS + 1)
    assert str(failed.value).startswith("Wrong password for dave")
    assert "Password for dave" not in str(failed.value)


async def test_reconnect_now_instead_of_waiting_out_the_countdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A countdown far longer than the test: only ::reconnect can bring the peer back in time.
    monkeypatch.setattr(server_link, "BACKOFF_FIRST", 120.0)
    store = SqliteStore(":memory:")
    async with trio.open_nursery() as nursery:
        first = Server(store, passwords=Passwords(fast_hasher()))
        listeners = await nursery.start(first.serve, "127.0.0.1", 0)
        port = listeners[0].socket.getsockname()[1]
        cfg = PeerConfig("alice", "127.0.0.1", port, "127.0.0.1", 0)
        async with open_peer(cfg, fixed_password("alice-pw-1")) as node:
            w = Watcher(node)
            nursery.start_soon(w.run)
            first.stop_accepting()
            cut(first)
            countdown = await w.system("Reconnecting in")
            assert isinstance(countdown, System) and "::reconnect to try now" in countdown.text
            assert node.status().retry_in is not None and node.status().retry_in > 60
            second = Server(store, passwords=Passwords(fast_hasher()))
            await nursery.start(second.serve, "127.0.0.1", port)
            await node.handle_input("::reconnect")
            with trio.fail_after(10):
                await w.system("Reconnected to the rendezvous")
            assert node.status().retry_in is None
        nursery.cancel_scope.cancel()
