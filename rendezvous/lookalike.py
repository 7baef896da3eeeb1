"""Names that read alike: ``aIice``, ``a1ice``, ``alice.`` and ``alice``.

A user chooses whom to talk to by reading a name; a newcomer registering a
name that reads like someone else's could pass for them in a conversation
list. :func:`skeleton` maps a name to what it looks like (case folded,
look-alike letters and digits merged, separators at the ends and runs of them
ignored); registration refuses a name whose skeleton an existing account
already has (rendezvous/login.py). Sans-IO.
"""

from __future__ import annotations

import re

#: Characters a reader takes for another, in a name's alphabet (A-Z a-z 0-9 _ . -),
#: after lower-casing: each maps to the one it is taken for.
_ALIKE = str.maketrans({"0": "o", "1": "l", "i": "l", "|": "l", "5": "s", "2": "z", "8": "b"})
#: Letter pairs that read as one letter.
_PAIRS = (("rn", "m"), ("vv", "w"), ("cl", "d"))
_SEPARATORS = re.compile(r"[._-]+")


def skeleton(name: str) -> str:
    """What ``name`` looks like: equal skeletons, easily mistaken names."""
    shape = name.lower().translate(_ALIKE)
    for pair, one in _PAIRS:
        shape = shape.replace(pair, one)
    return _SEPARATORS.sub("", shape) or name.lower()
