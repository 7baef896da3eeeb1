"""``chathack-rendezvous`` for bulk-login scenarios: the same CLI and server,
with cheap argon2 parameters.

    python -m benchmarks.bench_rendezvous --cheap-argon2 -- --host ... --port ... --db ...

Why: one argon2 verify with the default parameters (RFC 9106 low-memory:
t=3, 64 MiB, p=4) costs 100-300 ms of CPU on this 2-core machine, so logging
in 10,000 idle peers (or 2,000 relay clients) would take most of an hour and
measure argon2, not the rendezvous. The idle and relay scenarios therefore
run the real server with ``rendezvous.passwords.fast_hasher()`` and accounts
whose stored hash uses the same cheap parameters (so nothing is rehashed);
the ``logins`` scenario measures logins with the default parameters, on the
unmodified ``chathack-rendezvous`` console script. Without ``--cheap-argon2``
this is exactly ``rendezvous.cli.main`` (useful under cProfile).
"""

from __future__ import annotations

import sys


def main() -> int:
    args = sys.argv[1:]
    cheap = "--cheap-argon2" in args
    if "--" in args:
        args = args[args.index("--") + 1 :]
    from rendezvous import cli, server
    from rendezvous.passwords import Passwords, fast_hasher

    if cheap:
        # Server() builds Passwords() when given none; cli.main gives none.
        server.Passwords = lambda: Passwords(fast_hasher())  # type: ignore[misc,assignment]
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
