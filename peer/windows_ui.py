"""The windowed terminal UI (``chathack-peer NAME --ui windows``): a window per
conversation, as in irssi and weechat.

Theory of operation
-------------------
What is on screen is decided by :class:`peer.screen.Screen` (sans-IO); this
module only draws it and carries lines and keys. Two threads, one owner each,
as in :mod:`peer.tty`:

* the **terminal thread** runs one full-screen prompt_toolkit
  ``Application`` (its own asyncio loop): it owns the ``Screen``, draws the
  current window, the window bar and the input line, and handles keys
  (``Alt-1..9``, ``Ctrl-N``/``Ctrl-P``, Tab, Enter, Ctrl-C/Ctrl-D);
* the **trio thread** reads ``node.events`` and hands each to the terminal
  thread (``loop.call_soon_threadsafe``; buffered until that loop runs), and
  acts on typed lines, which the terminal thread passes over a channel with
  the window they were typed in.

A chat line goes to the partner of the window it was typed in, and only
there (``node.send``); commands go to the node as typed. ``::w N`` and
``::switch NAME`` move between windows, ``::bell`` turns the bell off and on.
"""

from __future__ import annotations

import logging
import queue
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import trio
from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.data_structures import Point
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import HSplit, Layout, Window
from prompt_toolkit.layout.controls import BufferControl, FormattedTextControl
from prompt_toolkit.layout.processors import (
    ConditionalProcessor,
    Processor,
    Transformation,
    TransformationInput,
)
from prompt_toolkit.styles import Style

from peer.completion import ChatCompleter, UINode, open_history
from peer.core import records as rec
from peer.core.typed import OfferFile, parse_typed
from peer.events import System, UIEvent
from peer.screen import Line, Screen, split_message

log = logging.getLogger("chathack.peer.windows")

STYLE = Style.from_dict(
    {
        "bar": "reverse",
        "bar.active": "bold noreverse",
        "bar.unread": "bold ansiyellow",
        "bar.named": "bold ansimagenta",
        "time": "ansibrightblack",
        "nick.me": "bold ansicyan",
        "nick": "bold ansigreen",
        "notice": "ansibrightblack",
        "notice.warning": "ansiyellow",
        "notice.error": "bold ansired",
        "day": "ansibrightblack",
        "mark": "ansibrightblack",
        "mark.undelivered": "bold ansired",
    }
)
#: Seconds a clean ``node.quit()`` may take before the UI stops waiting for it.
QUIT_SECONDS = 5.0
#: Lines typed but not yet acted on, at most.
TYPED_BUFFER = 64
#: Lines of a window drawn (older ones scrolled away; ::history has them all).
SHOWN_LINES = 500
#: Seconds between two refreshes of the users list while the home window shows.
USERS_REFRESH = 15


class Node(UINode, Protocol):
    """What this UI needs from :class:`peer.node.PeerNode` besides the line UI's."""

    async def send(self, name: str, text: str) -> bool: ...
    async def send_file(self, path: str, partner: str | None = None) -> None: ...
    def request_users(self) -> None: ...
    def feed(self, event: rec.Input) -> list[rec.Effect]: ...


class Hidden(Processor):
    """Show nothing of what is typed (a password: not even its length)."""

    def apply_transformation(self, ti: TransformationInput) -> Transformation:
        return Transformation([], source_to_display=lambda i: 0, display_to_source=lambda i: 0)


@dataclass(frozen=True, slots=True)
class Typed:
    """A line typed in the window of ``partner`` (None: home)."""

    line: str
    partner: str | None
    chat: bool = False  # a piece of a long paste: text for the partner, whatever it says


def line_fragments(line: Line) -> StyleAndTextTuples:
    """One screen line of a window, as styled fragments."""
    when = time.strftime("%H:%M", time.localtime(line.at))
    match line.kind:
        case "day":
            return [("class:day", f"--- {line.text} ---")]
        case "notice":
            style = "class:notice" if line.level == "info" else f"class:notice.{line.level}"
            return [("class:time", when + " "), (style, f"-!- {line.text}")]
        case "in" | "out":
            nick = "class:nick.me" if line.kind == "out" else "class:nick"
            out: StyleAndTextTuples = [
                ("class:time", when + " "),
                (nick, f"<{line.who}>"),
                ("", " " + line.text),
            ]
            if line.mark:
                bad = line.mark == "not delivered"
                out.append(("class:mark.undelivered" if bad else "class:mark", f"  {line.mark}"))
            return out
    return [("", line.text)]


