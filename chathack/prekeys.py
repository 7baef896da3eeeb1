"""Forward secrecy for offline mail: signed prekeys, after Signal's X3DH.

A message for someone offline cannot be sealed with a key agreed on the
spot: nobody is there to agree. So each peer publishes, through the
rendezvous, X25519 *prekeys* it keeps the private halves of:

* one **signed prekey** (``spk``), signed with its identity key (so the
  rendezvous cannot substitute its own), replaced every week and kept
  (privately) a while longer for mail still on its way;
* a stock of **one-time prekeys** (``opk``), each handed out by the
  rendezvous once and deleted by its owner once a mail sealed to it was
  opened and recorded.

A sender asks for a *bundle* (``prekey: NAME N``: the signed prekey and up
to N one-time prekeys, one per message of the batch) and seals each message
with a fresh ephemeral key ``ek``::

    dh1 = DH(IK_sender, SPK)   dh2 = DH(EK, IK_recipient)
    dh3 = DH(EK, SPK)          dh4 = DH(EK, OPK)   (when one was handed out)
    key = BLAKE2b(header || dh1 || dh2 || dh3 || dh4)

The header (both identity keys, ``ek``, the prekey ids) is hashed into the
key, so none of it can be swapped. Once the recipient deleted the one-time
prekey (at once) and the signed prekey (weeks later), a stolen identity key
opens none of the stored mail; without a one-time prekey (the stock ran
out), forward secrecy waits for the signed prekey's deletion.

Sans-IO: keys in, bytes and text out. The wire formats of ``prekeys:``,
``prekey:``, ``Servidor[PREKEYS]`` and ``Servidor[PREKEY]`` are here too.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass

from nacl import bindings
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.hash import blake2b
from nacl.public import PrivateKey
from nacl.secret import SecretBox
from nacl.signing import SigningKey, VerifyKey

from chathack.errors import RemoteProtocolError
from chathack.grammar import check_name

#: Marks mail sealed with prekeys (``#cm1:`` is the older identity-only seal).
MAIL_FS_PREFIX = "#cm2:"
#: One-time prekeys a ``prekeys:`` line may carry, and one bundle may hold.
MAX_OPKS_PER_LINE = 50
MAX_OPKS_PER_BUNDLE = 16
#: One-time prekeys the rendezvous keeps per user (the stock a peer tops up).
MAX_OPKS_HELD = 100
#: Below this many, the rendezvous asks the owner for more (``PREKEYS``).
LOW_OPKS = 20
#: Largest prekey id (ids are 1..this; 0 means "none").
MAX_PREKEY_ID = 2**31 - 1

_SPK_CONTEXT = b"chathack signed prekey v1"
_KDF_PERSON = b"chathack-mail2"
_HEADER = struct.Struct(">32s32s32sII")  # sender IK, recipient IK, EK, spk id, opk id


class BadPrekey(ValueError):
    """A prekey that is malformed, or a signed prekey its owner did not sign."""


@dataclass(frozen=True, slots=True)
class SignedPrekey:
    id: int
    public: bytes  # X25519, 32 bytes
    signature: bytes  # Ed25519 by the owner's identity key, 64 bytes


@dataclass(frozen=True, slots=True)
class OneTimePrekey:
    id: int
    public: bytes


@dataclass(frozen=True, slots=True)
class Bundle:
    """What the rendezvous hands a sender for ``name``: None when ``name``
    published no prekeys."""

    name: str
    spk: SignedPrekey | None
    opks: tuple[OneTimePrekey, ...] = ()


# ------------------------------------------------------------- the keys


def sign_prekey(identity: SigningKey, prekey_id: int, public: bytes) -> SignedPrekey:
    message = _SPK_CONTEXT + struct.pack(">I", prekey_id) + public
    return SignedPrekey(prekey_id, public, identity.sign(message).signature)


def check_signed_prekey(owner: bytes, spk: SignedPrekey) -> None:
    """Raise :class:`BadPrekey` unless ``owner``'s identity key signed ``spk``."""
    message = _SPK_CONTEXT + struct.pack(">I", spk.id) + spk.public
    try:
        VerifyKey(owner).verify(message, spk.signature)
    except (BadSignatureError, ValueError, CryptoError):
        raise BadPrekey("the signed prekey does not carry its owner's signature") from None


def _dh(private: bytes, public: bytes) -> bytes:
    try:
        return bindings.crypto_scalarmult(private, public)
    except (CryptoError, ValueError, TypeError):
        raise BadPrekey("not a usable X25519 key") from None


def _curve_public(identity: bytes) -> bytes:
    try:
        return bytes(VerifyKey(identity).to_curve25519_public_key())
    except (CryptoError, ValueError):
        raise BadPrekey("that identity key is not a valid key") from None


def _key(header: bytes, *secrets_: bytes) -> bytes:
    return blake2b(header + b"".join(secrets_), digest_size=32, person=_KDF_PERSON, encoder=_raw)


class _raw:  # the encoder protocol of nacl.hash
    @staticmethod
    def encode(data: bytes) -> bytes:
        return data


# ------------------------------------------------------------- sealing


