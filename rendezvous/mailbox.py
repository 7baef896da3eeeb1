"""The rendezvous mailbox: messages kept for users who are offline (sans-IO).

Theory of operation
-------------------
``mail: NAME ID TEXT`` stores TEXT for NAME under the sender's id ID. The
row is committed (a *durable* transaction, see :mod:`rendezvous.store`)
before ``Servidor[STORED]: NAME ID`` is queued, so an answer the sender got
is a promise that survives a crash. ``(sender, ID)`` is unique: storing it
again is a no-op answered ``STORED`` again, which makes a sender's blind
retry after a crash or a reconnect safe.

Delivery is at least once. A logged-in session gets its waiting messages as
``Servidor[MAIL]: ORIGIN ID STAMP TEXT`` in store order, at most
``window`` of them unacknowledged at a time (the session's outbox is bounded
and a client that overflows it is disconnected); every ``ack:`` lets more
through. The state of a delivery (a cursor in store order and the set of
messages in flight) lives only in memory, per session: a new session starts
again from the oldest waiting message, so whatever was in flight when a
connection or the server died is sent again -- with its id, so the receiving
peer recognises it. An ``ack:`` marks the message delivered in the database
(its body is dropped, its row kept until it expires, so a late retry of the
same id is still recognised) and creates a ``DELIVERED`` receipt for the
sender; ``read:`` does the same with ``READ``; expiry deletes a message that
waited too long and creates ``EXPIRED``. Receipts are rows too, delivered to
their owner the same way (their own window) until acknowledged with
``receipt:``.

Nothing here touches a socket or a clock: the hub passes ``now`` in, and
replies go to sessions' outboxes through ``Session.say``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from chathack.protocol import (
    MAX_LINE_BYTES,
    MAX_RELAY_CHARS,
    MailItem,
    MailKey,
    Receipt,
    Refusal,
    has_controls,
)
from chathack.server_events import MailIn, MailReceipt, MailRefused, MailStored, format_server_event
from rendezvous.counts import Counts
from rendezvous.session import Session
from rendezvous.store import DELIVERED, READ, WAITING, MailStore, Store, StoreError

log = logging.getLogger("chathack.rendezvous")

DAY = 86400.0
#: Why mail was refused when the database could not be written.
UNAVAILABLE = "the server could not store it; try again later"


@dataclass(frozen=True, slots=True)
class MailLimits:
    """The mailbox's limits; each one a ``chathack-rendezvous`` flag."""

    #: Messages that may wait for one recipient.
    quota_count: int = 20_000
    #: Bytes (of TEXT, UTF-8) that may wait for one recipient.
    quota_bytes: int = 64 * 1024 * 1024
    #: Longest TEXT, in characters (the ``MAIL`` line must also fit in MAX_LINE_BYTES).
    max_chars: int = MAX_RELAY_CHARS
    #: Seconds a message waits before it expires (and its sender gets ``EXPIRED``).
    expiry: float = 30 * DAY
    #: ``MAIL`` lines a session may have unacknowledged; keep it well under the outbox size.
    window: int = 256
    #: Receipt lines a session may have unacknowledged.
    receipt_window: int = 128
    #: Seconds between two purges of expired messages (the first comes with the first event).
    purge_every: float = 3600.0
    #: Most messages one purge expires (a backlog is worked off over several events).
    purge_batch: int = 5000


@dataclass(slots=True)
class Flow:
    """One session's deliveries: cursors in store order and what is in flight
    (the single-instance mailbox's and the cluster's, rendezvous/shared_mailbox.py)."""

    mail_cursor: int = 0
    mail_inflight: dict[tuple[str, str], int] = field(default_factory=dict)  # (origin, id) -> seq
    receipt_cursor: int = 0
    receipt_inflight: dict[tuple[str, str, str], int] = field(default_factory=dict)


@dataclass(slots=True)
class _Group:
    """Mail accepted since ``begin_group``, committed together."""

    rows: list[tuple[str, str, str, str, int]] = field(default_factory=list)  # store.add args
    replies: list[tuple[Session, str, str]] = field(default_factory=list)  # (session, to, id)
    keys: dict[tuple[str, str], str] = field(default_factory=dict)  # (sender, id) -> recipient
    usage: dict[str, tuple[int, int]] = field(default_factory=dict)  # recipient -> (count, bytes)

    def add(
        self,
        session: Session,
        to: str,
        msg_id: str,
        row: tuple[str, str, str, str, int],
        nbytes: int,
    ) -> None:
        recipient, sender = row[0], row[1]
        self.rows.append(row)
        self.replies.append((session, to, msg_id))
        self.keys[(sender, msg_id)] = recipient
        count, size = self.usage.get(recipient, (0, 0))
        self.usage[recipient] = (count + 1, size + nbytes)


