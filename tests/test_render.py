"""The terminal views: each UI event printed to a plain 80-column console, checked as text."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console

from chathack.protocol import UserState
from chathack.text import neutralise
from peer.events import Incoming, Outgoing, ServerNotice, Status, System, UIEvent, UsersList
from peer.render import THEME, USERS_TITLE, render_event, status_text

# 14:05 local time today, whatever the test machine's time zone.
AT = time.mktime((2026, 5, 9, 14, 5, 30, 0, 0, -1))


def show(event: UIEvent, me: str = "alice", color: bool = False) -> str:
    out = io.StringIO()
    console = Console(
        file=out,
        width=80,
        color_system="truecolor" if color else None,
        force_terminal=color,
        theme=THEME,
    )
    renderable = render_event(event, me)
    assert renderable is not None
    console.print(renderable)
    return out.getvalue()


def test_incoming_message_is_time_nick_text() -> None:
    assert show(Incoming("bob", "hi there", AT, "direct")) == "14:05 bob: hi there\n"


def test_outgoing_message_shows_my_own_nick() -> None:
    assert show(Outgoing("bob", "hello bob", AT), me="alice") == "14:05 alice: hello bob\n"


def test_own_nick_is_styled_apart_from_others() -> None:
    assert THEME.styles["chat.me"] != THEME.styles["chat.nick"]
    mine = show(Outgoing("bob", "x", AT), color=True)
    theirs = show(Incoming("bob", "x", AT, "direct"), color=True)
    assert mine.split("alice")[0] != theirs.split("bob")[0]  # different codes before the nick


@pytest.mark.parametrize("text", ["[bold]not bold[/bold]", "[red]x", ":smile: [link=x]y[/link]"])
def test_markup_typed_by_a_user_shows_literally(text: str) -> None:
    assert show(Incoming("bob", text, AT, "relayed")) == f"14:05 bob: {text}\n"
    assert show(Outgoing("bob", text, AT)) == f"14:05 alice: {text}\n"


def test_control_characters_never_reach_the_terminal() -> None:
    nasty = "\x1b[2J\x1b]0;owned\x07\rfake\nline\x9b31m\x7f\u202eevil"
    for color in (False, True):
        out = show(Incoming("bob", nasty, AT, "direct"), color=color)
        # Only the console's own colour codes may remain.
        bare = re.sub(r"\x1b\[[0-9;]*m", "", out)
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e]", bare)
        assert bare.count("\n") == 1  # one message, one line
        assert "\\x1b[2J\\x1b]0;owned\\x07\\rfake\\nline\\x9b31m\\x7f\\u202eevil" in bare


def test_neutralise_keeps_ordinary_text() -> None:
    text = "Olá, ça va? 你好 🙂\ttab"
    assert neutralise(text) == text


def test_system_lines_are_marked_and_levelled() -> None:
    assert show(System("connected to bob")) == "— connected to bob\n"
    assert show(System("two\nlines")) == "— two\n— lines\n"
    info = show(System("x"), color=True)
    warning = show(System("x", "warning"), color=True)
    error = show(System("x", "error"), color=True)
    assert len({info, warning, error}) == 3


def test_server_notice_keeps_the_protocol_form() -> None:
    assert show(ServerNotice("HELP", "::users lists")) == "Servidor[HELP]: ::users lists\n"
    error = show(ServerNotice("ERROR", "no such user"), color=True)
    help_ = show(ServerNotice("HELP", "no such user"), color=True)
    assert error.split("Servidor")[0] != help_.split("Servidor")[0]


def test_users_menu_is_a_numbered_table_with_the_question_as_title() -> None:
    users = (UserState("bob", True), UserState("carol", False), UserState("dave", True))
    out = show(UsersList(users, more=2))
    lines = out.splitlines()
    assert lines[0].strip() == USERS_TITLE == "Who do you want to talk to?"
    rows = [line.split() for line in lines if line.split()[:1] in (["1"], ["2"], ["3"])]
    assert rows == [["1", "bob", "online"], ["2", "carol", "offline"], ["3", "dave", "online"]]
    assert "+2 more not shown" in out
    assert "type a number to connect" in out


def test_users_menu_marks_me() -> None:
    out = show(UsersList((UserState("alice", True), UserState("bob", True))), me="alice")
    rows = [line.split() for line in out.splitlines()]
    assert ["1", "alice", "online", "(you)"] in rows
    assert ["2", "bob", "online"] in rows


def test_empty_users_menu_says_so() -> None:
    out = show(UsersList(()))
    assert USERS_TITLE in out
    assert "nobody else is registered yet" in out


def test_status_goes_to_the_toolbar_not_the_chat() -> None:
    assert render_event(Status("alice", "bob", "direct", "online"), "alice") is None


@pytest.mark.parametrize("path", ["direct", "punched", "relayed"])
def test_status_text_names_partner_and_path(path: str) -> None:
    assert status_text(Status("alice", "bob", path, "online")) == f"alice → bob · {path}"  # type: ignore[arg-type]


def test_status_text_without_conversation_says_how_to_start_one() -> None:
    assert status_text(Status("alice", None, None, "online")) == (
        "alice · no conversation — connect: NAME"
    )


def test_status_text_while_connecting() -> None:
    assert status_text(Status("alice", "bob", None, "online")) == "alice → bob · connecting…"


def test_status_text_shows_server_trouble() -> None:
    text = status_text(Status("alice", "bob", "relayed", "reconnecting"))
    assert text == "alice → bob · relayed · server: reconnecting"
