"""Harnesses for the peer's handling of what the rendezvous sends: server
lines, relayed frames, and offline mail (:mod:`peer.core`: the state, the
mailroom, the key exchanges, the candidates), down to what the terminal shows.

The peer here is its sans-IO core alone, a :class:`PeerState` named ``me``
with a fixed identity and its pins and history in memory: each input is one
synchronous :meth:`PeerState.handle` call at a fixed time, and its effects
are collected (lines for the server, UI events to render). Nothing runs, so
nothing waits, and an input always replays alike.
"""

from __future__ import annotations

import contextlib
import io
import json

from nacl.public import PrivateKey
from nacl.signing import SigningKey
from rich.console import Console

from chathack.errors import RemoteProtocolError
from chathack.link import (
    Chat,
    Frame,
    Sealed,
    frame_to_bytes,
    frame_to_relay_text,
    relay_text_to_frame,
)
from chathack.prekeys import seal_mail_fs
from chathack.protocol import (
    Msg,
    ServerLine,
    UserLine,
    format_client_event,
    parse_client_line,
    parse_server_line,
)
from chathack.secure import Handshake, KeyReply, SecureSession, seal_mail
from chathack.server_events import parse_server_event
from chathack.text import is_safe
from peer.core import records as rec
from peer.core.state import PeerState
from peer.events import Incoming, ServerNotice, UIEvent
from peer.history import History
from peer.identity import Pins
from peer.plain import plain_line
from peer.render import THEME, render_event
from tests.fuzz.contract import Cursor, check_wire_line, lines_of
from tests.fuzz.link_harnesses import MAX_STEPS, check_frame, check_frame_bytes

ME_ID = SigningKey(bytes(range(128, 160)))
BOB_ID = SigningKey(bytes(range(160, 192)))
MALLORY_ID = SigningKey(bytes(range(192, 224)))
MAIL_FLAGS = ("MAIL", "STORED", "DELIVERED", "READ", "EXPIRED", "REFUSED")


class _Peer:
    """The peer's core, named ``me``, and what it sent and showed."""

    def __init__(self) -> None:
        self.state = PeerState("me", ME_ID, Pins(None), History(None), epoch="e0", wall=lambda: 1.0)
        self.sent: list[bytes] = []
        self.shown: list[UIEvent] = []
        self.feed(rec.ServerState("online"))

    def feed(self, event: rec.Input) -> None:
        self._do(self.state.handle(event, 0.0))

    def _do(self, effects: list[rec.Effect]) -> None:
        for effect in effects:
            match effect:
                case rec.ToServer(event):
                    self.sent.append(format_client_event(event))
                case rec.Show(ui_event):
                    self.shown.append(ui_event)
                case rec.Fault(_, error, _):
                    # The core contains what a bug raises so that it costs one
                    # line, not the session; contained or not, it is a bug.
                    raise error

    def from_server(self, line: ServerLine | UserLine) -> None:
        self.feed(rec.FromServer(line))

    def relay_from(self, origin: str, text: str) -> None:
        """A relayed line from ``origin``, as the session reader hands it on."""
        self.from_server(parse_server_line(f"{origin}: {text}"))

    def frames_to(self, name: str) -> list[Frame]:
        """The frames the peer relayed to ``name`` so far (taken)."""
        frames = []
        for wire in self.sent:
            event = parse_client_line(check_wire_line(wire))
            if isinstance(event, Msg) and event.to == name:
                frames.append(relay_text_to_frame(event.text))
        self.sent.clear()
        return frames

    def check(self) -> None:
        """The peer's output: valid client lines, and a screen nobody can drive."""
        self.feed(rec.FlushMail())
        for wire in self.sent:
            parse_client_line(check_wire_line(wire))  # our own lines always parse
        for event in self.shown:
            check_ui(event)


