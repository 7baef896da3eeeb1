"""End to end: a real rendezvous and real peers, as processes, on 127.0.0.1.

Peers run in plain mode (their stdin is a pipe), so what they print is exactly
what a script piping chathack would see.
"""

from __future__ import annotations

import socket

import pytest

from tests.procs import Lab

pytestmark = pytest.mark.e2e


def test_two_peers_chat_both_ways_over_a_direct_link(world: Lab) -> None:
    server = world.rendezvous()
    alice = world.peer("alice", server).logged_in()
    bob = world.peer("bob", server).logged_in()

    alice.send("connect: bob")
    # It opens on the relay: bob did not ask to talk to alice, so the
    # rendezvous keeps where he is from her. bob's peer dials alice once her
    # key checked out over the relay.
    alice.expect_line("* [bob] Talking to bob (relayed)")
    bob.expect_line(
        "* [alice] alice opened a conversation with you (relayed): ::switch alice to answer"
    )
    alice.expect_line("* [bob] Now talking to bob directly (direct)")
    bob.expect_line("* [alice] Now talking to alice directly (direct)")
    bob.send("::switch alice")
    bob.expect_line("* [alice] Talking to alice (direct)")

    alice.send("hello bob, from alice")
    bob.expect_line("alice: hello bob, from alice")
    bob.send("hi alice — ça va? 👋")
    alice.expect_line("bob: hi alice — ça va? 👋")

    # Several lines in a row arrive once each, in order.
    for i in range(5):
        alice.send(f"line {i}")
    for i in range(5):
        bob.expect_line(f"alice: line {i}")
    bob.send("::quit")
    assert bob.wait() == 0
    assert "alice: line" not in bob.output  # nothing shown after the last expected line


def test_relay_is_used_and_announced_when_the_direct_dial_fails(world: Lab) -> None:
    server = world.rendezvous()
    alice = world.peer("alice", server).logged_in()
    # bob opens no direct links: the conversation goes through the relay.
    bob = world.peer("bob", server, extra=("--relay-only",)).logged_in()

    alice.send("connect: bob")
    alice.expect_line("* [bob] Talking to bob (relayed)")
    bob.expect_line(
        "* [alice] alice opened a conversation with you (relayed): ::switch alice to answer"
    )
    bob.send("::switch alice")
    bob.expect_line("* [alice] Talking to alice (relayed)")

    alice.send("through the server")
    bob.expect_line("alice: through the server")
    bob.send("and back")
    alice.expect_line("bob: and back")


def test_end_tells_both_sides_and_quit_exits_zero(world: Lab) -> None:
    server = world.rendezvous()
    alice = world.peer("alice", server).logged_in()
    bob = world.peer("bob", server).logged_in()
    alice.send("connect: bob")
    bob.expect_line("* [alice] Now talking to alice directly (direct)")
    bob.send("::switch alice")
    bob.expect_line("* [alice] Talking to alice (direct)")

    bob.send("::end")
    bob.expect_line("* [alice] Conversation with alice ended")
    alice.expect_line("* [bob] bob ended the conversation")
    alice.send("anyone there?")
    alice.expect(r"You are not in a conversation")

    alice.send("::quit")
    bob.send("::quit")
    assert alice.wait() == 0
    assert bob.wait() == 0


def test_accounts_survive_a_restart_and_a_wrong_password_is_refused(world: Lab) -> None:
    db = world.tmp / "accounts.sqlite3"
    first = world.rendezvous(db=db)
    carol = world.peer("carol", first, password="right-horse").logged_in()
    carol.send("::quit")
    assert carol.wait() == 0
    assert first.stop() == 0

    second = world.rendezvous(db=db)
    intruder = world.peer("carol", second, password="wrong-horse")
    assert intruder.wait() == 2
    assert "Wrong password for carol" in intruder.output

    carol_again = world.peer("carol", second, password="right-horse")
    carol_again.expect(r"Logged in as carol")
    carol_again.expect(r"Who do you want to talk to\? carol online")


def test_users_menu_and_errors_for_unknown_or_offline_users(world: Lab) -> None:
    server = world.rendezvous()
    dave = world.peer("dave", server).logged_in()
    erin = world.peer("erin", server).logged_in()
    erin.send("::quit")
    assert erin.wait() == 0

    dave.send("::users")
    dave.expect_line("* Who do you want to talk to? dave online, erin offline")
    dave.send("connect: nobody")
    dave.expect(r"\* \[nobody\] error: There is no user named nobody")  # the program's own words
    dave.send("connect: erin")
    dave.expect(r"erin is offline: what you type is kept for erin on the server")
    dave.send("::frobnicate")
    dave.expect(r"Unknown command ::frobnicate")


def test_a_raw_line_client_and_a_peer_talk_through_the_relay(world: Lab) -> None:
    """The protocol is plain text: a person with nc can talk to a peer."""
    server = world.rendezvous()
    fred = world.peer("fred", server).logged_in()
    with socket.create_connection((server.host, server.port), timeout=10) as raw:
        f = raw.makefile("rw", encoding="utf-8", newline="\n")

        def read_until(prefix: str) -> str:
            while True:
                line = f.readline()
                assert line, f"connection closed before {prefix!r}"
                if line.startswith(prefix):
                    return line.rstrip("\n")

        read_until("Servidor[USERNAME]")
        f.write("username: gina\n")
        f.flush()
        read_until("Servidor[PASSWORD]")
        f.write("password: gina-secret\n")
        f.flush()
        read_until("Servidor[OK]")
        f.write("connect: fred\n")
        f.flush()
        # fred, a chathack peer, did not call gina: his addresses stay his.
        assert read_until("Servidor[PEER]").startswith("Servidor[PEER]: fred - key=")
        f.write("hello from a plain socket\n")
        f.flush()
        fred.expect_line("gina: hello from a plain socket")
        # A line that arrives does not choose for fred, and gina's client is not
        # a chathack peer: fred says so himself to talk to her unencrypted.
        fred.send("connect: gina")
        fred.expect("Talking to gina UNENCRYPTED")
        fred.send("hello gina")
        assert read_until("fred:") == "fred: hello gina"


