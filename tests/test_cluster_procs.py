"""Three ``chathack-rendezvous --redis`` instances on one Redis, as a new
user would start them from docs/OPERATIONS.md, with real peers: one
service, whichever instance each user reaches, and what happens when an
instance or Redis dies.

Everything is on 127.0.0.1; Redis is the test's own (tests/redis_lab.py),
started with ``appendonly yes`` and ``appendfsync always``; every process
is ended by its id even when a test fails.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from tests.helpers import LineClient
from tests.procs import EXPECT_TIMEOUT, Lab, Peer, Rendezvous, lab
from tests.redis_lab import RedisServer, redis_server

pytestmark = pytest.mark.e2e

#: Seconds an instance's lease lasts in these tests (short: a dead instance is noticed soon).
LEASE = "2"


@dataclass
class Cluster:
    redis: RedisServer
    lab: Lab
    instances: dict[str, Rendezvous]
    tmp: Path

    def start(self, name: str, *extra: str) -> Rendezvous:
        server = self.lab.rendezvous(
            "--redis", self.redis.url, "--instance-id", name, "--lease", LEASE, *extra,
            db=self.tmp / f"{name}.sqlite3",
        )  # fmt: skip
        self.instances[name] = server
        return server

    def servers(self, *names: str) -> str:
        return ",".join(self.instances[n].address for n in names)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with redis_server(tmp_path / "redis") as redis, lab(tmp_path) as the_lab:
        c = Cluster(redis, the_lab, {}, tmp_path)
        for name in ("A", "B", "C"):
            c.start(name)
        yield c


def wait_online(peer: Peer, name: str, timeout: float = EXPECT_TIMEOUT) -> None:
    """Until ``peer``'s ``::users`` shows ``name`` online (presence crosses
    instances through Redis, a moment after the login)."""
    deadline = time.monotonic() + timeout
    while True:
        peer.send("::users")
        listed = peer.expect(r"\* Who do you want to talk to\? (.*)\r?\n").group(1)
        if f"{name} online" in listed:
            return
        assert time.monotonic() < deadline, f"{name} never showed online: {listed}"


def test_users_on_different_instances_see_each_other_and_chat_both_ways(
    cluster: Cluster,
) -> None:
    alice = cluster.lab.peer("alice", cluster.instances["A"]).logged_in()
    bob = cluster.lab.peer("bob", cluster.instances["B"]).logged_in()
    wait_online(alice, "bob")

    alice.send("connect: bob")
    alice.expect_line("* [bob] Talking to bob (relayed)")
    bob.expect_line(
        "* [alice] alice opened a conversation with you (relayed): ::switch alice to answer"
    )
    bob.send("::switch alice")
    bob.expect(r"\* \[alice\] Talking to alice \((relayed|direct)\)")
    alice.send("hello from instance A")
    bob.expect_line("alice: hello from instance A")
    bob.send("and hello from instance B")
    alice.expect_line("bob: and hello from instance B")


def test_a_peer_whose_instance_is_killed_carries_on_through_the_next(cluster: Cluster) -> None:
    # alice talks through the relay only, so every line she sends crosses instances.
    alice = cluster.lab.peer(
        "alice", cluster.servers("A", "B"), extra=("--relay-only",)
    ).logged_in()
    bob = cluster.lab.peer("bob", cluster.instances["C"]).logged_in()
    wait_online(alice, "bob")
    alice.send("connect: bob")
    alice.expect_line("* [bob] Talking to bob (relayed)")
    bob.expect_line(
        "* [alice] alice opened a conversation with you (relayed): ::switch alice to answer"
    )
    bob.send("::switch alice")
    bob.expect_line("* [alice] Talking to alice (relayed)")
    for i in range(3):
        alice.send(f"before {i}")
    for i in range(3):
        bob.expect_line(f"alice: before {i}")

    cluster.instances["A"].stop(signal.SIGKILL)
    for i in range(3):
        alice.send(f"during {i}")
    alice.expect(rf"Reconnected to the rendezvous at 127\.0\.0\.1:{cluster.instances['B'].port}")
    for i in range(3):
        bob.expect_line(f"alice: during {i}", timeout=30)
    bob.send("after the failover")
    alice.expect_line("bob: after the failover")
    alice.send("::quit")
    alice.wait()
    bob.expect(r"alice went offline|alice ended")
    for i in range(3):
        assert bob.transcript.getvalue().count(f"alice: during {i}\n") == 1
        assert bob.transcript.getvalue().count(f"alice: before {i}\n") == 1


async def _register(port: int, name: str, password: str) -> str:
    """Register over a raw connection; the server's answer to the password."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        client = LineClient(stream, deadline=EXPECT_TIMEOUT)
        await client.expect("USERNAME")
        await client.send_line(f"username: {name}")
        await client.expect("PASSWORD")
        await client.send_line(f"password: {password}")
        while True:
            line = await client.read_line()
            assert line is not None
            if line.startswith(("Servidor[OK]", "Servidor[ERROR]")):
                return line


