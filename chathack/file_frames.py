"""The frames of a file transfer (sans-IO). They travel only sealed, on
whatever path the conversation uses (see :mod:`peer.core.transfers`).

A transfer is named by ``fid``, 16 hex digits the sender chose at random.
The control frames are JSON like every other frame; :class:`FileChunk` is
binary (:data:`CHUNK_TAG`, the fid's 8 bytes, the offset, the data), so a
chunk is sealed as it is, never turned into text on a direct link.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from chathack.errors import RemoteProtocolError

#: First byte of a chunk frame's bytes (a JSON frame starts with ``{``).
CHUNK_TAG = b"\x02"
FID_RE = re.compile(r"[0-9a-f]{16}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: Largest file offered or accepted: 1 TiB (a size is a JSON integer; this
#: keeps every offset an exact float too, for rates and progress).
MAX_FILE_BYTES = 1 << 40
_CHUNK_HEAD = struct.Struct(">8sQ")
CHUNK_HEAD_BYTES = 1 + _CHUNK_HEAD.size


@dataclass(frozen=True, slots=True)
class FileOffer:
    """The sender offers a file: its name (a bare name, checked by the
    receiver again), size, SHA-256 (hex), a media type, and whether the
    sender lets it go through the relay."""

    fid: str
    name: str
    size: int
    sha256: str
    kind: str
    relay: bool


@dataclass(frozen=True, slots=True)
class FileAccept:
    """The receiver takes it (again): send from ``have``, the bytes it holds.
    ``relay``: the receiver lets it go through the relay. Also sent to resume
    after a path changed or a peer restarted."""

    fid: str
    have: int
    relay: bool


@dataclass(frozen=True, slots=True)
class FileAck:
    """The receiver holds the first ``have`` bytes (a window for the sender)."""

    fid: str
    have: int


@dataclass(frozen=True, slots=True)
class FileDone:
    """The receiver has it all: ``ok`` if its SHA-256 matched (it is saved),
    else ``reason`` (it was deleted)."""

    fid: str
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class FileCancel:
    """Either side drops the transfer (rejected, cancelled, expired)."""

    fid: str
    reason: str


@dataclass(frozen=True, slots=True)
class FileChunk:
    """``data`` at ``offset`` of the file ``fid``."""

    fid: str
    offset: int
    data: bytes


FileFrame = FileOffer | FileAccept | FileAck | FileDone | FileCancel | FileChunk


def chunk_to_bytes(chunk: FileChunk) -> bytes:
    return CHUNK_TAG + _CHUNK_HEAD.pack(bytes.fromhex(chunk.fid), chunk.offset) + chunk.data


def chunk_from_bytes(data: bytes) -> FileChunk:
    if len(data) < CHUNK_HEAD_BYTES:
        raise RemoteProtocolError("Malformed link frame: a file chunk too short")
    fid, offset = _CHUNK_HEAD.unpack_from(data, 1)
    if offset >= MAX_FILE_BYTES:
        raise RemoteProtocolError("Malformed link frame: a file chunk beyond any file")
    return FileChunk(fid.hex(), offset, data[CHUNK_HEAD_BYTES:])


def check_file_frame(frame: FileFrame) -> FileFrame:
    """``frame`` if its fields make sense, else :class:`RemoteProtocolError`
    (the types are checked by the JSON decoder; this checks the values)."""
    if not FID_RE.fullmatch(frame.fid):
        raise RemoteProtocolError("Malformed link frame: bad transfer id")
    match frame:
        case FileOffer(size=size, sha256=sha, name=name, kind=kind):
            if not 0 <= size <= MAX_FILE_BYTES or not SHA256_RE.fullmatch(sha):
                raise RemoteProtocolError("Malformed link frame: bad file offer")
            if not 0 < len(name) <= 1024 or len(kind) > 128:
                raise RemoteProtocolError("Malformed link frame: bad file offer")
        case FileAccept(have=have) | FileAck(have=have):
            if not 0 <= have <= MAX_FILE_BYTES:
                raise RemoteProtocolError("Malformed link frame: bad file offset")
        case FileDone(reason=reason) | FileCancel(reason=reason):
            if len(reason) > 512:
                raise RemoteProtocolError("Malformed link frame: reason too long")
    return frame
