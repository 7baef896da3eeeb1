"""Network fuzz: mutated input from many connections at real processes, on loopback.

One ``chathack-rendezvous`` and two ``chathack-peer`` processes (alice and
bob, plain mode, talking over a direct link) run on 127.0.0.1. While alice and
bob exchange numbered messages, about 40 fuzz connections at a time send
mutated input (the corpus is tests/netfuzz_corpus.py, the connections
tests/netfuzz_load.py):

* to the rendezvous, from 127.0.1.x: the grammar's lines (docs/PROTOCOL.md)
  under every line operator -- bit flips, control bytes, a CR inside a line
  (``::us\\rers``), ESC/OSC sequences, invalid UTF-8, odd Unicode, odd and
  huge names, mangled keywords, lines far over 16 KiB sent at once or
  dribbled, lines split across writes, cut short, left half-finished or reset
  -- before and after logging in; half-finished logins; and, aimed at alice
  and bob, ``msg:`` with mutated link frames, ``mail:`` sealed to their keys
  around mutated contents, ``connect:``/``punch:`` to a listener of the
  fuzzer's that answers their dials with junk. The last seconds are a storm
  of wrong passwords, many abandoned at once;
* to alice's and bob's direct ports, from 127.0.2.x: mutated frames raw,
  after a valid hello, and sealed inside a key exchange the fuzzer completes
  (honestly, or offering a small-order X25519 key); damaged framing.

Every operator meets every seed at least once (the coverage pass, checked
without a network by ``test_fuzz_corpus_covers_every_operator_on_every_seed``);
random sessions follow until :data:`LOAD_SECONDS` is over.

Then it checks, and reports every failure together: no process exited; none
logged a traceback (peers run with ``--log-level debug``, so a crash prints
one) or an "unexpected" exception its fault isolation caught; every numbered
message was shown exactly once, in order; a new user registers (the full
username/password dialogue) within :data:`REGISTER_WITHIN` s of the load
stopping; nothing the server sent and nothing a peer printed holds control
or format characters or a forged line; the RSS of each process stayed within
bounds, and the rendezvous holds at most :data:`IDLE_KIB_PER_CONNECTION_MAX`
KiB per idle connection (:data:`IDLE_CONNECTIONS` that sent junk and a nearly
full line); and a user who planted a bogus identity key does not kill the
peer that writes to it.

The rendezvous runs with its real argon2id hasher: the process has no flag
for a cheaper one, and the registration check means something only at the
real cost, since the junk logins queue real hashes before the newcomer's.

Environment: ``CHATHACK_FUZZ_SEED`` (replay; printed in every failure),
``CHATHACK_FUZZ_SECONDS`` (a longer soak), ``CHATHACK_FUZZ_SKIP`` (leave
operators out, to find the crash behind the first one), ``CHATHACK_FUZZ_LOGS``
(a folder for the three processes' logs). A replay sends the same mutations;
timing, keys, ports and tokens differ between runs.

Conventions as in test_hostile: only 127.0.0.0/8 (``lan:`` lines that would
send a peer elsewhere are rewritten); every wait has a deadline; the only
sleeps pace load or sample memory; everything opened is closed in
``finally``; the lab ends the processes even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import time
from collections import Counter
from pathlib import Path

import pexpect
import pytest
import trio
from nacl.signing import SigningKey

from chathack.protocol import MAX_LINE_BYTES
from peer.identity import load_identity
from tests.helpers import LineClient
from tests.netfuzz_corpus import (
    ESCAPES,
    FRAME_OPS,
    FRAME_SEEDS,
    FUZZ_SEED,
    KNOWN_CRASHERS,
    KX_OPS,
    LINE_OPS,
    LOGGED_IN_SEEDS,
    MAIL_OPS,
    PRE_LOGIN_SEEDS,
    RV_WORKERS,
    SKIP,
    STREAM_OPS,
    Fuzzer,
    Target,
    active,
    bitflip,
    direct_plans,
    ends_session,
    loopback_only,
    make_fuzzer,
    render_session,
    rendezvous_plans,
)
from tests.netfuzz_load import (
    LOGIN_SECONDS,
    SESSION_SECONDS,
    FuzzConn,
    Tally,
    direct_worker,
    log_in,
    rv_worker,
    unsafe,
)
from tests.procs import Lab, Peer, Rendezvous
from tests.test_hostile import open_from

#: Seconds the fuzzers and the chat run (``$CHATHACK_FUZZ_SECONDS`` for a soak).
LOAD_SECONDS = float(os.environ.get("CHATHACK_FUZZ_SECONDS", "12"))
#: Fuzz connections to the peers' direct ports at a time.
DIRECT_WORKERS = 16
#: The last seconds of the load are a login storm (netfuzz_load.login_storm):
#: the newcomer then registers behind what it queued.
STORM_SECONDS = 2.5
#: Numbered messages each way between alice and bob.
CHAT_MESSAGES = 60
#: Seconds the last message may take to show after the load stops.
DELIVERY_SECONDS = 30.0
#: A new user must be registered this soon after the load stops.
REGISTER_WITHIN = 1.0
#: Idle connections for the memory measurement, and per source address.
IDLE_CONNECTIONS = 200
IDLE_PER_ADDRESS = 8
#: Bound on the server's memory per idle connection that sent junk and a
#: nearly full (16 KiB) unterminated line: the line it must keep, plus the
#: connection's fixed cost.
IDLE_KIB_PER_CONNECTION_MAX = 48
#: Bounds on RSS growth during the load, KiB (argon2: 64 MiB per hash, 2 at a time).
RSS_GROWTH_MAX_KIB = {"rendezvous": 200 * 1024, "alice": 100 * 1024, "bob": 100 * 1024}

#: A message whose text carried a line break, printed as two lines: the second
#: one poses as a message from somebody else (MAIL_OPS "cr_text").
FORGED_RE = re.compile(r"^[A-Za-z0-9_.-]+: a forged line")


# --------------------------------------------------------------------------
# The processes: chat, memory, and what they printed
# --------------------------------------------------------------------------


def keep_logs(folder: Path, logs: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, log in logs.items():
        (folder / f"{name}.log").write_text(log)


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB; None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


async def settled_rss(pid: int) -> int | None:
    """VmRSS of ``pid`` once it holds still: within 64 KiB over a second (at
    most ten seconds of sampling). After the load the server frees what it
    used for a while (argon2's 64 MiB areas as queued hashes finish, garbage
    as the periodic collection runs): a reading taken meanwhile is noise."""
    window: list[int] = []
    with trio.move_on_after(10):
        while True:
            kib = rss_kib(pid)
            if kib is None:
                return None
            window = [*window[-9:], kib]
            if len(window) == 10 and max(window) - min(window) <= 64:
                break
            await trio.sleep(0.1)  # sampling, not synchronisation
    return min(window) if window else None


async def watch_rss(pids: dict[str, int], tally: Tally) -> None:
    while True:
        for name, pid in pids.items():
            kib = rss_kib(pid)
            if kib is not None:
                tally.rss.setdefault(name, []).append(kib)
        await trio.sleep(0.1)


async def chat(alice: Peer, bob: Peer, typed: Counter) -> None:
    """alice and bob type numbered lines into their conversation, paced over the
    load; a peer that died is skipped (``typed`` counts what each one typed).
    Each names its partner (``msg: NAME TEXT``): which conversation plain text
    goes to is the UI's choice, not what this test is about."""
    for i in range(CHAT_MESSAGES):
        for sender, partner, tag in ((alice, bob, "a2b"), (bob, alice, "b2a")):
            if typed[sender.name] == i:
                with contextlib.suppress(OSError):  # its stdin is gone: it died
                    sender.send(f"msg: {partner.name} {tag} {i:04d}")
                    typed[sender.name] += 1
        await trio.sleep(LOAD_SECONDS / CHAT_MESSAGES)  # pacing: people typing