def test_terminal_ui_keeps_the_half_typed_line_when_a_message_arrives(world: Lab) -> None:
    """Real processes: bob in a pseudo-terminal, alice in plain mode."""
    import os

    import pexpect

    from tests.procs import command
    from tests.ptys import wait_for, wait_for_text

    server = world.rendezvous()
    alice = world.peer("alice", server).logged_in()
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env |= {"TERM": "xterm-256color", "CHATHACK_PASSWORD": "bob-pw-secret"}
    bob = pexpect.spawn(
        command("chathack-peer"),
        [
            "bob",
            "--ui",
            "line",
            "--server",
            server.address,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(world.tmp / "bob-tty"),
        ],
        env=env,
        dimensions=(24, 80),
        timeout=15,
        encoding="utf-8",
    )
    bob.delaybeforesend = None
    try:
        wait_for_text(bob, "bob · no conversation")  # the toolbar: the prompt is up
        alice.send("connect: bob")
        wait_for_text(bob, "alice opened a conversation with you")
        bob.send("::switch alice\r")
        wait_for_text(bob, "bob → alice · direct")
        bob.send("hel")
        wait_for_text(bob, "hel")
        alice.send("a message while bob types")
        wait_for_text(bob, "alice: a message while bob types")
        bob.send("lo there\r")
        alice.expect_line("bob: hello there")
        bob.sendcontrol("d")
        wait_for(bob, pexpect.EOF)
        bob.close()
        assert bob.exitstatus == 0
    finally:
        bob.close(force=True)


def test_the_password_is_asked_on_the_terminal_confirmed_and_retried(world: Lab) -> None:
    """No $CHATHACK_PASSWORD: the peer asks without echo (twice for a new user),
    and a wrong password may be typed again."""
    import os

    import pexpect

    from tests.procs import command
    from tests.ptys import wait_for, wait_for_text

    server = world.rendezvous()
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.pop("CHATHACK_PASSWORD", None)
    env["TERM"] = "xterm-256color"

    def spawn() -> pexpect.spawn:
        child = pexpect.spawn(
            command("chathack-peer"),
            [
                "zed",
                "--ui",
                "line",
                "--server",
                server.address,
                "--data-dir",
                str(world.tmp / "zed"),
            ],
            env=env,
            dimensions=(24, 80),
            timeout=15,
            encoding="utf-8",
        )
        child.delaybeforesend = None
        return child

    first = spawn()
    try:
        first.expect("New user zed: choose a password to register: ")
        first.sendline("s3cret-password")
        first.expect("Type it again to confirm: ")
        first.sendline("s3cret-password")
        wait_for_text(first, "zed · no conversation")
        first.sendcontrol("d")
        wait_for(first, pexpect.EOF)
    finally:
        first.close(force=True)
    again = spawn()
    try:
        again.expect("Password for zed: ")
        again.sendline("not-it")
        # The reason on its own line, then the question.
        again.expect("Wrong password for zed\r?\nPassword for zed: ")
        again.sendline("s3cret-password")
        wait_for_text(again, "zed · no conversation")
        again.sendcontrol("d")
        wait_for(again, pexpect.EOF)
        again.close()
        assert again.exitstatus == 0
    finally:
        again.close(force=True)
    wrong = spawn()
    try:
        for _ in range(3):
            wrong.expect("Password for zed: ")
            wrong.sendline("still-not-it")
        # Three wrong: one clean line that says what happened and what to do.
        wrong.expect(
            r"\r?\nchathack-peer: Wrong password for zed \(3 tries\): "
            r"start chathack-peer again to retry\r?\n"
        )
        wait_for(wrong, pexpect.EOF)
        assert "Password for zed" not in (wrong.before or "")  # nothing asked after
        wrong.close()
        assert wrong.exitstatus == 2
    finally:
        wrong.close(force=True)


def test_a_peer_given_several_servers_logs_in_on_the_first_that_answers(world: Lab) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    server = world.rendezvous()
    alice = world.peer("alice", f"{dead},{server.address}").logged_in()
    alice.send("::users")
    alice.expect_line("* Who do you want to talk to? alice online")
    assert f"Logged in as alice at {server.address}" in alice.transcript.getvalue()


def test_the_server_list_is_checked_before_anything_starts() -> None:
    import argparse

    from peer.cli import host_ports

    assert host_ports("a.example:7777, 127.0.0.1:7778,[2001:db8::1]:9", 7777) == [
        ("a.example", 7777),
        ("127.0.0.1", 7778),
        ("2001:db8::1", 9),
    ]
    assert host_ports("solo", 7777) == [("solo", 7777)]
    for bad in ("a:1,,b:2", "a:1,", "a:notaport"):
        with pytest.raises(argparse.ArgumentTypeError):
            host_ports(bad, 7777)
