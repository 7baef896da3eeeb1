"""The terminal UI in a real pseudo-terminal, driven by pexpect.

Conventions: each test runs ``tests/tty_harness.py`` (``run_tty`` with a fake
node) under ``TERM=xterm-256color`` in a 24x80 pty; every ``expect`` has the
:data:`TIMEOUT` deadline and nothing synchronises with ``sleep``: the test
waits for what the screen shows (the toolbar means the prompt is up),
answering the cursor-position requests prompt_toolkit sends as a terminal
would (it shows the bottom toolbar only once it knows where the cursor is).
The harness records what its node received in a file, so the assertions on typed
lines do not depend on how the screen was redrawn.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.ptys import wait_for, wait_for_text

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "tty_harness.py"
#: Seconds any single expect may take before the test fails.
TIMEOUT = 10
READY = "alice · no conversation — connect: NAME"  # the toolbar: the prompt is up


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.record = tmp_path / "record.txt"
        self.screen = io.StringIO()  # everything the child wrote, for the no-traceback check
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env |= {"TERM": "xterm-256color", "PYTHONPATH": str(ROOT)}
        self.child = pexpect.spawn(
            sys.executable,
            [str(HARNESS), str(self.record)],
            cwd=str(ROOT),
            env=env,
            dimensions=(24, 80),
            timeout=TIMEOUT,
            encoding="utf-8",
        )
        self.child.logfile_read = self.screen
        # The UI reads keys as they come; pexpect's default pause before
        # each send (for programs that flush input) only slows the tests.
        self.child.delaybeforesend = None

    def wait_for(self, pattern: str | type[pexpect.EOF]) -> None:
        wait_for(self.child, pattern)

    def wait_for_text(self, text: str) -> None:
        wait_for_text(self.child, text)

    def received(self) -> list[str]:
        return self.record.read_text(encoding="utf-8").splitlines() if self.record.exists() else []

    def exit_code(self) -> int | None:
        self.wait_for(pexpect.EOF)
        self.child.close()
        assert "Traceback" not in self.screen.getvalue()
        return self.child.exitstatus


@pytest.fixture
def tty(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    try:
        harness.wait_for_text(READY)
        yield harness
    finally:
        harness.child.close(force=True)


def test_incoming_message_leaves_the_half_typed_line_intact(tty: Harness) -> None:
    child = tty.child
    child.send("hel")
    tty.wait_for_text("hel")
    child.kill(signal.SIGUSR1)  # bob's message arrives now, mid-line
    tty.wait_for_text("bob: ping from bob")
    tty.wait_for_text("hel")  # the prompt is redrawn under it, with the text
    child.send("lo\r")
    tty.wait_for_text("got 'hello'")
    child.sendcontrol("d")
    assert tty.exit_code() == 0
    assert tty.received() == ["'hello'", "QUIT"]


@pytest.mark.parametrize("key", ["d", "c"])
def test_ctrl_d_and_ctrl_c_quit_with_status_0(tty: Harness, key: str) -> None:
    tty.child.sendcontrol(key)
    tty.wait_for_text("EXIT 0 terminal=cooked")
    assert tty.exit_code() == 0
    assert tty.received() == ["QUIT"]


def test_quit_command_exits_with_status_0(tty: Harness) -> None:
    tty.child.send("::quit\r")
    tty.wait_for_text("EXIT 0 terminal=cooked")
    assert tty.exit_code() == 0
    assert tty.received() == ["'::quit'"]


def test_node_ending_stops_the_prompt_with_status_1(tty: Harness) -> None:
    tty.child.send("::die\r")
    tty.wait_for_text("EXIT 1 terminal=cooked")
    assert tty.exit_code() == 1


def test_number_picks_from_users_menu_and_toolbar_follows(tty: Harness) -> None:
    child = tty.child
    child.send("::users\r")
    tty.wait_for_text("Who do you want to talk to?")
    child.send("2\r")
    tty.wait_for_text("got 'connect: carol'")
    tty.wait_for_text("alice → carol · direct")  # the toolbar, refreshed by a Status event
    child.send("2\r")  # the menu was answered: now a number is just text
    tty.wait_for_text("got '2'")
    child.sendcontrol("d")
    assert tty.exit_code() == 0
    assert tty.received() == ["'::users'", "'connect: carol'", "'2'", "QUIT"]


def test_tab_completes_command_and_user_name(tty: Harness) -> None:
    child = tty.child
    child.send("conn\t")
    tty.wait_for_text("connect: ")  # completed, with the space after it
    child.send("bo\t\r")
    tty.wait_for_text("got 'connect: bob'")
    child.sendcontrol("d")
    assert tty.exit_code() == 0
    assert tty.received() == ["'connect: bob'", "QUIT"]


def test_node_ending_while_a_line_is_half_typed_stops_the_prompt(tty: Harness) -> None:
    tty.child.send("hel")
    tty.wait_for_text("hel")
    tty.child.kill(signal.SIGUSR2)
    tty.wait_for_text("EXIT 1 terminal=cooked")
    assert tty.exit_code() == 1
    assert tty.received() == []


def test_sigint_quits_cleanly(tty: Harness) -> None:
    tty.child.kill(signal.SIGINT)  # as from `kill -INT`: Ctrl-C itself is a key to the prompt
    tty.wait_for_text("EXIT 0 terminal=cooked")
    assert tty.exit_code() == 0
    assert tty.received() == ["QUIT"]


def test_resize_redraws_the_toolbar(tty: Harness) -> None:
    tty.child.setwinsize(30, 100)  # the child gets SIGWINCH
    tty.wait_for_text(READY)
    tty.child.sendcontrol("d")
    assert tty.exit_code() == 0


def test_ctrl_c_at_the_password_prompt_leaves_at_once(tmp_path: Path) -> None:
    from tests.procs import Rendezvous, command

    server = Rendezvous(tmp_path / "db.sqlite3")
    try:
        env = {k: v for k, v in os.environ.items() if k != "CHATHACK_PASSWORD"}
        env["TERM"] = "xterm-256color"
        child = pexpect.spawn(
            command("chathack-peer"),
            ["zoe", "--server", server.address, "--data-dir", str(tmp_path / "zoe")],
            env=env,
            dimensions=(24, 80),
            timeout=TIMEOUT,
            encoding="utf-8",
        )
        try:
            child.expect("choose a password")
            child.sendcontrol("c")
            child.expect(pexpect.EOF)  # at once, not after an Enter
            child.close()
            assert child.exitstatus != 0 or child.signalstatus is not None
            assert "Traceback" not in (child.before or "")
        finally:
            child.close(force=True)
    finally:
        server.stop()
