"""The key exchange on each path, and judging the key a partner presents.

Every path to a partner — each direct link, and the relay — has a
:class:`PathSec`: the handshake in flight and, once it verified, the
:class:`~chathack.secure.SecureSession` that seals and opens its frames.
Chat, ack and goodbye frames travel only sealed; a direct link carries a
conversation only after its own exchange verified the partner's identity key.

Who starts: on a direct link the side that dialled (for a punched link, the
smaller name); on the relay, whoever needs it first. When both start at once
("glare"), the smaller name's exchange wins and the other side answers it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nacl.signing import SigningKey

from chathack.errors import RemoteProtocolError
from chathack.file_frames import MAX_FILE_BYTES, FileChunk
from chathack.link import (
    SEALED_CHUNK_TAG,
    Frame,
    Sealed,
    SealedChunk,
    frame_from_bytes,
    frame_to_bytes,
    frame_to_relay_text,
)
from chathack.protocol import Msg
from chathack.secure import (
    BadHandshake,
    Handshake,
    KeyConfirm,
    KeyInit,
    KeyReply,
    ReplayedFrame,
    SecureSession,
    TamperedFrame,
)
from peer.core.records import Effect, Show, ToLink, ToServer
from peer.events import System
from peer.identity import Pins, fingerprint, judge, safety_number

#: A path: a direct link's id, or None for the relay.
PathId = int | None
Outcome = Literal["secured", "refused"] | None


@dataclass(eq=False)
class PathSec:
    """Security state of one path with one partner."""

    hs: Handshake | None = None
    session: SecureSession | None = None

    def reset(self) -> None:
        self.hs, self.session = None, None


@dataclass(eq=False)
class Keys:
    """This user's identity and what is known of everyone else's keys."""

    me: str
    identity: SigningKey
    pins: Pins
    vouched: dict[str, bytes] = field(default_factory=dict)  # folded name -> key
    blocked: dict[str, bytes] = field(default_factory=dict)  # folded name -> changed key

    def known_key(self, name: str) -> bytes | None:
        return self.pins.get(name) or self.vouched.get(name.lower())

    def is_peer(self, name: str) -> bool:
        """Whether ``name`` is known to be a chathack peer (which always encrypts)."""
        return name.lower() in self.vouched or self.pins.get(name) is not None


def raw(partner: str, frame: Frame, path: PathId) -> Effect:
    """``frame`` as it is, on ``path`` (handshakes, and frames already sealed)."""
    if path is not None:
        return ToLink(path, frame)
    return ToServer(Msg(partner, frame_to_relay_text(frame)))


def start(keys: Keys, partner: str, sec: PathSec, path: PathId, out: list[Effect]) -> None:
    """Begin a key exchange on this path unless one is running or done."""
    if sec.session is not None or sec.hs is not None or partner.lower() in keys.blocked:
        return
    sec.hs = Handshake(keys.identity, keys.me, partner, initiator=True)
    out.append(raw(partner, sec.hs.start(), path))


def restart(keys: Keys, partner: str, sec: PathSec, out: list[Effect], forget: bool) -> None:
    """Abandon the relay's exchange in flight and start anew (``forget``: the
    session too; see :class:`chathack.retransmit.KeyTimer` for when)."""
    sec.hs = None
    if forget:
        sec.session = None
    start(keys, partner, sec, None, out)


def seal(sec: PathSec, frame: Frame) -> Sealed | None:
    """``frame`` sealed for this path, or None when the path has no session yet."""
    if sec.session is None:
        return None
    return Sealed(sec.session.seal(frame_to_bytes(frame)))


def seal_chunk(sec: PathSec, chunk: FileChunk) -> SealedChunk | None:
    """File data sealed for this path, or None when the path has no session yet."""
    if sec.session is None:
        return None
    fid = bytes.fromhex(chunk.fid)
    return SealedChunk(sec.session.seal_chunk(fid, chunk.offset, chunk.data, SEALED_CHUNK_TAG))


def open_chunk(
    partner: str, sec: PathSec, frame: SealedChunk, out: list[Effect]
) -> FileChunk | None:
    """The file data in ``frame``, or None (dropped, and said why)."""
    if sec.session is None:
        return None  # a chunk of a session this side lost: the transfer resumes
    try:
        fid, offset, data = sec.session.open_chunk(frame.body, len(SEALED_CHUNK_TAG))
    except TamperedFrame as e:
        out.append(Show(System(f"Dropped a message from {partner}: {e}", "warning", partner)))
        return None
    if offset + len(data) > MAX_FILE_BYTES:
        return None
    return FileChunk(fid.hex(), offset, data)


def open_sealed(
    keys: Keys, partner: str, sec: PathSec, path: PathId, frame: Sealed, out: list[Effect]
) -> Frame | None:
    """The frame inside ``frame``, or None (dropped, and said why)."""
    if sec.session is None:
        # The partner holds a session we lost (we restarted): agree on a new one.
        start(keys, partner, sec, path, out)
        return None
    try:
        inner = frame_from_bytes(sec.session.open(frame.data))
    except (TamperedFrame, ReplayedFrame) as e:
        out.append(Show(System(f"Dropped a message from {partner}: {e}", "warning", partner)))
        return None
    except RemoteProtocolError as e:
        out.append(
            Show(System(f"Dropped a malformed message from {partner}: {e}", "warning", partner))
        )
        return None
    if isinstance(inner, Sealed | KeyInit | KeyReply | KeyConfirm):
        return None
    return inner


def on_handshake(
    keys: Keys,
    partner: str,
    sec: PathSec,
    path: PathId,
    frame: KeyInit | KeyReply | KeyConfirm,
    out: list[Effect],
) -> Outcome:
    """One key-exchange frame; "secured" once the path has a verified session,
    "refused" when the partner's key is not accepted (a link must close)."""
    try:
        match frame:
            case KeyInit():
                mine = sec.hs
                if mine is not None and mine.initiator and keys.me.lower() < partner.lower():
                    return None  # glare: our exchange wins, theirs is dropped
                sec.hs = Handshake(keys.identity, keys.me, partner, initiator=False)
                out.append(raw(partner, sec.hs.on_init(frame), path))
            case KeyReply():
                hs = sec.hs
                if hs is None or not hs.initiator or frame.sid != hs.sid:
                    return None
                if not _trust(keys, partner, hs.on_reply(frame), out):
                    sec.hs = None
                    return "refused"
                confirm, session = hs.confirm()
                out.append(raw(partner, confirm, path))
                sec.hs, sec.session = None, session
                return "secured"
            case KeyConfirm():
                hs = sec.hs
                if hs is None or hs.initiator or frame.sid != hs.sid:
                    return None
                if not _trust(keys, partner, hs.on_confirm(frame), out):
                    sec.hs = None
                    return "refused"
                sec.hs, sec.session = None, hs.finish()
                return "secured"
    except BadHandshake as e:
        sec.hs = None
        out.append(Show(System(f"Key exchange with {partner} failed: {e}", "error", partner)))
        return "refused"
    return None


