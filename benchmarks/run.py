"""``python -m benchmarks.run``: run the benchmark scenarios, print the table,
save the JSON (benchmarks/results/). See benchmarks/README.md."""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from benchmarks.report import Result, Row, markdown, save, table
from benchmarks.scenarios import (
    Settings,
    backlog,
    compare,
    connect,
    direct,
    files,
    idle,
    logins,
    relay,
    scaleout,
)

REPO = Path(__file__).resolve().parents[1]

SCENARIOS: dict[str, Callable[[Settings], Awaitable[Result]]] = {
    "idle": idle.run,
    "logins": logins.run,
    "connect": connect.run,
    "relay": relay.run,
    "gencheck": relay.run_gencheck,
    "relay-tls": relay.run_tls,
    "direct": direct.run,
    "files": files.run,
    "backlog": backlog.run,
    "scaleout": scaleout.run,
    "compare": compare.run,
    "metrics-cost": relay.run_metrics_cost,
}
#: File descriptors this process (and the generators it starts) may open.
NOFILE = 65536


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark chathack against real chathack-rendezvous processes on "
        "127.0.0.1: idle capacity, logins, connect: lookups, relay, direct links, "
        "offline backlog, several instances on Redis (scaleout). Prints a table and saves "
        "JSON in benchmarks/results/.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller and shorter: 1,000 idle peers, 100 relay pairs, 5 s windows",
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=list(SCENARIOS),
        metavar="NAME",
        help=f"run only these scenarios: {', '.join(SCENARIOS)}",
    )
    p.add_argument(
        "--clients",
        nargs="+",
        type=int,
        metavar="N",
        help="idle peer counts, one idle run each (default: 10000; --quick: 1000)",
    )
    p.add_argument(
        "--pairs",
        nargs="+",
        type=int,
        metavar="N",
        help="relay client pairs, one relay run each; the targets are judged at 100, "
        "InspIRCd's load (default: 100 1000; --quick: 100)",
    )
    p.add_argument(
        "--gen-procs",
        type=int,
        default=2,
        metavar="N",
        help="load-generator processes per scenario (default: %(default)s)",
    )
    p.add_argument(
        "--duration",
        type=float,
        help="seconds of each measurement window (default: 10; --quick: 5)",
    )
    p.add_argument(
        "--profile",
        choices=["py-spy", "cprofile"],
        help="profile the rendezvous during the relay scenario (its figures are then inflated)",
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the work directory (server logs, databases)"
    )
    return p


def raise_nofile(n: int) -> int:
    """Raise RLIMIT_NOFILE for this process and its children; the limit obtained."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(n, soft), max(n, hard)))
    except (ValueError, OSError):  # not root: as high as the hard limit allows
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def run_all(names: list[str], settings: Settings) -> tuple[list[Row], dict]:
    rows: list[Row] = []
    details: dict = {}
    for name in names:
        t0 = time.monotonic()
        print(f"== {name} ...", file=sys.stderr, flush=True)
        try:
            result = await SCENARIOS[name](settings)
        except Exception as e:  # one broken scenario must not hide the others' figures
            traceback.print_exception(e, file=sys.stderr)
            leaf = _leaf(e)
            result = Result()
            result.add(name, "scenario failed", f"{type(leaf).__name__}: {leaf}", verdict="FAIL")
        rows += result.rows
        details[name] = {**result.details, "seconds": time.monotonic() - t0}
        print(table(result.rows), file=sys.stderr, flush=True)
    return rows, details


def _leaf(e: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups."""
    while isinstance(e, BaseExceptionGroup):
        e = e.exceptions[0]
    return e


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for v in (*(args.clients or []), *(args.pairs or []), args.gen_procs):
        if v < 1:
            print("benchmarks: counts must be at least 1", file=sys.stderr)
            return 2
    started = time.time()
    # The generator and server processes run "-m benchmarks..." from the repository.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    os.chdir(REPO)
    nofile = raise_nofile(NOFILE)
    root = Path(tempfile.mkdtemp(prefix="chathack-bench-"))
    settings = Settings(
        quick=args.quick,
        clients=args.clients or ([1000] if args.quick else [10_000]),
        pairs=args.pairs or ([100] if args.quick else [100, 1000]),
        gen_procs=args.gen_procs,
        duration=args.duration or (5.0 if args.quick else 10.0),
        profile=args.profile,
        root=root,
    )
    if max(settings.clients) + 1024 > nofile:
        print(f"benchmarks: only {nofile} file descriptors allowed", file=sys.stderr)
    names = args.only or list(SCENARIOS)
    try:
        rows, details = trio.run(run_all, names, settings)
    finally:
        if args.keep:
            print(f"work directory kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    details["settings"] = {k: str(v) for k, v in vars(settings).items()}
    path = save(rows, details, sys.argv if argv is None else argv, started)
    print()
    print(table(rows))
    print()
    print(f"saved {path.relative_to(REPO)} ({time.time() - started:.0f} s)")
    if os.environ.get("BENCH_MARKDOWN"):
        print()
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
