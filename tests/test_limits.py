"""The rendezvous's limits: token buckets and admission as plain objects (time
is a number), then the server enforcing them over memory streams under
``autojump_clock`` (virtual time: a 10 s rate-limit pause takes no real time),
and the command-line flags. Every wait is bounded (``LineClient`` deadlines,
in virtual seconds under the mock clock); nothing synchronises with sleep.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
import trio
import trio.testing

from chathack.errors import RemoteProtocolError
from chathack.protocol import Command, Msg, Text
from rendezvous.accounts import FailedLogins
from rendezvous.cli import build_parser
from rendezvous.limit_flags import limits_from_args, mail_limits_from_args
from rendezvous.limits import Admission, ConnectionRates, Limits, source_key
from rendezvous.mailbox import MailLimits
from rendezvous.ratelimit import KeyedBuckets, TokenBucket
from rendezvous.server import Server
from rendezvous.store import SqliteStore
from tests.helpers import DEADLINE, LineClient
from tests.test_server import InstantPasswords, make_server, running

# --------------------------------------------------------------------------
# Token buckets (sans-IO)
# --------------------------------------------------------------------------


def test_a_bucket_allows_its_burst_then_one_token_per_interval() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=100)
    assert [bucket.take(100) for _ in range(3)] == [0, 0, 0]
    assert bucket.take(100) == pytest.approx(0.5)  # one token takes 1/rate seconds
    assert bucket.take(100.5) == pytest.approx(0.5)  # the first reservation used that one
    assert bucket.take(101.5) == 0
    assert bucket.tokens(1000) == 3  # refills to the burst, never beyond


def test_reservations_queue_up_in_order() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=0)
    # Three callers at the same instant are spread one second apart.
    assert [bucket.take(0) for _ in range(3)] == [0, 1, 2]
    assert bucket.tokens(0) == -2
    assert bucket.take(5) == 0


def test_rate_zero_is_unlimited() -> None:
    bucket = TokenBucket(rate=0, burst=1)
    assert all(bucket.take(0) == 0 for _ in range(10_000))
    assert bucket.is_full(0)


def test_a_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=-1, burst=1)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0)


def test_keyed_buckets_are_independent_per_key() -> None:
    buckets = KeyedBuckets(rate=1 / 60, burst=2)
    assert buckets.take("a", 0) == 0
    assert buckets.take("a", 0) == 0
    assert buckets.take("a", 0) == pytest.approx(60)
    assert buckets.take("b", 0) == 0


def test_keyed_buckets_stay_bounded_and_forget_full_buckets_first() -> None:
    buckets = KeyedBuckets(rate=1, burst=1, max_keys=100)
    for i in range(100):
        buckets.take(f"idle-{i}", 0)
    buckets.take("busy", 50)
    buckets.take("busy", 50)  # in debt at t=50
    for i in range(10_000):
        buckets.take(f"flood-{i}", 50)
        assert len(buckets) <= 100
    # The idle ones (full again by t=50) went first; the table never grew.
    assert buckets.take("idle-0", 50) == 0


# --------------------------------------------------------------------------
# Admission (sans-IO)
# --------------------------------------------------------------------------


def test_admission_caps_per_source_and_in_total() -> None:
    adm = Admission(Limits(max_conns=3, max_conns_per_ip=2))
    assert adm.admit("192.0.2.1") is None
    assert adm.admit("192.0.2.1") is None
    refusal = adm.admit("192.0.2.1")
    assert refusal is not None and refusal.startswith("Too many connections from your address")
    assert adm.admit("192.0.2.2") is None
    full = adm.admit("192.0.2.3")
    assert full is not None and full.startswith("The server is full (3 connections)")
    adm.release("192.0.2.1")
    assert adm.admit("192.0.2.1") is None
    assert (adm.total, adm.from_source("192.0.2.1")) == (3, 2)


def test_an_ipv6_slash_64_counts_as_one_source() -> None:
    assert (
        source_key("2001:db8:1:2::5") == source_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    )
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key("192.0.2.7") == "192.0.2.7"
    adm = Admission(Limits(max_conns_per_ip=1))
    assert adm.admit("2001:db8:1:2::5") is None
    assert adm.admit("2001:db8:1:2::6") is not None
    assert adm.admit("2001:db8:1:3::6") is None


def test_chat_lines_use_the_user_bucket_and_the_rest_the_connection_bucket() -> None:
    limits = Limits(max_msg_rate=1, msg_burst=1, max_cmd_rate=1, cmd_burst=1)
    users = KeyedBuckets(limits.max_msg_rate, limits.msg_burst)
    first, second = ConnectionRates(limits, users, 0), ConnectionRates(limits, users, 0)
    assert first.delay(Msg("bob", "hi"), "Alice", 0) == 0
    # The same user on another connection (logged in again): the same bucket.
    assert second.delay(Text("again"), "alice", 0) == 1
    # Before login a chat-looking line is a command; so is a bad line.
    assert second.delay(Msg("bob", "hi"), None, 0) == 0
    assert second.delay(RemoteProtocolError("bad"), "alice", 0) == 1
    assert second.delay(Command("ping"), "alice", 0) == 2


# --------------------------------------------------------------------------
# The server enforcing them (memory streams, virtual time)
# --------------------------------------------------------------------------


@pytest.fixture(params=["memory", "tcp"])
def tcp(request: pytest.FixtureRequest) -> bool:
    """Memory streams (a task reads each client) or loopback TCP (once logged
    in, the server's reactor reads it): the limits hold the same either way."""
    return bool(request.param == "tcp")


def clocked_server(**limits: float) -> Server:
    return Server(
        SqliteStore(":memory:"),
        passwords=InstantPasswords(),
        limits=Limits(**limits),  # type: ignore[arg-type]
    )


async def test_connections_past_the_per_address_cap_are_refused_with_a_line() -> None:
    server = make_server(max_conns_per_ip=2)
    async with running(server) as connect:
        first, second = await connect("192.0.2.1"), await connect("192.0.2.1")
        for c in (first, second):
            await c.expect("USERNAME")
        third = await connect("192.0.2.1")
        assert (await third.expect("BYE")).startswith(
            "Too many connections from your address (the limit is 2)"
        )
        await third.expect_eof()
        other = await connect("192.0.2.2")
        await other.login("other", "pw12pw12")

        await first.send_line("::quit")
        await first.read_until_eof()
        with trio.fail_after(DEADLINE):
            while server.admission.from_source("192.0.2.1") != 1:
                await trio.testing.wait_all_tasks_blocked()
        again = await connect("192.0.2.1")
        await again.expect("USERNAME")


async def test_the_global_cap_is_answered_with_a_refusal_line() -> None:
    server = make_server(max_conns=2)
    async with running(server) as connect:
        a, b = await connect("192.0.2.1"), await connect("192.0.2.2")
        for c in (a, b):
            await c.expect("USERNAME")
        full = await connect("192.0.2.3")
        assert (await full.expect("BYE")).startswith("The server is full (2 connections)")
        await full.expect_eof()
        assert server.admission.total == 2


async def test_refusal_over_real_sockets_reaches_the_client() -> None:
    """The refused socket is half-closed and drained, not reset: the line arrives."""
    server = make_server(max_conns_per_ip=1)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(DEADLINE):
            kept = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
            await kept.expect("USERNAME")
            refused = LineClient(await trio.open_tcp_stream("127.0.0.1", port))
            # A client that talks first (as peers do) must still read the refusal.
            await refused.send_line("username: eager")
            assert (await refused.expect("BYE")).startswith("Too many connections")
            await refused.expect_eof()
            other = LineClient(
                await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
            )
            assert "You are seen as 127.0.0.2" in await other.login("other", "pw12pw12")
        for c in (kept, refused, other):
            await c.aclose()
        nursery.cancel_scope.cancel()


async def test_an_idle_client_is_closed_and_a_pinging_one_stays(
    autojump_clock: trio.testing.MockClock, tcp: bool
) -> None:
    server = clocked_server(idle_timeout=120)
    async with running(server, tcp=tcp) as connect:
        quiet, pinger = await connect("192.0.2.1"), await connect("192.0.2.2")
        quiet.deadline = pinger.deadline = 1000  # virtual seconds
        await quiet.login("quiet", "pw12pw12")
        await pinger.login("pinger", "pw12pw12")
        start = trio.current_time()

        async def keep_pinging() -> None:
            for i in range(60):  # 300 virtual seconds, a ping every 5 like a peer
                await pinger.send_line(f"::ping {i}")
                assert await pinger.expect("PONG") == str(i)
                await trio.sleep(5)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_pinging)
            bye = await quiet.expect("BYE")
            assert bye.startswith("Nothing received from you for 120 s")
            await quiet.expect_eof()
            assert trio.current_time() - start == pytest.approx(120)
        await pinger.send_line("::users")
        assert await pinger.expect("USERS") == "pinger online, quiet offline"


