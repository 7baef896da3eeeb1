"""The network fuzz test's load (tests/test_netfuzz.py): the fuzz connections.

* :func:`rv_worker`: sessions to the rendezvous from the worker's own
  127.0.1.x address, before or after logging in (its account, resumed with
  its token), each ended by EOF, a reset, silence or a close; a listener (the
  *lure*) that answers the peers' dials with mutated frames; then, in the last
  seconds, a :func:`login_storm` of wrong passwords, some abandoned at once.
* :func:`direct_worker`: sessions to alice's or bob's direct port from
  127.0.2.x: raw streams, frames after a valid hello, or frames sealed inside a
  key exchange the fuzzer completes (honestly or not: :data:`KX_OPS`).

What they see goes into a :class:`Tally`: every line the rendezvous sends a
fuzzer is checked (UTF-8, no control or format characters).
"""

from __future__ import annotations

import random
import re
import struct
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import trio

from chathack.errors import RemoteProtocolError
from chathack.link import FrameDecoder, Hello, encode_frame
from chathack.secure import Handshake, KeyReply, SecureSession, b64
from tests.netfuzz_corpus import (
    FRAME_OPS,
    FRAME_SEEDS,
    FUZZ_SEED,
    RV_WORKERS,
    DirectPlan,
    Fuzzer,
    Piece,
    RvPlan,
    Target,
    active,
    mutate_frame,
    render_session,
    stream_bytes,
)
from tests.test_hostile import open_from, reset

#: Seconds one fuzz session may last before it is reset.
SESSION_SECONDS = 4.0
#: Seconds a fuzzer's login may take: argon2 queues.
LOGIN_SECONDS = 15.0
#: Connections each rendezvous fuzzer keeps in its login storm.
STORM_CONNECTIONS = 2

#: C0 controls but TAB, DEL and C1: nothing a fuzzer sent may come back as one.
CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def unsafe(text: str) -> bool:
    """Whether ``text`` holds what could drive or fool a terminal: a C0/C1
    control, or a Unicode format character or separator (bidi overrides,
    invisible characters; ZWJ and ZWNJ are fine), as chathack.text neutralises."""
    if CONTROL_RE.search(text):
        return True
    return not text.isascii() and any(
        unicodedata.category(c) in ("Cf", "Zl", "Zp") and c not in "\u200c\u200d" for c in text
    )


# --------------------------------------------------------------------------
# What the fuzzers saw
# --------------------------------------------------------------------------


@dataclass
class Tally:
    sessions: Counter = field(default_factory=Counter)  # started, by kind
    coverage: Counter = field(default_factory=Counter)  # coverage-pass sessions started
    covered: set = field(default_factory=set)  # (kind, template or seed, op) sent
    refused: Counter = field(default_factory=Counter)  # connection refused, by target
    login_failures: Counter = field(default_factory=Counter)
    lure_dials: int = 0
    storm_attempts: int = 0
    reply_lines: int = 0
    reply_controls: list[str] = field(default_factory=list)  # examples
    reply_not_utf8: list[str] = field(default_factory=list)
    sealed_sessions: int = 0
    rss: dict[str, list[int]] = field(default_factory=dict)

    def check_reply(self, raw: bytes) -> None:
        """A line the rendezvous sent a fuzzer: valid UTF-8, no control characters."""
        self.reply_lines += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            if len(self.reply_not_utf8) < 5:
                self.reply_not_utf8.append(repr(raw[:200]))
            return
        if unsafe(text) and len(self.reply_controls) < 5:
            self.reply_controls.append(repr(text[:200]))


