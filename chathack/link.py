"""The peer-to-peer link: frames and their two encodings (sans-IO). A
conversation's delivery state over them is :mod:`chathack.delivery`.

Theory of operation
-------------------
Two peers in a conversation exchange *frames* (:data:`Frame`). A frame can
travel over either path:

* a direct TCP stream, as ``4-byte big-endian length + JSON`` records
  (:func:`encode_frame` / :class:`FrameDecoder`);
* the rendezvous relay, as the text of a ``msg: NAME TEXT`` line, where TEXT
  is :data:`RELAY_PREFIX` followed by the base64url of the same JSON
  (:func:`frame_to_relay_text` / :func:`relay_text_to_frame`).

So the chat layer above never knows which path carries it, and encryption can
later wrap the JSON bytes without touching either.

Delivery (:class:`chathack.delivery.Conversation`): each side numbers the chat frames it sends
``1, 2, 3 ...`` within an *epoch* (a random id chosen when the peer process
starts). The receiver shows a frame only when its ``seq`` is the next one,
buffers frames that arrive early, drops duplicates, and answers with a
cumulative :class:`Ack`. The sender keeps every unacknowledged frame and
re-sends them, in order, whenever the path changes. Every chat frame also
carries ``base``, the lowest seq its sender still holds unacknowledged, so a
receiver that restarted (and forgot the epoch) knows where to start. Hence:
nothing lost, nothing shown twice, in order.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring as _json_str
from json.scanner import make_scanner
from typing import Any

from chathack.errors import LocalProtocolError, RemoteProtocolError
from chathack.file_frames import (
    FileAccept,
    FileAck,
    FileCancel,
    FileDone,
    FileOffer,
    check_file_frame,
)
from chathack.protocol import NAME_RE, check_text
from chathack.secure import KeyConfirm, KeyInit, KeyReply

#: Version of the link protocol, sent in :class:`Hello`.
LINK_VERSION = 1
#: Largest encoded frame accepted on a direct stream, in bytes: a sealed file
#: chunk of :data:`FILE_CHUNK_BYTES` and its overhead fit.
MAX_FRAME_BYTES = 260 * 1024
#: File data per chunk on a direct link (sealed, with its header, under
#: :data:`MAX_FRAME_BYTES`): large enough that the per-chunk cost (a seal,
#: a frame, an acknowledgement) is small beside copying the bytes.
FILE_CHUNK_BYTES = 256 * 1024
#: Marks relay text that carries a frame rather than words typed by a person.
RELAY_PREFIX = "#ch1:"
#: Frames a receiver buffers ahead of a gap before it drops new ones.
MAX_OUT_OF_ORDER = 1024

_LEN = struct.Struct(">I")
_unpack_len = _LEN.unpack_from
_scan_json = make_scanner(json.JSONDecoder())


#: How the sender of a Hello got the connection: it dialled a listening
#: address, accepted on its listener, or dialled from its shared port toward the
#: other's public endpoint (hole punching).
VIAS = ("dial", "accept", "punch")


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame on a direct stream, each way: who speaks, to whom, and how."""

    name: str
    to: str
    epoch: str
    version: int = LINK_VERSION
    via: str = "dial"


def path_of(mine: str, theirs: str) -> str:
    """The path word both ends agree on: ``punched`` when neither side accepted
    (a TCP simultaneous open through NATs), else ``direct``."""
    return "direct" if "accept" in (mine, theirs) else "punched"


