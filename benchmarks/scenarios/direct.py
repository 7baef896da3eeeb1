"""Direct link: messages per second and p50/p99 latency between two peers,
next to a raw trio TCP echo with the same message sizes, in the same run.

Three pairs of processes (:mod:`benchmarks.direct_peers`): ``raw`` (the
baseline), ``link`` (``peer.direct`` dial/accept, frames through
``FrameReader``/``StreamWriter``) and ``node`` (two full ``PeerNode``s over
the direct link they opened themselves). Each runs twice: one message in
flight (latency) and ``THROUGHPUT_WINDOW`` in flight (rate).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from benchmarks import hist
from benchmarks.direct_peers import frame_bytes
from benchmarks.rendezvous_proc import rendezvous
from benchmarks.report import Result, verdict
from benchmarks.scenarios import Settings, quiet_machine

TEXT_BYTES = 64
THROUGHPUT_WINDOW = 16
MAX_COUNT = 500_000
PASSWORD = "direct-benchmark"
#: The issue's target: direct p50 within 2x of the raw-socket baseline.
TARGET_RATIO = 2.0


@asynccontextmanager
async def _proc(argv: list[str], err: Path) -> AsyncIterator[trio.Process]:
    fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        proc = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=fd
        )
    finally:
        os.close(fd)
    try:
        yield proc
    finally:
        with trio.CancelScope(shield=True):
            if proc.poll() is None:
                proc.kill()
            await proc.wait()


async def _line(proc: trio.Process, err: Path, within: float) -> dict:
    assert proc.stdout is not None
    buf = b""
    with trio.fail_after(within):
        while b"\n" not in buf:
            data = await proc.stdout.receive_some(65536)
            if not data:
                raise RuntimeError(f"direct benchmark process failed: see {err}")
            buf += data
    return json.loads(buf.split(b"\n", 1)[0])


async def _pair(mode: str, spec: dict, work: Path) -> dict:
    await quiet_machine()
    err = work / f"{mode}.stderr"
    base = [sys.executable, "-m", "benchmarks.direct_peers"]
    deadline = spec["warmup"] + spec["seconds"] + 60
    spec = {**spec, "deadline_s": deadline}
    async with _proc([*base, "echo", mode, json.dumps(spec)], err) as echo:
        hello = await _line(echo, err, 30)
        spec = {**spec, **hello}
        async with _proc([*base, "drive", mode, json.dumps(spec)], err) as drive:
            return await _line(drive, err, deadline)


async def run(settings: Settings) -> Result:
    res = Result()
    work = settings.workdir("direct")
    seconds = 3.0 if settings.quick else 5.0
    size = frame_bytes(TEXT_BYTES)
    common = {
        "text_bytes": TEXT_BYTES,
        "size": size,
        "warmup": 0.5,
        "seconds": seconds,
        "max_count": MAX_COUNT,
        "password": PASSWORD,
    }
    figures: dict[str, dict] = {}
    async with rendezvous(work, work / "rendezvous.sqlite3", cheap_argon2=False) as srv:
        common["server_port"] = srv.port
        for mode in ("raw", "link", "node"):
            lat = await _pair(mode, {**common, "window": 1}, work)
            thr = await _pair(mode, {**common, "window": THROUGHPUT_WINDOW}, work)
            h = hist.merge([lat["hist"]])
            figures[mode] = {
                "p50_ms": hist.percentile_ms(h, 0.5),
                "p99_ms": hist.percentile_ms(h, 0.99),
                # Both directions carry a message per answer the driver gets.
                "msgs_per_s_window1": 2 * lat["answers"] / lat["seconds"],
                "msgs_per_s": 2 * thr["answers"] / thr["seconds"],
                "driver_cpu_percent": 100 * thr["cpu_s"] / (thr["seconds"] + 0.5),
                "path": lat.get("path", mode),
            }
    raw = figures["raw"]
    names = {
        "raw": "raw trio TCP echo (baseline)",
        "link": "peer.direct link (frames)",
        "node": "PeerNode to PeerNode",
    }
    for mode, f in figures.items():
        scen = "direct"
        label = names[mode]
        res.add(
            scen,
            f"{label}: messages",
            f["msgs_per_s"],
            "msg/s",
            note=f"{THROUGHPUT_WINDOW} in flight; {f['msgs_per_s_window1']:,.0f} msg/s with 1 "
            f"in flight; {size} bytes per message on the wire",
        )
        if mode == "raw":
            res.add(scen, f"{label}: latency p50 / p99", f"{f['p50_ms']} / {f['p99_ms']}", "ms")
            continue
        ratio = f["p50_ms"] / raw["p50_ms"] if f["p50_ms"] and raw["p50_ms"] else None
        if mode == "link":  # the target: the direct link itself
            target, judged = (
                f"p50 <= {TARGET_RATIO:g} x raw",
                verdict(ratio is not None and ratio <= TARGET_RATIO),
            )
        else:  # the whole application on top of it: reported, not judged
            target, judged = "", "info"
        res.add(
            scen,
            f"{label}: latency p50 / p99",
            f"{f['p50_ms']} / {f['p99_ms']}",
            "ms",
            target,
            judged,
            note=(f"p50 is {ratio:.2f} x the raw baseline" if ratio else "")
            + (
                "; a full node adds, per message, end-to-end sealing and opening, "
                "sequencing and an ack frame, history records and a UI event"
                if mode == "node"
                else ""
            ),
        )
        if mode == "node" and f["path"] != "direct":
            res.rows[-1].note += f"; WARNING: the conversation ran {f['path']}"
    res.details = {"message_bytes": size, "text_bytes": TEXT_BYTES, "modes": figures}
    return res
