"""Offline backlog: messages stored for an offline user, delivered on login.

Uses the rendezvous mailbox (rendezvous/mailbox.py, ``mail:`` / ``MAIL`` /
``ack:``). A sender stores ``BACKLOG`` messages for an offline receiver with
``STORE_WINDOW`` ``mail:`` lines in flight (each is committed durably before
``Servidor[STORED]`` comes back), and leaves. Then the receiver logs in and
acknowledges each batch of ``Servidor[MAIL]`` lines it reads with one
``ack:`` line, until every message has arrived. Figures: the time from the
receiver's login to its last message, messages per second, and the server's
CPU per delivered message (/proc/PID/stat) from the login until the server
has handled the last ``ack:`` (a ``::ping`` answered after it). Storing
(messages per second; each STORED follows a durable commit, which the lines
of one read share) is reported too.

This client runs inside the benchmark's own process: one connection at a
time cannot make the generator the bottleneck (its CPU is reported).
"""

from __future__ import annotations

import importlib.util
import time

import trio

from benchmarks import procstat
from benchmarks.accounts import PASSWORD, create_accounts
from benchmarks.loadgen import Conn, login
from benchmarks.rendezvous_proc import HOST, rendezvous
from benchmarks.report import Result
from benchmarks.scenarios import Settings, quiet_machine

BACKLOG = 10_000
STORE_WINDOW = 64
#: Seconds storing, and delivering, may take at most.
PHASE_TIMEOUT = 300.0
TEXT_BYTES = 64
SENDER, RECEIVER = "bsender", "breceiver"


def offline_delivery_supported() -> bool:
    """Whether the rendezvous has its mailbox (offline delivery) yet."""
    return importlib.util.find_spec("rendezvous.mailbox") is not None


async def _store(conn: Conn, n: int) -> tuple[int, int]:
    """Store ``n`` messages for the receiver; (stored, refused)."""
    pad = "x" * (TEXT_BYTES - 21)
    sent = stored = refused = 0
    with trio.move_on_after(PHASE_TIMEOUT):
        while stored + refused < n:
            room = min(STORE_WINDOW - (sent - stored - refused), n - sent)
            if room > 0:
                lines = [
                    f"mail: {RECEIVER} m{sent + i:06d} {time.time_ns():020d} {pad}\n"
                    for i in range(room)
                ]
                sent += room
                await conn.send("".join(lines).encode())
            for line in await conn.read_lines():
                if line.startswith(b"Servidor[STORED]"):
                    stored += 1
                elif line.startswith(b"Servidor[REFUSED]"):
                    refused += 1
    return stored, refused


async def _deliver(conn: Conn, n: int) -> tuple[int, int]:
    """Read MAIL lines, ack each batch; (distinct messages, MAIL lines) received."""
    seen: set[bytes] = set()
    lines_in = 0
    head = len(b"Servidor[MAIL]: ")
    with trio.move_on_after(PHASE_TIMEOUT):
        while len(seen) < n:
            keys = []
            for line in await conn.read_lines():
                if line.startswith(b"Servidor[MAIL]"):
                    origin, msg_id = line[head:].split(b" ", 2)[:2]
                    keys.append(origin + b" " + msg_id)
                    seen.add(msg_id)
                    lines_in += 1
            for i in range(0, len(keys), 1000):
                await conn.send(b"ack: " + b" ".join(keys[i : i + 1000]) + b"\n")
    return len(seen), lines_in


async def _pong(conn: Conn) -> None:
    await conn.send(b"::ping done\n")
    with trio.fail_after(30):
        while not any(x.startswith(b"Servidor[PONG]") for x in await conn.read_lines()):
            pass


async def measure(settings: Settings) -> Result:
    res = Result()
    n = BACKLOG
    work = settings.workdir("backlog")
    db = work / "rendezvous.sqlite3"
    create_accounts(db, [SENDER, RECEIVER], cheap=True)
    async with rendezvous(work, db, cheap_argon2=True) as srv:
        await quiet_machine()
        sender = await login(HOST, srv.port, SENDER, PASSWORD)
        t0, cpu0 = time.monotonic(), srv.cpu_ticks()
        stored, refused = await _store(sender, n)
        store_s, store_cpu = time.monotonic() - t0, (srv.cpu_ticks() - cpu0) / procstat.CLK_TCK
        sender.close()
        await trio.sleep(0.5)  # the sender's logout is handled
        t1, cpu1, me1 = time.monotonic(), srv.cpu_ticks(), procstat.cpu_seconds()
        receiver = await login(HOST, srv.port, RECEIVER, PASSWORD)
        # A peer's first line after login (it pings at once): the hub starts delivery
        # on it if the I/O layer does not start it right after the login reply.
        await receiver.send(b"::ping hello\n")
        got, lines_in = await _deliver(receiver, stored)
        deliver_s = time.monotonic() - t1
        await _pong(receiver)
        deliver_cpu = (srv.cpu_ticks() - cpu1) / procstat.CLK_TCK
        my_cpu = procstat.cpu_seconds() - me1
        receiver.close()
    scen = "offline backlog"
    res.add(
        scen,
        f"{got:,} stored messages delivered on login",
        deliver_s,
        "s",
        note=f"{lines_in:,} MAIL lines for {got:,} messages; one ack: per read; "
        f"generator (this process) CPU {my_cpu:.2f} s",
    )
    res.add(scen, "delivery rate", got / deliver_s if deliver_s else None, "msg/s")
    res.add(scen, "server CPU per delivered message", deliver_cpu * 1e6 / max(1, got), "us")
    res.add(
        scen,
        "storing (mail:, STORED after a durable group commit)",
        stored / store_s if store_s else None,
        "msg/s",
        note=f"{stored:,} stored, {refused:,} refused, {STORE_WINDOW} in flight; server CPU "
        f"{store_cpu * 1e6 / max(1, stored):.0f} us per stored message",
    )
    res.details = {
        "backlog": n,
        "stored": stored,
        "refused": refused,
        "store_s": store_s,
        "store_server_cpu_s": store_cpu,
        "delivered": got,
        "mail_lines": lines_in,
        "deliver_s": deliver_s,
        "deliver_server_cpu_s": deliver_cpu,
        "generator_cpu_s": my_cpu,
    }
    return res


async def run(settings: Settings) -> Result:
    if offline_delivery_supported():
        return await measure(settings)
    res = Result()
    res.add(
        "offline backlog",
        f"{BACKLOG:,} stored messages delivered on login",
        "n/a: offline delivery not implemented yet",
        verdict="n/a",
        note="when rendezvous/mailbox.py exists, measure() runs",
    )
    return res
