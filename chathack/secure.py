"""End-to-end security of one path between two peers (sans-IO).

Theory of operation
-------------------
Every path a conversation uses — each direct link, and the relay — runs its
own authenticated key exchange before it carries a chat frame, so a path is
trusted only once it has proved who is at the other end. The construction is
SIGMA ("sign-and-MAC", the basis of IKE and TLS 1.3's signature handshake),
built only from libsodium primitives through PyNaCl:

    I -> R  KeyInit    sid, e_I
    R -> I  KeyReply   sid, e_R, id_R, Sig(id_R, "R" | T)
    I -> R  KeyConfirm sid, id_I, Sig(id_I, "I" | T | id_I)

``e_*`` are fresh X25519 keys (forward secrecy: they are forgotten after the
handshake), ``id_*`` long-term Ed25519 identity keys, ``T`` a BLAKE2b hash of
everything said so far (names, sid, both ephemeral keys, id_R). Both sides
derive a key per direction with libsodium's ``crypto_kx`` and bind it to
``T``. The peer checks the identity key each side presents against the one it
pinned and the one the rendezvous vouches for (:mod:`peer.identity`) before
finishing: this module says *what* key was presented, the caller decides
whether to trust it.

After the handshake, frames travel as :class:`Sealed` records:
XChaCha20-Poly1305 with a random 24-byte nonce (safe to choose at random,
unlike 12-byte nonces), the path's ``sid`` as associated data, and an 8-byte
counter inside the plaintext. The receiver drops a frame whose tag does not
verify (:class:`TamperedFrame`) and one whose counter it has seen
(:class:`ReplayedFrame`), keeping a window of :data:`REPLAY_WINDOW` counters.
Both are reported to the user by the peer.

File data (:mod:`chathack.file_frames`) is sealed differently, for speed:
AES-256-GCM (hardware AES on most machines: several times the speed of
XChaCha20 in software) under a key per direction derived from the path's
key (BLAKE2b keyed with it, :data:`FILE_KEY_LABEL`), a 96-bit nonce that is
a counter (unique per key, so never repeated), and the transfer id and
offset as associated data: a chunk cannot be moved to another transfer or
offset, and one replayed is the same bytes at the same place, which the
receiver drops (it takes only the offset it needs next).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl import bindings
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.hash import blake2b
from nacl.public import Box, PrivateKey
from nacl.signing import SigningKey, VerifyKey

from chathack.errors import LocalProtocolError, RemoteProtocolError

PROTOCOL_LABEL = b"chathack-sigma-v1"
#: Counters a receiver remembers for replay detection.
REPLAY_WINDOW = 4096
NONCE_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_COUNTER = struct.Struct(">Q")
FILE_KEY_LABEL = b"chathack-file-v1"
#: A sealed chunk: nonce (4 zero bytes and a counter), transfer id, offset; then the data and tag.
_CHUNK = struct.Struct(">4xQ8sQ")
CHUNK_OVERHEAD = _CHUNK.size + 16


class TamperedFrame(RemoteProtocolError):
    """A sealed frame failed authentication: it was altered or forged; it was dropped."""


class ReplayedFrame(RemoteProtocolError):
    """A sealed frame arrived a second time (a replay); it was dropped."""


class BadHandshake(RemoteProtocolError):
    """The other side's key exchange did not verify; the path was not trusted."""


