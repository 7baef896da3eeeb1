"""Text that came from the network, made safe to put into a line or on a screen.

Everything another party chose -- a command name echoed in an error, a user
name, a relayed or stored message, a notice -- passes :func:`neutralise`
before the server writes it into a protocol line or the peer shows it. It
replaces every character that could change what the reader sees or how the
line is framed with a visible escape in Python's notation (``\\r``,
``\\x1b``, ``\\u202e``):

* C0 controls except TAB, DEL and the C1 controls: a CR or LF would split a
  protocol line (and crash the formatter that refuses them), ESC and
  U+009B start terminal escape sequences (colours, cursor moves, OSC titles
  and hyperlinks), BEL rings;
* Unicode format characters (category Cf: bidi overrides and isolates such
  as U+202E, invisible ones such as U+200B and U+2060, U+FEFF) and the line
  and paragraph separators U+2028/U+2029 (Zl, Zp): they reorder or hide
  what is shown, or break a line where a terminal or a log viewer does not
  expect one.

ZERO WIDTH JOINER and NON-JOINER (U+200D, U+200C) are kept: emoji sequences
and several scripts (Persian, Indic) need them, and they can neither move
nor hide other text. The table below is Unicode 14's Cf/Zl/Zp set (Python
3.11); ``tests/test_text.py`` checks it against the running interpreter's
``unicodedata`` so that a newer Unicode cannot slip a new one past.

Escaping rather than dropping keeps the text honest (the reader sees that
something was there) and makes formatting total: no input can make it fail.
"""

from __future__ import annotations

import re

#: Unicode format characters and separators (Cf, Zl, Zp), less U+200C/U+200D.
_FORMAT_RANGES = (
    "\u00ad",
    "\u0600-\u0605",
    "\u061c",
    "\u06dd",
    "\u070f",
    "\u0890-\u0891",
    "\u08e2",
    "\u180e",
    "\u200b",
    "\u200e-\u200f",
    "\u2028-\u202e",
    "\u2060-\u2064",
    "\u2066-\u206f",
    "\ufeff",
    "\ufff9-\ufffb",
    "\U000110bd",
    "\U000110cd",
    "\U00013430-\U00013438",
    "\U0001bca0-\U0001bca3",
    "\U0001d173-\U0001d17a",
    "\U000e0001",
    "\U000e0020-\U000e007f",
)

#: C0 controls but TAB, DEL and C1 controls (U+009B is a one-character CSI on
#: some terminals): what a chat text may never hold (``check_text``).
_CONTROLS = "\x00-\x08\x0a-\x1f\x7f-\x9f"
CONTROL_RE = re.compile(f"[{_CONTROLS}]")
#: What :func:`neutralise` escapes: the controls, then the format set.
UNSAFE_RE = re.compile(f"[{_CONTROLS}" + "".join(_FORMAT_RANGES) + "]")
#: The same for ASCII text: a class without astral ranges scans four times faster.
_ASCII_UNSAFE_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


def _escape(match: re.Match[str]) -> str:
    return ascii(match.group())[1:-1]


def neutralise(text: str) -> str:
    """``text`` with every unsafe character replaced by a visible escape.

    Text without one (nearly all of it) is returned as it is, after a single
    regular-expression scan.
    """
    if is_safe(text):
        return text
    return UNSAFE_RE.sub(_escape, text)


def is_safe(text: str) -> bool:
    """True if :func:`neutralise` would leave ``text`` unchanged."""
    # isascii() is O(1) in CPython: most text from the network is ASCII.
    if text.isascii():
        return _ASCII_UNSAFE_RE.search(text) is None
    return UNSAFE_RE.search(text) is None