class FuzzConn:
    """A fuzz connection's reader: every line the server sends is checked and kept."""

    def __init__(self, stream: trio.SocketStream, tally: Tally) -> None:
        self.stream = stream
        self.tally = tally
        self.lines: list[str] = []
        self.times: list[float] = []  # when each kept line arrived (trio clock)
        self._partial = b""
        self._news = trio.Event()
        self.closed = False

    async def read_all(self) -> None:
        try:
            while data := await self.stream.receive_some(65536):
                *complete, self._partial = (self._partial + data).split(b"\n")
                self._partial = self._partial[-(1 << 20) :]
                for raw in complete:
                    self.tally.check_reply(raw)
                    if len(self.lines) < 1000:
                        self.lines.append(raw.decode("utf-8", "replace"))
                        self.times.append(trio.current_time())
                self._news.set()
                self._news = trio.Event()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.closed = True
            self._news.set()

    async def wait_closed(self) -> None:
        while not self.closed:
            await self._news.wait()

    async def wait_for(self, prefixes: tuple[str, ...], start: int = 0) -> tuple[int, str] | None:
        """The first line from ``start`` on that begins with one of ``prefixes``
        (its index and text), or None at the end of the connection."""
        while True:
            for k in range(start, len(self.lines)):
                if self.lines[k].startswith(prefixes):
                    return k, self.lines[k]
            start = len(self.lines)
            if self.closed:
                return None
            await self._news.wait()


async def send_pieces(stream: trio.SocketStream, pieces: list[Piece], rng: random.Random) -> str:
    """Write ``pieces`` as they ask; return how the session must end ("" if freely)."""
    for data, how in pieces:
        if how == "drip":
            k = 0
            while k < len(data):
                n = rng.randint(1, 3)
                await stream.send_all(data[k : k + n])
                k += n
                await trio.sleep(0.002)  # pacing, so the pieces travel apart
        elif how == "runaway":
            for k in range(0, len(data), 4096):
                await stream.send_all(data[k : k + 4096])
                await trio.sleep(0.005)
        elif data:
            at = rng.randint(0, len(data))  # every line split in two writes at a random point
            await stream.send_all(data[:at])
            if at < len(data):
                await stream.send_all(data[at:])
        if how in ("end", "reset"):
            return how
    return ""


async def finish(
    stream: trio.SocketStream, conn: FuzzConn | None, how: str, rng: random.Random
) -> None:
    """End a session: an abrupt reset, EOF (then wait to be closed), silence, or a close."""
    if how == "reset":
        reset(stream)
        return
    if how in ("eof", "end"):
        try:
            await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
        if conn is not None:
            with trio.move_on_after(1.5):  # the server should close its side too
                await conn.wait_closed()
        return
    if how == "idle":
        await trio.sleep(rng.uniform(0.2, 1.5))  # pacing: an idle client


# --------------------------------------------------------------------------
# Rendezvous fuzzers
# --------------------------------------------------------------------------


async def log_in(conn: FuzzConn, w: Fuzzer) -> bool:
    """Log ``w`` in: with its resume token when it has one, else its password."""
    stream = conn.stream
    got = await conn.wait_for(("Servidor[USERNAME]", "Servidor[BYE]"))
    if got is None or got[1].startswith("Servidor[BYE]"):
        return False
    start = got[0] + 1
    if w.token:
        await stream.send_all(f"resume: {w.name} {w.token}\n".encode())
        got = await conn.wait_for(
            ("Servidor[OK]", "Servidor[ERROR]", "Servidor[RETRY]", "Servidor[BYE]"), start
        )
        if got is None or not got[1].startswith("Servidor[OK]"):
            w.token = None
            got = await conn.wait_for(("Servidor[USERNAME]",), start)
            if got is None:
                return False
        start = got[0] + 1
    if not w.token:
        await stream.send_all(f"username: {w.name}\n".encode())
        got = await conn.wait_for(("Servidor[PASSWORD]",), start)
        if got is None:
            return False
        await stream.send_all(f"password: {w.password}\n".encode())
        got = await conn.wait_for(
            ("Servidor[OK]", "Servidor[ERROR]", "Servidor[RETRY]", "Servidor[BYE]"), got[0] + 1
        )
        if got is None or not got[1].startswith("Servidor[OK]"):
            return False
    got = await conn.wait_for(("Servidor[TOKEN]",), got[0] + 1)
    if got is None:
        return False
    w.token = got[1].split(": ", 1)[1].split()[0]
    return True


