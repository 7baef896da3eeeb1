"""Real ``chathack-rendezvous`` and ``chathack-peer`` processes for end-to-end tests.

Conventions: everything listens on 127.0.0.1 with port 0 (the server prints
the port it got); every wait is ``pexpect``'s ``expect`` with a timeout; every
process is ended in a ``finally`` even when a test fails.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pexpect
from pexpect.popen_spawn import PopenSpawn

#: Seconds any single expected line may take to appear.
EXPECT_TIMEOUT = 15
BIN = Path(sys.executable).parent


def command(name: str) -> str:
    """The console script ``name`` from this venv (or PATH)."""
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


class Rendezvous:
    def __init__(
        self,
        db: Path,
        *extra: str,
        host: str = "127.0.0.1",
        port: int = 0,
        prefix: tuple[str, ...] = (),
    ) -> None:
        """``prefix`` runs it elsewhere (``ip netns exec NS``)."""
        argv = [
            *prefix,
            command("chathack-rendezvous"),
            "--host",
            host,
            "--port",
            str(port),
            "--db",
            str(db),
            "--log-level",
            "info",
            *extra,
        ]
        self.proc = PopenSpawn(argv, timeout=EXPECT_TIMEOUT, encoding="utf-8")
        self.proc.expect(r"listening on ([\d.]+):(\d+)\r?\n")
        self.host = self.proc.match.group(1)
        self.port = int(self.proc.match.group(2))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc.proc.poll() is None:
            self.proc.kill(sig)
        try:
            return self.proc.proc.wait(timeout=EXPECT_TIMEOUT)
        except Exception:
            self.proc.proc.kill()
            return self.proc.proc.wait(timeout=EXPECT_TIMEOUT)


class Peer:
    """A ``chathack-peer`` in plain mode (its stdin and stdout are pipes)."""

    def __init__(
        self,
        name: str,
        server: str,
        data_dir: Path,
        password: str | None = None,
        listen: str = "127.0.0.1:0",
        extra: tuple[str, ...] = (),
        prefix: tuple[str, ...] = (),
    ) -> None:
        env = dict(os.environ, CHATHACK_PASSWORD=password or f"pw-{name}-secret")
        argv = [
            *prefix,
            command("chathack-peer"),
            name,
            "--server",
            server,
            "--listen",
            listen,
            "--data-dir",
            str(data_dir),
            *extra,
        ]
        self.name = name
        self.proc = PopenSpawn(argv, timeout=EXPECT_TIMEOUT, encoding="utf-8", env=env)
        self.transcript = io.StringIO()
        self.proc.logfile_read = self.transcript

    def send(self, line: str) -> None:
        self.proc.sendline(line)

    def expect(self, pattern: str, timeout: float = EXPECT_TIMEOUT) -> re.Match[str]:
        """Wait for a line matching the regular expression ``pattern``."""
        self.proc.expect(pattern, timeout=timeout)
        return self.proc.match

    def expect_line(self, line: str, timeout: float = EXPECT_TIMEOUT) -> None:
        """Wait for exactly ``line`` as a whole output line."""
        self.proc.expect(r"(?m)^" + re.escape(line) + r"\r?$", timeout=timeout)

    def logged_in(self) -> Peer:
        self.expect(r"Who do you want to talk to\?")
        return self

    def wait(self, timeout: float = EXPECT_TIMEOUT) -> int:
        self.proc.expect(pexpect.EOF, timeout=timeout)
        return self.proc.proc.wait(timeout=timeout)

    @property
    def output(self) -> str:
        """Everything read so far, up to the last match."""
        return self.proc.before or ""

    def stop(self) -> None:
        if self.proc.proc.poll() is None:
            self.proc.proc.kill()
            self.proc.proc.wait(timeout=EXPECT_TIMEOUT)


class Lab:
    """Starts processes for one test and ends them all, whatever happens."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Rendezvous | Peer] = []

    def rendezvous(self, *extra: str, db: Path | None = None, port: int = 0) -> Rendezvous:
        r = Rendezvous(db or self.tmp / "rendezvous.sqlite3", *extra, port=port)
        self.procs.append(r)
        return r

    def peer(self, name: str, server: Rendezvous | str, **kw: object) -> Peer:
        addr = server.address if isinstance(server, Rendezvous) else server
        p = Peer(name, addr, self.tmp / f"peer-{name}", **kw)  # type: ignore[arg-type]
        self.procs.append(p)
        return p

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@contextmanager
def lab(tmp: Path) -> Iterator[Lab]:
    the_lab = Lab(tmp)
    try:
        yield the_lab
    finally:
        the_lab.close()