async def three_logged_in(connect: Any) -> list[Any]:
    """alice, bob and carol logged in from three addresses, 100 s to answer."""
    clients = [await connect(f"192.0.2.{i}") for i in (1, 2, 3)]
    for client, name, password in zip(
        clients, ("alice", "bob", "carol"), ("pw12pw12", "pw34pw34", "pw56pw56"), strict=True
    ):
        client.deadline = 100
        await client.login(name, password)
    return clients


async def test_a_fast_sender_is_slowed_down_and_nothing_is_dropped(
    autojump_clock: trio.testing.MockClock, tcp: bool
) -> None:
    server = clocked_server(max_msg_rate=10, msg_burst=5)
    async with running(server, tcp=tcp) as connect:
        alice, bob, carol = await three_logged_in(connect)
        start = trio.current_time()
        await alice.send_raw(b"".join(b"msg: bob line %d\n" % i for i in range(100)))
        assert await bob.expect_user("alice") == "line 0"
        # Others are not slowed by alice's pause: carol is answered at once.
        await carol.send_line("::ping")
        assert await carol.expect("PONG") == "-"
        assert trio.current_time() - start < 1
        for i in range(1, 100):
            assert await bob.expect_user("alice") == f"line {i}"
        # 5 at once, then 10 a second: 95 more take 9.5 s.
        assert trio.current_time() - start == pytest.approx(9.5)
        assert server.counts.rate_limited == {"chat": 95}  # each pause, for the operators
        await alice.send_line("::users")
        assert (await alice.expect("USERS")).startswith("alice online")
        if tcp:  # every pause handed alice back to the reactor
            assert server.reactor is not None and len(server.reactor) == 3


