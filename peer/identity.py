"""Who this peer is, and whom it has met: the identity key, pinned partner
keys (trust on first use, like SSH's known_hosts), fingerprints and safety
numbers.

Files in the peer's data dir:

* ``identity.key`` — this user's Ed25519 secret seed (hex), mode 0600;
  created on first run.
* ``known_peers`` — one line per partner: ``NAME BASE64KEY`` (the key pinned
  the first time that partner was verified; ``::trust NAME`` replaces it).

A partner's key is checked, at every key exchange, against the pin and
against the key the rendezvous vouches for (:func:`judge`).

User names are not case-sensitive: the rendezvous folds them (``Dave`` logs
in to dave's account), and so does everything the peer keeps, on disk and in
memory, with :func:`fold_name` -- the data dir's name, the names in
``known_peers``, the history's partners (``COLLATE NOCASE``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nacl.hash import blake2b
from nacl.signing import SigningKey

from chathack.secure import _Raw, b64
from peer.errors import PeerError

IDENTITY_FILE = "identity.key"
PINS_FILE = "known_peers"


def fold_name(name: str) -> str:
    """The form of a user name that compares and files it, as the rendezvous
    folds it (``name.lower()``, SQLite ``COLLATE NOCASE``: names are ASCII)."""
    return name.lower()


class IdentityError(PeerError):
    """The identity key file is unreadable or unsafe: fix its permissions or move it away."""


def load_identity(data_dir: Path | None) -> SigningKey:
    """This user's identity key from ``data_dir`` (made on first run); a fresh
    throw-away key without a data dir."""
    if data_dir is None:
        return SigningKey.generate()
    path = data_dir / IDENTITY_FILE
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise IdentityError(
                f"{path} can be read by other users (mode {mode:o}): run chmod 600 {path}"
            )
        try:
            return SigningKey(bytes.fromhex(path.read_text().strip()))
        except ValueError as e:
            raise IdentityError(f"{path} is not a chathack identity key ({e})") from e
    key = SigningKey.generate()
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(bytes(key).hex() + "\n")
    return key


def public_b64(key: SigningKey) -> str:
    return b64(bytes(key.verify_key))


def fingerprint(pubkey: bytes) -> str:
    """A short, readable digest of a key: ``3f2a 91c0 ...`` (80 bits)."""
    digest = blake2b(pubkey, digest_size=10, encoder=_Raw).hex()
    return " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))


#: Hash rounds per half of a safety number (Signal's numeric fingerprint):
#: each candidate key a forger tries costs this many SHA-512s.
SAFETY_ITERATIONS = 5200
#: The version tag hashed in, so a later scheme never yields the same digits.
SAFETY_VERSION = b"\x00\x00chathack-safety-1"


def safety_half(key: bytes) -> str:
    """30 digits (~100 bits) from one identity key: an iterated SHA-512, its
    first 30 bytes read as six 5-byte numbers, each mod 100000."""
    digest = hashlib.sha512(SAFETY_VERSION + key).digest()
    for _ in range(SAFETY_ITERATIONS):
        digest = hashlib.sha512(digest + key).digest()
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )


def safety_number(key_a: bytes, key_b: bytes) -> str:
    """60 digits both partners compute alike from their two keys (each key's
    30-digit half, in sorted order), grouped by five for reading aloud. Equal
    numbers, compared out of band, mean nobody sits in between: a rendezvous
    forging keys must match ~100 bits for each side, not collide a short hash."""
    digits = "".join(sorted((safety_half(key_a), safety_half(key_b))))
    return " ".join(digits[i : i + 5] for i in range(0, 60, 5))


class Pins:
    """Pinned partner keys, kept in ``known_peers`` (in memory without a dir)."""

    def __init__(self, data_dir: Path | None) -> None:
        self.path = data_dir / PINS_FILE if data_dir is not None else None
        self._keys: dict[str, bytes] = {}
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                name, _, key = line.strip().partition(" ")
                if name and key:
                    try:
                        self._keys[fold_name(name)] = base64.b64decode(key, validate=True)
                    except ValueError:
                        continue

    def get(self, name: str) -> bytes | None:
        return self._keys.get(fold_name(name))

    def pin(self, name: str, key: bytes) -> None:
        self._keys[fold_name(name)] = key
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(f"{n} {b64(k)}\n" for n, k in sorted(self._keys.items())))
        tmp.replace(self.path)


Verdict = Literal["trusted", "first-use", "changed", "impostor"]


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    reason: str


def judge(name: str, presented: bytes, pinned: bytes | None, vouched: bytes | None) -> Judgement:
    """What to make of the key ``name`` presented in a key exchange.

    * ``trusted`` — it is the pinned key (and the rendezvous agrees, or says nothing);
    * ``first-use`` — nothing pinned yet and the rendezvous vouches for it (or
      says nothing): pin it;
    * ``changed`` — the rendezvous vouches for it but another key is pinned: a
      new device, or an attack the rendezvous takes part in; the user decides;
    * ``impostor`` — the rendezvous vouches for another key, or it is neither
      pinned nor vouched: refuse.
    """
    if vouched is not None and presented != vouched:
        return Judgement(
            "impostor",
            f"{name} presented a key the rendezvous does not vouch "
            f"for ({fingerprint(presented)}); someone may be impersonating {name}",
        )
    if pinned is None:
        return Judgement(
            "first-use", f"first conversation with {name}: key {fingerprint(presented)} pinned"
        )
    if presented == pinned:
        return Judgement("trusted", "")
    if vouched is not None:
        return Judgement(
            "changed",
            f"{name}'s identity key changed (new device?) from "
            f"{fingerprint(pinned)} to {fingerprint(presented)}",
        )
    return Judgement(
        "impostor",
        f"{name} presented {fingerprint(presented)}, not the pinned "
        f"key {fingerprint(pinned)}; someone may be impersonating {name}",
    )
