"""Relay: ``msg:`` lines per second through the rendezvous, server CPU per
relayed message, and delivery latency.

``pairs`` pairs of logged-in clients play ping-pong: one side of each pair
starts ``WINDOW`` messages, and each side answers every message it receives,
so ``WINDOW`` messages per pair are always in flight. A message's text starts
with its send time (CLOCK_MONOTONIC in ns, the same clock in every process);
the receiver's latency histogram gives p50/p99. Server CPU per message is the
rendezvous's utime+stime delta over the window (/proc/PID/stat, clock ticks)
divided by the messages delivered in that window.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import trio

from benchmarks.accounts import PASSWORD, create_accounts
from benchmarks.pool import generators
from benchmarks.profile_top import report
from benchmarks.rendezvous_proc import HOST, rendezvous
from benchmarks.report import RESULTS_DIR, Result, verdict
from benchmarks.scenarios import Settings, Window, measure, split

WINDOW = 4
#: Characters of text per message (send time, a space, padding).
TEXT_BYTES = 64
TARGET_P99_MS = 50.0
#: The load the targets are judged at: InspIRCd's (the issue).
TARGET_PAIRS = 100
WARMUP = 2.0


async def relay_once(
    settings: Settings,
    pairs: int,
    gen_procs: int,
    seconds: float,
    tag: str,
    profile: bool = False,
    tls: bool = False,
    extra: tuple[str, ...] = (),
) -> tuple[Window, dict]:
    """One relay run in its own work directory ``tag``; ``profile``: with
    ``settings.profile`` attached to the server; ``tls``: every client over TLS."""
    work = settings.workdir(tag)
    pair_names = [(f"ra{i:04d}", f"rb{i:04d}") for i in range(pairs)]
    db = work / "rendezvous.sqlite3"
    create_accounts(db, [n for p in pair_names for n in p], cheap=True)
    profile = settings.profile if profile else None
    cprofile_out = work / "rendezvous.pstats" if profile == "cprofile" else None
    details: dict = {"pairs": pairs, "generator_processes": gen_procs, "tls": tls}
    async with rendezvous(
        work, db, cheap_argon2=True, cprofile_out=cprofile_out, tls=tls, extra=extra
    ) as srv:
        specs = [
            {
                "role": "relay",
                "host": HOST,
                "port": srv.port,
                "password": PASSWORD,
                "names": [n for p in chunk for n in p],
                "pairs": chunk,
                "window": WINDOW,
                "text_bytes": TEXT_BYTES,
                "deadline_s": seconds + 180,
                "tls": tls,
            }
            for chunk in split(pair_names, gen_procs)
        ]
        async with generators(specs, work) as pool:
            ready = [r["ready"] for r in await pool.ready(120)]
            details["login_s"] = max(r["login_s"] for r in ready)
            spies: list[trio.Process] = []

            async def start_py_spy() -> None:
                if profile == "py-spy":
                    spies.append(await _start_py_spy(srv.pid, work, WARMUP + seconds))

            try:
                w = await measure(pool, srv, WARMUP, seconds, on_start=start_py_spy)
            finally:
                for spy in spies:
                    with trio.move_on_after(30):
                        await spy.wait()
                    if spy.poll() is None:
                        spy.kill()
                        await spy.wait()
            await pool.command("stop")
    if profile is not None:
        # The server has exited (cProfile writes on exit): keep the profile.
        src = cprofile_out or work / "py-spy.raw.txt"
        dst = RESULTS_DIR / f"relay-{pairs}-{profile}{'.pstats' if cprofile_out else '.txt'}"
        if src.exists():
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            details["profile"] = str(dst)
            print(f"profile: {dst}\n{report(dst)}", file=sys.stderr)
    details["window"] = w.as_dict()
    return w, details


async def _start_py_spy(pid: int, work: Path, seconds: float) -> trio.Process:
    exe = str(Path(sys.executable).parent / "py-spy")
    argv = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds + 1))]
    argv += ["--rate", "200", "--format", "raw", "--output", str(work / "py-spy.raw.txt")]
    quiet = subprocess.DEVNULL
    return await trio.lowlevel.open_process(argv, stdout=quiet, stderr=quiet)


async def run(settings: Settings) -> Result:
    res = Result()
    for pairs in settings.pairs:
        one = await _run_pairs(settings, pairs)
        res.rows += one.rows
        res.details[str(pairs)] = one.details
    return res


async def run_tls(settings: Settings) -> Result:
    """The relay at 100 pairs with every client on TLS (``--tls``): what
    encryption to the rendezvous costs. Reported, not judged: the targets are
    the plain relay's."""
    return await _run_pairs(settings, TARGET_PAIRS, tls=True)


