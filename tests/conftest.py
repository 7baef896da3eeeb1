"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import Lab, lab


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Lab]:
    """Real chathack processes on 127.0.0.1 for one test, all ended afterwards."""
    with lab(tmp_path) as the_lab:
        yield the_lab