class BadIdentityKey(RemoteProtocolError):
    """An identity key (as registered with the rendezvous) is not a valid
    Ed25519 point: nothing can be sealed to it; the user must register again."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, size: int) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise BadHandshake("malformed key exchange: bad base64") from None
    if len(raw) != size:
        raise BadHandshake("malformed key exchange: wrong field size")
    return raw


def _hash(*parts: bytes) -> bytes:
    data = b"".join(struct.pack(">H", len(p)) + p for p in parts)
    return blake2b(data, digest_size=32, encoder=_Raw)


class _Raw:
    """PyNaCl encoder that leaves bytes alone."""

    @staticmethod
    def encode(data: bytes) -> bytes:
        return data

    @staticmethod
    def decode(data: bytes) -> bytes:
        return data


# --------------------------------------------------------------------------
# Handshake messages (carried as link frames; see chathack.link)
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyInit:
    sid: str
    e: str


@dataclass(frozen=True, slots=True)
class KeyReply:
    sid: str
    e: str
    id: str
    sig: str


@dataclass(frozen=True, slots=True)
class KeyConfirm:
    sid: str
    id: str
    sig: str


HandshakeFrame = KeyInit | KeyReply | KeyConfirm


# --------------------------------------------------------------------------
# The established session
# --------------------------------------------------------------------------


@dataclass(slots=True)
class SecureSession:
    """Keys of one trusted path: seal what we send, open what we receive."""

    sid: str
    peer_key: bytes  # the partner's identity key, as verified
    tx: bytes
    rx: bytes
    sent: int = 0
    highest: int = 0
    seen: set[int] = field(default_factory=set)
    chunks_sent: int = 0
    _file_tx: AESGCM | None = None
    _file_rx: AESGCM | None = None

    def seal_chunk(self, fid: bytes, offset: int, data: bytes, tag: bytes = b"") -> bytearray:
        """File data at ``offset`` of transfer ``fid`` (8 bytes), sealed, after
        ``tag`` (the frame's type byte: written in place, no copy made later)."""
        if self._file_tx is None:
            self._file_tx = AESGCM(_file_key(self.tx))
        self.chunks_sent += 1
        start = len(tag) + _CHUNK.size
        out = bytearray(start + len(data) + 16)
        out[: len(tag)] = tag
        _CHUNK.pack_into(out, len(tag), self.chunks_sent, fid, offset)
        head = bytes(out[len(tag) : start])
        with memoryview(out) as view:
            self._file_tx.encrypt_into(head[:12], data, head[12:], view[start:])
        return out

    def open_chunk(self, sealed: bytes | memoryview, skip: int = 0) -> tuple[bytes, int, bytes]:
        """``(fid, offset, data)`` of a chunk sealed after ``skip`` bytes, or
        :class:`TamperedFrame`."""
        if len(sealed) < skip + CHUNK_OVERHEAD:
            raise TamperedFrame("a sealed file chunk is too short")
        if self._file_rx is None:
            self._file_rx = AESGCM(_file_key(self.rx))
        _, fid, offset = _CHUNK.unpack_from(sealed, skip)
        with memoryview(sealed) as view:
            head = view[skip : skip + _CHUNK.size]
            try:
                data = self._file_rx.decrypt(head[:12], view[skip + _CHUNK.size :], head[12:])
            except InvalidTag:
                raise TamperedFrame("a file chunk failed authentication") from None
        return fid, offset, data

    def seal(self, plaintext: bytes) -> bytes:
        self.sent += 1
        nonce = secrets.token_bytes(NONCE_BYTES)
        box = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            _COUNTER.pack(self.sent) + plaintext, self.sid.encode(), nonce, self.tx
        )
        return nonce + box

    def open(self, sealed: bytes) -> bytes:
        if len(sealed) < NONCE_BYTES + _COUNTER.size + 16:
            raise TamperedFrame("a sealed frame is too short")
        nonce, box = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        try:
            plain = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                box, self.sid.encode(), nonce, self.rx
            )
        except CryptoError:
            raise TamperedFrame("a sealed frame failed authentication") from None
        (counter,) = _COUNTER.unpack_from(plain)
        if counter in self.seen or counter <= self.highest - REPLAY_WINDOW:
            raise ReplayedFrame(f"sealed frame {counter} arrived twice")
        self.seen.add(counter)
        if counter > self.highest:
            self.highest = counter
            floor = counter - REPLAY_WINDOW
            if len(self.seen) > 2 * REPLAY_WINDOW:
                self.seen = {c for c in self.seen if c > floor}
        return plain[_COUNTER.size :]


