"""The trio driver of one instance's part in a cluster (``--redis``).

Tasks, all in the engine's nursery:

* **publisher** -- what the hub queued (:class:`~rendezvous.roster.ClusterLink`
  calls return at once): presence changes in order, then one ``PUBLISH`` per
  destination instance carrying every operation queued for it since the
  last round (a batch), all in one pipelined round trip. A batch no instance
  received (``PUBLISH`` answers 0: that instance is gone) is bounced: its
  relayed messages, calls and punches are answered ``FAILED ... offline``
  here, as for a user who left, so the sender's peer takes the mailbox path.
* **subscriber** -- this instance's channel, the presence channel and the
  accounts channel, into :class:`~rendezvous.cluster_inbox.ClusterInbox` and
  the account replica. After every (re)subscription a full resync.
* **lease** -- every ``lease / 3`` seconds: renew this instance's lease,
  forget the users of instances whose lease is gone, and now and then read
  the whole presence (healing any missed event). An instance that could not
  renew for a whole ``lease`` closes its sessions: another instance may have
  taken its users over meanwhile, and a user is never served twice.
* **writer** -- the store's background writes (login metadata, keys), in order.

A Redis that does not answer costs the calls that needed it (logins, the
cross-instance relay); sessions on this instance keep talking to each other
until the lease runs out, and everything resumes by itself when Redis is back.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import suppress

import trio

from chathack.errors import RemoteProtocolError
from chathack.server_events import Failure
from rendezvous.cluster_inbox import ClusterInbox
from rendezvous.cluster_store import AccountReplica
from rendezvous.cluster_wire import (
    MAX_BATCH,
    BusOp,
    Call,
    Deliver,
    Nudge,
    PresenceRecord,
    PunchFrom,
    decode_batch,
    decode_presence,
    encode_batch,
)
from rendezvous.hub import Hub, offline
from rendezvous.redis_shared import ACCOUNTS_CHANNEL, PREFIX, PRESENCE_CHANNEL, RedisShared
from rendezvous.shared import SharedStoreDown, SharedStoreFault
from rendezvous.shared_mailbox import SharedMailbox
from rendezvous.shared_prekeys import SharedPrekeys

log = logging.getLogger("chathack.rendezvous")

#: Seconds an instance's lease lasts without renewal (renewed every third of it).
DEFAULT_LEASE = 10.0
#: Lease rounds between two full reads of the presence.
RESYNC_EVERY = 10
#: Seconds between attempts while Redis does not answer.
RETRY_PAUSE = 0.5
#: Seconds a batch no instance took is sent again before its operations are
#: answered as for a user gone (``FAILED ... offline``), and between tries.
CONFIRM_WINDOW = 2.0
CONFIRM_STEP = 0.2
#: Seconds before the first attempt to subscribe again after a loss (doubling).
RESUBSCRIBE_FIRST = 0.02
#: Background writes kept while Redis is away (older ones are dropped first).
MAX_PENDING_WRITES = 100_000
#: What the sessions of an instance that lost its lease are told.
LEASE_LOST = (
    "This server lost contact with the store it shares with the other servers; "
    "reconnect (your client tries the next server)"
)


def instance_channel(instance: str) -> str:
    return PREFIX + "inst:" + instance


class ClusterEngine:
    """One instance's cluster driver; the hub's :class:`~rendezvous.roster.ClusterLink`."""

    def __init__(
        self,
        shared: RedisShared,
        instance: str,
        replica: AccountReplica,
        *,
        lease: float = DEFAULT_LEASE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.shared = shared
        self.instance = instance
        self.replica = replica
        self.lease = lease
        self.clock = clock
        self.hub: Hub | None = None
        self.inbox: ClusterInbox | None = None
        #: The cluster's mailbox, whose worker runs beside the engine's tasks.
        self.mailbox: SharedMailbox | None = None
        self.prekeys: SharedPrekeys | None = None
        self._ops: dict[str, list[BusOp]] = {}
        #: Batches no instance took yet: (retry at, give up at, instance, batch).
        self._unconfirmed: list[tuple[float, float, str, list[BusOp]]] = []
        self._presence: list[PresenceRecord | tuple[str, int]] = []
        self._writes: list[Callable[[], Awaitable[None]]] = []
        self._wake = trio.Event()
        self._write_wake = trio.Event()
        self._renewed_at = -math.inf  # trio clock of the last renewal
        self._resync_now = True
        self._reload_directory = False
        #: What happened, for operators and tests: batches, bounces, bad messages...
        self.counts: Counter[str] = Counter()
        #: Lease rounds done, and a wake-up after each message and each round
        #: (:meth:`progress`: how a test or a probe waits for the cluster).
        self.rounds = 0
        self._progress = trio.Event()

    def bind(
        self,
        hub: Hub,
        mailbox: SharedMailbox | None = None,
        prekeys: SharedPrekeys | None = None,
    ) -> None:
        """Serve ``hub``, with the cluster's mailbox and prekeys (whose workers run here)."""
        self.hub = hub
        self.inbox = ClusterInbox(hub, self)
        self.mailbox = mailbox
        if mailbox is not None:
            mailbox.online = hub.session_of
        self.prekeys = prekeys
        if prekeys is not None:
            prekeys.tell_owner = hub.tell_owner

    def nudge_far(self, name: str) -> None:
        """Mail or a receipt waits for ``name``: the instance it is on delivers it."""
        if self.hub is not None and (far := self.hub.roster.get(name)) is not None:
            self.send(far.instance, Nudge(far.name))

    # -- ClusterLink: queue and return ---------------------------------------------
    def send(self, instance: str, op: BusOp) -> None:
        self._ops.setdefault(instance, []).append(op)
        self._wake.set()

    def announce(self, record: PresenceRecord) -> None:
        self._presence.append(record)
        self._wake.set()

    def withdraw(self, name: str, epoch: int) -> None:
        self._presence.append((name, epoch))
        self._wake.set()

    def write(self, call: Callable[[], Awaitable[None]]) -> None:
        if len(self._writes) >= MAX_PENDING_WRITES:
            self._writes.pop(0)
            self.counts["writes dropped"] += 1
        self._writes.append(call)
        self._write_wake.set()

    # -- the tasks -------------------------------------------------------------------
    async def load(self) -> None:
        """Fill the account replica (before the instance serves anyone)."""
        async for name, pubkey, seen in self.shared.directory():
            self.replica.put(name, pubkey, seen)
        log.info("cluster: %d account(s) known; instance %s", len(self.replica), self.instance)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self.hub is not None, "bind(hub) first"
        await self.shared.renew_lease(self.instance, self.lease)
        self._renewed_at = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(self._subscriber)
            nursery.start_soon(self._publisher)
            nursery.start_soon(self._writer)
            nursery.start_soon(self._leaser)
            if self.mailbox is not None:
                nursery.start_soon(self.mailbox.run)
            if self.prekeys is not None:
                nursery.start_soon(self.prekeys.run)
            task_status.started()

    async def leave(self) -> None:
        """A graceful stop: its users' records go (their sessions ended), then
        its lease, at once: the others need not wait for it to expire."""
        with trio.move_on_after(2), suppress(SharedStoreDown, OSError):
            presence, self._presence = self._presence, []
            await self._publish_presence(presence)
            await self.shared.drop_lease(self.instance)

    async def _publisher(self) -> None:
        while True:
            retry_at = min((at for at, _, _, _ in self._unconfirmed), default=math.inf)
            with trio.move_on_at(retry_at):
                await self._wake.wait()
            self._wake = trio.Event()
            presence, self._presence = self._presence, []
            ops, self._ops = self._ops, {}
            due, self._unconfirmed = self._unconfirmed, []
            try:
                await self._publish_presence(presence)
            except SharedStoreDown as e:
                log.warning("cluster: presence not published (%s); retrying", e)
                self._presence[:0] = presence
                self._wake.set()
                await trio.sleep(RETRY_PAUSE)
            await self._publish_ops(ops, due)

    async def _publish_presence(self, items: list[PresenceRecord | tuple[str, int]]) -> None:
        while items:
            item = items[0]
            try:
                if isinstance(item, PresenceRecord):
                    if not await self.shared.set_presence(item):
                        self.counts["presence superseded"] += 1
                else:
                    await self.shared.drop_presence(item[0], self.instance, item[1])
            except SharedStoreFault as e:
                self._fault("a presence change was refused", e)  # dropped, not retried
            items.pop(0)

    async def _publish_ops(
        self, ops: dict[str, list[BusOp]], due: list[tuple[float, float, str, list[BusOp]]]
    ) -> None:
        now = trio.current_time()
        batches = [
            (now + CONFIRM_WINDOW, instance, queued[i : i + MAX_BATCH])
            for instance, queued in ops.items()
            for i in range(0, len(queued), MAX_BATCH)
        ]
        # Batches no instance took earlier go again (first, in their order),
        # until their window ends: an instance resubscribing after a Redis
        # restart is deaf for a moment, not gone.
        later = [(at, deadline, i, b) for at, deadline, i, b in due if at > now]
        # An instance with a batch still waiting gets nothing newer before it:
        # its operations keep their order (a CALL before the lines after it).
        waiting = {i: at for at, _, i, _ in later}
        later += [(waiting[i], d, i, b) for d, i, b in batches if i in waiting]
        batches = [(d, i, b) for d, i, b in batches if i not in waiting]
        self._unconfirmed.extend(later)
        batches[:0] = [(deadline, i, b) for at, deadline, i, b in due if at <= now]
        if not batches:
            return
        try:
            async with self.shared.r.pipeline(transaction=False) as pipe:
                for _, instance, batch in batches:
                    pipe.publish(instance_channel(instance), encode_batch(batch))
            received = list(pipe.results or ())
        except Exception as e:  # coredis, OSError: Redis is away
            log.warning("cluster: %d batch(es) not sent: %s", len(batches), e)
            received = [0] * len(batches)
        self.counts["batches"] += len(batches)
        now = trio.current_time()
        for (deadline, instance, batch), n in zip(batches, received, strict=False):
            if n:
                continue
            if now < deadline:
                self._unconfirmed.append((now + CONFIRM_STEP, deadline, instance, batch))
            else:
                self._bounce(instance, batch)

    def _bounce(self, instance: str, batch: list[BusOp]) -> None:
        """Nobody took ``batch`` for ``instance``: answer what needs an answer."""
        assert self.hub is not None
        self.counts["bounced"] += len(batch)
        log.info("cluster: instance %s did not take %d operation(s)", instance, len(batch))
        for op in batch:
            match op:
                case Deliver(to, _, origin) if origin is not None:
                    self._fail(origin, "msg", to)
                case Call(to, caller, _):
                    self._fail(caller, "connect", to)
                case PunchFrom(to, caller, _, _):
                    self._fail(caller, "punch", to)

    def _fail(self, name: str, request: str, about: str) -> None:
        assert self.hub is not None
        session = self.hub.session_of(name)
        if session is not None:
            session.tell(Failure(offline(request, about)))

    async def _writer(self) -> None:
        while True:
            await self._write_wake.wait()
            self._write_wake = trio.Event()
            while self._writes:
                try:
                    await self._writes[0]()
                except SharedStoreFault as e:
                    self._fault("a background write was refused", e)
                except SharedStoreDown as e:
                    log.warning("cluster: a write waits for Redis (%s)", e)
                    await trio.sleep(RETRY_PAUSE)
                    continue
                except Exception as e:
                    self._fault("a background write failed", e)
                self._writes.pop(0)

    def _fault(self, what: str, e: BaseException) -> None:
        """A bug or damaged data met by a task: it costs that item, never the instance."""
        self.counts["faults"] += 1
        log.error("cluster: %s: %s", what, e, exc_info=e)

    async def _subscriber(self, *, task_status: trio.TaskStatus[None]) -> None:
        channels = [instance_channel(self.instance), PRESENCE_CHANNEL, ACCOUNTS_CHANNEL]
        started = False
        pause = RESUBSCRIBE_FIRST
        while True:
            try:
                async with self.shared.r.pubsub(channels=channels) as pubsub:
                    self._resync_now = True
                    # Deaf for a while: accounts registered meanwhile were missed.
                    self._reload_directory = started
                    pause = RESUBSCRIBE_FIRST
                    if not started:
                        started = True
                        task_status.started()
                    async for message in pubsub:
                        if message.get("type") == "message":
                            self._dispatch(str(message["channel"]), message["data"])
            except Exception as e:  # coredis, OSError: Redis is away
                self.counts["resubscribed"] += 1
                log.warning("cluster: subscription lost (%s); resubscribing", e)
            if not started:
                # Never subscribed: the instance must not start deaf.
                raise SharedStoreDown("could not subscribe to the cluster's channels")
            # Deaf until subscribed again: try at once, then back off.
            await trio.sleep(pause)
            pause = min(RETRY_PAUSE, pause * 2)

    def _dispatch(self, channel: str, data: object) -> None:
        assert self.inbox is not None
        text = data if isinstance(data, str | bytes) else ""
        now = self.clock()
        try:
            if channel == PRESENCE_CHANNEL:
                self.inbox.presence(decode_presence(text), now)
            elif channel == ACCOUNTS_CHANNEL:
                if not self.replica.apply_message(str(text)):
                    self.counts["bad account messages"] += 1
            else:
                self.counts["batches in"] += 1
                self.inbox.apply(decode_batch(text), now)
        except RemoteProtocolError as e:
            self.counts["bad messages"] += 1
            log.warning("cluster: dropped a malformed message on %s: %s", channel, e)
        except Exception:
            # A bug met on one message costs that message, never the instance.
            self.counts["faults"] += 1
            log.exception("cluster: fault while applying a message on %s", channel)
        self._progressed()

    def _progressed(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def progress(self) -> None:
        """Until the next message applied or lease round done."""
        await self._progress.wait()

    async def _leaser(self) -> None:
        assert self.hub is not None and self.inbox is not None
        while True:
            await trio.sleep(self.lease / 3)
            try:
                await self.shared.renew_lease(self.instance, self.lease)
                self._renewed_at = trio.current_time()
                far = sorted(self.hub.roster.instances())
                dead = set(far) - await self.shared.live(far)
                if dead:
                    log.info("cluster: instance(s) %s gone", ", ".join(sorted(dead)))
                    self.inbox.instances_dead(dead)
                self.rounds += 1
                if self._resync_now or self.rounds % RESYNC_EVERY == 0:
                    await self._resync()
            except SharedStoreDown as e:
                self._resync_now = True
                if trio.current_time() - self._renewed_at >= self.lease:
                    self._drop_sessions(str(e))
            except Exception as e:
                self._fault("a lease round failed", e)
            self._progressed()

    async def _resync(self) -> None:
        assert self.hub is not None and self.inbox is not None
        if self._reload_directory:
            await self.load()
            self._reload_directory = False
        records, bad = await self.shared.all_presence()
        self.counts["bad presence records"] += bad
        # Records left by instances that died (SIGKILL: nobody withdrew them)
        # are not presence: forget them, here and in Redis.
        others = sorted({r.instance for r in records if r.instance != self.instance})
        live = await self.shared.live(others)
        for record in [r for r in records if r.instance != self.instance]:
            if record.instance not in live:
                await self.shared.drop_presence(record.name, record.instance, record.epoch)
                self.counts["presence of dead instances dropped"] += 1
        records = [r for r in records if r.instance == self.instance or r.instance in live]
        mine = {r.name.lower(): r for r in records if r.instance == self.instance}
        for key, record in mine.items():
            session = self.hub.online.get(key)
            if session is None or session.epoch != record.epoch:
                await self.shared.drop_presence(record.name, self.instance, record.epoch)
        for session in list(self.hub.online.values()):
            if session.name is not None and session.name.lower() not in mine:
                self.hub.announce(session)  # forgotten while Redis was away
        self.inbox.snapshot(records, self.clock())
        self._resync_now = False

    def _drop_sessions(self, why: str) -> None:
        assert self.hub is not None
        sessions = [s for s in self.hub.online.values() if not s.closed]
        if not sessions:
            return
        log.error("cluster: lease lost (%s); closing %d session(s)", why, len(sessions))
        self.counts["sessions dropped"] += len(sessions)
        for session in sessions:
            session.say("BYE", LEASE_LOST)
            self.hub.detach(session, self.clock())
            session.close()