def test_a_name_registered_at_once_on_two_instances_exists_once(cluster: Cluster) -> None:
    ports = [cluster.instances[n].port for n in ("A", "B")]

    async def race(name: str) -> list[str]:
        answers: list[str] = []

        async def one(port: int, password: str) -> None:
            answers.append(await _register(port, name, password))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, ports[0], "password-from-a")
            nursery.start_soon(one, ports[1], "password-from-b")
        return answers

    for n in range(4):
        answers = trio.run(race, f"zoe{n}")
        won = [a for a in answers if a.startswith("Servidor[OK]: Registered")]
        lost = [a for a in answers if "was registered a moment ago" in a]
        assert len(won) == 1 and len(lost) == 1, answers


def test_a_redis_crash_loses_nothing_acknowledged_and_the_service_recovers(
    cluster: Cluster,
) -> None:
    dave = cluster.lab.peer("dave", cluster.instances["C"]).logged_in()  # registers his key
    dave.send("::quit")
    assert dave.wait() == 0
    alice = cluster.lab.peer("alice", cluster.instances["A"]).logged_in()
    cluster.lab.peer("bob", cluster.instances["B"]).logged_in()
    wait_online(alice, "bob")
    alice.send("connect: dave")
    alice.expect(r"dave is offline: what you type is kept for dave on the server")
    for i in range(3):
        alice.send(f"kept through the crash {i}")
    for _ in range(3):
        alice.expect(r"\* \[dave\] stored: message \S+")

    cluster.redis.kill(signal.SIGKILL)
    cluster.redis.start()  # same port, same directory: its append-only file
    # The accounts registered before the crash are there, on every instance.
    answer = trio.run(_register, cluster.instances["C"].port, "alice", "not-alices-password")
    assert "Wrong password for alice" in answer
    # So is the mail STORED before it, delivered through another instance.
    dave = cluster.lab.peer("dave", cluster.instances["B"])
    for i in range(3):
        dave.expect_line(f"alice: kept through the crash {i}")
    # Presence was in Redis too: the instances put it back by themselves.
    carol = cluster.lab.peer("carol", cluster.instances["C"]).logged_in()
    wait_online(carol, "alice", timeout=30)
    wait_online(carol, "bob", timeout=30)
    carol.send("connect: alice")
    carol.expect_line("* [alice] Talking to alice (relayed)")
    alice.expect(r"carol opened a conversation with you")


def test_without_redis_logins_are_refused_and_local_talk_goes_on(cluster: Cluster) -> None:
    long_lease = cluster.start("D", "--lease", "60")  # outlives the outage below
    alice = cluster.lab.peer("alice", long_lease, extra=("--relay-only",)).logged_in()
    bob = cluster.lab.peer("bob", long_lease).logged_in()
    alice.send("connect: bob")
    alice.expect_line("* [bob] Talking to bob (relayed)")
    # Only once the conversation reached bob can he switch to it.
    bob.expect(r"\* \[alice\] alice opened a conversation with you")
    bob.send("::switch alice")
    bob.expect_line("* [alice] Talking to alice (relayed)")

    cluster.redis.kill(signal.SIGKILL)
    answer = trio.run(_register_or_bye, long_lease.port, "newcomer")
    assert re.search(r"BYE.*cannot reach the store it shares", answer), answer
    alice.send("redis is down")
    bob.expect_line("alice: redis is down")  # same instance: served without Redis

    cluster.redis.start()
    deadline = time.monotonic() + EXPECT_TIMEOUT
    while "Registered" not in (answer := trio.run(_register_or_bye, long_lease.port, "late")):
        assert time.monotonic() < deadline, answer


