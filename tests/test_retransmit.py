"""Sans-IO tests of the relay's retransmission (:mod:`chathack.retransmit`).

First the watches one at a time, with a clock that the test sets. Then the
real peer cores (:mod:`peer.core`) over the real rendezvous domain
(tests/core_world.py), whose relay the test drives line by line: it drops,
duplicates and reorders every kind of relayed line, ``kinit``/``kreply``/
``kconfirm`` included, while the clock advances, checking the promise:
every message typed is shown exactly once, in order, or its sender was told
it is not delivered yet; and a receiver held up by a hole is told so.

Nothing here waits: time is a number the test advances.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chathack.delivery import Conversation
from chathack.link import Ack, Sealed, relay_text_to_frame
from chathack.protocol import ServerLine, UserLine
from chathack.retransmit import (
    CaughtUp,
    Gap,
    GapFilled,
    GapWatch,
    KeyTimer,
    Late,
    Resend,
    Retransmit,
    RetryKeyExchange,
    SendTimer,
    Timing,
)
from chathack.secure import KeyConfirm, KeyInit, KeyReply
from peer.core import records as rec
from peer.events import System, UIEvent
from tests.core_world import Peer, World, scratch_world

T = Timing()  # the real bounds: 2 s first resend, 30 s max, 30 s late, 10 s gap, 3 s keys


def conv(me: str = "alice", partner: str = "bob", epoch: str = "A") -> Conversation:
    return Conversation(me, partner, epoch)


def resent(actions: list) -> list[int]:
    return [c.seq for a in actions if isinstance(a, Resend) for c in a.chats]


# --------------------------------------------------------------------------
# SendTimer: when to re-send
# --------------------------------------------------------------------------


def test_a_lost_frame_is_resent_after_the_first_timeout_then_with_backoff() -> None:
    a, timer = conv(), SendTimer(T)
    a.send_text("one")
    assert timer.poll(a, 100.0, relay="s1") == []  # first seen now
    assert timer.poll(a, 101.9, relay="s1") == []
    assert resent(timer.poll(a, 102.0, relay="s1")) == [1]
    # Then 4, 8, 16, 30, 30, 30 s apart: doubling, capped at RESEND_MAX.
    fired, now = [(102.0, "resend")], 102.0
    while now < 250.0:
        now += 0.5
        for action in timer.poll(a, now, relay="s1"):
            if isinstance(action, Resend | RetryKeyExchange):
                kind = "resend" if isinstance(action, Resend) else "rekey"
                fired.append((now, kind))
    gaps = [later[0] - before[0] for before, later in pairwise(fired)]
    assert gaps[:6] == [4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    # Every second timeout without progress agrees on a new key instead.
    assert [kind for _, kind in fired[:5]] == ["resend", "rekey", "resend", "rekey", "resend"]


def test_without_a_relay_session_a_resend_is_what_starts_the_key_exchange() -> None:
    """``relay=""``: no key yet; the node's send starts the exchange. No rekey."""
    a, timer = conv(), SendTimer(T)
    a.send_text("one")
    timer.poll(a, 0.0, relay="")
    assert [resent(timer.poll(a, float(t), relay="")) for t in (2, 6, 14)] == [[1]] * 3


def test_progress_resets_the_backoff() -> None:
    a, b, timer = conv(), conv("bob", "alice", "B"), SendTimer(T)
    c1, c2 = a.send_text("one"), a.send_text("two")
    timer.poll(a, 0.0, relay="s1")
    assert resent(timer.poll(a, 2.0, relay="s1")) == [1, 2]
    assert timer.poll(a, 6.0, relay="s1") == [RetryKeyExchange(forget_session=True)]  # 4 s
    a.receive_ack(b.receive_chat(c1).ack)  # "one" arrives; "two" is still lost
    assert timer.poll(a, 7.0, relay="s1") == []
    assert resent(timer.poll(a, 9.0, relay="s1")) == [2]  # 2 s after the progress
    a.receive_ack(b.receive_chat(c2).ack)
    assert timer.poll(a, 60.0, relay="s1") == []  # nothing left: no timer