async def run_rv_session(plan: RvPlan, w: Fuzzer, t: Target, tally: Tally) -> None:
    try:
        stream = await open_from(w.ip, t.rv_port)
    except OSError:
        tally.refused["rendezvous"] += 1
        return
    conn = FuzzConn(stream, tally)
    how = plan.end
    kind = "rendezvous logged-in" if plan.logged_in else "rendezvous"
    tally.sessions[kind] += 1
    tally.coverage[kind] += plan.coverage
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.read_all)
            if plan.logged_in:
                ok = False
                with trio.move_on_after(LOGIN_SECONDS):
                    ok = await log_in(conn, w)
                if not ok:
                    tally.login_failures[w.name] += 1
                    how = "close"
                    nursery.cancel_scope.cancel()
                    return
            rng = random.Random(plan.lines[0].salt if plan.lines else w.index)
            with trio.move_on_after(SESSION_SECONDS):
                if plan.lure:
                    await lure(stream, rng, w, t)
                pieces = render_session(plan, w, t)
                ending = await send_pieces(stream, pieces, rng)
                for item in plan.lines:
                    kind = "post" if plan.logged_in else "pre"
                    if item.sub is not None:
                        tally.covered.add(("relay", item.template, str(item.sub)))
                    tally.covered.add((kind, item.template, item.op))
                how = ending or how
                await finish(stream, conn, how, rng)
            nursery.cancel_scope.cancel()
    except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # the server closed it (too many bad lines, a BYE, a crash): the checks say which
    finally:
        # The session's last token (a resume: line may have used the old one).
        tokens = [line for line in conn.lines if line.startswith("Servidor[TOKEN]: ")]
        if tokens:
            w.token = tokens[-1].split(": ", 1)[1].split()[0]
        if how != "reset":
            await trio.aclose_forcefully(stream)
        else:
            stream.socket.close()


async def lure(stream: trio.SocketStream, rng: random.Random, w: Fuzzer, t: Target) -> None:
    """Announce this fuzzer's listener and call a peer: it dials in and meets junk."""
    peer = rng.choice(list(t.peer_keys))
    lines = [f"key: {b64(bytes(w.identity.verify_key))}", f"port: {w.lure_port}"]
    lines += [f"lan: {w.ip}:{w.lure_port}", f"connect: {peer}", f"punch: {peer}"]
    await stream.send_all("".join(f"{line}\n" for line in lines).encode())
    await trio.sleep(0.5)  # pacing: let the peer's race reach the listener


async def serve_lure(
    w: Fuzzer, t: Target, tally: Tally, task_status=trio.TASK_STATUS_IGNORED
) -> None:
    """``w``'s listener: whoever dials it (alice, bob) gets a mutated hello and frames."""
    listeners = await trio.open_tcp_listeners(0, host=w.ip)
    w.lure_port = listeners[0].socket.getsockname()[1]
    task_status.started()

    frame_ops = active("frame", FRAME_OPS)

    async def answer(stream: trio.SocketStream) -> None:
        tally.lure_dials += 1
        rng = random.Random(f"{FUZZ_SEED}:lure:{w.index}:{tally.lure_dials}")
        try:
            with trio.move_on_after(3):
                await stream.receive_some(65536)  # the dialer's hello
                peer = rng.choice(list(t.peer_keys))
                frames = [mutate_frame(rng, "hello", rng.choice(frame_ops), w.name, peer, w.epoch)]
                if rng.random() < 0.5:  # a valid hello, then junk on an established link
                    frames = [encode_frame(Hello(w.name, peer, w.epoch, via="accept"))[4:]]
                for _ in range(rng.randint(0, 5)):
                    seed = rng.choice(FRAME_SEEDS)
                    frames.append(
                        mutate_frame(rng, seed, rng.choice(frame_ops), w.name, peer, w.epoch)
                    )
                pack = struct.Struct(">I").pack
                await send_pieces(stream, [(pack(len(f)) + f, "whole") for f in frames], rng)
                await stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    await trio.serve_listeners(answer, listeners)


