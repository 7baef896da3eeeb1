"""Replies go to the request they answer, and a session replaced by a login
elsewhere never pretends to send (in-process: a real Server and PeerNodes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from chathack.protocol import Msg, Punch, ServerLine
from peer.core import records as rec
from peer.core.user import REPLACED
from peer.events import System
from peer.node import PeerConfig, PeerNode, fixed_password, open_peer
from rendezvous.hashqueue import Refusal
from rendezvous.hub import Hub, Session
from tests.test_e2e_security import world as relayed_world
from tests.test_node import DEADLINE, Watcher, world

GONE_BOB = "msg bob offline: bob is offline: try again when ::users shows bob online"


async def test_an_earlier_requests_failure_is_not_taken_for_connects_answer() -> None:
    """``msg: ghost hi`` (no such user), then ``connect: bob`` with bob online:
    the failure about ghost reaches the user as such, and connect gets bob."""
    async with world("alice", "bob") as w:
        wa = w["alice"]
        alice = wa.node
        alice.send_server(Msg("ghost", "hi"))
        alice.send_server(Punch("nobody"))  # a background refusal too
        talk = await alice.connect("bob")
        assert talk is not None and talk.partner == "bob"
        assert alice.active == "bob"
        await wa.system("Not delivered to ghost: There is no user named ghost")
        seen = await wa.settled()
        assert not [e for e in seen if isinstance(e, System) and "nobody" in e.text]


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
            open_peer(cfg, fixed_password("alice-password")) as old,
        ):
            wo = Watcher(old)
            nursery.start_soon(wo.run)
            await old.connect("bob")
            await old.send("bob", "from the old session")
            async with open_peer(cfg, fixed_password("alice-password")) as new:
                await wo.system("This user logged in elsewhere")
                assert await old.send("bob", "typed after the takeover") is False
                await wo.system(REPLACED)
                assert await old.connect("carol") is None
                texts = [e.text for e in new.history.last("bob", 10)]
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
        assert not [e for e in await wb.settled() if "unencrypted" in getattr(e, "text", "")]


async def test_a_refused_frame_to_a_partner_who_left_is_no_loss_to_report() -> None:
    """GONE moved what bob had not confirmed to the mailbox; the server's
    FAILED for a frame relayed after that (an ack, say) tells the user nothing."""
    async with relayed_world(alice={"relay_only": True}, bob={"relay_only": True}) as w:
        wa = w["alice"]
        alice = wa.node
        await alice.connect("bob")
        alice.feed(rec.FromServer(ServerLine("FAILED", GONE_BOB)))
        await wa.system("bob is offline")  # the talk moved to the mailbox
        alice.feed(rec.FromServer(ServerLine("FAILED", GONE_BOB)))
        seen = await wa.settled()
        assert not [e for e in seen if "Not delivered to bob" in getattr(e, "text", "")]


async def test_a_login_refused_before_any_hash_is_tried_again_with_the_same_password(
    tmp_path: Path,
) -> None:
    """The hash queue refuses an attempt unjudged (another one at the account is
    pending): Servidor[RETRY], not a wrong password. The peer sends the same
    password again a moment later instead of giving up for good (a reconnecting
    peer used to stay offline)."""
    from rendezvous.hashqueue import Kind
    from rendezvous.passwords import Passwords, fast_hasher
    from rendezvous.server import Server
    from rendezvous.store import SqliteStore

    async with trio.open_nursery() as nursery:
        server = Server(SqliteStore(":memory:"), passwords=Passwords(fast_hasher()))
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        port = listeners[0].socket.getsockname()[1]
        cfg = PeerConfig("alice", "127.0.0.1", port, "127.0.0.1", 0, data_dir=tmp_path)
        async with open_peer(cfg, fixed_password("alice-password")):
            pass  # registered
        queue = server.logins.hash_queue
        held = queue.reserve(Kind.LOGIN, "alice", "203.0.113.50", trio.current_time())
        assert not isinstance(held, Refusal)
        refused = trio.Event()
        real_say = Session.say

        def watch(session: Session, flag: str, text: str) -> None:
            if flag == "RETRY":
                refused.set()
            real_say(session, flag, text)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Session, "say", watch)

            async def release() -> None:
                await refused.wait()
                queue.finish(held, trio.current_time())

            nursery.start_soon(release)
            with trio.fail_after(DEADLINE):
                async with open_peer(cfg, fixed_password("alice-password")) as node:
                    assert node.server.state == "online"
        assert refused.is_set()
        nursery.cancel_scope.cancel()
