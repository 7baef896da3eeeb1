"""How fast a conversation starts and upgrades, per path, in the NAT lab.

    sudo /work/venv/bin/python -m benchmarks.nat_paths [--runs N] [--pair NAME ...]

Builds the network-namespace lab of :mod:`tests.netlab` (an internet, two
home networks behind port-keeping NATs, one behind a symmetric NAT, a public
host), runs a real ``chathack-rendezvous`` in it, and for each pair of hosts
starts two fresh ``chathack-peer`` processes (plain mode, as in
``tests/test_nat.py``). The caller types ``connect: CALLEE`` and, right after
it, one message. Measured from the moment ``connect:`` is written:

* **first message** — until the callee prints that message (the relay
  carries it at once when no direct link is up within ``DIRECT_GRACE``);
* **upgrade** — until the caller prints the line with the final path word,
  ``(direct)`` or ``(punched)`` (n/a when the path stays ``relayed``);
* **gave up** — for ``relayed`` only: until the caller says
  ``No direct path to CALLEE ... (relayed)`` (the direct race and the punch
  window both failed).

A benchmark, not a test: nothing is asserted; a run whose line never comes
is recorded as missing (with the reason) and the next run goes on. Results:
a table on stdout and ``benchmarks/results/nat_paths.json``. Needs root,
iproute2 and iptables (like the lab tests); the lab is always torn down.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: python benchmarks/nat_paths.py
    sys.path.insert(0, str(ROOT))

from tests.netlab import Lab, build_lab, lab_available  # noqa: E402
from tests.procs import Peer, Rendezvous  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "nat_paths.json"
RDV_PORT = 7777
#: Seconds a peer has to log in.
LOGIN_TIMEOUT = 15.0
#: Seconds any measured line may take: a failed direct race (DIAL_TIMEOUT,
#: 2.5 s) plus the punch window (PUNCH_WINDOW, 6 s), with room for a slow machine.
LINE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Pair:
    name: str
    caller: str
    callee: str
    expected: str  # the path word the lab tests expect


PAIRS = (
    Pair("same LAN", "a1", "a2", "direct"),
    Pair("NAT <-> NAT", "a1", "b1", "punched"),
    Pair("NAT -> public", "a1", "pub", "direct"),
    Pair("public -> NAT (reversal)", "pub", "b1", "direct"),
    Pair("symmetric NAT <-> NAT", "s1", "b1", "relayed"),
)


@dataclass
class Sample:
    first_message: float | None = None
    upgrade: float | None = None
    gave_up: float | None = None
    path: str | None = None  # the final path word the caller printed
    error: str | None = None


@dataclass
class Result:
    pair: Pair
    samples: list[Sample] = field(default_factory=list)


def _timed(peer: Peer, patterns: list[str], t0: float) -> tuple[int, float, str]:
    """Wait for the first of ``patterns`` on ``peer``; (index, seconds since t0, line)."""
    index = peer.proc.expect(patterns, timeout=LINE_TIMEOUT)
    return index, time.monotonic() - t0, peer.proc.match.group(0)


def one_run(lab: Lab, server: str, tmp: Path, pair: Pair, run: int) -> Sample:
    sample = Sample()
    peers: list[Peer] = []
    try:
        for host in (pair.callee, pair.caller):
            h = lab.hosts[host]
            peer = Peer(
                host,
                server,
                tmp / host,
                listen="0.0.0.0:0",
                prefix=tuple(h.argv_prefix()),
            )
            peers.append(peer)
            peer.expect(r"Who do you want to talk to\?", timeout=LOGIN_TIMEOUT)
        callee, caller = peers
        text = f"benchmark run {run}"
        # The caller's line with the final path word for this conversation.
        tag = rf"\* \[{pair.callee}\] "
        upgraded = rf"{tag}(?:Talking|Now talking) to {pair.callee}\b[^\n]*\((direct|punched)\)"
        gave_up = rf"{tag}No direct path to {pair.callee}\b[^\n]*"
        with ThreadPoolExecutor(2) as pool:
            t0 = time.monotonic()
            caller.send(f"connect: {pair.callee}")
            caller.send(text)
            delivered = pool.submit(
                _timed, callee, [rf"(?m)^{re.escape(pair.caller)}: {re.escape(text)}\r?$"], t0
            )
            path = pool.submit(_timed, caller, [upgraded, gave_up], t0)
            try:
                sample.first_message = delivered.result()[1]
            except Exception as e:  # pexpect.TIMEOUT / EOF: record it, go on
                sample.error = f"message not delivered: {type(e).__name__}"
            try:
                index, seconds, line = path.result()
                if index == 0:
                    sample.upgrade = seconds
                    sample.path = re.search(r"\((direct|punched)\)", line).group(1)  # type: ignore[union-attr]
                else:
                    sample.gave_up, sample.path = seconds, "relayed"
            except Exception as e:
                sample.error = (sample.error or "") + f" no path line: {type(e).__name__}"
    except Exception as e:  # a peer that does not log in: record and go on
        sample.error = f"{type(e).__name__}: {e}"
    finally:
        for peer in peers:
            peer.stop()
    return sample


def stats(values: list[float | None]) -> dict[str, float] | None:
    got = [v for v in values if v is not None]
    if not got:
        return None
    return {"median": statistics.median(got), "min": min(got), "max": max(got), "n": len(got)}


CELL = 23  # "median    min    max" in seconds, three decimals


def _cell(s: dict[str, float] | None) -> str:
    if s is None:
        return f"{'n/a':>{CELL}}"
    return f"{s['median']:7.3f}{s['min']:8.3f}{s['max']:8.3f}"


def table(results: list[Result], runs: int) -> str:
    head = (
        f"{'pair (caller -> callee)':38} {'path seen':10} {'first message (s)':>{CELL}}  "
        f"{'upgrade (s)':>{CELL}}  {'gave up (s)':>{CELL}}"
    )
    sub = f"{'':38} {'':10} " + f"{' median     min     max':>{CELL}}  " * 3
    rows = [head, sub.rstrip(), "-" * len(head)]
    for r in results:
        seen = sorted({s.path or "?" for s in r.samples})
        label = f"{r.pair.name} ({r.pair.caller} -> {r.pair.callee})"
        rows.append(
            f"{label:38} {'/'.join(seen):10} "
            f"{_cell(stats([s.first_message for s in r.samples]))}  "
            f"{_cell(stats([s.upgrade for s in r.samples]))}  "
            f"{_cell(stats([s.gave_up for s in r.samples]))}".rstrip()
        )
        for s in r.samples:
            if s.error:
                rows.append(f"{'':4}run error: {s.error.strip()}")
    rows.append(f"({runs} run(s) per pair; times from writing 'connect:' at the caller)")
    return "\n".join(rows)


def _git_describe() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save(results: list[Result], runs: int) -> Path:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "nat_paths",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "code": _git_describe(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "runs": runs,
        "pairs": [
            {
                **asdict(r.pair),
                "samples": [asdict(s) for s in r.samples],
                "first_message": stats([s.first_message for s in r.samples]),
                "upgrade": stats([s.upgrade for s in r.samples]),
                "gave_up": stats([s.gave_up for s in r.samples]),
            }
            for r in results
        ],
    }
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    return RESULTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.nat_paths",
        description="Time from 'connect:' to the first message delivered and to the path "
        "upgrade, for each path of the NAT lab (needs root).",
        epilog="pairs (caller-callee, expected path): "
        + "; ".join(f"{p.caller}-{p.callee} {p.name}: {p.expected}" for p in PAIRS)
        + f". Results also go to {RESULTS.relative_to(ROOT)}.",
    )
    parser.add_argument(
        "--runs", type=int, default=3, metavar="N", help="runs per pair (default: %(default)s)"
    )
    parser.add_argument(
        "--pair",
        action="append",
        choices=[p.caller + "-" + p.callee for p in PAIRS],
        help="only this pair (repeatable; default: all)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if (reason := lab_available()) is not None:
        print(f"nat_paths: {reason}", file=sys.stderr)
        return 2
    pairs = [p for p in PAIRS if not args.pair or f"{p.caller}-{p.callee}" in args.pair]
    results = [Result(p) for p in pairs]
    with tempfile.TemporaryDirectory(prefix="chathack-nat-bench-") as tmp, build_lab() as lab:
        rdv_host = lab.hosts["rdv"]
        rdv = Rendezvous(
            Path(tmp) / "rdv.sqlite3",
            host="0.0.0.0",
            port=RDV_PORT,
            prefix=tuple(rdv_host.argv_prefix()),
        )
        try:
            server = f"{rdv_host.ip}:{RDV_PORT}"
            for run in range(1, args.runs + 1):
                for r in results:
                    sample = one_run(lab, server, Path(tmp), r.pair, run)
                    r.samples.append(sample)
                    shown = {k: v for k, v in asdict(sample).items() if v is not None}
                    print(f"run {run} {r.pair.name}: {shown}", file=sys.stderr, flush=True)
        finally:
            rdv.stop()
    print(table(results, args.runs))
    print(f"saved {save(results, args.runs).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
