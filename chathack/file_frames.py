"""The frames of a file transfer (sans-IO). They travel only sealed, on
whatever path the conversation uses (see :mod:`peer.core.transfers`).

A transfer is named by ``fid``, 16 hex digits the sender chose at random.
The control frames are JSON like every other frame, inside a
:class:`~chathack.link.Sealed`; file data travels as
:class:`~chathack.link.SealedChunk`, binary, sealed by
:meth:`chathack.secure.SecureSession.seal_chunk` and opened into a
:class:`FileChunk` (never a frame of its own on the wire).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chathack.errors import RemoteProtocolError

FID_RE = re.compile(r"[0-9a-f]{16}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: Largest file offered or accepted: 1 TiB (a size is a JSON integer; this
#: keeps every offset an exact float too, for rates and progress).
MAX_FILE_BYTES = 1 << 40


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