def check_ui(event: UIEvent) -> None:
    """What a UI event prints, in plain mode and on a terminal, holds no
    control or format character of anybody else's (styling aside)."""
    line = plain_line(event)
    if line is not None:
        assert is_safe(line), f"plain mode prints an unsafe line: {line[:80]!r}"
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None, theme=THEME)
    renderable = render_event(event, "me")
    if renderable is not None:
        console.print(renderable)
    for shown in out.getvalue().split("\n"):
        assert is_safe(shown), f"the terminal shows an unsafe line: {shown[:80]!r}"


def peer_server_events(data: bytes) -> None:
    """Bytes from the rendezvous, through the peer's reader, to its screen.

    Lines are framed and parsed as :class:`peer.transport.LineReader` does
    (bad ones skipped), looked at as :class:`peer.server_link.ServerLink`
    does (its own endpoint and resume token), then handed to
    :meth:`PeerState.handle`: USERS, PEER, CALL, PUNCH, END, GONE, mail,
    notices, and relayed frames (handshakes, sealed frames, hellos) from users.

    Contract: nothing raises, and the core reports no :class:`Fault` (it
    contains what a bug raises, but that is still a bug); what the peer
    sends back is valid client lines; what it shows is safe.
    """
    peer = _Peer()
    for item in lines_of(data):
        if isinstance(item, RemoteProtocolError):
            continue
        try:
            event = parse_server_line(item)
        except RemoteProtocolError:
            continue
        if isinstance(event, ServerLine) and event.flag in ("SEEN", "TOKEN"):
            with contextlib.suppress(RemoteProtocolError):  # as ServerLink._learn
                parse_server_event(event)
        peer.from_server(event)
    peer.check()


def mail_payload(data: bytes) -> None:
    """Offline mail as the peer receives it (:class:`peer.core.mailroom.Mailroom`).

    The first byte picks the mode: a mailbox line (MAIL, STORED, receipts,
    REFUSED) with any text; a sealed MAIL whose plaintext is any bytes; or a
    sealed MAIL whose header fields (from, to, id, text, time) are each
    honest or hostile; sealed with the peer's prekeys or (as older peers
    did) to its identity key alone. Sealed mail comes from bob or from mallory claiming
    to be bob, while the peer knows bob's key (pinned or vouched), a wrong
    key, or nothing. Each line is delivered twice (a redelivery after a
    crash).

    Contract: nothing raises and no :class:`Fault`; no mailbox line reaches
    the screen raw (as an unknown notice); a mail is shown at most once;
    what is shown as bob's came sealed by bob's key whenever that key is
    known; acknowledgements sent are valid lines.
    """
    cur = Cursor(data)
    peer = _Peer()
    keys = peer.state.keys
    mode = cur.below(3)
    trust = cur.below(4)
    bob_key = bytes(BOB_ID.verify_key)
    if trust == 1:
        keys.vouched["bob"] = bob_key
    elif trust == 2:
        keys.pins.pin("bob", bob_key)
    elif trust == 3:
        keys.vouched["bob"] = bytes(MALLORY_ID.verify_key)
    if mode == 0:
        line = ServerLine(cur.pick(MAIL_FLAGS), cur.rest().decode("utf-8", "replace"))
        sender = None
    else:
        sender = cur.pick((BOB_ID, MALLORY_ID))
        origin, msg_id = cur.pick(("bob", "Bob", "mallory")), cur.pick(("m1", "e-m2"))
        stamp = cur.uint(cur.pick((1, 4, 8, 16)))
        if mode == 1:
            inner = cur.rest()
        else:
            header: dict[str, object] = {"f": origin, "t": "me", "i": msg_id, "x": "hi", "a": 1.0}
            for field in header:
                if cur.flag():
                    header[field] = _hostile_value(cur)
            inner = json.dumps(header).encode()
        me = bytes(ME_ID.verify_key)
        if cur.flag():  # sealed with the peer's prekeys (one-time or not), as peers do now
            vault = peer.state.mail.vault
            one_time = vault.fresh_one_time(1, 0.0)[0] if cur.flag() else None
            sealed = seal_mail_fs(sender, me, vault.signed(0.0), one_time, inner)
        else:  # sealed to the identity key alone, as older peers did
            sealed = seal_mail(sender, me, inner)
        line = ServerLine("MAIL", f"{origin} {msg_id} {stamp} {sealed}")
    for _ in range(2):
        peer.from_server(line)
    raw = [e for e in peer.shown if isinstance(e, ServerNotice) and e.flag == line.flag]
    assert not raw, f"a mailbox line not handled: {line.flag}"
    incoming = [e for e in peer.shown if isinstance(e, Incoming)]
    assert len(incoming) <= 1, f"one mail shown {len(incoming)} times"
    if incoming and sender is not None and trust in (1, 2) and incoming[0].origin.lower() == "bob":
        assert sender is BOB_ID, "mail sealed by mallory shown as bob's"
    peer.check()


