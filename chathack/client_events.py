"""What a client sends the rendezvous: one frozen event per line
(``username:``, ``password:``, ``connect:``, ``msg:``, ``mail:``, ...),
:func:`parse_client_line` and :func:`format_client_event` (sans-IO)."""

from __future__ import annotations

from dataclasses import dataclass

from chathack.errors import RemoteProtocolError
from chathack.grammar import (
    CONTROLS_IN_LINE,
    KEY_RE,
    MAX_LAN_ADDRS,
    MAX_MAIL_KEYS,
    MAX_RELAY_CHARS,
    RECEIPT_FLAGS,
    TOKEN_RE,
    MailKey,
    check_mail_id,
    check_name,
    check_text,
    encode_line,
    format_mail_keys,
    is_endpoint,
    is_port,
)
from chathack.prekeys import (
    MAX_OPKS_PER_BUNDLE,
    MAX_OPKS_PER_LINE,
    OneTimePrekey,
    SignedPrekey,
    format_opk,
    format_spk,
    parse_opks,
    parse_spk,
)
from chathack.text import CONTROL_RE


@dataclass(frozen=True, slots=True)
class Username:
    name: str


@dataclass(frozen=True, slots=True)
class Password:
    secret: str


@dataclass(frozen=True, slots=True)
class ListenPort:
    port: int


@dataclass(frozen=True, slots=True)
class Connect:
    name: str


@dataclass(frozen=True, slots=True)
class Msg:
    to: str
    text: str


@dataclass(frozen=True, slots=True)
class Command:
    """A ``::name [arg]`` line; ``name`` is lower-case without the colons."""

    name: str
    arg: str = ""


@dataclass(frozen=True, slots=True)
class Text:
    """A line with no keyword: chat text for the current partner."""

    text: str


@dataclass(frozen=True, slots=True)
class Lan:
    """``lan: HOST:PORT ...`` — where this peer listens on its own networks
    (``lan: -`` for nowhere). Sending it at all says "I am a chathack peer":
    partners then talk to it in link frames."""

    addrs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Punch:
    """``punch: NAME`` — ask the server to start a hole punch with NAME now."""

    name: str


@dataclass(frozen=True, slots=True)
class Resume:
    """``resume: NAME TOKEN`` — log in again with the token of the last login."""

    name: str
    token: str


@dataclass(frozen=True, slots=True)
class IdentityKey:
    """``key: BASE64`` — this user's public identity key (Ed25519, 32 bytes)."""

    key: str


@dataclass(frozen=True, slots=True)
class Mail:
    """``mail: NAME ID TEXT`` — store TEXT for NAME (who may be offline) under
    the sender's id ID. TEXT is checked by the server, which answers
    ``Servidor[REFUSED]`` (correlated by NAME ID) rather than ``ERROR``."""

    to: str
    msg_id: str
    text: str


@dataclass(frozen=True, slots=True)
class MailAck:
    """``ack: ORIGIN ID [ORIGIN ID ...]`` — these messages arrived."""

    keys: tuple[MailKey, ...]


@dataclass(frozen=True, slots=True)
class MailRead:
    """``read: ORIGIN ID [ORIGIN ID ...]`` — these messages were shown."""

    keys: tuple[MailKey, ...]


@dataclass(frozen=True, slots=True)
class Receipt:
    """``Servidor[FLAG]: NAME ID`` — what became of the message ID you sent NAME."""

    flag: str  # one of RECEIPT_FLAGS
    name: str
    msg_id: str


@dataclass(frozen=True, slots=True)
class ReceiptAck:
    """``receipt: FLAG NAME ID [FLAG NAME ID ...]`` — these receipts arrived."""

    receipts: tuple[Receipt, ...]


@dataclass(frozen=True, slots=True)
class PublishPrekeys:
    """``prekeys: SPK [OPK ...]`` — this user's signed prekey (replacing the
    last) and more one-time prekeys for the rendezvous to hand out
    (:mod:`chathack.prekeys`)."""

    spk: SignedPrekey
    opks: tuple[OneTimePrekey, ...] = ()


@dataclass(frozen=True, slots=True)
class AskPrekeys:
    """``prekey: NAME N`` — NAME's signed prekey and up to N one-time
    prekeys, to seal N messages for NAME's mailbox."""

    name: str
    count: int


