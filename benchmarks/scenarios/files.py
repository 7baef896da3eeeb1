"""File transfer: a file of ``FILE_MB`` MB between two full peers over their
direct link on 127.0.0.1, next to a raw TCP copy of the same bytes in the
same run (the ratio), with the CPU each end spent per MB.

Each mode runs ``ROUNDS`` times, alternating, on a quiet machine; the table
gives the median and the spread. Processes: :mod:`benchmarks.file_peers`.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

from benchmarks.rendezvous_proc import rendezvous
from benchmarks.report import Result, verdict
from benchmarks.scenarios import Settings, quiet_machine
from benchmarks.scenarios.direct import _line, _proc

FILE_MB = 200
ROUNDS = 3
PASSWORD = "file-benchmark"
#: The issue's target: the direct link moves a file at 0.8 of a raw TCP copy or better.
TARGET_RATIO = 0.8


def _empty(folder: Path) -> None:
    for old in folder.iterdir():
        old.unlink()


def _copied(folder: Path) -> int:
    """The size of the one file the receiver placed in ``folder``."""
    [copy] = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return copy.stat().st_size


def _source(path: Path, mb: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1_000_000))


async def _copy(mode: str, spec: dict, work: Path) -> dict:
    await quiet_machine()
    inbox = Path(spec["inbox"])
    _empty(inbox)
    err = work / f"file-{mode}.stderr"
    base = [sys.executable, "-m", "benchmarks.file_peers"]
    async with _proc([*base, "receive", mode, json.dumps(spec)], err) as receiver:
        hello = await _line(receiver, err, 30)
        spec = {**spec, **hello}
        async with _proc([*base, "send", mode, json.dumps(spec)], err) as sender:
            sent = await _line(sender, err, spec["deadline_s"])
            got = await _line(receiver, err, spec["deadline_s"])
    for side in (sent, got):
        if "error" in side:
            raise RuntimeError(f"{mode} file copy failed: {side['error']}")
    if (size := _copied(inbox)) != spec["bytes"]:
        raise RuntimeError(f"{mode} copy holds {size} bytes, not {spec['bytes']}")
    return {"send": sent, "receive": got, "seconds": max(sent["seconds"], got["seconds"])}


async def run(settings: Settings) -> Result:
    res = Result()
    work = settings.workdir("files")
    mb = 50 if settings.quick else FILE_MB
    source = work / "source.bin"
    _source(source, mb)
    inbox = work / "inbox"
    inbox.mkdir(exist_ok=True)
    spec = {
        "source": str(source),
        "bytes": mb * 1_000_000,
        "inbox": str(inbox),
        "work": str(work),
        "password": PASSWORD,
        "deadline_s": 300,
    }
    runs: dict[str, list[dict]] = {"raw": [], "node": []}
    async with rendezvous(work, work / "rendezvous.sqlite3", cheap_argon2=False) as srv:
        spec["server_port"] = srv.port
        for _ in range(ROUNDS):
            for mode in ("raw", "node"):
                runs[mode].append(await _copy(mode, spec, work))
    rates = {m: [mb / r["seconds"] for r in rs] for m, rs in runs.items()}
    raw, node = statistics.median(rates["raw"]), statistics.median(rates["node"])
    ratios = [n / r for n, r in zip(rates["node"], rates["raw"], strict=True)]
    ratio = statistics.median(ratios)
    paths = {r["send"].get("path") for r in runs["node"]}

    def spread(xs: list[float]) -> str:
        return f"{min(xs):,.0f}-{max(xs):,.0f} over {len(xs)} runs"

    res.add("files", f"raw TCP copy of {mb} MB (baseline)", raw, "MB/s", note=spread(rates["raw"]))
    res.add(
        "files",
        f"{mb} MB file, peer to peer, direct link",
        node,
        "MB/s",
        note=spread(rates["node"]) + f"; path {', '.join(sorted(str(p) for p in paths))}",
    )
    res.add(
        "files",
        "file over the direct link / raw TCP copy",
        ratio,
        "x",
        f">= {TARGET_RATIO}",
        verdict(ratio >= TARGET_RATIO and paths == {"direct"}),
        note=f"{min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} rounds",
    )
    for side, label in (("send", "sender"), ("receive", "receiver")):
        per_mb = [1000 * r[side]["cpu_s"] / mb for r in runs["node"]]
        raw_mb = [1000 * r[side]["cpu_s"] / mb for r in runs["raw"]]
        res.add(
            "files",
            f"CPU per MB, {label}",
            statistics.median(per_mb),
            "ms/MB",
            note=f"{min(per_mb):.2f}-{max(per_mb):.2f}; raw TCP copy "
            f"{statistics.median(raw_mb):.2f} ms/MB",
        )
    hash_ms = [1000 * r["send"]["hash_cpu_s"] / mb for r in runs["node"]]
    res.add(
        "files",
        "sender's SHA-256 before the offer",
        statistics.median(hash_ms),
        "ms/MB",
        note="done once, off the event loop, before the offer goes",
    )
    res.details = {"mb": mb, "runs": runs, "rates": rates}
    return res