def _trust(keys: Keys, name: str, presented: bytes, out: list[Effect]) -> bool:
    verdict = judge(name, presented, keys.pins.get(name), keys.vouched.get(name.lower()))
    match verdict.verdict:
        case "trusted":
            return True
        case "first-use":
            keys.pins.pin(name, presented)
            out.append(
                Show(
                    System(
                        f"{verdict.reason}; compare safety numbers with ::whois {name}",
                        about=name,
                    )
                )
            )
            return True
        case "changed":
            keys.blocked[name.lower()] = presented
            out.append(
                Show(
                    System(
                        f"WARNING: {verdict.reason}. Nothing is sent to or shown from {name} "
                        f"until you check: compare safety numbers with ::whois {name} (by "
                        f"phone, in person), then type ::trust {name}",
                        "error",
                        name,
                    )
                )
            )
        case _:
            out.append(Show(System(f"WARNING: {verdict.reason}. Refused.", "error", name)))
    return False


def describe(keys: Keys, name: str, known: bool = True) -> list[str]:
    """``::whois NAME``; ``known``: NAME is among the users this peer heard of."""
    mine = bytes(keys.identity.verify_key)
    vouched = keys.vouched.get(name.lower())
    pinned = keys.pins.get(name)
    lines = [f"you: {fingerprint(mine)}"]
    if vouched is None and pinned is None:
        if not known:
            return [*lines, f"{name}: no user named {name} in the users list (::users)"]
        return [*lines, f"{name}: no key known yet (connect: {name} first)"]
    if vouched is not None:
        lines.append(f"{name} (as the rendezvous vouches): {fingerprint(vouched)}")
    if pinned is not None:
        state = "pinned" if pinned == vouched or vouched is None else "pinned, DIFFERENT"
        lines.append(f"{name} ({state}): {fingerprint(pinned)}")
    theirs = pinned or vouched
    assert theirs is not None
    lines.append(
        f"safety number with {name}: {safety_number(mine, theirs)} — the same "
        f"on both screens means nobody sits in between"
    )
    return lines
