"""Harnesses for the peer-to-peer link (:mod:`chathack.link`) and its
security (:mod:`chathack.secure`).

Keys are fixed, never random: a crash must reproduce from its input bytes
alone. The only randomness left is the nonce :meth:`SecureSession.seal`
draws, which changes bytes on the wire but no decision.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from nacl import bindings
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from chathack.delivery import Conversation
from chathack.errors import LocalProtocolError, RemoteProtocolError
from chathack.file_frames import (
    FID_RE,
    MAX_FILE_BYTES,
    SHA256_RE,
    FileAccept,
    FileAck,
    FileCancel,
    FileDone,
    FileOffer,
)
from chathack.link import (
    MAX_OUT_OF_ORDER,
    RELAY_PREFIX,
    VIAS,
    Ack,
    Bye,
    Chat,
    Frame,
    FrameDecoder,
    Hello,
    Ping,
    Pong,
    Sealed,
    SealedChunk,
    _reference_frame_to_bytes,
    encode_frame,
    frame_from_bytes,
    frame_to_bytes,
    frame_to_relay_text,
    relay_text_to_frame,
)
from chathack.protocol import NAME_RE, check_text
from chathack.secure import (
    NONCE_BYTES,
    REPLAY_WINDOW,
    BadHandshake,
    Handshake,
    KeyConfirm,
    KeyInit,
    KeyReply,
    ReplayedFrame,
    SecureSession,
    TamperedFrame,
    b64,
)
from tests.fuzz.contract import Cursor, check_error

F = TypeVar("F")
R = TypeVar("R")
FRAMES = (Hello, Chat, Ack, Bye, Ping, Pong, KeyInit, KeyReply, KeyConfirm, Sealed)
FRAMES += (FileOffer, FileAccept, FileAck, FileDone, FileCancel, SealedChunk)
#: Most operations one input drives (a bound on every harness loop).
MAX_STEPS = 64


# --------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------


def link_frame(data: bytes) -> None:
    """The input as one frame body, as a direct stream, and as relay text.

    Contract: decoding returns a frame or raises :class:`RemoteProtocolError`
    (a direct stream is then closed). A decoded frame satisfies the rules
    the receiver relies on (chat sequence numbers, text without control
    characters, valid names in a hello), every string in it is text that can
    be encoded again (the peer stores and shows them), and encoding it gives
    the reference bytes, which decode to the same frame, by both encodings.
    How a stream is cut into reads never changes the frames it carries.
    """
    check_frame_bytes(data)
    whole = _stream_frames([data])
    pieces = _stream_frames([data[i : i + 7] for i in range(0, len(data), 7)])
    assert pieces == whole, "a direct stream's frames depend on how it was cut"
    text = data.decode("utf-8", "replace")
    try:
        frame = relay_text_to_frame(text if text.startswith(RELAY_PREFIX) else RELAY_PREFIX + text)
    except RemoteProtocolError as e:
        check_error(e)
    else:
        check_frame(frame)


def _stream_frames(reads: list[bytes]) -> list[bytes | str]:
    """The frames (as bytes) a direct stream carries, and how it ended."""
    decoder = FrameDecoder()
    out: list[bytes | str] = []
    for data in reads:
        decoder.receive_data(data)
        # Each frame consumes at least its 4-byte length: this bounds the loop.
        for _ in range(len(data) // 4 + 2):
            try:
                frame = decoder.next_frame()
            except RemoteProtocolError as e:
                check_error(e)
                return [*out, "error"]  # fatal for a stream
            if frame is None:
                break
            out.append(check_frame(frame))
    return out


def check_frame_bytes(body: bytes) -> Frame | None:
    """Decode ``body`` as the peer does; check the frame if it is one."""
    try:
        frame = frame_from_bytes(body)
    except RemoteProtocolError as e:
        check_error(e)
        return None
    check_frame(frame)
    return frame


def check_frame(frame: Frame) -> bytes:
    """The invariants of a decoded frame; returns its bytes."""
    assert isinstance(frame, FRAMES), f"not a frame: {frame!r}"
    match frame:
        case Chat(_, seq, base, text, _):
            assert seq >= 1 and 1 <= base <= seq, f"bad sequence numbers passed: {frame!r}"
            check_text(text)  # raises if a control character got through
        case Hello(name, to, _, _, via):
            assert NAME_RE.fullmatch(name) and NAME_RE.fullmatch(to), f"bad names: {frame!r}"
            assert via in VIAS, f"bad via: {frame!r}"
        case FileOffer(fid, name, size, sha, kind, relay):
            assert FID_RE.fullmatch(fid) and SHA256_RE.fullmatch(sha), f"bad offer: {frame!r}"
            assert 0 <= size <= MAX_FILE_BYTES and 0 < len(name) <= 1024 and len(kind) <= 128
            assert type(relay) is bool and type(size) is int
        case FileAccept(fid, have, _) | FileAck(fid, have):
            assert FID_RE.fullmatch(fid) and type(have) is int and 0 <= have <= MAX_FILE_BYTES
        case FileDone(fid, ok, reason):
            assert FID_RE.fullmatch(fid) and type(ok) is bool and len(reason) <= 512
        case FileCancel(fid, reason):
            assert FID_RE.fullmatch(fid) and len(reason) <= 512
    raw = frame_to_bytes(frame)  # raises UnicodeEncodeError on a lone surrogate
    if not isinstance(frame, Sealed | SealedChunk):
        assert raw == _reference_frame_to_bytes(frame), "fast encoder differs from the reference"
    again = frame_from_bytes(raw)
    assert type(again) is type(frame) and frame_to_bytes(again) == raw, (
        f"frame round trip changed {frame!r} into {again!r}"
    )
    relayed = relay_text_to_frame(frame_to_relay_text(frame))
    assert frame_to_bytes(relayed) == raw, "relay round trip changed a frame"
    try:
        wire = encode_frame(frame)
    except LocalProtocolError:
        return raw  # over MAX_FRAME_BYTES: our own limit on sending, not a bug
    decoder = FrameDecoder()
    decoder.receive_data(wire)
    streamed = decoder.next_frame()
    assert streamed is not None and frame_to_bytes(streamed) == raw
    assert decoder.pending_bytes == 0
    return raw


# --------------------------------------------------------------------------
# Delivery: sequencing, acknowledgement, de-duplication
# --------------------------------------------------------------------------


def conversation(data: bytes) -> None:
    """The delivery state machine, under a hostile network or a hostile partner.

    First byte even -- model check: alice sends to bob through a channel the
    fuzzer drops, duplicates and reorders, with path changes (re-sends).
    Contract: bob shows alice's messages in order, each once; once the path
    works again, everything arrives and alice holds nothing unacknowledged.

    First byte odd -- bob gets any frames a partner could send (sequence
    numbers as :func:`frame_from_bytes` lets them through, two epochs) and
    alice any acks. Contract: nothing raises; what is shown is consecutive
    and ends at the acknowledged seq; the early buffer stays bounded; an ack
    only ever releases frames it covers.
    """
    cur = Cursor(data)
    if cur.byte() % 2 == 0:
        _lossy_channel(cur)
    else:
        _hostile_partner(cur)


def _lossy_channel(cur: Cursor) -> None:
    alice = Conversation("alice", "bob", "epoch-a")
    bob = Conversation("bob", "alice", "epoch-b")
    chats: list[Chat] = []  # alice -> bob, in flight
    acks: list[Ack] = []  # bob -> alice, in flight
    sent: list[str] = []
    shown: list[str] = []

    def to_bob(chat: Chat) -> None:
        got = bob.receive_chat(chat)
        shown.extend(c.text for c in got.deliver)
        assert shown == sent[: len(shown)], f"bob showed {shown!r} of {sent!r}"
        acks.append(got.ack)

    for _ in range(MAX_STEPS):
        if not cur.left():
            break
        match cur.below(6):
            case 0:
                text = f"message {len(sent) + 1}"
                chats.append(alice.send_text(text, float(len(sent))))
                sent.append(text)
            case 1 if chats:  # deliver one; keeping it in flight makes a duplicate later
                i = cur.below(len(chats))
                chat = chats[i] if cur.flag() else chats.pop(i)
                to_bob(chat)
            case 2 if chats:
                chats.pop(cur.below(len(chats)))  # lost
            case 3 if acks:
                ack = acks.pop(cur.below(len(acks)))
                done = alice.receive_ack(ack)
                assert all(c.seq <= ack.seq for c in done)
            case 4:
                chats.extend(alice.to_resend())  # a path change
            case 5 if acks:
                acks.pop(cur.below(len(acks)))  # an ack lost
    # The path works again: re-send until done (each round trip must progress).
    for _ in range(3):
        for chat in alice.to_resend():
            to_bob(chat)
        for ack in acks:
            alice.receive_ack(ack)
        acks.clear()
    assert shown == sent, f"bob showed {shown!r}, alice sent {sent!r}"
    assert not alice.unacked, f"still unacknowledged: {sorted(alice.unacked)}"


def _hostile_partner(cur: Cursor) -> None:
    bob = Conversation("bob", "mallory", "epoch-b")
    alice = Conversation("alice", "mallory", "epoch-a")
    for i in range(3):
        alice.send_text(f"message {i}")
    for _ in range(MAX_STEPS):
        if not cur.left():
            break
        if cur.flag():
            seq = 1 + cur.uint(cur.pick((1, 2, 8)))
            chat = Chat(cur.pick(("e1", "e2")), seq, 1 + cur.uint(2) % seq, "hello")
            epoch_before, delivered_before = bob.peer_epoch, bob.delivered
            got = bob.receive_chat(chat)
            seqs = [c.seq for c in got.deliver]
            assert seqs == list(range(bob.delivered - len(seqs) + 1, bob.delivered + 1)), (
                f"shown out of order: {seqs} (delivered {bob.delivered})"
            )
            if chat.epoch == epoch_before:
                assert not seqs or seqs[0] > delivered_before, "a frame shown twice"
            assert got.ack == Ack(chat.epoch, bob.delivered)
            assert len(bob.early) <= MAX_OUT_OF_ORDER
        else:
            ack = Ack(cur.pick(("epoch-a", "e1")), cur.uint(2) - 1000)
            before = set(alice.unacked)
            done = alice.receive_ack(ack)
            assert all(c.seq <= ack.seq for c in done)
            assert set(alice.unacked) == before - {c.seq for c in done}


# --------------------------------------------------------------------------
# The key exchange and sealed frames
# --------------------------------------------------------------------------

ALICE_ID = SigningKey(bytes(range(32)))
BOB_ID = SigningKey(bytes(range(32, 64)))
SID = "5eed5eed5eed5eed"


def _side(initiator: bool) -> Handshake:
    if initiator:
        hs = Handshake(ALICE_ID, "alice", "bob", True, sid=SID)
        hs._eph = PrivateKey(bytes(range(64, 96)))  # fixed, so an input always replays alike
    else:
        hs = Handshake(BOB_ID, "bob", "alice", False)
        hs._eph = PrivateKey(bytes(range(96, 128)))
    return hs


def handshake(data: bytes) -> None:
    """The SIGMA exchange with the fuzzer in the middle of every message.

    Each message goes through the wire encoding and is then passed as it is,
    has one field replaced or one byte of a key or signature flipped, or is
    replaced by any frame (decoded from fuzzer bytes, as a peer decodes it).
    Messages are dispatched as :mod:`peer.core.security` does (wrong type or sid:
    ignored). Afterwards more hostile frames reach both finished sides.

    Contract: the ``on_*`` steps return or raise :class:`BadHandshake`, never
    anything else; a side that accepts a step was shown the other side's
    real identity key (a forged or altered message never verifies); and two
    finished sides share working keys.
    """
    cur = Cursor(data)
    alice, bob = _side(True), _side(False)
    session_a = session_b = None
    reply = confirm = None

    init = _tamper(cur, alice.start())
    if isinstance(init, KeyInit):
        reply = _step(bob.on_init, init)
    if isinstance(reply, KeyReply):
        reply = _tamper(cur, reply)
    if isinstance(reply, KeyReply) and reply.sid == alice.sid:
        presented = _step(alice.on_reply, reply)
        if presented is not None:
            assert presented == bytes(BOB_ID.verify_key), "alice accepted a forged reply"
            confirm, session_a = alice.confirm()
    if confirm is not None:
        confirm = _tamper(cur, confirm)
    if isinstance(confirm, KeyConfirm) and confirm.sid == bob.sid:
        presented = _step(bob.on_confirm, confirm)
        if presented is not None:
            assert presented == bytes(ALICE_ID.verify_key), "bob accepted a forged confirmation"
            session_b = bob.finish()
    if session_a is not None and session_b is not None:
        assert session_b.open(session_a.seal(b"ping")) == b"ping"
        assert session_a.open(session_b.seal(b"pong")) == b"pong"
    # Whatever else arrives (a replay, a late or forged message) is refused.
    for _ in range(4):
        if not cur.left():
            break
        frame = check_frame_bytes(cur.chunk())
        for side in (alice, bob):
            match frame:
                case KeyInit():
                    _step(side.on_init, frame)
                case KeyReply():
                    _step(side.on_reply, frame)
                case KeyConfirm():
                    _step(side.on_confirm, frame)


def _step(step: Callable[[F], R], frame: F) -> R | None:
    """``step(frame)``, or None when it raised BadHandshake (the only error allowed)."""
    try:
        return step(frame)
    except BadHandshake as e:
        check_error(e)
        return None


def _tamper(cur: Cursor, frame: Frame) -> Frame | None:
    """``frame`` after the wire and the fuzzer (None: not decodable)."""
    match cur.below(4):
        case 0:
            pass
        case 1:
            fields = frame.__slots__  # type: ignore[union-attr]
            frame = replace(frame, **{cur.pick(fields): cur.text()})  # type: ignore[type-var]
        case 2:
            fields = [f for f in frame.__slots__ if f != "sid"]  # type: ignore[union-attr]
            name = cur.pick(fields)
            raw = bytearray(base64.b64decode(getattr(frame, name)))
            if raw:
                raw[cur.below(len(raw))] ^= 1 + cur.below(255)
            frame = replace(frame, **{name: b64(bytes(raw))})  # type: ignore[type-var]
        case _:
            return check_frame_bytes(cur.chunk())
    return check_frame_bytes(frame_to_bytes(frame))


@functools.cache
def _keys() -> tuple[bytes, bytes]:
    """The two directions' keys of one honest exchange (computed once)."""
    alice, bob = _side(True), _side(False)
    reply = bob.on_init(alice.start())
    alice.on_reply(reply)
    confirm, session_a = alice.confirm()
    bob.on_confirm(confirm)
    session_b = bob.finish()
    assert session_a.tx == session_b.rx
    return session_a.tx, session_a.rx


