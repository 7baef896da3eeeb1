"""TLS to the rendezvous, client side: the handshake and the certificate pin.

Why pinning instead of CA checks: a rendezvous normally serves a self-signed
certificate (see :mod:`rendezvous.tls`), so no CA can vouch for it. The peer
trusts it on first use, like SSH's ``known_hosts``: the first time it meets
``HOST:PORT`` it remembers the certificate's SHA-256 fingerprint, and from
then on refuses — loudly — a server at that address presenting another one.
A careful user checks the first fingerprint against the one the server
prints at startup, or passes it up front (``expected``, from
``--tls-fingerprint``). An operator with a CA-issued certificate can have
peers verify it the usual way (:func:`client_context` with ``cafile``);
then no pin is kept, because such certificates are renewed every few months
and a pin would cry wolf at each renewal.

File in the peer's data dir: ``known_servers``, one line per rendezvous:
``HOST:PORT FINGERPRINT`` (``[v6]:PORT`` for IPv6). Other lines (comments)
are kept as they are.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

import trio

from chathack.secure import certificate_fingerprint as fingerprint_of_der
from peer.errors import PeerError, ServerUnreachable

KNOWN_SERVERS_FILE = "known_servers"
#: Seconds the rendezvous has to complete the TLS handshake (a default for callers).
HANDSHAKE_TIMEOUT = 10.0

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "KNOWN_SERVERS_FILE",
    "CertificateMismatch",
    "KnownServers",
    "KnownServersError",
    "TLSHandshakeFailed",
    "client_context",
    "fingerprint_of_der",
    "normalize_fingerprint",
    "open_tls",
    "server_key",
]


class TLSHandshakeFailed(ServerUnreachable):
    """No TLS session with the rendezvous: check that it serves TLS at that port."""


class CertificateMismatch(PeerError):
    """The rendezvous presented a certificate other than the trusted one: compare
    fingerprints with its operator before trusting it."""

    def __init__(self, message: str, server: str, trusted: str, presented: str) -> None:
        super().__init__(message)
        self.server = server
        self.trusted = trusted
        self.presented = presented


class KnownServersError(PeerError):
    """The known_servers file cannot be written: check the data dir's permissions."""


# -- fingerprints -------------------------------------------------------------


def normalize_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as people paste it (``ab:cd...``, ``ABCD...``,
    ``sha256 Fingerprint=AB:...``) in the canonical form; ValueError if it is
    not 32 bytes of hex. Usable as an argparse ``type``."""
    hex_digits = text.rpartition("=")[2].replace(":", "").replace(" ", "").strip().upper()
    if len(hex_digits) != 64 or any(c not in "0123456789ABCDEF" for c in hex_digits):
        raise ValueError(
            f"{text!r} is not a SHA-256 fingerprint (64 hex digits, "
            "like the one chathack-rendezvous prints at startup)"
        )
    return ":".join(hex_digits[i : i + 2] for i in range(0, 64, 2))


def server_key(server: tuple[str, int]) -> str:
    """How a rendezvous is named in ``known_servers``: ``host:port``, ``[v6]:port``."""
    host, port = server
    host = host.strip("[]").lower()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the pin store ------------------------------------------------------------
class KnownServers:
    """Pinned rendezvous fingerprints, kept in ``known_servers`` in
    ``directory`` (in memory only when ``directory`` is None)."""

    def __init__(self, directory: Path | None) -> None:
        self.path = directory / KNOWN_SERVERS_FILE if directory is not None else None
        self._pins: dict[str, str] = {}
        self._lines: list[str] = []  # the file as read, comments included
        self._load()

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:  # never made, or removed by the user: no pins
            self._lines, self._pins = [], {}
            return
        except (OSError, UnicodeDecodeError) as e:
            raise KnownServersError(f"Cannot read {self.path}: {e}") from e
        self._lines = text.splitlines()
        self._pins = {}
        for line in self._lines:
            parsed = _parse_line(line)
            if parsed is not None:
                self._pins[parsed[0]] = parsed[1]

    def get(self, server: tuple[str, int]) -> str | None:
        """The pinned fingerprint of ``server``, if any."""
        return self._pins.get(server_key(server))

    def pin(self, server: tuple[str, int], fingerprint: str) -> None:
        """Remember (or replace) the fingerprint of ``server``."""
        self._update(server_key(server), normalize_fingerprint(fingerprint))

    def forget(self, server: tuple[str, int]) -> None:
        """Drop the pin of ``server`` (its certificate was legitimately replaced)."""
        self._update(server_key(server), None)

    def _update(self, key: str, fingerprint: str | None) -> None:
        self._load()  # another peer process may have pinned meanwhile: keep its line
        lines = [line for line in self._lines if (_parse_line(line) or ("",))[0] != key]
        if fingerprint is not None:
            lines.append(f"{key} {fingerprint}")
            self._pins[key] = fingerprint
        else:
            self._pins.pop(key, None)
        self._lines = lines
        if self.path is not None:
            _write_atomically(self.path, "".join(f"{line}\n" for line in lines))


def _parse_line(line: str) -> tuple[str, str] | None:
    fields = line.split()
    if len(fields) != 2 or line.lstrip().startswith("#"):
        return None
    try:
        return fields[0].lower(), normalize_fingerprint(fields[1])
    except ValueError:
        return None


def _write_atomically(path: Path, text: str) -> None:
    """Write a temporary file and rename it over ``path``: a crash or a full
    disk leaves the old pins, never a half-written file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise KnownServersError(f"Cannot save the rendezvous pin in {path}: {e}") from e


