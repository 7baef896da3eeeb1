"""trio tests of the peer's :class:`peer.transport.StreamWriter` over
``trio.testing`` streams with ``autojump_clock``: its write timeout lives in
one scope across many writes, so it must break a stream the other side stops
reading and must not break one that was merely quiet for a long time.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from peer.transport import WRITE_TIMEOUT, StreamWriter


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
