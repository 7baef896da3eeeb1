"""A ``redis-server`` of the test's own (benchmarks/redis_proc.py), ended in a
``finally`` even when the test fails; a test that needs one and finds no
``redis-server`` is skipped with a one-line reason."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path

import coredis
import pytest

from benchmarks.redis_proc import RedisServer
from rendezvous.redis_shared import connect


@contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(directory)
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def clients(server: RedisServer, n: int = 2) -> AsyncIterator[list[coredis.Redis[str]]]:
    """``n`` clients of ``server``, each with its own connections (``n``
    instances), on an emptied database."""
    async with AsyncExitStack() as stack:
        made = [connect(server.url) for _ in range(n)]
        for client in made:
            await stack.enter_async_context(client)
        await made[0].flushdb()
        yield made


__all__ = ["RedisServer", "clients", "redis_server"]
