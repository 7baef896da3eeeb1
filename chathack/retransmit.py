"""When to re-send what the relay lost, and when to tell a person (sans-IO).

Theory of operation
-------------------
A direct link is a TCP stream: what it accepts arrives, in order, or the
link breaks and the talk changes path, and the node re-sends every
unacknowledged frame then (the resend rule of :mod:`chathack.link`). The
relay is not like that: one ``msg:`` line can be lost on its own (a
rendezvous restart, a refused or dropped line) while the path stays up, and
without a timer nothing would ever send it again: the frames behind it wait
in the receiver's buffer forever, and nobody is told.

So each conversation gets three watches, polled by the caller with ``now``
(any monotonic clock, in seconds). They *observe* the conversation's state
(:class:`chathack.link.Conversation` and the relay's key exchange) rather
than being told of each send, so whatever route a frame took to be sent
(typed, re-sent on a path change, after a reconnection) the timers see it:

* :class:`SendTimer`, the sender's side. The oldest unacknowledged chat frame
  has a retransmission timer: :data:`RESEND_FIRST` after it was first seen
  (or after the last progress, or after the relay became usable again, when
  the node itself re-sent everything), the oldest :data:`RESEND_BATCH` frames
  go again; then the wait doubles up to :data:`RESEND_MAX`. An ack that moves
  the oldest frame on resets it. Re-sending happens only while the relay is
  the path and the rendezvous is there (``relay`` is not None): a direct
  link is TCP's job, and with no rendezvous nothing can be sent. With no key
  agreed on the relay, "re-sending" is what starts an exchange (the node's
  send does that), so a chat frame never waits for a key nobody is agreeing
  on (an exchange that failed, say). Every :data:`REKEY_AFTER`-th timeout in
  a row without progress, while the relay has a session, brings a new key
  exchange instead of a re-send (:class:`RetryKeyExchange`): a relay that
  carries nothing may be one whose two ends hold different keys (an exchange
  that completed on one side only: a replayed ``kinit``, say), which no
  re-send repairs; a partner that is merely away answers it later. Whatever
  the path, once the oldest message not yet covered by a notice has waited
  :data:`LATE_AFTER`, the sender is told, once, that those messages are not
  delivered yet (:class:`Late`), and told again when all of them are
  (:class:`CaughtUp`).
* :class:`GapWatch`, the receiver's side: frames buffered above a hole
  (``Conversation.early``) mean a message is missing. A hole that has not
  moved for :data:`GAP_AFTER` is said once (:class:`Gap`), and its end is said
  too (:class:`GapFilled`). The receiver cannot see a lost *last* frame; the
  sender's timer and notice cover that one.
* :class:`KeyTimer`, the relay's key exchange: one that has been in flight
  for :data:`KEY_EXCHANGE_FIRST` (doubling up to :data:`KEY_EXCHANGE_MAX` on
  each retry, back to the start once an exchange ends by itself) is
  abandoned and a new one started (:class:`RetryKeyExchange`): a new ``sid``,
  so a late answer to the old one is ignored, never mistaken for an answer to
  the new one. A responder that gives up forgets the path's old session too:
  the partner starts an exchange only when it has none, so after a lost
  ``kconfirm`` the old session could never open what the partner seals with
  the new one. The glare rule of :mod:`peer.pathsec` (the smaller name's
  exchange wins) is untouched: a restart is just a new exchange.

:class:`Retransmit` bundles the three for one conversation; its
:meth:`~Retransmit.poll` returns the actions to take (at most one new key
exchange per poll, and before any re-send).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chathack.delivery import Conversation
from chathack.link import Chat

#: Seconds an unacknowledged chat frame waits on the relay before it is first
#: re-sent: several relay round trips (two hops each way), and longer than the
#: rendezvous takes to pace out a burst of 40 lines at 20 a second.
RESEND_FIRST = 2.0
#: The longest wait between two re-sends (the wait doubles up to it), so a
#: partner that is away costs one batch every half minute, not a flood.
RESEND_MAX = 30.0
#: Every this many timeouts without progress, on a relay with a session, its
#: key is agreed again instead: the first re-send repairs a lost frame; when
#: the second is due, the key is suspect too. The backoff spaces them out.
REKEY_AFTER = 2
#: Frames re-sent per timeout, oldest first. The receiver keeps what arrived
#: behind a hole, so the oldest ones are what it misses; a bound keeps one
#: timeout from queueing a whole backlog behind the rendezvous's pacing.
RESEND_BATCH = 32
#: Seconds after which a sender is told its message is not delivered yet:
#: long past any retransmission that could still succeed quickly, and well
#: before the rendezvous's idle timeout (120 s) would report the partner gone.
LATE_AFTER = 30.0
#: Seconds a hole may hold back later messages before the receiver is told:
#: two re-sends (2 + 4 s) and their round trips normally fill it by then.
GAP_AFTER = 10.0
#: Seconds a relayed key exchange may stay in flight before it is abandoned
#: (one and a half relay round trips normally finish it in well under 1 s).
KEY_EXCHANGE_FIRST = 3.0
#: The longest wait before abandoning a key exchange again (doubling up to it).
KEY_EXCHANGE_MAX = 30.0


@dataclass(frozen=True, slots=True)
class Timing:
    """The bounds above, as one value (tests shrink them)."""

    resend_first: float = RESEND_FIRST
    resend_max: float = RESEND_MAX
    resend_batch: int = RESEND_BATCH
    rekey_after: int = REKEY_AFTER
    late_after: float = LATE_AFTER
    gap_after: float = GAP_AFTER
    key_first: float = KEY_EXCHANGE_FIRST
    key_max: float = KEY_EXCHANGE_MAX


# --------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resend:
    """Send these chat frames again (oldest first, carrying the current base)."""

    chats: tuple[Chat, ...]


@dataclass(frozen=True, slots=True)
class Late:
    """Messages ``first``..``last`` (sequence numbers) are not confirmed yet, the
    oldest after ``waited`` seconds: tell their sender (once)."""

    first: int
    last: int
    waited: float

    @property
    def count(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """Every message a :class:`Late` notice was about is confirmed now."""

    count: int


@dataclass(frozen=True, slots=True)
class Gap:
    """``missing`` messages of the partner did not arrive, and ``waiting`` that
    came after them cannot be shown before they do; so for ``waited`` s."""

    missing: int
    waiting: int
    waited: float


@dataclass(frozen=True, slots=True)
class GapFilled:
    """The hole a :class:`Gap` notice was about is filled: all is shown, in order."""


@dataclass(frozen=True, slots=True)
class RetryKeyExchange:
    """Abandon the relay's key exchange in flight, if any, and start a new one;
    ``forget_session``: drop the path's session first (we were answering, or
    the session carries nothing)."""

    forget_session: bool


Action = Resend | Late | CaughtUp | Gap | GapFilled | RetryKeyExchange


# --------------------------------------------------------------------------
# The watches
# --------------------------------------------------------------------------


@dataclass(slots=True)
class SendTimer:
    """The sender's retransmission timer and its "not delivered yet" notice."""

    timing: Timing = field(default_factory=Timing)
    #: When each unacknowledged seq was first seen (insertion order is seq order).
    _seen: dict[int, float] = field(default_factory=dict)
    _oldest: int | None = None
    _relay: object = None
    _rto: float = field(init=False)
    _due: float | None = None
    _fired: int = 0  # timeouts since the last progress
    _told_upto: int = 0  # the last seq a Late notice covered
    _owed: int = 0  # messages told late and not yet confirmed (a CaughtUp is owed)

    def __post_init__(self) -> None:
        self._rto = self.timing.resend_first

    def poll(self, conv: Conversation, now: float, relay: object = None) -> list[Action]:
        """``relay``: None when frames cannot or need not be re-sent now (a
        direct link, no rendezvous), else a value that changes whenever the
        relay becomes usable anew (its session id; ``""`` without a session)."""
        t = self.timing
        unacked = conv.unacked
        out: list[Action] = []
        if self._changed(unacked):
            self._seen = {s: self._seen.get(s, now) for s in sorted(unacked)}
        if not unacked:
            self._oldest, self._due, self._relay = None, None, relay
            if self._owed:
                out.append(CaughtUp(self._owed))
                self._owed = 0
            return out
        oldest = next(iter(self._seen))
        if oldest != self._oldest:
            # Progress, or the first frame after a quiet spell: start over.
            self._oldest, self._rto, self._fired = oldest, t.resend_first, 0
            self._due = now + self._rto
        elif relay is not None and relay != self._relay:
            # The relay is usable anew (back, or a new session): the node has
            # just re-sent everything itself. The backoff stays: no progress yet.
            self._due = now + self._rto
        self._relay = relay
        if relay is not None and self._due is not None and now >= self._due:
            self._fired += 1
            if relay and self._fired % t.rekey_after == 0:
                # The new session's re-send (the node's) replaces this one.
                out.append(RetryKeyExchange(forget_session=True))
            else:
                out.append(Resend(tuple(conv.to_resend()[: t.resend_batch])))
            self._rto = min(self._rto * 2, t.resend_max)
            self._due = now + self._rto
        if self._owed and oldest > self._told_upto:
            out.append(CaughtUp(self._owed))
            self._owed = 0
        first = max(oldest, self._told_upto + 1)
        since = self._seen.get(first)
        if since is not None and now - since >= t.late_after:
            last = max(self._seen)
            late = Late(first, last, now - since)
            out.append(late)
            self._told_upto = last
            self._owed += late.count
        return out

    def _changed(self, unacked: dict[int, Chat]) -> bool:
        """Whether ``unacked`` holds other seqs than ``_seen``. Acks are cumulative
        and seqs only grow, so the unacknowledged seqs are always one run: the
        same length and the same ends mean the same run."""
        seen = self._seen
        if len(seen) != len(unacked):
            return True
        if not seen:
            return False
        return next(iter(seen)) not in unacked or next(reversed(seen)) not in unacked