# --------------------------------------------------------------------------
# The handshake state machine
# --------------------------------------------------------------------------


class Handshake:
    """One side of the SIGMA exchange for the path between ``me`` and ``partner``.

    Initiator: :meth:`start`, then :meth:`on_reply` (returns the key the other
    side presented), then :meth:`confirm` once the caller trusts that key.
    Responder: :meth:`on_init`, then :meth:`on_confirm` (returns the key),
    then :meth:`finish` once the caller trusts it.
    """

    def __init__(
        self, identity: SigningKey, me: str, partner: str, initiator: bool, sid: str | None = None
    ) -> None:
        self.identity = identity
        self.me, self.partner = me, partner
        self.initiator = initiator
        self.sid = sid or secrets.token_hex(8)
        self._eph = PrivateKey.generate()
        self._peer_e: bytes | None = None
        self._peer_id: bytes | None = None
        self._transcript: bytes | None = None
        self._done = False

    @property
    def my_key(self) -> bytes:
        return bytes(self.identity.verify_key)

    def _names(self) -> tuple[bytes, bytes]:
        i, r = (self.me, self.partner) if self.initiator else (self.partner, self.me)
        return i.lower().encode(), r.lower().encode()

    def _t(self, e_i: bytes, e_r: bytes, id_r: bytes) -> bytes:
        i, r = self._names()
        return _hash(PROTOCOL_LABEL, i, r, self.sid.encode(), e_i, e_r, id_r)

    # initiator ------------------------------------------------------------
    def start(self) -> KeyInit:
        if not self.initiator:
            raise LocalProtocolError("only the initiator starts a handshake")
        return KeyInit(self.sid, b64(bytes(self._eph.public_key)))

    def on_reply(self, msg: KeyReply) -> bytes:
        if not self.initiator or msg.sid != self.sid or self._done:
            raise BadHandshake("unexpected key exchange reply")
        e_r, id_r, sig = unb64(msg.e, 32), unb64(msg.id, 32), unb64(msg.sig, 64)
        t = self._t(bytes(self._eph.public_key), e_r, id_r)
        _verify(id_r, b"R" + t, sig)
        self._peer_e, self._peer_id, self._transcript = e_r, id_r, t
        return id_r

    def confirm(self) -> tuple[KeyConfirm, SecureSession]:
        if self._transcript is None or self._peer_e is None or self._peer_id is None:
            raise LocalProtocolError("confirm() before a verified reply")
        t = self._transcript
        sig = self.identity.sign(b"I" + t + self.my_key).signature
        rx, tx = _session_keys(bindings.crypto_kx_client_session_keys, self._eph, self._peer_e)
        self._done = True
        return KeyConfirm(self.sid, b64(self.my_key), b64(sig)), self._session(tx, rx)

    # responder ------------------------------------------------------------
    def on_init(self, msg: KeyInit) -> KeyReply:
        if self.initiator or self._done:
            raise BadHandshake("unexpected key exchange start")
        self.sid = msg.sid
        e_i = unb64(msg.e, 32)
        e_r = bytes(self._eph.public_key)
        t = self._t(e_i, e_r, self.my_key)
        self._peer_e, self._transcript = e_i, t
        sig = self.identity.sign(b"R" + t).signature
        return KeyReply(self.sid, b64(e_r), b64(self.my_key), b64(sig))

    def on_confirm(self, msg: KeyConfirm) -> bytes:
        if self.initiator or self._transcript is None or msg.sid != self.sid or self._done:
            raise BadHandshake("unexpected key exchange confirmation")
        id_i, sig = unb64(msg.id, 32), unb64(msg.sig, 64)
        _verify(id_i, b"I" + self._transcript + id_i, sig)
        self._peer_id = id_i
        return id_i

    def finish(self) -> SecureSession:
        if self.initiator or self._peer_id is None or self._peer_e is None:
            raise LocalProtocolError("finish() before a verified confirmation")
        rx, tx = _session_keys(bindings.crypto_kx_server_session_keys, self._eph, self._peer_e)
        self._done = True
        return self._session(tx, rx)

    def _session(self, tx: bytes, rx: bytes) -> SecureSession:
        assert self._transcript is not None and self._peer_id is not None
        t = self._transcript
        tx = blake2b(tx, key=t, digest_size=32, encoder=_Raw)
        rx = blake2b(rx, key=t, digest_size=32, encoder=_Raw)
        # The ephemeral secret is not needed any more: drop it (forward secrecy).
        self._eph = PrivateKey.generate()
        return SecureSession(self.sid, self._peer_id, tx, rx)


