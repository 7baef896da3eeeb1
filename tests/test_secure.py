"""The end-to-end crypto core (sans-IO) and the identity store."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from chathack.link import Sealed, frame_from_bytes, frame_to_bytes
from chathack.secure import (
    BadHandshake,
    Handshake,
    KeyReply,
    ReplayedFrame,
    SecureSession,
    TamperedFrame,
)
from peer.identity import (
    IdentityError,
    Pins,
    fingerprint,
    judge,
    load_identity,
    safety_half,
    safety_number,
)

ALICE, BOB, MALLORY = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()


def run_handshake(
    i_key: SigningKey = ALICE, r_key: SigningKey = BOB
) -> tuple[SecureSession, SecureSession, bytes, bytes]:
    """alice initiates, bob responds; returns both sessions and the keys each saw."""
    i = Handshake(i_key, "alice", "bob", initiator=True)
    r = Handshake(r_key, "bob", "alice", initiator=False)
    reply = r.on_init(i.start())
    seen_by_alice = i.on_reply(reply)
    confirm, si = i.confirm()
    seen_by_bob = r.on_confirm(confirm)
    return si, r.finish(), seen_by_alice, seen_by_bob


def test_handshake_agrees_on_keys_and_shows_each_identity() -> None:
    si, sr, seen_by_alice, seen_by_bob = run_handshake()
    assert seen_by_alice == bytes(BOB.verify_key)
    assert seen_by_bob == bytes(ALICE.verify_key)
    assert si.tx == sr.rx and si.rx == sr.tx and si.tx != si.rx
    assert sr.open(si.seal(b"hello bob")) == b"hello bob"
    assert si.open(sr.seal(b"hello alice")) == b"hello alice"


def test_every_handshake_has_fresh_keys() -> None:
    a, _, _, _ = run_handshake()
    b, _, _, _ = run_handshake()
    assert a.tx != b.tx  # ephemeral keys: one session's keys say nothing of another's


def test_an_impostor_shows_its_own_key_not_bobs() -> None:
    _, _, seen_by_alice, _ = run_handshake(r_key=MALLORY)
    assert seen_by_alice == bytes(MALLORY.verify_key) != bytes(BOB.verify_key)


def test_a_reply_signed_for_another_transcript_is_rejected() -> None:
    i = Handshake(ALICE, "alice", "bob", initiator=True)
    i.start()
    other = Handshake(ALICE, "alice", "bob", initiator=True)
    stolen = Handshake(BOB, "bob", "alice", initiator=False).on_init(other.start())
    with pytest.raises(BadHandshake):
        i.on_reply(KeyReply(i.sid, stolen.e, stolen.id, stolen.sig))


def test_a_swapped_ephemeral_key_breaks_the_signature() -> None:
    i = Handshake(ALICE, "alice", "bob", initiator=True)
    reply = Handshake(BOB, "bob", "alice", initiator=False).on_init(i.start())
    forged_e = Handshake(MALLORY, "bob", "alice", initiator=False).on_init(i.start()).e
    with pytest.raises(BadHandshake):
        i.on_reply(KeyReply(reply.sid, forged_e, reply.id, reply.sig))


@given(st.binary(min_size=1, max_size=200), st.integers(min_value=0))
def test_any_altered_byte_is_detected(payload: bytes, where: int) -> None:
    si, sr, _, _ = run_handshake()
    sealed = bytearray(si.seal(payload))
    sealed[where % len(sealed)] ^= 0x01
    with pytest.raises(TamperedFrame):
        sr.open(bytes(sealed))


def test_replays_are_detected_but_reordering_is_fine() -> None:
    si, sr, _, _ = run_handshake()
    frames = [si.seal(f"m{i}".encode()) for i in range(5)]
    assert [sr.open(f) for f in reversed(frames)] == [f"m{i}".encode() for i in range(4, -1, -1)]
    with pytest.raises(ReplayedFrame):
        sr.open(frames[2])


def test_sealed_frames_round_trip_through_the_link_codec() -> None:
    si, sr, _, _ = run_handshake()
    frame = Sealed(si.seal(b"x"))
    back = frame_from_bytes(frame_to_bytes(frame))
    assert isinstance(back, Sealed) and sr.open(back.data) == b"x"


# --------------------------------------------------------------------------
# identity files and trust decisions
# --------------------------------------------------------------------------


def test_identity_is_created_once_with_private_permissions(tmp_path: Path) -> None:
    key = load_identity(tmp_path)
    path = tmp_path / "identity.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bytes(load_identity(tmp_path)) == bytes(key)


def test_identity_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_identity(tmp_path)
    os.chmod(tmp_path / "identity.key", 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_identity(tmp_path)


def test_pins_persist(tmp_path: Path) -> None:
    key = bytes(BOB.verify_key)
    Pins(tmp_path).pin("Bob", key)
    assert Pins(tmp_path).get("bob") == key
    assert Pins(None).get("bob") is None


def test_judgement_table() -> None:
    bob, mallory, new = bytes(BOB.verify_key), bytes(MALLORY.verify_key), bytes(ALICE.verify_key)
    assert judge("bob", bob, None, bob).verdict == "first-use"
    assert judge("bob", bob, None, None).verdict == "first-use"
    assert judge("bob", bob, bob, bob).verdict == "trusted"
    assert judge("bob", mallory, bob, bob).verdict == "impostor"
    assert judge("bob", mallory, None, bob).verdict == "impostor"
    assert judge("bob", mallory, bob, None).verdict == "impostor"
    assert judge("bob", new, bob, new).verdict == "changed"


def test_safety_number_is_the_same_on_both_sides_and_differs_per_pair() -> None:
    a, b, m = bytes(ALICE.verify_key), bytes(BOB.verify_key), bytes(MALLORY.verify_key)
    assert safety_number(a, b) == safety_number(b, a)
    assert safety_number(a, b) != safety_number(a, m)
    digits = safety_number(a, b).replace(" ", "")
    assert len(digits) == 60 and digits.isdigit()  # two halves of ~100 bits each
    # One side's half depends on one key only: a forger must match it whole.
    assert safety_half(a) in digits and safety_half(b) in digits
    assert safety_half(a) not in safety_number(m, b).replace(" ", "")
    assert fingerprint(a) != fingerprint(b)


def test_a_small_order_ephemeral_key_fails_the_handshake_cleanly() -> None:
    """Found by the network fuzzer: an all-zero ephemeral key with a validly
    signed confirmation made libsodium's key agreement raise CryptoError,
    which no caller expected (it stopped the peer)."""
    from chathack.secure import KeyConfirm, KeyInit, b64

    attacker, bob = SigningKey.generate(), SigningKey.generate()
    responder = Handshake(bob, "bob", "mallory", initiator=False)
    responder.on_init(KeyInit("sid-1", b64(bytes(32))))
    transcript = responder._transcript
    assert transcript is not None
    mine = bytes(attacker.verify_key)
    sig = attacker.sign(b"I" + transcript + mine).signature
    assert responder.on_confirm(KeyConfirm("sid-1", b64(mine), b64(sig))) == mine
    with pytest.raises(BadHandshake, match="unusable ephemeral key"):
        responder.finish()


def test_mail_cannot_be_sealed_to_a_key_that_is_not_a_point() -> None:
    """The rendezvous vouches for any 32 bytes; sealing to junk is a clear error."""
    from chathack.secure import BadIdentityKey, seal_mail

    with pytest.raises(BadIdentityKey):
        seal_mail(SigningKey.generate(), bytes(32), b"hello")
