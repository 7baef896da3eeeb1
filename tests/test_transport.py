"""trio tests of the peer's :class:`peer.transport.StreamWriter` over
``trio.testing`` streams with ``autojump_clock``: its write timeout lives in
one scope across many writes, so it must break a stream the other side stops
reading and must not break one that was merely quiet for a long time.
"""

from __future__ import annotations

import os

import pytest
import trio
import trio.lowlevel
import trio.testing

from chathack.link import SEALED_CHUNK_TAG, Ping, Sealed, SealedChunk, encode_frame
from chathack.secure import SecureSession, TamperedFrame
from peer.transport import WRITE_TIMEOUT, FrameReader, StreamWriter


async def test_a_quiet_writer_outlives_the_write_timeout_and_finish_flushes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    writer = StreamWriter(ours)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        for i in range(3):
            assert writer.send(b"frame %d;" % i)
            with trio.fail_after(1):
                assert await theirs.receive_some(100) == b"frame %d;" % i
            await trio.sleep(5 * WRITE_TIMEOUT)  # quiet: nothing to write
        assert not writer.broken
        writer.send(b"a;")
        writer.send(b"b;")
        writer.finish()
        with trio.fail_after(1):
            assert await theirs.receive_some(100) == b"a;b;"
            assert await theirs.receive_some(100) == b""  # half-closed
    assert writer.done.is_set()
    assert not writer.send(b"late")


async def test_a_stalled_stream_breaks_after_the_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, _theirs = trio.testing.lockstep_stream_pair()  # nobody reads _theirs
    writer = StreamWriter(ours)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        assert writer.send(b"never read")
        with trio.fail_after(10 * WRITE_TIMEOUT):
            await writer.done.wait()
    assert writer.broken
    assert trio.current_time() - start == pytest.approx(WRITE_TIMEOUT, rel=0.02)
    assert not writer.send(b"more")


def test_a_full_queue_breaks_the_stream() -> None:
    ours, _theirs = trio.testing.memory_stream_pair()
    writer = StreamWriter(ours, capacity=2)
    assert writer.send(b"1") and writer.send(b"2")
    assert not writer.send(b"3")
    assert writer.broken


def _socket_stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


async def test_an_idle_writer_lets_send_write_to_the_socket_in_order() -> None:
    # Over a real socket, send() writes directly while the writer is idle;
    # what the socket cannot take is queued behind, so order is kept even when
    # the socket buffer fills up in the middle of a chunk.
    ours, theirs = _socket_stream_pair()
    writer = StreamWriter(ours)
    chunks = [bytes([i]) * 65536 for i in range(64)]
    expected = b"".join(chunks)
    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await trio.testing.wait_all_tasks_blocked()
        assert writer.send(b"first;")
        assert not writer._out  # went straight to the socket
        with trio.fail_after(5):
            assert await theirs.receive_some(100) == b"first;"
        for chunk in chunks:
            assert writer.send(chunk)
        writer.finish()
        with trio.fail_after(30):
            while data := await theirs.receive_some(1 << 20):
                got += data
    assert got == expected
    assert not writer.send(b"late")


async def test_large_frames_are_read_whole_and_open_as_any_frame() -> None:
    # A frame over 64 KiB is read straight into a buffer of its own size; a
    # sealed frame that large (a hostile partner's) still opens to bytes, so a
    # forgery is dropped as one (TamperedFrame), never met as a bug.
    ours, theirs = _socket_stream_pair()
    session = SecureSession("sid", b"", b"k" * 32, b"k" * 32)
    chunk = SealedChunk(session.seal_chunk(b"12345678", 7, b"c" * 200_000, SEALED_CHUNK_TAG))
    forged = Sealed(os.urandom(150_000))
    small = Ping(1)
    wire = b"".join(encode_frame(f) for f in (small, chunk, forged, small))
    reader = FrameReader(ours)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(theirs.send_all, wire)
        with trio.fail_after(10):
            got = [await reader.next_frame() for _ in range(4)]
    assert got[0] == got[3] == small
    assert isinstance(got[1], SealedChunk) and bytes(got[1].body) == bytes(chunk.body)
    assert session.open_chunk(got[1].body, 1) == (b"12345678", 7, b"c" * 200_000)
    assert isinstance(got[2], Sealed) and type(got[2].data) is bytes
    with pytest.raises(TamperedFrame):
        session.open(got[2].data)


async def test_a_stalled_socket_breaks_after_the_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, _theirs = _socket_stream_pair()  # nobody reads _theirs
    writer = StreamWriter(ours)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(100):  # far more than the socket buffers hold
            assert writer.send(b"x" * 65536)
            await trio.lowlevel.checkpoint()
        with trio.fail_after(10 * WRITE_TIMEOUT):
            await writer.done.wait()
    assert writer.broken
    assert trio.current_time() - start == pytest.approx(WRITE_TIMEOUT, rel=0.02)
    assert not writer.send(b"more")


async def test_send_to_a_closed_socket_breaks_the_writer() -> None:
    ours, theirs = _socket_stream_pair()
    writer = StreamWriter(ours)
    await theirs.aclose()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(5):
            for _ in range(1000):
                if not writer.send(b"x" * 1000):
                    break
                await trio.lowlevel.checkpoint()
            await writer.done.wait()
    assert writer.broken
