"""The driver's sense of time: when to tell the core that time passed.

The core (:mod:`peer.core`) never reads a clock. :class:`Clock` feeds it a
:class:`~peer.core.records.Tick` at each request's deadline (a ``connect:``
unanswered, the grace for a direct link) and every :data:`TICK_INTERVAL`
seconds for the conversations' re-send and gap timers; a deadline that came
nearer wakes it early. :class:`Answers` hands the core's
:class:`~peer.core.records.Answered` to whoever awaits that request.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from peer.core.records import Answered

#: Seconds between two polls of the conversations' re-send and gap timers:
#: small against their bounds (chathack.retransmit), and cheap.
TICK_INTERVAL = 0.5


class Clock:
    def __init__(self, tick: Callable[[], None], next_deadline: Callable[[], float | None]) -> None:
        self._tick = tick
        self._next_deadline = next_deadline
        self._wake = trio.Event()
        self._planned = math.inf  # when the clock wakes next

    def check(self) -> None:
        """Call after the core handled something: a nearer deadline wakes us."""
        deadline = self._next_deadline()
        if deadline is not None and deadline < self._planned:
            self._wake.set()

    async def run(self) -> None:
        # The periodic tick keeps its own schedule: inputs arriving all the
        # time must not keep postponing it (the re-send timers would starve).
        next_tick = trio.current_time() + TICK_INTERVAL
        while True:
            deadline = self._next_deadline()
            self._planned = min(next_tick, deadline if deadline is not None else math.inf)
            with trio.move_on_at(self._planned):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            if now >= self._planned:
                if now >= next_tick:
                    next_tick = now + TICK_INTERVAL
                self._tick()


class Answers:
    """Requests awaited by the library API (``connect``, ``change_password``),
    keyed by what they ask and about whom."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], tuple[trio.Event, list[Answered]]] = {}

    def deliver(self, answer: Answered) -> None:
        waiting = self._waiting.get((answer.what, answer.name.lower()))
        if waiting is not None:
            waiting[1].append(answer)
            waiting[0].set()

    async def ask(self, what: str, name: str, send: Callable[[], object]) -> Answered | None:
        """``send`` the request, then wait for its answer (the core bounds
        every request with a deadline of its own)."""
        key = (what, name.lower())
        waiting = self._waiting.setdefault(key, (trio.Event(), []))
        try:
            send()
            await waiting[0].wait()
        finally:
            if self._waiting.get(key) is waiting:
                del self._waiting[key]
        return waiting[1][0] if waiting[1] else None
