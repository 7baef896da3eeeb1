"""Run :func:`peer.tty.run_tty` against a fake node, for ``tests/test_tty.py``.

Usage: ``python tests/tty_harness.py RECORD_FILE`` in a pseudo-terminal.

The fake node appends ``repr(line)`` of every line ``handle_input`` gets to
RECORD_FILE (and ``QUIT`` when ``quit()`` is called), and echoes it on screen
as ``got 'LINE'``. It understands ``::users`` (a menu: bob online, carol
offline), ``connect: NAME`` (a direct conversation with NAME), ``::die`` (the
node ends on its own) and ``::quit``. SIGUSR1 makes bob say "ping from bob":
a message that arrives while the test has a line half typed, without a timer;
SIGUSR2 makes the node end on its own while the prompt waits.
On the way out it prints ``EXIT <code> terminal=<cooked|raw>``.
"""

from __future__ import annotations

import signal
import sys
import termios
import time
from pathlib import Path

import trio

from chathack.protocol import UserState
from peer.events import Incoming, Status, System, UIEvent, UsersList
from peer.tty import run_tty


class FakeNode:
    """The interface of :class:`peer.node.PeerNode` that the terminal UI drives."""

    me = "alice"

    def __init__(self, record: Path) -> None:
        self._record = record
        self._send, self.events = trio.open_memory_channel[UIEvent](100)
        self.known_users = [UserState("bob", True), UserState("carol", False)]
        self._partner: str | None = None

    def status(self) -> Status:
        return Status(self.me, self._partner, "direct" if self._partner else None, "online")

    def _note(self, text: str) -> None:
        with self._record.open("a", encoding="utf-8") as f:
            f.write(text + "\n")

    async def handle_input(self, line: str) -> bool:
        self._note(repr(line))
        self._send.send_nowait(System(f"got {line!r}"))
        if line == "::users":
            self._send.send_nowait(UsersList(tuple(self.known_users)))
        elif line.startswith("connect: "):
            self._partner = line.removeprefix("connect: ")
            self._send.send_nowait(self.status())
        elif line == "::die":
            self._send.close()
        return line != "::quit"

    async def quit(self) -> None:
        self._note("QUIT")
        self._send.close()

    def poke(self) -> None:
        self._send.send_nowait(Incoming("bob", "ping from bob", time.time(), "direct"))

    def end(self) -> None:
        self._send.close()


async def obey_signals(node: FakeNode, task_status=trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(signal.SIGUSR1, signal.SIGUSR2) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGUSR1:
                node.poke()
            else:
                node.end()


async def main(record: Path) -> int:
    node = FakeNode(record)
    async with trio.open_nursery() as nursery:
        # Started (not start_soon) so the signals are caught before the prompt shows.
        await nursery.start(obey_signals, node)
        code = await run_tty(node, None)
        nursery.cancel_scope.cancel()
    return code


if __name__ == "__main__":
    code = trio.run(main, Path(sys.argv[1]))
    lflag = termios.tcgetattr(sys.stdin.fileno())[3]
    cooked = bool(lflag & termios.ICANON) and bool(lflag & termios.ECHO)
    print(f"EXIT {code} terminal={'cooked' if cooked else 'raw'}", flush=True)
    sys.exit(code)