def test_resent_frames_are_the_oldest_batch_with_the_current_base() -> None:
    a = conv()
    for i in range(40):
        a.send_text(f"m{i}")
    a.receive_ack(Ack("A", 3))
    timer = SendTimer(Timing(resend_batch=5))
    timer.poll(a, 0.0, relay="s1")
    (resend,) = [x for x in timer.poll(a, 2.0, relay="s1") if isinstance(x, Resend)]
    assert [(c.seq, c.base) for c in resend.chats] == [(4, 4), (5, 4), (6, 4), (7, 4), (8, 4)]


def test_nothing_is_resent_while_the_relay_cannot_carry_it() -> None:
    """On a direct link (TCP's job), without a relay session or without a
    rendezvous, re-sending would do nothing: ``relay`` is None."""
    a, timer = conv(), SendTimer(T)
    a.send_text("one")
    for now in range(0, 25):
        assert resent(timer.poll(a, float(now), relay=None)) == []


def test_a_relay_usable_anew_restarts_the_timer() -> None:
    """The node re-sends everything itself when the relay becomes usable (a
    path change, a new session, the rendezvous back): no second copy at once."""
    a, timer = conv(), SendTimer(T)
    a.send_text("one")
    timer.poll(a, 0.0, relay=None)
    assert timer.poll(a, 10.0, relay="s1") == []  # usable from now on
    assert timer.poll(a, 11.9, relay="s1") == []
    assert resent(timer.poll(a, 12.0, relay="s1")) == [1]
    assert timer.poll(a, 13.0, relay=None) == []  # the rendezvous goes away
    assert timer.poll(a, 15.0, relay="s1") == []  # and is back: the node resent
    assert timer.poll(a, 18.9, relay="s1") == []  # the backoff (4 s) stays
    assert resent(timer.poll(a, 19.0, relay="s1")) == []  # the second timeout: a new key
    assert timer.poll(a, 19.5, relay="s2") == []  # the new session: the node resent
    assert resent(timer.poll(a, 27.5, relay="s2")) == [1]  # 8 s later


# --------------------------------------------------------------------------
# SendTimer: telling the sender
# --------------------------------------------------------------------------


def test_the_sender_is_told_once_then_told_when_it_is_delivered() -> None:
    a, b, timer = conv(), conv("bob", "alice", "B"), SendTimer(T)
    c1, c2 = a.send_text("one"), a.send_text("two")
    notices: list = []
    for now in range(0, 60):
        notices += [x for x in timer.poll(a, float(now), relay="s1") if isinstance(x, Late)]
    assert notices == [Late(1, 2, 30.0)]  # once, at 30 s, about both
    a.receive_ack(b.receive_chat(c1).ack)
    assert timer.poll(a, 61.0) == []
    b.receive_chat(c2)
    a.receive_ack(Ack("A", 2))
    assert timer.poll(a, 62.0) == [CaughtUp(2)]
    assert timer.poll(a, 63.0) == []


def test_messages_typed_after_a_notice_get_their_own() -> None:
    a, timer = conv(), SendTimer(T)
    a.send_text("one")
    timer.poll(a, 0.0)
    assert timer.poll(a, 30.0) == [Late(1, 1, 30.0)]
    a.send_text("two")
    a.send_text("three")
    assert timer.poll(a, 31.0) == []  # seen at 31: late at 61
    assert timer.poll(a, 60.0) == []
    assert timer.poll(a, 61.0) == [Late(2, 3, 30.0)]
    a.receive_ack(Ack("A", 3))
    assert timer.poll(a, 62.0) == [CaughtUp(3)]


def test_the_notice_comes_on_a_direct_path_too() -> None:
    """A partner whose link is alive but who confirms nothing is late as well."""
    a, timer = conv(), SendTimer(T)
    a.send_text("one")
    timer.poll(a, 0.0, relay=None)
    assert timer.poll(a, 30.0, relay=None) == [Late(1, 1, 30.0)]


