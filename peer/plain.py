"""Plain mode: for pipes and scripts. Lines in on stdin, plain lines out on
stdout — no colour, no control codes.

Output: a chat message exactly as ``origin: text``; a server line as
``Servidor[FLAG]: text``; this program's own lines start with ``* ``
(a user name can never contain ``*``, so they cannot be mistaken for one),
followed by ``[NAME] `` when the line concerns the conversation with NAME —
a delivery state, a path change, a history line — so a bot talking with
several people can follow each (:func:`conversation_of` reads it back).
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

import trio

from chathack.grammar import NAME_RE
from chathack.text import neutralise
from peer.events import Delivery, Incoming, Recalled, ServerNotice, System, UIEvent, UsersList
from peer.node import PeerNode

#: Seconds to wait, at end of input, for partners to confirm what was sent.
DRAIN_TIMEOUT = 10.0

_NAMED = re.compile(rf"(?:\* \[({NAME_RE.pattern})\] |({NAME_RE.pattern}): )")


def _program(text: str, about: str | None) -> str:
    if about is not None:
        return f"* [{neutralise(about)}] {text}"
    # A line about no conversation never reads as one about somebody's.
    return f"*  {text}" if text.startswith("[") else f"* {text}"


def plain_line(event: UIEvent) -> str | None:
    """The line plain mode prints for ``event`` (None: nothing).

    What others sent is neutralised: a CR or LF in it would print a second
    line that a script reading ours takes for a server or program line.
    """
    match event:
        case Incoming(origin, text, _, _):
            return f"{origin}: {neutralise(text)}"
        case System(text, "info", about):
            return _program(neutralise(text), about)
        case System(text, level, about):
            return _program(f"{level}: {neutralise(text)}", about)
        case Recalled(partner):
            return _program(event.line(), partner)
        case ServerNotice(flag, text):
            return f"Servidor[{flag}]: {neutralise(text)}"
        case Delivery(live=True):
            return None
        case Delivery(partner, msg_id, state):
            return _program(f"{state}: message {neutralise(msg_id)}", partner)
        case UsersList(users, more):
            items = ", ".join(f"{u.name} {'online' if u.online else 'offline'}" for u in users)
            extra = f", +{more} more" if more else ""
            return f"* Who do you want to talk to? {items}{extra}"
    return None


def conversation_of(line: str) -> str | None:
    """Whose conversation a plain-mode line belongs to (None: nobody's):
    the origin of a message, or the ``[NAME]`` of a program line."""
    match = _NAMED.match(line)
    if match is None:
        return None
    return match.group(1) or match.group(2)


async def _print_events(node: PeerNode, out: TextIO) -> None:
    async for event in node.events:
        line = plain_line(event)
        if line is not None:
            out.write(line + "\n")
            out.flush()


async def run_plain(node: PeerNode, inp: TextIO | None = None, out: TextIO | None = None) -> int:
    inp = inp or sys.stdin
    out = out or sys.stdout
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_print_events, node, out)
        while True:
            line = await trio.to_thread.run_sync(inp.readline, abandon_on_cancel=True)
            if not line:  # end of input: let what was sent arrive, then leave
                with trio.move_on_after(DRAIN_TIMEOUT):
                    await node.wait_delivered()
                if node.unacknowledged():
                    node.emit(
                        System(
                            f"{node.unacknowledged()} message(s) were not confirmed before exit",
                            "warning",
                        )
                    )
                await node.quit()
                break
            if line.strip() == "::passwd":  # the next two lines: old, then new
                old = await trio.to_thread.run_sync(inp.readline, abandon_on_cancel=True)
                new = await trio.to_thread.run_sync(inp.readline, abandon_on_cancel=True)
                await node.change_password(old.rstrip("\n"), new.rstrip("\n"))
                continue
            if not await node.handle_input(line.rstrip("\n")):
                break
    return 0
