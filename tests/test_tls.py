"""TLS to the rendezvous: the server's certificate and handshake
(``rendezvous/tls.py``) and the peer's handshake and pin store (``peer/tls.py``).

Conventions (as in tests/helpers.py): real sockets only on 127.0.0.1 with
port 0; every wait under ``trio.fail_after(DEADLINE)``; nothing synchronises
with sleep. Handshake timeouts run over memory streams with
``autojump_clock``, so they take no real time. The two certificates are made
once per module: each test that needs one gets its own copy of the files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import stat
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import peer.tls
import rendezvous.tls
from peer.errors import PeerError, ServerUnreachable
from peer.tls import (
    KNOWN_SERVERS_FILE,
    CertificateMismatch,
    KnownServers,
    TLSHandshakeFailed,
    client_context,
    normalize_fingerprint,
    open_tls,
)
from rendezvous.connection import Connection
from rendezvous.passwords import Passwords, fast_hasher
from rendezvous.server import Limits, Server
from rendezvous.store import SqliteStore
from rendezvous.tls import (
    CERT_FILE,
    KEY_FILE,
    TLSConfigError,
    TLSHandshakeError,
    fingerprint_of_der,
    fingerprint_of_file,
    load_or_create_certificate,
    server_context,
)
from rendezvous.transport import PLAIN_CLIENT_HINT, TLSTransport
from tests.helpers import DEADLINE

HOST = "127.0.0.1"
#: A handshake deadline short enough for the tests that wait for it (virtual time).
SHORT = 0.5


# -- certificates ---------------------------------------------------------------
@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two certificate directories, made once: "a" and "b"."""
    root = tmp_path_factory.mktemp("certs")
    for name in ("a", "b"):
        load_or_create_certificate(root / name)
    return root / "a", root / "b"


def _copy(src: Path, dst: Path) -> tuple[Path, Path]:
    shutil.copytree(src, dst)
    return dst / CERT_FILE, dst / KEY_FILE


@pytest.fixture
def cert_a(made: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    return _copy(made[0], tmp_path / "a")


@pytest.fixture
def cert_b(made: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    return _copy(made[1], tmp_path / "b")


def _load(cert: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert.read_bytes())


def test_certificate_is_created_with_a_private_key(tmp_path: Path) -> None:
    cert, key = load_or_create_certificate(tmp_path / "tls")
    assert (cert.name, key.name) == (CERT_FILE, KEY_FILE)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    certificate = _load(cert)
    public = certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    lifetime = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert lifetime > datetime.timedelta(days=9 * 365)
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert private.public_key() == public  # the pair belongs together


def test_certificate_is_kept_and_never_overwritten(tmp_path: Path) -> None:
    cert, key = load_or_create_certificate(tmp_path)
    before = cert.read_bytes(), key.read_bytes(), fingerprint_of_file(cert)
    again = load_or_create_certificate(tmp_path, ["chat.example.org"])  # other names: ignored
    assert again == (cert, key)
    assert (cert.read_bytes(), key.read_bytes(), fingerprint_of_file(cert)) == before


def test_certificate_names_come_from_hostnames(tmp_path: Path) -> None:
    cert, _ = load_or_create_certificate(
        tmp_path, ["chat.example.org", "192.0.2.7", "[2001:db8::1]"]
    )
    san = _load(cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["chat.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.0.2.7"),
        ipaddress.ip_address("2001:db8::1"),
    ]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604], ids=oct)
def test_a_key_others_can_read_is_refused(cert_a: tuple[Path, Path], mode: int) -> None:
    cert, key = cert_a
    key.chmod(mode)
    with pytest.raises(TLSConfigError, match="chmod 600"):
        load_or_create_certificate(cert.parent)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_given_key_files_may_be_group_readable_but_not_world_readable(
    cert_a: tuple[Path, Path],
) -> None:
    cert, key = cert_a
    key.chmod(0o640)  # Debian's ssl-cert group convention for operator keys
    server_context(cert, key)
    key.chmod(0o644)
    with pytest.raises(TLSConfigError, match="other users"):
        server_context(cert, key)


@pytest.mark.parametrize("lost", [CERT_FILE, KEY_FILE])
def test_half_a_pair_is_refused_not_replaced(cert_a: tuple[Path, Path], lost: str) -> None:
    directory = cert_a[0].parent
    (directory / lost).unlink()
    kept = next(p for p in cert_a if p.name != lost)
    content = kept.read_bytes()
    with pytest.raises(TLSConfigError, match="Restore the missing file"):
        load_or_create_certificate(directory)
    assert kept.read_bytes() == content
    assert not (directory / lost).exists()