def _hostile_value(cur: Cursor) -> object:
    match cur.below(6):
        case 0:
            return cur.text()
        case 1:
            return cur.uint(8) - (1 << 63)
        case 2:
            return None
        case 3:
            return [cur.text()]
        case 4:
            return {"x": cur.text()}
        case _:
            return float(cur.uint(2)) / 7


def _secured_with_bob(peer: _Peer) -> SecureSession:
    """Run bob's key exchange with the peer over the relay; bob's session."""
    peer.state.keys.vouched["bob"] = bytes(BOB_ID.verify_key)
    bob = Handshake(BOB_ID, "bob", "me", True, sid="b0b0b0b0b0b0b0b0")
    bob._eph = PrivateKey(bytes(range(224, 256)))  # fixed: an input always replays alike
    peer.relay_from("bob", frame_to_relay_text(bob.start()))
    [reply] = peer.frames_to("bob")
    assert isinstance(reply, KeyReply)
    bob.on_reply(reply)
    confirm, session = bob.confirm()
    peer.relay_from("bob", frame_to_relay_text(confirm))
    assert peer.state.talks["bob"].relay_sec.session is not None, "the exchange did not finish"
    peer.shown.clear()
    return session


def partner_frames(data: bytes) -> None:
    """Sealed frames from a partner the peer has a verified session with.

    bob is hostile but authenticated (or buggy): he finishes a real key
    exchange with the peer over the relay, then sends, sealed with that
    session, any frame (decoded from fuzzer bytes), chats with any epoch,
    sequence numbers and text, replays of his earlier lines, and unsealed
    frames. This reaches what the fuzzer cannot forge: the peer's handling
    of the frames inside (delivery, the history, the screen).

    Contract: nothing raises and no :class:`Fault`; a replayed line shows
    no message (each is shown at most once); what the peer sends bob opens
    with his session and holds valid frames; what is shown is safe.
    """
    cur = Cursor(data)
    peer = _Peer()
    bob = _secured_with_bob(peer)
    lines: list[str] = []
    for _ in range(MAX_STEPS):
        if not cur.left():
            break
        step = cur.below(4)
        match step:
            case 0:
                frame = check_frame_bytes(cur.chunk())
                text = None if frame is None else _sealed_text(bob, frame)
            case 1:
                seq = 1 + cur.uint(cur.pick((1, 2, 8)))
                chat = Chat(cur.pick(("e1", "e2")), seq, 1 + cur.uint(2) % seq, cur.text(), 1.0)
                text = _sealed_text(bob, chat)
            case 2:
                text = lines[cur.below(len(lines))] if lines else None
            case _:
                frame = check_frame_bytes(cur.chunk())
                text = None if frame is None else frame_to_relay_text(frame)
        if text is not None:
            before = _messages(peer)
            lines.append(text)
            peer.relay_from("bob", text)
            if step == 2:
                assert _messages(peer) == before, "a replayed line shown as a new message"
    for frame in peer.frames_to("bob"):
        if isinstance(frame, Sealed):
            frame = check_frame_bytes(bob.open(frame.data))
        if frame is not None:
            check_frame(frame)
    peer.check()


def _messages(peer: _Peer) -> int:
    """How many messages the peer has shown so far."""
    return sum(isinstance(e, Incoming) for e in peer.shown)


def _sealed_text(session: SecureSession, frame: Frame) -> str:
    return frame_to_relay_text(Sealed(session.seal(frame_to_bytes(frame))))
