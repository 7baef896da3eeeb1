"""chathack's relay beside the servers people would otherwise run, in one sitting.

An absolute CPU time on a shared VM says little (the host changes under it);
a ratio to InspIRCd, ngircd and a minimal trio relay (the floor,
:mod:`benchmarks.floor_relay`), measured on the same load in the same run,
does. For each load shape and pair count, every server is measured once per
round, the servers of a round back to back, for ``ROUNDS`` rounds; a ratio is
taken within a round, and a target holds only if it holds in every round.

Load shapes (:class:`benchmarks.roles.Relay` / ``IrcRelay``, the same
generator speaking each server's protocol; answers written once per read):

* **small windows**: ``WINDOW_SMALL`` messages in flight per pair;
* **saturating**: ``WINDOW_SATURATING`` in flight per pair (the server runs
  at a full core: more lines per read).

Idle memory: each server holds ``IDLE_CLIENTS`` logged-in connections that
send nothing; (RSS with them - RSS with ``IDLE_WARMUP``) / ``IDLE_CLIENTS``.
"""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from benchmarks.accounts import PASSWORD, create_accounts
from benchmarks.irc_servers import irc_server, missing
from benchmarks.pool import generators
from benchmarks.rendezvous_proc import HOST, Rendezvous, rendezvous
from benchmarks.report import Result, verdict
from benchmarks.scenarios import Settings, Window, measure, split

WINDOW_SMALL = 4
WINDOW_SATURATING = 8
TEXT_BYTES = 64
ROUNDS = 3
WARMUP = 2.0
SERVERS = ("chathack", "inspircd", "ngircd", "floor")
IDLE_CLIENTS = 2000
IDLE_WARMUP = 50
#: The targets (issue 15), as (shape, pairs, anchor) -> most chathack/anchor.
TARGETS = {
    ("small windows", 100, "inspircd"): 2.0,
    ("saturating", 100, "inspircd"): 1.5,
    ("saturating", 100, "floor"): 1.5,
}
TARGET_P99_MS = 50.0
TARGET_MEMORY = ("ngircd", 1.5)


@asynccontextmanager
async def server(kind: str, work: Path, names: list[str]) -> AsyncIterator[Rendezvous]:
    """``kind`` running in ``work``; chathack with accounts for ``names`` and
    the load-test limits lifted (benchmarks/rendezvous_proc.py)."""
    if kind == "chathack":
        db = work / "rendezvous.sqlite3"
        create_accounts(db, names, cheap=True)
        async with rendezvous(work, db, cheap_argon2=True, log_level="warning") as srv:
            yield srv
    else:
        async with irc_server(kind, work) as srv:
            yield srv


def _spec(kind: str, port: int, names: list[str], pairs: list, window: int, life: float) -> dict:
    irc = kind != "chathack"
    return {
        "role": "irc-relay" if irc else "relay",
        "irc": irc,
        "host": HOST,
        "port": port,
        "password": PASSWORD,
        "names": names,
        "pairs": pairs,
        "window": window,
        "text_bytes": TEXT_BYTES,
        "deadline_s": life,
    }


async def relay_window(settings: Settings, kind: str, pairs: int, window: int, tag: str) -> Window:
    work = settings.workdir(tag)
    pair_names = [(f"ra{i:04d}", f"rb{i:04d}") for i in range(pairs)]
    names = [n for p in pair_names for n in p]
    life = settings.duration + 180
    async with server(kind, work, names) as srv:
        specs = [
            _spec(kind, srv.port, [n for p in chunk for n in p], chunk, window, life)
            for chunk in split(pair_names, settings.gen_procs)
        ]
        async with generators(specs, work) as pool:
            await pool.ready(120)
            w = await measure(pool, srv, WARMUP, settings.duration)
            await pool.command("stop")
    return w


async def idle_kib(settings: Settings, kind: str, tag: str) -> float:
    """KiB of server memory per logged-in connection that sends nothing."""
    work = settings.workdir(tag)
    warm = [f"iw{i:04d}" for i in range(IDLE_WARMUP)]
    idle = [f"ic{i:05d}" for i in range(IDLE_CLIENTS)]
    life = 300.0
    async with (
        server(kind, work, warm + idle) as srv,
        generators([_spec(kind, srv.port, warm, [], 1, life)], work) as first,
    ):
        await first.ready(120)
        await trio.sleep(1.0)  # let the server settle after the warm-up logins
        base = srv.rss_kib()
        specs = [
            _spec(kind, srv.port, chunk, [], 1, life) for chunk in split(idle, settings.gen_procs)
        ]
        async with generators(specs, work) as pool:
            ready = await pool.ready(180)
            logged_in = sum(r["ready"]["logged_in"] for r in ready)
            await trio.sleep(1.0)
            held = srv.rss_kib()
            await pool.command("stop")
        await first.command("stop")
    return (held - base) / max(logged_in, 1)


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