async def _register_or_bye(port: int, name: str) -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        client = LineClient(stream, deadline=EXPECT_TIMEOUT)
        await client.expect("USERNAME")
        await client.send_line(f"username: {name}")
        line = await client.read_line()
        if line is not None and line.startswith("Servidor[PASSWORD]"):
            await client.send_line("password: a-long-enough-password")
            while line is not None and not line.startswith(
                ("Servidor[OK]", "Servidor[ERROR]", "Servidor[BYE]")
            ):
                line = await client.read_line()
        return line or "(closed)"


def test_mail_stored_through_one_instance_is_delivered_through_another(cluster: Cluster) -> None:
    bob = cluster.lab.peer("bob", cluster.instances["B"]).logged_in()  # registers his key
    bob.send("::quit")
    assert bob.wait() == 0

    alice = cluster.lab.peer("alice", cluster.instances["A"]).logged_in()
    alice.send("connect: bob")
    alice.expect(r"bob is offline: what you type is kept for bob on the server")
    for i in range(5):
        alice.send(f"waiting {i}")
    for _ in range(5):
        alice.expect(r"\* \[bob\] stored: message \S+")

    bob = cluster.lab.peer("bob", cluster.instances["C"])  # another instance
    for i in range(5):
        bob.expect_line(f"alice: waiting {i}")
    alice.expect(r"\* \[bob\] delivered: message \S+")  # the receipt crossed back to A
    bob.send("::quit")
    assert bob.wait() == 0
    bob = cluster.lab.peer("bob", cluster.instances["A"]).logged_in()
    bob.send("::quit")
    assert bob.wait() == 0
    for i in range(5):
        assert bob.transcript.getvalue().count(f"alice: waiting {i}\n") == 0  # not again


def test_an_instance_that_cannot_renew_its_lease_closes_its_sessions_then_recovers(
    cluster: Cluster,
) -> None:
    alice = cluster.lab.peer("alice", cluster.instances["A"]).logged_in()
    cluster.redis.kill(signal.SIGKILL)
    # Past its lease another instance might have taken alice over: A lets go.
    alice.expect(r"Lost the rendezvous; reconnecting")
    cluster.redis.start()
    alice.expect(r"Reconnected to the rendezvous", timeout=40)
    alice.send("::users")
    alice.expect(r"\* Who do you want to talk to\? alice online")


def test_a_message_to_a_user_whose_instance_died_is_kept_not_lost(cluster: Cluster) -> None:
    alice = cluster.lab.peer("alice", cluster.instances["A"], extra=("--relay-only",)).logged_in()
    bob = cluster.lab.peer("bob", cluster.instances["B"], extra=("--relay-only",)).logged_in()
    wait_online(alice, "bob")
    alice.send("connect: bob")
    alice.expect_line("* [bob] Talking to bob (relayed)")
    bob.expect(r"alice opened a conversation with you")
    bob.send("::switch alice")
    alice.send("first")
    bob.expect_line("alice: first")

    cluster.instances["B"].stop(signal.SIGKILL)
    bob.stop()
    alice.send("while bob's server is gone")
    alice.expect(r"bob went offline|kept for bob on the server", timeout=30)
    bob = cluster.lab.peer("bob", cluster.instances["C"], extra=("--relay-only",))
    bob.expect_line("alice: while bob's server is gone", timeout=30)


def test_a_login_on_another_instance_ends_the_first_session(cluster: Cluster) -> None:
    first = cluster.lab.peer("alice", cluster.instances["A"]).logged_in()
    bob = cluster.lab.peer("bob", cluster.instances["C"]).logged_in()
    wait_online(bob, "alice")
    second = cluster.lab.peer("alice", cluster.instances["B"]).logged_in()
    first.expect(r"logged in elsewhere|You logged in again")  # the kick crossed instances
    second.send("::users")
    second.expect(r"\* Who do you want to talk to\? .*alice online")
    bob.send("connect: alice")
    bob.expect(r"Talking to alice")
    second.expect(r"bob opened a conversation with you")  # the new session, on B, is alice
