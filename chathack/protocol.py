"""The rendezvous line grammar, shared by the server and the peer (sans-IO).

Theory of operation
-------------------
The rendezvous speaks UTF-8 text, one message per line (``\\n``, an optional
``\\r`` before it is ignored), so that a person can drive it with ``nc``. The
formats are the ones of the original hackathon notes:

client -> server::

    username: NAME          log in or register
    password: SECRET        answer to Servidor[PASSWORD]
    resume: NAME TOKEN      log in again with the last login's Servidor[TOKEN]
    key: BASE64             this user's identity key (the server vouches for it)
    port: N                 the TCP port this peer accepts direct links on
    lan: HOST:PORT ...      this peer's own addresses ("lan: -": none)
    connect: NAME           start a conversation with NAME
    punch: NAME             time a hole punch with NAME (both get Servidor[PUNCH])
    msg: NAME TEXT          relay one line to NAME
    mail: NAME ID TEXT      store TEXT for NAME, online or not (docs/MAILBOX.md)
    ack: ORIGIN ID ...      these MAIL lines arrived: the server may forget them
    read: ORIGIN ID ...     these MAIL lines were shown: tell their senders
    receipt: FLAG NAME ID ..  these receipts arrived: the server may forget them
    ::COMMAND [ARG]         ::users ::help ::end ::quit ...
    TEXT                    anything else: relayed to the current partner

server -> client::

    Servidor[FLAG]: TEXT    the origin is the server
    ORIGIN: TEXT            a line relayed from user ORIGIN

This module turns bytes into those events and events into bytes. It never
touches a socket, a clock or trio: :class:`LineBuffer` frames bytes into
lines, ``parse_*`` turn a line into a frozen dataclass, ``format_*`` go back.
Bad input from the other side raises :class:`RemoteProtocolError`, whose
message is fit to send back in a ``Servidor[ERROR]`` line; the connection
stays usable afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chathack.errors import RemoteProtocolError
from chathack.text import CONTROL_RE, neutralise

#: Longest line either side accepts, in bytes, newline included.
MAX_LINE_BYTES = 16384
#: Longest chat message a person may type, in characters.
MAX_TEXT_CHARS = 2000
#: Longest TEXT of a ``msg: NAME TEXT`` line, in characters: room for a chat
#: message of MAX_TEXT_CHARS wrapped as a relayed link frame (base64 of JSON).
MAX_RELAY_CHARS = 12000
#: User names: letters, digits, ``_ . -``; 1 to 32 of them.
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
#: The origin name the server uses for itself; nobody may register it.
SERVER_ORIGIN = "Servidor"
#: How the ``Servidor[BYE]`` to a session replaced by a newer login of the same
#: user begins: a peer that reads it must not reconnect (the two would take turns).
KICKED_PREFIX = "You logged in again"
#: Flags are upper-case words.
FLAG_RE = re.compile(r"[A-Z_]{1,16}")
#: A mail id, chosen by its sender; (sender, id) names one stored message.
MAIL_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: The receipts a sender gets about its mail (``Servidor[FLAG]: NAME ID``).
RECEIPT_FLAGS = ("DELIVERED", "READ", "EXPIRED")
#: Digits of a MAIL stamp (Unix seconds): 12 reach the year 33658, and every
#: clock and calendar function here still takes them.
MAX_STAMP_DIGITS = 12
#: Most items one ``ack:``, ``read:`` or ``receipt:`` line may carry.
MAX_MAIL_KEYS = 1024

_SERVER_LINE_RE = re.compile(r"Servidor\[([A-Z_]{1,16})\]: ?(.*)", re.DOTALL)
_USER_LINE_RE = re.compile(r"([A-Za-z0-9_.-]{1,32}): ?(.*)", re.DOTALL)
# Control characters could drive the terminal of a person who reads the text,
# with nc as much as with a peer (one definition, in chathack/text.py).
_CONTROL_RE = CONTROL_RE
#: The error for a line that holds one (a lone CR inside a line among them).
CONTROLS_IN_LINE = (
    "Control characters (a carriage return inside a line, ESC, ...) are not allowed; "
    "the line was ignored"
)


# --------------------------------------------------------------------------
# Framing bytes into lines
# --------------------------------------------------------------------------


class LineBuffer:
    """Split a byte stream into text lines, each checked for size and UTF-8.

    ``receive_data(b"")`` signals end of stream; ``next_line()`` then returns
    ``None`` for good (a trailing unterminated fragment is dropped: the other
    side did not finish it).
    """

    __slots__ = ("_buf", "_discarding", "_eof", "_pos", "max_bytes")

    # The bytes not yet framed are ``_buf[_pos:]``: a line is one slice of an
    # immutable buffer and a cursor move, and a read that ends on a line
    # boundary (the common case) is adopted as the next buffer without a copy.

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self._buf = b""
        self._pos = 0
        self._discarding = False
        self._eof = False
        self.max_bytes = max_bytes

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif self._pos >= len(self._buf):
            self._buf = bytes(data)
            self._pos = 0
        else:
            self._buf = self._buf[self._pos :] + data
            self._pos = 0

    @property
    def at_eof(self) -> bool:
        return self._eof

    def _drop(self) -> None:
        self._buf = b""
        self._pos = 0

    def next_line(self) -> str | None:
        """Return the next complete line, ``None`` when more bytes are needed.

        Raises :class:`RemoteProtocolError` once for a line that is too long
        (the rest of it is skipped) or not valid UTF-8; the buffer stays usable.
        """
        buf = self._buf
        while True:
            pos = self._pos
            nl = buf.find(b"\n", pos)
            if self._discarding:
                if nl < 0:
                    self._drop()
                    return None
                self._pos = nl + 1
                self._discarding = False
                continue
            if nl < 0:
                if len(buf) - pos >= self.max_bytes:
                    self._drop()
                    self._discarding = True
                    raise RemoteProtocolError(
                        f"Line too long: the limit is {self.max_bytes} bytes; it was ignored"
                    )
                return None
            self._pos = nl + 1
            if nl + 1 - pos > self.max_bytes:
                raise RemoteProtocolError(
                    f"Line too long: the limit is {self.max_bytes} bytes; it was ignored"
                )
            end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl  # 13: a CR before the LF
            try:
                return buf[pos:end].decode("utf-8")
            except UnicodeDecodeError:
                raise RemoteProtocolError("Line is not valid UTF-8; it was ignored") from None


# --------------------------------------------------------------------------
# Client -> server events
# --------------------------------------------------------------------------


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


#: A resume token on the wire (``secrets.token_urlsafe``).
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")


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
class MailKey:
    """One stored message: ``name`` is its sender (in ``ack:``/``read:``/``MAIL``)
    or its recipient (in receipts); ``msg_id`` is the sender's id."""

    name: str
    msg_id: str


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