async def run(settings: Settings) -> Result:
    res = Result()
    kinds = [k for k in SERVERS if missing(k) is None]
    for kind in SERVERS:
        why = missing(kind)
        if why is not None:
            res.add("compare", f"{kind}", None, note=f"not measured: {why}", verdict="n/a")
    shapes = {"small windows": WINDOW_SMALL, "saturating": WINDOW_SATURATING}
    for shape, window in shapes.items():
        for pairs in settings.pairs:
            runs: dict[str, list[Window]] = {k: [] for k in kinds}
            failed: dict[str, str] = {}
            for rnd in range(ROUNDS):
                for kind in kinds:
                    if kind in failed:
                        continue
                    tag = f"compare-{shape.split()[0]}-{pairs}-{kind}-{rnd}"
                    try:
                        runs[kind].append(await relay_window(settings, kind, pairs, window, tag))
                    except Exception as e:  # one server's failure must not hide the others
                        leaf: BaseException = e
                        while isinstance(leaf, BaseExceptionGroup):
                            leaf = leaf.exceptions[0]
                        failed[kind] = f"round {rnd + 1}: {type(leaf).__name__}: {leaf}"[:300]
            for kind, why in failed.items():
                del runs[kind]
                scen = f"compare: {shape} ({window} in flight), {pairs} pairs"
                res.add(scen, f"{kind}: not measured", None, verdict="FAIL", note=why)
            _rows(res, shape, window, pairs, runs)
            res.details[f"{shape} {pairs}"] = {
                k: [w.as_dict() for w in ws] for k, ws in runs.items()
            }
    memory = {k: await idle_kib(settings, k, f"compare-idle-{k}") for k in kinds}
    res.details["idle KiB per connection"] = memory
    for kind, kib in memory.items():
        res.add("compare: idle memory", f"{kind} per logged-in connection", kib, "KiB")
    anchor, most = TARGET_MEMORY
    if "chathack" in memory and anchor in memory and memory[anchor] > 0:
        ratio = memory["chathack"] / memory[anchor]
        res.add(
            "compare: idle memory",
            f"chathack / {anchor}",
            ratio,
            "x",
            f"<= {most}",
            verdict(ratio <= most),
            note=f"{IDLE_CLIENTS} idle connections, RSS from /proc",
        )
    return res


def _rows(res: Result, shape: str, window: int, pairs: int, runs: dict[str, list[Window]]) -> None:
    scen = f"compare: {shape} ({window} in flight), {pairs} pairs"
    for kind, windows in runs.items():
        us = [w.server_us_per() or 0.0 for w in windows]
        p99 = [w.p(0.99) or 0.0 for w in windows]
        rate = [w.rate for w in windows]
        res.add(
            scen,
            f"{kind}: server CPU per message",
            statistics.median(us),
            "us",
            note=f"{ROUNDS} rounds {_spread(us)} us; {statistics.median(rate):,.0f} msg/s; "
            f"p99 {statistics.median(p99):.1f} ms; errors {sum(w.errors for w in windows)}",
        )
    if "chathack" not in runs:
        return
    ours = runs["chathack"]
    for anchor in ("inspircd", "ngircd", "floor"):
        if anchor not in runs:
            continue
        ratios = [
            (a.server_us_per() or 0.0) / (b.server_us_per() or float("inf"))
            for a, b in zip(ours, runs[anchor], strict=True)
        ]
        most = TARGETS.get((shape, pairs, anchor))
        res.add(
            scen,
            f"chathack / {anchor}",
            statistics.median(ratios),
            "x",
            f"<= {most} (3/3 rounds)" if most else "",
            verdict(max(ratios) <= most) if most else "info",
            note=f"per round: {', '.join(f'{r:.2f}' for r in ratios)}",
        )
    if (shape, pairs) == ("small windows", 100):
        p99s = [w.p(0.99) or float("inf") for w in ours]
        res.add(
            scen,
            "chathack p99 delivery latency",
            max(p99s),
            "ms",
            f"< {TARGET_P99_MS:g} ms (3/3 rounds)",
            verdict(max(p99s) < TARGET_P99_MS),
            note=f"per round: {', '.join(f'{p:.1f}' for p in p99s)}",
        )