def delivery_problems(receiver: Peer, sender: str, tag: str, typed: int) -> list[str]:
    """Which of the ``typed`` numbered lines from ``sender`` ``receiver`` lost,
    showed twice or showed out of order."""
    pattern = re.compile(rf"(?m)^{sender}: {tag} (\d{{4}})\r?$")
    got = [int(n) for n in pattern.findall(receiver.transcript.getvalue())]
    counts = Counter(got)
    missing = sorted(set(range(typed)) - set(got))
    doubled = sorted(n for n, c in counts.items() if c > 1)
    problems = []
    if missing:
        problems.append(
            f"{receiver.name} never showed {sender}'s messages {_ranges(missing)} "
            f"(of 0-{typed - 1} typed)"
        )
    if doubled:
        problems.append(
            f"{receiver.name} showed {sender}'s messages {_ranges(doubled)} twice or more"
        )
    firsts = list(dict.fromkeys(got))
    if firsts != sorted(firsts):
        problems.append(f"{receiver.name} showed {sender}'s messages out of order: {firsts}")
    return problems


def _ranges(numbers: list[int]) -> str:
    out: list[str] = []
    for n in numbers:
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


def tracebacks(log: str) -> list[str]:
    """Every traceback in ``log`` (up to its exception line), and the peer's
    one-line crash report, shortened."""
    found: list[str] = []
    lines = log.splitlines()
    k = 0
    while k < len(lines):
        if "Traceback (most recent call last)" in lines[k]:
            end = k + 1
            while end < len(lines) and (lines[end][:1].isspace() or not lines[end]):
                end += 1
            found.append(_shorten("\n".join(lines[k : end + 1])))
            k = end + 1
        else:
            if "chathack-peer: unexpected error:" in lines[k]:
                found.append(lines[k])
            k += 1
    return found


