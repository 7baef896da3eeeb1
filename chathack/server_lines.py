"""What the rendezvous sends a client: ``Servidor[FLAG]: text`` and
``origin: text`` lines, and the payloads some flags carry (users, peer
addresses, mail) (sans-IO). Each flag's typed event is
:mod:`chathack.server_events`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from chathack.errors import RemoteProtocolError
from chathack.grammar import (
    FLAG_RE,
    MAIL_ID_RE,
    MAX_STAMP_DIGITS,
    NAME_RE,
    SERVER_ORIGIN,
    MailKey,
    encode_line,
    format_endpoint,
    parse_endpoint,
)
from chathack.text import neutralise

_SERVER_LINE_RE = re.compile(r"Servidor\[([A-Z_]{1,16})\]: ?(.*)", re.DOTALL)


_USER_LINE_RE = re.compile(r"([A-Za-z0-9_.-]{1,32}): ?(.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ServerLine:
    """``Servidor[FLAG]: text`` — the server speaking."""

    flag: str
    text: str


@dataclass(frozen=True, slots=True)
class UserLine:
    """``origin: text`` — a line relayed from user ``origin``."""

    origin: str
    text: str


ServerEvent = ServerLine | UserLine


def format_server_line(flag: str, text: str) -> bytes:
    """``Servidor[FLAG]: text``; ``text`` may hold anything a client sent
    (it is neutralised), so formatting never fails on user data."""
    if not FLAG_RE.fullmatch(flag):
        raise ValueError(f"bad flag {flag!r}")  # our own misuse, never user data
    return encode_line(f"{SERVER_ORIGIN}[{flag}]: {neutralise(text)}")


def format_user_line(origin: str, text: str) -> bytes:
    """``origin: text``, relayed; ``origin`` is a checked name.

    The relay's hot path. ``text`` comes from a parsed ``msg:`` or chat line,
    so :func:`check_text` has refused its control characters; ASCII text then
    holds nothing left to escape (``isascii`` is O(1)), other text is
    neutralised for format characters. Whatever a caller passes, the line is
    one line: a line break left in it is escaped, never refused.
    """
    if not text.isascii():
        text = neutralise(text)
    line = f"{origin}: {text}"
    if "\n" in line or "\r" in line:
        line = neutralise(line)
    return line.encode("utf-8") + b"\n"


def parse_server_line(line: str) -> ServerEvent:
    """Turn one line received from the server into an event, or raise."""
    m = _SERVER_LINE_RE.fullmatch(line)
    if m:
        return ServerLine(m.group(1), m.group(2))
    m = _USER_LINE_RE.fullmatch(line)
    if m and m.group(1).lower() != SERVER_ORIGIN.lower():
        return UserLine(m.group(1), m.group(2))
    raise RemoteProtocolError(f"Unexpected line from the server: {line[:80]!r}")


@dataclass(frozen=True, slots=True)
class UserState:
    name: str
    online: bool


def format_users(users: list[UserState], more: int = 0) -> str:
    """The text of a ``Servidor[USERS]`` line: ``alice online, bob offline``."""
    text = ", ".join(f"{u.name} {'online' if u.online else 'offline'}" for u in users)
    if more:
        text += f", +{more} more"
    return text


def parse_users_more(text: str) -> int:
    """The ``N`` of a ``USERS`` text's ``, +N more`` (0 when there is none)."""
    _, sep, tail = text.rpartition(", +")
    words = tail.split()
    if not sep or len(words) != 2 or words[1] != "more":
        return 0
    count = words[0]
    return int(count) if len(count) <= 9 and count.isascii() and count.isdigit() else 0


