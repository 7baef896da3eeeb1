"""One file transfer as the core keeps it, its timings, and how it reads to
a person (the protocol is :mod:`peer.core.transfers`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from chathack.link import FILE_CHUNK_BYTES
from peer.core.records import Effect, Show
from peer.events import Level, System
from peer.files import Record

#: Seconds an offer waits for an answer.
OFFER_TTL = 600.0
#: File data in flight beyond the receiver's acknowledgement, on a direct link.
DIRECT_WINDOW = 8 * FILE_CHUNK_BYTES
#: File data per chunk through the relay: one sealed chunk, in base64, fits
#: the relay's text limit (:data:`chathack.grammar.MAX_RELAY_CHARS`).
RELAY_CHUNK_BYTES = 8 * 1024
#: File data in flight through the relay: the relay is shared and slow, and a
#: chat line typed meanwhile waits behind at most this much.
RELAY_WINDOW = 4 * RELAY_CHUNK_BYTES
#: Seconds without any acknowledgement, with data in flight, before the
#: sender goes back to what was acknowledged (what was lost is sent again).
STALL_AFTER = 10.0
#: Seconds a receiver remembers a finished transfer (to tell a sender that
#: missed the news, after a restart); wall-clock time.
DONE_KEPT = 86400.0
#: Seconds between two questions to the rendezvous whether a partner that a
#: transfer waits for is back online.
PARTNER_POLL = 30.0
#: Seconds between two sendings of an offer nobody answered.
OFFER_AGAIN = 30.0
#: Seconds between two progress lines of one transfer.
PROGRESS_EVERY = 0.5
#: Offers from one partner waiting for an answer; more are refused.
MAX_PENDING_OFFERS = 32

FINAL = ("done", "failed", "cancelled")
State = Literal["offered", "moving", "done", "failed", "cancelled"]


@dataclass(eq=False)
class Transfer:
    number: int  # what ::cancel N names
    fid: str
    partner: str
    name: str
    size: int
    sha256: str
    kind: str
    incoming: bool
    #: offered -> moving -> done | failed | cancelled
    state: State = "offered"
    source: str = ""  # the sender's file
    folder: Path | None = None  # where the receiver saves it
    other_relay: bool = True  # the other side lets it go through the relay
    done_bytes: int = 0  # the receiver's bytes held; the sender's acknowledged
    next: int = 0  # the sender's next offset to send
    part_open: bool = False  # the receiver's part file is open
    asked: int = -1  # the offset the receiver last asked to resume from
    since: float = 0.0  # when offered (expiry), then when it started moving
    since_bytes: int = 0
    last_progress: float = 0.0
    shown_at: float = -math.inf
    waiting: str = ""  # why it does not move now, as last told
    stalls: int = 0  # times in a row it made no progress for STALL_AFTER
    polled: float = -math.inf  # when the rendezvous was last asked about the partner

    def record(self, done_at: float = 0.0) -> Record:
        return Record(
            self.fid,
            self.partner,
            self.name,
            self.size,
            self.sha256,
            self.kind,
            self.incoming,
            self.source,
            str(self.folder or ""),
            self.other_relay,
            done_at,
        )


def size_text(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


def progress_line(t: Transfer, now: float, path: str) -> str:
    """``transfer 1 to bob: a.pdf [##########----------] 52% 13.9 MB/26.7 MB 11.2 MB/s
    ETA 1 s direct`` (one line); a transfer that is not moving says its state."""
    way = f"from {t.partner}" if t.incoming else f"to {t.partner}"
    head = f"transfer {t.number} {way}: {t.name}"
    if t.state != "moving":
        return f"{head} {t.state} ({size_text(t.size)})"
    share = t.done_bytes / t.size if t.size else 1.0
    bar = "#" * int(share * 20)
    elapsed = now - t.since
    rate = (t.done_bytes - t.since_bytes) / elapsed if elapsed > 0 else 0.0
    eta = f"ETA {(t.size - t.done_bytes) / rate:.0f} s" if rate > 0 else "ETA ?"
    return (
        f"{head} [{bar:-<20}] {share * 100:.0f}% {size_text(t.done_bytes)}/{size_text(t.size)} "
        f"{size_text(rate)}/s {eta} {path}"
    )


def topic(t: Transfer) -> str:
    """What the windowed UI replaces in place: the transfer's progress line."""
    return f"transfer {t.fid}"


def say(
    text: str, level: Level = "info", about: str | None = None, topic: str | None = None
) -> Effect:
    return Show(System(text, level, about, topic))
