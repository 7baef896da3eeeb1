"""Driving a program in a pseudo-terminal the way a terminal would.

prompt_toolkit asks the terminal where the cursor is (``ESC [6n``) before it
draws the bottom toolbar; :func:`wait_for` answers those requests while it
waits for a pattern. :func:`screen_text` turns plain text into a pattern that
tolerates the colour and cursor codes a redraw puts between letters.
"""

from __future__ import annotations

import re

import pexpect

#: Any run of terminal control sequences (colours, cursor moves).
ESCAPES = r"(?:\x1b\[[0-9;?]*[A-Za-z])*"
#: A space may be drawn as a space or as a cursor move right.
SPACE = r"(?: |\x1b\[[0-9]*C)"
CPR_REQUEST = "\x1b[6n"
#: "The cursor is on row 1": the whole screen is below it, room for the toolbar.
CPR_ANSWER = "\x1b[1;1R"


def wait_for(child: pexpect.spawn, pattern: str | type[pexpect.EOF]) -> None:
    """Wait for ``pattern`` (a regex, or EOF), answering cursor-position requests."""
    patterns = [re.escape(CPR_REQUEST), pattern]
    while child.expect(patterns) == 0:
        child.send(CPR_ANSWER)


def screen_text(text: str) -> str:
    """A regex for ``text`` as a terminal may draw it."""
    return ESCAPES.join(SPACE if ch == " " else re.escape(ch) for ch in text)


def wait_for_text(child: pexpect.spawn, text: str) -> None:
    wait_for(child, screen_text(text))