ClientEvent = (
    Username
    | Resume
    | Password
    | ListenPort
    | Lan
    | IdentityKey
    | Connect
    | Punch
    | PublishPrekeys
    | AskPrekeys
    | Msg
    | Mail
    | MailAck
    | MailRead
    | ReceiptAck
    | Command
    | Text
)


def _keyword(line: str) -> tuple[str, str] | None:
    head, sep, rest = line.partition(":")
    if sep and head in _KEYWORDS:
        return head, rest.strip()
    return None


def _parse_username(arg: str) -> ClientEvent:
    if not arg:
        raise RemoteProtocolError('Malformed line: write "username: NAME"')
    return Username(check_name(arg))


def _parse_password(arg: str) -> ClientEvent:
    if not arg:
        raise RemoteProtocolError('Malformed line: write "password: SECRET"')
    if CONTROL_RE.search(arg):
        raise RemoteProtocolError(CONTROLS_IN_LINE)
    return Password(arg)


def _parse_port(arg: str) -> ClientEvent:
    if not is_port(arg):
        raise RemoteProtocolError('Malformed line: write "port: N" with N from 1 to 65535')
    return ListenPort(int(arg))


def _parse_connect(arg: str) -> ClientEvent:
    if not arg:
        raise RemoteProtocolError('Malformed line: write "connect: NAME"')
    return Connect(check_name(arg))


def _parse_msg(arg: str) -> ClientEvent:
    to, _, text = arg.partition(" ")
    text = text.strip()
    if not to or not text:
        raise RemoteProtocolError('Malformed line: write "msg: NAME TEXT"')
    return Msg(check_name(to), check_text(text, MAX_RELAY_CHARS))


def _parse_lan(arg: str) -> ClientEvent:
    if arg == "-":
        return Lan(())
    addrs = tuple(arg.split())
    if not addrs or len(addrs) > MAX_LAN_ADDRS or not all(is_endpoint(a) for a in addrs):
        raise RemoteProtocolError(
            f'Malformed line: write "lan: HOST:PORT ..." (at most {MAX_LAN_ADDRS}) or "lan: -"'
        )
    return Lan(addrs)


def _parse_punch(arg: str) -> ClientEvent:
    if not arg:
        raise RemoteProtocolError('Malformed line: write "punch: NAME"')
    return Punch(check_name(arg))


def _parse_resume(arg: str) -> ClientEvent:
    name, _, token = arg.partition(" ")
    if not name or not TOKEN_RE.fullmatch(token.strip()):
        raise RemoteProtocolError('Malformed line: write "resume: NAME TOKEN"')
    return Resume(check_name(name), token.strip())


def _parse_key(arg: str) -> ClientEvent:
    if not KEY_RE.fullmatch(arg):
        raise RemoteProtocolError('Malformed line: write "key: BASE64" (a 32-byte public key)')
    return IdentityKey(arg)


def _parse_mail(arg: str) -> ClientEvent:
    to, _, rest = arg.partition(" ")
    msg_id, _, text = rest.strip().partition(" ")
    if not to or not msg_id:
        raise RemoteProtocolError('Malformed line: write "mail: NAME ID TEXT"')
    # TEXT is the server's to judge: a refusal then names NAME and ID.
    return Mail(check_name(to), check_mail_id(msg_id), text.strip())


def _mail_keys(arg: str, keyword: str) -> tuple[MailKey, ...]:
    words = arg.split()
    if not words or len(words) % 2 or len(words) > 2 * MAX_MAIL_KEYS:
        raise RemoteProtocolError(
            f'Malformed line: write "{keyword}: NAME ID [NAME ID ...]" '
            f"(at most {MAX_MAIL_KEYS} pairs)"
        )
    return tuple(
        MailKey(check_name(words[i]), check_mail_id(words[i + 1])) for i in range(0, len(words), 2)
    )


def _parse_ack(arg: str) -> ClientEvent:
    return MailAck(_mail_keys(arg, "ack"))


def _parse_read(arg: str) -> ClientEvent:
    return MailRead(_mail_keys(arg, "read"))


def _parse_receipt(arg: str) -> ClientEvent:
    words = arg.split()
    if not words or len(words) % 3 or len(words) > 3 * MAX_MAIL_KEYS:
        raise RemoteProtocolError(
            'Malformed line: write "receipt: FLAG NAME ID [FLAG NAME ID ...]" '
            f"(at most {MAX_MAIL_KEYS})"
        )
    out: list[Receipt] = []
    for i in range(0, len(words), 3):
        flag, name, msg_id = words[i : i + 3]
        if flag not in RECEIPT_FLAGS:
            raise RemoteProtocolError(
                f"Unknown receipt {flag[:20]!r}: it is one of {', '.join(RECEIPT_FLAGS)}"
            )
        out.append(Receipt(flag, check_name(name), check_mail_id(msg_id)))
    return ReceiptAck(tuple(out))