def test_server_context_explains_unusable_files(
    cert_a: tuple[Path, Path], cert_b: tuple[Path, Path], tmp_path: Path
) -> None:
    with pytest.raises(TLSConfigError, match="key must belong to the certificate"):
        server_context(cert_a[0], cert_b[1])
    with pytest.raises(TLSConfigError, match="Cannot read"):
        server_context(tmp_path / "missing.pem", cert_a[1])
    # An encrypted key must not make OpenSSL prompt on the terminal.
    private = serialization.load_pem_private_key(cert_a[1].read_bytes(), password=None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    locked.chmod(0o600)
    with pytest.raises(TLSConfigError, match="passphrase"):
        server_context(cert_a[0], locked)


def test_contexts_require_tls_1_2_or_newer(cert_a: tuple[Path, Path]) -> None:
    server = server_context(*cert_a)
    assert server.minimum_version >= ssl.TLSVersion.TLSv1_2
    pinning = client_context()
    assert pinning.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert (pinning.verify_mode, pinning.check_hostname) == (ssl.CERT_NONE, False)
    verifying = client_context(cafile=cert_a[0])
    assert (verifying.verify_mode, verifying.check_hostname) == (ssl.CERT_REQUIRED, True)


# -- fingerprints -----------------------------------------------------------------
def test_fingerprint_format_is_the_same_on_both_sides(cert_a: tuple[Path, Path]) -> None:
    der = _load(cert_a[0]).public_bytes(serialization.Encoding.DER)
    fp = fingerprint_of_der(der)
    assert fp == peer.tls.fingerprint_of_der(der) == fingerprint_of_file(cert_a[0])
    assert fp == rendezvous.tls.fingerprint_of_der(der)
    pairs = fp.split(":")
    assert len(pairs) == 32
    assert all(len(p) == 2 and p == p.upper() and int(p, 16) >= 0 for p in pairs)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
def test_fingerprint_matches_openssl(cert_a: tuple[Path, Path]) -> None:
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(cert_a[0])],
        capture_output=True,
        text=True,
        check=True,
        timeout=DEADLINE,
    ).stdout
    # "sha256 Fingerprint=AB:CD:..." (OpenSSL 1.1 writes "SHA256 Fingerprint=")
    assert out.strip().partition("=")[2] == fingerprint_of_file(cert_a[0])


def test_normalize_fingerprint_accepts_what_people_paste(cert_a: tuple[Path, Path]) -> None:
    fp = fingerprint_of_file(cert_a[0])
    for pasted in (fp, fp.lower(), fp.replace(":", ""), f"sha256 Fingerprint={fp}\n"):
        assert normalize_fingerprint(pasted) == fp
    for bad in ("", "AB:CD", fp[:-1] + "G", fp + ":00"):
        with pytest.raises(ValueError, match="not a SHA-256 fingerprint"):
            normalize_fingerprint(bad)


# -- the pin store ----------------------------------------------------------------
FP1 = ":".join(["A1"] * 32)
FP2 = ":".join(["B2"] * 32)


def test_known_servers_in_memory_touch_no_file(tmp_path: Path) -> None:
    known = KnownServers(None)
    assert known.get((HOST, 7777)) is None
    known.pin((HOST, 7777), FP1.lower())
    assert known.get((HOST, 7777)) == FP1
    assert known.get((HOST, 7778)) is None
    assert list(tmp_path.iterdir()) == []


def test_known_servers_file_survives_and_keeps_other_lines(tmp_path: Path) -> None:
    path = tmp_path / KNOWN_SERVERS_FILE
    path.write_text(f"# my rendezvous pins\nnot a pin line\nold.example:1 {FP2}\n")
    known = KnownServers(tmp_path)
    assert known.get(("old.example", 1)) == FP2
    known.pin(("Chat.Example.org", 7777), FP1)  # host names are case-insensitive
    known.pin(("[::1]", 7777), FP2)
    known.pin(("old.example", 1), FP1)  # replaced, not duplicated
    assert path.read_text().splitlines() == [
        "# my rendezvous pins",
        "not a pin line",
        f"chat.example.org:7777 {FP1}",
        f"[::1]:7777 {FP2}",
        f"old.example:1 {FP1}",
    ]
    again = KnownServers(tmp_path)
    assert again.get(("chat.example.org", 7777)) == FP1
    assert again.get(("::1", 7777)) == FP2
    again.forget(("old.example", 1))
    assert KnownServers(tmp_path).get(("old.example", 1)) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [KNOWN_SERVERS_FILE]  # no temp files


