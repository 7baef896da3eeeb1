"""The fuzz harnesses (tests/fuzz/) in the suite: short, fixed-seed runs.

* every file of the seed corpus replays through its harness;
* every harness runs under hypothesis, derandomized, on arbitrary bytes and
  on inputs shaped like its grammar;
* every harness runs under atheris (coverage-guided libFuzzer) in a
  subprocess with a fixed ``-seed=`` and bounded runs -- where atheris
  installs (Linux x86_64, Python < 3.14);
* each known bug (tests/fuzz/known.py) still reproduces: when one is fixed
  its test fails and says to delete the entry.

A harness run tolerates the known bugs and nothing else. A longer campaign
is one command: ``python -m tests.fuzz --minutes N`` (tests/fuzz/README.md).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chathack.errors import RemoteProtocolError
from chathack.link import Chat, frame_from_bytes, relay_text_to_frame
from tests.fuzz.harnesses import HARNESSES
from tests.fuzz.known import KNOWN, KnownBug, known_bug
from tests.fuzz.strategies import SHAPED

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
CORPUS_FILES = sorted(
    (d.name, f) for d in CORPUS.iterdir() if d.is_dir() for f in d.iterdir() if f.is_file()
)
#: The committed corpus stays small: a seed set, not a campaign's output.
CORPUS_LIMIT_BYTES = 200 * 1024
#: Examples per harness and strategy under hypothesis.
HYPOTHESIS_EXAMPLES = 120
#: libFuzzer's bounds per harness: runs, and seconds as a ceiling on slow machines.
ATHERIS_RUNS = 1000
ATHERIS_SECONDS = 4
HAS_ATHERIS = importlib.util.find_spec("atheris") is not None


def run(name: str, data: bytes) -> None:
    """``data`` through harness ``name``; only a known bug may escape unraised."""
    try:
        HARNESSES[name](data)
    except Exception as exc:
        if known_bug(exc) is None:
            raise


# --------------------------------------------------------------------------
# The seed corpus
# --------------------------------------------------------------------------


def test_every_harness_has_a_seed_corpus() -> None:
    dirs = {d.name for d in CORPUS.iterdir() if d.is_dir()}
    assert dirs == set(HARNESSES)
    assert all(any((CORPUS / name).iterdir()) for name in HARNESSES)


def test_the_corpus_stays_small() -> None:
    assert sum(path.stat().st_size for _, path in CORPUS_FILES) < CORPUS_LIMIT_BYTES


@pytest.mark.parametrize(
    ("name", "path"), CORPUS_FILES, ids=[f"{n}/{p.name}" for n, p in CORPUS_FILES]
)
def test_corpus_input_replays(name: str, path: Path) -> None:
    run(name, path.read_bytes())


@pytest.mark.parametrize("bug", KNOWN, ids=[b.reproducer for b in KNOWN])
def test_known_bug_still_reproduces(bug: KnownBug) -> None:
    name, _, file = bug.reproducer.partition("/")
    try:
        HARNESSES[name]((CORPUS / name / file).read_bytes())
    except Exception as exc:
        if known_bug(exc) is bug:
            pytest.xfail(bug.what)
        raise
    pytest.fail(f"fixed: {bug.what} -- delete its entry in tests/fuzz/known.py")


# --------------------------------------------------------------------------
# Hypothesis, derandomized
# --------------------------------------------------------------------------

_SETTINGS = settings(
    derandomize=True,
    max_examples=HYPOTHESIS_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("name", HARNESSES)
def test_harness_on_arbitrary_bytes(name: str) -> None:
    @_SETTINGS
    @given(st.binary(max_size=600))
    def check(data: bytes) -> None:
        run(name, data)

    check()


@pytest.mark.parametrize("name", HARNESSES)
def test_harness_on_grammar_shaped_input(name: str) -> None:
    @_SETTINGS
    @given(SHAPED[name])
    def check(data: bytes) -> None:
        run(name, data)

    check()


# --------------------------------------------------------------------------
# Atheris: coverage-guided, fixed seed, bounded
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def atheris_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """Every harness under atheris, two at a time; ``name -> (exit code, output)``."""
    tmp = tmp_path_factory.mktemp("atheris")

    def one(name: str) -> tuple[str, tuple[int, str]]:
        work = tmp / name
        work.mkdir()
        command = [
            sys.executable,
            "-m",
            "tests.fuzz.worker",
            name,
            "-seed=1",
            f"-runs={ATHERIS_RUNS}",
            f"-max_total_time={ATHERIS_SECONDS}",
            f"-artifact_prefix={work}/",
            str(work),  # new inputs land here, never in the committed corpus
            str(CORPUS / name),
        ]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        return name, (done.returncode, done.stdout + done.stderr)

    with ThreadPoolExecutor(min(2, os.cpu_count() or 1)) as pool:
        return dict(pool.map(one, HARNESSES))


@pytest.mark.skipif(not HAS_ATHERIS, reason="atheris is not installed (Linux x86_64, Python<3.14)")
@pytest.mark.parametrize("name", HARNESSES)
def test_harness_under_atheris(name: str, atheris_runs: dict[str, tuple[int, str]]) -> None:
    code, output = atheris_runs[name]
    assert code == 0, output[-4000:]
    assert "Done " in output and " cov: " in output, output[-2000:]


# --------------------------------------------------------------------------
# Regressions: bugs the harnesses found, fixed
# --------------------------------------------------------------------------

_SURROGATE_FRAMES = [
    b'{"t":"chat","epoch":"e","seq":1,"base":1,"text":"a\\udc00","sent_at":0.0}',
    b'{"t":"chat","epoch":"\\ud800","seq":1,"base":1,"text":"a","sent_at":0.0}',
    b'{"t":"kinit","sid":"\\ud800","e":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}',
    b'{"t":"bye","reason":"x","\\udfff":1}',
]


@pytest.mark.parametrize("raw", _SURROGATE_FRAMES)
def test_a_frame_holding_a_lone_surrogate_is_malformed(raw: bytes) -> None:
    # It decoded, then crashed the peer where the text was encoded again: the
    # key exchange (UnicodeEncodeError in Handshake._t), the history, the screen.
    with pytest.raises(RemoteProtocolError, match="Malformed link frame"):
        frame_from_bytes(raw)


def test_a_relayed_frame_holding_a_lone_surrogate_is_malformed() -> None:
    import base64

    token = base64.urlsafe_b64encode(_SURROGATE_FRAMES[2]).decode().rstrip("=")
    with pytest.raises(RemoteProtocolError, match="Malformed link frame"):
        relay_text_to_frame("#ch1:" + token)


def test_escaped_text_that_is_unicode_still_decodes() -> None:
    raw = b'{"t":"chat","epoch":"e","seq":1,"base":1,"text":"\\u00e9\\ud83d\\ude00","sent_at":0.0}'
    assert frame_from_bytes(raw) == Chat("e", 1, 1, "\u00e9\U0001f600", 0.0)
