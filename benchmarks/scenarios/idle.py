"""Idle capacity: N peers logged in and pinging; rendezvous memory per connection.

Memory per connection = (VmRSS with N logged in - VmRSS with 0) / N, both read
from /proc/PID/status. "With 0" is taken after a warm-up (a few logins and
pings, then quits), so one-time costs (imports, the argon2 worker threads,
SQLite's cache) are not charged to the connections. "With N" is the highest
VmRSS seen while all N ping every PING_INTERVAL seconds, like real peers.
"""

from __future__ import annotations

import time

import trio

from benchmarks import hist, procstat
from benchmarks.accounts import PASSWORD, create_accounts
from benchmarks.loadgen import login
from benchmarks.pool import generators
from benchmarks.rendezvous_proc import HOST, rendezvous
from benchmarks.report import Result, verdict
from benchmarks.scenarios import Settings, split
from peer.server_link import PING_INTERVAL

#: The issue's target: 10,000 idle peers with under 10 KiB each.
TARGET_PEERS = 10_000
TARGET_KIB = 10.0
WARMUP_LOGINS = 10


async def _warm_up(port: int) -> None:
    for i in range(WARMUP_LOGINS):
        conn = await login(HOST, port, f"warm{i}", PASSWORD)
        await conn.send(b"::ping warm\n::quit\n")
        try:
            with trio.fail_after(10):
                while True:
                    await conn.read_lines()
        except EOFError:
            pass
        finally:
            conn.close()


async def run_one(settings: Settings, n: int) -> Result:
    res = Result()
    scen = f"idle {n:,}"
    work = settings.workdir(f"idle-{n}")
    names = [f"idle{i:05d}" for i in range(n)]
    db = work / "rendezvous.sqlite3"
    create_accounts(db, names + [f"warm{i}" for i in range(WARMUP_LOGINS)], cheap=True)
    hold = 2 * PING_INTERVAL + 2
    login_budget = 60 + n / 50
    async with rendezvous(work, db, cheap_argon2=True, nofile=n + 4096) as srv:
        await _warm_up(srv.port)
        await trio.sleep(1.0)
        rss0 = srv.rss_kib()
        gens = min(settings.gen_procs, max(1, n // 500))
        specs = [
            {
                "role": "idle",
                "host": HOST,
                "port": srv.port,
                "password": PASSWORD,
                "names": chunk,
                "ping_interval": PING_INTERVAL,
                "deadline_s": login_budget + hold + 60,
            }
            for chunk in split(names, gens)
        ]
        async with generators(specs, work) as pool:
            t0 = time.monotonic()
            ready = [r["ready"] for r in await pool.ready(login_budget)]
            login_wall = time.monotonic() - t0
            logged = sum(r["logged_in"] for r in ready)
            login_hist = hist.merge([r["hist"] for r in ready])
            rss_logged = srv.rss_kib()
            await pool.command("go")
            first = await pool.command("mark")
            cpu0, t_hold = srv.cpu_ticks(), time.monotonic()
            rss_max = rss_logged
            deadline = t_hold + hold
            while time.monotonic() < deadline:
                await trio.sleep(0.5)
                rss_max = max(rss_max, srv.rss_kib())
            last = await pool.command("mark")
            held_s = time.monotonic() - t_hold
            server_cpu = (srv.cpu_ticks() - cpu0) / procstat.CLK_TCK
            await pool.command("stop")
    marks = [m["mark"] for m in last]
    last_cpu = [m["cpu_s"] for m in last]
    gen_cpu = sum(b - a["cpu_s"] for a, b in zip(first, last_cpu, strict=True))
    per_conn = (rss_max - rss0) / n
    pongs = sum(m["count"] for m in marks)
    missed = sum(m["errors"] for m in marks)
    pong_hist = hist.merge([m["hist"] for m in marks])
    note = ""
    if n < TARGET_PEERS:
        note = f"the target is at {TARGET_PEERS:,} peers; this run has {n:,}"
    res.add(scen, "peers logged in and pinging", logged, "peers", f"{n:,}", verdict(logged == n))
    res.add(
        scen,
        "rendezvous memory per connection",
        per_conn,
        "KiB",
        f"< {TARGET_KIB:g} KiB",
        verdict(per_conn < TARGET_KIB),
        note=note,
    )
    res.add(scen, "rendezvous VmRSS with 0 / with N", f"{rss0:,} / {rss_max:,}", "KiB")
    res.add(
        scen,
        "login time, all N (cheap argon2)",
        login_wall,
        "s",
        note="logins only verify a precomputed hash with cheap argon2 parameters "
        "(see benchmarks/bench_rendezvous.py); default-parameter logins: the logins scenario",
    )
    res.add(scen, "pings answered / missed while holding", f"{pongs:,} / {missed:,}", "")
    res.add(scen, "ping round trip p99", hist.percentile_ms(pong_hist, 0.99), "ms")
    res.add(scen, "rendezvous CPU while holding", 100 * server_cpu / held_s, "% of a core")
    res.details = {
        "n": n,
        "generator_processes": gens,
        "rss_kib_0": rss0,
        "rss_kib_logged_in": rss_logged,
        "rss_kib_max_holding": rss_max,
        "kib_per_connection": per_conn,
        "login_wall_s": login_wall,
        "logins_per_s": n / login_wall if login_wall else None,
        "login_p50_ms": hist.percentile_ms(login_hist, 0.5),
        "login_p99_ms": hist.percentile_ms(login_hist, 0.99),
        "hold_s": held_s,
        "pongs": pongs,
        "pings_missed": missed,
        "pong_p50_ms": hist.percentile_ms(pong_hist, 0.5),
        "pong_p99_ms": hist.percentile_ms(pong_hist, 0.99),
        "server_cpu_percent_holding": 100 * server_cpu / held_s,
        "generator_cpu_percent_holding": 100 * gen_cpu / held_s,
    }
    return res


async def run(settings: Settings) -> Result:
    out = Result()
    for n in settings.clients:
        one = await run_one(settings, n)
        out.rows += one.rows
        out.details[str(n)] = one.details
    return out
