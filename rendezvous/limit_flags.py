"""The ``chathack-rendezvous`` flags for :class:`~rendezvous.limits.Limits`
(one flag per field, its default taken from the dataclass) and for the
mailbox's :class:`~rendezvous.mailbox.MailLimits`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import fields, replace

from rendezvous.limits import Limits
from rendezvous.mailbox import DAY, MailLimits

#: field -> (flag metavar, minimum, help). The help says what a client sees.
_FLAGS: dict[str, tuple[str, float, str]] = {
    "max_conns": ("N", 1, "open connections in all; one more gets a 'server is full' BYE line"),
    "max_conns_per_ip": (
        "N",
        1,
        "open connections from one source address (an IPv6 /64 counts as one); "
        "one more gets a 'Too many connections from your address' BYE line",
    ),
    "login_timeout": ("SECONDS", 0, "time a connection has to log in (0: no limit)"),
    "idle_timeout": (
        "SECONDS",
        0,
        "a logged-in client that sends nothing this long gets BYE and is closed; "
        "peers ping every 5 s (0: never)",
    ),
    "max_login_tries": ("N", 1, "failed login attempts before a connection is closed"),
    "max_login_rate": (
        "N",
        0,
        "password attempts per minute from one source address (a registration counts as 3); "
        "more are slowed down (0: no limit)",
    ),
    "max_new_accounts": (
        "N",
        0,
        "accounts registered per minute in all (that many at once); one more gets "
        "'Too many new accounts were registered in the last minute' (0: no limit)",
    ),
    "max_msg_rate": (
        "N",
        0,
        "chat lines (msg:, mail: and plain text) per second per user; a faster client is "
        "slowed down, never disconnected (0: no limit, for benchmarks and trusted bots)",
    ),
    "msg_burst": ("N", 1, "chat lines a user may send at once before --max-msg-rate applies"),
    "max_relay_bytes": (
        "BYTES",
        0,
        "bytes per second one user may send through the relay in lines over 2 KiB "
        "(file data); a faster client is slowed down (0: no limit)",
    ),
    "relay_bytes_burst": (
        "BYTES",
        16384,
        "bytes of long lines a user may relay at once before --max-relay-bytes applies",
    ),
    "max_cmd_rate": (
        "N",
        0,
        "other lines (::commands, connect:, login lines, bad lines) per second per "
        "connection; a faster client is slowed down (0: no limit)",
    ),
    "cmd_burst": ("N", 1, "other lines a client may send at once before --max-cmd-rate applies"),
    "max_line_bytes": (
        "BYTES",
        64,
        "longest line accepted; longer ones get an ERROR and are skipped "
        "(peers need the default for long relayed messages)",
    ),
    "outbox_lines": (
        "N",
        1,
        "lines queued for a client before it counts as not reading and is disconnected",
    ),
    "write_timeout": (
        "SECONDS",
        0,
        "time one write to a client may block before it counts as not reading (0: no limit)",
    ),
}


def _at_least(kind: type, minimum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, not {text}")
        return value

    return parse


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "limits", "what one client may do (docs/OPERATIONS.md explains each)"
    )
    defaults = Limits()
    for f in fields(Limits):
        metavar, minimum, text = _FLAGS[f.name]
        kind = int if isinstance(getattr(defaults, f.name), int) else float
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            type=_at_least(kind, minimum),
            default=getattr(defaults, f.name),
            metavar=metavar,
            help=f"{text} (default: %(default)s)",
        )


def limits_from_args(args: argparse.Namespace) -> Limits:
    return Limits(**{f.name: getattr(args, f.name) for f in fields(Limits)})


def add_mail_flags(parser: argparse.ArgumentParser) -> None:
    """The mailbox's flags (docs/MAILBOX.md): quotas, expiry, durability."""
    d = MailLimits()
    group = parser.add_argument_group("mailbox", "messages kept for offline users")
    group.add_argument(
        "--mail-quota",
        type=_at_least(int, 1),
        default=d.quota_count,
        metavar="N",
        help="messages that may wait for one recipient (default: %(default)s)",
    )
    group.add_argument(
        "--mail-quota-bytes",
        type=_at_least(int, 1),
        default=d.quota_bytes,
        metavar="BYTES",
        help="bytes of text that may wait for one recipient (default: %(default)s)",
    )
    group.add_argument(
        "--mail-expiry-days",
        type=_at_least(float, 0.001),
        default=d.expiry / DAY,
        metavar="DAYS",
        help="days a message waits before it expires and its sender is told (default: %(default)s)",
    )
    group.add_argument(
        "--mail-sync",
        choices=["full", "normal"],
        default="full",
        help="full: a stored message survives a power cut; normal: a crash of the "
        "process only, several times faster (default: %(default)s)",
    )


def mail_limits_from_args(args: argparse.Namespace) -> MailLimits:
    return replace(
        MailLimits(),
        quota_count=args.mail_quota,
        quota_bytes=args.mail_quota_bytes,
        expiry=args.mail_expiry_days * DAY,
    )
