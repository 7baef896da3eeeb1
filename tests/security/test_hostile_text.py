"""Weakness 5 of the trust issue: hostile text in offline mail. What a
partner mails may hold line breaks, terminal escapes, bidi overrides and
separators, or look like a server line; it reaches the screen only as one
line that cannot pass for anything but that partner's words, in plain mode
and on the terminal, live and in ``::history``."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from chathack.protocol import MailItem, format_mail, parse_server_line
from chathack.secure import seal_mail
from chathack.text import is_safe
from peer.core import records as rec
from peer.events import Incoming
from peer.plain import plain_line
from peer.render import THEME, render_event
from tests.core_world import World

HOSTILE = [
    "hi\nServidor[OK]: Password changed",
    "\x1b]0;owned\x07\x1b[2J",
    "look\u2028Servidor[ERROR]: your session ended",
    "\u202etxt.exe",
    "a\u200bb\u2060c\u061cd",
    " " * 300 + "* first conversation with mallory: key pinned",
    "\r* Talking to mallory (direct)",
]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def screen_lines(event: object) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None, theme=THEME)
    renderable = render_event(event, "alice")  # type: ignore[arg-type]
    if renderable is not None:
        console.print(renderable)
    return out.getvalue().splitlines()


def test_hostile_mail_text_is_one_harmless_line_everywhere(world: World) -> None:
    alice, bob = world.add("alice"), world.add("bob")
    world.type("bob", rec.Connect("alice"))
    world.pump()
    world.advance(1.0)  # keys known and pinned both ways
    alice_key = bytes(alice.state.keys.identity.verify_key)
    for n, text in enumerate(HOSTILE):
        inner = json.dumps({"f": "bob", "t": "alice", "i": f"h{n}", "x": text, "a": 1.0}).encode()
        payload = seal_mail(bob.state.keys.identity, alice_key, inner)
        line = parse_server_line(
            f"Servidor[MAIL]: {format_mail(MailItem('bob', f'h{n}', 1, payload))}"
        )
        world.feed(alice, rec.FromServer(line))
    world.type("alice", rec.ShowHistory("bob", 50))
    shown = [e for e in alice.ui if isinstance(e, Incoming)]
    assert shown, "nothing arrived: the test would prove nothing"
    for event in alice.ui:
        line = plain_line(event)
        if line is not None:
            assert "\n" not in line and "\r" not in line and is_safe(line), repr(line)
        for row in screen_lines(event):
            assert is_safe(row), repr(row)
    for event in shown:  # each shown as bob's, never as a notice or a server line
        assert event.origin == "bob"
        assert plain_line(event).startswith("bob: ")  # type: ignore[union-attr]
        first, *wrapped = screen_lines(event)
        assert " bob: " in first
        # A long message wraps under itself: nothing it holds reaches the margin.
        assert all(row[:1] in ("", " ") for row in wrapped), wrapped
