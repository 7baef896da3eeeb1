"""Bugs the harnesses found that are not fixed yet, each with its reproducer.

A fuzz run skips an exception that matches one of these (so that it goes
on looking for new ones); ``tests/test_fuzz.py`` replays each reproducer
and expects it to fail (``xfail(strict=True)``): when the fix lands the
test says so, and the entry is deleted here. Match on what is stable: the
exception type, where it was raised in the project (file and function), and
a piece of its message.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The project's own code (not .venv/, which lives in the same tree).
PACKAGES = ("chathack", "rendezvous", "peer", "tests")


@dataclass(frozen=True, slots=True)
class KnownBug:
    #: ``harness/file`` in tests/fuzz/corpus/ that shows the bug.
    reproducer: str
    #: Type names of the exception (one bug may surface as several).
    errors: tuple[str, ...]
    #: ``path/to/file.py:function`` of the innermost project frame that raised it.
    where: str
    #: A piece of its message.
    message: str
    #: What is wrong, and where the fix belongs.
    what: str


#: None open today: every bug the harnesses found is fixed, its reproducer kept
#: in the corpus (replayed by tests/test_fuzz.py).
KNOWN: tuple[KnownBug, ...] = ()


def where(exc: BaseException) -> str:
    """``path:function`` of the innermost frame of ``exc`` that is project code."""
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(ROOT) and path.relative_to(ROOT).parts[0] in PACKAGES:
            found = f"{path.relative_to(ROOT).as_posix()}:{frame.name}"
    return found


def known_bug(exc: BaseException) -> KnownBug | None:
    """The known bug ``exc`` shows, if it is one."""
    place, message = where(exc), str(exc)
    for bug in KNOWN:
        if (
            type(exc).__name__ in bug.errors
            and place.startswith(bug.where)
            and bug.message in message
        ):
            return bug
    return None