@dataclass(slots=True)
class GapWatch:
    """The receiver's notice of a hole that holds back later messages."""

    timing: Timing = field(default_factory=Timing)
    _mark: tuple[str | None, int] | None = None  # (partner's epoch, delivered) at the hole
    _since: float = 0.0
    _told: bool = False

    def poll(self, conv: Conversation, now: float) -> list[Action]:
        if not conv.early:
            self._mark = None
            if self._told:
                self._told = False
                return [GapFilled()]
            return []
        mark = (conv.peer_epoch, conv.delivered)
        if mark != self._mark:  # a new hole, or the old one moved on: time it afresh
            self._mark, self._since = mark, now
        if not self._told and now - self._since >= self.timing.gap_after:
            self._told = True  # once until every hole is filled
            missing = min(conv.early) - conv.delivered - 1
            return [Gap(missing, len(conv.early), now - self._since)]
        return []


@dataclass(slots=True)
class KeyTimer:
    """Restarts a relayed key exchange that stalls."""

    timing: Timing = field(default_factory=Timing)
    _key: tuple[str, bool] | None = None  # (sid, initiator) of the exchange being timed
    _since: float = 0.0
    _rto: float = field(init=False)

    def __post_init__(self) -> None:
        self._rto = self.timing.key_first

    def poll(self, handshake: tuple[str, bool] | None, now: float) -> list[Action]:
        """``handshake``: ``(sid, initiator)`` of the exchange in flight, or None."""
        t = self.timing
        if handshake is None:
            if self._key is not None:  # it ended by itself: the next one starts afresh
                self._key, self._rto = None, t.key_first
            return []
        if handshake != self._key:
            self._key, self._since = handshake, now
        if now - self._since < self._rto:
            return []
        initiator = handshake[1]
        self._key = None
        self._rto = min(self._rto * 2, t.key_max)
        return [RetryKeyExchange(forget_session=not initiator)]


