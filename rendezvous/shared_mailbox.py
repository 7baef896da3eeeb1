"""The mailbox of a cluster: the same promises as :mod:`rendezvous.mailbox`,
its rows in Redis (:mod:`rendezvous.redis_mail`), shared by every instance.

The hub calls it exactly as it calls the single-instance mailbox, and those
calls return at once: they check what can be checked here (yourself, an
unknown name, the text) and queue the rest for :meth:`SharedMailbox.run`,
one task that does the Redis work in order and answers afterwards:

* ``mail:`` -- the lines of one read are stored in one pipeline (one fsync
  on the Redis primary), and each answered ``STORED`` only after Redis
  acknowledged it; ``REFUSED ... unavailable`` if Redis did not answer --
  never a ``STORED`` it cannot keep. A retried id stores nothing twice.
* delivery -- the instance where the recipient is logged in sends the
  waiting messages, in store order, a window at a time, as on one instance.
  Whoever stores mail (or a receipt) for a user online on another instance
  nudges that instance (a ``Nudge`` operation on the bus).
* ``ack:``/``read:``/``receipt:`` -- one script each (atomic); the receipts
  they make reach their owners wherever they are logged in.
* expiry -- every ``purge_every`` seconds, by every instance (the scripts
  make a second purge of the same rows a no-op).

Redis away: stores are refused with the reason, acknowledgements answered
``ERROR`` (the client sends them again), delivery waits and resumes on its
own once Redis answers (the next nudge, ack or login, or ``RETRY_PAUSE``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import trio

from chathack.protocol import MailItem, MailKey, Receipt, Refusal
from chathack.server_events import MailIn, MailReceipt, MailRefused, MailStored
from rendezvous.counts import Counts
from rendezvous.mailbox import (
    UNAVAILABLE,
    Flow,
    MailLimits,
    check_mail_text,
    size_text,
    summary_text,
)
from rendezvous.redis_mail import Duplicate, Full, RedisMailStore, Stored
from rendezvous.session import Session
from rendezvous.shared import SharedStoreDown, SharedStoreFault
from rendezvous.store import DELIVERED, READ, Store

log = logging.getLogger("chathack.rendezvous")

#: Seconds before delivery is tried again after Redis did not answer.
RETRY_PAUSE = 1.0


@dataclass(slots=True)
class _Pending:
    session: Session
    to: str
    msg_id: str
    row: tuple[str, str, str, str, int]  # recipient, sender, msg_id, body, stamp


class SharedMailbox:
    def __init__(
        self,
        store: RedisMailStore,
        accounts: Store,
        online: Callable[[str], Session | None],
        nudge_far: Callable[[str], None],
        limits: MailLimits | None = None,
    ) -> None:
        self.store = store
        self.accounts = accounts
        #: Who is logged in here (the hub's ``session_of``, once there is a hub).
        self.online = online
        self.nudge_far = nudge_far  # tell the instance where NAME is online to deliver
        self.limits = limits or MailLimits()
        self.counts = Counts()  # the hub's, once there is a hub
        self._flows: dict[Session, Flow] = {}
        self._pending: list[_Pending] = []
        self._jobs: list[tuple[str, Session, object, int]] = []  # (kind, session, what, stamp)
        self._to_pump: dict[Session, None] = {}
        self._wake = trio.Event()
        self._busy = False
        self._idle = trio.Event()
        self._next_purge = -math.inf

    # -- what the hub calls (returns at once) -------------------------------------------
    def start(self, session: Session) -> None:
        if session.name is None or session.closed or session in self._flows:
            return
        if self.online(session.name) is not session:
            return
        self._flows[session] = Flow()
        self._pump_later(session)

    def started(self, session: Session) -> bool:
        return session in self._flows

    def stop(self, session: Session) -> None:
        self._flows.pop(session, None)
        self._to_pump.pop(session, None)

    def nudge(self, name: str) -> None:
        """Mail or a receipt for ``name`` was stored elsewhere: deliver it if it is here."""
        session = self.online(name)
        if session is not None and session in self._flows:
            self._pump_later(session)

    def begin_group(self) -> None:
        """Nothing to do: everything queued until the worker runs shares one pipeline."""

    def commit_group(self) -> None:
        if self._pending:
            self._wake.set()

    def store_mail(self, session: Session, to: str, msg_id: str, text: str, now: float) -> None:
        me = session.name
        assert me is not None
        key = MailKey(to, msg_id)
        if to.lower() == me.lower():
            session.tell(MailRefused(Refusal(key, "self", "you cannot send mail to yourself")))
            return
        account = self.accounts.get_account(to)
        if account is None:
            session.tell(MailRefused(Refusal(key, "unknown", f"there is no user named {to}")))
            return
        problem = check_mail_text(self.limits, me, msg_id, text, int(now))
        if problem is not None:
            session.tell(MailRefused(Refusal(key, *problem)))
            return
        row = (account.name, me, msg_id, text, int(now))
        self._pending.append(_Pending(session, to, msg_id, row))
        self._wake.set()

    def ack(self, session: Session, keys: Iterable[MailKey], now: float) -> None:
        self._job("advance", session, (list(keys), DELIVERED), now)

    def read(self, session: Session, keys: Iterable[MailKey], now: float) -> None:
        self._job("advance", session, (list(keys), READ), now)

    def receipt_ack(self, session: Session, receipts: Iterable[Receipt]) -> None:
        self._job("receipts", session, list(receipts), 0)

    def tell_summary(self, session: Session) -> None:
        self._job("summary", session, None, 0)

    def maybe_purge(self, now: float) -> None:
        if now >= self._next_purge:
            self._next_purge = now + self.limits.purge_every
            self._job("purge", None, None, int(now))

    def purge(self, now: float) -> bool:
        """Queue a purge; False: the worker works off a backlog by itself."""
        self._job("purge", None, None, int(now))
        return False

    def _job(self, kind: str, session: Session | None, what: object, stamp: float) -> None:
        self._jobs.append((kind, session, what, int(stamp)))  # type: ignore[arg-type]
        self._wake.set()

    def _pump_later(self, session: Session) -> None:
        self._to_pump[session] = None
        self._wake.set()

    # -- the worker -----------------------------------------------------------------------
    async def run(self) -> None:
        """Do the queued Redis work, in order, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self._busy = True
            try:
                pending, self._pending = self._pending, []
                jobs, self._jobs = self._jobs, []
                await _contained(self._store(pending), "store")
                for kind, session, what, stamp in jobs:
                    await _contained(self._do(kind, session, what, stamp), kind)
                pumps, self._to_pump = self._to_pump, {}
                for session in pumps:
                    await _contained(self._pump(session), "delivery")
            finally:
                self._busy = False
            if not self._queued():
                self._idle.set()
                self._idle = trio.Event()

    def _queued(self) -> bool:
        return bool(self._pending or self._jobs or self._to_pump)

    async def settle(self) -> None:
        """Until everything asked so far is done (tests and a graceful stop)."""
        while self._busy or self._queued():
            await self._idle.wait()

    async def _store(self, pending: list[_Pending]) -> None:
        if not pending:
            return
        quota = (self.limits.quota_count, self.limits.quota_bytes)
        try:
            outcomes = await self.store.store_many([p.row for p in pending], quota)
        except SharedStoreDown as e:
            log.error("%d mail(s) not stored: %s", len(pending), e)
            self.counts.mail["refused_unavailable"] += len(pending)
            for p in pending:
                refusal = Refusal(MailKey(p.to, p.msg_id), "unavailable", UNAVAILABLE)
                p.session.tell(MailRefused(refusal))
            return
        recipients: dict[str, None] = {}
        for p, outcome in zip(pending, outcomes, strict=True):
            key = MailKey(p.to, p.msg_id)
            match outcome:
                case Stored():
                    self.counts.mail["stored"] += 1
                    p.session.tell(MailStored(key))
                    recipients[p.row[0]] = None
                case Duplicate(recipient) if recipient.lower() == p.row[0].lower():
                    p.session.tell(MailStored(key))  # a retry: stored before
                case Duplicate(recipient):
                    self.counts.mail["refused_id-used"] += 1
                    why = f"you used the id {p.msg_id} for a message to {recipient}"
                    p.session.tell(MailRefused(Refusal(key, "id-used", why)))
                case Full(count, nbytes):
                    self.counts.mail["refused_full"] += 1
                    why = (
                        f"the mailbox of {p.row[0]} is full ({count} messages, "
                        f"{size_text(nbytes)}); try again later"
                    )
                    p.session.tell(MailRefused(Refusal(key, "full", why)))
        for recipient in recipients:
            self._deliver_to(recipient)

    def _deliver_to(self, name: str) -> None:
        session = self.online(name)
        if session is not None:
            if session in self._flows:
                self._to_pump[session] = None
        else:
            self.nudge_far(name)

    async def _do(self, kind: str, session: Session | None, what: object, stamp: int) -> None:
        try:
            if kind == "advance":
                assert session is not None and session.name is not None
                keys, state = what  # type: ignore[misc]
                pairs = [(k.name, k.msg_id) for k in keys]
                owners = await self.store.advance(session.name, pairs, state, stamp)
                # One owner per message that moved on (delivered, or read).
                self.counts.mail["read" if state == READ else "delivered"] += len(owners)
                flow = self._flows.get(session)
                if flow is not None:
                    for k in keys:
                        flow.mail_inflight.pop((k.name.lower(), k.msg_id), None)
                    self._to_pump[session] = None
                for owner in dict.fromkeys(owners):
                    self._deliver_to(owner)
            elif kind == "receipts":
                assert session is not None and session.name is not None
                receipts: list[Receipt] = what  # type: ignore[assignment]
                triples = [(r.name, r.msg_id, r.flag) for r in receipts]
                await self.store.drop_receipts(session.name, triples)
                flow = self._flows.get(session)
                if flow is not None:
                    for r in receipts:
                        flow.receipt_inflight.pop((r.flag, r.name.lower(), r.msg_id), None)
                    self._to_pump[session] = None
            elif kind == "summary":
                assert session is not None and session.name is not None
                count, nbytes = await self.store.usage(session.name)
                out = await self.store.waiting_from(session.name)
                session.say("MAILBOX", summary_text(count, nbytes, out))
            elif kind == "purge":
                await self._purge(stamp)
        except SharedStoreDown as e:
            log.error("mailbox: %s not done: %s", kind, e)
            if session is not None and kind != "purge":
                session.say("ERROR", "The server could not record that; send it again later")

    async def _purge(self, now: int) -> None:
        cutoff = int(now - self.limits.expiry)
        inflight = [seq for f in self._flows.values() for seq in f.mail_inflight.values()]
        senders, forgotten = await self.store.purge(cutoff, self.limits.purge_batch, now, inflight)
        self.counts.mail["expired"] += len(senders)
        if senders or forgotten:
            log.info("mailbox: %d expired, %d old row(s) forgotten", len(senders), forgotten)
        for sender in dict.fromkeys(senders):
            self._deliver_to(sender)

    async def _pump(self, session: Session) -> None:
        flow = self._flows.get(session)
        if flow is None or session.closed or session.name is None:
            return
        try:
            room = self.limits.window - len(flow.mail_inflight)
            if room > 0:
                for m in await self.store.waiting(session.name, flow.mail_cursor, room):
                    assert m.body is not None
                    flow.mail_inflight[(m.sender.lower(), m.msg_id)] = m.seq
                    flow.mail_cursor = m.seq
                    session.tell(MailIn(MailItem(m.sender, m.msg_id, m.stamp, m.body)))
            room = self.limits.receipt_window - len(flow.receipt_inflight)
            if room > 0:
                for r in await self.store.receipts(session.name, flow.receipt_cursor, room):
                    flow.receipt_inflight[(r.flag, r.peer.lower(), r.msg_id)] = r.seq
                    flow.receipt_cursor = r.seq
                    session.tell(MailReceipt(r.flag, MailKey(r.peer, r.msg_id)))
        except SharedStoreFault as e:
            log.error("mailbox: delivery to %s failed: %s", session.name, e)  # not retried
        except SharedStoreDown as e:
            log.warning("mailbox: delivery to %s waits for Redis (%s)", session.name, e)
            await trio.sleep(RETRY_PAUSE)
            self._pump_later(session)


async def _contained(work: Awaitable[None], what: str) -> None:
    """A bug (or damaged data) met doing ``what`` costs that piece of work,
    never the instance: logged, and the worker goes on."""
    try:
        await work
    except Exception:
        log.exception("mailbox: %s failed", what)
