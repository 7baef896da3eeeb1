"""Rows of the results table, the table itself, and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import procstat

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    scenario: str
    figure: str
    value: float | int | str | None
    unit: str = ""
    target: str = ""
    verdict: str = "info"  # "pass", "FAIL", "info" or "n/a"
    note: str = ""


@dataclass
class Result:
    rows: list[Row] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def add(self, *args: object, **kw: object) -> Row:
        row = Row(*args, **kw)  # type: ignore[arg-type]
        self.rows.append(row)
        return row


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[Row]) -> str:
    head = ("scenario", "figure", "value", "unit", "target", "verdict")
    cells = [head] + [
        (r.scenario, r.figure, _fmt(r.value), r.unit, r.target, r.verdict) for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = []
    for n, c in enumerate(cells):
        lines.append(
            "  ".join(
                c[i].rjust(widths[i]) if i == 2 else c[i].ljust(widths[i]) for i in range(len(head))
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  [{r.scenario}] {r.figure}: {r.note}" for r in rows if r.note]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


def markdown(rows: list[Row]) -> str:
    out = ["| scenario | figure | value | unit | target | verdict |", "|---|---|--:|---|---|---|"]
    for r in rows:
        out.append(
            f"| {r.scenario} | {r.figure} | {_fmt(r.value)} | {r.unit} | {r.target} | {r.verdict} |"
        )
    return "\n".join(out)


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": procstat.loadavg(),
    }


def save(rows: list[Row], details: dict, argv: list[str], started: float) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    path = RESULTS_DIR / f"bench-{stamp}.json"
    doc = {
        "started": started,
        "seconds": time.time() - started,
        "argv": argv,
        "machine": machine(),
        "rows": [asdict(r) for r in rows],
        "details": details,
    }
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (RESULTS_DIR / "latest.json").write_text(path.read_text())
    return path
