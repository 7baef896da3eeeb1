"""Errors of the shared protocol core.

Two kinds, as in h11: :class:`LocalProtocolError` is our own misuse of an
API; :class:`RemoteProtocolError` is bad input from the other side, and its
message is written to be shown to (or sent back to) a person.
"""

from __future__ import annotations


class ChathackError(Exception):
    """Base of every chathack error; its message tells the user what to do next."""


class LocalProtocolError(ChathackError):
    """This program tried something the protocol forbids: a bug, please report it."""


class RemoteProtocolError(ChathackError):
    """The other side sent something invalid; the message says what, and it was ignored."""


def sole_error(group: BaseExceptionGroup) -> BaseException | None:
    """The one error inside (possibly nested) ``group``, or None if there are several.

    trio nurseries wrap even a lone error in a group; a CLI wants the error itself
    to print one clear line instead of a traceback.
    """
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        e = stack.pop()
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        else:
            leaves.append(e)
    return leaves[0] if len(leaves) == 1 else None