def _same(a: str, b: str | None) -> bool:
    return b is not None and a.lower() == b.lower()


class Mailbox:
    """Store, deliver, acknowledge and expire messages (see the module docstring)."""

    def __init__(
        self,
        accounts: Store,
        store: MailStore,
        online: Callable[[str], Session | None],
        limits: MailLimits | None = None,
    ) -> None:
        self.accounts = accounts
        self.store = store
        self.online = online
        self.limits = limits or MailLimits()
        self.counts = Counts()  # the hub's, once there is a hub
        self._flows: dict[Session, Flow] = {}
        self._next_purge = -math.inf
        self._grouping = False  # between begin_group and commit_group
        self._group: _Group | None = None  # mail waiting for one shared commit (made on need)

    # sessions ---------------------------------------------------------------
    def start(self, session: Session) -> None:
        """Begin delivering to a logged-in ``session`` (after its login reply)."""
        if session.name is None or session.closed or session in self._flows:
            return
        if self.online(session.name) is not session:  # replaced by a newer login
            return
        self._flows[session] = Flow()
        self._pump(session)

    def started(self, session: Session) -> bool:
        return session in self._flows

    def stop(self, session: Session) -> None:
        """``session`` is gone: what was in flight to it waits for the next one."""
        self._flows.pop(session, None)

    # storing ----------------------------------------------------------------
    def begin_group(self) -> None:
        """Until :meth:`commit_group`, stored mail shares one durable commit.

        The I/O layer brackets the lines of one read with these, so a sender
        that pipelines many ``mail:`` lines pays for one fsync, not one each
        (group commit). ``STORED`` still comes only after the commit.
        """
        self._grouping = True  # a flag: most reads store no mail (begin_group runs per read)

    def commit_group(self) -> None:
        """Commit what was stored since :meth:`begin_group`, then answer ``STORED``."""
        self._grouping = False
        group, self._group = self._group, None
        if group is None or not group.replies:
            return
        try:
            if group.rows:
                with self.store.transaction(durable=True):
                    for row in group.rows:
                        self.store.add(*row)
        except StoreError as e:
            log.error("%d mail(s) not stored: %s", len(group.rows), e)
            self.counts.mail["refused_unavailable"] += len(group.replies)
            for session, to, msg_id in group.replies:
                refusal = Refusal(
                    MailKey(to, msg_id),
                    "unavailable",
                    UNAVAILABLE,
                )
                session.tell(MailRefused(refusal))
            return
        self.counts.mail["stored"] += len(group.rows)  # a retry of a stored one is not new
        for session, to, msg_id in group.replies:
            session.tell(MailStored(MailKey(to, msg_id)))
        for recipient in dict.fromkeys(row[0] for row in group.rows):
            self._pump_user(recipient)

    def store_mail(self, session: Session, to: str, msg_id: str, text: str, now: float) -> None:
        """``mail: to msg_id text`` from ``session``: STORED once committed, or REFUSED."""
        me = session.name
        assert me is not None
        key = MailKey(to, msg_id)
        if self._grouping and self._group is None:
            self._group = _Group()
        group = self._group

        def refuse(code: str, reason: str) -> None:
            self.counts.mail[f"refused_{code}"] += 1
            session.tell(MailRefused(Refusal(key, code, reason)))

        if _same(to, me):
            return refuse("self", "you cannot send mail to yourself")
        try:
            # Stored before, or earlier in this group: the recipient it went to.
            recipient = None if group is None else group.keys.get((me, msg_id))
            if recipient is None:
                existing = self.store.find(me, msg_id)
                recipient = None if existing is None else existing.recipient
            if recipient is not None:
                if not _same(to, recipient):
                    return refuse(
                        "id-used", f"you used the id {msg_id} for a message to {recipient}"
                    )
                if group is not None:
                    group.replies.append((session, to, msg_id))  # answered after the commit
                else:
                    session.tell(MailStored(MailKey(to, msg_id)))  # a retry: already stored
                return None
            account = self.accounts.get_account(to)
            if account is None:
                return refuse("unknown", f"there is no user named {to}")
            problem = check_mail_text(self.limits, me, msg_id, text, int(now))
            if problem is not None:
                return refuse(*problem)
            count, size = self.store.usage(account.name)
            nbytes = len(text.encode("utf-8"))
            if group is not None:
                more_count, more_bytes = group.usage.get(account.name, (0, 0))
                count, size = count + more_count, size + more_bytes
            if count >= self.limits.quota_count or size + nbytes > self.limits.quota_bytes:
                return refuse(
                    "full",
                    f"the mailbox of {account.name} is full ({count} messages, "
                    f"{size_text(size)}); try again later",
                )
            if group is not None:
                group.add(session, to, msg_id, (account.name, me, msg_id, text, int(now)), nbytes)
                return None
            with self.store.transaction(durable=True):
                self.store.add(account.name, me, msg_id, text, int(now))
        except StoreError as e:
            log.error("mail from %s to %s not stored: %s", me, to, e)
            return refuse("unavailable", UNAVAILABLE)
        self.counts.mail["stored"] += 1
        session.tell(MailStored(MailKey(to, msg_id)))
        self._pump_user(account.name)
        return None

    # acknowledgements ---------------------------------------------------------
    def ack(self, session: Session, keys: Iterable[MailKey], now: float) -> None:
        """``ack:`` -- these messages reached ``session``: DELIVERED to their senders."""
        self._advance(session, keys, DELIVERED, now)

    def read(self, session: Session, keys: Iterable[MailKey], now: float) -> None:
        """``read:`` -- these messages were shown: READ (and DELIVERED if need be)."""
        self._advance(session, keys, READ, now)

    def _advance(self, session: Session, keys: Iterable[MailKey], state: int, now: float) -> None:
        me = session.name
        assert me is not None
        keys = list(keys)
        owners: set[str] = set()
        stamp = int(now)
        try:
            self._record(me, keys, state, stamp, owners)
        except StoreError as e:
            log.error("mailbox: %s's acknowledgement not recorded: %s", me, e)
            session.say("ERROR", "The server could not record that; send it again later")
            return
        flow = self._flows.get(session)
        if flow is not None:
            for key in keys:
                flow.mail_inflight.pop((key.name.lower(), key.msg_id), None)
            self._pump(session)
        for owner in owners:
            self._pump_user(owner)

    def _record(
        self, me: str, keys: list[MailKey], state: int, stamp: int, owners: set[str]
    ) -> None:
        with self.store.transaction():
            for key in keys:
                row = self.store.find(key.name, key.msg_id)
                # Unknown, someone else's, or already there: nothing to do (acks repeat).
                if row is None or not _same(row.recipient, me) or row.state >= state:
                    continue
                self.store.set_state(row.seq, state)
                flags = ["DELIVERED"] if row.state == WAITING else []
                if state == READ:
                    flags.append("READ")
                for flag in flags:
                    self.counts.mail[flag.lower()] += 1
                for flag in flags:
                    self.store.add_receipt(row.sender, row.recipient, row.msg_id, flag, stamp)
                owners.add(row.sender)

    def receipt_ack(self, session: Session, receipts: Iterable[Receipt]) -> None:
        """``receipt:`` -- these receipts reached ``session``: forget them."""
        me = session.name
        assert me is not None
        receipts = list(receipts)
        try:
            with self.store.transaction():
                for r in receipts:
                    self.store.drop_receipt(me, r.name, r.msg_id, r.flag)
        except StoreError as e:
            log.error("mailbox: %s's receipts not recorded: %s", me, e)
            session.say("ERROR", "The server could not record that; send it again later")
            return
        flow = self._flows.get(session)
        if flow is not None:
            for r in receipts:
                flow.receipt_inflight.pop((r.flag, r.name.lower(), r.msg_id), None)
            self._pump(session)

    # delivery -----------------------------------------------------------------
    def nudge(self, name: str) -> None:
        """Mail or a receipt for ``name`` was stored: deliver it if ``name`` is here."""
        self._pump_user(name)

    def _pump_user(self, name: str) -> None:
        session = self.online(name)
        if session is not None and session in self._flows:
            self._pump(session)

    def _pump(self, session: Session) -> None:
        """Send ``session`` what waits for it, up to its windows."""
        flow = self._flows[session]
        assert session.name is not None
        room = self.limits.window - len(flow.mail_inflight)
        if room > 0:
            for m in self.store.waiting(session.name, flow.mail_cursor, room):
                assert m.body is not None
                flow.mail_inflight[(m.sender.lower(), m.msg_id)] = m.seq
                flow.mail_cursor = m.seq
                session.tell(MailIn(MailItem(m.sender, m.msg_id, m.stamp, m.body)))
        room = self.limits.receipt_window - len(flow.receipt_inflight)
        if room > 0:
            for r in self.store.receipts(session.name, flow.receipt_cursor, room):
                flow.receipt_inflight[(r.flag, r.peer.lower(), r.msg_id)] = r.seq
                flow.receipt_cursor = r.seq
                session.tell(MailReceipt(r.flag, MailKey(r.peer, r.msg_id)))

    # expiry -------------------------------------------------------------------
    def purge(self, now: float) -> bool:
        """Expire messages older than ``limits.expiry`` (their senders get
        ``EXPIRED``) and forget old receipts and delivered rows. At most
        ``purge_batch`` messages per call: True if more may remain."""
        cutoff = int(now - self.limits.expiry)
        # A message in flight has reached its recipient's connection: let the ack decide.
        inflight = {seq for f in self._flows.values() for seq in f.mail_inflight.values()}
        batch = self.limits.purge_batch
        rows = self.store.expired(cutoff, batch + len(inflight))
        more = len(rows) == batch + len(inflight)
        rows = [r for r in rows if r.seq not in inflight][:batch]
        with self.store.transaction():
            for r in rows:
                self.store.delete(r.seq)
                self.store.add_receipt(r.sender, r.recipient, r.msg_id, "EXPIRED", int(now))
            forgotten = self.store.forget_before(cutoff, batch)
        more = more or forgotten >= batch
        self.counts.mail["expired"] += len(rows)
        if rows or forgotten:
            log.info("mailbox: %d expired, %d old row(s) forgotten", len(rows), forgotten)
        for owner in {r.sender for r in rows}:
            self._pump_user(owner)
        return more

    def maybe_purge(self, now: float) -> None:
        """Purge if ``purge_every`` seconds have passed since the last purge."""
        if now < self._next_purge:
            return
        try:
            more = self.purge(now)
        except StoreError as e:
            log.error("mailbox purge failed: %s", e)
            more = False
        self._next_purge = now if more else now + self.limits.purge_every

    # ::mailbox ----------------------------------------------------------------
    def summary(self, session: Session) -> str:
        """The text of ``Servidor[MAILBOX]``: what waits for you, and yours for others."""
        assert session.name is not None
        count, size = self.store.usage(session.name)
        return summary_text(count, size, self.store.waiting_from(session.name))

    def tell_summary(self, session: Session) -> None:
        session.say("MAILBOX", self.summary(session))


