"""A large file across two NATs, for real: the peers behind the namespace lab's
two port-keeping NATs (:mod:`tests.netlab`) send each other 100 MB over the
punched path, the receiver is killed in the middle and resumes from what it
holds, and the progress line shows throughout. Needs root, iproute2 (tc)
and iptables; elsewhere it skips with the reason.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from tests.netlab import lab_available
from tests.procs import Peer
from tests.test_nat import World, talk
from tests.test_nat import world as world  # the lab's World, built and torn down per test

REASON = lab_available()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.lab]

SIZE = 100_000_000
#: What a1 sends, in Mbit/s: 100 MB take ~5 s, time enough to kill b1 midway.
UPLINK_MBIT = 160
#: Seconds for 100 MB at that rate, plus finding the punched path again.
TRANSFER_TIMEOUT = 90


def big_file(path: Path) -> str:
    """A file of SIZE random bytes at ``path``; its SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(SIZE // 10_000_000):
            block = os.urandom(10_000_000)
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def progress(peer: Peer, partner: str, path: str, timeout: float) -> int:
    """Wait for a progress line of transfer 1 on ``path``; its percentage."""
    match = peer.expect(
        rf"transfer 1 (from|to) {partner}: big\.bin \[#*-*\] (\d+)% [^\n]* {path}", timeout
    )
    return int(match.group(2))


def test_100_mb_each_way_over_the_punched_path_resumed_after_a_kill(
    world: World, tmp_path: Path
) -> None:
    # Files never take the relay here: only the punched path can carry them.
    a1, b1 = world.peer("a1", "--no-file-relay"), world.peer("b1", "--no-file-relay")
    talk(a1, b1, "punched")
    world.lab.limit_rate("a1", UPLINK_MBIT)
    out_a = tmp_path / "out-a1"
    out_a.mkdir()
    want = big_file(out_a / "big.bin")
    inbox_b = tmp_path / "inbox-b1"
    inbox_b.mkdir()

    a1.send(f"::send {out_a / 'big.bin'}")
    b1.expect(r"transfer 1: a1 offers big\.bin \(100\.0 MB")
    b1.send(f"::accept {inbox_b}")
    seen = [progress(b1, "a1", "punched", TRANSFER_TIMEOUT)]
    while seen[-1] < 10:  # killed once it holds a good part of the file
        seen.append(progress(b1, "a1", "punched", TRANSFER_TIMEOUT))
    b1.stop()  # SIGKILL, in the middle of the transfer
    [part] = list(inbox_b.glob(".chathack-*.part"))
    held = part.stat().st_size
    assert 0 < held < SIZE

    b1 = world.peer("b1", "--no-file-relay")  # the same data folder: it resumes
    after = progress(b1, "a1", "punched", TRANSFER_TIMEOUT)
    assert after >= held * 100 // SIZE - 1, "the transfer started again from zero"
    b1.expect(
        rf"transfer 1: saved {re.escape(str(inbox_b / 'big.bin'))} \(100\.0 MB from a1, "
        r"SHA-256 verified\)",
        TRANSFER_TIMEOUT,
    )
    a1.expect(r"transfer 1: b1 saved big\.bin \(100\.0 MB, SHA-256 verified\)", TRANSFER_TIMEOUT)
    assert sha256(inbox_b / "big.bin") == want
    assert not part.exists()

    # And back: b1 sends a1 a file of its own over the same punched path.
    out_b = tmp_path / "out-b1"
    out_b.mkdir()
    back = big_file(out_b / "big.bin")
    inbox_a = tmp_path / "inbox-a1"
    inbox_a.mkdir()
    b1.send("::switch a1")
    b1.send(f"::send {out_b / 'big.bin'}")
    a1.expect(r"transfer 2: b1 offers big\.bin \(100\.0 MB")
    a1.send(f"::accept {inbox_a}")
    a1.expect(r"transfer 2: saved .*big\.bin \(100\.0 MB from b1, SHA-256 verified\)", 60)
    assert sha256(inbox_a / "big.bin") == back
