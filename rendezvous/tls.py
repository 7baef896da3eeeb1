"""TLS for the rendezvous: its certificate, its SSL context, and the words
for a failed handshake (the handshake itself runs in
:class:`rendezvous.transport.TLSTransport`).

Why self-signed by default: a rendezvous is usually run by one person on a
home box or a small VPS with no domain name, so a CA-issued certificate is
the exception. Trust comes instead from the certificate's SHA-256
fingerprint, which the server prints at startup and peers pin on first use
(like SSH host keys; see :mod:`peer.tls`). An operator who has a real
certificate passes its files instead (``--tls-cert`` / ``--tls-key``).

Files kept by :func:`load_or_create_certificate` in the server's data dir:

* ``rendezvous-cert.pem`` — the self-signed certificate (public);
* ``rendezvous-key.pem`` — its EC P-256 private key, mode 0600.

They are made once and never overwritten: a new certificate would change the
fingerprint and every peer that pinned the old one would refuse the server.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chathack.errors import ChathackError
from chathack.secure import certificate_fingerprint as fingerprint_of_der

CERT_FILE = "rendezvous-cert.pem"
KEY_FILE = "rendezvous-key.pem"
#: Names the self-signed certificate is made for when none are given.
DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1")
#: How long a self-signed certificate stays valid. Long on purpose: peers
#: trust it by its pinned fingerprint, and a renewal would break every pin.
VALIDITY_DAYS = 3650
#: Seconds a client has to complete the TLS handshake (the server's default).
HANDSHAKE_TIMEOUT = 10.0

__all__ = [
    "CERT_FILE",
    "HANDSHAKE_TIMEOUT",
    "KEY_FILE",
    "TLSConfigError",
    "TLSHandshakeError",
    "check_key_private",
    "fingerprint_of_der",
    "fingerprint_of_file",
    "load_or_create_certificate",
    "server_context",
]


class TLSConfigError(ChathackError):
    """The TLS certificate or key cannot be used: the message names the file and the fix."""


class TLSHandshakeError(ChathackError):
    """A client did not complete the TLS handshake: drop that connection, keep serving."""


# -- fingerprints ---------------------------------------------------------------


def fingerprint_of_file(cert: Path) -> str:
    """The fingerprint of the first (leaf) certificate in a PEM file — the one
    the server presents, even when the file holds a whole chain."""
    try:
        leaf = x509.load_pem_x509_certificates(cert.read_bytes())[0]
    except (OSError, ValueError, IndexError) as e:
        raise TLSConfigError(f"Cannot read a PEM certificate from {cert}: {e}") from e
    return fingerprint_of_der(leaf.public_bytes(serialization.Encoding.DER))


# -- the self-signed certificate ----------------------------------------------
def check_key_private(key: Path, *, allow_group: bool = False) -> None:
    """Refuse a private key that other users can read: whoever reads it can
    pose as this rendezvous. ``allow_group`` tolerates group access, the
    convention for operator-managed keys (Debian's ``ssl-cert`` group)."""
    if os.name != "posix":
        return  # POSIX modes mean nothing there; rely on the OS's ACLs
    try:
        mode = stat.S_IMODE(key.stat().st_mode)
    except OSError as e:
        raise TLSConfigError(f"Cannot read the TLS key {key}: {e.strerror or e}") from e
    if mode & (0o007 if allow_group else 0o077):
        raise TLSConfigError(
            f"The TLS key {key} can be read by other users (mode {mode:o}): "
            f"run chmod 600 {key}, and if others may have copied it, remove both "
            f"{key.name} and its certificate to make new ones (peers then re-pin)"
        )


def load_or_create_certificate(
    directory: Path, hostnames: list[str] | None = None
) -> tuple[Path, Path]:
    """``(cert, key)`` in ``directory``, made on first use and kept.

    ``hostnames`` (names and IP addresses) go into the subjectAltName of a
    *new* certificate; existing files are used as they are, whatever
    ``hostnames`` says — peers pin the certificate, so it must not change.
    """
    cert, key = directory / CERT_FILE, directory / KEY_FILE
    have_cert, have_key = cert.exists(), key.exists()
    if have_cert and have_key:
        check_key_private(key)
        return cert, key
    if have_cert or have_key:
        there, missing = (cert, key) if have_cert else (key, cert)
        raise TLSConfigError(
            f"Found {there} but not {missing}. Restore the missing file from a backup, "
            f"or remove {there} to make a new certificate (peers that pinned the old "
            "one will refuse the new one until they re-pin it)"
        )
    names = list(hostnames) if hostnames else list(DEFAULT_HOSTNAMES)
    key_pem, cert_pem = _make_self_signed(names)
    directory.mkdir(parents=True, exist_ok=True)
    # The key first: a crash in between leaves a key without a certificate,
    # which the check above reports instead of silently replacing.
    _write_new(key, key_pem, 0o600)
    _write_new(cert, cert_pem, 0o644)
    return cert, key


def _san_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        pass
    try:
        return x509.DNSName(name.encode("idna").decode("ascii"))
    except UnicodeError as e:
        raise TLSConfigError(f"{name!r} is not a host name or an IP address") from e


def _make_self_signed(hostnames: list[str]) -> tuple[bytes, bytes]:
    """PEM key and certificate. EC P-256: every TLS stack accepts it for a
    server certificate (Ed25519 is not yet universal) and it is small and fast."""
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0][:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "chathack rendezvous"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    public = private.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))  # tolerate a client's slow clock
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName([_san_entry(n) for n in hostnames]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        # Strict verifiers (Python 3.13's default context) want it even when
        # the certificate is its own issuer, e.g. when given as a client's cafile.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
    )
    certificate = builder.sign(private, hashes.SHA256())
    key_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (no window where a key is
    world-readable); never replace an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as e:
        raise TLSConfigError(
            f"{path} appeared while it was being created: is another rendezvous "
            "starting with the same data dir? Start this one again"
        ) from e
    except OSError as e:
        raise TLSConfigError(f"Cannot create {path}: {e.strerror or e}") from e
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# -- serving ------------------------------------------------------------------
def _refuse_encrypted_key() -> bytes:
    # Without a password callback OpenSSL would prompt on the terminal and
    # block the server's start; say what to do instead.
    raise TLSConfigError(
        "The TLS key is encrypted with a passphrase, which chathack-rendezvous cannot "
        "type: decrypt it (openssl pkey -in KEY -out NEWKEY) and chmod 600 NEWKEY"
    )


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side context: TLS 1.2 or newer (1.3 is negotiated whenever the
    client has it), OpenSSL's default ciphers, no client certificates."""
    check_key_private(key, allow_group=True)
    # PROTOCOL_TLS_SERVER has safe defaults (no SSLv3, no compression) and,
    # unlike create_default_context, does not load CAs a server never uses.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key), password=_refuse_encrypted_key)
    except ssl.SSLError as e:
        raise TLSConfigError(
            f"Cannot use the TLS certificate {cert} with the key {key} ({e.reason or e}): "
            "both must be PEM files and the key must belong to the certificate"
        ) from e
    except OSError as e:
        raise TLSConfigError(f"Cannot read {e.filename or cert}: {e.strerror or e}") from e
    return context


def ssl_error_reason(e: ssl.SSLError) -> str:
    """Why a server handshake failed, in words for the log."""
    reason = e.reason or str(e)
    if reason in {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE"}:
        return f"{reason}: the client does not speak TLS (a plain-TCP client or nc?)"
    if isinstance(e, ssl.SSLEOFError):
        return "the client closed the connection"
    return str(reason)
