"""A ``redis-server`` of the test's own (benchmarks/redis_proc.py), ended in a
``finally`` even when the test fails; a test that needs one and finds no
``redis-server`` is skipped with a one-line reason."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.redis_proc import RedisServer


@contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(directory)
    try:
        yield server
    finally:
        server.stop()


__all__ = ["RedisServer", "redis_server"]