# --------------------------------------------------------------------------
# GapWatch: telling the receiver
# --------------------------------------------------------------------------


def test_a_hole_that_holds_back_messages_is_said_once_then_its_end() -> None:
    a, b, watch = conv(), conv("bob", "alice", "B"), GapWatch(T)
    c1, c2, c3, c4 = (a.send_text(t) for t in ("one", "two", "three", "four"))
    b.receive_chat(c1)
    b.receive_chat(c3)  # two is lost
    b.receive_chat(c4)
    assert watch.poll(b, 0.0) == []
    assert watch.poll(b, 9.9) == []
    assert watch.poll(b, 10.0) == [Gap(missing=1, waiting=2, waited=10.0)]
    assert watch.poll(b, 30.0) == []  # said once
    assert [c.text for c in b.receive_chat(c2).deliver] == ["two", "three", "four"]
    assert watch.poll(b, 31.0) == [GapFilled()]
    assert watch.poll(b, 32.0) == []


def test_a_hole_filled_in_time_is_not_mentioned() -> None:
    a, b, watch = conv(), conv("bob", "alice", "B"), GapWatch(T)
    c1, c2 = a.send_text("one"), a.send_text("two")
    b.receive_chat(c2)
    assert watch.poll(b, 0.0) == []
    b.receive_chat(c1)
    assert watch.poll(b, 9.0) == [] and watch.poll(b, 20.0) == []


def test_a_hole_that_moves_on_is_timed_afresh() -> None:
    a, b, watch = conv(), conv("bob", "alice", "B"), GapWatch(T)
    c = [a.send_text(f"m{i}") for i in range(5)]
    b.receive_chat(c[1])
    b.receive_chat(c[3])
    watch.poll(b, 0.0)
    b.receive_chat(c[0])  # the first hole fills; another one (m2) holds m3 back
    assert watch.poll(b, 8.0) == []
    assert watch.poll(b, 17.9) == []
    assert watch.poll(b, 18.0) == [Gap(missing=1, waiting=1, waited=10.0)]


# --------------------------------------------------------------------------
# KeyTimer: a key exchange that stalls on the relay
# --------------------------------------------------------------------------


def test_a_stalled_exchange_is_restarted_with_backoff() -> None:
    timer = KeyTimer(T)
    assert timer.poll(("s1", True), 0.0) == []
    assert timer.poll(("s1", True), 2.9) == []
    assert timer.poll(("s1", True), 3.0) == [RetryKeyExchange(forget_session=False)]
    assert timer.poll(("s2", True), 3.5) == []  # the new one, timed from now
    assert timer.poll(("s2", True), 9.4) == []
    assert timer.poll(("s2", True), 9.5) == [RetryKeyExchange(forget_session=False)]  # 6 s
    # An exchange that ends by itself (done, or refused) resets the backoff.
    assert timer.poll(("s3", True), 10.0) == []
    assert timer.poll(None, 11.0) == []
    assert timer.poll(("s4", True), 20.0) == []
    assert timer.poll(("s4", True), 23.0) == [RetryKeyExchange(forget_session=False)]


def test_a_stalled_responder_forgets_the_old_session() -> None:
    """It answered a partner that has no session: the old one is of no use."""
    timer = KeyTimer(T)
    assert timer.poll(("s1", False), 0.0) == []
    assert timer.poll(("s1", False), 3.0) == [RetryKeyExchange(forget_session=True)]


def test_retransmit_retries_the_exchange_before_resending() -> None:
    a, watch = conv(), Retransmit(T)
    a.send_text("one")
    watch.poll(a, 0.0, relay="s1", handshake=("k1", True))
    actions = watch.poll(a, 3.0, relay="s1", handshake=("k1", True))
    assert actions == [RetryKeyExchange(False), Resend((a.to_resend()[0],))]


