"""What the rendezvous allows each client, and who may connect (sans-IO).

:class:`Limits` lists every limit; each is a ``chathack-rendezvous`` flag
(:mod:`rendezvous.cli`) and a row of the table in docs/OPERATIONS.md.
:class:`Admission` counts open connections, in total and per source address,
and says why a new one is refused. :class:`ConnectionRates` holds one
connection's token buckets. None of these touch a socket or a clock.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

from chathack.protocol import MAX_LINE_BYTES, ClientEvent, Mail, Msg, Text
from rendezvous.ratelimit import KeyedBuckets, TokenBucket

#: A relayed line longer than this counts against ``max_relay_bytes``: file
#: chunks (~11 KB each) do; a chat message does unless it is one of the
#: longest (2000 characters of 4-byte text).
BULK_LINE_BYTES = 2048


@dataclass(frozen=True, slots=True)
class Limits:
    """Every limit the server enforces; each has a command-line flag.

    A rate of 0 means unlimited; a timeout of 0 means none.
    """

    #: Wrong passwords (or bad lines before login) before the connection is closed.
    max_login_tries: int = 5
    #: Seconds a connection may take to log in.
    login_timeout: float = 60.0
    #: Seconds a logged-in client may send nothing before it is closed (peers ping every 5 s).
    idle_timeout: float = 120.0
    #: Outgoing lines queued for one client before it counts as not reading.
    outbox_lines: int = 1024
    #: Seconds one write may block before the client counts as not reading.
    write_timeout: float = 20.0
    #: Longest line accepted, in bytes.
    max_line_bytes: int = MAX_LINE_BYTES
    #: Open connections in all.
    max_conns: int = 20000
    #: Open connections from one source address (an IPv6 /64 counts as one).
    max_conns_per_ip: int = 16
    #: Chat lines (``msg:``, ``mail:``, plain text) per second per user, and the burst allowed.
    max_msg_rate: float = 20.0
    msg_burst: int = 40
    #: Bytes a second one user may send through the relay in long lines (over
    #: :data:`BULK_LINE_BYTES`: file data; a person's messages are shorter), and
    #: the burst. The relay is shared: a file between two users who cannot reach
    #: each other directly must not take it from everyone else.
    max_relay_bytes: float = 128 * 1024
    relay_bytes_burst: int = 256 * 1024
    #: Other lines (commands, ``connect:``, login lines ...) per second per connection.
    max_cmd_rate: float = 20.0
    cmd_burst: int = 40
    #: Password attempts per minute from one source address (that many at once, too).
    max_login_rate: float = 30.0
    #: Accounts registered per minute in all (that many at once, too); more are refused.
    #: Half of what 2 hash workers manage (~10 a second): a registration flood from
    #: many addresses leaves the other half for logins.
    max_new_accounts: float = 300.0

    def __post_init__(self) -> None:
        at_least_one = ("max_conns", "max_conns_per_ip", "max_login_tries", "outbox_lines")
        for name in (*at_least_one, "msg_burst", "cmd_burst"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be at least 1")
        for name in ("max_msg_rate", "max_cmd_rate", "max_login_rate", "max_new_accounts"):
            if getattr(self, name) < 0:
                raise ValueError(f"Limits.{name} must be 0 (unlimited) or more")
        if self.max_relay_bytes < 0:
            raise ValueError("Limits.max_relay_bytes must be 0 (unlimited) or more")
        if self.relay_bytes_burst < self.max_line_bytes:
            # A line longer than the burst could never pass.
            raise ValueError("Limits.relay_bytes_burst must be at least max_line_bytes")


def source_key(ip: str) -> str:
    """The address a per-source limit counts: the IPv4 address, or the IPv6 /64
    (one host usually holds a whole /64, so counting single addresses would not
    limit it at all)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:  # not an IP (memory streams in tests): the text itself
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class Admission:
    """Counts open connections; refuses one past the global or per-address cap."""

    __slots__ = ("_per_source", "limits", "total")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.total = 0
        self._per_source: Counter[str] = Counter()

    def admit(self, ip: str) -> str | None:
        """Count a new connection from ``ip``; or return why it is refused (not counted)."""
        if self.total >= self.limits.max_conns:
            return (
                f"The server is full ({self.limits.max_conns} connections); "
                "try again in a few minutes"
            )
        key = source_key(ip)
        if self._per_source[key] >= self.limits.max_conns_per_ip:
            return (
                "Too many connections from your address "
                f"(the limit is {self.limits.max_conns_per_ip}); close some and try again"
            )
        self.total += 1
        self._per_source[key] += 1
        return None

    def release(self, ip: str) -> None:
        """A connection admitted from ``ip`` has closed."""
        key = source_key(ip)
        self.total -= 1
        self._per_source[key] -= 1
        if self._per_source[key] <= 0:
            del self._per_source[key]

    def from_source(self, ip: str) -> int:
        return self._per_source.get(source_key(ip), 0)


class ConnectionRates:
    """One connection's rate limits: its own bucket for commands, and its
    user's bucket for chat lines (shared by the user's successive connections,
    so logging in again does not refill it)."""

    __slots__ = ("commands", "slowed", "users")

    def __init__(self, limits: Limits, users: KeyedBuckets, now: float) -> None:
        self.commands = TokenBucket(limits.max_cmd_rate, limits.cmd_burst, now)
        self.users = users
        self.slowed = False  # slowed down at least once (logged once)

    def delay(self, event: ClientEvent | Exception, user: str | None, now: float) -> float:
        """Reserve a token for ``event`` from ``user`` (None before login; a bad
        line counts as a command); return the seconds to wait."""
        if user is not None and isinstance(event, Msg | Mail | Text):
            return self.users.take(user.lower(), now)
        return self.commands.take(now)


def chat_buckets(limits: Limits) -> KeyedBuckets:
    """Per-user buckets for chat lines: ``max_msg_rate`` a second."""
    return KeyedBuckets(limits.max_msg_rate, limits.msg_burst)


def relay_byte_buckets(limits: Limits) -> KeyedBuckets:
    """Per-user buckets for the bytes of long relayed lines: ``max_relay_bytes`` a second."""
    return KeyedBuckets(limits.max_relay_bytes, limits.relay_bytes_burst)


def login_buckets(limits: Limits) -> KeyedBuckets:
    """Per-source buckets for password attempts: ``max_login_rate`` a minute."""
    per_minute = limits.max_login_rate
    return KeyedBuckets(per_minute / 60.0, max(1.0, per_minute))