def seal_mail_fs(
    sender: SigningKey,
    recipient: bytes,
    spk: SignedPrekey,
    opk: OneTimePrekey | None,
    plaintext: bytes,
) -> str:
    """``plaintext`` for the holder of identity key ``recipient``, sealed to
    its (checked) signed prekey and, if there is one, a one-time prekey."""
    check_signed_prekey(recipient, spk)
    ek = PrivateKey.generate()
    header = _HEADER.pack(
        bytes(sender.verify_key), recipient, bytes(ek.public_key), spk.id, opk.id if opk else 0
    )
    ik_private = bytes(sender.to_curve25519_private_key())
    parts = [
        _dh(ik_private, spk.public),
        _dh(bytes(ek), _curve_public(recipient)),
        _dh(bytes(ek), spk.public),
    ]
    if opk is not None:
        parts.append(_dh(bytes(ek), opk.public))
    box = SecretBox(_key(header, *parts))
    payload = header + bytes(box.encrypt(plaintext))
    return MAIL_FS_PREFIX + base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


#: Finds a private prekey: ("spk" | "opk", id) -> its 32 private bytes, or None.
PrivateLookup = Callable[[str, int], bytes | None]


@dataclass(frozen=True, slots=True)
class OpenedMail:
    sender: bytes  # the sender's identity key
    plaintext: bytes
    opk_id: int  # the one-time prekey used (0: none), to delete once recorded


class MailUnopenable(ValueError):
    """Sealed mail that cannot be opened; ``missing``: its prekey is gone
    (used already, or expired), not tampered with."""

    def __init__(self, why: str, missing: bool = False) -> None:
        super().__init__(why)
        self.missing = missing


def open_mail_fs(me: SigningKey, text: str, private: PrivateLookup) -> OpenedMail:
    """Open mail sealed by :func:`seal_mail_fs` for ``me``, or raise
    :class:`MailUnopenable`."""
    if not text.startswith(MAIL_FS_PREFIX):
        raise MailUnopenable("not mail sealed with prekeys")
    token = text[len(MAIL_FS_PREFIX) :]
    try:
        payload = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, binascii.Error):
        raise MailUnopenable("sealed mail is not base64") from None
    if len(payload) < _HEADER.size + SecretBox.NONCE_SIZE + SecretBox.MACBYTES:
        raise MailUnopenable("sealed mail is too short")
    header = payload[: _HEADER.size]
    sender, recipient, ek, spk_id, opk_id = _HEADER.unpack(header)
    if recipient != bytes(me.verify_key):
        raise MailUnopenable("sealed for another identity key")
    spk_private = private("spk", spk_id)
    opk_private = private("opk", opk_id) if opk_id else None
    if spk_private is None or (opk_id and opk_private is None):
        raise MailUnopenable("its prekey is gone (used or expired)", missing=True)
    try:
        parts = [
            _dh(spk_private, _curve_public(sender)),
            _dh(bytes(me.to_curve25519_private_key()), ek),
            _dh(spk_private, ek),
        ]
        if opk_private is not None:
            parts.append(_dh(opk_private, ek))
        plaintext = SecretBox(_key(header, *parts)).decrypt(payload[_HEADER.size :])
    except (BadPrekey, CryptoError, ValueError):
        raise MailUnopenable("sealed mail failed authentication") from None
    return OpenedMail(sender, plaintext, opk_id)


# ------------------------------------------------------------- the lines


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, size: int) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise RemoteProtocolError(f"Malformed prekey: {text[:20]!r} is not base64") from None
    if len(data) != size:
        raise RemoteProtocolError(f"Malformed prekey: {size} bytes expected")
    return data


def _prekey_id(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= MAX_PREKEY_ID or len(text) > 10:
        raise RemoteProtocolError(f"Malformed prekey id: 1 to {MAX_PREKEY_ID}")
    return int(text)


def format_spk(spk: SignedPrekey) -> str:
    return f"{spk.id}:{_b64(spk.public)}:{_b64(spk.signature)}"


def parse_spk(word: str) -> SignedPrekey:
    parts = word.split(":")
    if len(parts) != 3:
        raise RemoteProtocolError("Malformed signed prekey: write ID:PUBLIC:SIGNATURE")
    return SignedPrekey(_prekey_id(parts[0]), _unb64(parts[1], 32), _unb64(parts[2], 64))


def format_opk(opk: OneTimePrekey) -> str:
    return f"{opk.id}:{_b64(opk.public)}"


def parse_opks(words: list[str], limit: int) -> tuple[OneTimePrekey, ...]:
    if len(words) > limit:
        raise RemoteProtocolError(f"Too many one-time prekeys: at most {limit}")
    out: list[OneTimePrekey] = []
    for word in words:
        prekey_id, sep, public = word.partition(":")
        if not sep:
            raise RemoteProtocolError("Malformed one-time prekey: write ID:PUBLIC")
        out.append(OneTimePrekey(_prekey_id(prekey_id), _unb64(public, 32)))
    if len({o.id for o in out}) != len(out):
        raise RemoteProtocolError("Malformed one-time prekeys: an id appears twice")
    return tuple(out)


def format_bundle(bundle: Bundle) -> str:
    """The text of ``Servidor[PREKEY]``: ``NAME SPK [OPK ...]``, or ``NAME -``."""
    if bundle.spk is None:
        return f"{bundle.name} -"
    words = [bundle.name, format_spk(bundle.spk), *(format_opk(o) for o in bundle.opks)]
    return " ".join(words)


def parse_bundle(text: str) -> Bundle:
    words = text.split()
    if len(words) < 2:
        raise RemoteProtocolError("Malformed PREKEY: write NAME SPK [OPK ...] or NAME -")
    name = check_name(words[0])
    if words[1:] == ["-"]:
        return Bundle(name, None)
    return Bundle(name, parse_spk(words[1]), parse_opks(words[2:], MAX_OPKS_PER_BUNDLE))


def new_prekey() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair: (private, public)."""
    key = PrivateKey(secrets.token_bytes(32))
    return bytes(key), bytes(key.public_key)
