"""The hub's :class:`~rendezvous.store.Store` when several instances share Redis.

The hub is synchronous and asks its store small questions on the hot path
(does ``bob`` exist, which key do we vouch for, who was seen lately). Here
those are answered from :class:`AccountReplica`, this instance's copy of
the account directory (name, identity key, last seen: no password hashes),
filled from Redis at start and kept current by the ``chathack:accounts``
channel. Writes the hub makes (login metadata, identity keys) go to Redis in
the background through ``write``, in order. Passwords never pass here: the
login dialogue reads and writes accounts in Redis directly
(:class:`~rendezvous.redis_shared.RedisShared`), with no cache.

What is not shared yet stays in this instance's SQLite file (``local``): the
mailbox, prekeys, and the resume tokens of a graceful restart.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from chathack.grammar import KEY_RE, NAME_RE
from rendezvous.store import Account, SavedToken, SqliteStore


@dataclass(slots=True)
class _Entry:
    name: str
    pubkey: str | None
    last_seen: float


class AccountReplica:
    """Name -> (spelling, identity key, last seen) for every account."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, name: str, pubkey: str | None, last_seen: float | None) -> None:
        held = self._entries.get(name.lower())
        if held is None:
            self._entries[name.lower()] = _Entry(name, pubkey, last_seen or 0.0)
            return
        if pubkey is not None:
            held.pubkey = pubkey
        if last_seen is not None:
            held.last_seen = max(held.last_seen, last_seen)

    def get(self, name: str) -> Account | None:
        e = self._entries.get(name.lower())
        if e is None:
            return None
        return Account(e.name, "", 0.0, last_seen=e.last_seen, pubkey=e.pubkey)

    def recent(self, limit: int) -> list[Account]:
        ranked = sorted(self._entries.values(), key=lambda e: (-e.last_seen, e.name.lower()))
        return [
            Account(e.name, "", 0.0, last_seen=e.last_seen, pubkey=e.pubkey) for e in ranked[:limit]
        ]

    def apply_message(self, text: str) -> bool:
        """An ``accounts`` channel message ``[name, pubkey|null, seen|null]``;
        False (and nothing changed) if it is malformed."""
        try:
            v = json.loads(text)
        except ValueError:
            return False
        if not isinstance(v, list) or len(v) != 3:
            return False
        name, pubkey, seen = v
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            return False
        if not (isinstance(pubkey, str) and KEY_RE.fullmatch(pubkey)):
            pubkey = None
        if type(seen) not in (int, float):
            seen = None
        self.put(name, pubkey, seen)
        return True


class ClusterStore:
    """The :class:`~rendezvous.store.Store` of an instance in a cluster."""

    def __init__(
        self,
        local: SqliteStore,
        replica: AccountReplica,
        write: Callable[[Callable[[], Awaitable[None]]], None],
        shared: SharedWrites,
    ) -> None:
        self.local = local
        self.mail = local.mail
        self.replica = replica
        self._write = write
        self._shared = shared

    # accounts: read from the replica, written to Redis in the background
    def get_account(self, name: str) -> Account | None:
        return self.replica.get(name)

    def create_account(self, name: str, pw_hash: str, now: float) -> Account:
        raise NotImplementedError("accounts are registered through RedisShared.register")

    def find_lookalike(self, name: str) -> str | None:
        raise NotImplementedError("the login dialogue asks RedisShared.lookalike")

    def set_password_hash(self, name: str, pw_hash: str) -> None:
        raise NotImplementedError("the login dialogue calls RedisShared.set_password_hash")

    def record_login(self, name: str, ip: str, now: float) -> None:
        self.replica.put(name, None, now)
        self._write(lambda: self._shared.record(name, {"last_ip": ip, "last_seen": now}))

    def record_port(self, name: str, port: int) -> None:
        self._write(lambda: self._shared.record(name, {"last_port": port}))

    def record_seen(self, name: str, now: float) -> None:
        self.replica.put(name, None, now)
        self._write(lambda: self._shared.record(name, {"last_seen": now}))

    def set_pubkey(self, name: str, pubkey: str) -> None:
        self.replica.put(name, pubkey, None)
        self._write(lambda: self._shared.set_pubkey(name, pubkey))

    def list_accounts(self, limit: int) -> list[Account]:
        return self.replica.recent(limit)

    def count_accounts(self) -> int:
        return len(self.replica)

    # not shared yet: this instance's own file
    def save_tokens(self, tokens: list[SavedToken]) -> None:
        self.local.save_tokens(tokens)

    def take_tokens(self) -> list[SavedToken]:
        return self.local.take_tokens()

    def set_signed_prekey(self, name: str, prekey: str) -> None:
        self.local.set_signed_prekey(name, prekey)

    def signed_prekey(self, name: str) -> str | None:
        return self.local.signed_prekey(name)

    def add_one_time_prekeys(self, name: str, prekeys: list[tuple[int, str]], cap: int) -> int:
        return self.local.add_one_time_prekeys(name, prekeys, cap)

    def take_one_time_prekeys(self, name: str, n: int) -> tuple[list[str], int]:
        return self.local.take_one_time_prekeys(name, n)

    def drop_prekeys(self, name: str) -> None:
        self.local.drop_prekeys(name)

    def close(self) -> None:
        self.local.close()


class SharedWrites(Protocol):
    """What :class:`ClusterStore` writes to the shared store (RedisShared has these)."""

    async def record(self, name: str, fields: dict[str, str | float | int]) -> None: ...
    async def set_pubkey(self, name: str, pubkey: str) -> None: ...
