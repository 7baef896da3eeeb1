"""trio tests of one rendezvous connection's outbox and writer
(:class:`rendezvous.connection.Connection`), over ``trio.testing`` lockstep
streams and ``autojump_clock``: the write timeout, which lives in one scope
across many writes, must drop a client that stops reading and must not drop
one that was merely quiet for longer than the timeout.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from rendezvous.connection import Connection

WRITE_TIMEOUT = 10.0


async def test_a_quiet_connection_outlives_the_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, theirs = trio.testing.lockstep_stream_pair()
    conn = Connection(ours, "192.0.2.1", 8)
    async with trio.open_nursery() as nursery:
        with conn.cancel_scope:
            nursery.start_soon(conn.run_writer, WRITE_TIMEOUT)
            for i in range(3):
                conn.send(b"line %d\n" % i)
                with trio.fail_after(1):
                    assert await theirs.receive_some(100) == b"line %d\n" % i
                await trio.sleep(5 * WRITE_TIMEOUT)  # quiet: nothing to write
            # Still connected: the writer did not end (which cancels cancel_scope).
            assert not conn.cancel_scope.cancel_called
            conn.close()  # flush, then end
            await trio.sleep_forever()
    assert conn.cancel_scope.cancelled_caught


async def test_a_client_that_stops_reading_is_dropped_after_the_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, _theirs = trio.testing.lockstep_stream_pair()  # nobody reads _theirs
    conn = Connection(ours, "192.0.2.1", 8)
    start = trio.current_time()
    with trio.fail_after(10 * WRITE_TIMEOUT):
        async with trio.open_nursery() as nursery:
            with conn.cancel_scope:
                nursery.start_soon(conn.run_writer, WRITE_TIMEOUT)
                conn.send(b"never read\n")
                await trio.sleep_forever()
    assert conn.cancel_scope.cancelled_caught
    assert trio.current_time() - start == pytest.approx(WRITE_TIMEOUT, rel=0.02)


async def test_a_full_outbox_disconnects() -> None:
    ours, _theirs = trio.testing.lockstep_stream_pair()
    conn = Connection(ours, "192.0.2.1", 2)
    for i in range(3):
        conn.send(b"%d\n" % i)
    assert conn.cancel_scope.cancel_called