ClientEvent = (
    Username
    | Resume
    | Password
    | ListenPort
    | Lan
    | IdentityKey
    | Connect
    | Punch
    | Msg
    | Mail
    | MailAck
    | MailRead
    | ReceiptAck
    | Command
    | Text
)

#: An identity key on the wire: standard base64 of 32 bytes.
KEY_RE = re.compile(r"[A-Za-z0-9+/]{43}=")

#: Most addresses one ``lan:`` line may list.
MAX_LAN_ADDRS = 8


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid user name, else raise."""
    if not NAME_RE.fullmatch(name):
        raise RemoteProtocolError(
            f"Invalid user name {name[:40]!r}: use 1-32 letters, digits, '_', '.' or '-'"
        )
    if name.lower() == SERVER_ORIGIN.lower():
        raise RemoteProtocolError(f"The name {name!r} is reserved for the server")
    return name


def check_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Return chat ``text`` if it may be relayed (at most ``limit`` characters), else raise."""
    if not text.strip():
        raise RemoteProtocolError("Empty message: there is nothing to send")
    if len(text) > limit:
        raise RemoteProtocolError(f"Message too long: the limit is {limit} characters")
    if _CONTROL_RE.search(text):
        raise RemoteProtocolError("Control characters are not allowed in messages")
    return text


def has_controls(text: str) -> bool:
    """True if ``text`` holds a character that :func:`check_text` refuses."""
    return bool(_CONTROL_RE.search(text))


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
    if _CONTROL_RE.search(arg):
        raise RemoteProtocolError(CONTROLS_IN_LINE)
    return Password(arg)


