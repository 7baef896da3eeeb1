"""The rendezvous line grammar's ground rules, shared by both sides (sans-IO):
the limits, names, text and endpoints, and :class:`LineBuffer`, which frames
bytes into checked lines. The events built on them are
:mod:`chathack.client_events` (client to server) and
:mod:`chathack.server_lines` (server to client); :mod:`chathack.protocol`
is the one import surface for all three."""

from __future__ import annotations

import re
from dataclasses import dataclass

from chathack.errors import RemoteProtocolError
from chathack.text import CONTROL_RE

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


# Control characters could drive the terminal of a person who reads the text,
# with nc as much as with a peer (one definition, in chathack/text.py).
#: The error for a line that holds one (a lone CR inside a line among them).
CONTROLS_IN_LINE = (
    "Control characters (a carriage return inside a line, ESC, ...) are not allowed; "
    "the line was ignored"
)


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

    def complete_lines(self) -> bytes:
        """Every complete line not yet taken, as the bytes that came (line
        feeds included), for a reader that can handle a run of lines in one
        piece (the rendezvous's relay); b"" when there is none, or when they
        are not that simple: a line being skipped, more than ``max_bytes`` in
        all. They stay in the buffer until :meth:`skip` takes them."""
        if self._discarding:
            return b""
        buf, pos = self._buf, self._pos
        end = buf.rfind(b"\n", pos) + 1
        if end <= pos or end - pos > self.max_bytes:
            return b""
        return buf[pos:end]

    def skip(self, size: int) -> None:
        """Take ``size`` bytes of :meth:`complete_lines` as handled."""
        self._pos += size

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


#: A resume token on the wire (``secrets.token_urlsafe``).
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")


@dataclass(frozen=True, slots=True)
class MailKey:
    """One stored message: ``name`` is its sender (in ``ack:``/``read:``/``MAIL``)
    or its recipient (in receipts); ``msg_id`` is the sender's id."""

    name: str
    msg_id: str


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
    if CONTROL_RE.search(text):
        raise RemoteProtocolError("Control characters are not allowed in messages")
    return text


def has_controls(text: str) -> bool:
    """True if ``text`` holds a character that :func:`check_text` refuses."""
    return bool(CONTROL_RE.search(text))


def format_endpoint(host: str, port: int) -> str:
    """``HOST:PORT``, with brackets around an IPv6 host: ``[2001:db8::1]:7777``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_endpoint(text: str) -> tuple[str, int] | None:
    """``(host, port)`` from ``HOST:PORT`` or ``[V6]:PORT``; None if it is not one."""
    host, _, port = text.strip().rpartition(":")
    host = host.strip("[]")
    # A host is an address or a DNS name: nothing that would not survive being
    # written back (a space inside brackets, say) or mean something to a dialer.
    if _ENDPOINT_HOST_RE.fullmatch(host) and is_port(port):
        return host, int(port)
    return None


def is_port(text: str) -> bool:
    # isascii(): str.isdigit() also accepts digits such as '²' that int() refuses;
    # the length first: int() of thousands of digits is slow, then refused.
    return len(text) <= 5 and text.isascii() and text.isdigit() and 1 <= int(text) <= 65535


def is_endpoint(text: str) -> bool:
    endpoint = parse_endpoint(text)
    return endpoint is not None and bool(_HOST_RE.fullmatch(endpoint[0]))


def check_mail_id(msg_id: str) -> str:
    """Return ``msg_id`` if it is a valid mail id, else raise."""
    if not MAIL_ID_RE.fullmatch(msg_id):
        raise RemoteProtocolError(
            f"Invalid mail id {msg_id[:70]!r}: use 1-64 letters, digits, '_', '.', ':' or '-'"
        )
    return msg_id


_HOST_RE = re.compile(r"[0-9A-Fa-f.:]{2,45}")


#: What parse_endpoint takes for a host: an IPv4/IPv6 address or a DNS name.
_ENDPOINT_HOST_RE = re.compile(r"[A-Za-z0-9_.:%-]{1,253}")


def encode_line(line: str) -> bytes:
    if "\n" in line or "\r" in line:
        # Only a client's own lines get here unneutralised (format_client_event):
        # a caller that let a line break through is a bug on this side.
        raise ValueError("a protocol line cannot contain a line break")
    return line.encode("utf-8") + b"\n"


def format_mail_keys(keys: tuple[MailKey, ...] | list[MailKey]) -> str:
    """``NAME ID NAME ID ...``: the text of ``ack:``/``read:``, and (one key) of
    ``Servidor[STORED|DELIVERED|READ|EXPIRED]``."""
    return " ".join(f"{k.name} {k.msg_id}" for k in keys)
