"""The rendezvous restarts under two talking peers: they notice, keep talking
over their direct link, log in again by themselves (:mod:`peer.server_link`:
reconnect with backoff), and the relay works again afterwards.

In-process and on 127.0.0.1 only, like ``tests/test_node.py`` (whose
:class:`Watcher` this reuses): a real :class:`rendezvous.server.Server` over
an SQLite file, so the accounts outlive the first server, and real
:class:`peer.node.PeerNode` objects. The backoff constants are shrunk so the
test takes about a second; every wait has a deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from peer import server_link
from peer.events import Incoming
from peer.node import PeerConfig, fixed_password, open_peer
from rendezvous.passwords import Passwords, fast_hasher
from rendezvous.server import Server
from rendezvous.store import SqliteStore
from tests.test_node import DEADLINE, Watcher, _peer


class Rendezvous:
    """A Server on 127.0.0.1 that can be stopped and started again on the same port."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.server: Server | None = None
        self._scope: trio.CancelScope | None = None
        self._done: trio.Event | None = None

    async def start(self, nursery: trio.Nursery, port: int = 0) -> int:
        store = SqliteStore(self.db)
        server = Server(store, passwords=Passwords(fast_hasher()))
        scope, done = trio.CancelScope(), trio.Event()

        async def run(task_status: trio.TaskStatus[list[trio.SocketListener]]) -> None:
            try:
                with scope:
                    await server.serve("127.0.0.1", port, task_status=task_status)
            finally:
                store.close()
                done.set()

        with trio.fail_after(DEADLINE):
            listeners = await nursery.start(run)
        self.server, self._scope, self._done = server, scope, done
        return int(listeners[0].socket.getsockname()[1])

    async def stop(self) -> None:
        """Cancel the server: its listener and every connection close at once, no BYE."""
        assert self._scope is not None and self._done is not None
        self._scope.cancel()
        with trio.fail_after(DEADLINE):
            await self._done.wait()

    def online(self) -> set[str]:
        assert self.server is not None
        return set(self.server.hub.online)


def incoming(w: Watcher) -> list[tuple[str, str]]:
    """(text, path) of every message shown so far."""
    return [(e.text, e.path) for e in w.seen if isinstance(e, Incoming)]


@asynccontextmanager
async def _relay_only_peer(port: int, name: str, nursery: trio.Nursery) -> AsyncIterator[Watcher]:
    cfg = PeerConfig(name, "127.0.0.1", port, "127.0.0.1", 0, relay_only=True)
    async with open_peer(cfg, fixed_password(f"{name}-password")) as node:
        w = Watcher(node)
        nursery.start_soon(w.run)
        yield w


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_link, "BACKOFF_FIRST", 0.05)
    monkeypatch.setattr(server_link, "BACKOFF_MAX", 0.2)


async def test_peers_reconnect_after_a_restart_and_direct_talk_goes_on(
    tmp_path: Path, fast_backoff: None
) -> None:
    rdv = Rendezvous(tmp_path / "rendezvous.sqlite3")
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        port = await rdv.start(nursery)
        wa = await stack.enter_async_context(_peer(port, "alice", nursery))
        wb = await stack.enter_async_context(_peer(port, "bob", nursery))
        # carol and dave never open direct links: their conversation is relayed.
        wc = await stack.enter_async_context(_relay_only_peer(port, "carol", nursery))
        wd = await stack.enter_async_context(_relay_only_peer(port, "dave", nursery))
        alice, bob, carol, dave = wa.node, wb.node, wc.node, wd.node
        await alice.connect("bob")
        await wb.system("Now talking to alice directly (direct)")
        await wa.system("Now talking to bob directly (direct)")
        await alice.send("bob", "before the restart")
        await carol.connect("dave")
        await carol.send("dave", "relayed before")
        await wb.texts_count(1)
        await wd.texts_count(1)
        with trio.fail_after(DEADLINE):
            await carol.wait_delivered()

        await rdv.stop()
        for w in (wa, wb, wc, wd):
            await w.system("Lost the rendezvous; reconnecting")
        assert alice.server_state == "reconnecting"

        # The rendezvous is down: the direct link carries on, both ways.
        for i in range(3):
            await alice.send("bob", f"while down {i}")
            await bob.send("alice", f"still here {i}")
        await wb.texts_count(4)
        await wa.texts_count(3)
        assert incoming(wb)[1:] == [(f"while down {i}", "direct") for i in range(3)]
        assert incoming(wa) == [(f"still here {i}", "direct") for i in range(3)]
        with trio.fail_after(DEADLINE):
            await alice.wait_delivered()
            await bob.wait_delivered()

        # A new rendezvous on the same port, same accounts: everyone comes back alone.
        assert await rdv.start(nursery, port) == port
        for w in (wa, wb, wc, wd):
            await w.system("Reconnected to the rendezvous")
        assert {n.server_state for n in (alice, bob, carol, dave)} == {"online"}
        assert rdv.online() == {"alice", "bob", "carol", "dave"}

        # The relay works again, through the new server, both ways.
        await carol.send("dave", "relayed after")
        await dave.send("carol", "relayed back")
        await wd.texts_count(2)
        await wc.texts_count(1)
        assert incoming(wd) == [("relayed before", "relayed"), ("relayed after", "relayed")]
        assert incoming(wc) == [("relayed back", "relayed")]
        with trio.fail_after(DEADLINE):
            await carol.wait_delivered()
            await dave.wait_delivered()

        # ... and the direct conversation is still on, still direct.
        await alice.send("bob", "after the restart")
        await wb.texts_count(5)
        assert wb.texts() == [
            "before the restart",
            *(f"while down {i}" for i in range(3)),
            "after the restart",
        ]
        assert alice.talks["bob"].path == bob.talks["alice"].path == "direct"
        nursery.cancel_scope.cancel()


#: Seconds a message re-sent after the reconnection gets to arrive.
RESEND_DEADLINE = 2.0


async def test_a_relayed_message_typed_while_the_rendezvous_is_down_arrives_after(
    tmp_path: Path, fast_backoff: None
) -> None:
    rdv = Rendezvous(tmp_path / "rendezvous.sqlite3")
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        port = await rdv.start(nursery)
        wc = await stack.enter_async_context(_relay_only_peer(port, "carol", nursery))
        wd = await stack.enter_async_context(_relay_only_peer(port, "dave", nursery))
        carol = wc.node
        await carol.connect("dave")
        await carol.send("dave", "before")
        await wd.texts_count(1)
        with trio.fail_after(DEADLINE):
            await carol.wait_delivered()
        await rdv.stop()
        await wc.system("Lost the rendezvous; reconnecting")
        await carol.send("dave", "typed while down")  # "... the message waits"
        await rdv.start(nursery, port)
        await wc.system("Reconnected to the rendezvous")
        await wd.system("Reconnected to the rendezvous")
        with trio.move_on_after(RESEND_DEADLINE):
            await wd.texts_count(2)
        assert wd.texts() == ["before", "typed while down"]
        nursery.cancel_scope.cancel()
