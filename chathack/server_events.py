"""Every ``Servidor[FLAG]: text`` line, as a typed event both sides share.

The rendezvous builds its lines with :func:`format_server_event`; the peer
reads them with :func:`parse_server_event`. A payload is written and read in
one place, next to each other, so the two sides cannot drift apart; and a
reply carries what it answers (the name in ``PEER`` and ``FAILED``, the
outcome word in ``PASSWD``), so the peer matches replies to requests by key,
never by arrival order or by English text.

A flag this version does not know parses to :class:`Notice` (shown as it
is); a known flag with a malformed payload raises
:class:`~chathack.errors.RemoteProtocolError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from chathack.errors import RemoteProtocolError
from chathack.prekeys import Bundle, format_bundle, parse_bundle
from chathack.protocol import (
    NAME_RE,
    RECEIPT_FLAGS,
    MailItem,
    MailKey,
    PeerAddress,
    Refusal,
    ServerLine,
    UserState,
    format_endpoint,
    format_mail,
    format_mail_keys,
    format_peer_address,
    format_refusal,
    format_server_line,
    format_users,
    parse_endpoint,
    parse_mail,
    parse_mail_key,
    parse_peer_address,
    parse_refusal,
    parse_users,
    parse_users_more,
)
from chathack.replies import FAILED_FLAG, Failed, format_failed, parse_failed


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """``PEER``: the answer to ``connect: NAME`` -- where NAME is, and its key."""

    addr: PeerAddress


@dataclass(frozen=True, slots=True)
class CallFrom:
    """``CALL``: someone connected to us; where they are, and their key."""

    addr: PeerAddress


@dataclass(frozen=True, slots=True)
class PunchNow:
    """``PUNCH``: dial ``name`` at its public ``host:port`` now."""

    name: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class UsersInfo:
    """``USERS``: who is registered and online (``more``: how many not listed)."""

    users: tuple[UserState, ...]
    more: int = 0


@dataclass(frozen=True, slots=True)
class PartnerGone:
    """``GONE``: a partner went offline (``text``: the sentence, naming it first)."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class ConversationEnded:
    """``END``: a partner ended the conversation (``text`` names it first)."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class MailIn:
    """``MAIL``: a message kept for us while we were away."""

    item: MailItem


@dataclass(frozen=True, slots=True)
class MailStored:
    """``STORED``: the server keeps our message ``key`` for its offline partner."""

    key: MailKey


@dataclass(frozen=True, slots=True)
class MailReceipt:
    """``DELIVERED`` / ``READ`` / ``EXPIRED``: what became of our message ``key``."""

    flag: str
    key: MailKey


@dataclass(frozen=True, slots=True)
class MailRefused:
    """``REFUSED``: the server will not keep that message (and says why)."""

    refusal: Refusal


@dataclass(frozen=True, slots=True)
class Failure:
    """``FAILED``: a request about a user failed; the line names both."""

    failed: Failed


@dataclass(frozen=True, slots=True)
class PasswordPrompt:
    """``PASSWORD``: the server asks for a password (``text`` says which)."""

    text: str


@dataclass(frozen=True, slots=True)
class PasswdResult:
    """``PASSWD``: how a ``::passwd`` dialogue ended: ``changed``, or
    ``unchanged REASON``."""

    changed: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Seen:
    """``SEEN``: our connection as the server sees it (our public endpoint)."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class TokenIssued:
    """``TOKEN``: a single-use resume token and how many seconds it lives."""

    token: str
    ttl: int


@dataclass(frozen=True, slots=True)
class Bye:
    """``BYE``: the server closes this session (``text`` says why)."""

    text: str


@dataclass(frozen=True, slots=True)
class PrekeyStock:
    """``PREKEYS``: how many of our one-time prekeys the rendezvous holds (the
    answer to ``prekeys:``, and a request for more when it runs low)."""

    count: int


@dataclass(frozen=True, slots=True)
class PrekeyBundle:
    """``PREKEY``: the answer to ``prekey: NAME N``."""

    bundle: Bundle


@dataclass(frozen=True, slots=True)
class Notice:
    """Any other line (``OK``, ``ERROR``, ``HELP``, ``PONG``, ``USERNAME``,
    ``RETRY``, a flag of a later version...): shown or used as it is."""

    flag: str
    text: str


ServerFlagEvent = (
    PeerInfo
    | CallFrom
    | PunchNow
    | UsersInfo
    | PartnerGone
    | ConversationEnded
    | MailIn
    | MailStored
    | MailReceipt
    | MailRefused
    | Failure
    | PasswordPrompt
    | PasswdResult
    | Seen
    | TokenIssued
    | Bye
    | PrekeyStock
    | PrekeyBundle
    | Notice
)