#: The one line a process logs for an exception its fault isolation caught
#: (docs/OPERATIONS.md: "a bug met while serving one client ... worth reporting").
UNEXPECTED_RE = re.compile(r"\b(?:ERROR|CRITICAL) chathack\.\w+: .*\bunexpected\b.*")


def unexpected_errors(log: str) -> list[str]:
    """The distinct "unexpected exception" lines in ``log`` (the first of each kind)."""
    kinds: dict[str, str] = {}
    for m in UNEXPECTED_RE.finditer(log):
        kind = re.sub(r"\d+(\.\d+)*|fz\w+", "#", m.group(0))[:120]
        kinds.setdefault(kind, m.group(0)[:300])
    return list(kinds.values())


def _shorten(block: str, keep: int = 2400) -> str:
    return (
        block if len(block) <= keep else block[: keep // 3] + "\n  ...\n" + block[-2 * keep // 3 :]
    )


def printed_controls(peer: Peer) -> list[str]:
    """Lines ``peer`` printed that could drive or fool its reader's terminal:
    control or format characters, or a line forged by a line break in a message."""
    lines = peer.transcript.getvalue().splitlines()
    shown = [line.rstrip("\r") for line in lines]
    return [repr(line[:160]) for line in shown if unsafe(line) or FORGED_RE.match(line)][:5]


async def expect_in_thread(peer: Peer, pattern: object, seconds: float) -> bool:
    """pexpect blocks: wait for ``pattern`` in a thread, under a trio deadline too."""

    def wait() -> bool:
        try:
            peer.proc.expect(pattern, timeout=seconds)
            return True
        except (pexpect.TIMEOUT, pexpect.EOF):
            return False

    with trio.move_on_after(seconds + 5):
        return await trio.to_thread.run_sync(wait, abandon_on_cancel=True)
    return False


async def register_newcomer(port: int) -> tuple[float | None, str]:
    """Seconds from connecting to ``Servidor[OK]`` for a brand-new user (and when
    each step came), or None and why it failed."""
    start = trio.current_time()
    why = ""
    steps = ""
    try:
        with trio.fail_after(20):
            stream = await open_from("127.0.0.5", port)
            conn = FuzzConn(stream, Tally())
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(conn.read_all)
                    w = Fuzzer(
                        0, "127.0.0.5", "newcomer", "newcomer-password", SigningKey.generate(), ""
                    )
                    if not await log_in(conn, w):
                        why = f"the login dialogue failed: {conn.lines[-5:]}"
                    ok = next((line for line in conn.lines if line.startswith("Servidor[OK]")), "")
                    if not why and not ok.startswith("Servidor[OK]: Registered newcomer"):
                        why = f"no registration: {conn.lines[-5:]}"
                    steps = ", ".join(
                        f"{line.split(']')[0].removeprefix('Servidor[')} at {at - start:.2f} s"
                        for line, at in zip(conn.lines, conn.times, strict=True)
                        if line.startswith(
                            ("Servidor[USERNAME]", "Servidor[PASSWORD]", "Servidor[OK]")
                        )
                    )
                    nursery.cancel_scope.cancel()
            finally:
                await trio.aclose_forcefully(stream)
    except* trio.TooSlowError:
        why = "no Servidor[OK] within 20 s"
    except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as group:
        why = f"the connection failed: {group.exceptions[0]!r}"
    if why:
        return None, why
    return trio.current_time() - start, steps


#: An identity key the rendezvous takes (``KEY_RE``: 43 base64 characters and
#: "=") that is no Ed25519 point: a peer sealing mail to it meets a CryptoError.
#: The fuzzers' bit-flipped ``key:`` lines plant such keys too, at random.
BOGUS_KEY = "A" * 43 + "="


async def planted_key(port: int, victim: Peer) -> list[str]:
    """User "keytrap" registers :data:`BOGUS_KEY` and leaves; ``victim`` then
    writes to keytrap, which seals mail to the key the rendezvous vouches."""
    try:
        with trio.fail_after(30):
            client = LineClient(await open_from("127.0.0.6", port), deadline=20)
            try:
                await client.login("keytrap", "keytrap-password")
                await client.send_line(f"key: {BOGUS_KEY}")
                await client.expect("OK")
                await client.send_line("::quit")
                await client.read_until_eof()
            finally:
                await client.aclose()
    except (trio.TooSlowError, OSError, AssertionError) as e:
        return [f"the key trap could not be set: {e!r}"]
    with contextlib.suppress(OSError):
        victim.send("msg: keytrap are you there?")
    await expect_in_thread(victim, r"keytrap is offline|unexpected error", 10)
    await expect_in_thread(victim, pexpect.EOF, 1)  # it exits now, or it does not
    if victim.proc.proc.poll() is not None:
        return [
            f"{victim.name} died writing to keytrap, offline, whose identity key as the "
            f"rendezvous vouches it is key={BOGUS_KEY} (set with 'key: {BOGUS_KEY}')"
        ]
    return []


async def idle_connection(port: int, ip: str, n: int, held: list[trio.SocketStream]) -> bool:
    """Connect, send two bad lines and a nearly full unterminated line, and stay.

    True once the server has answered both bad lines (so it has read the rest)."""
    rng = random.Random(f"{FUZZ_SEED}:idle:{n}")
    stream = await open_from(ip, port)
    held.append(stream)
    conn = FuzzConn(stream, Tally())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.read_all)
        junk = [bitflip(rng, b"::users\xff"), rng.choice(ESCAPES) + b"username"]
        partial = rng.randbytes(rng.randint(12_000, MAX_LINE_BYTES - 2)).replace(b"\n", b" ")
        await stream.send_all(b"\n".join(junk) + b"\n" + partial)
        first = await conn.wait_for(("Servidor[ERROR]",))
        second = await conn.wait_for(("Servidor[ERROR]",), first[0] + 1) if first else None
        nursery.cancel_scope.cancel()
    return second is not None