def sealed(data: bytes) -> None:
    """Sealed frames to the receiving side of a path, after a real exchange.

    Operations: seal and deliver, replay, flip one byte, hostile bytes, and
    a frame sealed with the path's key under any counter (what a partner, or
    a bug in one, could send). Contract: ``open`` returns the plaintext or
    raises :class:`TamperedFrame` / :class:`ReplayedFrame`; it accepts
    exactly the counters a model of the replay window accepts, never an
    altered frame; what it opens decodes as a frame or raises
    :class:`RemoteProtocolError`, as :mod:`peer.core.security` decodes it.
    """
    tx, rx = _keys()
    sender = SecureSession(SID, bytes(BOB_ID.verify_key), tx, rx)
    receiver = SecureSession(SID, bytes(ALICE_ID.verify_key), rx, tx)
    cur = Cursor(data)
    seen: set[int] = set()
    highest = 0
    boxes: list[bytes] = []

    def deliver(box: bytes, counter: int | None, plain: bytes) -> None:
        nonlocal highest
        fresh = counter is not None and counter not in seen and counter > highest - REPLAY_WINDOW
        try:
            opened = receiver.open(box)
        except ReplayedFrame:
            assert counter is not None and not fresh, f"counter {counter} refused as a replay"
            return
        except TamperedFrame:
            assert counter is None, "an intact frame failed authentication"
            return
        assert fresh, f"accepted a frame it must refuse (counter {counter})"
        assert opened == plain
        assert counter is not None
        seen.add(counter)
        highest = max(highest, counter)
        check_frame_bytes(opened)

    for _ in range(MAX_STEPS):
        if not cur.left():
            break
        match cur.below(5):
            case 0:
                plain = cur.chunk()
                box = sender.seal(plain)
                boxes.append(box)
                deliver(box, sender.sent, plain)
            case 1 if boxes:
                box = boxes[cur.below(len(boxes))]
                counter = int.from_bytes(_open_raw(box, tx)[:8], "big")
                deliver(box, counter, _open_raw(box, tx)[8:])
            case 2 if boxes:
                box = bytearray(boxes[cur.below(len(boxes))])
                box[cur.below(len(box))] ^= 1 + cur.below(255)
                deliver(bytes(box), None, b"")
            case 3:
                deliver(cur.chunk(), None, b"")
            case 4:
                counter, plain = cur.uint(8), cur.chunk()
                nonce = cur.uint(NONCE_BYTES).to_bytes(NONCE_BYTES, "big")
                box = nonce + bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
                    counter.to_bytes(8, "big") + plain, SID.encode(), nonce, tx
                )
                deliver(box, counter, plain)


