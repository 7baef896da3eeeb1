"""trio tests of one rendezvous connection's output
(:class:`rendezvous.connection.Connection`): lines written at once from the
task that makes them, held until the end of a read batch, handed to a writer
task only when the transport does not take them, and the limits that keep a
client that stops reading from stalling anybody (the write timeout, which must
not drop a client that was merely quiet, and the outbox bound).

Memory and lockstep streams (``trio.testing``) with ``autojump_clock`` for
the timeouts; a real ``socket.socketpair`` for the non-blocking path.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from rendezvous.connection import Batch, Connection
from rendezvous.counts import Counts
from rendezvous.transport import SocketTransport, StreamTransport

WRITE_TIMEOUT = 10.0


@asynccontextmanager
async def connection(
    transport: SocketTransport | StreamTransport,
    capacity: int = 8,
    batch: Batch | None = None,
    counts: Counts | None = None,
) -> AsyncIterator[Connection]:
    """A connection whose writer tasks run in a nursery that ends with the block."""
    async with trio.open_nursery() as writers:
        yield Connection(
            transport,
            "192.0.2.1",
            capacity,
            spawn=writers.start_soon,
            batch=batch,
            write_timeout=WRITE_TIMEOUT,
            counts=counts,
        )


async def test_a_quiet_connection_outlives_the_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, theirs = trio.testing.lockstep_stream_pair()
    async with connection(StreamTransport(ours)) as conn:
        for i in range(3):
            conn.send(b"line %d\n" % i)
            with trio.fail_after(1):
                assert await theirs.receive_some(100) == b"line %d\n" % i
            await trio.sleep(5 * WRITE_TIMEOUT)  # quiet: nothing to write
        assert not conn.aborted and not conn.scope.cancel_called
        conn.send(b"last\n")
        conn.close()  # flush, then end the reader
        assert not conn.scope.cancel_called  # not before the line is written
        with trio.fail_after(1):
            assert await theirs.receive_some(100) == b"last\n"
        await conn.wait_written()
    assert conn.scope.cancel_called and not conn.aborted


async def test_a_client_that_stops_reading_is_dropped_after_the_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, _theirs = trio.testing.lockstep_stream_pair()  # nobody reads _theirs
    start = trio.current_time()
    counts = Counts()
    with trio.fail_after(10 * WRITE_TIMEOUT):
        async with connection(StreamTransport(ours), counts=counts) as conn:
            conn.send(b"never read\n")
            assert conn.writing
            await conn.wait_written()
    assert conn.aborted and conn.scope.cancel_called
    assert trio.current_time() - start == pytest.approx(WRITE_TIMEOUT, rel=0.02)
    assert (counts.slow_readers, counts.outbox_overflows) == (1, 0)  # for the operators


async def test_a_full_outbox_disconnects() -> None:
    ours, _theirs = trio.testing.lockstep_stream_pair()
    counts = Counts()
    async with connection(StreamTransport(ours), capacity=2, counts=counts) as conn:
        for i in range(4):  # the first goes to the writer, two wait, one too many
            conn.send(b"%d\n" % i)
        assert conn.aborted and conn.scope.cancel_called
        conn.send(b"dropped\n")  # after that, nothing is queued
    assert (counts.slow_readers, counts.outbox_overflows) == (0, 1)  # counted once


async def test_a_socket_that_takes_the_line_needs_no_writer_task() -> None:
    a, b = socket.socketpair()
    with b:
        async with connection(SocketTransport(a)) as conn:
            conn.send(b"hello\n")
            assert not conn.writing  # written by send() itself
            assert b.recv(100) == b"hello\n"
            conn.close()
            assert conn.scope.cancel_called  # nothing left to write: the reader ends
            await conn.transport.aclose()


async def test_what_the_socket_does_not_take_goes_through_the_writer_in_order() -> None:
    a, b = socket.socketpair()
    b.setblocking(False)
    chunk = b"x" * 65535 + b"\n"
    received = bytearray()

    def read_some() -> None:
        try:
            while data := b.recv(1 << 20):
                received.extend(data)
        except BlockingIOError:
            pass

    with b:
        async with connection(SocketTransport(a), capacity=10_000) as conn:
            sent = 0
            while not conn.writing:  # fill the kernel's buffers: the writer starts
                conn.send(b"%08d" % sent + chunk)
                sent += 1
                assert sent < 10_000, "the socket never pushed back"
            for i in range(3):  # more while the writer waits: queued behind it
                conn.send(b"%08d" % (sent + i) + chunk)
            sent += 3
            expected = b"".join(b"%08d" % i + chunk for i in range(sent))
            with trio.fail_after(10):
                while len(received) < len(expected):
                    await trio.lowlevel.wait_readable(b)
                    read_some()
            with trio.fail_after(5):
                await conn.wait_written()
            await conn.transport.aclose()
    assert bytes(received) == expected
    assert not conn.aborted


async def test_a_batch_writes_each_connection_once_when_released() -> None:
    writes: list[tuple[str, bytes]] = []

    class Recording(SocketTransport):
        def __init__(self, sock: socket.socket, name: str) -> None:
            super().__init__(sock)
            self.name = name

        def try_send(self, data: bytes) -> int:
            writes.append((self.name, bytes(data)))
            return len(data)

    batch = Batch()
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        t1, t2 = Recording(pairs[0][0], "one"), Recording(pairs[1][0], "two")
        async with connection(t1, batch=batch) as one, connection(t2, batch=batch) as two:
            batch.hold()
            one.send(b"a\n")
            two.send(b"b\n")
            one.send(b"c\n")
            one.close()  # flush first, then end
            assert writes == [] and not one.scope.cancel_called
            batch.release()
            assert writes == [("one", b"a\nc\n"), ("two", b"b\n")]
            assert one.scope.cancel_called and not two.scope.cancel_called
            two.send(b"d\n")  # outside a batch: at once
            assert writes[-1] == ("two", b"d\n")
    finally:
        for x, y in pairs:
            x.close()
            y.close()


async def test_a_reset_while_writing_aborts_the_connection() -> None:
    a, b = socket.socketpair()
    b.close()
    async with connection(SocketTransport(a)) as conn:
        conn.send(b"to nobody\n")
        assert conn.aborted and conn.scope.cancel_called
        await conn.transport.aclose()


async def test_over_a_stream_one_writer_task_serves_every_write_then_ends_on_close() -> None:
    """A trio stream cannot write without waiting: the writer parks between
    writes instead of a task being started for each."""
    ours, theirs = trio.testing.memory_stream_pair()
    started: list[object] = []
    async with trio.open_nursery() as writers:

        def spawn(fn: Callable[[], Awaitable[None]]) -> None:
            started.append(fn)
            writers.start_soon(fn)

        conn = Connection(
            StreamTransport(ours), "192.0.2.1", 8, spawn=spawn, write_timeout=WRITE_TIMEOUT
        )
        for i in range(5):
            conn.send(b"line %d\n" % i)
            with trio.fail_after(5):
                assert await theirs.receive_some() == b"line %d\n" % i
                await conn.wait_written()
        assert len(started) == 1
        conn.close()  # wakes the parked writer, which ends: the nursery can exit
    assert conn.scope.cancel_called and not conn.aborted
