"""What both terminal UIs share: what they ask of the node (:class:`UINode`),
and for the input line Tab completion (command words, a user name wherever
one may go, nicks in chat text) and the history of typed lines."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import trio
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory

from chathack.protocol import UserState
from peer.commands import COMPLETION_WORDS, PEER_COMMANDS
from peer.events import Status, UIEvent

_HELP = {c.name: c.help for c in PEER_COMMANDS}
# After these, the next word is a user name.
_NAME_PREFIXES = (
    "connect:",
    "msg:",
    "::switch ",
    "::whois ",
    "::trust ",
    "::history ",
    "::end ",
)


class UINode(Protocol):
    """What a terminal UI needs from :class:`peer.node.PeerNode`."""

    @property
    def me(self) -> str: ...
    @property
    def events(self) -> trio.MemoryReceiveChannel[UIEvent]: ...
    @property
    def known_users(self) -> Sequence[UserState]: ...
    def status(self) -> Status: ...
    async def handle_input(self, line: str) -> bool: ...
    async def quit(self) -> None: ...


class ChatCompleter(Completer):
    """Command words at the start of a line, a user name wherever one may go
    (after ``connect:``, ``::whois``, ...), and nicks in chat text."""

    def __init__(self, users: Callable[[], Sequence[UserState]]) -> None:
        self._users = users

    def get_completions(self, document: Document, event: CompleteEvent) -> Iterable[Completion]:
        before = document.text_before_cursor
        for prefix in _NAME_PREFIXES:
            if before.lower().startswith(prefix):
                yield from self._names(before[len(prefix) :].lstrip())
                return
        if " " in before:
            if not before.startswith("::"):
                # Chat text: the word being typed may be someone's nick.
                yield from self._names(before.rsplit(" ", 1)[1], nick=True)
            return
        for word in COMPLETION_WORDS:
            if word.startswith(before.lower()):
                yield Completion(word, -len(before), display_meta=_HELP.get(word.strip(), ""))

    def _names(self, partial: str, nick: bool = False) -> Iterable[Completion]:
        if " " in partial or (nick and not partial):
            return
        # Online people first: they are the ones a conversation can start with now.
        for user in sorted(self._users(), key=lambda u: (not u.online, u.name.lower())):
            if user.name.lower().startswith(partial.lower()):
                meta = "online" if user.online else "offline"
                yield Completion(user.name, -len(partial), display_meta=meta)


def open_history(history_file: Path | None) -> tuple[History, str | None]:
    """The history to use, and a warning to show if the file cannot be used."""
    if history_file is None:
        return InMemoryHistory(), None
    try:
        history_file.parent.mkdir(parents=True, exist_ok=True)
        history_file.touch(exist_ok=True)
    except OSError as exc:
        return InMemoryHistory(), f"history is not saved: {exc.strerror} ({history_file})"
    return FileHistory(str(history_file)), None
