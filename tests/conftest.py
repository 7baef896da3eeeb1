"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import Lab, lab
from tests.redis_lab import RedisServer, redis_server


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Lab]:
    """Real chathack processes on 127.0.0.1 for one test, all ended afterwards."""
    with lab(tmp_path) as the_lab:
        yield the_lab


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of the module's own (tests/redis_lab.py); each test empties it."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server
