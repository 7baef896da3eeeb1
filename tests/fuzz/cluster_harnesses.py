"""A harness for what one rendezvous instance reads from the others (Redis
pub/sub): batches of operations, presence events and account messages.

Operations that parse are applied to a real hub of this instance through
its :class:`~rendezvous.cluster_inbox.ClusterInbox`, with two of its users
logged in and a partner elsewhere, so ops about strangers, ghosts and stale
epochs are all exercised.
"""

from __future__ import annotations

from chathack.errors import RemoteProtocolError
from rendezvous.cluster_inbox import ClusterInbox
from rendezvous.cluster_store import AccountReplica
from rendezvous.cluster_wire import BusOp, PresenceRecord, decode_batch, decode_presence
from rendezvous.hub import Hub, Session
from rendezvous.store import SqliteStore
from tests.fuzz.contract import Cursor, check_server_output
from tests.fuzz.server_harnesses import _Outbox

#: Most messages one input carries.
MAX_MESSAGES = 16


class _Link:
    instance = "here"

    def __init__(self) -> None:
        self.sent: list[tuple[str, BusOp]] = []

    def send(self, instance: str, op: BusOp) -> None:
        self.sent.append((instance, op))

    def announce(self, record: PresenceRecord) -> None:
        pass

    def withdraw(self, name: str, epoch: int) -> None:
        pass


def cluster_messages(data: bytes) -> None:
    """Contract: decoding raises nothing but RemoteProtocolError; applying
    what decoded raises nothing; the users here receive only whole, safe
    server lines; the account replica takes only well-formed messages."""
    cur = Cursor(data)
    store = SqliteStore(":memory:", mail_sync="NORMAL")
    for name in ("alice", "bob", "carol"):
        store.create_account(name, "hash", 1.0)
    link = _Link()
    hub = Hub(store, cluster=link)
    inbox = ClusterInbox(hub, link)
    replica = AccountReplica()
    outboxes = []
    for n, name in enumerate(("alice", "bob")):
        outbox = _Outbox()
        session = Session(outbox, f"198.51.100.{n + 1}", 40000 + n, epoch=5)
        account = store.get_account(name)
        assert account is not None
        hub.attach(session, account, 100.0)
        session.partners.add("carol")
        outboxes.append(outbox)
    hub.roster.put(PresenceRecord("carol", "there", 3, "203.0.113.5"))
    for _ in range(MAX_MESSAGES):
        if not cur.left():
            break
        kind, text = cur.below(3), cur.chunk()
        try:
            if kind == 0:
                inbox.apply(decode_batch(text), 200.0)
            elif kind == 1:
                inbox.presence(decode_presence(text), 200.0)
            else:
                replica.apply_message(text.decode("utf-8", "replace"))
        except RemoteProtocolError:
            pass
        for outbox in outboxes:
            check_server_output(outbox.take())
    store.close()