def _file_key(path_key: bytes) -> bytes:
    return blake2b(FILE_KEY_LABEL, key=path_key, digest_size=32, encoder=_Raw)


def _session_keys(
    kx: Callable[[bytes, bytes, bytes], tuple[bytes, bytes]], eph: PrivateKey, peer_e: bytes
) -> tuple[bytes, bytes]:
    """libsodium's key agreement; a small-order (all-zero, say) ephemeral key
    from the other side makes it fail: that is the other side's fault."""
    try:
        return kx(bytes(eph.public_key), bytes(eph), peer_e)
    except CryptoError:
        raise BadHandshake("the key exchange offered an unusable ephemeral key") from None


def _verify(key: bytes, message: bytes, sig: bytes) -> None:
    try:
        VerifyKey(key).verify(message, sig)
    except (BadSignatureError, ValueError):
        raise BadHandshake("the key exchange signature does not verify") from None


# --------------------------------------------------------------------------
# Offline mail: sealed to the recipient's identity key
# --------------------------------------------------------------------------

#: Marks mail text that carries a sealed message (vs. words typed into nc).
MAIL_PREFIX = "#cm1:"


def seal_mail(sender: SigningKey, recipient: bytes, plaintext: bytes) -> str:
    """``plaintext`` for the holder of identity key ``recipient``, from ``sender``.

    NaCl's ``crypto_box`` (X25519 + XSalsa20-Poly1305) between the two identity
    keys converted to X25519: only the recipient can open it, and opening it
    proves it came from ``sender``. No forward secrecy (the recipient is
    offline: there is nobody to agree an ephemeral key with).
    """
    try:
        public = VerifyKey(recipient).to_curve25519_public_key()
    except (CryptoError, ValueError):
        # The rendezvous vouches for any 32 bytes a user registered; one that is
        # not a point of the curve cannot be sealed to.
        raise BadIdentityKey(
            "that identity key is not a valid key: nothing can be sealed to it"
        ) from None
    box = Box(sender.to_curve25519_private_key(), public)
    payload = bytes(sender.verify_key) + bytes(box.encrypt(plaintext))
    return MAIL_PREFIX + base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


def open_mail(me: SigningKey, text: str) -> tuple[bytes, bytes]:
    """The sender's identity key and the plaintext of sealed mail ``text``."""
    if not text.startswith(MAIL_PREFIX):
        raise TamperedFrame("not sealed mail")
    token = text[len(MAIL_PREFIX) :]
    try:
        payload = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        raise TamperedFrame("sealed mail is not base64") from None
    if len(payload) < 32 + 24 + 16:
        raise TamperedFrame("sealed mail is too short")
    sender = payload[:32]
    try:
        box = Box(me.to_curve25519_private_key(), VerifyKey(sender).to_curve25519_public_key())
        return sender, box.decrypt(payload[32:])
    except (CryptoError, ValueError):
        raise TamperedFrame("sealed mail failed authentication") from None


def certificate_fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as ``AB:CD:...``: the format the rendezvous
    prints and ``openssl x509 -noout -fingerprint -sha256`` shows, so operators
    can check it with a tool they already trust (used by both TLS sides)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
