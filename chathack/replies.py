"""Replies of the rendezvous that say which request they answer (sans-IO).

A client may have several requests about different users in flight at once
(``connect: bob`` typed while a relayed ``msg: carol ...`` is on its way, a
background ``punch:``), and the server answers each in its own time. A reply
that only says ``Servidor[ERROR]: ...`` can then be taken for the answer to
the wrong one. So a request about a user that fails is answered with a line
that names the request, the user and a code a program can act on, in the
same shape as a refused ``mail:`` (``Servidor[REFUSED]: NAME ID CODE: REASON``)::

    Servidor[FAILED]: connect ghost unknown: There is no user named ghost: ...
    Servidor[FAILED]: msg bob offline: bob is offline: try again when ...
    Servidor[FAILED]: punch erin not-peer: erin cannot take part in hole punching

``ERROR`` stays for lines that were malformed (nothing to correlate) and for
requests that are not about a user.
"""

from __future__ import annotations

from dataclasses import dataclass

from chathack.errors import RemoteProtocolError
from chathack.protocol import NAME_RE

#: The flag of a :class:`Failed` line.
FAILED_FLAG = "FAILED"
#: The requests a FAILED line may answer (the client's keyword).
FAILED_REQUESTS = ("connect", "msg", "punch", "prekey")
#: Why: no such account; not online now; the user named themselves; the user
#: cannot take part (a plain client asked to punch).
FAILURE_CODES = ("unknown", "offline", "self", "not-peer", "not-invited")


@dataclass(frozen=True, slots=True)
class Failed:
    """``Servidor[FAILED]: REQUEST NAME CODE: REASON`` -- ``REQUEST: NAME ...`` failed."""

    request: str  # one of FAILED_REQUESTS
    name: str
    code: str  # one of FAILURE_CODES
    reason: str  # for a person


def format_failed(failed: Failed) -> str:
    """The text of the ``Servidor[FAILED]`` line."""
    return f"{failed.request} {failed.name} {failed.code}: {failed.reason}"


def parse_failed(text: str) -> Failed:
    """The payload of a ``Servidor[FAILED]`` line, or raise."""
    words = text.split(" ", 3)
    if (
        len(words) < 3
        or words[0] not in FAILED_REQUESTS
        or not NAME_RE.fullmatch(words[1])
        or not words[2].endswith(":")
        or words[2][:-1] not in FAILURE_CODES
    ):
        raise RemoteProtocolError(f"Malformed FAILED line {text[:80]!r}")
    return Failed(words[0], words[1], words[2][:-1], words[3] if len(words) > 3 else "")


class RequestFailed(RemoteProtocolError):
    """Raised by the server's domain for a request about a user that failed;
    the I/O layer answers it with a FAILED line rather than an ERROR."""

    def __init__(self, failed: Failed) -> None:
        super().__init__(failed.reason)
        self.failed = failed
