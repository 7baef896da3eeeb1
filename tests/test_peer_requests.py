"""Replies go to the request they answer, and a session replaced by a login
elsewhere never pretends to send (in-process: a real Server and PeerNodes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from chathack.protocol import Msg, Punch, format_client_event
from peer.events import System
from peer.node import REPLACED, PeerConfig, PeerNode, fixed_password, open_peer
from rendezvous.hub import Hub, Session
from tests.test_node import DEADLINE, Watcher, world


async def test_an_earlier_requests_failure_is_not_taken_for_connects_answer() -> None:
    """``msg: ghost hi`` (no such user), then ``connect: bob`` with bob online:
    the failure about ghost reaches the user as such, and connect gets bob."""
    async with world("alice", "bob") as w:
        wa = w["alice"]
        alice = wa.node
        alice._send_server(format_client_event(Msg("ghost", "hi")))
        alice._send_server(format_client_event(Punch("nobody")))  # a background refusal too
        talk = await alice.connect("bob")
        assert talk is not None and talk.partner == "bob"
        assert alice.active == "bob"
        await wa.system("Not delivered to ghost: There is no user named ghost")
        assert not [e for e in wa.seen if isinstance(e, System) and "nobody" in e.text]


async def test_connect_to_an_unknown_user_says_so() -> None:
    async with world("alice") as w:
        wa = w["alice"]
        assert await wa.node.connect("ghost") is None
        await wa.wait_for(
            lambda e: "There is no user named ghost" in getattr(e, "text", ""), "the reason"
        )
        assert wa.node.active is None


async def test_a_replaced_session_sends_nothing_and_records_nothing(tmp_path: Path) -> None:
    """alice logs in again elsewhere (same data folder): the old session says
    so, refuses what is typed there, and records none of it as sent."""
    async with world("bob") as w:
        port = w["bob"].node.server.server[1]
        cfg = PeerConfig("alice", "127.0.0.1", port, "127.0.0.1", 0, data_dir=tmp_path)
        async with (
            trio.open_nursery() as nursery,
            open_peer(cfg, fixed_password("alice-pw")) as old,
        ):
            wo = Watcher(old)
            nursery.start_soon(wo.run)
            await old.connect("bob")
            await old.send("bob", "from the old session")
            async with open_peer(cfg, fixed_password("alice-pw")) as new:
                await wo.system("This user logged in elsewhere")
                assert await old.send("bob", "typed after the takeover") is False
                await wo.system(REPLACED)
                assert await old.connect("carol") is None
                texts = [e.text for e in new.mail.history.last("bob", 10)]
                assert "typed after the takeover" not in texts
                assert "from the old session" in texts
                nursery.cancel_scope.cancel()


async def test_quit_says_what_leaves_undelivered() -> None:
    async with world("alice", "bob") as w:
        wa = w["alice"]
        alice = wa.node
        await alice.connect("bob")
        talk = alice.talks["bob"]
        # Queued in the conversation but never confirmed (as if lost in flight).
        talk.conv.send_text("never confirmed 1")
        talk.conv.send_text("never confirmed 2")
        with trio.fail_after(DEADLINE):
            await alice.quit()
        await wa.system("Not delivered: 2 to bob")


async def test_a_peer_asked_for_before_it_announced_is_not_taken_for_plain_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bob has logged in but his key and addresses (the lines right after his
    login) reach the rendezvous only after alice's ``connect: bob`` was
    answered: alice must not take bob for a plain-text client, or what she
    sends leaves unencrypted and bob's peer drops it (it was lost)."""
    answered = trio.Event()
    go = trio.Event()
    real_connect, real_announce = Hub.connect, PeerNode._announce

    def connect_then_tell(hub: Hub, session: Session, name: str) -> None:
        real_connect(hub, session, name)
        if session.name == "alice":
            answered.set()

    def announce_late(node: PeerNode) -> None:
        if node.me != "bob":
            real_announce(node)
            return

        async def later() -> None:
            await go.wait()
            real_announce(node)

        node.nursery.start_soon(later)

    monkeypatch.setattr(Hub, "connect", connect_then_tell)
    monkeypatch.setattr(PeerNode, "_announce", announce_late)
    async with world("alice", "bob") as w:
        alice, wb = w["alice"].node, w["bob"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(alice.connect, "bob")
            with trio.fail_after(DEADLINE):
                await answered.wait()  # the first answer: no key, no addresses
            go.set()
        talk = alice.talks["bob"]
        assert not talk.plain
        await alice.send("bob", "sealed, not plain")
        assert await wb.texts_count(1) == ["sealed, not plain"]
        assert not [e for e in wb.seen if "unencrypted" in getattr(e, "text", "")]
