"""Password hashing with argon2id, off the event loop.

argon2 is deliberately slow (tens of milliseconds and 64 MiB per hash with
the library's RFC 9106 low-memory defaults), so it runs in worker threads,
at most ``workers`` at a time, and a login never stalls other clients.
"""

from __future__ import annotations

import trio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

#: Shortest password accepted when registering.
MIN_PASSWORD_CHARS = 4


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None, workers: int = 2) -> None:
        self.hasher = hasher or PasswordHasher()
        self.limiter = trio.CapacityLimiter(workers)

    async def hash(self, secret: str) -> str:
        return await trio.to_thread.run_sync(self.hasher.hash, secret, limiter=self.limiter)

    async def verify(self, pw_hash: str, secret: str) -> tuple[bool, str | None]:
        """Whether ``secret`` matches; and a fresh hash if the parameters changed."""

        def work() -> tuple[bool, str | None]:
            try:
                self.hasher.verify(pw_hash, secret)
            except (VerificationError, InvalidHashError):
                return False, None
            if self.hasher.check_needs_rehash(pw_hash):
                return True, self.hasher.hash(secret)
            return True, None

        return await trio.to_thread.run_sync(work, limiter=self.limiter)


def fast_hasher() -> PasswordHasher:
    """Cheap parameters, for tests and benchmarks only (never for real accounts)."""
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