async def measure_idle(port: int, pid: int) -> tuple[float | None, str]:
    """KiB of server memory per idle connection that sent junk (VmRSS delta / N)."""
    held: list[trio.SocketStream] = []
    try:
        before = await settled_rss(pid)
        answered = 0
        limiter = trio.CapacityLimiter(50)

        async def one(n: int) -> None:
            nonlocal answered
            async with limiter:
                ip = f"127.0.3.{n // IDLE_PER_ADDRESS + 1}"
                try:
                    ok = await idle_connection(port, ip, n, held)
                    answered += ok  # not "+= await": that reads the count before waiting
                except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # counted as not answered

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for n in range(IDLE_CONNECTIONS):
                    nursery.start_soon(one, n)
        after = await settled_rss(pid)
        if before is None or after is None:
            return None, "the rendezvous is not running"
        if answered < IDLE_CONNECTIONS:
            return None, f"only {answered} of {IDLE_CONNECTIONS} idle connections were answered"
        return (after - before) / IDLE_CONNECTIONS, ""
    except trio.TooSlowError:
        return None, "opening the idle connections took over 30 s"
    finally:
        for stream in held:
            await trio.aclose_forcefully(stream)


async def quit_peer(peer: Peer) -> int | None:
    """``::quit`` and wait for the exit (its whole output is then in the transcript)."""
    if peer.proc.proc.poll() is None:
        with contextlib.suppress(OSError):
            peer.send("::quit")
    await expect_in_thread(peer, pexpect.EOF, 15)
    try:
        return peer.proc.proc.wait(timeout=5)
    except Exception:
        return None


# --------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------


