"""Several hubs joined by an in-memory bus: the cluster without Redis (sans-IO).

:class:`MemoryCluster` is one instance's :class:`~rendezvous.roster.ClusterLink`.
What the hubs queue stays queued until the test calls :meth:`Bus.pump`, which
delivers it the way the engine would (every batch through the real codec of
:mod:`rendezvous.cluster_wire`; presence fenced by epoch like the Lua script),
so a test chooses exactly what the other instances have heard so far.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rendezvous.cluster_inbox import ClusterInbox
from rendezvous.cluster_wire import (
    BusOp,
    Here,
    Left,
    PresenceEvent,
    PresenceRecord,
    decode_batch,
    decode_presence,
    encode_batch,
    encode_presence,
)
from rendezvous.hub import Hub, Session
from rendezvous.store import SqliteStore
from tests.test_hub import FakeOutbox


class MemoryCluster:
    def __init__(self, bus: Bus, instance: str) -> None:
        self.bus = bus
        self.instance = instance

    def send(self, instance: str, op: BusOp) -> None:
        self.bus.ops.append((instance, op))

    def announce(self, record: PresenceRecord) -> None:
        held = self.bus.presence.get(record.name.lower())
        if held is not None and held.epoch > record.epoch:
            return
        self.bus.presence[record.name.lower()] = record
        self.bus.events.append(Here(record))

    def withdraw(self, name: str, epoch: int) -> None:
        held = self.bus.presence.get(name.lower())
        if held is not None and held.instance == self.instance and held.epoch == epoch:
            del self.bus.presence[name.lower()]
            self.bus.events.append(Left(held.name, self.instance, epoch))


@dataclass
class Instance:
    hub: Hub
    inbox: ClusterInbox
    alive: bool = True


@dataclass
class Bus:
    store: SqliteStore
    instances: dict[str, Instance] = field(default_factory=dict)
    ops: list[tuple[str, BusOp]] = field(default_factory=list)
    events: list[PresenceEvent] = field(default_factory=list)
    presence: dict[str, PresenceRecord] = field(default_factory=dict)
    epochs: int = 0

    def add(self, name: str) -> Hub:
        link = MemoryCluster(self, name)
        hub = Hub(self.store, cluster=link)
        self.instances[name] = Instance(hub, ClusterInbox(hub, link))
        return hub

    def login(self, instance: str, name: str, ip: str = "198.51.100.1") -> Session:
        hub = self.instances[instance].hub
        account = self.store.get_account(name) or self.store.create_account(name, "h", 1.0)
        self.epochs += 1
        session = Session(FakeOutbox(), ip, remote_port=40000 + self.epochs)
        session.epoch = self.epochs
        hub.attach(session, account, 100.0)
        hub.after_login(session, 100.0)
        return session

    def pump(self, rounds: int = 20) -> None:
        """Deliver everything queued, and what that makes, until quiet."""
        for _ in range(rounds):
            if not self.ops and not self.events:
                return
            events, self.events = self.events, []
            for event in events:
                wire = decode_presence(encode_presence(event))
                for inst in self.instances.values():
                    if inst.alive:
                        inst.inbox.presence(wire, 200.0)
            ops, self.ops = self.ops, []
            by_instance: dict[str, list[BusOp]] = {}
            for instance, op in ops:
                by_instance.setdefault(instance, []).append(op)
            for instance, batch in by_instance.items():
                target = self.instances.get(instance)
                if target is not None and target.alive:
                    target.inbox.apply(decode_batch(encode_batch(batch)), 200.0)
        raise AssertionError("the cluster never went quiet")

    def kill(self, instance: str) -> None:
        """SIGKILL: the instance vanishes; the others learn it when its lease expires."""
        self.instances[instance].alive = False
        for key, record in list(self.presence.items()):
            if record.instance == instance:
                del self.presence[key]

    def lease_expired(self, instance: str) -> None:
        for inst in self.instances.values():
            if inst.alive:
                inst.inbox.instances_dead({instance})