def test_one_new_exchange_when_both_timers_want_one() -> None:
    """A stalled answer (KeyTimer) and a session that carries nothing (the
    SendTimer's second timeout) at once: one exchange, forgetting the session."""
    a, watch = conv(), Retransmit(T)
    a.send_text("one")
    watch.poll(a, 0.0, relay="s1")
    watch.poll(a, 2.0, relay="s1")  # the first re-send
    watch.poll(a, 3.0, relay="s1", handshake=("k1", True))  # a re-key of ours, say
    assert watch.poll(a, 6.0, relay="s1", handshake=("k1", True)) == [RetryKeyExchange(True)]


# --------------------------------------------------------------------------
# Two real peer cores and a relay that loses, duplicates and reorders
# --------------------------------------------------------------------------

#: What each side is told (peer/core/conversations.py), read back.
LATE = re.compile(r"Not delivered yet: (\d+) messages? to (\w+) ")
CAUGHT_UP = re.compile(r"Delivered after all: (\w+) confirmed (\d+) late")
GAP = re.compile(r"\d+ messages? from (\w+) did not arrive")
FILLED = re.compile(r"The missing messages from (\w+) arrived")


def _conv(peer: Peer, partner: Peer) -> Conversation | None:
    talk = peer.state.talks.get(partner.name)
    return talk.conv if talk is not None else None


def _said(events: list[UIEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, System)]


@dataclass
class Direction:
    """What ``sender`` typed to ``receiver``, and what each was told about it."""

    sender: Peer
    receiver: Peer
    sent: list[str] = field(default_factory=list)  # the message of seq s is sent[s - 1]
    # Per seq: the first tick that saw it unacknowledged (what "late" counts from).
    seen_at: dict[int, float] = field(default_factory=dict)
    told_late: set[int] = field(default_factory=set)
    lates: int = 0  # messages the sender was told are late
    caught_up: int = 0  # ... and then told were delivered after all
    gaps: list[str] = field(default_factory=list)  # "gap", "filled": what the receiver was told
    gap_told: bool = False
    hole_mark: tuple[str | None, int] | None = None  # the receiver's hole, first seen at...
    hole_since: float = 0.0

    def hear(self, to_sender: list[UIEvent], to_receiver: list[UIEvent]) -> None:
        """Take in what one tick told either side about this direction."""
        conv = _conv(self.sender, self.receiver)
        for text in _said(to_sender):
            if (m := LATE.match(text)) and m[2] == self.receiver.name:
                assert conv is not None and conv.unacked
                # A notice covers the newest messages, up to the last one typed.
                last, count = max(conv.unacked), int(m[1])
                self.told_late.update(range(last - count + 1, last + 1))
                self.lates += count
            elif (m := CAUGHT_UP.match(text)) and m[1] == self.receiver.name:
                self.caught_up += int(m[2])
        for text in _said(to_receiver):
            if (m := GAP.match(text)) and m[1] == self.sender.name:
                self.gaps.append("gap")
                self.gap_told = True
            elif (m := FILLED.match(text)) and m[1] == self.sender.name:
                self.gaps.append("filled")

    def check(self, now: float, timing: Timing) -> None:
        """The promises, as the cores' timers saw the state at this tick."""
        conv = _conv(self.sender, self.receiver)
        for s in conv.unacked if conv is not None else ():
            self.seen_at.setdefault(s, now)
        shown = set(self.receiver.shown_texts(self.sender.name))
        for s, at in self.seen_at.items():
            if now - at >= timing.late_after and self.sent[s - 1] not in shown:
                assert s in self.told_late, f"{self.sent[s - 1]} late and its sender not told"
        # The receiver: a hole that has not moved for gap_after has been said.
        theirs = _conv(self.receiver, self.sender)
        if theirs is None or not theirs.early:
            self.hole_mark, self.gap_told = None, False
            return
        mark = (theirs.peer_epoch, theirs.delivered)
        if mark != self.hole_mark:
            self.hole_mark, self.hole_since = mark, now
        if now - self.hole_since >= timing.gap_after:
            assert self.gap_told, "a hole held messages back and the receiver was not told"


