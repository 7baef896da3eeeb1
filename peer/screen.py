"""What the windowed terminal UI shows, decided without a terminal (sans-IO).

irssi and weechat keep one window per conversation and a bar that says
where something happened; :class:`Screen` is that, as plain data: it takes
the node's UI events (:mod:`peer.events`) one at a time and keeps

* a **home** window (index 0: notices that concern no conversation, the
  live users list) and one **window per partner**, in the order they
  appeared, each with its lines, unread count and whether you were named;
* which window is **active** (changed only by the user: a message arriving
  never moves you);
* the **state mark of each of your messages**, on its own line: ``…`` while
  it waits for a path, ``✓`` once it is on the server or the partner's
  machine, ``✓✓`` delivered, ``read``, or ``not delivered``;
* **day separators** before the first line of a new day, and before
  history read back from an older one.

:meth:`Screen.feed` returns what must happen besides redrawing (a bell for a
message in a window you are not looking at). The terminal application that
draws it (prompt-toolkit) only renders ``Screen``'s data and sends typed lines
where :meth:`Screen.route` says; ``tests/test_screen.py`` drives it directly.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Literal

from chathack.protocol import MAX_TEXT_CHARS, UserState
from chathack.text import neutralise
from peer.events import (
    Delivery,
    Incoming,
    Level,
    Outgoing,
    PathName,
    Recalled,
    ServerNotice,
    Status,
    System,
    UIEvent,
    UsersList,
)

#: Lines a window keeps (older ones are in ``::history``).
MAX_LINES = 2000
#: The mark of each delivery state, shown on the message's line.
MARKS = {
    "waiting": "…",
    "queued": "…",
    "sent": "✓",
    "stored": "✓",
    "delivered": "✓✓",
    "read": "read",
    "expired": "not delivered",
}
LineKind = Literal["in", "out", "notice", "day"]


@dataclass(slots=True)
class Line:
    kind: LineKind
    at: float
    text: str
    who: str | None = None
    msg_id: str | None = None
    mark: str = ""
    level: Level = "info"
    topic: str | None = None  # a notice a newer one on the same topic replaces


@dataclass(slots=True)
class Window:
    partner: str | None  # None: the home window
    lines: list[Line] = field(default_factory=list)
    unread: int = 0
    named: bool = False  # a line since you last looked says your name
    path: PathName | None = None

    @property
    def title(self) -> str:
        return self.partner or "home"


@dataclass(frozen=True, slots=True)
class Bell:
    """Ring the terminal: something arrived where you are not looking."""


Effect = Bell


#: Lines back a notice looks for the older one on its topic, to replace it.
TOPIC_REACH = 50


class Screen:
    def __init__(self, me: str, *, bell: bool = True, max_lines: int = MAX_LINES) -> None:
        self.me = me
        self.bell = bell
        self.max_lines = max_lines
        self.windows: list[Window] = [Window(None)]
        self.active = 0
        self.users: tuple[UserState, ...] = ()
        self.server = "connecting"
        self.retry_at: float | None = None  # reconnecting: when the next try starts
        self._mention = re.compile(rf"(?<![\w.-]){re.escape(me)}(?![\w-])", re.IGNORECASE)

    # -- windows ---------------------------------------------------------------
    def window_of(self, partner: str) -> Window:
        """``partner``'s window, made (at the end of the bar) on first need."""
        for window in self.windows[1:]:
            if window.partner is not None and window.partner.lower() == partner.lower():
                return window
        window = Window(partner)
        self.windows.append(window)
        return window

    def index_of(self, partner: str) -> int | None:
        for i, window in enumerate(self.windows):
            if window.partner is not None and window.partner.lower() == partner.lower():
                return i
        return None

    @property
    def current(self) -> Window:
        return self.windows[self.active]

    def go(self, index: int) -> bool:
        """Show window ``index`` (0 is home); False if there is none."""
        if not 0 <= index < len(self.windows):
            return False
        self.active = index
        window = self.windows[index]
        window.unread, window.named = 0, False
        return True

    def go_to(self, partner: str) -> bool:
        index = self.index_of(partner)
        return index is not None and self.go(index)

    def step(self, by: int) -> None:
        """The next (``by`` = 1) or previous (-1) window, round the bar."""
        self.go((self.active + by) % len(self.windows))

    def route(self) -> str | None:
        """Whom a typed chat line goes to: the active window's partner (None at home)."""
        return self.current.partner

    def unread_total(self) -> int:
        return sum(w.unread for w in self.windows)

    def terminal_title(self) -> str:
        n = self.unread_total()
        return f"chathack {self.me}" + (f" ({n})" if n else "")

    # -- events ----------------------------------------------------------------
    def feed(self, event: UIEvent, now: float) -> list[Effect]:
        """Take ``event``; ``now`` (wall-clock seconds) stamps the lines it makes
        itself (notices): the model reads no clock."""
        match event:
            case Incoming(origin, text, at, path):
                window = self.window_of(origin)
                window.path = path
                return self._arrived(window, Line("in", at, neutralise(text), origin))
            case Outgoing(partner, text, at, msg_id, state):
                window = self.window_of(partner)
                mark = MARKS.get(state, "")
                self._append(window, Line("out", at, neutralise(text), self.me, msg_id, mark))
            case Delivery(partner, msg_id, state):
                self._delivered(partner, msg_id, state, now)
            case Recalled(partner, author, text, at, state):
                # Read back, not arriving: no unread, no bell; its own time
                # puts a day separator before it when it is older than today.
                kind: LineKind = "out" if author.lower() == self.me.lower() else "in"
                line = Line(kind, at, neutralise(text), author, mark=MARKS.get(state, state))
                self._append(self.window_of(partner), line)
            case System(text, level, about, topic):
                self._notice(about, neutralise(text), level, now, topic)
            case ServerNotice(flag, text, about):
                level: Level = "error" if flag in ("ERROR", "FAILED", "BYE") else "info"
                self._notice(about, neutralise(text), level, now)
            case UsersList(users):
                self.users = users
            case Status(_me, partner, path, server, retry_in):
                self.server = server
                self.retry_at = None if retry_in is None else now + retry_in
                if partner is not None and path is not None:
                    self.window_of(partner).path = path
        return []

    def _arrived(self, window: Window, line: Line) -> list[Effect]:
        self._append(window, line)
        if window is self.current:
            return []
        window.unread += 1
        if self._mention.search(line.text):
            window.named = True
        return [Bell()] if self.bell else []

    def _notice(
        self, about: str | None, text: str, level: Level, now: float, topic: str | None = None
    ) -> None:
        if about is None or (level == "error" and self.index_of(about) is None):
            window = self.windows[0]  # a refused request (connect: nobody) opens nothing
        else:
            window = self.window_of(about)
        if topic is not None:
            # "Reconnecting in 1 s", "in 4 s", "Reconnected"; a transfer's progress
            # bar: one line, the newest, where it was (messages may have come since).
            for line in reversed(window.lines[-TOPIC_REACH:]):
                if line.topic == topic:
                    line.text, line.at, line.level = text, now, level
                    return
        self._append(window, Line("notice", now, text, level=level, topic=topic))

    def _delivered(self, partner: str, msg_id: str, state: str, now: float) -> None:
        window = self.window_of(partner)
        for line in reversed(window.lines):
            if line.kind == "out" and line.msg_id == msg_id:
                line.mark = MARKS.get(state, state)
                return
        # Sent before this run (or scrolled away): said once, in its window.
        word = MARKS.get(state, state)
        self._append(window, Line("notice", now, f"your message {msg_id}: {word}"))

    def _append(self, window: Window, line: Line) -> None:
        last = window.lines[-1] if window.lines else None
        if last is None or _day(last.at) != _day(line.at):
            window.lines.append(Line("day", line.at, time.strftime("%A %d %B %Y", _local(line.at))))
        window.lines.append(line)
        if len(window.lines) > self.max_lines:
            del window.lines[: len(window.lines) - self.max_lines]

    # -- the bar -----------------------------------------------------------------
    def bar(self) -> list[tuple[int, str, int, bool, bool]]:
        """Each window as (number, label, unread, you were named, active)."""
        out = []
        for i, window in enumerate(self.windows):
            label = window.title if window.path is None else f"{window.title} {window.path}"
            out.append((i, label, window.unread, window.named, i == self.active))
        return out

    def rendezvous(self, now: float) -> str:
        """The rendezvous's state at ``now``, for the bar: a countdown while
        reconnecting."""
        if self.server != "online" and self.retry_at is not None:
            left = max(0.0, self.retry_at - now)
            return f"{self.server} in {left:.0f} s (::reconnect to try now)"
        return self.server

    def listed(self, name: str) -> bool:
        """``name`` is on the users list the home window shows."""
        return any(u.name.lower() == name.lower() for u in self.users)

    def menu_pick(self, typed: str) -> str | None:
        """A number typed at home while the users list shows: that user's name."""
        if self.active != 0 or not typed.isascii() or not typed.isdigit():
            return None
        number = int(typed)
        if 1 <= number <= len(self.users):
            return self.users[number - 1].name
        return None


def _local(at: float) -> time.struct_time:
    return time.localtime(at)


def _day(at: float) -> tuple[int, int, int]:
    t = _local(at)
    return t.tm_year, t.tm_mon, t.tm_mday


def split_message(text: str, limit: int = MAX_TEXT_CHARS) -> list[str]:
    """``text`` (a long paste) as messages of at most ``limit`` characters:
    one per pasted line, a line too long cut at its last space before the
    limit (or at the limit, for a word that long); blank lines dropped."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        while len(line) > limit:
            cut = line.rfind(" ", 0, limit + 1)
            if cut <= 0:
                cut = limit
            out.append(line[:cut].rstrip())
            line = line[cut:].lstrip()
        if line:
            out.append(line)
    return out
