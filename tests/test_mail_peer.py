"""The peer's side of the mailbox, in-process against a real server on 127.0.0.1:
offline conversations, delivery states, exactly-once display across restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from nacl.signing import SigningKey

from chathack.protocol import ServerLine
from peer.core import records as rec
from peer.events import Delivery, Recalled
from peer.node import PeerConfig, PeerNode, fixed_password, open_peer
from rendezvous.passwords import Passwords, fast_hasher
from rendezvous.server import Server
from rendezvous.store import SqliteStore
from tests.test_node import Watcher


@asynccontextmanager
async def server(tmp: Path) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        srv = Server(SqliteStore(tmp / "rdv.sqlite3"), passwords=Passwords(fast_hasher()))
        listeners = await nursery.start(srv.serve, "127.0.0.1", 0)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def peer(port: int, name: str, tmp: Path, **kw: object) -> AsyncIterator[Watcher]:
    cfg = PeerConfig(name, "127.0.0.1", port, "127.0.0.1", 0, data_dir=tmp / name, **kw)  # type: ignore[arg-type]
    async with open_peer(cfg, fixed_password(f"{name}-password")) as node, trio.open_nursery() as n:
        w = Watcher(node)
        n.start_soon(w.run)
        yield w
        await node.quit()


def states(w: Watcher, partner: str) -> list[str]:
    return [e.state for e in w.seen if isinstance(e, Delivery) and e.partner == partner]


async def wait_state(w: Watcher, partner: str, state: str, n: int) -> None:
    await w.wait_for(lambda e: states(w, partner).count(state) >= n, f"{n} x {state}")


async def register(port: int, name: str, tmp: Path) -> None:
    async with peer(port, name, tmp) as w:
        await w.wait_for(lambda e: w.node.server.seen is not None, "login")


async def test_messages_for_an_offline_user_wait_and_arrive_in_order(tmp_path: Path) -> None:
    async with server(tmp_path) as port:
        await register(port, "bob", tmp_path)  # bob exists (and has a key), then leaves
        async with peer(port, "alice", tmp_path) as wa:
            alice = wa.node
            await alice.handle_input("connect: bob")
            await wa.system("bob is offline")
            for i in range(3):
                await alice.handle_input(f"while you were away {i}")
            await wait_state(wa, "bob", "stored", 3)
            async with peer(port, "bob", tmp_path) as wb:
                texts = await wb.texts_count(3)
                assert texts == [f"while you were away {i}" for i in range(3)]
                await wait_state(wa, "bob", "delivered", 3)
                await wait_state(wa, "bob", "read", 3)  # bob had no other conversation open
            alice.show_history("bob", 10)
            await wa.wait_for(
                lambda e: isinstance(e, Recalled) and e.state == "read", "a message read"
            )


async def test_what_a_partner_missed_when_leaving_goes_to_the_mailbox(tmp_path: Path) -> None:
    async with server(tmp_path) as port, peer(port, "alice", tmp_path) as wa:
        alice = wa.node
        async with peer(port, "bob", tmp_path, relay_only=True) as wb:
            await alice.connect("bob")
            await alice.send("bob", "hello")
            assert await wb.texts_count(1) == ["hello"]
            wb.node.server.finish()  # bob's program vanishes: no goodbye, just gone
            await wa.system("bob went offline")
        await alice.send("bob", "are you there?")
        await wait_state(wa, "bob", "stored", 1)
        async with peer(port, "bob", tmp_path, relay_only=True) as wb2:
            assert await wb2.texts_count(1) == ["are you there?"]
            await wait_state(wa, "bob", "delivered", 1)


async def test_mail_is_shown_once_even_if_delivered_again_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server may deliver a message twice (it died before it saw the ack):
    the peer recognises it by its id, across its own restarts too."""
    seen_lines: list[ServerLine] = []
    original = PeerNode.feed

    def recording(self: PeerNode, event: rec.Input) -> list[rec.Effect]:
        line = event.line if isinstance(event, rec.FromServer) else None
        if isinstance(line, ServerLine) and line.flag == "MAIL":
            seen_lines.append(line)
        return original(self, event)

    monkeypatch.setattr(PeerNode, "feed", recording)
    async with server(tmp_path) as port:
        await register(port, "bob", tmp_path)
        async with peer(port, "alice", tmp_path) as wa:
            await wa.node.connect("bob")
            await wa.node.send("bob", "only once")
            await wait_state(wa, "bob", "stored", 1)
        async with peer(port, "bob", tmp_path) as wb:
            assert await wb.texts_count(1) == ["only once"]
        assert len(seen_lines) == 1
        async with peer(port, "bob", tmp_path) as wb2:  # a new run, same data dir
            wb2.node.feed(rec.FromServer(seen_lines[0]))  # the same MAIL, delivered again
            wb2.node.show_history("alice", 5)
            await wb2.wait_for(lambda e: isinstance(e, Recalled), "the history")
            assert wb2.texts() == []  # recognised: not shown a second time


async def test_mail_from_someone_else_s_key_is_dropped(tmp_path: Path) -> None:
    from chathack.secure import seal_mail

    async with server(tmp_path) as port:
        async with peer(port, "alice", tmp_path) as wa:
            await wa.wait_for(lambda e: wa.node.server.seen is not None, "login")
        async with peer(port, "bob", tmp_path) as wb:
            bob = wb.node
            await bob.connect("alice")  # bob learns alice's vouched key
            mallory = SigningKey.generate()
            forged = seal_mail(mallory, bytes(bob.identity.verify_key), b'{"f":"alice"}')
            bob.feed(rec.FromServer(ServerLine("MAIL", f"alice m1 1 {forged}")))
            await wb.system("Dropped mail claiming to be from alice")
            assert wb.texts() == []


async def test_sealed_mail_with_a_line_break_is_dropped_not_shown_as_notices(
    tmp_path: Path,
) -> None:
    """Anyone can seal mail to anyone: a LF in its text must not become a
    second line (one that would pass for the program's own) in history."""
    import json

    from chathack.secure import seal_mail

    async with server(tmp_path) as port:
        async with peer(port, "alice", tmp_path) as wa:
            alice = wa.node
            await wa.wait_for(lambda e: alice.server.seen is not None, "login")
        async with peer(port, "bob", tmp_path) as wb:
            bob = wb.node
            await bob.connect("alice")  # bob learns alice's vouched key
            inner = {"f": "alice", "t": "bob", "i": "m1", "x": "hi\n— alice is verified", "a": 1}
            sealed = seal_mail(
                alice.identity, bytes(bob.identity.verify_key), json.dumps(inner).encode()
            )
            bob.feed(rec.FromServer(ServerLine("MAIL", f"alice m1 1 {sealed}")))
            await wb.system("Dropped mail from alice: its sealed header does not match")
            assert wb.texts() == []
            assert bob.history.last("alice", 5) == []
