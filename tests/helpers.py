"""Helpers shared by the trio test modules.

Conventions (as in trio-websocket's tests): only 127.0.0.1 and port 0 when a
real socket is used; every wait is bounded by :data:`DEADLINE` through
``trio.fail_after``, so a broken test fails fast instead of hanging; nothing
synchronises with ``sleep``.

:class:`LineClient` speaks the rendezvous line protocol over any
``trio.abc.Stream`` (a memory stream, a lockstep stream or a TCP stream), the
way a person with ``nc`` would. Import it with ``from tests.helpers import ...``.
"""

from __future__ import annotations

import trio

from chathack.protocol import LineBuffer, ServerLine, UserLine, parse_server_line

#: Seconds any single wait in a test may take before the test fails.
DEADLINE = 5.0
#: Line limit of the test client: generous, so it never hides what the server sent.
CLIENT_MAX_LINE_BYTES = 1 << 20


class LineClient:
    """A line-oriented client: send lines, read the next line, expect a flag."""

    def __init__(self, stream: trio.abc.Stream, deadline: float = DEADLINE) -> None:
        self.stream = stream
        self.deadline = deadline
        self._lines = LineBuffer(CLIENT_MAX_LINE_BYTES)

    # sending --------------------------------------------------------------
    async def send_raw(self, data: bytes) -> None:
        with trio.fail_after(self.deadline):
            await self.stream.send_all(data)

    async def send_line(self, line: str) -> None:
        await self.send_raw(line.encode("utf-8") + b"\n")

    # receiving ------------------------------------------------------------
    async def read_line(self) -> str | None:
        """The next line, or ``None`` at end of stream (a connection reset counts as one)."""
        with trio.fail_after(self.deadline):
            while True:
                line = self._lines.next_line()
                if line is not None:
                    return line
                if self._lines.at_eof:
                    return None
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                self._lines.receive_data(data)

    async def read_event(self) -> ServerLine | UserLine:
        line = await self.read_line()
        assert line is not None, "the server closed the connection"
        return parse_server_line(line)

    async def expect(self, flag: str) -> str:
        """Read the next line, check it is ``Servidor[flag]: ...``, return its text."""
        event = await self.read_event()
        assert isinstance(event, ServerLine) and event.flag == flag, (
            f"expected Servidor[{flag}], got {event!r}"
        )
        return event.text

    async def expect_user(self, origin: str) -> str:
        """Read the next line, check it is ``origin: ...`` relayed by the server, return text."""
        event = await self.read_event()
        assert isinstance(event, UserLine) and event.origin == origin, (
            f"expected a line from {origin}, got {event!r}"
        )
        return event.text

    async def read_until_eof(self) -> list[str]:
        """Every line left before the server closes the connection."""
        with trio.fail_after(self.deadline):
            lines: list[str] = []
            while (line := await self.read_line()) is not None:
                lines.append(line)
            return lines

    async def expect_eof(self) -> None:
        line = await self.read_line()
        assert line is None, f"expected the connection to close, got {line!r}"

    # the rendezvous login dialogue ----------------------------------------
    async def login(self, name: str, password: str, *, greeted: bool = False) -> str:
        """Log in (or register) as ``name``; return the text of ``Servidor[OK]``.

        ``greeted``: the ``Servidor[USERNAME]`` greeting was already read.
        """
        if not greeted:
            await self.expect("USERNAME")
        await self.send_line(f"username: {name}")
        await self.expect("PASSWORD")
        await self.send_line(f"password: {password}")
        ok = await self.expect("OK")
        self.seen = await self.expect("SEEN")  # our address as the server sees it
        self.token = (await self.expect("TOKEN")).split()[0]  # to resume later
        return ok

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)
