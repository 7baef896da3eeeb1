"""A fuzzing campaign, or the replay of one input.

    python -m tests.fuzz --minutes N [--harness NAME ...] [--jobs J] [--merge]
    python -m tests.fuzz --replay FILE [--harness NAME]

A campaign runs every harness (or those named) under atheris with a random
seed, ``--jobs`` at a time, for N minutes in all. New inputs go to the work
dir (``tests/fuzz/work/corpus/NAME``); ``--merge`` then adds those that
reach new coverage to the committed corpus. Crashes go to
``tests/fuzz/crashes/NAME-crash-...``; a harness that crashed is started
again (a new seed) while its time lasts. At the end a table shows, per
harness, the executions, libFuzzer's coverage figures (``cov``: code edges,
``ft``: features), the crashes, and the known bugs (tests/fuzz/known.py) it
met and went past. See tests/fuzz/README.md.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CORPUS = HERE / "corpus"
CRASHES = HERE / "crashes"
WORK = HERE / "work"
#: A harness that crashes at once is not started again forever.
MAX_STARTS = 20
#: Seconds one input may take before libFuzzer calls it a hang (a timeout- file).
INPUT_TIMEOUT = 25
#: Seconds a worker gets beyond its budget (start-up, merge) before it is killed.
GRACE = 120

_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)", re.M)
_EXECS = re.compile(r"^stat::number_of_executed_units: (\d+)", re.M)
_DONE = re.compile(r"^Done (\d+) runs", re.M)
_ERROR = re.compile(r"=== Uncaught Python exception: ===\n(.*)")
_KNOWN = re.compile(r"^KNOWN-BUG: (\S+)", re.M)


@dataclass
class Result:
    name: str
    starts: int = 0
    execs: int = 0
    cov: int = 0
    ft: int = 0
    crashes: list[tuple[Path, str]] = field(default_factory=list)
    known: set[str] = field(default_factory=set)  # known bugs met (skipped)

    @property
    def corpus(self) -> int:
        work = WORK / "corpus" / self.name
        return sum(1 for _ in work.iterdir()) if work.is_dir() else 0


def worker_command(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "tests.fuzz.worker", name, *args]


def campaign(name: str, seconds: float) -> Result:
    """Fuzz ``name`` for ``seconds``, starting it again after each crash."""
    result = Result(name)
    work = WORK / "corpus" / name
    work.mkdir(parents=True, exist_ok=True)
    CRASHES.mkdir(exist_ok=True)
    log = WORK / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + seconds
    while result.starts < MAX_STARTS and (left := deadline - time.monotonic()) >= 1:
        result.starts += 1
        seed = random.randrange(1, 2**31)
        before = set(CRASHES.glob(f"{name}-*"))
        command = worker_command(
            name,
            f"-seed={seed}",
            f"-max_total_time={math.ceil(left)}",
            f"-timeout={INPUT_TIMEOUT}",
            f"-artifact_prefix={CRASHES}/{name}-",
            "-print_final_stats=1",
            str(work),
            str(CORPUS / name),
        )
        try:
            run = subprocess.run(
                command, cwd=ROOT, capture_output=True, text=True, timeout=left + GRACE
            )
            output = run.stdout + run.stderr
        except subprocess.TimeoutExpired as e:
            output = f"{e.stdout or ''}{e.stderr or ''}\n(killed after {left + GRACE:.0f} s)"
        with log.open("a") as f:
            f.write(f"\n===== {' '.join(command)}\n{output}")
        _account(result, output)
        for crash in sorted(set(CRASHES.glob(f"{name}-*")) - before):
            error = _ERROR.search(output)
            result.crashes.append((crash, error.group(1) if error else "see the log"))
        if not (set(CRASHES.glob(f"{name}-*")) - before):
            break  # ran its time without a crash
    return result


def _account(result: Result, output: str) -> None:
    statuses = _STATUS.findall(output)
    if statuses:
        _, cov, ft = statuses[-1]
        result.cov, result.ft = max(result.cov, int(cov)), max(result.ft, int(ft))
    done = _EXECS.findall(output) or _DONE.findall(output) or [s[0] for s in statuses[-1:]]
    result.execs += int(done[-1]) if done else 0
    result.known.update(_KNOWN.findall(output))


def merge(name: str) -> str:
    """Add the work corpus's inputs that reach new coverage to the committed corpus."""
    work = WORK / "corpus" / name
    if not work.is_dir():
        return "nothing to merge"
    run = subprocess.run(
        worker_command(name, "-merge=1", str(CORPUS / name), str(work)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=GRACE * 5,
    )
    added = re.findall(r"MERGE-OUTER: (\d+) new files", run.stderr)
    return f"{added[-1] if added else '?'} new file(s)"


def table(results: list[Result]) -> str:
    head = ("harness", "starts", "executions", "cov", "ft", "work corpus", "crashes", "known")
    rows = [head] + [
        tuple(
            map(
                str,
                (r.name, r.starts, r.execs, r.cov, r.ft, r.corpus, len(r.crashes), len(r.known)),
            )
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]

    def line(row: tuple[str, ...]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells))

    lines = [line(rows[0]), "  ".join("-" * w for w in widths), *map(line, rows[1:])]
    for r in results:
        for path, error in r.crashes:
            lines.append(f"{path.relative_to(ROOT)}: {error}")
        for reproducer in sorted(r.known):
            lines.append(
                f"{r.name}: met the known bug of corpus/{reproducer} (tests/fuzz/known.py)"
            )
    return "\n".join(lines)


def replay(path: Path, name: str | None) -> int:
    """Run one input through its harness here, without atheris; 1 if it raised."""
    from tests.fuzz.harnesses import HARNESSES
    from tests.fuzz.known import known_bug

    name = name or _harness_of(path, HARNESSES)
    try:
        HARNESSES[name](path.read_bytes())
    except Exception as exc:
        traceback.print_exc()
        bug = known_bug(exc)
        print(f"\n{name}: {'a known bug: ' + bug.what if bug else 'a new bug'}", file=sys.stderr)
        return 1
    print(f"{name}: {path} passes")
    return 0


def _harness_of(path: Path, names: dict[str, object]) -> str:
    if path.parent.name in names:
        return path.parent.name  # a corpus file: corpus/NAME/...
    for name in names:
        if path.name.startswith(f"{name}-"):
            return name  # a crash: NAME-crash-...
    sys.exit(f"which harness is {path} for? say --harness NAME")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, help="length of the whole campaign")
    parser.add_argument("--harness", action="append", help="only this harness (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="harnesses fuzzed at once")
    parser.add_argument("--merge", action="store_true", help="add new coverage to the corpus")
    parser.add_argument(
        "--replay", type=Path, metavar="FILE", help="run one input and say why it fails"
    )
    args = parser.parse_args(argv)
    if args.replay is not None:
        return replay(args.replay, args.harness[0] if args.harness else None)
    if args.minutes is None:
        parser.error("say how long: --minutes N (or --replay FILE)")
    try:
        import atheris  # noqa: F401
    except ImportError:
        sys.exit(
            "atheris is not installed (pip install -e '.[test]' on Linux x86_64, Python < 3.14)"
        )
    from tests.fuzz.harnesses import HARNESSES

    names = args.harness or list(HARNESSES)
    unknown = [n for n in names if n not in HARNESSES]
    if unknown:
        parser.error(f"no harness {', '.join(unknown)}; there are: {', '.join(HARNESSES)}")
    jobs = max(1, min(args.jobs, len(names)))
    # Every harness gets the same share of jobs x minutes.
    seconds = max(10.0, args.minutes * 60 * jobs / len(names))
    print(
        f"{len(names)} harness(es), {jobs} at a time, {seconds:.0f} s each; logs in {WORK / 'logs'}"
    )
    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(lambda n: campaign(n, seconds), names))
    if args.merge:
        for name in names:
            print(f"merged {name}: {merge(name)}")
    print(table(results))
    return 1 if any(r.crashes for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