def test_fuzz_corpus_covers_every_operator_on_every_seed() -> None:
    """Deterministic coverage, without a network: every operator meets every
    seed in the coverage pass, the known crashers are in it, and a replay with
    the same seed renders the same bytes."""
    keys = {
        n: bytes(SigningKey(bytes([k + 1]) * 32).verify_key) for k, n in enumerate(["alice", "bob"])
    }
    t = Target(7777, {"alice": 40001, "bob": 40002}, keys)
    rv = [p for p in rendezvous_plans(random.Random(FUZZ_SEED), ("alice", "bob")) if p.coverage]
    post = {(i.template, i.op) for p in rv if p.logged_in for i in p.lines}
    pre = {(i.template, i.op) for p in rv if not p.logged_in for i in p.lines}
    line_ops, frame_ops = active("line", LINE_OPS), active("frame", FRAME_OPS)
    assert post >= {(s, op) for s in LOGGED_IN_SEEDS for op in line_ops}
    assert pre >= {(s, op) for s in PRE_LOGIN_SEEDS for op in line_ops}
    relayed = {i.sub for p in rv for i in p.lines if i.sub is not None}
    assert relayed >= {(s, op) for s in FRAME_SEEDS for op in frame_ops} | {
        (peer, op) for peer in ("alice", "bob") for op in active("mail", MAIL_OPS)
    }
    assert all(not ends_session(i) for p in rv for i in p.lines[:-1]), "a session ends early"
    assert all(len(p.lines) <= 4 for p in rv if not p.logged_in), "5 bad lines close a login"
    if "known" not in SKIP:
        assert {i.template for i in rv[0].lines} == set(KNOWN_CRASHERS)
    direct = [p for p in direct_plans(random.Random(FUZZ_SEED), ("alice", "bob")) if p.coverage]
    for stage in ("hello", "sealed"):
        pairs = {(s, op) for p in direct if p.stage == stage for s, op, _ in p.frames}
        assert pairs == {(s, op) for s in FRAME_SEEDS for op in frame_ops}
    raw = {(p.frames[0][0], p.stream_op) for p in direct if p.stage == "raw"}
    assert raw == {(s, op) for s in FRAME_SEEDS for op in active("stream", STREAM_OPS)}
    kxs = {(p.target, p.kx) for p in direct if p.stage == "sealed"}
    assert kxs == {(n, kx) for n in ("alice", "bob") for kx in active("kx", KX_OPS)}

    w = make_fuzzer("r", 0, "127.0.1.1")
    rendered = [render_session(p, w, t) for p in rv[:40]]
    again = [p for p in rendezvous_plans(random.Random(FUZZ_SEED), ("alice", "bob")) if p.coverage]
    for first, second in zip(rendered, [render_session(p, w, t) for p in again[:40]], strict=True):
        if not any(b"#cm1:" in data for data, _ in first):  # sealed mail has a random nonce
            assert first == second
    # A CR inside a logged-in command is there, whatever the seed.
    cr_lines = [p[0] for s in rendered for p in s if b"\r" in p[0].rstrip(b"\r\n")]
    assert "cr_inside" in SKIP or any(line.startswith(b"::") for line in cr_lines)


def test_loopback_only_rewrites_lan_lines_that_leave_loopback() -> None:
    assert loopback_only(b"lan: 127.0.3.4:80 127.0.0.1:1\n") == b"lan: 127.0.3.4:80 127.0.0.1:1\n"
    for bad in (
        b"lan: 203.0.113.1:80",
        b"lan: 127.0.0.1:1 198.51.100.1:2",
        b"lan: [::1]:80",
        b"lan: cafe:80",
    ):
        assert (
            loopback_only(b"::users\n" + bad + b"\r\nmsg: x y\n") == b"::users\nlan: -\nmsg: x y\n"
        )


