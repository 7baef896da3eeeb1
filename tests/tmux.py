"""A program in a tmux pane of the test's own: keys in, the screen as a
person sees it out (``capture-pane``), every byte it wrote (``pipe-pane``,
for the bell), resizes.

Each :class:`Tmux` runs its own tmux server (``-L`` a socket named for the
test), killed in ``close()`` whatever happened. Waits are for what the screen
shows, polled under a deadline; nothing waits on a fixed delay.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

#: Seconds any single wait for the screen may take.
DEADLINE = 15.0
POLL = 0.02


class Tmux:
    def __init__(
        self,
        tmp: Path,
        argv: list[str],
        width: int = 80,
        height: int = 24,
        env: dict[str, str] | None = None,
    ) -> None:
        if shutil.which("tmux") is None:
            pytest.skip("tmux is not installed (apt-get install tmux)")
        self.socket = f"chathack-test-{os.getpid()}-{id(self)}"
        self.raw = tmp / "pane.raw"
        env = {"TERM": "xterm-256color", **(env or {})}
        command = " ".join(_quote(a) for a in argv)
        self._tmux(
            "new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height),
            "-e", f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}",
            *(f"-e{k}={v}" for k, v in env.items()),
            command,
        )  # fmt: skip
        self._tmux("set-option", "-t", "t", "remain-on-exit", "on")
        self._tmux("pipe-pane", "-t", "t", "-o", f"cat >> {_quote(str(self.raw))}")

    def _tmux(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        if out.returncode != 0:
            raise RuntimeError(f"tmux {args[0]}: {out.stderr.strip()}")
        return out.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t")

    def screen_with_colours(self) -> str:
        """The screen with its colours, as ANSI escapes (for screenshots)."""
        return self._tmux("capture-pane", "-e", "-p", "-t", "t")

    def lines(self) -> list[str]:
        return self.screen().splitlines()

    def wait_for(self, text: str, deadline: float = DEADLINE) -> str:
        """Until ``text`` is on screen; the screen then."""
        return self.wait_until(lambda screen: text in screen, f"{text!r} on screen", deadline)

    def wait_until(self, ok: object, what: str, deadline: float = DEADLINE) -> str:
        end = time.monotonic() + deadline
        while True:
            screen = self.screen()
            if ok(screen):  # type: ignore[operator]
                return screen
            if time.monotonic() > end:
                raise AssertionError(f"never saw {what}; the screen:\n{screen}")
            time.sleep(POLL)

    def keys(self, *keys: str) -> None:
        """tmux key names (``Enter``, ``M-2``, ``C-n``, ``Tab``) or text (-l)."""
        for key in keys:
            self._tmux("send-keys", "-t", "t", key)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "t", "-l", text)

    def resize(self, width: int, height: int = 24) -> None:
        self._tmux("resize-window", "-t", "t", "-x", str(width), "-y", str(height))

    def written(self) -> bytes:
        return self.raw.read_bytes() if self.raw.exists() else b""

    def dead(self) -> bool:
        return self._tmux("display-message", "-p", "-t", "t", "#{pane_dead}").strip() == "1"

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"
