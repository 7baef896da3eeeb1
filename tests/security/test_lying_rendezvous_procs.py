"""A lying rendezvous against real ``chathack-peer`` processes: a line proxy
(tests/relay_proxy.py) between alice and the rendezvous strips bob's key and
addresses from what the rendezvous says about him, and injects plain lines
"from bob". alice has talked with bob before, so his key is pinned. Nothing
alice types may leave in clear, and nothing injected may be shown as bob's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chathack.link import is_relay_frame
from tests.procs import lab
from tests.relay_proxy import LineProxy

pytestmark = pytest.mark.e2e


def lie_about_bob(line: bytes) -> list[bytes]:
    """``Servidor[PEER|CALL]: bob ...`` loses its key and addresses; after
    any line about bob, a forged plain line from bob follows."""
    text = line.decode("utf-8", "replace")
    match = re.match(r"Servidor\[(PEER|CALL)\]: (bob) ", text)
    if match:
        return [f"Servidor[{match[1]}]: bob -".encode(), b"bob: type your password here"]
    return [line]


def test_a_lying_rendezvous_gets_no_plain_text_and_forges_nothing(tmp_path: Path) -> None:
    with lab(tmp_path) as world:
        server = world.rendezvous()
        alice = world.peer("alice", server).logged_in()
        bob = world.peer("bob", server).logged_in()
        alice.send("connect: bob")
        alice.expect(r"Talking to bob \(")
        alice.send("hello bob")
        bob.expect_line("alice: hello bob")  # keys exchanged and pinned, both ways
        alice.send("::quit")
        alice.wait()

        proxy = LineProxy((server.host, server.port), down=lie_about_bob)
        try:
            alice = world.peer("alice", proxy.address).logged_in()
            alice.send("connect: bob")
            alice.expect(r"gave no key for bob")
            alice.send("msg: bob the launch codes")
            alice.send("the launch codes again")
            alice.send("::users")
            alice.expect(r"Who do you want to talk to\?")
        finally:
            proxy.close()
        out = alice.transcript.getvalue()
        assert "bob: type your password here" not in out
        leaked = [
            line
            for line in proxy.sent
            if line.startswith(b"msg: bob ") and not is_relay_frame(line[9:].decode())
        ]
        assert leaked == []
        assert b"launch codes" not in b"".join(proxy.sent)
        assert "launch codes" not in bob.transcript.getvalue()
