"""The interactive terminal UI: a prompt that incoming messages never clobber.

Theory of operation
-------------------
Two threads, one owner each:

* the **prompt thread** (``trio.to_thread.run_sync``) runs one prompt_toolkit
  ``PromptSession.prompt()`` per typed line; prompt_toolkit runs its own
  asyncio loop there and owns the terminal's raw mode;
* the **trio thread** consumes ``node.events``, prints what
  :func:`peer.render.render_event` makes of them, and feeds typed lines to
  ``node.handle_input``.

The rich console writes to ``sys.stdout`` inside ``patch_stdout(raw=True)``,
whose proxy hands each printed line to the prompt's loop, which erases the
prompt, prints the line and redraws the prompt with the half-typed text. The
trio side touches the prompt only through thread-safe calls
(``Application.invalidate``, ``loop.call_soon_threadsafe``); the prompt side
reads only snapshots (``self.status``, ``self.users``) that the trio side
replaces whole, so neither calls into the other's objects.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TextIO

import trio
from prompt_toolkit import PromptSession
from prompt_toolkit import prompt as pt_prompt
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import History
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.shortcuts import CompleteStyle
from prompt_toolkit.styles import Style
from rich.console import Console

from chathack.protocol import UserState
from peer.completion import ChatCompleter, UINode, open_history
from peer.events import Status, System, UIEvent, UsersList
from peer.render import THEME, render_event, status_parts

try:
    import termios
except ImportError:  # pragma: no cover - not on Windows
    termios = None  # type: ignore[assignment]

log = logging.getLogger("chathack.peer.tty")

PROMPT = "> "
#: Seconds a clean ``node.quit()`` may take before the UI stops waiting for it.
QUIT_SECONDS = 5.0
#: Seconds the prompt thread gets to hand the terminal back on the way out.
PROMPT_EXIT_SECONDS = 2.0
#: Toolbar colours, keyed by the theme names :func:`peer.render.status_parts` uses.
TOOLBAR_STYLE = Style.from_dict(
    {
        "path.direct": "bold ansigreen",
        "path.punched": "bold ansicyan",
        "path.relayed": "bold ansiyellow",
        "chat.warning": "bold ansiyellow",
    }
)


@contextmanager
def _logging_above_prompt() -> Iterator[None]:
    """Point the root log handlers that write to the terminal at the stdout proxy.

    A handler keeps the stream it was given (the real stderr), so without
    this a log line would land in the middle of the line being typed.
    """
    terminal = (sys.__stderr__, sys.__stdout__)
    moved: list[tuple[logging.StreamHandler[TextIO], TextIO]] = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in terminal:
            moved.append((handler, handler.stream))
            handler.setStream(sys.stderr)
    try:
        yield
    finally:
        for handler, stream in moved:
            handler.setStream(stream)


@contextmanager
def _keys_wait_for_the_prompt() -> Iterator[None]:
    """No echo, no line editing by the terminal while run_tty runs; the mode back after.

    prompt_toolkit sets raw mode only while a prompt runs and goes back to
    the mode it found in between. In the default cooked mode, keys typed
    while a line is being handled would be echoed over the chat and a
    Ctrl-D taken by the terminal as end-of-file; this way they wait, as
    bytes, for the next prompt. Signals (Ctrl-C) keep working.
    """
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except Exception:  # not a terminal, no termios, stdin replaced: nothing to do
        yield
        return
    quiet = termios.tcgetattr(fd)
    quiet[3] &= ~(termios.ECHO | termios.ICANON)
    quiet[6][termios.VMIN], quiet[6][termios.VTIME] = 1, 0
    with suppress(termios.error):
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        # If the terminal is gone, nobody is looking at it any more.
        with suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class _TtyUI:
    def __init__(self, node: UINode, history: History) -> None:
        self.node = node
        self.status = node.status()
        self.users: tuple[UserState, ...] = tuple(node.known_users)
        # The users menu stays "open" for the next typed line only, so that a
        # number typed later in a conversation is sent as text.
        self.menu: tuple[UserState, ...] | None = None
        self.node_ended = False
        self.console = Console(force_terminal=True, theme=THEME, highlight=False)
        self._stop = threading.Event()
        self._prompt_idle = threading.Event()
        self._prompt_idle.set()
        self._loop_scope = trio.CancelScope()
        self._quit_scope: trio.CancelScope | None = None
        self.session: PromptSession[str | None] = PromptSession(
            history=history,
            completer=ChatCompleter(lambda: self.users),
            complete_while_typing=False,
            # Candidates print above the prompt like readline's, so no rows
            # need reserving and the prompt sits right above the toolbar.
            complete_style=CompleteStyle.READLINE_LIKE,
            reserve_space_for_menu=0,
            bottom_toolbar=self._toolbar,
            style=TOOLBAR_STYLE,
            # The node echoes sent text as a formatted Outgoing line.
            erase_when_done=True,
        )

    # -- prompt thread ---------------------------------------------------

    def _toolbar(self) -> StyleAndTextTuples:
        return [(f"class:{name}" if name else "", text) for name, text in status_parts(self.status)]

    def _prompt_once(self) -> str | None:
        """One typed line; ``None`` when the trio side asked the prompt to stop."""
        try:
            if self._stop.is_set():
                return None
            return self.session.prompt(PROMPT, pre_run=self._exit_if_stopping)
        finally:
            self._prompt_idle.set()

    def _exit_if_stopping(self) -> None:
        # Runs in the prompt's loop once it is running: covers a stop request
        # that came after _prompt_once looked but before the loop existed.
        if self._stop.is_set():
            self._exit_app()

    def _exit_app(self) -> None:
        future = self.session.app.future
        if future is not None and not future.done():
            self.session.app.exit(result=None)

    # -- trio thread -----------------------------------------------------

    def _stop_prompt(self) -> None:
        self._stop.set()
        loop = self.session.app.loop
        if loop is not None:
            # RuntimeError: the loop has just closed, so the prompt is over anyway.
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(self._exit_app)

    def _invalidate(self) -> None:
        """Redraw the prompt (toolbar) from the trio thread: the call must run on
        the prompt's own loop, and only while a prompt is up."""
        app = self.session.app
        loop = app.loop
        if loop is None or not app.is_running:
            return  # between two prompts: the next one draws afresh
        # RuntimeError: that loop closed meanwhile (the prompt just ended).
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(app.invalidate)

    def show(self, event: UIEvent) -> None:
        """Print ``event`` above the prompt and refresh the snapshots it reads."""
        self.status = event if isinstance(event, Status) else self.node.status()
        self.users = tuple(self.node.known_users)
        if isinstance(event, UsersList):
            self.menu = event.users
        try:
            renderable = render_event(event, self.node.me)
            if renderable is not None:
                self.console.print(renderable)
        except Exception:  # a bug of ours must not end the chat
            log.debug("cannot show %r", event, exc_info=True)
            self.console.print(f"(cannot show a {type(event).__name__} event)", markup=False)
        try:
            self._invalidate()
        except Exception:  # a stale toolbar is no reason to end the chat
            log.debug("cannot redraw the prompt", exc_info=True)

    async def pump_events(self) -> None:
        async for event in self.node.events:
            self.show(event)
        self.node_ended = True
        self._stop_prompt()

    def drain_events(self) -> None:
        """Show what the node queued while quitting, without waiting for more."""
        while True:
            try:
                self.show(self.node.events.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return

    async def watch_signals(self) -> None:
        signals = [signal.SIGINT]
        if hasattr(signal, "SIGWINCH"):
            # prompt_toolkit handles resizes only in the main thread; forward them.
            signals.append(signal.SIGWINCH)
        try:
            with trio.open_signal_receiver(*signals) as received:
                async for signum in received:
                    if signum == signal.SIGINT:
                        self._interrupt()
                    else:
                        self._invalidate()
        except RuntimeError:  # trio runs outside the main thread: no signals
            log.debug("signals not watched", exc_info=True)

    def _interrupt(self) -> None:
        # Ctrl-C while a prompt runs arrives as a key; this is SIGINT while a
        # line is being handled. A second one stops waiting for a clean quit.
        if self._quit_scope is not None:
            self._quit_scope.cancel()
        else:
            self._loop_scope.cancel()

    async def prompt_loop(self) -> int:
        try:
            with self._loop_scope:
                while not self.node_ended:
                    self._prompt_idle.clear()
                    try:
                        line = await trio.to_thread.run_sync(
                            self._prompt_once, abandon_on_cancel=True
                        )
                    except (EOFError, KeyboardInterrupt):  # Ctrl-D, Ctrl-C
                        return await self._quit()
                    if line is None or self.node_ended:
                        break
                    if not await self._submit(line):
                        return 0  # ::quit
                return 1  # the node ended on its own
            return await self._quit()  # SIGINT
        finally:
            await self._release_prompt()

    async def _submit(self, line: str) -> bool:
        menu, self.menu = self.menu, None
        text = line.strip()
        if not text:
            self.menu = menu
            return True
        if menu is not None and text.isascii() and text.isdigit():
            number = int(text)
            if not 1 <= number <= len(menu):
                self.show(
                    System(f"there is no {number} in the list; pick 1-{len(menu)}", "warning")
                )
                self.menu = menu
                return True
            line = f"connect: {menu[number - 1].name}"
        if text == "::passwd" and hasattr(self.node, "change_password"):
            await self._change_password()
            return True
        try:
            return await self.node.handle_input(line)
        except Exception as exc:
            log.debug("handle_input(%r) failed", line, exc_info=True)
            self.show(System(f"that line could not be handled: {exc}", "error"))
            return True

    async def _change_password(self) -> None:
        """Ask without echo (and outside the input history), then let the node do it."""

        def ask() -> tuple[str, str] | None:
            old = pt_prompt("Current password: ", is_password=True)
            new = pt_prompt("New password: ", is_password=True)
            if pt_prompt("New password again: ", is_password=True) != new:
                return None
            return old, new

        try:
            answers = await trio.to_thread.run_sync(ask, abandon_on_cancel=True)
        except (EOFError, KeyboardInterrupt):
            answers = None
            self.show(System("::passwd cancelled", "warning"))
            return
        if answers is None:
            self.show(System("The two new passwords differ; nothing changed", "error"))
            return
        await self.node.change_password(*answers)  # type: ignore[attr-defined]

    async def _quit(self) -> int:
        self._quit_scope = trio.CancelScope(deadline=trio.current_time() + QUIT_SECONDS)
        with self._quit_scope:
            await self.node.quit()
        return 0

    async def _release_prompt(self) -> None:
        """Make the prompt thread give the terminal back, even when cancelled."""
        self._stop_prompt()
        done = self._prompt_idle.is_set()
        if not done:
            with trio.CancelScope(shield=True):
                done = await trio.to_thread.run_sync(self._prompt_idle.wait, PROMPT_EXIT_SECONDS)
        terminal = sys.__stdout__
        if not done and terminal is not None:
            # The prompt is stuck: undo the modes it set, or the shell after
            # us would get bracketed-paste codes and no cursor.
            terminal.write("\x1b[?2004l\x1b[?25h\r\n")
            terminal.flush()


async def run_tty(node: UINode, history_file: Path | None) -> int:
    """Run the terminal UI until the user quits (0) or the node ends (1)."""
    history, warning = open_history(history_file)
    try:
        with _keys_wait_for_the_prompt(), patch_stdout(raw=True), _logging_above_prompt():
            ui = _TtyUI(node, history)
            if warning:
                ui.show(System(warning, "warning"))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ui.pump_events)
                nursery.start_soon(ui.watch_signals)
                code = await ui.prompt_loop()
                nursery.cancel_scope.cancel()
            ui.drain_events()
            return code
    except Exception as exc:  # no traceback for the user; the log has it
        log.debug("terminal UI failed", exc_info=True)
        while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # name the real error, not the task group
        sys.stderr.write(f"chathack: the terminal UI failed: {exc}\n")
        return 1