@dataclass(slots=True)
class Retransmit:
    """The three watches of one conversation."""

    timing: Timing = field(default_factory=Timing)
    sending: SendTimer = field(init=False)
    gaps: GapWatch = field(init=False)
    keys: KeyTimer = field(init=False)

    def __post_init__(self) -> None:
        self.sending = SendTimer(self.timing)
        self.gaps = GapWatch(self.timing)
        self.keys = KeyTimer(self.timing)

    def poll(
        self,
        conv: Conversation,
        now: float,
        *,
        relay: object = None,
        handshake: tuple[str, bool] | None = None,
    ) -> list[Action]:
        """What to do for ``conv`` at ``now``: see :meth:`SendTimer.poll` for
        ``relay``, :meth:`KeyTimer.poll` for ``handshake``. A key exchange
        retried comes first, so re-sent frames find it under way."""
        sending = self.sending.poll(conv, now, relay)
        retries = [
            a
            for a in [*self.keys.poll(handshake, now), *sending]
            if isinstance(a, RetryKeyExchange)
        ]
        out: list[Action] = []
        if retries:  # both may want one: one new exchange is enough
            out.append(RetryKeyExchange(any(r.forget_session for r in retries)))
        out += [a for a in sending if not isinstance(a, RetryKeyExchange)]
        out += self.gaps.poll(conv, now)
        return out
