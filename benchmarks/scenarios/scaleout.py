"""Scale-out: several ``chathack-rendezvous --redis`` instances on one Redis.

Five measurements, each against real processes on 127.0.0.1 and a Redis of
the benchmark's own (``appendonly yes``, ``appendfsync always``):

* **same instance, SQLite** -- the relay at 100 pairs on a plain instance
  (the baseline, measured again here so the two figures share a machine state);
* **same instance, --redis** -- the same with the instance in a cluster: the
  relay between users of one instance does not touch Redis, so it must cost
  no more than 1.1x the baseline per message (the judged target);
* **across instances** -- 100 pairs, one side of each on instance A and the
  other on B: every message goes A -> Redis -> B (batched per destination);
  msg/s, p99, CPU per message on each instance and in Redis;
* **mailbox through Redis** -- one sender pipelines ``mail:`` lines to an
  offline user; stores per second acknowledged ``STORED`` (each on the Redis
  primary's disk: ``appendfsync always``), Redis CPU per store;
* **failover** -- users on instance A, each talking to a partner on B; A is
  SIGKILLed; each user logs in on C with its resume token and sends its
  partner a line; the time from the kill to the partner reading it (p50, max).
"""

from __future__ import annotations

import signal
import statistics
import time
from pathlib import Path

import coredis
import trio

from benchmarks.accounts import PASSWORD, password_hash
from benchmarks.loadgen import Conn, login, read_token
from benchmarks.pool import generators
from benchmarks.redis_proc import RedisServer
from benchmarks.rendezvous_proc import HOST, Rendezvous, rendezvous
from benchmarks.report import Result, verdict
from benchmarks.scenarios import Settings, Window, measure, split
from benchmarks.scenarios.relay import TARGET_PAIRS, TEXT_BYTES, WARMUP, WINDOW

#: The judged target: a same-instance relay with --redis against SQLite only.
TARGET_RATIO = 1.1
#: Interleaved runs of each same-instance relay (the judged figure is their medians').
ROUNDS = 3
#: Users on the instance that is killed in the failover measurement.
FAILOVER_USERS = 50
#: Mail lines stored in the mailbox measurement, and how many in flight at once.
MAILS = 5000
MAIL_WINDOW = 500
LEASE = "3"


async def run(settings: Settings) -> Result:
    res = Result()
    pairs = TARGET_PAIRS
    work = settings.workdir("scaleout")
    redis = RedisServer(work / "redis")
    try:
        # The two same-instance runs take turns, ROUNDS each: on a shared
        # machine one run's CPU per message varies by a fifth; the medians
        # of interleaved runs compare the code, not the moment.
        bases, sames = [], []
        for r in range(ROUNDS):
            bases.append(
                await _relay(settings, work / f"sqlite{r}", pairs, redis=None, across=False)
            )
            sames.append(
                await _relay(settings, work / f"same{r}", pairs, redis=redis, across=False)
            )
        base, same = _median_run(bases), _median_run(sames)
        across = await _relay(settings, work / "across", pairs, redis=redis, across=True)
        stores = await _mailbox(work / "mail", redis)
        failover = await _failover(work / "failover", redis)
    finally:
        redis.stop()

    b_us, s_us = base[0].server_us_per(), same[0].server_us_per()
    ratio = s_us / b_us if b_us and s_us else None
    scen = f"scale-out, relay {pairs} pairs"
    res.add(
        scen,
        "same instance, SQLite only: server CPU per message",
        b_us,
        "us",
        note=f"median of {ROUNDS}: {_spread(bases)}",
    )
    res.add(
        scen,
        "same instance, --redis: server CPU per message",
        s_us,
        "us",
        note=f"median of {ROUNDS}: {_spread(sames)}",
    )
    res.add(
        scen,
        "same instance: --redis / SQLite only",
        ratio,
        "x",
        f"<= {TARGET_RATIO}",
        verdict(ratio is not None and ratio <= TARGET_RATIO),
        note="medians of interleaved runs; the relay between users of one instance "
        "never touches Redis",
    )
    res.add(scen, "same instance, --redis: msg/s", same[0].rate, "msg/s")
    w = across[0]
    res.add(scen, "across instances: msg/s", w.rate, "msg/s", note=f"errors: {w.errors}")
    res.add(scen, "across instances: delivery latency p50", w.p(0.5), "ms")
    res.add(scen, "across instances: delivery latency p99", w.p(0.99), "ms")
    for name in ("A", "B", "redis"):
        cpu = w.watched_cpu_s.get(name, 0.0)
        res.add(
            scen,
            f"across instances: CPU per message, {name}",
            cpu * 1e6 / w.count if w.count else None,
            "us",
            note=f"{100 * cpu / w.seconds:.0f}% of a core" if w.seconds else "",
        )
    rate, redis_us = stores
    res.add("scale-out, mailbox", "mail: stored through Redis", rate, "stores/s")
    res.add("scale-out, mailbox", "Redis CPU per store", redis_us, "us")
    res.add(
        "scale-out, failover",
        f"instance killed -> its {FAILOVER_USERS} users chatting again, p50",
        statistics.median(failover) if failover else None,
        "s",
    )
    res.add(
        "scale-out, failover",
        f"instance killed -> its {FAILOVER_USERS} users chatting again, max",
        max(failover) if failover else None,
        "s",
        note=f"{len(failover)} of {FAILOVER_USERS} made it",
    )
    res.details = {
        "sqlite": [d for _, d in bases],
        "same": [d for _, d in sames],
        "across": across[1],
        "mail_stores_per_s": rate,
        "failover_s": failover,
    }
    return res