@pytest.mark.e2e
@pytest.mark.slow
async def test_processes_survive_network_fuzzing_while_two_users_chat(world: Lab) -> None:
    started = time.monotonic()
    rendezvous: Rendezvous = world.rendezvous()
    peers: dict[str, Peer] = {}
    ports: dict[str, int] = {}
    for name in ("alice", "bob"):
        # debug: a peer that crashes prints its traceback
        peers[name] = world.peer(name, rendezvous, extra=("--log-level", "debug"))
        ports[name] = int(peers[name].expect(r"direct links come to port (\d+)").group(1))
    alice, bob = peers["alice"], peers["bob"]
    alice.logged_in()
    bob.logged_in()
    alice.send("connect: bob")
    for peer, partner in ((alice, "bob"), (bob, "alice")):
        # Whatever the wording ("Talking to X (direct)", "X opened a conversation
        # with you (direct)", "Now talking to X directly (direct)"): a direct link.
        try:
            peer.expect(rf"(?m)^\* [^\n]*\b{partner}\b[^\n]*\(direct\)")
        except pexpect.TIMEOUT:
            raise AssertionError(
                f"setup: no direct link between alice and bob; {peer.name} printed:\n"
                + peer.transcript.getvalue()[-3000:]
            ) from None
    keys = {n: bytes(load_identity(world.tmp / f"peer-{n}").verify_key) for n in peers}
    t = Target(rendezvous.port, ports, keys)
    pids = {
        "rendezvous": rendezvous.proc.proc.pid,
        **{n: p.proc.proc.pid for n, p in peers.items()},
    }
    rss_before = {name: rss_kib(pid) or 0 for name, pid in pids.items()}

    tally = Tally()
    rng = random.Random(FUZZ_SEED)
    rv_seed, d_seed = rng.getrandbits(64), rng.getrandbits(64)
    coverage_total = sum(
        p.coverage for p in rendezvous_plans(random.Random(rv_seed), ("alice", "bob"))
    )
    coverage_total += sum(p.coverage for p in direct_plans(random.Random(d_seed), ("alice", "bob")))
    rv_plans = rendezvous_plans(random.Random(rv_seed), tuple(peers))
    d_plans = direct_plans(random.Random(d_seed), tuple(peers))
    rv_fuzzers = [make_fuzzer("r", i, f"127.0.1.{i + 1}") for i in range(RV_WORKERS)]
    d_fuzzers = [make_fuzzer("d", i, f"127.0.2.{i + 1}") for i in range(DIRECT_WORKERS)]

    typed: Counter = Counter()
    load_start = trio.current_time()
    storm_at = load_start + LOAD_SECONDS - STORM_SECONDS
    with trio.fail_after(LOAD_SECONDS + LOGIN_SECONDS + SESSION_SECONDS + 30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_rss, pids, tally)
            async with trio.open_nursery() as load:
                for w in rv_fuzzers:
                    load.start_soon(rv_worker, w, rv_plans, t, tally, storm_at)
                for w in d_fuzzers:
                    load.start_soon(direct_worker, w, d_plans, t, tally)
                await chat(alice, bob, typed)
                load.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    load_seconds = trio.current_time() - load_start

    procs = {"rendezvous": rendezvous.proc.proc, "alice": alice.proc.proc, "bob": bob.proc.proc}

    def alive(name: str) -> bool:
        return procs[name].poll() is None

    died = {n: "during the fuzzing" for n in procs if not alive(n)}
    problems: list[str] = []

    # A newcomer registers at once.
    login_seconds, login_steps = None, "the rendezvous is not running"
    if alive("rendezvous"):
        login_seconds, login_steps = await register_newcomer(rendezvous.port)
    if login_seconds is None:
        problems.append(f"a new user could not register after the load: {login_steps}")
    elif login_seconds > REGISTER_WITHIN:
        problems.append(
            f"a new user took {login_seconds:.2f} s to register after the load "
            f"(the limit is {REGISTER_WITHIN} s; {login_steps})"
        )

    # Memory: growth during the load, and per idle connection.
    for name, samples in tally.rss.items():
        growth = max(samples, default=0) - rss_before[name]
        if growth > RSS_GROWTH_MAX_KIB[name]:
            problems.append(
                f"{name}'s RSS grew by {growth / 1024:.0f} MiB during the load "
                f"(bound {RSS_GROWTH_MAX_KIB[name] / 1024:.0f} MiB)"
            )
    kib_per_idle, why = None, "the rendezvous is not running"
    if alive("rendezvous"):
        kib_per_idle, why = await measure_idle(rendezvous.port, pids["rendezvous"])
    if kib_per_idle is None:
        problems.append(f"KiB per idle connection not measured: {why}")
    elif kib_per_idle > IDLE_KIB_PER_CONNECTION_MAX:
        problems.append(
            f"the rendezvous holds {kib_per_idle:.1f} KiB per idle connection "
            f"(bound {IDLE_KIB_PER_CONNECTION_MAX} KiB)"
        )

    # The last numbered lines arrive; both peers quit cleanly; nothing lost or doubled.
    pairs = ((bob, alice, "a2b"), (alice, bob, "b2a"))
    for receiver, sender, tag in pairs:
        last = f"{sender.name}: {tag} {typed[sender.name] - 1:04d}"
        if typed[sender.name] and alive(receiver.name) and alive(sender.name):
            pattern = rf"(?m)^{re.escape(last)}\r?$"
            if not await expect_in_thread(receiver, pattern, DELIVERY_SECONDS):
                problems.append(
                    f"{receiver.name} did not show {last!r} within {DELIVERY_SECONDS} s"
                )
    died |= {n: "after the fuzzing" for n in procs if not alive(n) and n not in died}

    # A key planted by one user must not kill whoever writes to that user. After
    # the delivery checks: its expect reads alice's output past what it matches.
    if alive("rendezvous") and alive("alice") and "keytrap" not in SKIP:
        problems += await planted_key(rendezvous.port, alice)
    died |= {n: "after the fuzzing" for n in procs if not alive(n) and n not in died}
    for peer in (alice, bob):
        was_alive = alive(peer.name)
        status = await quit_peer(peer)
        if was_alive and status != 0:
            problems.append(f"{peer.name} did not quit cleanly after ::quit: exit status {status}")
    for receiver, sender, tag in pairs:
        lost = delivery_problems(receiver, sender.name, tag, typed[sender.name])
        if sender.name in died or receiver.name in died:  # not the conversation's fault alone
            lost = [
                f"{p} ({'/'.join(n for n in (sender.name, receiver.name) if n in died)} exited)"
                for p in lost
            ]
        problems += lost
    rendezvous_alive = alive("rendezvous")
    status = rendezvous.stop()
    if rendezvous_alive and status != 0:
        problems.append(
            f"the rendezvous did not shut down cleanly on SIGTERM: exit status {status}"
        )
    problems[:0] = [
        f"{n} exited {when}, exit status {procs[n].returncode}" for n, when in died.items()
    ]

    logs = {
        "rendezvous": rendezvous.proc.read(),
        "alice": alice.transcript.getvalue(),
        "bob": bob.transcript.getvalue(),
    }
    if keep := os.environ.get("CHATHACK_FUZZ_LOGS"):  # a folder, for triage
        await trio.to_thread.run_sync(keep_logs, Path(keep), logs)
    for name, log in logs.items():
        for block in tracebacks(log):
            problems.append(f"{name} logged a traceback:\n{block}")
        for line in unexpected_errors(log):
            problems.append(
                f"{name} caught an unexpected exception (a bug its fault isolation hid): {line}"
            )
    for peer in (alice, bob):
        if shown := printed_controls(peer):
            problems.append(
                f"{peer.name} printed control/format characters or forged lines: {shown}"
            )
    if tally.reply_controls:
        problems.append(f"the rendezvous sent control/format characters: {tally.reply_controls}")
    if tally.reply_not_utf8:
        problems.append(f"the rendezvous sent lines that are not UTF-8: {tally.reply_not_utf8}")

    rss_peak = {n: max(s, default=0) for n, s in tally.rss.items()}
    print(
        f"\nnetfuzz: seed {FUZZ_SEED}; load {load_seconds:.1f} s, whole test "
        f"{time.monotonic() - started:.1f} s; sessions {dict(tally.sessions)}; "
        f"coverage-pass sessions started {sum(tally.coverage.values())} of {coverage_total}; "
        f"key exchanges run {tally.sealed_sessions}; lure dials {tally.lure_dials}; "
        f"login-storm attempts {tally.storm_attempts}; "
        f"{len(tally.covered)} (kind, seed, operator) combinations sent; "
        f"{tally.reply_lines} server lines read; refused {dict(tally.refused)}; "
        f"fuzzer logins failed {sum(tally.login_failures.values())}\n"
        f"netfuzz: newcomer registered in "
        f"{'-' if login_seconds is None else f'{login_seconds:.2f} s ({login_steps})'}; "
        f"KiB per idle connection: "
        f"{'-' if kib_per_idle is None else f'{kib_per_idle:.1f}'} "
        f"({IDLE_CONNECTIONS} connections, each holding a 12-16 KiB unfinished line)\n"
        "netfuzz: RSS before/peak MiB: "
        + ", ".join(f"{n} {rss_before[n] / 1024:.0f}/{rss_peak.get(n, 0) / 1024:.0f}" for n in pids)
    )
    assert not problems, (
        f"network fuzzing (CHATHACK_FUZZ_SEED={FUZZ_SEED} replays it) found "
        f"{len(problems)} problem(s):\n- " + "\n- ".join(problems)
    )