async def test_relay_bytes_are_capped_per_user(
    autojump_clock: trio.testing.MockClock, tcp: bool
) -> None:
    server = clocked_server(max_relay_bytes=20_000, relay_bytes_burst=16_384)
    async with running(server, tcp=tcp) as connect:
        alice, bob, carol = await three_logged_in(connect)
        start = trio.current_time()
        # Ten long lines (file data, say), then a short one.
        long = [b"msg: bob %d%s\n" % (i, b"x" * 10_000) for i in range(10)]
        await alice.send_raw(b"".join(long) + b"msg: bob short\n")
        assert (await bob.expect_user("alice")).startswith("0xxx")
        await carol.send_line("::ping")  # nobody else waits for alice's bytes
        assert await carol.expect("PONG") == "-"
        assert trio.current_time() - start < 1
        for i in range(1, 10):
            assert (await bob.expect_user("alice")).startswith(f"{i}xxx")
        assert await bob.expect_user("alice") == "short"  # in order, nothing dropped
        # The burst, then 20,000 bytes a second for the rest.
        sent = sum(len(line) - 1 for line in long)
        assert trio.current_time() - start == pytest.approx((sent - 16_384) / 20_000, rel=0.02)


async def test_logging_in_again_does_not_refill_the_message_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = clocked_server(max_msg_rate=1, msg_burst=3)
    async with running(server) as connect:
        bob = await connect("192.0.2.2")
        await bob.login("bob", "pw34pw34")
        bob.deadline = 100
        start = trio.current_time()
        for attempt in range(2):
            alice = await connect("192.0.2.1")
            await alice.login("alice", "pw12pw12")
            await alice.send_raw(b"".join(b"msg: bob %d-%d\n" % (attempt, i) for i in range(3)))
            for i in range(3):
                assert await bob.expect_user("alice") == f"{attempt}-{i}"
            await alice.aclose()
        # The burst of 3 once, then 1 a second: 3 s, not 0.
        assert trio.current_time() - start == pytest.approx(3)


async def test_max_msg_rate_zero_is_unlimited(autojump_clock: trio.testing.MockClock) -> None:
    server = clocked_server(max_msg_rate=0)
    async with running(server) as connect:
        alice, bob = await connect("192.0.2.1"), await connect("192.0.2.2")
        await alice.login("alice", "pw12pw12")
        await bob.login("bob", "pw34pw34")
        start = trio.current_time()
        await alice.send_raw(b"".join(b"msg: bob line %d\n" % i for i in range(500)))
        for i in range(500):
            assert await bob.expect_user("alice") == f"line {i}"
        assert trio.current_time() == start