async def _run_pairs(settings: Settings, pairs: int, tls: bool = False) -> Result:
    res = Result()
    tag = f"relay-{pairs}{'-tls' if tls else ''}"
    w, details = await relay_once(
        settings, pairs, settings.gen_procs, settings.duration, tag, profile=not tls, tls=tls
    )
    scen = f"relay {pairs:,} pairs{' over TLS' if tls else ''}"
    judged = pairs == TARGET_PAIRS and not tls
    us = w.server_us_per()
    p50, p99 = w.p(0.5), w.p(0.99)
    profiled = f" (server under {settings.profile}: figures inflated)" if settings.profile else ""
    res.add(scen, "msg: lines relayed", w.rate, "msg/s", note=f"errors: {w.errors}{profiled}")
    res.add(
        scen,
        "server CPU per relayed message",
        us,
        "us",
        note="utime+stime from /proc/PID/stat; judged as a ratio to InspIRCd, ngircd and "
        "the floor relay measured in the same run: the compare scenario",
    )
    res.add(scen, "delivery latency p50", p50, "ms")
    res.add(
        scen,
        "delivery latency p99",
        p99,
        "ms",
        f"< {TARGET_P99_MS:g} ms" if judged else "",
        verdict(p99 is not None and p99 < TARGET_P99_MS) if judged else "info",
        note=""
        if judged
        else f"{pairs * WINDOW:,} messages always in flight: mean latency = in flight / rate "
        f"= {1000 * pairs * WINDOW / max(w.rate, 1):.0f} ms (Little's law) whatever the server",
    )
    res.add(
        scen,
        "CPU: server / generators / others",
        w.cpu_split(),
        "% of a core",
        note=f"{settings.gen_procs} generator processes, the busiest at "
        f"{w.percent(w.generator_cpu_max_s):.0f}%; others: processes outside this benchmark",
    )
    res.details = details
    return res


async def run_gencheck(settings: Settings) -> Result:
    """Is the generator the bottleneck? The relay at 100 pairs with 1, 2 and 3
    generator processes. It is not if the server is saturated (it is single-
    threaded: ~100% of one core) while no generator process is, and if more
    generator processes do not raise the throughput."""
    res = Result()
    seconds = 5.0
    windows: dict[int, Window] = {}
    for k in (1, 2, 3):
        w, details = await relay_once(settings, TARGET_PAIRS, k, seconds, f"gencheck-{k}")
        windows[k] = w
        res.details[str(k)] = details
        res.add(
            "generator check",
            f"relay {TARGET_PAIRS} pairs, {k} generator process{'es' if k > 1 else ''}",
            w.rate,
            "msg/s",
            note=f"CPU % of a core, server / generators / others: {w.cpu_split()}; busiest "
            f"generator {w.percent(w.generator_cpu_max_s):.0f}%; "
            f"server {w.server_us_per() or 0:.1f} us/msg",
        )
    gain = max(windows[2].rate, windows[3].rate) / windows[1].rate if windows[1].rate else 0.0
    res.add(
        "generator check",
        "throughput with 2-3 processes / with 1",
        gain,
        "x",
        note="> 1 means one process held the load back (or other processes took CPU "
        "from that run: see their share above)",
    )
    w = windows[2]
    server_pct, gen_pct = w.percent(w.server_cpu_s), w.percent(w.generator_cpu_max_s)
    machine_pct = w.percent(w.machine_busy_s)
    res.add(
        "generator check",
        "with 2 processes: server / busiest generator / machine CPU",
        f"{server_pct:.0f}% / {gen_pct:.0f}% / {machine_pct:.0f}%",
        "of a core",
        "gen < 80%, server saturated",
        verdict(gen_pct < 80 and (server_pct >= 85 or machine_pct >= 180)),
        note="no generator process near a full core, while the single-threaded server has "
        "one (or the 2-core machine is full, others included): the generator is not the "
        "bottleneck",
    )
    return res


#: Rounds of the metrics-cost scenario (each: one run without, one with).
METRICS_ROUNDS = 3
#: Most extra CPU per relayed message that --metrics may cost (issue 19).
METRICS_MAX_COST = 0.03


async def run_metrics_cost(settings: Settings) -> Result:
    """The relay at 100 pairs without and with ``--metrics``, interleaved in
    one run: what counting for the operators costs the relay."""
    res = Result()
    us: dict[bool, list[float]] = {False: [], True: []}
    for rnd in range(METRICS_ROUNDS):
        for on in (False, True):
            extra = ("--metrics", "127.0.0.1:0") if on else ()
            tag = f"metrics-{'on' if on else 'off'}-{rnd}"
            w, _ = await relay_once(
                settings, TARGET_PAIRS, settings.gen_procs, settings.duration, tag, extra=extra
            )
            us[on].append(w.server_us_per() or 0.0)
    off, on = statistics.median(us[False]), statistics.median(us[True])
    cost = on / off - 1 if off else 0.0
    scen = f"relay {TARGET_PAIRS} pairs, --metrics"
    for flag, values in us.items():
        res.add(
            scen,
            f"server CPU per message, metrics {'on' if flag else 'off'}",
            statistics.median(values),
            "us",
            note=f"{METRICS_ROUNDS} interleaved runs: {', '.join(f'{v:.2f}' for v in values)}",
        )
    res.add(
        scen,
        "extra CPU per message with --metrics",
        100 * cost,
        "%",
        f"< {100 * METRICS_MAX_COST:g} %",
        verdict(cost < METRICS_MAX_COST),
        note="medians of the interleaved runs; the run-to-run spread above is the noise floor",
    )
    res.details = {"us_off": us[False], "us_on": us[True]}
    return res
