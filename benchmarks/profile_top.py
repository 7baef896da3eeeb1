"""Summarise a server profile taken with ``python -m benchmarks.run --profile ...``.

    python -m benchmarks.profile_top benchmarks/results/relay-100-py-spy.txt [N]
    python -m benchmarks.profile_top benchmarks/results/relay-100.pstats [N]

For py-spy's raw output (collapsed stacks: ``frame;frame;... count``) it
prints the N functions with the most samples on top of the stack (self) and
with the most samples anywhere in the stack (inclusive), in % of all samples.
For a cProfile file it prints pstats' top N by total and by cumulative time.
"""

from __future__ import annotations

import pstats
import re
import sys
from collections import Counter
from pathlib import Path

# py-spy frames look like "function (path/to/file.py:123)"; drop the line number.
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{m['func']}"


def collapsed(path: Path) -> tuple[Counter[str], Counter[str], int]:
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_name(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames or frames[0].startswith("threading.py"):
            continue  # another thread (argon2 workers, mostly idle): the event loop only
        n = int(count)
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    return own, incl, total


def report(path: Path, top: int = 25) -> str:
    if path.suffix == ".pstats":
        out = []
        for key in ("tottime", "cumulative"):
            stream = __import__("io").StringIO()
            pstats.Stats(str(path), stream=stream).sort_stats(key).print_stats(top)
            out.append(stream.getvalue())
        return "\n".join(out)
    own, incl, total = collapsed(path)
    lines = [f"{total} samples of the event-loop thread", "", f"top {top} by self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", f"top {top} inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 25))
