"""One module per scenario; each has ``async def run(settings) -> Result``."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from benchmarks import hist, procstat
from benchmarks.pool import Pool
from benchmarks.rendezvous_proc import Rendezvous


@dataclass
class Settings:
    """What the command line chose; the defaults are the full run's."""

    quick: bool = False
    clients: list[int] = field(default_factory=lambda: [10_000])
    pairs: list[int] = field(default_factory=lambda: [100, 1000])
    gen_procs: int = 2
    duration: float = 10.0
    profile: str | None = None
    root: Path = Path("/tmp")

    def workdir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def split(items: list, parts: int) -> list[list]:
    """``items`` in ``parts`` interleaved chunks, none empty."""
    parts = max(1, min(parts, len(items)))
    return [items[i::parts] for i in range(parts)]


@dataclass
class Window:
    """What happened during one measurement window."""

    seconds: float
    count: int
    errors: int
    latency: Counter[int]
    server_cpu_s: float
    generator_cpu_s: float
    #: CPU all processes on the machine used (other people's work shows up here).
    machine_busy_s: float = 0.0
    #: CPU of the busiest generator process.
    generator_cpu_max_s: float = 0.0
    #: Cores the machine kept busy in the second before the load started.
    busy_before: float = 0.0
    #: CPU seconds of other processes watched by name (more instances, Redis).
    watched_cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def others_cpu_s(self) -> float:
        return max(0.0, self.machine_busy_s - self.server_cpu_s - self.generator_cpu_s)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def server_us_per(self) -> float | None:
        return self.server_cpu_s * 1e6 / self.count if self.count else None

    def p(self, q: float) -> float | None:
        return hist.percentile_ms(self.latency, q)

    def cpu_split(self) -> str:
        """Server / generators / other processes CPU during the window, in % of one core."""
        pct = 100 / self.seconds
        return (
            f"{self.server_cpu_s * pct:.0f} / {self.generator_cpu_s * pct:.0f} / "
            f"{self.others_cpu_s * pct:.0f}"
        )

    def percent(self, cpu_s: float) -> float:
        return 100 * cpu_s / self.seconds

    def as_dict(self) -> dict:
        return {
            "seconds": self.seconds,
            "count": self.count,
            "errors": self.errors,
            "rate_per_s": self.rate,
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_percent": 100 * self.server_cpu_s / self.seconds,
            "generator_cpu_s": self.generator_cpu_s,
            "generator_cpu_percent": 100 * self.generator_cpu_s / self.seconds,
            "busiest_generator_cpu_percent": 100 * self.generator_cpu_max_s / self.seconds,
            "other_processes_cpu_percent": 100 * self.others_cpu_s / self.seconds,
            "cores_busy_before_start": self.busy_before,
            "p50_ms": self.p(0.5),
            "p99_ms": self.p(0.99),
        }


#: The machine is shared: before a measurement, wait (at most QUIET_WAIT s) until
#: everything else on it uses less than QUIET_CORES cores.
QUIET_WAIT = 15.0
QUIET_CORES = 0.4


async def quiet_machine() -> float:
    """Wait until the machine is nearly idle; the cores busy in the last second."""
    busy = math.inf
    with trio.move_on_after(QUIET_WAIT):
        while busy >= QUIET_CORES:
            before = procstat.machine_busy_seconds()
            await trio.sleep(1.0)
            busy = procstat.machine_busy_seconds() - before
    return busy


async def measure(
    pool: Pool,
    server: Rendezvous,
    warmup: float,
    seconds: float,
    on_start: Callable[[], Awaitable[object]] | None = None,
    watch: dict[str, int] | None = None,
) -> Window:
    """Wait for a quiet machine, start the load (after ``on_start``), let it
    settle for ``warmup`` s, then measure ``seconds`` s; ``watch``: more
    processes (name -> pid) whose CPU the window records."""
    watch = watch or {}
    busy_before = await quiet_machine()
    if on_start is not None:
        await on_start()
    await pool.command("go")
    await trio.sleep(warmup)
    first = await pool.command("mark")
    t0, cpu0, busy0 = time.monotonic(), server.cpu_ticks(), procstat.machine_busy_seconds()
    watched0 = {name: procstat.cpu_ticks(pid) for name, pid in watch.items()}
    await trio.sleep(seconds)
    last = await pool.command("mark")
    t1, cpu1, busy1 = time.monotonic(), server.cpu_ticks(), procstat.machine_busy_seconds()
    watched = {
        name: (procstat.cpu_ticks(pid) - watched0[name]) / procstat.CLK_TCK
        for name, pid in watch.items()
    }
    marks = [m["mark"] for m in last]
    gen_cpu = [b["cpu_s"] - a["cpu_s"] for a, b in zip(first, last, strict=True)]
    return Window(
        seconds=t1 - t0,
        count=sum(m["count"] for m in marks),
        errors=sum(m["errors"] for m in marks),
        latency=hist.merge([m["hist"] for m in marks]),
        server_cpu_s=(cpu1 - cpu0) / procstat.CLK_TCK,
        generator_cpu_s=sum(gen_cpu),
        machine_busy_s=busy1 - busy0,
        generator_cpu_max_s=max(gen_cpu),
        busy_before=busy_before,
        watched_cpu_s=watched,
    )