def test_known_servers_keep_pins_written_by_another_process(tmp_path: Path) -> None:
    first, second = KnownServers(tmp_path), KnownServers(tmp_path)
    first.pin((HOST, 1), FP1)
    second.pin((HOST, 2), FP2)
    third = KnownServers(tmp_path)
    assert (third.get((HOST, 1)), third.get((HOST, 2))) == (FP1, FP2)


# -- real TLS on 127.0.0.1 ------------------------------------------------------
@dataclass
class TLSServer:
    port: int
    #: What each connection came to: the bytes echoed, "closed", or the handshake error.
    outcomes: trio.MemoryReceiveChannel[bytes | str | TLSHandshakeError]

    async def next_outcome(self) -> bytes | str | TLSHandshakeError:
        with trio.fail_after(DEADLINE):
            return await self.outcomes.receive()


@asynccontextmanager
async def tls_server(cert: Path, key: Path) -> AsyncIterator[TLSServer]:
    """An echo server: one TLS handshake, then one chunk echoed back."""
    context = server_context(cert, key)
    send, receive = trio.open_memory_channel[bytes | str | TLSHandshakeError](16)

    async def handler(stream: trio.SocketStream) -> None:
        # The server's own TLS transport, on the accepted socket.
        transport = TLSTransport(socket.socket(fileno=stream.socket.detach()), context)
        try:
            await transport.handshake(DEADLINE)
        except TLSHandshakeError as e:
            await send.send(e)
            return
        try:
            data = await transport.receive()
            await transport.send_all(data)
            await send.send(data or "closed")
        except trio.BrokenResourceError:
            await send.send("closed")
        finally:
            await transport.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=HOST))
        yield TLSServer(listeners[0].socket.getsockname()[1], receive)
        nursery.cancel_scope.cancel()