# -- the handshake ------------------------------------------------------------
def client_context(cafile: Path | None = None) -> ssl.SSLContext:
    """A client context for TLS 1.2 or newer.

    Without ``cafile`` the certificate is not checked against any CA nor the
    host name — self-signed is the norm; :func:`open_tls` checks it against
    the pin instead. With ``cafile`` (the CA, or the server's own certificate)
    it is verified the standard way, host name included.
    """
    if cafile is not None:
        context = ssl.create_default_context(cafile=str(cafile))
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _why(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {cause.verify_message.rstrip('.')}"
    if isinstance(cause, ssl.SSLError) and cause.reason == "WRONG_VERSION_NUMBER":
        return "it answered in plain text: it does not serve TLS on this port"
    if isinstance(cause, ssl.SSLError):
        return str(cause.reason or cause)
    return "the connection was closed" if cause is None else str(cause)


def _mismatch(
    key: str, trusted: str, presented: str, source: str, remedy: str
) -> CertificateMismatch:
    message = (
        f"WARNING: THE RENDEZVOUS CERTIFICATE AT {key} HAS CHANGED: it is not "
        f"the one trusted ({source})!\n"
        "Someone may be intercepting the connection (a man in the middle), "
        "or its operator replaced the certificate. Nothing was sent to it.\n"
        f"  trusted ({source}): {trusted}\n"
        f"  presented by the server now: {presented}\n"
        "Compare with the fingerprint chathack-rendezvous prints at startup (ask its "
        f"operator, out of band). {remedy}"
    )
    return CertificateMismatch(message, key, trusted, presented)


async def open_tls(
    stream: trio.SocketStream,
    server: tuple[str, int],
    known: KnownServers,
    expected: str | None,
    timeout: float,  # noqa: ASYNC109 -- it must end inside, as TLSHandshakeFailed
    *,
    context: ssl.SSLContext | None = None,
) -> tuple[trio.SSLStream[trio.SocketStream], str, bool]:
    """TLS on a connected ``stream`` to the rendezvous ``server`` (as the user
    named it: it is the SNI name and the pin's key). Returns
    ``(ssl_stream, fingerprint, first_use)``; ``first_use`` means the
    fingerprint was just pinned on trust — worth showing the user.

    Trust, in order: ``expected`` must match, and is then pinned (ValueError
    if it is no fingerprint: validate it early with :func:`normalize_fingerprint`);
    else the pin must match; else the fingerprint is pinned. With a verifying
    ``context`` (a ``cafile``) the CA decides and no pin is kept.

    Raises :class:`TLSHandshakeFailed` (a :class:`ServerUnreachable`: a
    reconnecting caller may retry) or :class:`CertificateMismatch` (never
    retry: tell the user). On any error the raw stream is closed.
    """
    context = context or client_context()
    ssl_stream = trio.SSLStream(stream, context, server_hostname=server[0].strip("[]"))
    key = server_key(server)
    try:
        wanted = normalize_fingerprint(expected) if expected is not None else None
        with trio.fail_after(timeout):
            await ssl_stream.do_handshake()
        der = ssl_stream.getpeercert(binary_form=True)
        if der is None:  # cannot happen with a TLS server; refuse rather than trust nothing
            raise trio.BrokenResourceError("the server presented no certificate")
        presented = fingerprint_of_der(der)
        first_use = _judge(key, server, known, wanted, presented, context)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as e:
        await trio.aclose_forcefully(stream)
        raise TLSHandshakeFailed(
            f"TLS with the rendezvous at {key} failed ({_why(e)}). Check --server HOST:PORT "
            "and that the server there runs with TLS."
        ) from e
    except BaseException:  # a mismatch, a pin not saved, a bad ``expected``, a cancellation
        await trio.aclose_forcefully(stream)
        raise
    return ssl_stream, presented, first_use


def _judge(
    key: str,
    server: tuple[str, int],
    known: KnownServers,
    wanted: str | None,
    presented: str,
    context: ssl.SSLContext,
) -> bool:
    """Raise :class:`CertificateMismatch` unless ``presented`` is trusted; True
    when it was pinned just now on first use."""
    where = str(known.path) if known.path is not None else "the known_servers file"
    if wanted is not None:
        if presented != wanted:
            raise _mismatch(
                key,
                wanted,
                presented,
                "--tls-fingerprint",
                "If the server's fingerprint really changed, pass the new one to "
                "--tls-fingerprint.",
            )
        if context.verify_mode == ssl.CERT_NONE and known.get(server) != presented:
            known.pin(server, presented)  # the operator's word replaces an old pin
        return False
    if context.verify_mode != ssl.CERT_NONE:
        return False  # a CA verified it
    pinned = known.get(server)
    if pinned is None:
        known.pin(server, presented)
        return True
    if pinned != presented:
        raise _mismatch(
            key,
            pinned,
            presented,
            f"pinned in {where}",
            f"If it was legitimately replaced, remove the line {key!r} from {where}, "
            "or pass the new fingerprint with --tls-fingerprint.",
        )
    return False