class MailService(Protocol):
    """What the hub asks of a mailbox: :class:`Mailbox` (one instance, SQLite) or
    :class:`~rendezvous.shared_mailbox.SharedMailbox` (a cluster, Redis)."""

    counts: Counts

    def start(self, session: Session) -> None: ...
    def started(self, session: Session) -> bool: ...
    def stop(self, session: Session) -> None: ...
    def nudge(self, name: str) -> None: ...
    def begin_group(self) -> None: ...
    def commit_group(self) -> None: ...
    def store_mail(self, session: Session, to: str, msg_id: str, text: str, now: float) -> None: ...
    def ack(self, session: Session, keys: Iterable[MailKey], now: float) -> None: ...
    def read(self, session: Session, keys: Iterable[MailKey], now: float) -> None: ...
    def receipt_ack(self, session: Session, receipts: Iterable[Receipt]) -> None: ...
    def tell_summary(self, session: Session) -> None: ...
    def maybe_purge(self, now: float) -> None: ...
    def purge(self, now: float) -> bool: ...


def check_mail_text(
    limits: MailLimits, me: str, msg_id: str, text: str, stamp: int
) -> tuple[str, str] | None:
    """(code, reason) if ``text`` may not be stored, else None."""
    if not text.strip():
        return "bad-text", "empty message: there is nothing to store"
    if has_controls(text):
        return "bad-text", "control characters are not allowed in messages"
    if len(text) > limits.max_chars:
        return "too-big", f"the limit is {limits.max_chars} characters"
    line = format_server_event(MailIn(MailItem(me, msg_id, stamp, text)))
    if len(line) > MAX_LINE_BYTES:
        return "too-big", f"the MAIL line would exceed {MAX_LINE_BYTES} bytes"
    return None


def summary_text(count: int, nbytes: int, out: list[tuple[str, int]], most: int = 20) -> str:
    """``N waiting for you (SIZE); M of yours waiting: bob 3, ...``"""
    text = (
        f"{count} waiting for you ({size_text(nbytes)}); {sum(n for _, n in out)} of yours waiting"
    )
    if out:
        text += ": " + ", ".join(f"{name} {n}" for name, n in out[:most])
        if len(out) > most:
            text += f", +{len(out) - most} more"
    return text


def size_text(nbytes: int) -> str:
    if nbytes < 1024:
        return f"{nbytes} B"
    if nbytes < 1024 * 1024:
        return f"{nbytes / 1024:.1f} KiB"
    return f"{nbytes / (1024 * 1024):.1f} MiB"
