"""Pure views for the terminal UI: a UI event in, a rich renderable out.

Nothing here prints, reads a clock or touches the node: :mod:`peer.tty`
prints what these functions return, and the tests print it into a
``StringIO``. Everything that came from another machine (message text, user
names, server lines) goes through :func:`neutralise` and into a
:class:`rich.text.Text` *as plain text*, never as console markup, so "[bold]"
typed by somebody shows literally and no escape sequence of theirs can drive
the reader's terminal.
"""

from __future__ import annotations

import time

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.theme import Theme

from chathack.text import neutralise
from peer.events import (
    Delivery,
    Incoming,
    Outgoing,
    Recalled,
    ServerNotice,
    Status,
    System,
    UIEvent,
    UsersList,
)

#: Semantic style names; the views use only these, so a theme is one table.
THEME = Theme(
    {
        "chat.time": "dim",
        "chat.me": "bold green",
        "chat.nick": "bold cyan",
        "chat.text": "none",  # the terminal's own colours: the easiest to read
        "chat.system": "dim italic",
        "chat.warning": "yellow",
        "chat.error": "bold red",
        "chat.server": "magenta",
        "chat.title": "bold",
        "chat.online": "green",
        "chat.offline": "dim",
        "path.direct": "green",
        "path.punched": "cyan",
        "path.relayed": "yellow",
        "path.unencrypted": "bold white on red",  # never quiet: the server can read it
    }
)

TIME_FORMAT = "%H:%M"
USERS_TITLE = "Who do you want to talk to?"

_SYSTEM_STYLE = {"info": "chat.system", "warning": "chat.warning", "error": "chat.error"}


def _clock(at: float) -> str:
    try:
        return time.strftime(TIME_FORMAT, time.localtime(at))
    except (OverflowError, OSError, ValueError):  # a time no calendar holds
        return "--:--"


def _message(at: float, nick: str, nick_style: str, text: str) -> Table:
    """``HH:MM nick: text``, the text in a column of its own: a long message
    wraps under itself, so no continuation line can start at the margin and
    pass for a notice ("* ...", "— ...") or another person's line."""
    grid = Table.grid()
    grid.add_column(no_wrap=True)
    grid.add_column(ratio=1, overflow="fold")
    prefix = Text.assemble((_clock(at), "chat.time"), " ", (neutralise(nick), nick_style), ": ")
    grid.add_row(prefix, Text(neutralise(text), "chat.text"))
    return grid


def _system(event: System) -> Text:
    # Our own text may span lines (help, for instance); every line is marked.
    lines = [neutralise(line) for line in event.text.split("\n")]
    return Text("\n".join(f"— {line}" for line in lines), style=_SYSTEM_STYLE[event.level])


def _server(event: ServerNotice) -> Text:
    style = "chat.error" if event.flag == "ERROR" else "chat.server"
    return Text(f"Servidor[{neutralise(event.flag)}]: {neutralise(event.text)}", style=style)


def users_menu(event: UsersList, me: str = "") -> Group:
    """The numbered menu; row N is what typing N at the prompt picks."""
    notes = []
    if event.more:
        notes.append(f"+{event.more} more not shown")
    notes.append("type a number to connect" if event.users else "nobody else is registered yet")
    # Title and caption sit outside the table: rich wraps a table's own title
    # to the width of its columns, which for short names is narrower than it.
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("#", justify="right", style="chat.time")
    table.add_column("name", style="chat.nick")
    table.add_column("state")
    for number, user in enumerate(event.users, start=1):
        state = Text("online", "chat.online") if user.online else Text("offline", "chat.offline")
        if user.name.lower() == me.lower():
            state.append(" (you)", "chat.me")  # the server lists everyone, us too
        table.add_row(str(number), Text(neutralise(user.name)), state)
    title = Text(USERS_TITLE, "chat.title")
    caption = Text(" · ".join(notes), "chat.system")
    return Group(title, table, caption) if event.users else Group(title, caption)


#: How a delivery state reads in the conversation.
DELIVERY_WORDS = {
    "stored": "stored on the server until they log in",
    "delivered": "delivered",
    "read": "read",
    "expired": "expired unread: the server dropped it",
}


def render_event(event: UIEvent, me: str) -> RenderableType | None:
    """What to print for ``event``; ``None`` when it belongs to the toolbar."""
    match event:
        case Incoming(origin, text, at, _path):
            return _message(at, origin, "chat.nick", text)
        case Outgoing(_partner, text, at):
            return _message(at, me, "chat.me", text)
        case System():
            return _system(event)
        case ServerNotice():
            return _server(event)
        case UsersList():
            return users_menu(event, me)
        case Recalled():
            return Text(f"— {event.line()}", style="chat.system")
        case Status():
            return None
        case Delivery(live=True):
            return None  # the line UI shows no mark per live message
        case Delivery(partner, _msg_id, state):
            return Text(
                f"  ✓ {DELIVERY_WORDS.get(state, state)} ({neutralise(partner)})",
                "chat.warning" if state == "expired" else "chat.system",
            )
    raise TypeError(f"not a UI event: {event!r}")  # pragma: no cover - the union is closed


def status_parts(status: Status) -> list[tuple[str, str]]:
    """The toolbar as ``(theme name or "", text)`` pieces, so the UI can colour the path."""
    me = neutralise(status.me)
    parts: list[tuple[str, str]]
    if status.partner is None:
        parts = [("", f"{me} · no conversation — connect: NAME")]
    elif status.path is None:
        parts = [("", f"{me} → {neutralise(status.partner)} · "), ("chat.warning", "connecting…")]
    else:
        parts = [
            ("", f"{me} → {neutralise(status.partner)} · "),
            (f"path.{status.path}", status.path),
        ]
    if status.server != "online":
        parts += [("", " · "), ("chat.warning", f"server: {neutralise(status.server)}")]
    return parts


def status_text(status: Status) -> str:
    """The bottom toolbar as plain text: ``alice → bob · direct``."""
    return "".join(text for _style, text in status_parts(status))