def _open_raw(box: bytes, key: bytes) -> bytes:
    return bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        box[NONCE_BYTES:], SID.encode(), box[:NONCE_BYTES], key
    )


def file_chunks(data: bytes) -> None:
    """Sealed file chunks to the receiving side of a path, after a real exchange.

    Operations: seal and deliver a chunk (any transfer id, offset, data),
    flip one byte of one sealed earlier, replay one, hostile bytes. Contract:
    ``open_chunk`` returns exactly the id, offset and data that were sealed,
    or raises :class:`TamperedFrame` (the only error) for anything altered
    or forged; a replay opens to the very same chunk (the receiver takes
    only the offset it needs next, so a replay changes nothing).
    """
    tx, rx = _keys()
    sender = SecureSession(SID, bytes(BOB_ID.verify_key), tx, rx)
    receiver = SecureSession(SID, bytes(ALICE_ID.verify_key), rx, tx)
    cur = Cursor(data)
    sealed_chunks: list[tuple[bytes, tuple[bytes, int, bytes]]] = []
    for _ in range(MAX_STEPS):
        if not cur.left():
            break
        match cur.below(4):
            case 0:
                chunk = (cur.uint(8).to_bytes(8, "big"), cur.uint(8), cur.chunk())
                box = bytes(sender.seal_chunk(*chunk, tag=b"\x02"))
                sealed_chunks.append((box, chunk))
                assert receiver.open_chunk(box, 1) == chunk
            case 1 if sealed_chunks:
                box, chunk = cur.pick(sealed_chunks)
                assert receiver.open_chunk(box, 1) == chunk
            case 2 if sealed_chunks:
                box = bytearray(cur.pick(sealed_chunks)[0])
                box[1 + cur.below(len(box) - 1)] ^= 1 + cur.below(255)
                try:
                    receiver.open_chunk(bytes(box), 1)
                except TamperedFrame:
                    continue
                raise AssertionError("an altered chunk opened")
            case _:
                try:
                    receiver.open_chunk(cur.block(), cur.below(2))
                except TamperedFrame:
                    continue
                raise AssertionError("bytes nobody sealed opened as a chunk")
