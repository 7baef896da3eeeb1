"""Run one harness under atheris (libFuzzer), coverage-guided.

    python -m tests.fuzz.worker NAME [--strict] [libFuzzer flags] [CORPUS_DIR ...]

Every libFuzzer flag works (``-runs=``, ``-seed=``, ``-max_total_time=``,
``-artifact_prefix=``, ``-merge=1``; ``-help=1`` lists them); a file
instead of a directory is replayed. The project's packages are imported
under atheris's instrumentation, so libFuzzer sees their coverage.

Known bugs (tests/fuzz/known.py) are skipped so that a run goes on looking
for new ones; ``--strict`` stops at them too (to replay one).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    import atheris

    if len(argv) < 2 or argv[1].startswith("-"):
        sys.exit(__doc__)
    name, rest = argv[1], argv[2:]
    strict = "--strict" in rest
    rest = [a for a in rest if a != "--strict"]
    # str.startswith/endswith comparisons feed libFuzzer too: it then finds
    # "::" or "#ch1:" without guessing them byte by byte. (Not the "RegEx"
    # hook: its pattern proxy breaks json's ``pattern.match(s, pos)`` calls.)
    atheris.enabled_hooks.add("str")
    with atheris.instrument_imports(include=["chathack", "rendezvous", "peer"]):
        from tests.fuzz.harnesses import HARNESSES
        from tests.fuzz.known import known_bug

    if name not in HARNESSES:
        sys.exit(f"no harness {name!r}; there are: {', '.join(HARNESSES)}")
    harness = HARNESSES[name]

    seen: set[str] = set()

    def one_input(data: bytes) -> None:
        try:
            harness(data)
        except Exception as exc:
            bug = None if strict else known_bug(exc)
            if bug is None:
                raise
            if bug.reproducer not in seen:  # once per bug: the campaign counts these
                seen.add(bug.reproducer)
                print(f"KNOWN-BUG: {bug.reproducer}", file=sys.stderr, flush=True)

    atheris.Setup([argv[0], *rest], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