async def _accounts(url: str, names: list[str]) -> None:
    """The benchmark accounts, straight into Redis (one cheap hash for all)."""
    pw_hash = password_hash(True)
    now = time.time()
    client = coredis.Redis.from_url(url, decode_responses=True)
    async with client:
        await client.flushdb()
        async with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hset(
                    f"chathack:acct:{name}",
                    {"name": name, "pw_hash": pw_hash, "created_at": now, "last_seen": now},
                )
                pipe.zadd("chathack:seen", {name: now})


def _median_run(runs: list[tuple[Window, dict]]) -> tuple[Window, dict]:
    """The run whose server CPU per message is the median."""
    ranked = sorted(runs, key=lambda r: r[0].server_us_per() or 0.0)
    return ranked[len(ranked) // 2]


def _spread(runs: list[tuple[Window, dict]]) -> str:
    values = sorted(r[0].server_us_per() or 0.0 for r in runs)
    return "runs " + ", ".join(f"{v:.1f}" for v in values) + " us"


def _ready(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)


def _cluster_flags(redis: RedisServer, instance: str) -> tuple[str, ...]:
    return ("--redis", redis.url, "--instance-id", instance, "--lease", LEASE)


async def _relay(
    settings: Settings, work: Path, pairs: int, *, redis: RedisServer | None, across: bool
) -> tuple[Window, dict]:
    from benchmarks.accounts import create_accounts

    _ready(work)
    names = [(f"ra{i:04d}", f"rb{i:04d}") for i in range(pairs)]
    flat = [n for p in names for n in p]
    db = work / "rendezvous.sqlite3"
    if redis is None:
        create_accounts(db, flat, cheap=True)
    else:
        await _accounts(redis.url, flat)
    details: dict = {"pairs": pairs, "redis": redis is not None, "across": across}
    async with (
        rendezvous(
            work,
            work / "a.sqlite3" if redis else db,
            cheap_argon2=True,
            extra=_cluster_flags(redis, "A") if redis else (),
            name="a",
        ) as a,
        rendezvous(
            work,
            work / "b.sqlite3",
            cheap_argon2=True,
            extra=_cluster_flags(redis, "B") if redis and across else (),
            name="b",
        ) as b,
    ):
        ports = {n: (b.port if across and n.startswith("rb") else a.port) for n in flat}
        specs = [
            {
                "role": "relay",
                "host": HOST,
                "port": a.port,
                "ports": ports,
                "password": PASSWORD,
                "names": [n for p in chunk for n in p],
                "pairs": chunk,
                "window": WINDOW,
                "text_bytes": TEXT_BYTES,
                "deadline_s": settings.duration + 180,
            }
            for chunk in split(names, settings.gen_procs)
        ]
        async with generators(specs, work) as pool:
            await pool.ready(120)
            if across:
                await trio.sleep(1.0)  # presence: B's users reach A's roster (and back)
            watch = {"A": a.pid, "B": b.pid}
            if redis is not None and redis.proc is not None:
                watch["redis"] = redis.proc.pid
            w = await measure(pool, a, WARMUP, settings.duration, watch=watch)
            await pool.command("stop")
    details["window"] = w.as_dict()
    details["watched_cpu_s"] = w.watched_cpu_s
    return w, details


async def _mailbox(work: Path, redis: RedisServer) -> tuple[float, float | None]:
    """Stores per second through Redis, and Redis CPU per store."""
    from benchmarks import procstat

    _ready(work)
    await _accounts(redis.url, ["sender", "away"])
    async with rendezvous(
        work, work / "a.sqlite3", cheap_argon2=True, extra=_cluster_flags(redis, "M"), name="m"
    ) as srv:
        conn = await login(HOST, srv.port, "sender", PASSWORD)
        try:
            assert redis.proc is not None
            cpu0 = procstat.cpu_ticks(redis.proc.pid)
            t0 = time.monotonic()
            stored = 0
            with trio.fail_after(300):
                for first in range(0, MAILS, MAIL_WINDOW):
                    batch = range(first, min(MAILS, first + MAIL_WINDOW))
                    await conn.send(
                        b"".join(b"mail: away m%d stored text %d\n" % (i, i) for i in batch)
                    )
                    want = stored + len(batch)
                    while stored < want:
                        for line in await conn.read_lines():
                            if line.startswith(b"Servidor[STORED]"):
                                stored += 1
            seconds = time.monotonic() - t0
            cpu = (procstat.cpu_ticks(redis.proc.pid) - cpu0) / procstat.CLK_TCK
        finally:
            conn.close()
    return stored / seconds, cpu * 1e6 / stored if stored else None


async def _failover(work: Path, redis: RedisServer) -> list[float]:
    """Seconds from SIGKILL of A to each of its users' lines reaching B."""
    _ready(work)
    users = [f"fa{i:03d}" for i in range(FAILOVER_USERS)]
    partners = [f"fb{i:03d}" for i in range(FAILOVER_USERS)]
    await _accounts(redis.url, users + partners)
    times: list[float] = []
    async with (
        rendezvous(
            work, work / "a.sqlite3", cheap_argon2=True, extra=_cluster_flags(redis, "A"), name="a"
        ) as a,
        rendezvous(
            work, work / "b.sqlite3", cheap_argon2=True, extra=_cluster_flags(redis, "B"), name="b"
        ) as b,
        rendezvous(
            work, work / "c.sqlite3", cheap_argon2=True, extra=_cluster_flags(redis, "C"), name="c"
        ) as c,
    ):
        on_a = [await login(HOST, a.port, n, PASSWORD) for n in users]
        tokens = [await read_token(conn) for conn in on_a]
        on_b = [await login(HOST, b.port, n, PASSWORD) for n in partners]
        await trio.sleep(1.0)  # presence settles
        killed = time.monotonic()
        _kill(a)
        async with trio.open_nursery() as nursery:
            for i in range(FAILOVER_USERS):
                nursery.start_soon(
                    _come_back, c, users[i], tokens[i], on_b[i], partners[i], killed, times
                )
        for conn in on_a + on_b:
            conn.close()
    return sorted(times)


def _kill(server: Rendezvous) -> None:
    server.proc.send_signal(signal.SIGKILL)


async def _come_back(
    server: Rendezvous,
    name: str,
    token: bytes,
    partner_conn: Conn,
    partner: str,
    killed: float,
    times: list[float],
) -> None:
    with trio.move_on_after(60):
        conn = await Conn.open(HOST, server.port, name)
        try:
            await conn.send(b"resume: %s %s\n" % (name.encode(), token))
            while not any(x.startswith(b"Servidor[OK]") for x in await conn.read_lines()):
                pass
            marker = f"back {name}".encode()
            while True:
                # Until the partner's instance has heard where we are now.
                await conn.send(b"msg: %s %s\n" % (partner.encode(), marker))
                with trio.move_on_after(0.2):
                    while not any(marker in x for x in await partner_conn.read_lines()):
                        pass
                    times.append(time.monotonic() - killed)
                    return
        finally:
            conn.close()