def _parse_prekeys(arg: str) -> ClientEvent:
    words = arg.split()
    if not words:
        raise RemoteProtocolError('Malformed line: write "prekeys: SPK [OPK ...]"')
    return PublishPrekeys(parse_spk(words[0]), parse_opks(words[1:], MAX_OPKS_PER_LINE))


def _parse_prekey(arg: str) -> ClientEvent:
    name, _, count = arg.partition(" ")
    count = count.strip()
    if not name or not count.isdigit() or not 1 <= int(count[:3]) <= MAX_OPKS_PER_BUNDLE:
        raise RemoteProtocolError(
            f'Malformed line: write "prekey: NAME N" with N from 1 to {MAX_OPKS_PER_BUNDLE}'
        )
    return AskPrekeys(check_name(name), int(count))


_KEYWORDS = {
    "resume": _parse_resume,
    "key": _parse_key,
    "lan": _parse_lan,
    "punch": _parse_punch,
    "prekeys": _parse_prekeys,
    "prekey": _parse_prekey,
    "username": _parse_username,
    "password": _parse_password,
    "port": _parse_port,
    "connect": _parse_connect,
    "msg": _parse_msg,
    "mail": _parse_mail,
    "ack": _parse_ack,
    "read": _parse_read,
    "receipt": _parse_receipt,
}


#: The words that make a line a keyword line (``word: ...``) rather than chat text.
CLIENT_KEYWORDS = tuple(_KEYWORDS)


def parse_client_line(line: str) -> ClientEvent:
    """Turn one line sent by a client into an event, or raise."""
    if "\r" in line:
        # A CR inside a line (one before the LF is framing, dropped already) is
        # a line break no formatter may write again: refused, whatever the line.
        raise RemoteProtocolError(CONTROLS_IN_LINE)
    if line.startswith("::"):
        # A command is echoed back in errors and help: a CR or ESC in it would
        # reach the formatter (and the sender's terminal), so it is refused here.
        if CONTROL_RE.search(line):
            raise RemoteProtocolError(CONTROLS_IN_LINE)
        name, _, arg = line[2:].strip().partition(" ")
        if not name:
            raise RemoteProtocolError("Malformed command: write ::help for the list")
        return Command(name.lower(), arg.strip())
    kw = _keyword(line)
    if kw is not None:
        return _KEYWORDS[kw[0]](kw[1])
    return Text(check_text(line))


def format_client_event(event: ClientEvent) -> bytes:
    """The bytes a client sends for ``event`` (the inverse of parsing)."""
    match event:
        case Username(name):
            line = f"username: {name}"
        case Password(secret):
            line = f"password: {secret}"
        case ListenPort(port):
            line = f"port: {port}"
        case Lan(addrs):
            line = f"lan: {' '.join(addrs) if addrs else '-'}"
        case Punch(name):
            line = f"punch: {name}"
        case PublishPrekeys(spk, opks):
            line = " ".join(["prekeys:", format_spk(spk), *(format_opk(o) for o in opks)])
        case AskPrekeys(name, count):
            line = f"prekey: {name} {count}"
        case IdentityKey(key):
            line = f"key: {key}"
        case Resume(name, token):
            line = f"resume: {name} {token}"
        case Connect(name):
            line = f"connect: {name}"
        case Msg(to, text):
            line = f"msg: {to} {text}"
        case Mail(to, msg_id, text):
            line = f"mail: {to} {msg_id} {text}"
        case MailAck(keys):
            line = f"ack: {format_mail_keys(keys)}"
        case MailRead(keys):
            line = f"read: {format_mail_keys(keys)}"
        case ReceiptAck(receipts):
            line = "receipt: " + " ".join(f"{r.flag} {r.name} {r.msg_id}" for r in receipts)
        case Command(name, arg):
            line = f"::{name} {arg}" if arg else f"::{name}"
        case Text(text):
            line = text
        case _:  # pragma: no cover - the union is closed
            raise TypeError(f"not a client event: {event!r}")
    return encode_line(line)
