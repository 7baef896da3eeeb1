"""Attacks on real nodes and a real server, in-process over 127.0.0.1: a tap
on every stream, an impostor at bob's address, a changed key, tampering."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
from nacl.signing import SigningKey

from chathack.link import Hello, Sealed, frame_to_relay_text
from chathack.protocol import UserLine
from chathack.secure import Handshake, KeyReply
from peer import direct
from peer.core import records as rec
from peer.node import PeerConfig, fixed_password, open_peer
from rendezvous.passwords import Passwords, fast_hasher
from rendezvous.server import Server
from rendezvous.store import SqliteStore
from tests.test_node import DEADLINE, Watcher

SECRET = "the eagle lands at midnight"


@pytest.fixture
def tap(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Every byte any socket stream in this process sends (a wire capture)."""
    sent: list[bytes] = []
    original = trio.SocketStream.send_all

    async def send_all(self: trio.SocketStream, data: bytes | bytearray | memoryview) -> None:
        sent.append(bytes(data))
        await original(self, data)

    monkeypatch.setattr(trio.SocketStream, "send_all", send_all)
    yield sent


def leaks(captured: list[bytes], secret: str) -> bool:
    """Whether ``secret`` shows in the capture as text or base64 (any alignment)."""
    blob = b"".join(captured)
    raw = secret.encode()
    if raw in blob:
        return True
    for shift in range(3):
        enc = base64.b64encode(b"x" * shift + raw)[4:-4]
        enc_url = base64.urlsafe_b64encode(b"x" * shift + raw)[4:-4]
        if enc in blob or enc_url in blob:
            return True
    return False


@asynccontextmanager
async def world(**configs: dict) -> AsyncIterator[dict[str, Watcher]]:
    """A server and one node per keyword (its PeerConfig overrides as value)."""
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        server = Server(SqliteStore(":memory:"), passwords=Passwords(fast_hasher()))
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        port = listeners[0].socket.getsockname()[1]
        out: dict[str, Watcher] = {}
        for name, extra in configs.items():
            cfg = PeerConfig(name, "127.0.0.1", port, "127.0.0.1", 0, **extra)
            node = await stack.enter_async_context(
                open_peer(cfg, fixed_password(name + "-password"))
            )
            out[name] = Watcher(node)
            nursery.start_soon(out[name].run)
        yield out
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("relay_only", [False, True], ids=["direct", "relayed"])
async def test_the_wire_carries_no_plaintext(tap: list[bytes], relay_only: bool) -> None:
    async with world(alice={}, bob={"relay_only": relay_only}) as w:
        alice, wb = w["alice"].node, w["bob"]
        await alice.connect("bob")
        if not relay_only:  # bob's peer dials alice once her key checked out on the relay
            await w["alice"].system("Now talking to bob directly (direct)")
        await alice.send("bob", SECRET)
        assert await wb.texts_count(1) == [SECRET]
        await wb.node.send("alice", SECRET + " too")
        assert await w["alice"].texts_count(1) == [SECRET + " too"]
        assert alice.talks["bob"].path == ("relayed" if relay_only else "direct")
    assert tap, "the tap saw nothing"
    assert not leaks(tap, SECRET)


def test_the_leak_detector_would_see_a_leak() -> None:
    assert leaks([b"msg: bob " + base64.urlsafe_b64encode(b'{"text":"' + SECRET.encode())], SECRET)
    assert leaks([b"xx" + SECRET.encode()], SECRET)


async def test_an_impostor_at_bobs_address_is_refused() -> None:
    async with world(alice={}, bob={}) as w:
        alice, wa = w["alice"].node, w["alice"]
        await alice.connect("bob")  # alice learns bob's real key (pinned, and vouched)
        await wa.system("Now talking to bob directly (direct)")
        # Mallory dials alice's listener claiming to be bob, with her own key.
        mallory = SigningKey.generate()
        assert alice.listen_port is not None
        link = await direct.dial("127.0.0.1", alice.listen_port, "bob", "alice", "feedface")
        with trio.fail_after(DEADLINE):
            hs = Handshake(mallory, "bob", "alice", initiator=True)
            await link.stream.send_all(direct.encode_frame(hs.start()))
            reply = await link.reader.next_frame()
            assert isinstance(reply, KeyReply)
            hs.on_reply(reply)
            confirm, _ = hs.confirm()
            await link.stream.send_all(direct.encode_frame(confirm))
            assert await link.reader.next_frame() is None  # alice hangs up on her
        await wa.system("someone may be impersonating bob")
        current = alice.talks["bob"].link
        assert current is not None
        assert alice.links.links[current].partner_epoch == w["bob"].node.epoch
        await link.aclose()
        # The real conversation is untouched.
        await alice.send("bob", "still you?")
        assert await w["bob"].texts_count(1) == ["still you?"]


async def test_a_changed_key_is_held_until_the_user_trusts_it() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    async with world(alice={}, bob={"identity": old}) as w:
        alice, wa = w["alice"].node, w["alice"]
        await alice.connect("bob")
        await alice.send("bob", "before")
        assert await w["bob"].texts_count(1) == ["before"]
        # bob comes back from a new device: new identity key, same password.
        await w["bob"].node.quit()
        server_port = alice.config.server_port
        cfg = PeerConfig("bob", "127.0.0.1", server_port, "127.0.0.1", 0, identity=new)
        async with open_peer(cfg, fixed_password("bob-password")) as bob2, trio.open_nursery() as n:
            wb2 = Watcher(bob2)
            n.start_soon(wb2.run)
            await bob2.connect("alice")
            await wa.system("bob's identity key changed")
            await alice.send("bob", "after")
            with trio.move_on_after(1):
                await wb2.texts_count(1)
            assert wb2.texts() == []  # nothing goes to an unverified key
            alice.whois("bob")
            await wa.system("safety number with bob")
            alice.trust("bob")
            assert await wb2.texts_count(1) == ["after"]  # it waited, it was not lost
            n.cancel_scope.cancel()


async def test_tampered_and_forged_messages_are_dropped_and_reported() -> None:
    async with world(alice={}, bob={"relay_only": True}) as w:
        alice = w["alice"].node
        await alice.connect("bob")
        await alice.send("bob", "hello")
        assert await w["bob"].texts_count(1) == ["hello"]
        bob = w["bob"].node
        # A relayed frame altered on the way.
        bob.feed(rec.FromServer(UserLine("alice", frame_to_relay_text(Sealed(b"\x00" * 80)))))
        await w["bob"].system("failed authentication")
        # A plain line "from alice" (the server, or anyone at it, forging it).
        bob.feed(rec.FromServer(UserLine("alice", "send me your password")))
        await w["bob"].system("Dropped an unencrypted line claiming to be from alice")
        # An unsealed chat frame claiming to be from alice.
        bob.feed(rec.FromServer(UserLine("alice", frame_to_relay_text(Hello("alice", "bob", "x")))))
        assert w["bob"].texts() == ["hello"]
