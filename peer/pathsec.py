"""Running the key exchange on each path and judging what the partner presents.

Every path to a partner — each direct link, and the relay — has a
:class:`PathSec`: the handshake in flight and, once it verified, the
:class:`~chathack.secure.SecureSession` that seals and opens its frames.
Chat, ack and goodbye frames travel only sealed; a direct link is adopted
only after its own exchange verified the partner's identity key.

Who starts: on a direct link the side that dialled (for a punched link, the
smaller name); on the relay, whoever needs it first. When both start at once
("glare"), the smaller name's exchange wins and the other side answers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from chathack.errors import RemoteProtocolError
from chathack.link import Frame, Sealed, frame_from_bytes, frame_to_bytes
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
from peer.events import System
from peer.identity import fingerprint, judge

if TYPE_CHECKING:
    from peer import direct
    from peer.node import PeerNode


@dataclass(eq=False)
class PathSec:
    """Security state of one path with one partner."""

    hs: Handshake | None = None
    session: SecureSession | None = None

    def reset(self) -> None:
        self.hs, self.session = None, None


def link_initiator(node: PeerNode, link: direct.DirectLink) -> bool:
    if link.dialer:
        return link.dialer.lower() == node.me.lower()
    return node.me.lower() < link.partner.lower()


def start(node: PeerNode, partner: str, sec: PathSec, link: direct.DirectLink | None) -> None:
    """Begin a key exchange on this path unless one is running or done."""
    if sec.session is not None or sec.hs is not None or partner.lower() in node.blocked:
        return
    sec.hs = Handshake(node.identity, node.me, partner, initiator=True)
    node.send_raw(partner, sec.hs.start(), link)


def seal(sec: PathSec, frame: Frame) -> Sealed | None:
    """``frame`` sealed for this path, or None when the path has no session yet."""
    if sec.session is None:
        return None
    return Sealed(sec.session.seal(frame_to_bytes(frame)))


def open_sealed(
    node: PeerNode, partner: str, sec: PathSec, link: direct.DirectLink | None, frame: Sealed
) -> Frame | None:
    """The frame inside ``frame``, or None (dropped, and said why)."""
    if sec.session is None:
        # The partner holds a session we lost (we restarted): agree on a new one.
        start(node, partner, sec, link)
        return None
    try:
        inner = frame_from_bytes(sec.session.open(frame.data))
    except (TamperedFrame, ReplayedFrame) as e:
        node.emit(System(f"Dropped a message from {partner}: {e}", "warning"))
        return None
    except RemoteProtocolError as e:
        node.emit(System(f"Dropped a malformed message from {partner}: {e}", "warning"))
        return None
    if isinstance(inner, Sealed | KeyInit | KeyReply | KeyConfirm):
        return None
    return inner


def on_handshake(
    node: PeerNode,
    partner: str,
    sec: PathSec,
    link: direct.DirectLink | None,
    frame: KeyInit | KeyReply | KeyConfirm,
) -> None:
    try:
        match frame:
            case KeyInit():
                mine = sec.hs
                if mine is not None and mine.initiator and node.me.lower() < partner.lower():
                    return  # glare: our exchange wins, theirs is dropped
                sec.hs = Handshake(node.identity, node.me, partner, initiator=False)
                node.send_raw(partner, sec.hs.on_init(frame), link)
            case KeyReply():
                hs = sec.hs
                if hs is None or not hs.initiator or frame.sid != hs.sid:
                    return
                presented = hs.on_reply(frame)
                if not _trust(node, partner, link, presented):
                    sec.hs = None
                    return
                confirm, session = hs.confirm()
                node.send_raw(partner, confirm, link)
                _secured(node, partner, sec, link, session)
            case KeyConfirm():
                hs = sec.hs
                if hs is None or hs.initiator or frame.sid != hs.sid:
                    return
                presented = hs.on_confirm(frame)
                if not _trust(node, partner, link, presented):
                    sec.hs = None
                    return
                _secured(node, partner, sec, link, hs.finish())
    except BadHandshake as e:
        sec.hs = None
        node.emit(System(f"Key exchange with {partner} failed: {e}", "error"))
        if link is not None:
            link.writer.finish()


def _trust(node: PeerNode, name: str, link: direct.DirectLink | None, presented: bytes) -> bool:
    verdict = judge(name, presented, node.pins.get(name), node.vouched.get(name.lower()))
    match verdict.verdict:
        case "trusted":
            return True
        case "first-use":
            node.pins.pin(name, presented)
            node.emit(System(f"{verdict.reason}; compare safety numbers with ::whois {name}"))
            return True
        case "changed":
            node.blocked[name.lower()] = presented
            node.emit(
                System(
                    f"WARNING: {verdict.reason}. Nothing is sent to or shown from {name} until "
                    f"you check: compare safety numbers with ::whois {name} (by phone, in person), "
                    f"then type ::trust {name}",
                    "error",
                )
            )
        case _:
            node.emit(System(f"WARNING: {verdict.reason}. Refused.", "error"))
    if link is not None:
        link.writer.finish()  # an unverified direct link is closed at once
    return False


def _secured(
    node: PeerNode,
    partner: str,
    sec: PathSec,
    link: direct.DirectLink | None,
    session: SecureSession,
) -> None:
    sec.hs, sec.session = None, session
    if link is not None:
        node.link_verified(link)
    else:
        node.relay_verified(partner)


def describe(node: PeerNode, name: str) -> list[str]:
    """``::whois NAME``."""
    mine = bytes(node.identity.verify_key)
    vouched = node.vouched.get(name.lower())
    pinned = node.pins.get(name)
    lines = [f"you: {fingerprint(mine)}"]
    if vouched is None and pinned is None:
        return [*lines, f"{name}: no key known yet (connect: {name} first)"]
    if vouched is not None:
        lines.append(f"{name} (as the rendezvous vouches): {fingerprint(vouched)}")
    if pinned is not None:
        state = "pinned" if pinned == vouched or vouched is None else "pinned, DIFFERENT"
        lines.append(f"{name} ({state}): {fingerprint(pinned)}")
    from peer.identity import safety_number

    theirs = pinned or vouched
    assert theirs is not None
    lines.append(
        f"safety number with {name}: {safety_number(mine, theirs)} — the same "
        f"on both screens means nobody sits in between"
    )
    return lines
