"""Run :func:`peer.windows_ui.run_windows` against a fake node, for
``tests/test_windows_ui.py``. Usage: ``python tests/windows_harness.py DIR``.

The fake node appends what it is asked (``input 'LINE'``, ``send bob 'TEXT'``,
``passwd OLD NEW``, ``quit``) to DIR/record, and obeys lines a test writes to
the FIFO DIR/control, one per line:

    say NAME TEXT             NAME writes TEXT (an Incoming event)
    users                     the users menu: bob online, carol online, dave offline
    deliver NAME ID STATE     a Delivery event for one of our messages
    notice NAME TEXT          a notice about NAME's conversation
    stop                      the node ends on its own

A sent message gets the id m1, m2, ... in order, with the state ``sent``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import trio

from chathack.protocol import UserState
from peer.events import Delivery, Incoming, Outgoing, Status, System, UIEvent, UsersList
from peer.windows_ui import run_windows

USERS = (UserState("alice", True), UserState("bob", True), UserState("carol", True),
         UserState("dave", False))  # fmt: skip


class FakeNode:
    me = "alice"

    def __init__(self, folder: Path) -> None:
        self._record = folder / "record"
        self._send, self.events = trio.open_memory_channel[UIEvent](1000)
        self.known_users = list(USERS)
        self._sent = 0

    def status(self) -> Status:
        return Status(self.me, None, None, "online")

    def _note(self, text: str) -> None:
        with self._record.open("a", encoding="utf-8") as f:
            f.write(text + "\n")

    def emit(self, event: UIEvent) -> None:
        self._send.send_nowait(event)

    async def handle_input(self, line: str) -> bool:
        self._note(f"input {line!r}")
        if line == "::quit":
            return False
        if line.startswith("connect: "):
            name = line.removeprefix("connect: ")
            self.emit(System(f"Talking to {name} (direct)", about=name))
            self.emit(Status(self.me, name, "direct", "online"))
        return True

    async def send(self, name: str, text: str) -> bool:
        self._sent += 1
        self._note(f"send {name} {text!r}")
        self.emit(Outgoing(name, text, time.time(), f"m{self._sent}", "sent"))
        return True

    def request_users(self) -> None:
        self.emit(UsersList(USERS))

    async def change_password(self, old: str, new: str) -> bool:
        self._note(f"passwd {old} {new}")
        self.emit(System("Password changed"))
        return True

    async def quit(self) -> None:
        self._note("quit")

    def control(self, line: str) -> None:
        word, _, rest = line.partition(" ")
        at = time.time()
        match word:
            case "say":
                name, _, text = rest.partition(" ")
                self.emit(Incoming(name, text, at, "direct"))
            case "users":
                self.emit(UsersList(USERS))
            case "deliver":
                name, msg_id, state = rest.split()
                self.emit(Delivery(name, msg_id, state))
            case "notice":
                name, _, text = rest.partition(" ")
                self.emit(System(text, "warning", name))
            case "info":  # NAME TOPIC TEXT (TOPIC "-": none): the program's own line
                name, topic, text = rest.split(" ", 2)
                self.emit(System(text, "info", name, None if topic == "-" else topic))
            case "stop":
                self._send.close()


async def read_control(node: FakeNode, fifo: Path) -> None:
    def lines() -> list[str]:
        with fifo.open(encoding="utf-8") as f:  # blocks until a writer opens it
            return f.read().splitlines()

    while True:
        for line in await trio.to_thread.run_sync(lines, abandon_on_cancel=True):
            node.control(line)


async def main(folder: Path) -> int:
    node = FakeNode(folder)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_control, node, folder / "control")
        code = await run_windows(node)
        nursery.cancel_scope.cancel()
    print(f"EXIT {code}")
    return code


if __name__ == "__main__":
    sys.exit(trio.run(main, Path(sys.argv[1])))
