"""A real rendezvous process for one scenario: start, observe through /proc, stop.

The server runs as its own process on 127.0.0.1 with a port it picks (its log
says which), a fresh SQLite file, and RLIMIT_NOFILE raised so it can hold
every benchmark connection. Its log goes to a file in the scenario's work
directory (a pipe nobody reads would stall it).
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import trio

from benchmarks import procstat
from benchmarks.pool import output_file

#: Seconds the server has to print its port.
START_TIMEOUT = 20.0
#: Seconds it has to exit after SIGTERM (it flushes goodbyes for up to 2 s).
STOP_TIMEOUT = 10.0
HOST = "127.0.0.1"

_LISTENING = re.compile(r"chathack-rendezvous listening on ([\d.]+):(\d+)")


class ServerFailed(Exception):
    """The rendezvous did not start or died: its log (in the work dir) says why."""


@dataclass
class Rendezvous:
    """A server process (the rendezvous, or a server it is compared with) as
    the measurements see it."""

    proc: trio.Process
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kib(self) -> int:
        return procstat.rss_kib(self.pid)

    def cpu_ticks(self) -> int:
        return procstat.cpu_ticks(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None


def _nofile_setter(n: int) -> Callable[[], None]:
    """A ``preexec_fn`` that raises the child's RLIMIT_NOFILE to ``n``."""

    def set_limit() -> None:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        except (ValueError, OSError):
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    return set_limit


def load_test_limits(max_conns: int) -> dict[str, str]:
    """The server's limits lifted for a load test from one address, as flag -> value.

    A flag is passed only if this server version has it (its --help lists it).
    """
    return {
        "--max-conns": str(max_conns),
        "--max-conns-per-ip": str(max_conns),  # every benchmark client is 127.0.0.1
        "--max-msg-rate": "0",  # the relay scenario sends far more than a person types
        "--max-cmd-rate": "0",  # lookups and logins in a loop
        "--max-login-rate": "0",  # logins per minute per address
    }


@cache
def server_flags() -> frozenset[str]:
    """The flags ``chathack-rendezvous --help`` lists."""
    exe = str(Path(sys.executable).parent / "chathack-rendezvous")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30).stdout
    return frozenset(re.findall(r"--[a-z][a-z0-9-]*", out))


def server_argv(
    db: Path,
    *,
    cheap_argon2: bool,
    cprofile_out: Path | None,
    log_level: str,
    max_conns: int,
    tls: bool = False,
    extra: tuple[str, ...] = (),
) -> list[str]:
    cli_args = ["--host", HOST, "--port", "0", "--db", str(db), "--log-level", log_level]
    cli_args += extra
    if tls:
        cli_args.append("--tls")  # a self-signed certificate made beside the db
    for flag, value in load_test_limits(max_conns).items():
        if flag in server_flags():
            cli_args += [flag, value]
    if not cheap_argon2 and cprofile_out is None:
        # The unmodified console script.
        return [str(Path(sys.executable).parent / "chathack-rendezvous"), *cli_args]
    argv = [sys.executable]
    if cprofile_out is not None:
        argv += ["-m", "cProfile", "-o", str(cprofile_out)]
    argv += ["-m", "benchmarks.bench_rendezvous"]
    if cheap_argon2:
        argv.append("--cheap-argon2")
    return [*argv, "--", *cli_args]


@asynccontextmanager
async def rendezvous(
    workdir: Path,
    db: Path,
    *,
    cheap_argon2: bool,
    nofile: int = 65536,
    cprofile_out: Path | None = None,
    log_level: str = "info",
    tls: bool = False,
    extra: tuple[str, ...] = (),
    name: str = "rendezvous",
) -> AsyncIterator[Rendezvous]:
    """``extra``: more flags (``--redis URL``...); ``name``: of its log file."""
    log = workdir / f"{name}.log"
    argv = server_argv(
        db,
        cheap_argon2=cheap_argon2,
        cprofile_out=cprofile_out,
        log_level=log_level,
        max_conns=nofile - 1024,
        tls=tls,
        extra=extra,
    )
    proc = await start_process(argv, log, nofile)
    try:
        port = None
        with trio.move_on_after(START_TIMEOUT):
            while port is None and proc.poll() is None:
                m = _LISTENING.search(log.read_text(errors="replace"))
                if m:
                    port = int(m.group(2))
                else:
                    await trio.sleep(0.05)
        if port is None:
            raise ServerFailed(f"the rendezvous did not start; log: {log}")
        yield Rendezvous(proc, port, log)
    finally:
        await stop_process(proc)


async def start_process(argv: list[str], log: Path, nofile: int) -> trio.Process:
    """``argv`` with its output to ``log`` and ``nofile`` descriptors allowed."""
    fd = output_file(log)
    try:
        return await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            preexec_fn=_nofile_setter(nofile),
        )
    finally:
        os.close(fd)


async def stop_process(proc: trio.Process) -> None:
    """SIGTERM, ``STOP_TIMEOUT`` seconds to exit, then SIGKILL; even when cancelled."""
    with trio.CancelScope(shield=True):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(STOP_TIMEOUT):
                await proc.wait()
        if proc.poll() is None:
            proc.kill()
            await proc.wait()
