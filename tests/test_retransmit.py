"""Sans-IO tests of the relay's retransmission (:mod:`chathack.retransmit`).

First the watches one at a time, with a clock that the test sets. Then two
simulations where a relay drops, duplicates and reorders frames while the
clock advances, checking the promise: every message typed is shown exactly
once, in order, or its sender was told it is not delivered yet; and a
receiver held up by a hole is told so.

* :class:`ChatRelay` joins two :class:`~chathack.link.Conversation` objects
  and polls :class:`~chathack.retransmit.Retransmit` directly.
* then the real peer cores (:mod:`peer.core`) over the real rendezvous
  domain (tests/core_world.py), whose relay loses, duplicates and reorders
  every kind of line, ``kinit``/``kreply``/``kconfirm`` included.

Nothing here waits: time is a number the test advances.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from chathack.delivery import Conversation
from chathack.link import Ack, Chat, is_relay_frame, relay_text_to_frame
from chathack.protocol import UserLine
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
from tests.core_world import World

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
# Two conversations and a relay that loses, duplicates and reorders
# --------------------------------------------------------------------------


@dataclass
class ChatRelay:
    """Alice sends to Bob through a relay the test drives one step at a time;
    each side's watches are polled whenever the clock moves."""

    timing: Timing = field(default_factory=Timing)
    alice: Conversation = field(default_factory=lambda: conv("alice", "bob", "A"))
    bob: Conversation = field(default_factory=lambda: conv("bob", "alice", "B"))
    a_watch: Retransmit = field(init=False)
    b_watch: Retransmit = field(init=False)
    now: float = 0.0
    relay_up: bool = True
    session: int = 1  # the relay's key; a new one when the watch asks
    to_bob: list[Chat] = field(default_factory=list)
    to_alice: list[Ack] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    shown: list[Chat] = field(default_factory=list)
    # Per seq: the first poll that saw it unacknowledged (what "late" counts from).
    seen_at: dict[int, float] = field(default_factory=dict)
    told_late: set[int] = field(default_factory=set)
    notices: list[object] = field(default_factory=list)
    hole_since: float | None = None  # first poll that saw Bob's current hole
    hole_mark: tuple | None = None
    gap_told: bool = False

    def __post_init__(self) -> None:
        self.a_watch = Retransmit(self.timing)
        self.b_watch = Retransmit(self.timing)

    def step(self, op: str, i: int, dt: float) -> None:
        if op == "send":
            self.sent.append(f"m{len(self.sent)}")
            self.to_bob.append(self.alice.send_text(self.sent[-1]))
        elif op == "tick":
            self.tick(dt)
        elif op == "outage":  # the rendezvous goes away, or comes back
            self.relay_up = not self.relay_up
        elif self.to_bob and op in ("deliver", "duplicate", "drop"):
            i %= len(self.to_bob)
            if op == "deliver":  # any frame in flight: frames overtake each other
                self.deliver(self.to_bob.pop(i))
            elif op == "duplicate":
                self.to_bob.append(self.to_bob[i])
            else:
                del self.to_bob[i]
        elif self.to_alice and op in ("ack", "drop_ack"):
            ack = self.to_alice.pop(i % len(self.to_alice))
            if op == "ack":
                self.alice.receive_ack(ack)

    def deliver(self, chat: Chat) -> None:
        r = self.bob.receive_chat(chat)
        self.shown += r.deliver
        self.to_alice.append(r.ack)

    def tick(self, dt: float) -> None:
        self.now += dt
        relay = f"s{self.session}" if self.relay_up else None
        for action in self.a_watch.poll(self.alice, self.now, relay=relay):
            self.notices.append(action)
            match action:
                case Resend(chats):
                    assert self.relay_up
                    self.to_bob += chats
                case RetryKeyExchange():
                    # Agreed at once here; then the node re-sends what waits.
                    self.session += 1
                    self.to_bob += self.alice.to_resend()
                case Late(first, last):
                    self.told_late.update(range(first, last + 1))
        for action in self.b_watch.poll(self.bob, self.now):
            self.notices.append(action)
            if isinstance(action, Gap):
                self.gap_told = True
        self.check_promises()

    def check_promises(self) -> None:
        shown = {c.seq for c in self.shown}
        for s in self.alice.unacked:
            self.seen_at.setdefault(s, self.now)
        for s, at in self.seen_at.items():
            if self.now - at >= self.timing.late_after and s not in shown:
                assert s in self.told_late, f"message {s} late and its sender not told"
        # The receiver: a hole that has not moved for GAP_AFTER has been said.
        if not self.bob.early:
            self.hole_mark, self.hole_since, self.gap_told = None, None, False
            return
        mark = (self.bob.peer_epoch, self.bob.delivered)
        if mark != self.hole_mark:
            self.hole_mark, self.hole_since = mark, self.now
        assert self.hole_since is not None
        if self.now - self.hole_since >= self.timing.gap_after:
            assert self.gap_told, "a hole held messages back and the receiver was not told"

    def settle(self) -> None:
        """The relay heals and time passes: all is delivered and confirmed."""
        self.relay_up = True
        for _ in range(len(self.sent) // self.timing.resend_batch + 5):
            while self.to_bob:
                self.deliver(self.to_bob.pop(0))
            while self.to_alice:
                self.alice.receive_ack(self.to_alice.pop(0))
            if not self.alice.unacked:
                self.tick(self.timing.resend_max)  # and the closing notices
                return
            self.tick(self.timing.resend_max)
        raise AssertionError(f"still unacknowledged after the relay healed: {self.alice.unacked}")


OPS = ["send", "deliver", "duplicate", "drop", "ack", "drop_ack", "tick", "outage"]
index = st.integers(0, 3) | st.integers(0, 1000)  # oldest frames, or any
seconds = st.sampled_from([0.5, 1.0, 2.0, 5.0, 11.0, 31.0])
chat_ops = st.lists(st.tuples(st.sampled_from(OPS), index, seconds), max_size=100)
small = Timing(resend_batch=3)  # small batches: a backlog needs several rounds


@settings(max_examples=400, deadline=None)
@given(chat_ops, st.sampled_from([T, small]))
def test_every_message_is_shown_once_in_order_or_its_sender_is_told(
    ops: list[tuple[str, int, float]], timing: Timing
) -> None:
    relay = ChatRelay(timing)
    for op, i, dt in ops:
        relay.step(op, i, dt)
    relay.settle()
    assert [c.text for c in relay.shown] == relay.sent  # exactly once, in order
    # Every notice is answered: late messages were confirmed, holes filled.
    lates = sum(n.count for n in relay.notices if isinstance(n, Late))
    assert lates == sum(n.count for n in relay.notices if isinstance(n, CaughtUp))
    gaps = [n for n in relay.notices if isinstance(n, Gap | GapFilled)]
    assert all(isinstance(n, Gap if k % 2 == 0 else GapFilled) for k, n in enumerate(gaps))
    assert len(gaps) % 2 == 0


def test_one_lost_frame_is_repaired_by_the_timer_alone() -> None:
    """The bug: one relayed frame lost, and the ones after it never shown."""
    relay = ChatRelay()
    for _ in range(3):
        relay.step("send", 0, 0)
    del relay.to_bob[0]  # m0 lost on the way
    relay.step("deliver", 0, 0)
    relay.step("deliver", 0, 0)
    assert relay.shown == [] and relay.bob.early  # m1, m2 wait behind the hole
    for _ in range(3):
        relay.step("ack", 0, 0)
        relay.step("tick", 0, 1.0)
    for _ in range(3):
        relay.step("deliver", 0, 0)
    assert [c.text for c in relay.shown] == ["m0", "m1", "m2"]


# --------------------------------------------------------------------------
# The real cores: key exchange and sealing on a lossy relay
# --------------------------------------------------------------------------


def _world() -> tuple[World, Path]:
    tmp = Path(tempfile.mkdtemp(prefix="chathack-retransmit-"))
    return World(tmp), tmp


def _is(kind: type) -> Callable[[object], bool]:
    def match(line: object) -> bool:
        if not isinstance(line, UserLine) or not is_relay_frame(line.text):
            return False
        return isinstance(relay_text_to_frame(line.text), kind)

    return match


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([0.1, 0.3, 0.5]), st.integers(1, 8))
def test_with_lost_key_exchange_frames_every_message_is_shown_once_in_order(
    seed: int, loss: float, count: int
) -> None:
    world, tmp = _world()
    try:
        world.add("alice"), world.add("bob")
        rng = random.Random(seed)
        world.fate = lambda _line: (
            (0, False)
            if rng.random() < loss
            else (2 if rng.random() < loss / 2 else 1, rng.random() < loss)
        )
        world.connect("alice", "bob")
        texts = [f"m{i}" for i in range(count)]
        for text in texts:
            world.type("alice", rec.Send(None, text))
        world.pump()
        world.advance(60.0)
        world.fate = lambda _line: (1, False)
        world.advance(120.0)
        # (A duplicated or reordered handshake frame may fail one exchange,
        # said as such; the next one carries the messages.)
        assert world.peers["bob"].shown_texts("alice") == texts
    finally:
        world.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_each_lost_key_exchange_frame_alone_is_repaired() -> None:
    for kind in (KeyInit, KeyReply, KeyConfirm):
        world, tmp = _world()
        try:
            world.add("alice"), world.add("bob")
            lost: list[object] = []
            is_kind = _is(kind)

            def lose_one(line: object, is_kind=is_kind, lost=lost) -> tuple[int, bool]:
                if not lost and is_kind(line):
                    lost.append(line)
                    return 0, False
                return 1, False

            world.fate = lose_one
            world.connect("alice", "bob")
            world.type("alice", rec.Send(None, "hello"))
            world.pump()
            assert lost, kind
            assert world.peers["bob"].shown_texts() == [], kind  # held up by the loss
            world.advance(40.0)
            assert world.peers["bob"].shown_texts() == ["hello"], kind
            for peer in world.peers.values():  # a lost frame is no attack, nor a failure
                assert not [n for n in peer.notices() if "failed" in n or "WARNING" in n]
        finally:
            world.close()
            shutil.rmtree(tmp, ignore_errors=True)


def test_a_bug_in_one_talks_timers_is_reported_once_and_that_talk_left_alone() -> None:
    world, tmp = _world()
    try:
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
    finally:
        world.close()
        shutil.rmtree(tmp, ignore_errors=True)
