"""A file over the punched path, in the network-namespace lab (:mod:`tests.netlab`).

Called by the ``files`` scenario (benchmarks/scenarios/files.py), in a
thread: blocking, like the lab and its pexpect-driven peers. a1 and b1 sit
behind the lab's two port-keeping NATs; they open a conversation, which
moves to a punched link, and a1 sends b1 a file of ``mb`` MB with files kept
off the relay (``--no-file-relay``), so only the punched path can carry it.
Beside it, in the same lab, a raw TCP copy of the same bytes from a1 to the
public host (through a1's NAT, no punching: the nearest raw path there is).
Each end's CPU comes from /proc (utime + stime of the peer process).
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from benchmarks import procstat
from tests.netlab import Lab, build_lab, lab_available
from tests.procs import Peer, Rendezvous

RDV_PORT = 7777
#: Seconds for the punched path to come up, and for the file to cross.
PATH_TIMEOUT = 30.0
COPY_TIMEOUT = 300.0


def available() -> str | None:
    """None when the lab can be built here, else why not."""
    return lab_available()


def run(work: Path, source: Path, mb: int, rounds: int) -> dict:
    """``rounds`` copies each way of measuring; the figures of each."""
    with build_lab() as lab:
        rdv = lab.hosts["rdv"]
        server = Rendezvous(
            work / "lab-rdv.sqlite3", host="0.0.0.0", port=RDV_PORT, prefix=tuple(rdv.argv_prefix())
        )
        try:
            address = f"{rdv.ip}:{RDV_PORT}"
            punched = [_punched_copy(lab, address, work, source, mb, i) for i in range(rounds)]
        finally:
            server.stop()
        raw = [_raw_copy(lab, work, source, mb) for _ in range(rounds)]
    return {"punched": punched, "raw": raw}


def _peer(lab: Lab, host: str, server: str, folder: Path) -> Peer:
    h = lab.hosts[host]
    peer = Peer(
        host,
        server,
        folder,
        listen="0.0.0.0:0",
        extra=("--no-file-relay",),
        prefix=tuple(h.argv_prefix()),
    )
    return peer.logged_in()


def _punched_copy(lab: Lab, server: str, work: Path, source: Path, mb: int, run: int) -> dict:
    folder = work / f"lab-{run}"
    inbox = folder / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    a1 = _peer(lab, "a1", server, folder / "a1")
    b1 = _peer(lab, "b1", server, folder / "b1")
    try:
        a1.send("connect: b1")
        a1.expect(r"\[b1\] (Now talking|Talking) to b1 [^\n]*\(punched\)", PATH_TIMEOUT)
        b1.expect(r"\[a1\] (Now talking to a1|a1 opened)[^\n]*\(punched\)", PATH_TIMEOUT)
        a1.send(f"::send {source}")
        b1.expect(r"transfer 1: a1 offers ", PATH_TIMEOUT)
        pids = {"send": a1.proc.proc.pid, "receive": b1.proc.proc.pid}
        cpu0 = {k: procstat.cpu_seconds(p) for k, p in pids.items()}
        t0 = time.monotonic()
        b1.send(f"::accept {inbox}")
        b1.expect(r"transfer 1: saved [^\n]*SHA-256 verified", COPY_TIMEOUT)
        seconds = time.monotonic() - t0
        cpu = {k: procstat.cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
        shown = re.findall(r"/s ETA [^\n]*? (\w+)\r?$", b1.output, re.M)
    finally:
        a1.stop()
        b1.stop()
    return {
        "seconds": seconds,
        "mb_per_s": mb / seconds,
        "cpu_ms_per_mb": {k: 1000 * v / mb for k, v in cpu.items()},
        "paths_shown": sorted(set(shown)),
    }


def _raw_copy(lab: Lab, work: Path, source: Path, mb: int) -> dict:
    inbox = work / "lab-raw"
    inbox.mkdir(exist_ok=True)
    for old in inbox.iterdir():
        old.unlink()
    spec = {"inbox": str(inbox), "deadline_s": COPY_TIMEOUT, "host": "0.0.0.0"}
    argv = [sys.executable, "-m", "benchmarks.file_peers"]
    receiver = lab.popen("pub", [*argv, "receive", "raw", json.dumps(spec)])
    assert receiver.stdout is not None
    port = json.loads(receiver.stdout.readline())["port"]
    spec = {**spec, "source": str(source), "port": port, "host": lab.hosts["pub"].ip}
    t0 = time.monotonic()
    sent = lab.run("a1", [*argv, "send", "raw", json.dumps(spec)], timeout=COPY_TIMEOUT)
    got = json.loads(receiver.stdout.readline())
    seconds = max(time.monotonic() - t0, got["seconds"])
    receiver.wait(timeout=COPY_TIMEOUT)
    sender = json.loads(sent.stdout)
    return {
        "seconds": seconds,
        "mb_per_s": mb / got["seconds"],
        "cpu_ms_per_mb": {
            "send": 1000 * sender["cpu_s"] / mb,
            "receive": 1000 * got["cpu_s"] / mb,
        },
    }