@dataclass(frozen=True, slots=True)
class Chat:
    """One chat message. ``(epoch, seq)`` identifies it."""

    epoch: str
    seq: int
    base: int
    text: str
    sent_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Ack:
    """Every chat frame of ``epoch`` up to ``seq`` arrived."""

    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class Bye:
    """The sender ended the conversation."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: int


@dataclass(frozen=True, slots=True)
class Pong:
    nonce: int


@dataclass(frozen=True, slots=True)
class Sealed:
    """A frame encrypted and authenticated for one path (see :mod:`chathack.secure`).

    Binary on the wire: :data:`SEALED_TAG` then the sealed bytes (never JSON, so
    relaying it costs one base64 pass, not two)."""

    data: bytes


#: First byte of a sealed frame's bytes (a JSON frame starts with ``{``).
SEALED_TAG = b"\x01"


@dataclass(frozen=True, slots=True)
class SealedChunk:
    """File data sealed for one path (:meth:`chathack.secure.SecureSession.seal_chunk`).

    ``body`` is the frame's bytes as they are: :data:`SEALED_CHUNK_TAG`, then
    the sealed chunk (megabytes a second go through here: no copy is made to
    add or strip the tag)."""

    body: bytes | bytearray


SEALED_CHUNK_TAG = b"\x02"

Frame = (
    Hello
    | Chat
    | Ack
    | Bye
    | Ping
    | Pong
    | KeyInit
    | KeyReply
    | KeyConfirm
    | Sealed
    | FileOffer
    | FileAccept
    | FileAck
    | FileDone
    | FileCancel
    | SealedChunk
)

_TYPES: dict[str, type] = {
    "hello": Hello,
    "chat": Chat,
    "ack": Ack,
    "bye": Bye,
    "ping": Ping,
    "pong": Pong,
    "kinit": KeyInit,
    "kreply": KeyReply,
    "kconfirm": KeyConfirm,
    "foffer": FileOffer,
    "faccept": FileAccept,
    "fack": FileAck,
    "fdone": FileDone,
    "fcancel": FileCancel,
}
_NAMES = {cls: name for name, cls in _TYPES.items()}


# --------------------------------------------------------------------------
# Frame <-> JSON bytes
# --------------------------------------------------------------------------


def _reference_frame_to_bytes(frame: Frame) -> bytes:
    """The definition of a frame's bytes: every field of the frame, in order,
    after its type name, as compact UTF-8 JSON. The fast encoders below must
    produce exactly these bytes (a test compares them on arbitrary frames)."""
    if isinstance(frame, Sealed):
        return SEALED_TAG + frame.data
    if isinstance(frame, SealedChunk):
        return frame.body  # type: ignore[return-value]
    d = {"t": _NAMES[type(frame)]}
    for name in frame.__slots__:  # type: ignore[union-attr]
        d[name] = getattr(frame, name)
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# Fast encoders for the frequent frames: the JSON text written directly. Each
# guards the exact types its shortcut formats as JSON does (``str`` through
# json's own string escaper, ``int`` by ``repr``, a finite ``float`` by
# ``repr``); anything else takes the reference path above.
_INF = float("inf")


def _chat_to_bytes(f: Chat) -> bytes:
    epoch, seq, base, text, at = f.epoch, f.seq, f.base, f.text, f.sent_at
    if (
        type(epoch) is str
        and type(seq) is int
        and type(base) is int
        and type(text) is str
        and type(at) is float
        and -_INF < at < _INF
    ):
        return (
            f'{{"t":"chat","epoch":{_json_str(epoch)},"seq":{seq!r},"base":{base!r},'
            f'"text":{_json_str(text)},"sent_at":{at!r}}}'
        ).encode()
    return _reference_frame_to_bytes(f)


def _ack_to_bytes(f: Ack) -> bytes:
    epoch, seq = f.epoch, f.seq
    if type(epoch) is str and type(seq) is int:
        return f'{{"t":"ack","epoch":{_json_str(epoch)},"seq":{seq!r}}}'.encode()
    return _reference_frame_to_bytes(f)


def _ping_to_bytes(f: Ping) -> bytes:
    nonce = f.nonce
    if type(nonce) is int:
        return f'{{"t":"ping","nonce":{nonce!r}}}'.encode()
    return _reference_frame_to_bytes(f)


def _pong_to_bytes(f: Pong) -> bytes:
    nonce = f.nonce
    if type(nonce) is int:
        return f'{{"t":"pong","nonce":{nonce!r}}}'.encode()
    return _reference_frame_to_bytes(f)


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    Chat: _chat_to_bytes,
    Ack: _ack_to_bytes,
    Ping: _ping_to_bytes,
    Pong: _pong_to_bytes,
    SealedChunk: lambda f: f.body,
}


def frame_to_bytes(frame: Frame) -> bytes:
    encode = _ENCODERS.get(type(frame))
    if encode is not None:
        return encode(frame)
    return _reference_frame_to_bytes(frame)


def _field(d: dict, name: str, kind: type) -> object:
    value = d.get(name)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RemoteProtocolError(f"Malformed link frame: field {name!r} is missing or wrong")
    return value


def _parse_json(data: bytes) -> object:
    try:
        text = data.decode("utf-8")
        try:
            # json's own scanner, without json.loads's checks for a BOM and
            # surrounding whitespace; a text it does not read whole goes the
            # long way, which decides (and words any error) exactly as before.
            value, end = _scan_json(text, 0)
        except (StopIteration, ValueError):
            end = -1
        if end != len(text):
            value = json.loads(text)
        if "\\u" in text:
            # An escape such as "\\ud800" decodes to a lone surrogate, which is
            # not text: the peer could neither store, show nor send it again
            # (UnicodeEncodeError). Only escaped frames can hold one.
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        return value
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        raise RemoteProtocolError("Malformed link frame: not UTF-8 JSON") from None


def _fast_chat(d: dict) -> Frame | None:
    """The Chat in ``d`` if every field has its usual type, else None."""
    epoch, seq, base, text, at = (
        d.get("epoch"),
        d.get("seq"),
        d.get("base"),
        d.get("text"),
        d.get("sent_at"),
    )
    if not (
        type(epoch) is str
        and type(seq) is int
        and type(base) is int
        and type(text) is str
        and type(at) is float
    ):
        return None
    if seq < 1 or not 1 <= base <= seq:
        raise RemoteProtocolError("Malformed link frame: bad sequence numbers")
    try:
        check_text(text)
    except RemoteProtocolError as e:
        raise RemoteProtocolError(f"Malformed link frame: {e}") from None
    return Chat(epoch, seq, base, text, at)


def _fast_ack(d: dict) -> Frame | None:
    epoch, seq = d.get("epoch"), d.get("seq")
    if type(epoch) is str and type(seq) is int:
        return Ack(epoch, seq)
    return None


def _fast_ping(d: dict) -> Frame | None:
    nonce = d.get("nonce")
    return Ping(nonce) if type(nonce) is int else None


def _fast_pong(d: dict) -> Frame | None:
    nonce = d.get("nonce")
    return Pong(nonce) if type(nonce) is int else None


#: Shortcuts for the frequent frames, by type name. Each checks exact types
#: (what json gives: ``type(x) is int`` excludes ``bool``) and the same rules
#: as :func:`_frame_from_dict`, with the same messages; on anything unusual it
#: returns None and the general decoder decides.
_DECODERS: dict[str, Callable[[dict], Frame | None]] = {
    "chat": _fast_chat,
    "ack": _fast_ack,
    "ping": _fast_ping,
    "pong": _fast_pong,
}


def frame_from_bytes(data: bytes | bytearray) -> Frame:
    """Decode one frame's JSON; raise :class:`RemoteProtocolError` if it is not one."""
    head = data[:1]
    if head == SEALED_TAG:
        # bytes, whatever ``data`` is (a large frame is read into a bytearray):
        # the cipher takes nothing else.
        return Sealed(bytes(memoryview(data)[1:]))
    if head == SEALED_CHUNK_TAG:
        return SealedChunk(data)
    d = _parse_json(data)
    if type(d) is dict and type(t := d.get("t")) is str:
        fast = _DECODERS.get(t)
        if fast is not None:
            frame = fast(d)
            if frame is not None:
                return frame
    return _frame_from_dict(d)


