"""Sans-IO tests of the relay's retransmission (:mod:`chathack.retransmit`).

First the watches one at a time, with a clock that the test sets. Then two
simulations where a relay drops, duplicates and reorders frames while the
clock advances, checking the promise: every message typed is shown exactly
once, in order, or its sender was told it is not delivered yet; and a
receiver held up by a hole is told so.

* :class:`ChatRelay` joins two :class:`~chathack.link.Conversation` objects
  and polls :class:`~chathack.retransmit.Retransmit` directly.
* :class:`KeyedRelay` adds the key exchange and sealing: two small nodes run
  the real :mod:`peer.pathsec` and the driver's synchronous tick
  (:func:`peer.retransmit.poll_talks`), so lost, duplicated or reordered
  ``kinit``/``kreply``/``kconfirm`` frames are covered too.

Nothing here waits: time is a number the test advances.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from chathack.link import Ack, Chat, Conversation, Frame, Hello, Sealed
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
from peer import pathsec
from peer.events import System, UIEvent
from peer.identity import Pins
from peer.node import Talk
from peer.retransmit import Hooks, poll_talks, retry_key_exchange

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
# The same with the key exchange: real pathsec, the driver's tick
# --------------------------------------------------------------------------


class MiniNode:
    """What :mod:`peer.pathsec` and the driver need of a node, for one relayed
    talk. Its routing mirrors ``PeerNode``'s relay branch (``_send_frame``,
    ``_on_frame``, ``_on_inner``, ``relay_verified``); keep them in step."""

    def __init__(self, me: str, partner: str, epoch: str, net: KeyedRelay) -> None:
        self.me, self.net = me, net
        self.identity = SigningKey.generate()
        self.pins = Pins(None)
        self.vouched: dict[str, bytes] = {}
        self.blocked: dict[str, bytes] = {}
        self.events: list[UIEvent] = []
        self.talk = Talk(partner, Conversation(me, partner, epoch))
        self.shown: list[str] = []
        self.sent: list[str] = []
        self.watches: dict = {}
        self.hooks = Hooks(
            talks=lambda: [self.talk],
            send_frame=self.send_frame,
            retry_key_exchange=self.retry,
            relay_up=lambda: True,
            emit=self.events.append,
            report=self.report,
        )

    # what pathsec calls
    def emit(self, event: UIEvent) -> None:
        self.events.append(event)

    def send_raw(self, partner: str, frame: Frame, link: object) -> bool:
        assert link is None
        self.net.post(self, frame)
        return True

    def relay_verified(self, partner: str) -> None:
        for chat in self.talk.conv.to_resend():
            self.send_frame(self.talk, chat)

    def link_verified(self, link: object) -> None:  # pragma: no cover - no links here
        raise AssertionError("no direct links in this test")

    # the driver's hooks
    def retry(self, talk: Talk, forget_session: bool) -> None:
        retry_key_exchange(self, talk.partner, talk.relay_sec, forget_session=forget_session)  # type: ignore[arg-type]

    def report(self, where: str, exc: Exception) -> None:
        raise exc

    # the node's relay routing
    def send_frame(self, talk: Talk, frame: Frame) -> None:
        sealed = pathsec.seal(talk.relay_sec, frame)
        if sealed is None:
            pathsec.start(self, talk.partner, talk.relay_sec, None)  # type: ignore[arg-type]
            return
        self.send_raw(talk.partner, sealed, None)

    def on_frame(self, frame: Frame) -> None:
        talk, sec = self.talk, self.talk.relay_sec
        match frame:
            case KeyInit() | KeyReply() | KeyConfirm():
                pathsec.on_handshake(self, talk.partner, sec, None, frame)  # type: ignore[arg-type]
            case Sealed():
                inner = pathsec.open_sealed(self, talk.partner, sec, None, frame)  # type: ignore[arg-type]
                if inner is not None:
                    self.on_inner(inner)
            case Hello():
                pathsec.start(self, talk.partner, sec, None)  # type: ignore[arg-type]

    def on_inner(self, frame: Frame) -> None:
        conv = self.talk.conv
        match frame:
            case Chat():
                got = conv.receive_chat(frame)
                self.shown += [c.text for c in got.deliver]
                self.send_frame(self.talk, got.ack)
            case Ack():
                conv.receive_ack(frame)

    def type(self, text: str) -> None:
        self.sent.append(text)
        self.send_frame(self.talk, self.talk.conv.send_text(text))

    def errors(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, System) and e.level == "error"]


@dataclass
class KeyedRelay:
    """Alice and Bob on the relay: every frame (key exchange or sealed) goes
    through ``flight``, which the test drops, duplicates and reorders."""

    timing: Timing = field(default_factory=Timing)
    now: float = 0.0
    flight: list[tuple[MiniNode, Frame]] = field(default_factory=list)  # (receiver, frame)
    alice: MiniNode = field(init=False)
    bob: MiniNode = field(init=False)
    handshakes_duplicated: bool = False

    def __post_init__(self) -> None:
        self.alice = MiniNode("alice", "bob", "A", self)
        self.bob = MiniNode("bob", "alice", "B", self)
        for one, other in ((self.alice, self.bob), (self.bob, self.alice)):
            one.vouched["alice" if one is self.bob else "bob"] = bytes(other.identity.verify_key)
        # Alice opens the conversation as PeerNode._open_talk does on the relay.
        self.alice.send_raw("bob", Hello("alice", "bob", "A"), None)
        pathsec.start(self.alice, "bob", self.alice.talk.relay_sec, None)  # type: ignore[arg-type]

    def post(self, sender: MiniNode, frame: Frame) -> None:
        self.flight.append((self.bob if sender is self.alice else self.alice, frame))

    def step(self, op: str, i: int, dt: float) -> None:
        if op == "send_a":
            self.alice.type(f"a{len(self.alice.sent)}")
        elif op == "send_b":
            self.bob.type(f"b{len(self.bob.sent)}")
        elif op == "tick":
            self.tick(dt)
        elif self.flight:
            i %= len(self.flight)
            if op == "deliver":
                to, frame = self.flight.pop(i)
                to.on_frame(frame)
            elif op == "duplicate":
                self.flight.append(self.flight[i])
                if not isinstance(self.flight[i][1], Sealed):
                    self.handshakes_duplicated = True
            elif op == "drop":
                del self.flight[i]

    def tick(self, dt: float) -> None:
        self.now += dt
        for node in (self.alice, self.bob):
            poll_talks(node.hooks, node.watches, self.now, self.timing)

    def settle(self) -> None:
        """The relay heals: frames arrive in order, time passes, until all is confirmed."""
        for _ in range(40):
            for _ in range(10_000):
                if not self.flight:
                    break
                to, frame = self.flight.pop(0)
                to.on_frame(frame)
            if not self.alice.talk.conv.unacked and not self.bob.talk.conv.unacked:
                return
            self.tick(self.timing.resend_max)
        raise AssertionError(
            f"stuck: alice {self.alice.talk.relay_sec}, bob {self.bob.talk.relay_sec}"
        )


KEY_OPS = ["send_a", "send_b", "deliver", "deliver", "duplicate", "drop", "drop", "tick"]
keyed_ops = st.lists(
    st.tuples(st.sampled_from(KEY_OPS), index, st.sampled_from([0.5, 2.0, 4.0, 31.0])),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(keyed_ops)
def test_with_lost_key_exchange_frames_every_message_is_shown_once_in_order(
    ops: list[tuple[str, int, float]],
) -> None:
    relay = KeyedRelay()
    for op, i, dt in ops:
        relay.step(op, i, dt)
    relay.settle()
    assert relay.bob.shown == relay.alice.sent
    assert relay.alice.shown == relay.bob.sent
    if not relay.handshakes_duplicated:
        # A retried exchange never looks like an attack or a failure.
        assert relay.alice.errors() == [] and relay.bob.errors() == []


def test_a_bug_in_one_talks_timers_is_reported_once_and_that_talk_left_alone() -> None:
    talk = Talk("bob", conv())
    talk.relay_sec.session = SimpleNamespace(sid="s1")  # type: ignore[assignment]
    talk.conv.send_text("one")
    reports: list[str] = []
    sends: list[Frame] = []

    def broken(talk: Talk, frame: Frame) -> None:
        sends.append(frame)
        raise RuntimeError("a bug")

    hooks = Hooks(
        talks=lambda: [talk],
        send_frame=broken,
        retry_key_exchange=lambda talk, forget: None,
        relay_up=lambda: True,
        emit=lambda event: None,
        report=lambda where, exc: reports.append(where),
    )
    watches: dict = {}
    for now in range(0, 60):
        poll_talks(hooks, watches, float(now), T)
    assert reports == ["the retransmission timers of bob"] and len(sends) == 1
    talk.open = False
    poll_talks(hooks, watches, 61.0, T)
    assert watches == {}  # a talk that reopens gets fresh timers


def deliver_all(relay: KeyedRelay, lose: type | None = None) -> None:
    """Deliver everything in flight, in order, except the first frame of ``lose``."""
    for _ in range(100):
        if not relay.flight:
            return
        to, frame = relay.flight.pop(0)
        if lose is not None and isinstance(frame, lose):
            lose = None
            continue
        to.on_frame(frame)


def test_each_lost_key_exchange_frame_alone_is_repaired() -> None:
    for kind in (KeyInit, KeyReply, KeyConfirm):
        relay = KeyedRelay()
        relay.alice.type("hello")
        deliver_all(relay, lose=kind)
        assert relay.bob.shown == [], kind  # the bug: stuck here for good
        for _ in range(8):
            relay.tick(1.0)
            deliver_all(relay)
        assert relay.bob.shown == ["hello"], kind
        assert relay.alice.errors() == [] and relay.bob.errors() == []
