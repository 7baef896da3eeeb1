"""Containment of the peer's bugs: an exception nothing expected, met while
handling one server line, one direct link or one background task, ends that
piece of work (and, where there is one, that link or conversation) with a
notice, never the program.

Every task the node starts in its own nursery goes through
:meth:`Faults.contain`: a trio nursery re-raises what a child raises and so
would cancel everything else (the rendezvous session, every other
conversation, the UI). What is contained is logged on one line, without a
traceback (a partner must not be able to fill a log with them), counted by
type, and told to the user.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from chathack.text import neutralise
from peer.events import System, UIEvent

log = logging.getLogger("chathack.peer")


class Faults:
    def __init__(self, emit: Callable[[UIEvent], None]) -> None:
        self._emit = emit
        #: Exceptions contained so far, by type.
        self.counts: Counter[str] = Counter()

    def report(self, where: str, exc: BaseException, consequence: str = "it was dropped") -> None:
        """Log, count and tell the user about ``exc``, met while handling ``where``."""
        kind = type(exc).__name__
        self.counts[kind] += 1
        log.error(
            "unexpected %s while handling %s: %s",
            kind,
            neutralise(where),
            neutralise(str(exc)[:200]),
        )
        self._emit(
            System(
                f"Something went wrong while handling {where} ({kind}); {consequence}. "
                "chathack carries on.",
                "warning",
            )
        )

    async def contain(
        self, where: str, task: Callable[..., Awaitable[object]], *args: object
    ) -> None:
        """Run ``task(*args)``; what it raises unexpectedly is reported, not re-raised."""
        try:
            await task(*args)
        except Exception as exc:
            self.report(where, exc, "that task ended")