async def dial(
    port: int,
    known: KnownServers,
    server: tuple[str, int] | None = None,
    expected: str | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[trio.SocketStream, trio.SSLStream[trio.SocketStream], str, bool]:
    """Connect to 127.0.0.1:``port`` as if it were ``server``, and run open_tls."""
    with trio.fail_after(DEADLINE):
        raw = await trio.open_tcp_stream(HOST, port)
        ssl_stream, fp, first_use = await open_tls(
            raw, server or (HOST, port), known, expected, DEADLINE, context=context
        )
    return raw, ssl_stream, fp, first_use


async def echo(ssl_stream: trio.SSLStream[trio.SocketStream], data: bytes) -> bytes:
    got = b""
    with trio.fail_after(DEADLINE):
        await ssl_stream.send_all(data)
        while len(got) < len(data):
            chunk = await ssl_stream.receive_some()
            if not chunk:
                break
            got += chunk
        await ssl_stream.aclose()
    return got


async def test_first_connection_pins_and_the_next_one_matches(
    cert_a: tuple[Path, Path], tmp_path: Path
) -> None:
    async with tls_server(*cert_a) as server:
        raw, ssl_stream, fp, first_use = await dial(server.port, KnownServers(tmp_path))
        assert (fp, first_use) == (fingerprint_of_file(cert_a[0]), True)
        assert ssl_stream.transport_stream is raw  # the raw socket stays the caller's
        assert ssl_stream.version() == "TLSv1.3"
        assert await echo(ssl_stream, b"username: alice\n") == b"username: alice\n"
        assert await server.next_outcome() == b"username: alice\n"
        assert KnownServers(tmp_path).get((HOST, server.port)) == fp

        _, ssl_stream, fp_again, first_use = await dial(server.port, KnownServers(tmp_path))
        assert (fp_again, first_use) == (fp, False)
        assert await echo(ssl_stream, b"again\n") == b"again\n"


async def test_a_changed_certificate_is_refused_loudly(
    cert_a: tuple[Path, Path], cert_b: tuple[Path, Path], tmp_path: Path
) -> None:
    known = KnownServers(tmp_path)
    async with tls_server(*cert_a) as a, tls_server(*cert_b) as b:
        trusted = fingerprint_of_file(cert_a[0])
        presented = fingerprint_of_file(cert_b[0])
        known.pin((HOST, b.port), trusted)  # as if b's address had served a's certificate
        with pytest.raises(CertificateMismatch) as caught:
            await dial(b.port, known)
        text = str(caught.value)
        assert "CERTIFICATE" in text and "CHANGED" in text
        assert trusted in text and presented in text
        assert str(tmp_path / KNOWN_SERVERS_FILE) in text and "--tls-fingerprint" in text
        assert isinstance(caught.value, PeerError)
        assert not isinstance(caught.value, ServerUnreachable)  # never retried silently
        assert (caught.value.trusted, caught.value.presented) == (trusted, presented)
        assert known.get((HOST, b.port)) == trusted  # the pin is not replaced
        # Nothing was sent to it. (Its handshake may or may not have finished before
        # the client hung up: a reset can overtake the client's last handshake bytes.)
        assert not isinstance(await b.next_outcome(), bytes)

        # A man in the middle: a's name and port, b's certificate.
        await dial(a.port, known)
        with pytest.raises(CertificateMismatch):
            await dial(b.port, known, server=(HOST, a.port))
        assert KnownServers(tmp_path).get((HOST, a.port)) == trusted


async def test_operator_given_fingerprint_must_match(
    cert_a: tuple[Path, Path], cert_b: tuple[Path, Path]
) -> None:
    known = KnownServers(None)
    async with tls_server(*cert_a) as server:
        wrong = fingerprint_of_file(cert_b[0])
        with pytest.raises(CertificateMismatch, match="--tls-fingerprint") as caught:
            await dial(server.port, known, expected=wrong)
        assert wrong in str(caught.value)
        assert known.get((HOST, server.port)) is None  # nothing pinned

        # The right one, pasted lower-case without colons, replaces a stale pin.
        right = fingerprint_of_file(cert_a[0])
        known.pin((HOST, server.port), wrong)
        _, ssl_stream, fp, first_use = await dial(
            server.port, known, expected=right.replace(":", "").lower()
        )
        assert (fp, first_use) == (right, False)
        assert known.get((HOST, server.port)) == right
        await ssl_stream.aclose()


async def test_a_real_certificate_is_checked_by_its_ca_and_not_pinned(
    cert_a: tuple[Path, Path], cert_b: tuple[Path, Path]
) -> None:
    known = KnownServers(None)
    async with tls_server(*cert_a) as server:
        for name in (HOST, "localhost"):  # both are in the certificate's names
            _, ssl_stream, _, first_use = await dial(
                server.port, known, (name, server.port), context=client_context(cert_a[0])
            )
            assert first_use is False
            await ssl_stream.aclose()
        assert known.get((HOST, server.port)) is None
        with pytest.raises(TLSHandshakeFailed, match="not trusted"):
            await dial(server.port, known, context=client_context(cert_b[0]))
        with pytest.raises(TLSHandshakeFailed, match="not trusted"):
            await dial(
                server.port,
                known,
                ("other.example", server.port),
                context=client_context(cert_a[0]),
            )


async def test_a_plain_tcp_client_fails_cleanly(cert_a: tuple[Path, Path]) -> None:
    async with tls_server(*cert_a) as server:
        with trio.fail_after(DEADLINE):
            raw = await trio.open_tcp_stream(HOST, server.port)
            await raw.send_all(b"username: alice\n")
            received = b""
            with suppress(trio.BrokenResourceError):  # a reset ends it as cleanly as EOF
                while data := await raw.receive_some():
                    received += data
            await raw.aclose()
        # One line in clear that says what to do, then the end: nothing else.
        assert received == PLAIN_CLIENT_HINT
        outcome = await server.next_outcome()
        assert isinstance(outcome, TLSHandshakeError)
        assert "does not speak TLS" in str(outcome)


async def test_a_plain_tcp_server_fails_the_tls_client_cleanly(tmp_path: Path) -> None:
    async def greet(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(b'Servidor[USERNAME]: Who are you? Send "username: NAME"\n')
            with trio.move_on_after(DEADLINE):
                while await stream.receive_some():
                    pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, greet, 0, host=HOST))
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(DEADLINE):
            raw = await trio.open_tcp_stream(HOST, port)
            with pytest.raises(TLSHandshakeFailed, match="plain text") as caught:
                await open_tls(raw, (HOST, port), KnownServers(tmp_path), None, DEADLINE)
        assert isinstance(caught.value, ServerUnreachable)  # a reconnect loop may retry
        assert raw.socket.fileno() == -1  # closed for the caller
        assert not (tmp_path / KNOWN_SERVERS_FILE).exists()
        nursery.cancel_scope.cancel()


# -- handshake deadlines (memory streams, virtual time) --------------------------
async def test_a_silent_client_is_dropped_at_the_deadline(
    cert_a: tuple[Path, Path], autojump_clock: trio.testing.MockClock
) -> None:
    ours, theirs = socket.socketpair()
    transport = TLSTransport(ours, server_context(*cert_a))
    start = trio.current_time()
    with trio.fail_after(DEADLINE), pytest.raises(TLSHandshakeError, match="timed out"):
        await transport.handshake(SHORT)
    assert trio.current_time() - start == pytest.approx(SHORT)
    assert ours.fileno() == -1  # the server's end was closed
    with theirs:
        assert theirs.recv(100) == b""