class LossyRelay:
    """Alice has connected to Bob: two real cores on the real rendezvous domain
    (tests/core_world.py). Every relayed line, either way (``kinit``,
    ``kreply``, ``kconfirm``, sealed chats and acks), waits in ``flight``
    until the test delivers it (any of them: lines overtake each other),
    duplicates or drops it. The clock moves only on :meth:`tick`, which
    checks the promises after the cores' timers ran."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.timing = world.timing
        self.flight: list[UserLine] = []
        self.handshake_duplicated = False
        alice, bob = world.add("alice"), world.add("bob")
        world.fate = self._hold
        world.connect("alice", "bob")
        assert alice.state.active == "bob"
        self.alice, self.bob = alice, bob
        self.ways = (Direction(alice, bob), Direction(bob, alice))
        self.heard = {peer.name: len(peer.ui) for peer in (alice, bob)}

    def _hold(self, line: ServerLine | UserLine) -> tuple[int, bool]:
        assert isinstance(line, UserLine)
        self.flight.append(line)
        return 0, False

    def step(self, op: str, i: int, dt: float) -> None:
        if op == "send_a":
            self.type(self.ways[0])
        elif op == "send_b":
            self.type(self.ways[1])
        elif op == "tick":
            self.tick(dt)
        elif self.flight:
            i %= len(self.flight)
            if op == "deliver":
                self.deliver(self.flight.pop(i))
            elif op == "duplicate":
                line = self.flight[i]
                self.flight.append(line)
                if not isinstance(relay_text_to_frame(line.text), Sealed):
                    self.handshake_duplicated = True
            else:
                del self.flight[i]

    def type(self, way: Direction) -> None:
        if way.sender.state.convs.open_talk(way.receiver.name) is None:
            return  # Bob's side opens when a line of Alice's reaches it
        way.sent.append(f"{way.sender.name[0]}{len(way.sent)}")
        self.world.type(way.sender.name, rec.Send(way.receiver.name, way.sent[-1]))
        self.world.pump()

    def deliver(self, line: UserLine) -> None:
        to = self.bob if line.origin == self.alice.name else self.alice
        to.inbox.append(line)
        self.world.pump()

    def deliver_all(self) -> None:
        """Everything in flight, and what it brings back, arrives in order."""
        for _ in range(10_000):
            if not self.flight:
                return
            self.deliver(self.flight.pop(0))
        raise AssertionError("the relay never fell quiet")

    def tick(self, dt: float) -> None:
        self.world.advance(dt, step=dt)  # one Tick for each side, at now + dt
        told: dict[str, list[UIEvent]] = {}
        for peer in (self.alice, self.bob):
            told[peer.name], self.heard[peer.name] = peer.ui[self.heard[peer.name] :], len(peer.ui)
        for way in self.ways:
            way.hear(told[way.sender.name], told[way.receiver.name])
            way.check(self.world.now, self.timing)

    def unacked(self) -> bool:
        return any((c := _conv(w.sender, w.receiver)) is not None and c.unacked for w in self.ways)

    def settle(self) -> None:
        """The relay heals and time passes: all is delivered and confirmed."""
        for _ in range(40):
            self.deliver_all()
            if not self.unacked():
                self.tick(self.timing.resend_max)  # and the closing notices
                return
            self.tick(self.timing.resend_max)
        raise AssertionError(f"still unacknowledged after the relay healed: {self.flight}")


@contextmanager
def lossy(timing: Timing = T) -> Iterator[LossyRelay]:
    with scratch_world(timing) as world:
        yield LossyRelay(world)


OPS = ["send_a", "send_b", "deliver", "deliver", "duplicate", "drop", "tick"]
index = st.integers(0, 3) | st.integers(0, 1000)  # oldest lines, or any
seconds = st.sampled_from([0.5, 1.0, 2.0, 5.0, 11.0, 31.0])
chat_ops = st.lists(st.tuples(st.sampled_from(OPS), index, seconds), max_size=60)
small = Timing(resend_batch=3)  # small batches: a backlog needs several rounds


@settings(max_examples=300, deadline=None)
@given(chat_ops, st.sampled_from([T, small]))
def test_every_message_is_shown_once_in_order_or_its_sender_is_told(
    ops: list[tuple[str, int, float]], timing: Timing
) -> None:
    """Lost, duplicated and reordered lines, key exchange included, whatever
    the order: each side shows the other's messages once, in order; meanwhile
    a late message's sender was told, and a receiver held up by a hole too."""
    with lossy(timing) as relay:
        for op, i, dt in ops:
            relay.step(op, i, dt)
        relay.settle()
        for way in relay.ways:
            assert way.receiver.shown_texts(way.sender.name) == way.sent  # once, in order
            # Every notice is answered: late messages were confirmed, holes filled.
            assert way.lates == way.caught_up
            assert way.gaps == ["gap", "filled"] * (len(way.gaps) // 2)
        if not relay.handshake_duplicated:
            # A retried exchange never looks like an attack or a failure. (A
            # duplicated handshake line may fail one exchange, said as such.)
            for way in relay.ways:
                errors = [e for e in way.sender.ui if isinstance(e, System) and e.level == "error"]
                assert errors == []


def test_one_lost_frame_is_repaired_by_the_timer_alone() -> None:
    """The bug: one relayed frame lost, and the ones after it never shown."""
    with lossy() as relay:
        alice, bob = relay.alice, relay.bob
        relay.deliver_all()  # the key exchange
        for _ in range(3):
            relay.step("send_a", 0, 0)
        del relay.flight[0]  # a0 lost on the way
        relay.deliver_all()
        assert bob.shown_texts() == [] and _conv(bob, alice).early  # a1, a2 wait behind the hole
        for _ in range(3):  # first seen unacknowledged at the first tick; re-sent 2 s later
            relay.tick(1.0)
            relay.deliver_all()
        assert bob.shown_texts() == ["a0", "a1", "a2"]


# --------------------------------------------------------------------------
# One kind of key exchange line lost; a bug in one talk's timers
# --------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


@pytest.mark.parametrize("kind", [KeyInit, KeyReply, KeyConfirm])
def test_each_lost_key_exchange_frame_alone_is_repaired(world: World, kind: type) -> None:
    world.add("alice"), world.add("bob")
    lost: list[UserLine] = []

    def lose_one(line: ServerLine | UserLine) -> tuple[int, bool]:
        assert isinstance(line, UserLine)  # only relayed lines meet a fate
        if not lost and isinstance(relay_text_to_frame(line.text), kind):
            lost.append(line)
            return 0, False
        return 1, False

    world.fate = lose_one
    world.connect("alice", "bob")
    world.type("alice", rec.Send(None, "hello"))
    world.pump()
    assert lost
    assert world.peers["bob"].shown_texts() == []  # held up by the loss
    world.advance(40.0)
    assert world.peers["bob"].shown_texts() == ["hello"]
    for peer in world.peers.values():  # a lost frame is no attack, nor a failure
        assert not [n for n in peer.notices() if "failed" in n or "WARNING" in n]


def test_a_bug_in_one_talks_timers_is_reported_once_and_that_talk_left_alone(
    world: World,
) -> None:
    world.add("alice"), world.add("bob")
    world.connect("alice", "bob")
    talk = world.peers["alice"].state.talks["bob"]

    class Broken:
        def poll(self, *args: object, **kwargs: object) -> list[object]:
            raise RuntimeError("a bug")

    talk.watch = Broken()  # type: ignore[assignment]
    faults = []
    for _ in range(10):
        effects = world.peers["alice"].state.handle(rec.Tick(), world.now)
        faults += [e for e in effects if isinstance(e, rec.Fault)]
    assert [f.where for f in faults] == ["the retransmission timers of bob"]
    assert talk.watch is None
    world.type("alice", rec.Send(None, "still works"))  # the talk itself goes on
    world.pump()
    assert world.peers["bob"].shown_texts("alice") == ["still works"]