def _flag_and_text(event: ServerFlagEvent) -> tuple[str, str]:
    match event:
        case PeerInfo(addr):
            return "PEER", format_peer_address(addr)
        case CallFrom(addr):
            return "CALL", format_peer_address(addr)
        case PunchNow(name, host, port):
            return "PUNCH", f"{name} {format_endpoint(host, port)}"
        case UsersInfo(users, more):
            return "USERS", format_users(list(users), more)
        case PartnerGone(_, text):
            return "GONE", text
        case ConversationEnded(_, text):
            return "END", text
        case MailIn(item):
            return "MAIL", format_mail(item)
        case MailStored(key):
            return "STORED", format_mail_keys((key,))
        case MailReceipt(flag, key):
            return flag, format_mail_keys((key,))
        case MailRefused(refusal):
            return "REFUSED", format_refusal(refusal)
        case Failure(failed):
            return FAILED_FLAG, format_failed(failed)
        case PasswordPrompt(text):
            return "PASSWORD", text
        case PasswdResult(changed, reason):
            return "PASSWD", "changed" if changed else f"unchanged {reason}".rstrip()
        case Seen(host, port):
            return "SEEN", format_endpoint(host, port)
        case TokenIssued(token, ttl):
            return "TOKEN", f"{token} {ttl}"
        case Bye(text):
            return "BYE", text
        case PrekeyStock(count):
            return "PREKEYS", str(count)
        case PrekeyBundle(bundle):
            return "PREKEY", format_bundle(bundle)
        case Notice(flag, text):
            return flag, text


def format_server_event(event: ServerFlagEvent) -> bytes:
    """The whole wire line for ``event`` (neutralised like every server line)."""
    return format_server_line(*_flag_and_text(event))


def _named(text: str) -> str:
    name = text.split(" ", 1)[0]
    if not NAME_RE.fullmatch(name):
        raise RemoteProtocolError(f"Malformed line: no user name in {text[:80]!r}")
    return name


def _endpoint_of(text: str) -> tuple[str, int]:
    endpoint = parse_endpoint(text)
    if endpoint is None:
        raise RemoteProtocolError(f"Malformed endpoint {text[:80]!r}")
    return endpoint


def _parse(flag: str, text: str) -> ServerFlagEvent:
    match flag:
        case "PEER":
            return PeerInfo(parse_peer_address(text))
        case "CALL":
            return CallFrom(parse_peer_address(text))
        case "PUNCH":
            name, _, where = text.partition(" ")
            return PunchNow(_named(name), *_endpoint_of(where))
        case "USERS":
            return UsersInfo(tuple(parse_users(text)), parse_users_more(text))
        case "GONE":
            return PartnerGone(_named(text), text)
        case "END":
            return ConversationEnded(_named(text), text)
        case "MAIL":
            return MailIn(parse_mail(text))
        case "STORED":
            return MailStored(parse_mail_key(text))
        case _ if flag in RECEIPT_FLAGS:
            return MailReceipt(flag, parse_mail_key(text))
        case "REFUSED":
            return MailRefused(parse_refusal(text))
        case "FAILED":
            return Failure(parse_failed(text))
        case "PASSWORD":
            return PasswordPrompt(text)
        case "PASSWD":
            word, _, reason = text.partition(" ")
            if word not in ("changed", "unchanged"):
                raise RemoteProtocolError(f"Malformed PASSWD line {text[:80]!r}")
            return PasswdResult(word == "changed", reason)
        case "SEEN":
            return Seen(*_endpoint_of(text))
        case "TOKEN":
            token, _, ttl = text.partition(" ")
            if not token or not ttl.isdigit() or len(ttl) > 12:
                raise RemoteProtocolError(f"Malformed TOKEN line {text[:80]!r}")
            return TokenIssued(token, int(ttl))
        case "BYE":
            return Bye(text)
        case "PREKEYS":
            if not text.isdigit() or len(text) > 6:
                raise RemoteProtocolError(f"Malformed PREKEYS line {text[:80]!r}")
            return PrekeyStock(int(text))
        case "PREKEY":
            return PrekeyBundle(parse_bundle(text))
    return Notice(flag, text)


def parse_server_event(line: ServerLine) -> ServerFlagEvent:
    """The typed event of ``line``; raise RemoteProtocolError if malformed."""
    try:
        return _parse(line.flag, line.text)
    except (ValueError, IndexError, TypeError) as e:
        raise RemoteProtocolError(f"Malformed {line.flag} line: {e}") from None
