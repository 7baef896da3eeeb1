"""File transfer: a file of ``FILE_MB`` MB between two full peers over their
direct link on 127.0.0.1, next to a raw TCP copy of the same bytes in the
same run (the ratio), with the CPU each end spent per MB; then, where the
namespace lab can be built (root, iproute2, iptables), the same file over
the punched path between two NATs (:mod:`benchmarks.file_lab`).

Each mode runs ``ROUNDS`` times, alternating, on a quiet machine; the table
gives the median and the spread. Processes: :mod:`benchmarks.file_peers`.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from benchmarks import file_lab
from benchmarks.rendezvous_proc import rendezvous
from benchmarks.report import Result, verdict
from benchmarks.scenarios import Settings, quiet_machine
from benchmarks.scenarios.direct import _line, _proc

FILE_MB = 200
ROUNDS = 3
#: Copies of each kind in the namespace lab (each builds two fresh peers).
LAB_ROUNDS = 2
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
    work = settings.workdir("files")
    mb = 50 if settings.quick else FILE_MB
    with _ram_folder() as ram:
        return await _run(work, ram, mb)


@contextmanager
def _ram_folder() -> Iterator[Path | None]:
    """A folder on the RAM disk, removed afterwards; None when there is none."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="chathack-files-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _run(work: Path, ram: Path | None, mb: int) -> Result:
    res = Result()
    # Both copies read and write the RAM disk when there is one: the figures
    # are then the programs' own, not the disk's (whose writeback made single
    # raw copies vary 5-fold here).
    files = ram or work
    source = files / "source.bin"
    _source(source, mb)
    inbox = files / "inbox"
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

    where = "files on the RAM disk" if ram else "files on disk"
    res.add(
        "files",
        f"raw TCP copy of {mb} MB (baseline)",
        raw,
        "MB/s",
        note=f"{spread(rates['raw'])}; {where}",
    )
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
    details = {"mb": mb, "runs": runs, "rates": rates, "files_on": str(files)}
    why_not = file_lab.available()
    if why_not is None:
        lab = await trio.to_thread.run_sync(file_lab.run, work, source, mb, LAB_ROUNDS)
        details["lab"] = lab
        _lab_rows(res, mb, lab)
    else:
        res.add("files", f"{mb} MB over the punched path (namespace lab)", "n/a", note=why_not)
    res.details = details
    return res


def _lab_rows(res: Result, mb: int, lab: dict) -> None:
    punched = [r["mb_per_s"] for r in lab["punched"]]
    raw = [r["mb_per_s"] for r in lab["raw"]]
    shown = sorted({p for r in lab["punched"] for p in r["paths_shown"]})

    def spread(xs: list[float]) -> str:
        return f"{min(xs):,.0f}-{max(xs):,.0f} over {len(xs)} runs"

    res.add(
        "files",
        f"raw TCP copy of {mb} MB in the lab, a1 -> public host (baseline)",
        statistics.median(raw),
        "MB/s",
        note=spread(raw) + "; through a1's NAT, no punching: the nearest raw path there",
    )
    res.add(
        "files",
        f"{mb} MB file a1 -> b1 over the punched path (two NATs)",
        statistics.median(punched),
        "MB/s",
        note=spread(punched)
        + f"; {statistics.median(punched) / statistics.median(raw):.2f} x the raw copy; "
        + f"progress lines showed {', '.join(shown) or 'no path'}",
    )
    for side, label in (("send", "sender"), ("receive", "receiver")):
        per_mb = [r["cpu_ms_per_mb"][side] for r in lab["punched"]]
        res.add(
            "files",
            f"CPU per MB over the punched path, {label}",
            statistics.median(per_mb),
            "ms/MB",
            note=f"{min(per_mb):.2f}-{max(per_mb):.2f}",
        )