async def rv_worker(
    w: Fuzzer, plans: Iterator[RvPlan], t: Target, tally: Tally, storm_at: float
) -> None:
    """Sessions from ``plans`` until ``storm_at``, then a login storm until cancelled."""
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_lure, w, t, tally)
        for plan in plans:
            if trio.current_time() >= storm_at:
                break
            refused = tally.refused["rendezvous"]
            await run_rv_session(plan, w, t, tally)
            if tally.refused["rendezvous"] > refused + 2 or tally.refused["rendezvous"] > 20:
                nursery.cancel_scope.cancel()  # the rendezvous is gone: the checks say so
                return
        await trio.sleep_until(storm_at)  # (coverage done early: the storm still comes)
        for k in range(STORM_CONNECTIONS):
            nursery.start_soon(login_storm, w, k, t, tally)


async def login_storm(w: Fuzzer, k: int, t: Target, tally: Tally) -> None:
    """Wrong passwords for fuzz accounts, abandoned at once or waited for, until
    the load stops: whatever it queues is in the rendezvous's way when the
    newcomer comes (no fresh names: the point is the hashing, not the
    registration rate)."""
    rng = random.Random(f"{FUZZ_SEED}:storm:{w.index}:{k}")
    while tally.refused["rendezvous"] < 20:
        try:
            stream = await open_from(w.ip, t.rv_port)
        except OSError:
            tally.refused["rendezvous"] += 1
            continue
        conn = FuzzConn(stream, tally)
        abandon = rng.random() < 0.5
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.read_all)
                name = rng.choice([w.name, f"fzr{rng.randrange(RV_WORKERS)}"])
                await stream.send_all(f"username: {name}\npassword: wrong-{k}\n".encode())
                tally.storm_attempts += 1
                with trio.move_on_after(rng.uniform(0, 0.3) if abandon else 3):
                    await conn.wait_for(
                        ("Servidor[ERROR]", "Servidor[RETRY]", "Servidor[BYE]", "Servidor[OK]")
                    )
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            if abandon:
                reset(stream)
            else:
                await trio.aclose_forcefully(stream)


# --------------------------------------------------------------------------
# Direct-port fuzzers
# --------------------------------------------------------------------------


class FrameIn:
    """Frames the peer sends on a direct stream, read by a task of its own."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        self.frames: list[object] = []
        self._news = trio.Event()
        self.closed = False

    async def read_all(self) -> None:
        try:
            while data := await self.stream.receive_some(65536):
                self.decoder.receive_data(data)
                while (frame := self.decoder.next_frame()) is not None:
                    self.frames.append(frame)
                self._news.set()
                self._news = trio.Event()
        except (trio.BrokenResourceError, trio.ClosedResourceError, RemoteProtocolError):
            pass
        finally:
            self.closed = True
            self._news.set()

    async def next_of(self, kind: type) -> object | None:
        seen = 0
        while True:
            for frame in self.frames[seen:]:
                if isinstance(frame, kind):
                    self.frames.remove(frame)
                    return frame
            seen = len(self.frames)
            if self.closed:
                return None
            await self._news.wait()


class _SmallOrderKey:
    """Stands in for ``Handshake._eph``: a small-order point as the public half."""

    def __init__(self, point: bytes, secret: bytes) -> None:
        self.public_key = point
        self._secret = secret

    def __bytes__(self) -> bytes:
        return self._secret


async def key_exchange(
    w: Fuzzer, peer: str, stream: trio.SocketStream, inbox: FrameIn, kx: str = "honest"
) -> SecureSession | None:
    """Run the SIGMA exchange as ``w`` (the dialer starts it): the peer pins
    ``w``'s key on first use, and sealed frames then reach its conversation layer."""
    hs = Handshake(w.identity, w.name, peer, initiator=True)
    if kx != "honest":
        point = bytes(32) if kx == "low_order_zero" else b"\x01" + bytes(31)
        hs._eph = _SmallOrderKey(point, bytes(hs._eph))  # type: ignore[assignment]
    await stream.send_all(encode_frame(hs.start()))
    reply = await inbox.next_of(KeyReply)
    if reply is None:
        return None
    hs.on_reply(reply)  # type: ignore[arg-type]
    confirm, session = hs.confirm()
    await stream.send_all(encode_frame(confirm))
    return session


