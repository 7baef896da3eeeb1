"""What operators see (rendezvous/metrics.py): a real ``chathack-rendezvous
--metrics`` scraped before and after logins, a relayed conversation, stored
mail, a wrong password and a refused connection; each counter moves by
exactly what happened, the health checks answer, and no label or value
holds a user name or an address. Plus ``--log-format json``."""

from __future__ import annotations

import json
import logging
import platform
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from chathack import __version__
from tests.procs import Rendezvous

ROOT = Path(__file__).resolve().parent.parent
#: Seconds any one answer may take (argon2 with its default cost included).
DEADLINE = 20.0
NAMES = ("alice", "bob", "carol")
#: Well-formed and nearly well-formed requests, beside the random bytes.
_REQUESTS = [
    b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.0\r\n\r\n",
    b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc",
    b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"y" * 20000 + b"\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n",
]


class Client:
    """The rendezvous protocol as ``nc`` speaks it, over a blocking socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.buf = b""

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def expect(self, pattern: str) -> str:
        """The first line (from here on) matching ``pattern``; earlier ones dropped."""
        end = time.monotonic() + DEADLINE
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                text = line.decode()
                if re.search(pattern, text):
                    return text
            if time.monotonic() > end:
                raise AssertionError(f"never got {pattern!r}")
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError(f"closed before {pattern!r}")
            self.buf += data

    def login(self, name: str, password: str) -> Client:
        self.send(f"username: {name}")
        self.send(f"password: {password}")
        self.expect(r"^Servidor\[OK\]")
        return self

    def close(self) -> None:
        self.sock.close()


def scrape(base: str) -> dict[str, float]:
    """Every sample of /metrics as ``name{label="v",...}`` -> value."""
    with urllib.request.urlopen(base + "/metrics", timeout=DEADLINE) as answer:
        body = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    return samples


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=DEADLINE) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Rendezvous, str]]:
    r = Rendezvous(
        tmp_path / "db.sqlite3",
        "--metrics",
        "127.0.0.1:0",
        "--max-conns-per-ip",
        "3",
        "--log-format",
        "json",
    )
    try:
        r.proc.expect(r"metrics on (http://[\d.]+:\d+)/metrics")
        yield r, r.proc.match.group(1)
    finally:
        r.stop()


def test_each_counter_moves_by_what_happened(server: tuple[Rendezvous, str]) -> None:
    rendezvous, base = server
    before = scrape(base)
    python, version = _versions(before)
    assert version == __version__ and python == platform.python_version()

    alice = Client(rendezvous.port).login("alice", "alice-password")
    bob = Client(rendezvous.port).login("bob", "bob-password")
    carol = Client(rendezvous.port).login("carol", "carol-password")
    carol.send("::quit")
    carol.expect(r"^Servidor\[BYE\]")
    carol.close()
    for i in range(3):
        alice.send(f"msg: bob hello {i}")
    for i in range(3):
        bob.expect(rf"^alice: hello {i}$")
    alice.send("mail: carol m-1 see you tomorrow")
    alice.expect(r"^Servidor\[STORED\]")
    wrong = Client(rendezvous.port)
    wrong.send("username: carol")
    wrong.send("password: not-her-password")
    wrong.expect(r"^Servidor\[ERROR\]: Wrong password")
    refused = Client(rendezvous.port)  # alice, bob, wrong: the fourth from this address
    refused.expect(r"^Servidor\[BYE\]: Too many connections from your address")
    refused.close()

    after = scrape(base)

    def moved(sample: str) -> float:
        return after.get(sample, 0.0) - before.get(sample, 0.0)

    assert moved('chathack_logins_total{outcome="registered"}') == 3
    assert moved('chathack_logins_total{outcome="failed"}') == 1
    assert moved("chathack_relayed_lines_total{}") == 3
    assert moved("chathack_relayed_bytes_total{}") == 3 * len(b"alice: hello 0\n")
    assert moved('chathack_mail_total{event="stored"}') == 1
    assert after['chathack_mailbox_waiting{unit="messages"}'] == 1
    assert moved('chathack_connections_refused_total{reason="per_address"}') == 1
    assert moved("chathack_connections_accepted_total{}") == 4  # alice, bob, carol, wrong
    assert after['chathack_connections{state="logged_in"}'] == 2
    assert after['chathack_connections{state="logging_in"}'] == 1  # the wrong password's
    assert moved("chathack_password_hash_wait_seconds_count{}") == 4  # 3 hashes, 1 check
    assert moved("chathack_read_handled_seconds_count{}") > 0
    assert sum(v for k, v in after.items() if k.startswith("chathack_connection_faults")) == 0

    # Nothing anywhere in the page names a user or an address.
    with urllib.request.urlopen(base + "/metrics", timeout=DEADLINE) as answer:
        page = answer.read().decode()
    for secret in (*NAMES, "127.0.0.1", "hello", "see you"):
        assert secret not in page, secret

    assert get(base + "/healthz") == (200, "ok\n")
    assert get(base + "/readyz") == (200, "ready\n")
    assert get(base + "/nothing")[0] == 404
    for c in (alice, bob, wrong):
        c.close()


def test_an_instance_on_redis_is_not_ready_while_redis_is_gone(tmp_path: Path) -> None:
    from tests.redis_lab import redis_server

    with redis_server(tmp_path / "redis") as redis:
        r = Rendezvous(
            tmp_path / "db.sqlite3",
            "--redis", redis.url, "--instance-id", "a-1", "--metrics", "127.0.0.1:0",
        )  # fmt: skip
        try:
            r.proc.expect(r"metrics on (http://[\d.]+:\d+)/metrics")
            base = r.proc.match.group(1)
            assert get(base + "/readyz") == (200, "ready\n")
            page = scrape(base)
            assert page['chathack_instance_info{instance="a-1"}'] == 1
            assert page["chathack_redis_commands_total{}"] > 0
            redis.kill()
            status, why = get(base + "/readyz")
            assert status == 503 and why.startswith("not ready: Redis does not answer"), why
            assert get(base + "/healthz") == (200, "ok\n")  # the process itself serves on
            assert scrape(base)['chathack_redis_errors_total{kind="down"}'] >= 1
            redis.start()
            end = time.monotonic() + DEADLINE
            while get(base + "/readyz")[0] != 200:
                assert time.monotonic() < end, "never ready again"
                time.sleep(0.1)
        finally:
            r.stop()


def test_json_logs_are_one_object_a_line_with_fields(server: tuple[Rendezvous, str]) -> None:
    rendezvous, _ = server
    Client(rendezvous.port).login("dave", "dave-password").close()
    rendezvous.proc.expect(r'\{[^\n]*"event": "%s logged in from %s"[^\n]*\}')
    line = json.loads(rendezvous.proc.match.group(0))
    assert line["level"] == "info" and line["logger"] == "chathack.rendezvous"
    assert line["args"] == ["dave", "127.0.0.1"]
    assert line["message"] == "dave logged in from 127.0.0.1"


def _versions(samples: dict[str, float]) -> tuple[str, str]:
    [key] = [k for k in samples if k.startswith("chathack_build_info")]
    labels = dict(re.findall(r'(\w+)="([^"]*)"', key))
    return labels["python"], labels["version"]


async def test_every_metric_the_docs_and_the_dashboard_name_is_exported(tmp_path: Path) -> None:
    from rendezvous.metrics import MetricsApp
    from rendezvous.server import Server
    from rendezvous.store import SqliteStore

    store = SqliteStore(tmp_path / "db.sqlite3")
    try:

        async def ready() -> None:
            return None

        exported: set[str] = set()
        for instance in (None, "a-1"):  # one instance alone, one of several
            app = MetricsApp(Server(store), ready, instance=instance)
            status, _, body = await app.respond("GET", "/metrics")
            assert status == 200
            for family in text_string_to_metric_families(body.decode()):
                exported |= {family.name, f"{family.name}_total"}  # a counter with no sample yet
                exported |= {s.name for s in family.samples}
    finally:
        store.close()
    named = set()
    for doc in ("docs/OPERATIONS.md", "examples/grafana-chathack.json"):
        named |= set(re.findall(r"chathack_[a-z_]+", (ROOT / doc).read_text()))
    named -= {"chathack_relayed_"}  # "chathack_relayed_lines_total, chathack_relayed_bytes_total"
    missing = sorted(n for n in named if n not in exported)
    assert not missing, missing


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


def _ask(data: bytes) -> tuple[bytes, list[str]]:
    """``data`` sent to the metrics port's handler over a memory stream, then
    EOF: what came back before it closed, and the errors it logged."""
    from rendezvous.metrics import MetricsApp, answer
    from rendezvous.server import Server
    from rendezvous.store import SqliteStore

    errors = _Errors()
    logging.getLogger("chathack.rendezvous.metrics").addHandler(errors)
    store = SqliteStore(":memory:")

    async def ready() -> None:
        return None

    async def one() -> bytes:
        client, server_side = trio.testing.memory_stream_pair()
        app = MetricsApp(Server(store), ready)
        got = b""
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer, app, server_side)
                await client.send_all(data)
                await client.send_eof()
                while chunk := await client.receive_some(65536):
                    got += chunk
        return got

    try:
        return trio.run(one), errors.seen
    finally:
        store.close()
        logging.getLogger("chathack.rendezvous.metrics").removeHandler(errors)


@given(st.binary(max_size=1500) | st.sampled_from(_REQUESTS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_bytes_on_the_metrics_port_get_an_http_answer_or_a_close(data: bytes) -> None:
    """The metrics port is fed from the network: whatever arrives, the answer
    is HTTP or nothing, the connection closes, and no bug is logged."""
    got, errors = _ask(data)
    assert got == b"" or got.startswith(b"HTTP/1.1 "), got[:80]
    assert errors == []


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (_REQUESTS[0], b"200"),
        (_REQUESTS[1], b"200"),
        (_REQUESTS[3], b"405"),
        (b"\x16\x03\x01 a TLS hello, or any junk\r\n\r\n", b"400"),
        (b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
    ],
)
def test_the_metrics_port_answers_what_it_was_asked(request_bytes: bytes, status: bytes) -> None:
    got, errors = _ask(request_bytes)
    assert got.startswith(b"HTTP/1.1 " + status), got[:80]
    assert errors == []


def test_a_busy_metrics_port_is_told_as_such(tmp_path: Path) -> None:
    import subprocess

    from tests.procs import command

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [
                command("chathack-rendezvous"), "--host", "127.0.0.1", "--port", "0",
                "--db", str(tmp_path / "db.sqlite3"), "--metrics", f"127.0.0.1:{port}",
            ],
            capture_output=True, text=True, timeout=DEADLINE,
        )  # fmt: skip
    assert done.returncode == 2
    assert f"--metrics 127.0.0.1:{port}: cannot listen" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
