"""The relay's retransmission with real nodes: a real Server and real
PeerNodes on 127.0.0.1 (like ``tests/test_node.py``), both relay-only so
every frame goes through the rendezvous, and one frame lost on the way.

The loss is made at the sender's edge, where the driver writes to the
rendezvous (``PeerNode.send_server``): the core sealed the frame as usual and
it is not written, exactly what a rendezvous that dropped the ``msg:`` line
would leave behind. The bounds of :mod:`chathack.retransmit`
(``PeerConfig.timing``) and the clock's tick (``peer.clock.TICK_INTERVAL``)
are shrunk (``fast``) so each test takes about a second; every wait has a
deadline (``tests/test_node.py``'s ``DEADLINE``, through its ``Watcher``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
import trio

from chathack.link import Frame, Sealed, is_relay_frame, relay_text_to_frame
from chathack.protocol import ClientEvent, Msg, UserLine
from chathack.retransmit import Timing
from chathack.secure import KeyConfirm, KeyInit, KeyReply
from peer import clock
from peer.core import records as rec
from peer.events import System
from peer.node import PeerNode
from tests.test_e2e_security import world
from tests.test_node import DEADLINE, Watcher

FAST = Timing(
    resend_first=1.0,  # long against gap_after, so the receiver sees the hole first
    resend_max=1.0,
    late_after=1.0,
    gap_after=0.1,
    key_first=0.5,
    key_max=1.0,
)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "TICK_INTERVAL", 0.05)


def relayed(*names: str) -> AbstractAsyncContextManager[dict[str, Watcher]]:
    """A server and one relay-only node per name, each with its watcher (the
    node's clock polls the re-send timers once it is logged in)."""
    return world(**{name: {"relay_only": True, "timing": FAST} for name in names})


def lose_once(
    monkeypatch: pytest.MonkeyPatch,
    node: PeerNode,
    doomed: Callable[[rec.Input | None, Frame], bool],
) -> list[Frame]:
    """Lose on the relay the first frame ``node`` sends for which ``doomed``
    holds, given the input the node was handling then (None: none) and the
    frame as it goes on the wire (sealed, or a key exchange frame): the node
    believes it sent it. Returns what was lost."""
    lost: list[Frame] = []
    handling: list[rec.Input] = []
    real_feed, real_send = node.feed, node.send_server

    def feed(event: rec.Input) -> list[rec.Effect]:
        handling.append(event)
        try:
            return real_feed(event)
        finally:
            handling.pop()

    def send_server(event: ClientEvent) -> bool:
        if isinstance(event, Msg) and not lost and is_relay_frame(event.text):
            frame = relay_text_to_frame(event.text)
            if doomed(handling[-1] if handling else None, frame):
                lost.append(frame)
                return True  # "sent": the rendezvous lost it
        return real_send(event)

    monkeypatch.setattr(node, "feed", feed)
    monkeypatch.setattr(node, "send_server", send_server)
    return lost


def errors(w: Watcher) -> list[str]:
    return [e.text for e in w.seen if isinstance(e, System) and e.level == "error"]


async def test_a_lost_relayed_message_is_resent_and_the_rest_shown_once_in_order(
    fast: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with relayed("alice", "bob") as w:
        wa, wb = w["alice"], w["bob"]
        alice = wa.node
        await alice.connect("bob")
        await alice.send("bob", "m0")
        assert await wb.texts_count(1) == ["m0"]
        m1 = rec.Send("bob", "m1")
        lost = lose_once(monkeypatch, alice, lambda event, f: event == m1 and isinstance(f, Sealed))
        for i in range(1, 4):
            await alice.send("bob", f"m{i}")
        assert len(lost) == 1
        # Bob is told that later messages wait behind a missing one...
        await wb.system("1 message from alice did not arrive")
        # ...which comes again by itself, and everything is shown once, in order.
        await wb.system("The missing messages from alice arrived")
        with trio.fail_after(DEADLINE):
            await alice.wait_delivered()
        assert wb.texts() == ["m0", "m1", "m2", "m3"]


async def test_a_lost_acknowledgement_is_repaired(
    fast: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob shows the message but his ack is lost: without a re-send alice would
    never hear it arrived (and ::quit would call it not delivered)."""
    async with relayed("alice", "bob") as w:
        wa, wb = w["alice"], w["bob"]
        alice, bob = wa.node, wb.node
        await alice.connect("bob")
        # Bob's acks say how far he got: the one sent once m1 is shown says 2.
        lost = lose_once(
            monkeypatch,
            bob,
            lambda _event, f: isinstance(f, Sealed) and bob.talks["alice"].conv.delivered == 2,
        )
        await alice.send("bob", "m0")
        await alice.send("bob", "m1")  # its ack, the last one, is lost
        assert await wb.texts_count(2) == ["m0", "m1"]
        with trio.fail_after(DEADLINE):
            await alice.wait_delivered()
        assert len(lost) == 1
        assert wb.texts() == ["m0", "m1"]  # the copy that came again is not shown


@pytest.mark.parametrize(
    ("loser", "kind"),
    [("alice", KeyInit), ("bob", KeyReply), ("alice", KeyConfirm)],
    ids=["kinit", "kreply", "kconfirm"],
)
async def test_a_lost_key_exchange_frame_on_the_relay_is_repaired(
    fast: None, monkeypatch: pytest.MonkeyPatch, loser: str, kind: type
) -> None:
    async with relayed("alice", "bob") as w:
        wa, wb = w["alice"], w["bob"]
        alice = wa.node
        lost = lose_once(monkeypatch, w[loser].node, lambda _event, f: isinstance(f, kind))
        await alice.connect("bob")
        await alice.send("bob", "m0")
        await alice.send("bob", "m1")
        assert await wb.texts_count(2) == ["m0", "m1"]
        with trio.fail_after(DEADLINE):
            await alice.wait_delivered()
        assert [type(f) for f in lost] == [kind]
        assert wb.texts() == ["m0", "m1"]
        assert errors(wa) == [] and errors(wb) == []  # a retry is not a failure


async def test_a_partner_that_never_answers_leaves_the_sender_told(
    fast: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob's program stops handling what the relay brings (a frozen process, a
    laptop lid closed: the rendezvous still counts him online until its idle
    timeout). Alice is told her message is not delivered yet; when bob comes
    back, it is shown once and alice hears it was delivered after all."""
    async with relayed("alice", "bob") as w:
        wa, wb = w["alice"], w["bob"]
        alice, bob = wa.node, wb.node
        await alice.connect("bob")
        await alice.send("bob", "m0")
        assert await wb.texts_count(1) == ["m0"]

        frozen = True
        feed = bob.feed

        def gone(event: rec.Input) -> list[rec.Effect]:
            if frozen and isinstance(event, rec.FromServer) and isinstance(event.line, UserLine):
                return []
            return feed(event)

        monkeypatch.setattr(bob, "feed", gone)
        await alice.send("bob", "are you there?")
        await wa.system("Not delivered yet: 1 message to bob not confirmed")
        assert wb.texts() == ["m0"]

        frozen = False  # bob is back
        assert await wb.texts_count(2) == ["m0", "are you there?"]
        await wa.system("Delivered after all: bob confirmed 1 late message")
        with trio.fail_after(DEADLINE):
            await alice.wait_delivered()
        assert wb.texts() == ["m0", "are you there?"]