async def test_commands_and_bad_lines_have_their_own_rate(
    autojump_clock: trio.testing.MockClock, tcp: bool
) -> None:
    server = clocked_server(max_cmd_rate=2, cmd_burst=4, max_msg_rate=0)
    async with running(server, tcp=tcp) as connect:
        alice, bob = await connect("192.0.2.1"), await connect("192.0.2.2")
        alice.deadline = 100
        await alice.login("alice", "pw12pw12")  # 2 lines of the burst of 4
        await bob.login("bob", "pw34pw34")
        start = trio.current_time()
        await alice.send_raw(b"::ping a\n\xff\n::ping b\n::ping c\n")
        assert await alice.expect("PONG") == "a"
        assert (await alice.expect("ERROR")).startswith("Line is not valid UTF-8")
        assert await alice.expect("PONG") == "b"
        assert await alice.expect("PONG") == "c"
        assert trio.current_time() - start == pytest.approx(1.0)  # 2 over the burst, at 2/s
        assert server.counts.rate_limited == {"command": 2}
        # Chat lines use the other bucket: not slowed by the command pause.
        await alice.send_line("msg: bob straight through")
        assert await bob.expect_user("alice") == "straight through"
        assert trio.current_time() - start == pytest.approx(1.0)


async def test_password_attempts_per_source_address_are_slowed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = clocked_server(max_login_rate=6, max_login_tries=100)
    server.logins.failed_logins = FailedLogins(base=0)  # only the per-address rate, here
    async with running(server) as connect:
        await (await connect("192.0.2.50")).login("victim", "right-password")
        guesser = await connect("192.0.2.1")
        guesser.deadline = 100
        await guesser.expect("USERNAME")
        await guesser.send_line("username: victim")
        await guesser.expect("PASSWORD")
        start = trio.current_time()
        for i in range(8):
            await guesser.send_line(f"password: guess-{i}")
            assert await guesser.expect("ERROR") == "Wrong password for victim"
            await guesser.expect("PASSWORD")
        # 6 at once, then one every 10 s (6 a minute).
        assert trio.current_time() - start == pytest.approx(20)
        assert server.counts.rate_limited["login"] == 2
        # Another address is not slowed by that.
        now = trio.current_time()
        await (await connect("192.0.2.2")).login("someone", "pw12pw12")
        assert trio.current_time() == now


async def test_shutdown_handles_every_line_already_read_before_bye(
    autojump_clock: trio.testing.MockClock, tcp: bool
) -> None:
    server = clocked_server(max_msg_rate=1, msg_burst=1)
    async with running(server, tcp=tcp) as connect:
        alice, bob = await connect("192.0.2.1"), await connect("192.0.2.2")
        alice.deadline = bob.deadline = 1000
        await alice.login("alice", "pw12pw12")
        await bob.login("bob", "pw34pw34")
        # 50 lines in one write: the server reads them at once, then paces them.
        await alice.send_raw(b"".join(b"msg: bob line %d\n" % i for i in range(50)))
        assert await bob.expect_user("alice") == "line 0"
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.shut_down, 2.0)
            for i in range(1, 50):
                assert await bob.expect_user("alice") == f"line {i}"
            for c in (alice, bob):
                assert await c.expect("BYE") == "The server is shutting down; try again later"
                await c.expect_eof()
        assert trio.current_time() - start < 2.0  # no rate-limit pauses once stopping
        if not tcp:  # over TCP the port is closed by now
            late = await connect("192.0.2.9")
            assert await late.expect("BYE") == "The server is shutting down; try again later"


# --------------------------------------------------------------------------
# Flags
# --------------------------------------------------------------------------


def test_every_limit_has_a_documented_flag_with_the_same_default() -> None:
    parser = build_parser()
    text = parser.format_help()
    for f in fields(Limits):
        assert "--" + f.name.replace("_", "-") in text
    assert limits_from_args(parser.parse_args([])) == Limits()
    args = parser.parse_args(["--max-msg-rate", "0", "--max-conns-per-ip", "3"])
    assert limits_from_args(args) == Limits(max_msg_rate=0, max_conns_per_ip=3)


@pytest.mark.parametrize(
    "argv", [["--max-conns", "0"], ["--idle-timeout", "-1"], ["--msg-burst", "x"]]
)
def test_bad_limit_values_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "must be at least" in err or "not a number" in err


def test_mailbox_flags_reach_its_limits() -> None:
    args = build_parser().parse_args(
        ["--mail-quota", "5", "--mail-expiry-days", "2", "--mail-sync", "normal"]
    )
    mail = mail_limits_from_args(args)
    assert (mail.quota_count, mail.expiry, args.mail_sync) == (5, 2 * 86400, "normal")
    assert mail_limits_from_args(build_parser().parse_args([])) == MailLimits()


def test_limits_refuse_nonsense_values() -> None:
    with pytest.raises(ValueError, match="msg_burst"):
        Limits(msg_burst=0)
    with pytest.raises(ValueError, match="max_cmd_rate"):
        Limits(max_cmd_rate=-1)