def parse_users(text: str) -> list[UserState]:
    out: list[UserState] = []
    for item in text.split(","):
        parts = item.split()
        if len(parts) == 2 and parts[1] in ("online", "offline") and NAME_RE.fullmatch(parts[0]):
            out.append(UserState(parts[0], parts[1] == "online"))
    return out


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """``NAME HOST:PORT`` (or ``NAME -`` when NAME takes no direct links).

    Sent in ``Servidor[PEER]`` (answer to ``connect:``) and ``Servidor[CALL]``
    (someone wants to talk to you). Extra ``key=value`` words may follow.
    """

    name: str
    host: str | None
    port: int | None
    extra: tuple[tuple[str, str], ...] = ()


def format_peer_address(p: PeerAddress) -> str:
    addr = "-" if p.host is None or p.port is None else format_endpoint(p.host, p.port)
    words = [p.name, addr, *(f"{k}={v}" for k, v in p.extra)]
    return " ".join(words)


def parse_peer_address(text: str) -> PeerAddress:
    words = text.split()
    if len(words) < 2 or not NAME_RE.fullmatch(words[0]):
        raise RemoteProtocolError(f"Malformed peer address {text[:80]!r}")
    name, addr = words[0], words[1]
    extra = tuple(tuple(w.split("=", 1)) for w in words[2:] if "=" in w)
    if addr == "-":
        return PeerAddress(name, None, None, extra)  # type: ignore[arg-type]
    endpoint = parse_endpoint(addr)
    if endpoint is None:
        raise RemoteProtocolError(f"Malformed peer address {text[:80]!r}")
    return PeerAddress(name, *endpoint, extra)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class MailItem:
    """``Servidor[MAIL]: ORIGIN ID STAMP TEXT`` — a stored message for you,
    sent by ORIGIN under its id ID, stored at STAMP (Unix seconds)."""

    origin: str
    msg_id: str
    stamp: int
    text: str


def parse_mail_key(text: str) -> MailKey:
    """The ``NAME ID`` of a ``STORED``, ``DELIVERED``, ``READ`` or ``EXPIRED`` line."""
    words = text.split()
    if len(words) != 2 or not NAME_RE.fullmatch(words[0]) or not MAIL_ID_RE.fullmatch(words[1]):
        raise RemoteProtocolError(f"Malformed mail reference {text[:80]!r}")
    return MailKey(words[0], words[1])


def format_mail(item: MailItem) -> str:
    return f"{item.origin} {item.msg_id} {item.stamp} {item.text}"


def parse_mail(text: str) -> MailItem:
    """The payload of a ``Servidor[MAIL]`` line."""
    origin, msg_id, stamp, body = [*text.split(" ", 3), "", "", ""][:4]
    if (
        not NAME_RE.fullmatch(origin)
        or not MAIL_ID_RE.fullmatch(msg_id)
        or not (len(stamp) <= MAX_STAMP_DIGITS and stamp.isascii() and stamp.isdigit())
        or not body
    ):
        raise RemoteProtocolError(f"Malformed MAIL line {text[:80]!r}")
    return MailItem(origin, msg_id, int(stamp), body)


@dataclass(frozen=True, slots=True)
class Refusal:
    """``Servidor[REFUSED]: NAME ID CODE: REASON`` — ``mail: NAME ID ...`` was not
    stored. CODE is a word a program can act on (see :data:`REFUSAL_CODES`)."""

    key: MailKey
    code: str
    reason: str


#: Why a ``mail:`` line may be refused; only ``full`` and ``unavailable`` are
#: worth retrying (later), the others never succeed as they are.
REFUSAL_CODES = ("self", "unknown", "too-big", "bad-text", "full", "id-used", "unavailable")


def format_refusal(r: Refusal) -> str:
    return f"{r.key.name} {r.key.msg_id} {r.code}: {r.reason}"


def parse_refusal(text: str) -> Refusal:
    words = text.split(" ", 3)
    if len(words) < 3 or not words[2].endswith(":"):
        raise RemoteProtocolError(f"Malformed REFUSED line {text[:80]!r}")
    key = parse_mail_key(f"{words[0]} {words[1]}")
    return Refusal(key, words[2][:-1], words[3] if len(words) > 3 else "")
