"""The one function that makes network text safe to show or to put in a line."""

from __future__ import annotations

import sys
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from chathack.protocol import (
    LineBuffer,
    ServerLine,
    UserLine,
    format_server_line,
    format_user_line,
    has_controls,
    parse_server_line,
)
from chathack.text import UNSAFE_RE, is_safe, neutralise

KEPT_FORMAT_CHARACTERS = {"\u200c", "\u200d"}  # ZWNJ, ZWJ: emoji and scripts need them


def test_every_control_format_and_separator_character_is_escaped() -> None:
    """The table in chathack/text.py against this interpreter's Unicode data."""
    missed = [
        f"U+{cp:04X}"
        for cp in range(sys.maxunicode + 1)
        if (
            unicodedata.category(chr(cp)) in ("Cc", "Cf", "Zl", "Zp")
            and chr(cp) != "\t"
            and chr(cp) not in KEPT_FORMAT_CHARACTERS
            and UNSAFE_RE.fullmatch(chr(cp)) is None
        )
    ]
    assert not missed, f"not escaped: {missed[:20]}"


def test_ordinary_text_is_left_as_it_is() -> None:
    for text in ["hello", "tab\tok", "café ☕", "👨\u200d👩\u200d👧", "שלום", "مرحبا", ""]:
        assert neutralise(text) == text
        assert is_safe(text)


def test_escapes_are_visible_and_say_what_was_there() -> None:
    assert neutralise("::us\rers") == "::us\\rers"
    assert neutralise("a\nb") == "a\\nb"
    assert neutralise("\x1b]0;title\x07") == "\\x1b]0;title\\x07"
    assert neutralise("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    assert neutralise("\u2028") == "\\u2028"
    assert neutralise("\x9b31m") == "\\x9b31m"
    assert neutralise("\U000e0041") == "\\U000e0041"


@given(st.text())
def test_neutralised_text_holds_nothing_unsafe_and_is_stable(text: str) -> None:
    safe = neutralise(text)
    assert is_safe(safe)
    assert neutralise(safe) == safe
    assert all(ch not in safe for ch in "\r\n\x1b\x00")


@given(st.text(), st.from_regex(r"[A-Z_]{1,16}", fullmatch=True))
def test_a_server_line_with_any_text_formats_and_reads_back(text: str, flag: str) -> None:
    """Formatting cannot fail on user data, and the line frames as exactly one line."""
    data = format_server_line(flag, text)
    buf = LineBuffer(max_bytes=len(data) + 1)
    buf.receive_data(data)
    line = buf.next_line()
    assert line is not None and buf.next_line() is None
    assert parse_server_line(line) == ServerLine(flag, neutralise(text))


@given(st.text(min_size=1))
def test_a_relayed_line_is_one_line_whatever_its_text(text: str) -> None:
    data = format_user_line("alice", text)
    assert data.count(b"\n") == 1 and data.endswith(b"\n") and b"\r" not in data


@given(st.text(min_size=1).filter(lambda t: not has_controls(t)))
def test_a_relayed_checked_text_reads_back_neutralised(text: str) -> None:
    """The relay formats text that check_text passed: what is left to escape
    (format characters) is escaped."""
    data = format_user_line("alice", text)
    assert parse_server_line(data[:-1].decode()) == UserLine("alice", neutralise(text))
