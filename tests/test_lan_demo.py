"""The LAN demo (examples/lan_demo.sh), run as the README tells a new user:
a rendezvous and two peers in tmux panes, the peers in the windowed UI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.procs import command

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "lan_demo.sh"
DEADLINE = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_lan_demo_opens_both_peers_in_windows(tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    tmux_socket = f"chathack-demo-test-{os.getpid()}"
    bin_dir = str(Path(command("chathack-peer")).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "CHATHACK_DEMO_PORT": str(_free_port()),
        "CHATHACK_DEMO_DIR": str(tmp_path / "demo"),
        "CHATHACK_DEMO_TMUX": tmux_socket,
        "CHATHACK_DEMO_DETACHED": "1",
    }

    def tmux(*args: str) -> str:
        out = subprocess.run(
            ["tmux", "-L", tmux_socket, *args], capture_output=True, text=True, timeout=10
        )
        return out.stdout

    def pane(index: int) -> str:
        return tmux("capture-pane", "-p", "-t", f"chathack-demo:0.{index}")

    def wait(index: int, ok: Callable[[str], bool], what: str) -> None:
        end = time.monotonic() + DEADLINE
        while not ok(screen := pane(index)):
            if time.monotonic() > end:
                raise AssertionError(f"never saw {what}; pane {index}:\n{screen}")
            time.sleep(0.05)

    try:
        started = subprocess.run(
            ["bash", str(DEMO)], env=env, capture_output=True, text=True, timeout=30
        )
        assert started.returncode == 0, started.stderr
        assert "connect: bob" in started.stdout  # what to type first
        alice, bob = 1, 2  # panes: the rendezvous, alice, bob
        for index in (alice, bob):
            wait(index, lambda s: "1:home" in s and "rendezvous: online" in s, "the window bar")
        tmux("send-keys", "-t", f"chathack-demo:0.{alice}", "-l", "connect: bob")
        tmux("send-keys", "-t", f"chathack-demo:0.{alice}", "Enter")
        wait(bob, lambda s: "2:alice" in s, "alice's window in bob's bar")
        tmux("send-keys", "-t", f"chathack-demo:0.{alice}", "-l", "hello from the demo")
        tmux("send-keys", "-t", f"chathack-demo:0.{alice}", "Enter")
        tmux("send-keys", "-t", f"chathack-demo:0.{bob}", "M-2")
        wait(bob, lambda s: "<alice> hello from the demo" in s, "alice's message in her window")
        stopped = subprocess.run(
            ["bash", str(DEMO), "--stop"], env=env, capture_output=True, text=True, timeout=30
        )
        assert stopped.stdout.strip() == "demo stopped"
    finally:
        subprocess.run(["tmux", "-L", tmux_socket, "kill-server"], capture_output=True, timeout=10)
