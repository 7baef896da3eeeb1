"""What every harness shares: reading fuzzer bytes as decisions, and the
checks that make up the wire contract.

:class:`Cursor` is the harnesses' own small version of atheris's
``FuzzedDataProvider``. It is not atheris's because the harnesses must mean
the same thing with or without atheris (hypothesis runs them where atheris
does not install), so that a corpus file or a crash is one input
everywhere. Every read past the end gives zeros, so any byte string is a
valid input, and every harness loop is bounded by the input's length.

:class:`Script` writes the bytes a :class:`Cursor` reads back: the seed
corpus and the hypothesis strategies build structured inputs with it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from chathack.errors import RemoteProtocolError
from chathack.protocol import (
    MAX_LINE_BYTES,
    LineBuffer,
    ServerLine,
    UserLine,
    parse_server_line,
)
from chathack.text import is_safe

T = TypeVar("T")


class Cursor:
    """Fuzzer bytes read front to back as a sequence of decisions."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def below(self, n: int) -> int:
        """An integer in ``[0, n)``: one byte when ``n <= 256``, else four."""
        if n <= 256:
            return self.byte() % n
        return self.uint(4) % n

    def uint(self, size: int) -> int:
        """``size`` bytes, big-endian (zeros past the end)."""
        raw = self.data[self.pos : self.pos + size]
        self.pos += len(raw)
        return int.from_bytes(raw.ljust(size, b"\0"), "big")

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def pick(self, items: Sequence[T]) -> T:
        return items[self.below(len(items))]

    def chunk(self) -> bytes:
        """A length byte, then that many bytes (fewer at the end)."""
        n = self.byte()
        raw = self.data[self.pos : self.pos + n]
        self.pos += len(raw)
        return raw

    def block(self) -> bytes:
        """A two-byte length, then that many bytes (fewer at the end): room for
        inputs as long as a protocol line may be."""
        n = self.uint(2)
        raw = self.data[self.pos : self.pos + n]
        self.pos += len(raw)
        return raw

    def text(self) -> str:
        """A chunk as text. Lines are strict UTF-8 on every wire, so invalid
        bytes become U+FFFD rather than surrogates no peer could send."""
        return self.chunk().decode("utf-8", "replace")

    def rest(self) -> bytes:
        raw = self.data[self.pos :]
        self.pos = len(self.data)
        return raw


class Script:
    """Builds the bytes that a :class:`Cursor` reads as the given decisions."""

    def __init__(self) -> None:
        self.out = bytearray()

    def byte(self, value: int) -> Script:
        self.out.append(value & 0xFF)
        return self

    def below(self, n: int, value: int) -> Script:
        return self.byte(value) if n <= 256 else self.uint(4, value)

    def uint(self, size: int, value: int) -> Script:
        self.out += value.to_bytes(size, "big")
        return self

    def flag(self, value: bool) -> Script:
        return self.byte(int(value))

    def pick(self, items: Sequence[T], item: T) -> Script:
        return self.below(len(items), items.index(item))

    def chunk(self, raw: bytes) -> Script:
        if len(raw) > 255:
            raise ValueError("a chunk holds at most 255 bytes")
        self.out.append(len(raw))
        self.out += raw
        return self

    def block(self, raw: bytes) -> Script:
        self.uint(2, len(raw))
        self.out += raw
        return self

    def text(self, text: str) -> Script:
        return self.chunk(text.encode("utf-8"))

    def rest(self, raw: bytes) -> Script:
        self.out += raw
        return self

    def build(self) -> bytes:
        return bytes(self.out)


# --------------------------------------------------------------------------
# The wire contract
# --------------------------------------------------------------------------


def lines_of(data: bytes, max_bytes: int = MAX_LINE_BYTES) -> Iterator[str | RemoteProtocolError]:
    """The lines a :class:`LineBuffer` frames from ``data`` then EOF, and its errors.

    Only :class:`RemoteProtocolError` may come out of the buffer.
    """
    buf = LineBuffer(max_bytes)
    buf.receive_data(data)
    buf.receive_data(b"")
    # Each call consumes at least one byte or ends: len(data) + 2 bounds it.
    for _ in range(len(data) + 2):
        try:
            line = buf.next_line()
        except RemoteProtocolError as e:
            check_error(e)
            yield e
            continue
        if line is None:
            return
        yield line
    raise AssertionError("LineBuffer kept returning lines past the end of its input")


def check_error(e: RemoteProtocolError) -> None:
    """A protocol error's message is sent back in a line: it must be one."""
    message = str(e)
    assert message, f"{type(e).__name__} without a message"


def check_wire_line(wire: bytes) -> str:
    """``wire`` is exactly one protocol line: UTF-8, ends with LF, no other
    line break inside; return the line without its LF."""
    assert wire.endswith(b"\n"), f"a formatted line without its LF: {wire[:80]!r}"
    line = wire[:-1].decode("utf-8")
    assert "\n" not in line and "\r" not in line, f"a line break inside a line: {wire[:80]!r}"
    return line


def check_server_output(data: bytes) -> list[ServerLine | UserLine]:
    """Everything the rendezvous wrote to one client: whole lines, each no
    longer than a client accepts, each parsing as a server line whose text
    is safe for a terminal (neutralised). Returns the parsed lines."""
    if not data:
        return []
    assert data.endswith(b"\n"), f"output ends inside a line: {data[-80:]!r}"
    out: list[ServerLine | UserLine] = []
    for raw in data[:-1].split(b"\n"):
        assert len(raw) + 1 <= MAX_LINE_BYTES, (
            f"a line of {len(raw) + 1} bytes, over MAX_LINE_BYTES: clients drop it"
        )
        line = raw.decode("utf-8")
        assert "\r" not in line, f"a CR inside a line: {raw[:80]!r}"
        event = parse_server_line(line)  # raises if the server wrote a malformed line
        assert is_safe(event.text), f"unneutralised text reached a client: {raw[:80]!r}"
        out.append(event)
    return out
