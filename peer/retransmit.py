"""The trio driver of :mod:`chathack.retransmit`: every :data:`TICK_INTERVAL`
it asks each live conversation's watches what to do, and does it.

What it does, per action: :class:`~chathack.retransmit.Resend` sends the
chat frames again on the talk's path (sealed by the node, like any frame);
:class:`~chathack.retransmit.RetryKeyExchange` abandons the relay's key
exchange in flight, if any, and starts a new one (:func:`retry_key_exchange`);
the notices become :class:`peer.events.System` lines. The decisions are all
in the sans-IO core; this module only reads the node's talks, so it needs no
hook into the node's sending code.

It takes what it needs from the node as callbacks (:class:`Hooks`);
:func:`hooks_for` is the one place that knows a :class:`~peer.node.PeerNode`'s
insides, and :func:`start` runs the driver for a node (once per node). The
node calls ``retransmit.start(self)`` when it has logged in.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from chathack.link import Frame
from chathack.retransmit import (
    CaughtUp,
    Gap,
    GapFilled,
    Late,
    Resend,
    Retransmit,
    RetryKeyExchange,
    Timing,
)
from peer import pathsec
from peer.events import System, UIEvent

if TYPE_CHECKING:
    from peer.node import PeerNode, Talk

#: Seconds between two polls of the watches: small against their bounds
#: (:data:`chathack.retransmit.RESEND_FIRST` and up), and cheap (a few dict
#: looks per open conversation).
TICK_INTERVAL = 0.5
#: The bounds the driver applies (a module value, so tests can shrink them).
TIMING = Timing()

#: Nodes whose driver runs, so :func:`start` starts at most one per node.
_DRIVEN: weakref.WeakSet[PeerNode] = weakref.WeakSet()


@dataclass(frozen=True, slots=True)
class Hooks:
    """What the driver needs from the node."""

    talks: Callable[[], Iterable[Talk]]  # every talk (open or not)
    send_frame: Callable[[Talk, Frame], None]  # seal and send on the talk's current path
    retry_key_exchange: Callable[[Talk, bool], None]  # (talk, forget_session)
    relay_up: Callable[[], bool]  # the rendezvous can relay right now
    emit: Callable[[UIEvent], None]
    report: Callable[[str, Exception], None]  # a bug met while handling one talk


def retry_key_exchange(
    node: PeerNode, partner: str, sec: pathsec.PathSec, *, forget_session: bool
) -> None:
    """Abandon ``sec``'s key exchange in flight on the relay and start a new one
    (see :class:`chathack.retransmit.KeyTimer` for when, and why the session goes)."""
    sec.hs = None
    if forget_session:
        sec.session = None
    pathsec.start(node, partner, sec, None)


def hooks_for(node: PeerNode) -> Hooks:
    def retry(talk: Talk, forget_session: bool) -> None:
        retry_key_exchange(node, talk.partner, talk.relay_sec, forget_session=forget_session)

    def report(where: str, exc: Exception) -> None:
        node.faults.report(where, exc, "nothing is re-sent there until it reopens")

    return Hooks(
        talks=lambda: list(node.talks.values()),
        send_frame=node._send_frame,
        retry_key_exchange=retry,
        relay_up=lambda: node.server_state == "online" and not node.closed,
        emit=node.emit,
        report=report,
    )


def start(node: PeerNode) -> None:
    """Run ``node``'s retransmission driver in its nursery (once per node)."""
    if node in _DRIVEN:
        return
    _DRIVEN.add(node)
    node.nursery.start_soon(
        node.faults.contain, "re-sending what the relay lost", run, hooks_for(node)
    )


async def run(hooks: Hooks) -> None:
    """Poll every :data:`TICK_INTERVAL` until cancelled."""
    watches: dict[Talk, Retransmit | None] = {}
    tick, timing = TICK_INTERVAL, TIMING
    while True:
        await trio.sleep(tick)
        poll_talks(hooks, watches, trio.current_time(), timing)


def poll_talks(
    hooks: Hooks, watches: dict[Talk, Retransmit | None], now: float, timing: Timing
) -> None:
    """One tick: poll each live conversation and act (synchronous). ``watches``
    holds each live talk's watches between ticks; None for a talk whose
    watches met a bug (reported once, then left alone while it lasts)."""
    live: set[Talk] = set()
    for talk in hooks.talks():
        # A plain-text partner has no frames; an offline one's messages went to
        # the mailbox, which confirms them itself; a closed talk is over.
        if not talk.open or talk.plain or talk.offline:
            continue
        live.add(talk)
        if talk not in watches:
            watches[talk] = Retransmit(timing)
        watch = watches[talk]
        if watch is None:
            continue
        try:
            _poll_one(hooks, talk, watch, now)
        except Exception as exc:
            watches[talk] = None
            hooks.report(f"the retransmission timers of {talk.partner}", exc)
    for talk in [t for t in watches if t not in live]:
        del watches[talk]  # its watches start afresh if it comes back


def _poll_one(hooks: Hooks, talk: Talk, watch: Retransmit, now: float) -> None:
    sec, on_relay = talk.relay_sec, talk.link is None
    relay: str | None = None
    handshake: tuple[str, bool] | None = None
    if on_relay and hooks.relay_up():
        # A new session: the node has just re-sent everything. No session: a
        # re-send starts the key exchange (PeerNode._send_frame).
        relay = sec.session.sid if sec.session is not None else ""
        if sec.hs is not None:
            handshake = (sec.hs.sid, sec.hs.initiator)
    partner = talk.partner
    for action in watch.poll(talk.conv, now, relay=relay, handshake=handshake):
        match action:
            case RetryKeyExchange(forget_session):
                hooks.retry_key_exchange(talk, forget_session)
            case Resend(chats):
                for chat in chats:
                    hooks.send_frame(talk, chat)
            case Late():
                hooks.emit(
                    System(
                        f"Not delivered yet: {_n(action.count, 'message')} to {partner} "
                        f"not confirmed after {action.waited:.0f} s; still trying "
                        f"(kept until {partner} confirms)",
                        "warning",
                    )
                )
            case CaughtUp(count):
                hooks.emit(
                    System(f"Delivered after all: {partner} confirmed {_n(count, 'late message')}")
                )
            case Gap(missing, waiting, waited):
                them = "it" if missing == 1 else "them"
                wait = "waits" if waiting == 1 else "wait"
                hooks.emit(
                    System(
                        f"{_n(missing, 'message')} from {partner} did not arrive "
                        f"(for {waited:.0f} s); the {_n(waiting, 'message')} after {them} "
                        f"{wait} to be shown in order. {partner}'s side sends {them} again",
                        "warning",
                    )
                )
            case GapFilled():
                hooks.emit(
                    System(f"The missing messages from {partner} arrived; all shown, in order")
                )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