def bar_fragments(screen: Screen, now: float) -> StyleAndTextTuples:
    out: StyleAndTextTuples = []
    for index, label, unread, named, active in screen.bar():
        text = f" {index + 1}:{label}" + (f"({unread})" if unread else "") + " "
        style = (
            "class:bar.active"
            if active
            else "class:bar.named"
            if named
            else ("class:bar.unread" if unread else "class:bar")
        )
        out.append((style, text))
    out.append(("class:bar", f"  rendezvous: {screen.rendezvous(now)} "))
    return out


class WindowsUI:
    def __init__(self, node: Node, *, bell: bool = True, history: History | None = None) -> None:
        self.node = node
        self.screen = Screen(node.me, bell=bell)
        self._inbox: queue.SimpleQueue[UIEvent] = queue.SimpleQueue()
        self._typed_send, self._typed = trio.open_memory_channel[Typed](TYPED_BUFFER)
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._secret: list[str] | None = None  # a ::passwd dialogue's answers so far
        self._split: list[str] | None = None  # a long paste, offered as these messages
        #: Asked for (connect:) but not in the users list yet: its window comes up
        #: with the first word about it that is not a refusal.
        self._wanted: str | None = None
        self.input = Buffer(
            completer=ChatCompleter(lambda: tuple(self.node.known_users)),
            complete_while_typing=False,
            multiline=False,
            accept_handler=self._accept,
            history=history or InMemoryHistory(),
        )
        self.app: Application[int] = Application(
            layout=Layout(self._layout(), focused_element=self.input),
            key_bindings=self._keys(),
            style=STYLE,
            full_screen=True,
            mouse_support=False,
        )

    # -- terminal thread -----------------------------------------------------------
    def _layout(self) -> HSplit:
        messages = FormattedTextControl(
            self._messages, focusable=False, get_cursor_position=self._bottom
        )
        hidden = ConditionalProcessor(Hidden(), Condition(lambda: self._secret is not None))
        return HSplit(
            [
                Window(messages, wrap_lines=True),
                Window(
                    FormattedTextControl(lambda: bar_fragments(self.screen, time.time())), height=1
                ),
                Window(
                    BufferControl(self.input, input_processors=[hidden]),
                    height=1,
                    get_line_prefix=lambda *_: self._prompt(),
                ),
            ]
        )

    def _prompt(self) -> StyleAndTextTuples:
        if self._secret is not None:
            asks = ("Current password: ", "New password: ", "New password again: ")
            return [("bold", asks[len(self._secret)])]
        if self._split is not None:
            return [("bold", f"send it as {len(self._split)} messages? (y/n) ")]
        return [("bold", f"[{self.screen.current.title}] ")]

    def _messages(self) -> StyleAndTextTuples:
        out: StyleAndTextTuples = []
        window = self.screen.current
        for line in window.lines[-SHOWN_LINES:]:
            out.extend(line_fragments(line))
            out.append(("", "\n"))
        if window.partner is None and self.screen.users:
            out.append(("bold", "Who do you want to talk to?\n"))
            for i, user in enumerate(self.screen.users, 1):
                state = "online" if user.online else "offline"
                out.append(("", f"  {i}. {user.name} ({state})\n"))
        return out

    def _bottom(self) -> Point:
        """The last line drawn (the window scrolls to keep it in view), counted
        as :meth:`_messages` draws them: no second rendering per redraw."""
        window = self.screen.current
        lines = min(len(window.lines), SHOWN_LINES)
        if window.partner is None and self.screen.users:
            lines += 1 + len(self.screen.users)
        return Point(0, max(0, lines - 1))

    def _keys(self) -> KeyBindings:
        kb = KeyBindings()
        for n in range(1, 10):

            @kb.add("escape", str(n))
            def _(event: KeyPressEvent, n: int = n) -> None:
                self.screen.go(n - 1)

        @kb.add("c-n")
        def _(event: KeyPressEvent) -> None:
            self.screen.step(1)

        @kb.add("c-p")
        def _(event: KeyPressEvent) -> None:
            self.screen.step(-1)

        @kb.add("tab")
        def _(event: KeyPressEvent) -> None:
            buffer = event.current_buffer
            if buffer.complete_state:
                buffer.complete_next()
            else:
                buffer.start_completion(select_first=True)

        @kb.add("c-c")
        @kb.add("c-d", filter=Condition(lambda: not self.input.text))
        def _(event: KeyPressEvent) -> None:
            self._secret = None
            self._typed_line("::quit")

        return kb

    def _accept(self, buffer: Buffer) -> bool:
        text = buffer.text
        if self._secret is not None:
            buffer.reset()  # before the buffer files its text in the history: not a password
            self._secret.append(text)
            if len(self._secret) == 3:
                answers, self._secret = self._secret, None
                self._typed_line("\0passwd\0" + "\0".join(answers))
            return False
        if self._split is not None:
            buffer.reset()  # a y/n answer is not worth recalling
            chunks, self._split = self._split, None
            if text.strip().lower() in ("y", "yes"):
                for chunk in chunks:
                    self._typed_line(chunk, chat=True)
            else:
                self._say("not sent")
            return False
        if self._local(text.strip()):
            return False
        if not text.lstrip().startswith(("::", "connect:", "msg:")):
            chunks = split_message(text)
            if len(chunks) > 1:
                self._split = chunks
                self._say(f"That is {len(text):,} characters, too long for one message", "warning")
                return False
        self._typed_line(text)
        return False

    def _local(self, text: str) -> bool:
        """Lines about windows, handled here at once."""
        if text.startswith("::w ") and text[4:].strip().isdigit():
            if not self.screen.go(int(text[4:].strip()) - 1):
                self._say(f"there is no window {text[4:].strip()}", "warning")
            return True
        if text.startswith("::switch ") and self.screen.go_to(text[9:].strip()):
            return True
        if text == "::bell":
            self.screen.bell = not self.screen.bell
            self._say(f"the bell is {'on' if self.screen.bell else 'off'}")
            return True
        if text == "::passwd":
            self._secret = []
            return True
        picked = self.screen.menu_pick(text)
        if picked is not None:
            self._typed_line(f"connect: {picked}")
            return True
        return False

    def _say(self, text: str, level: str = "info") -> None:
        self._feed_now(System(text, level))  # type: ignore[arg-type]

    def _typed_line(self, line: str, *, chat: bool = False) -> None:
        typed = Typed(line, self.screen.route(), chat)
        token = self._trio_token
        if token is None:
            return
        try:
            trio.from_thread.run_sync(self._typed_send.send_nowait, typed, trio_token=token)
        except (trio.WouldBlock, trio.RunFinishedError, trio.ClosedResourceError):
            self._say("too many lines at once: that one was not sent", "warning")

    def _drain(self) -> None:
        """Feed the screen what the node said (terminal thread)."""
        while True:
            try:
                event = self._inbox.get_nowait()
            except queue.Empty:
                break
            self._feed_now(event)
        self.app.invalidate()

    def _feed_now(self, event: UIEvent) -> None:
        try:
            effects = self.screen.feed(event, time.time())
        except Exception:  # a bug of ours must not end the chat
            log.debug("cannot show %r", event, exc_info=True)
            return
        if effects:
            self.app.output.write_raw("\a")
        wanted = self._wanted
        if (
            wanted is not None
            and isinstance(event, System)
            and event.about is not None
            and event.about.lower() == wanted.lower()
        ):
            self._wanted = None
            if event.level != "error":
                self.screen.go_to(wanted)
        self.app.output.set_title(self.screen.terminal_title())

    # -- trio thread -----------------------------------------------------------------
    def post(self, event: UIEvent) -> None:
        self._inbox.put(event)
        loop = self.app.loop
        if loop is not None and self.app.is_running:
            with suppress(RuntimeError):  # the loop just closed: the UI is ending
                loop.call_soon_threadsafe(self._drain)

    async def tick(self) -> None:
        """While the rendezvous is away, the bar's countdown moves every second;
        while the home window shows, its users list is asked again now and then."""
        seconds = 0
        while True:
            await trio.sleep(1.0)
            seconds += 1
            status = self.node.status()
            if status.server != "online":
                self.post(status)
            elif self.screen.active == 0 and seconds % USERS_REFRESH == 0:
                self.node.request_users()

    async def pump_events(self) -> None:
        async for event in self.node.events:
            self.post(event)
        self.post(System("chathack stopped", "warning"))
        self._exit(1)

    def _exit(self, code: int) -> None:
        def leave() -> None:
            if self.app.is_running and not self.app.future.done():  # type: ignore[union-attr]
                self.app.exit(result=code)

        loop = self.app.loop
        if loop is not None:
            with suppress(RuntimeError):  # the loop just closed: the UI is ending anyway
                loop.call_soon_threadsafe(leave)

    async def act_on_lines(self) -> int:
        async for typed in self._typed:
            try:
                keep = await self._act(typed)
            except Exception as exc:  # a bug of ours costs that line, not the chat
                log.debug("acting on %r failed", typed.line, exc_info=True)
                self.post(System(f"that line could not be handled: {exc}", "error"))
                continue
            if not keep:
                return 0
        return 0

    async def _act(self, typed: Typed) -> bool:
        line = typed.line
        if line.startswith("\0passwd\0"):
            old, new, again = line.split("\0")[2:]
            if new != again:
                self.post(System("The two new passwords differ; nothing changed", "error"))
            else:
                await self.node.change_password(old, new)  # type: ignore[attr-defined]
            return True
        parsed = rec.Send(None, line) if typed.chat else parse_typed(line)
        if isinstance(parsed, rec.Send) and parsed.name is None:
            if typed.partner is None:
                self.post(
                    System(
                        "This is the home window: connect: NAME opens a conversation; "
                        "Alt-2... or ::w N goes to one",
                        "warning",
                    )
                )
                return True
            await self.node.send(typed.partner, parsed.text)
            return True
        if isinstance(parsed, OfferFile | rec.AcceptFile | rec.RejectFile):
            # A file goes to (or comes from) the partner of the window it was
            # typed in, whoever the last connect: was with.
            if typed.partner is None:
                self.post(System("Files are sent and taken in a partner's window", "warning"))
            elif isinstance(parsed, OfferFile):
                await self.node.send_file(parsed.path, typed.partner)
            else:
                self.node.feed(replace(parsed, partner=typed.partner))
            return True
        if isinstance(parsed, rec.Connect | rec.ShowHistory):
            self._go_when_open(parsed.name)
        keep = await self.node.handle_input(line)
        if not keep:
            self._exit(0)
        return keep

    def _go_when_open(self, name: str) -> None:
        """The user asked to talk to ``name`` (or to read what they said): its
        window comes up now, if ``name`` is somebody; a name nobody has opens
        nothing (the refusal is told at home)."""

        def go() -> None:
            screen = self.screen
            if screen.listed(name) or screen.index_of(name) is not None:
                screen.window_of(name)
                screen.go_to(name)
                self.app.invalidate()
            else:
                self._wanted = name

        loop = self.app.loop
        if loop is not None:
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(go)


async def run_windows(node: Node, *, bell: bool = True, history_file: Path | None = None) -> int:
    """Run the windowed UI until the user quits (0) or the node ends (1)."""
    history, warning = open_history(history_file)
    ui = WindowsUI(node, bell=bell, history=history)
    if warning:
        ui.post(System(warning, "warning"))
    ui._trio_token = trio.lowlevel.current_trio_token()
    for event in (node.status(),):
        ui.post(event)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ui.pump_events)
            nursery.start_soon(ui.tick)
            actor_done = trio.Event()

            async def actor() -> None:
                try:
                    await ui.act_on_lines()
                finally:
                    actor_done.set()

            nursery.start_soon(actor)

            def run_app() -> int:
                return ui.app.run(pre_run=ui._drain) or 0

            code = await trio.to_thread.run_sync(run_app, abandon_on_cancel=True)
            if code == 0:
                with trio.move_on_after(QUIT_SECONDS):
                    await node.quit()
            nursery.cancel_scope.cancel()
        return code
    except Exception as exc:  # no traceback for the user; the log has it
        log.debug("windowed UI failed", exc_info=True)
        while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        sys.stderr.write(f"chathack: the terminal UI failed: {exc}\n")
        return 1