async def run_direct_session(plan: DirectPlan, w: Fuzzer, t: Target, tally: Tally) -> None:
    try:
        stream = await open_from(w.ip, t.peer_ports[plan.target])
    except OSError:
        tally.refused[plan.target] += 1
        return
    rng = random.Random(plan.frames[0][2])
    how = plan.end
    pack = struct.Struct(">I").pack
    tally.sessions[f"direct {plan.stage}"] += 1
    tally.coverage[f"direct {plan.stage}"] += plan.coverage
    try:
        async with trio.open_nursery() as nursery:
            inbox = FrameIn(stream)
            nursery.start_soon(inbox.read_all)
            with trio.move_on_after(SESSION_SECONDS):
                pieces: list[Piece] = []
                if plan.stage == "raw":
                    seed, op, salt = plan.frames[0]
                    body = mutate_frame(random.Random(salt), seed, op, w.name, plan.target, w.epoch)
                    pieces = stream_bytes(rng, plan.stream_op or "drip", body)
                    tally.covered.add(("stream", seed, plan.stream_op))
                else:
                    # A sealed session needs "dial": with "punch" the peer starts the
                    # key exchange itself when its name sorts first.
                    via = "dial" if plan.stage == "sealed" else rng.choice(["dial", "punch"])
                    hello = Hello(w.name, plan.target, w.epoch, via=via)
                    await stream.send_all(encode_frame(hello))
                    if await inbox.next_of(Hello) is None:
                        return
                    session = None
                    if plan.stage == "sealed":
                        session = await key_exchange(w, plan.target, stream, inbox, plan.kx)
                        if session is None:
                            return
                        tally.sealed_sessions += 1
                        tally.covered.add(("kx", plan.target, plan.kx))
                    for seed, op, salt in plan.frames:
                        body = mutate_frame(
                            random.Random(salt), seed, op, w.name, plan.target, w.epoch
                        )
                        if session is not None:
                            body = b"\x01" + session.seal(body)
                        pieces.append(
                            (pack(len(body)) + body, rng.choice(["whole", "whole", "drip"]))
                        )
                        tally.covered.add((plan.stage, seed, op))
                ending = await send_pieces(stream, pieces, rng)
                how = ending or how
                if how == "end" and plan.stream_op == "silent":
                    await trio.sleep(1.5)  # pacing: a silent connection, then it goes
                await finish(stream, None, how, rng)
            nursery.cancel_scope.cancel()
    except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError, RemoteProtocolError):
        pass  # the peer closed it: expected for most junk
    finally:
        if how != "reset":
            await trio.aclose_forcefully(stream)
        else:
            stream.socket.close()


async def direct_worker(w: Fuzzer, plans: Iterator[DirectPlan], t: Target, tally: Tally) -> None:
    for plan in plans:
        # A peer that refused ten connections is gone (the checks afterwards say
        # so): its plans are skipped, the other peer's go on.
        gone = {name for name in t.peer_ports if tally.refused[name] > 10}
        if gone == set(t.peer_ports):
            return
        if plan.target not in gone:
            await run_direct_session(plan, w, t, tally)