def _parse_port(arg: str) -> ClientEvent:
    if not _is_port(arg):
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
    if not addrs or len(addrs) > MAX_LAN_ADDRS or not all(_is_endpoint(a) for a in addrs):
        raise RemoteProtocolError(
            f'Malformed line: write "lan: HOST:PORT ..." (at most {MAX_LAN_ADDRS}) or "lan: -"'
        )
    return Lan(addrs)


def _parse_punch(arg: str) -> ClientEvent:
    if not arg:
        raise RemoteProtocolError('Malformed line: write "punch: NAME"')
    return Punch(check_name(arg))


def format_endpoint(host: str, port: int) -> str:
    """``HOST:PORT``, with brackets around an IPv6 host: ``[2001:db8::1]:7777``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_endpoint(text: str) -> tuple[str, int] | None:
    """``(host, port)`` from ``HOST:PORT`` or ``[V6]:PORT``; None if it is not one."""
    host, _, port = text.strip().rpartition(":")
    host = host.strip("[]")
    # A host is an address or a DNS name: nothing that would not survive being
    # written back (a space inside brackets, say) or mean something to a dialer.
    if _ENDPOINT_HOST_RE.fullmatch(host) and _is_port(port):
        return host, int(port)
    return None


def _is_port(text: str) -> bool:
    # isascii(): str.isdigit() also accepts digits such as '²' that int() refuses;
    # the length first: int() of thousands of digits is slow, then refused.
    return len(text) <= 5 and text.isascii() and text.isdigit() and 1 <= int(text) <= 65535


def _is_endpoint(text: str) -> bool:
    endpoint = parse_endpoint(text)
    return endpoint is not None and bool(_HOST_RE.fullmatch(endpoint[0]))


def _parse_resume(arg: str) -> ClientEvent:
    name, _, token = arg.partition(" ")
    if not name or not TOKEN_RE.fullmatch(token.strip()):
        raise RemoteProtocolError('Malformed line: write "resume: NAME TOKEN"')
    return Resume(check_name(name), token.strip())


def _parse_key(arg: str) -> ClientEvent:
    if not KEY_RE.fullmatch(arg):
        raise RemoteProtocolError('Malformed line: write "key: BASE64" (a 32-byte public key)')
    return IdentityKey(arg)


def check_mail_id(msg_id: str) -> str:
    """Return ``msg_id`` if it is a valid mail id, else raise."""
    if not MAIL_ID_RE.fullmatch(msg_id):
        raise RemoteProtocolError(
            f"Invalid mail id {msg_id[:70]!r}: use 1-64 letters, digits, '_', '.', ':' or '-'"
        )
    return msg_id


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


_HOST_RE = re.compile(r"[0-9A-Fa-f.:]{2,45}")
#: What parse_endpoint takes for a host: an IPv4/IPv6 address or a DNS name.
_ENDPOINT_HOST_RE = re.compile(r"[A-Za-z0-9_.:%-]{1,253}")

_KEYWORDS = {
    "resume": _parse_resume,
    "key": _parse_key,
    "lan": _parse_lan,
    "punch": _parse_punch,
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
        if _CONTROL_RE.search(line):
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
    return _encode(line)


# --------------------------------------------------------------------------
# Server -> client lines
# --------------------------------------------------------------------------


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
    return _encode(f"{SERVER_ORIGIN}[{flag}]: {neutralise(text)}")


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


def _encode(line: str) -> bytes:
    if "\n" in line or "\r" in line:
        # Only a client's own lines get here unneutralised (format_client_event):
        # a caller that let a line break through is a bug on this side.
        raise ValueError("a protocol line cannot contain a line break")
    return line.encode("utf-8") + b"\n"


# --------------------------------------------------------------------------
# Structured payloads of some server lines
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# The mailbox (store-and-forward; docs/MAILBOX.md)
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MailItem:
    """``Servidor[MAIL]: ORIGIN ID STAMP TEXT`` — a stored message for you,
    sent by ORIGIN under its id ID, stored at STAMP (Unix seconds)."""

    origin: str
    msg_id: str
    stamp: int
    text: str


def format_mail_keys(keys: tuple[MailKey, ...] | list[MailKey]) -> str:
    """``NAME ID NAME ID ...``: the text of ``ack:``/``read:``, and (one key) of
    ``Servidor[STORED|DELIVERED|READ|EXPIRED]``."""
    return " ".join(f"{k.name} {k.msg_id}" for k in keys)


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