async def test_a_silent_server_fails_the_client_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(DEADLINE), pytest.raises(TLSHandshakeFailed, match="timed out"):
        await open_tls(client, (HOST, 7777), KnownServers(None), None, SHORT)  # type: ignore[arg-type]
    with trio.fail_after(DEADLINE):
        assert await server.receive_some()  # the ClientHello
        assert await server.receive_some() == b""  # then the client hung up


# -- the server's TLS transport under load (a real socket pair) ---------------
@asynccontextmanager
async def tls_pair(
    cert: tuple[Path, Path],
) -> AsyncIterator[tuple[TLSTransport, trio.SSLStream[trio.SocketStream], socket.socket]]:
    """The server's TLSTransport on one end of a socket pair, a trio TLS client
    on the other, both through the handshake."""
    ours, theirs = socket.socketpair()
    transport = TLSTransport(ours, server_context(*cert))
    client = trio.SSLStream(
        trio.SocketStream(trio.socket.from_stdlib_socket(theirs)), client_context()
    )
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.handshake, DEADLINE)
            nursery.start_soon(client.do_handshake)
    try:
        yield transport, client, theirs
    finally:
        await transport.aclose()
        await trio.aclose_forcefully(client)


async def test_tls_output_the_socket_does_not_take_is_written_later_in_order(
    cert_a: tuple[Path, Path],
) -> None:
    theirs_buf = 1 << 16
    async with tls_pair(cert_a) as (transport, client, theirs):
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, theirs_buf)
        async with trio.open_nursery() as writers:
            conn = Connection(transport, "192.0.2.1", 100_000, spawn=writers.start_soon)
            lines = [b"%06d " % i + b"y" * 4000 + b"\n" for i in range(400)]  # ~1.6 MB
            for line in lines:
                conn.send(line)  # far more than the socket buffers hold
            assert conn.writing and transport.backlog  # the writer took over
            got = bytearray()
            with trio.fail_after(DEADLINE):
                while len(got) < sum(map(len, lines)):
                    got += await client.receive_some()
                await conn.wait_written()
            assert bytes(got) == b"".join(lines)
            assert not transport.backlog and not conn.aborted


async def test_tls_records_in_both_directions_and_a_clean_close(cert_a: tuple[Path, Path]) -> None:
    async with tls_pair(cert_a) as (transport, client, _):
        with trio.fail_after(DEADLINE):
            await client.send_all(b"username: alice\n")
            assert await transport.receive() == b"username: alice\n"
            assert transport.try_send(b"Servidor[PASSWORD]: Password for alice\n") > 0
            assert await client.receive_some() == b"Servidor[PASSWORD]: Password for alice\n"
            await client.aclose()  # close_notify, then the TCP close
            assert await transport.receive() == b""  # the end, once, not a busy loop


async def test_a_tls_server_logs_in_over_tls_and_refuses_past_its_cap(
    cert_a: tuple[Path, Path],
) -> None:
    """The whole server over TLSTransport: the login dialogue, then a
    connection past the per-address cap gets its BYE (encrypted) and an end."""
    server = Server(
        SqliteStore(":memory:"),
        passwords=Passwords(fast_hasher()),
        limits=Limits(max_conns_per_ip=1),
    )
    server.tls_context = server_context(*cert_a)

    async def open_client(port: int) -> trio.SSLStream[trio.SocketStream]:
        client = trio.SSLStream(await trio.open_tcp_stream(HOST, port), client_context())
        await client.do_handshake()
        return client

    async def read_until(client: trio.SSLStream[trio.SocketStream], marker: bytes) -> bytes:
        got = b""
        while marker not in got:
            data = await client.receive_some()
            if not data:
                break
            got += data
        return got

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve, HOST, 0)
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(DEADLINE):
            alice = await open_client(port)
            assert b"Servidor[USERNAME]" in await read_until(alice, b"\n")
            await alice.send_all(b"username: alice\npassword: alice-secret\n")
            assert b"Servidor[TOKEN]" in await read_until(alice, b"Servidor[TOKEN]")
            second = await open_client(port)
            refused = await read_until(second, b"\n")
            assert refused.startswith(b"Servidor[BYE]: Too many connections from your address")
            with suppress(trio.BrokenResourceError):  # the end, clean or not
                assert await read_until(second, b"never") == b""
            await alice.send_all(b"::quit\n")
            assert b"Servidor[BYE]: Goodbye" in await read_until(alice, b"Goodbye")
            await trio.aclose_forcefully(alice)
            await trio.aclose_forcefully(second)
        nursery.cancel_scope.cancel()
