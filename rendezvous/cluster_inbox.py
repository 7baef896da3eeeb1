"""What this instance does with what the other instances tell it (sans-IO).

The engine (:mod:`rendezvous.cluster_engine`) reads batches of operations
from this instance's channel and presence events from the shared one, and
hands them here, already parsed (:mod:`rendezvous.cluster_wire`). Each is
applied to the hub's own sessions; what a user must be told goes to their
outbox; what the other side must learn goes back as an operation. A user who
left meanwhile is answered as the single-instance hub would answer: a
relayed message gets ``FAILED msg NAME offline`` (the sender's peer then
takes the mailbox path), a ``connect:`` gets ``FAILED connect NAME offline``.
"""

from __future__ import annotations

import logging

from chathack.protocol import KICKED_PREFIX
from chathack.replies import RequestFailed
from chathack.server_events import (
    Failure,
    PeerInfo,
    PunchNow,
    ServerFlagEvent,
    format_server_event,
)
from rendezvous.cluster_wire import (
    BusOp,
    Call,
    Deliver,
    Ended,
    Gone,
    Here,
    Left,
    Nudge,
    PresenceEvent,
    PresenceRecord,
    PunchFrom,
    Takeover,
)
from rendezvous.hub import Hub, Session, offline
from rendezvous.roster import ClusterLink

log = logging.getLogger("chathack.rendezvous")


class ClusterInbox:
    def __init__(self, hub: Hub, cluster: ClusterLink) -> None:
        self.hub = hub
        self.cluster = cluster

    # -- operations for users here ---------------------------------------------
    def apply(self, ops: list[BusOp], now: float) -> None:
        for op in ops:
            self._apply(op, now)

    def _apply(self, op: BusOp, now: float) -> None:
        hub = self.hub
        session = hub.session_of(op.to)
        match op:
            case Deliver(to, line, origin):
                if session is not None:
                    session.outbox.send(line.encode("utf-8"))
                elif origin is not None:
                    self._tell_far(origin, Failure(offline("msg", to)))
            case Call(to, caller, line):
                if session is None:
                    self._tell_far(caller, Failure(offline("connect", to)))
                    return
                answer = hub.called(session, caller)
                session.outbox.send(line.encode("utf-8"))
                self._tell_far(caller, PeerInfo(answer))
            case PunchFrom(to, caller, ip, port):
                if session is None:
                    self._tell_far(caller, Failure(offline("punch", to)))
                    return
                try:
                    hub.punch_from(session, caller, ip, port)
                except RequestFailed as e:
                    self._tell_far(caller, Failure(e.failed))
                    return
                assert session.name is not None
                here = PunchNow(session.name, session.ip, session.remote_port or 0)
                self._tell_far(caller, here)
            case Ended(_, by):
                if session is not None and by.lower() in session.partners:
                    hub.ended_by(session, by)
            case Gone(_, by):
                if session is not None and by.lower() in session.partners:
                    hub.partner_gone(session, by)
            case Nudge(to):
                hub.mailbox.nudge(to)
            case Takeover(to, epoch, partners, invited, current):
                if session is None:
                    # The new session ended before its conversations arrived.
                    hub.tell_partners_gone(to, partners)
                elif session.epoch == epoch:
                    session.partners.update(partners)
                    session.invited.update(invited)
                    if session.current is None:
                        session.current = current

    def _tell_far(self, name: str, event: ServerFlagEvent) -> None:
        """Send ``event`` to ``name`` wherever it is online (here or elsewhere)."""
        here = self.hub.session_of(name)
        if here is not None:
            here.tell(event)
            return
        far = self.hub.roster.get(name)
        if far is not None:
            line = format_server_event(event).decode("utf-8")
            self.cluster.send(far.instance, Deliver(far.name, line))

    # -- presence ----------------------------------------------------------------
    def presence(self, event: PresenceEvent, now: float) -> None:
        match event:
            case Here(record):
                self._here(record, now)
            case Left(name, instance, epoch):
                dropped = self.hub.roster.drop(name, instance, epoch)
                if dropped is not None:
                    self._gone(dropped.name)

    def _here(self, record: PresenceRecord, now: float) -> None:
        if record.instance == self.cluster.instance:
            return
        local = self.hub.session_of(record.name)
        if local is not None:
            if local.epoch >= record.epoch:
                return  # ours is the newer login: the other instance gives way
            self._kicked(local, record, now)
        self.hub.roster.put(record)

    def _kicked(self, session: Session, record: PresenceRecord, now: float) -> None:
        """``session``'s user logged in again on another instance: this one ends,
        its conversations carry on there (as on one instance)."""
        session.say("BYE", f"{KICKED_PREFIX} from {record.ip}; this session is closed")
        takeover = Takeover(
            record.name,
            record.epoch,
            tuple(sorted(session.partners)),
            tuple(sorted(session.invited)),
            session.current,
        )
        session.partners.clear()
        session.invited.clear()
        self.cluster.send(record.instance, takeover)
        self.hub.detach(session, now)
        session.close()
        log.info("%s logged in on instance %s; session here closed", record.name, record.instance)

    def snapshot(self, records: list[PresenceRecord], now: float) -> None:
        """A full read of the shared presence: catch up on any event missed."""
        for record in records:
            self._here(record, now)
        for stale in self.hub.roster.missing_from(records):
            if self.hub.roster.drop(stale.name, stale.instance, stale.epoch) is not None:
                self._gone(stale.name)

    def instances_dead(self, instances: set[str]) -> None:
        """These instances' leases expired: their users are offline."""
        for record in self.hub.roster.drop_instances(instances):
            self._gone(record.name)

    def _gone(self, name: str) -> None:
        key = name.lower()
        for session in list(self.hub.online.values()):
            if key in session.partners:
                self.hub.partner_gone(session, name)
