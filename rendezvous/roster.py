"""Who is online on the other instances: this instance's replica of the
shared presence (sans-IO).

The hub keeps its own sessions in ``Hub.online``; the :class:`Roster` holds
one :class:`~rendezvous.cluster_wire.PresenceRecord` per user online on
*another* instance, so ``connect:``, ``msg:``, ``punch:`` and ``::users``
answer from memory, with no round trip to the store on the hot path. It is
fed by presence events and by full snapshots (the resync that heals a missed
event), and forgets every user of an instance whose lease expired.

A record replaces another of the same name only if its epoch is higher: the
epoch is a fencing token (``INCR`` in the store at each login), so a late
``Here`` from an old session can never hide a newer one.

:class:`ClusterLink` is what the hub asks of the cluster engine: all three
calls queue and return at once (the engine's tasks do the I/O).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from rendezvous.cluster_wire import BusOp, PresenceRecord


class ClusterLink(Protocol):
    """The hub's way out to the other instances (implemented by the engine)."""

    instance: str

    def send(self, instance: str, op: BusOp) -> None: ...
    def announce(self, record: PresenceRecord) -> None: ...
    def withdraw(self, name: str, epoch: int) -> None: ...


class Roster:
    def __init__(self, instance: str) -> None:
        self.instance = instance
        self._users: dict[str, PresenceRecord] = {}  # lower-case name -> record

    def __len__(self) -> int:
        return len(self._users)

    def get(self, name: str) -> PresenceRecord | None:
        return self._users.get(name.lower())

    def names(self) -> list[str]:
        return [r.name for r in self._users.values()]

    def put(self, record: PresenceRecord) -> bool:
        """Keep ``record`` unless it is ours or older than what is held; True if kept."""
        if record.instance == self.instance:
            return False
        held = self._users.get(record.name.lower())
        if held is not None and held.epoch > record.epoch:
            return False
        self._users[record.name.lower()] = record
        return True

    def drop(self, name: str, instance: str, epoch: int) -> PresenceRecord | None:
        """Forget ``name`` if the held record is that session's; the record dropped."""
        held = self._users.get(name.lower())
        if held is None or held.instance != instance or held.epoch != epoch:
            return None
        del self._users[name.lower()]
        return held

    def drop_instances(self, dead: Iterable[str]) -> list[PresenceRecord]:
        """Forget every user of the ``dead`` instances; the records dropped."""
        gone = set(dead)
        dropped = [r for r in self._users.values() if r.instance in gone]
        for r in dropped:
            del self._users[r.name.lower()]
        return dropped

    def instances(self) -> set[str]:
        return {r.instance for r in self._users.values()}

    def missing_from(self, snapshot: Iterable[PresenceRecord]) -> list[PresenceRecord]:
        """The held records that a full snapshot of the presence no longer has."""
        seen = {(r.name.lower(), r.instance, r.epoch) for r in snapshot}
        return [
            r for r in self._users.values() if (r.name.lower(), r.instance, r.epoch) not in seen
        ]