def _frame_from_dict(d: object) -> Frame:
    if not isinstance(d, dict) or not isinstance(d.get("t"), str) or d["t"] not in _TYPES:
        raise RemoteProtocolError("Malformed link frame: unknown type")
    match d["t"]:
        case "hello":
            frame: Frame = Hello(
                _field(d, "name", str),
                _field(d, "to", str),  # type: ignore[arg-type]
                _field(d, "epoch", str),
                _field(d, "version", int),  # type: ignore[arg-type]
                d.get("via", "dial"),  # type: ignore[arg-type]
            )
            if frame.via not in VIAS:
                raise RemoteProtocolError("Malformed link frame: unknown via in hello")
            if not NAME_RE.fullmatch(frame.name) or not NAME_RE.fullmatch(frame.to):
                raise RemoteProtocolError("Malformed link frame: bad user name in hello")
        case "chat":
            frame = Chat(
                _field(d, "epoch", str),
                _field(d, "seq", int),  # type: ignore[arg-type]
                _field(d, "base", int),
                _field(d, "text", str),  # type: ignore[arg-type]
                _field(d, "sent_at", float),  # type: ignore[arg-type]
            )
            if frame.seq < 1 or not 1 <= frame.base <= frame.seq:
                raise RemoteProtocolError("Malformed link frame: bad sequence numbers")
            try:
                # The same rule as for text relayed by the rendezvous: no control
                # characters can reach the partner's terminal by the direct path.
                check_text(frame.text)
            except RemoteProtocolError as e:
                raise RemoteProtocolError(f"Malformed link frame: {e}") from None
        case "ack":
            frame = Ack(_field(d, "epoch", str), _field(d, "seq", int))  # type: ignore[arg-type]
        case "bye":
            frame = Bye(_field(d, "reason", str))  # type: ignore[arg-type]
        case "ping":
            frame = Ping(_field(d, "nonce", int))  # type: ignore[arg-type]
        case "kinit":
            frame = KeyInit(_field(d, "sid", str), _field(d, "e", str))  # type: ignore[arg-type]
        case "kreply":
            frame = KeyReply(*(_field(d, f, str) for f in ("sid", "e", "id", "sig")))  # type: ignore[arg-type]
        case "kconfirm":
            frame = KeyConfirm(*(_field(d, f, str) for f in ("sid", "id", "sig")))  # type: ignore[arg-type]
        case "foffer" | "faccept" | "fack" | "fdone" | "fcancel":
            frame = _file_frame(d)
        case _:
            frame = Pong(_field(d, "nonce", int))  # type: ignore[arg-type]
    return frame


_FILE_FIELDS: dict[str, tuple[tuple[str, type], ...]] = {
    "foffer": (
        ("fid", str),
        ("name", str),
        ("size", int),
        ("sha256", str),
        ("kind", str),
        ("relay", bool),
    ),
    "faccept": (("fid", str), ("have", int), ("relay", bool)),
    "fack": (("fid", str), ("have", int)),
    "fdone": (("fid", str), ("ok", bool), ("reason", str)),
    "fcancel": (("fid", str), ("reason", str)),
}


def _file_frame(d: dict) -> Frame:
    values = []
    for name, kind in _FILE_FIELDS[d["t"]]:
        value = d.get(name)
        # bool is an int to Python: each field must have exactly its own type.
        if type(value) is not kind:
            raise RemoteProtocolError(f"Malformed link frame: field {name!r} is missing or wrong")
        values.append(value)
    return check_file_frame(_TYPES[d["t"]](*values))


# --------------------------------------------------------------------------
# Direct stream encoding: length-prefixed records
# --------------------------------------------------------------------------


def encode_frame(frame: Frame) -> bytes:
    body = frame_to_bytes(frame)
    if len(body) > MAX_FRAME_BYTES:
        raise LocalProtocolError(f"frame of {len(body)} bytes is over {MAX_FRAME_BYTES}")
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Split a direct stream into frames. Any error is fatal for that stream."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> Frame | None:
        buf = self._buf
        have = len(buf)
        if have < 4:  # _LEN.size
            return None
        (n,) = _unpack_len(buf)
        if n > MAX_FRAME_BYTES:
            raise RemoteProtocolError(
                f"Link frame of {n} bytes is over the {MAX_FRAME_BYTES} limit"
            )
        end = 4 + n
        if have < end:
            return None
        with memoryview(buf) as view:
            body = bytes(view[4:end])  # one copy (a bytearray slice would be two)
        if have == end:
            buf.clear()
        else:
            del buf[:end]
        return frame_from_bytes(body)

    def take_large(self, larger_than: int) -> tuple[bytearray, int] | None:
        """The frame under way, if its body is over ``larger_than`` bytes and
        not complete: a buffer of its body's size holding the first bytes of
        it, and how many those are. The rest of it is then the caller's to
        read straight into that buffer (one copy less per byte, for file
        chunks), and :func:`frame_from_bytes` of the full buffer its frame."""
        buf = self._buf
        if len(buf) < 4:
            return None
        (n,) = _unpack_len(buf)
        if n <= larger_than or n > MAX_FRAME_BYTES or len(buf) >= 4 + n:
            return None
        body = bytearray(n)
        held = len(buf) - 4
        body[:held] = memoryview(buf)[4:]
        buf.clear()
        return body, held

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)


# --------------------------------------------------------------------------
# Relay encoding: one line of text
# --------------------------------------------------------------------------


def frame_to_relay_text(frame: Frame) -> str:
    token = base64.urlsafe_b64encode(frame_to_bytes(frame)).rstrip(b"=").decode("ascii")
    return RELAY_PREFIX + token


def is_relay_frame(text: str) -> bool:
    return text.startswith(RELAY_PREFIX)


def relay_text_to_frame(text: str) -> Frame:
    if not is_relay_frame(text):
        raise RemoteProtocolError("Not a relayed link frame")
    token = text[len(RELAY_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise RemoteProtocolError("Malformed relayed frame: bad base64") from None
    return frame_from_bytes(raw)
