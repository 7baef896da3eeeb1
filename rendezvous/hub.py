"""The rendezvous domain: who is online, where, and who talks to whom.

Plain synchronous code with no sockets and no clock: the I/O layer
(:mod:`rendezvous.server`) hands it one parsed event at a time with ``now``,
and the hub answers by putting bytes in sessions' outboxes, which never
block. Login (password hashing is slow, so it runs off the event loop) is the
I/O layer's job; the hub sees sessions only once they are logged in.

The mailbox (:mod:`rendezvous.mailbox`: ``mail:``, ``ack:``, ``read:``,
``receipt:``, ``::mailbox``) starts delivering to a session in
:meth:`Hub.after_login`, which the I/O layer calls once it has sent the login
reply, so that ``Servidor[MAIL]`` lines never come before ``Servidor[OK]``;
failing that, with the session's first line.
"""

from __future__ import annotations

from collections.abc import Iterable

from chathack.errors import RemoteProtocolError
from chathack.protocol import (
    KICKED_PREFIX,
    MAX_LINE_BYTES,
    MAX_RELAY_CHARS,
    AskPrekeys,
    ClientEvent,
    Command,
    Connect,
    IdentityKey,
    Lan,
    ListenPort,
    Mail,
    MailAck,
    MailRead,
    Msg,
    Password,
    PeerAddress,
    PublishPrekeys,
    Punch,
    ReceiptAck,
    Text,
    Username,
    UserState,
    format_endpoint,
    format_user_line,
)
from chathack.replies import Failed, RequestFailed
from chathack.server_events import (
    CallFrom,
    ConversationEnded,
    Failure,
    PartnerGone,
    PeerInfo,
    PunchNow,
    ServerFlagEvent,
    format_server_event,
)
from chathack.text import CONTROL_RE
from rendezvous.cluster_wire import Call, Deliver, Ended, Gone, PresenceRecord, PunchFrom
from rendezvous.commands import run_command
from rendezvous.counts import Counts
from rendezvous.mailbox import Mailbox, MailLimits, MailService
from rendezvous.prekeys import PrekeyDesk, PrekeyFailed, PrekeyService
from rendezvous.roster import ClusterLink, Roster
from rendezvous.session import Session
from rendezvous.store import Account, Store

#: What a run of lines relayed in one piece (:meth:`Hub.relay_run`) may not
#: hold: any C0 control but the line feeds between its lines, TAB included, or DEL.
RUN_UNPLAIN = bytes(c for c in range(32) if c != 10) + b"\x7f"

#: Most names one ``Servidor[USERS]`` line lists.
MAX_USERS_LISTED = 200
#: How a FAILED reason names each request ("You cannot punch yourself").
_VERBS = {"connect": "connect to", "msg": "send messages to", "punch": "punch to"}


class Hub:
    def __init__(
        self,
        store: Store,
        mail_limits: MailLimits | None = None,
        cluster: ClusterLink | None = None,
        mailbox: MailService | None = None,
        prekeys: PrekeyService | None = None,
    ) -> None:
        self.store = store
        #: What the operators' metrics read (rendezvous/counts.py); the server,
        #: its connections, the logins and the mailbox count into this one.
        self.counts = Counts()
        self.online: dict[str, Session] = {}  # lower-case name -> session
        #: The other instances sharing the store (None: this one is the service),
        #: and who is online there.
        self.cluster = cluster
        self.roster = Roster(cluster.instance if cluster is not None else "")
        #: One instance's mailbox (SQLite), or the cluster's (Redis) when given.
        self.mailbox: MailService = mailbox or Mailbox(
            store, store.mail, self.session_of, mail_limits
        )
        self.mailbox.counts = self.counts
        self.prekeys: PrekeyService = prekeys or PrekeyDesk(store, self.tell_owner)

    # presence -------------------------------------------------------------
    def attach(self, session: Session, account: Account, now: float) -> None:
        """``session`` just logged in as ``account``; an older session of it is closed."""
        key = account.name.lower()
        old = self.online.get(key)
        if old is not None and old is not session:
            old.say("BYE", f"{KICKED_PREFIX} from {session.ip}; this session is closed")
            # Same user, new connection (often a new network): conversations carry on.
            session.partners, old.partners = old.partners, set()
            session.invited, old.invited = old.invited, set()
            session.current = old.current
            self.detach(old, now)
            old.close()
        session.name = account.name
        session.pubkey = account.pubkey
        session.relay_prefix = f"{account.name}: ".encode()  # a name is ASCII
        self.online[key] = session
        self.store.record_login(account.name, session.ip, now)
        self.announce(session)

    def announce(self, session: Session) -> None:
        """Tell the other instances where ``session``'s user is now."""
        if self.cluster is not None and session.name is not None and session.epoch:
            self.cluster.announce(self.record_of(session))

    def record_of(self, session: Session) -> PresenceRecord:
        assert self.cluster is not None and session.name is not None
        return PresenceRecord(
            session.name,
            self.cluster.instance,
            session.epoch,
            session.ip,
            session.port,
            session.remote_port,
            session.lan,
            session.pubkey,
        )

    def after_login(self, session: Session, now: float) -> None:
        """The login reply has gone out: deliver what waits for ``session``."""
        self.mailbox.maybe_purge(now)
        self.mailbox.start(session)

    def purge(self, now: float) -> None:
        """Expire old mail now (it also happens by itself, at most hourly, on events)."""
        while self.mailbox.purge(now):
            pass

    def detach(self, session: Session, now: float) -> None:
        """``session`` is gone: partners are told, last-seen recorded."""
        self.mailbox.stop(session)
        if session.name is None:
            return
        key = session.name.lower()
        if self.online.get(key) is session:
            del self.online[key]
            self.store.record_seen(session.name, now)
            if self.cluster is not None and session.epoch:
                self.cluster.withdraw(session.name, session.epoch)
        self.tell_partners_gone(session.name, session.partners)
        session.partners.clear()

    def tell_partners_gone(self, name: str, partners: Iterable[str]) -> None:
        """``name`` went offline: its ``partners`` (here or elsewhere) are told."""
        for other_key in sorted(partners):
            other = self.online.get(other_key)
            if other is not None:
                self.partner_gone(other, name)
            elif self.cluster is not None and (far := self.roster.get(other_key)) is not None:
                self.cluster.send(far.instance, Gone(far.name, name))

    def partner_gone(self, session: Session, name: str) -> None:
        """``name``, a partner of ``session``, went offline."""
        key = name.lower()
        session.partners.discard(key)
        if session.current and session.current.lower() == key:
            session.current = None
        session.tell(PartnerGone(name, f"{name} went offline"))

    def session_of(self, name: str) -> Session | None:
        return self.online.get(name.lower())

    # events ---------------------------------------------------------------
    def handle(self, session: Session, event: ClientEvent, now: float) -> None:
        """Act on one event from a logged-in session; bad input gets an ERROR line."""
        self.mailbox.maybe_purge(now)
        if not self.mailbox.started(session) and event != Command("quit"):
            # The I/O layer did not call after_login: its first line starts delivery.
            self.after_login(session, now)
        try:
            match event:
                case Msg(to, text):  # first: by far the most common
                    self.relay(session, to, text)
                case Command(name, arg):
                    run_command(self, session, name, arg, now)
                case Connect(name):
                    self.connect(session, name)
                case Mail(to, msg_id, text):
                    self.mailbox.store_mail(session, to, msg_id, text, now)
                case MailAck(keys):
                    self.mailbox.ack(session, keys, now)
                case MailRead(keys):
                    self.mailbox.read(session, keys, now)
                case ReceiptAck(receipts):
                    self.mailbox.receipt_ack(session, receipts)
                case Text(text):
                    if session.current is None:
                        raise RemoteProtocolError(
                            'You are not in a conversation: send "connect: NAME" first, '
                            'or "msg: NAME TEXT"'
                        )
                    self.relay(session, session.current, text)
                case ListenPort(port):
                    session.port = port
                    assert session.name is not None
                    self.store.record_port(session.name, port)
                    where = format_endpoint(session.ip, port)
                    session.say("OK", f"Direct links to you go to {where}")
                    self.announce(session)
                case Lan(addrs):
                    session.lan = addrs
                    session.say("OK", f"Your own addresses: {' '.join(addrs) or 'none'}")
                    self.announce(session)
                case Punch(name):
                    self.punch(session, name)
                case PublishPrekeys(spk, opks):
                    assert session.name is not None
                    self.prekeys.publish_for(session, spk, opks)
                case AskPrekeys(name, count):
                    self.prekeys.hand_out_to(session, name, count)
                case IdentityKey(pubkey):
                    self.register_key(session, pubkey)
                case Username() | Password():
                    session.say("ERROR", f"You are already logged in as {session.name}")
        except (RequestFailed, PrekeyFailed) as e:
            session.tell(Failure(e.failed))
        except RemoteProtocolError as e:
            session.say("ERROR", str(e))

    def _target(self, session: Session, name: str, request: str) -> Session | PresenceRecord:
        """The online session of ``name`` (or where it is online, on another
        instance), for ``request`` (connect, msg, punch); raises
        :class:`RequestFailed` (answered with a FAILED line naming both)."""
        if session.name is not None and name.lower() == session.name.lower():
            raise RequestFailed(
                Failed(request, name, "self", f"You cannot {_VERBS[request]} yourself")
            )
        target: Session | PresenceRecord | None = self.session_of(name) or self.roster.get(name)
        if target is None:
            if self.store.get_account(name) is None:
                raise RequestFailed(
                    Failed(
                        request,
                        name,
                        "unknown",
                        f"There is no user named {name}: ::users lists who is registered",
                    )
                )
            raise RequestFailed(offline(request, name))
        return target

    def address_of(self, session: Session, asker: str | None = None) -> PeerAddress:
        """NAME, where it listens as we see it, and for chathack peers the
        candidates for a direct path: ``public=`` (its connection to us, after
        any NAT) and ``lan=`` (its own addresses).

        The addresses only for ``asker``s ``session`` asked to talk to: anyone
        may ask ``connect: NAME``, and where a person is (a home address, a
        LAN) is theirs to give. Without them the conversation opens on the
        relay, and ``session``'s peer, which learnt the asker's addresses
        from the ``CALL``, dials (or punches) once the asker's key checked out.
        """
        assert session.name is not None
        extra: list[tuple[str, str]] = []
        if session.pubkey is not None:
            extra.append(("key", session.pubkey))  # the rendezvous vouches for this key
        if asker is not None and asker.lower() not in session.invited:
            if session.lan is not None:
                extra.append(("lan", "-"))  # a chathack peer, its addresses withheld
            return PeerAddress(session.name, None, None, tuple(extra))
        if session.lan is not None:
            # A relay-only peer (no port) asked not to reveal where it is.
            if session.remote_port is not None and session.port is not None:
                extra.append(("public", format_endpoint(session.ip, session.remote_port)))
            extra.append(("lan", ",".join(session.lan) or "-"))
        if session.port is None:
            return PeerAddress(session.name, None, None, tuple(extra))
        return PeerAddress(session.name, session.ip, session.port, tuple(extra))

    def tell_owner(self, name: str, event: ServerFlagEvent) -> None:
        """Tell ``name`` (here, or on another instance) ``event``, if online."""
        owner = self.session_of(name)
        if owner is not None:
            owner.tell(event)
        elif self.cluster is not None and (far := self.roster.get(name)) is not None:
            line = format_server_event(event).decode("utf-8")
            self.cluster.send(far.instance, Deliver(far.name, line))

    def register_key(self, session: Session, pubkey: str) -> None:
        """Record the identity key of ``session``'s user (the password proved who it is).

        A different key than before means a new device or a reinstall; partners'
        peers see the new key in PEER/CALL and warn their users.
        """
        assert session.name is not None
        if session.pubkey == pubkey:
            session.say("OK", "Identity key unchanged")
            return
        changed = session.pubkey is not None
        self.store.set_pubkey(session.name, pubkey)
        if changed:
            self.prekeys.identity_changed(session.name)  # signed by the old key
        session.pubkey = pubkey
        self.announce(session)
        session.say(
            "OK",
            "Identity key changed: partners will be warned"
            if changed
            else "Identity key registered",
        )

    def public_of(self, session: Session) -> str:
        """Where the server sees ``session`` come from: ``IP:PORT``."""
        return format_endpoint(session.ip, session.remote_port or 0)

    def punch(self, session: Session, name: str) -> None:
        """Send both sides each other's public endpoint at once: both dial now."""
        target = self._target(session, name, "punch")
        assert session.name is not None and target.name is not None
        # Only between chathack peers that accept direct links: a relay-only peer
        # (no port) asked not to reveal where it is.
        if isinstance(target, PresenceRecord):
            if session.port is None or session.remote_port is None or session.lan is None:
                raise RequestFailed(_not_peer(target.name))
            assert self.cluster is not None
            self.cluster.send(
                target.instance,
                PunchFrom(target.name, session.name, session.ip, session.remote_port),
            )
            return
        if (
            target.lan is None
            or target.port is None
            or session.port is None
            or target.remote_port is None
            or session.remote_port is None
        ):
            raise RequestFailed(_not_peer(target.name))
        self.punch_from(target, session.name, session.ip, session.remote_port or 0)
        session.tell(PunchNow(target.name, target.ip, target.remote_port or 0))

    def punch_from(self, target: Session, caller: str, ip: str, port: int) -> None:
        """``caller`` (at public ``ip:port``) punches toward ``target``, a session here."""
        assert target.name is not None
        if target.lan is None or target.port is None or target.remote_port is None:
            raise RequestFailed(_not_peer(target.name))
        if caller.lower() not in target.invited:
            # A punch tells each side where the other is: only toward someone
            # who asked to talk to us (whose CALL gave us its addresses).
            raise RequestFailed(
                Failed("punch", target.name, "not-invited", f"{target.name} did not call you")
            )
        target.tell(PunchNow(caller, ip, port))

    def connect(self, session: Session, name: str) -> None:
        if (
            session.name is not None
            and name.lower() != session.name.lower()
            and self.session_of(name) is None  # online: no database lookup
            and self.roster.get(name) is None
        ):
            account = self.store.get_account(name)
            if account is not None:
                # Offline: the conversation opens all the same; what is said goes to
                # the mailbox (``mail:``), sealed to the key we vouch for.
                extra = [("state", "offline")]
                if account.pubkey is not None:
                    extra.append(("key", account.pubkey))
                session.tell(PeerInfo(PeerAddress(account.name, None, None, tuple(extra))))
                return
        target = self._target(session, name, "connect")
        assert session.name is not None and target.name is not None
        session.partners.add(target.name.lower())
        session.current = target.name
        session.invited.add(target.name.lower())
        call = CallFrom(self.address_of(session))
        if isinstance(target, PresenceRecord):
            # The callee's instance makes us partners there and answers with PEER:
            # what it tells about the callee depends on whom the callee called.
            assert self.cluster is not None
            line = format_server_event(call).decode("utf-8")
            self.cluster.send(target.instance, Call(target.name, session.name, line))
            return
        session.tell(PeerInfo(self.called(target, session.name)))
        target.tell(call)

    def called(self, target: Session, caller: str) -> PeerAddress:
        """``caller`` connected to ``target`` (a session here): partners now;
        what the caller is told about ``target``."""
        target.partners.add(caller.lower())
        if target.current is None:
            target.current = caller
        return self.address_of(target, asker=caller)

    def relay_line(self, session: Session, line: str, now: float) -> bool:
        """The relay's fast path: ``line`` (``msg: NAME TEXT`` from a logged-in
        session) relayed to ``NAME`` online here, without building an event.

        It takes only what the full parser and :meth:`handle` would relay, and
        sends exactly what they would (``tests/test_relay_fast.py`` holds both
        to that); anything else, or anything unusual (a name in another case
        is fine, a name on another instance, a CR, text to neutralise at its
        ends...), returns False and the caller parses the line in full. The
        grammar has one definition: this path only declines what it does not
        handle the same way.
        """
        if not self.mailbox.started(session):
            return False
        to, sep, text = line[5:].partition(" ")
        if not sep or not to.isascii():
            return False  # ASCII: no non-ASCII letter lower-cases into a name
        target = self.online.get(to.lower())
        if target is None or target is session:
            return False
        if CONTROL_RE.search(text) is not None:
            return False  # stripping may hide it, the parser decides
        text = text.strip()
        if not text or len(text) > MAX_RELAY_CHARS:
            return False
        if text.isascii():  # nothing to escape: the prefix made at login, then the text
            data = session.relay_prefix + text.encode("ascii") + b"\n"
        else:
            data = format_user_line(session.name or "", text)  # the one formatter
        if len(data) > MAX_LINE_BYTES:
            return False
        self.mailbox.maybe_purge(now)
        counts = self.counts
        counts.relayed_lines += 1
        counts.relayed_bytes += len(data)
        target.outbox.send(data)
        return True

    def relay_run(self, session: Session, run: bytes, now: float) -> int:
        """The relay's fastest path: ``run``, complete lines as they came
        (``LineBuffer.complete_lines``), each ``msg: NAME TEXT`` to the same
        ``NAME`` online here, relayed in one piece; the number of lines, or 0
        when it declines (nothing sent) and the lines go one by one.

        It takes a run only if every line is one :meth:`relay_line` would
        relay as it is: plain ASCII, no control character (nor TAB, which the
        parser strips at a text's ends), no space at a text's ends, the same
        name spelt the same way on every line. Each line is then the sender's
        prefix and the text, exactly as one by one, in the same order, as one
        write, which counts as its lines against the recipient's outbox bound
        (tests/test_relay_fast.py). It is never longer than one line may be.
        """
        # Each test is one pass in C over the run (a regex costs four times a
        # translate here): ASCII, no control but the line feeds, no text
        # ending in a space.
        size = len(run)
        if size > MAX_RELAY_CHARS:
            return 0  # a text in it might be longer than a relay takes
        if not run.isascii() or len(run.translate(None, RUN_UNPLAIN)) != size:
            return 0
        space = run.find(b" ", 5)
        if space < 6 or not run.startswith(b"msg: ") or run.find(b" \n") >= 0:
            return 0
        if not self.mailbox.started(session):
            return 0
        target = self.online.get(run[5:space].decode("ascii").lower())
        if target is None or target is session:
            return 0
        head = b"\n" + run[: space + 1]  # what starts every line after the first
        lines = run.count(b"\n")
        if run.count(head) != lines - 1 or run[space + 1] == 32 or head + b" " in run:
            return 0  # another name, or a text the parser would strip
        prefix = session.relay_prefix
        data = prefix + run[space + 1 :].replace(head, b"\n" + prefix)
        if len(data) > MAX_LINE_BYTES:
            return 0
        self.mailbox.maybe_purge(now)
        counts = self.counts
        counts.relayed_lines += lines
        counts.relayed_bytes += len(data)
        target.outbox.send(data, lines)
        return lines

    def relay(self, session: Session, to: str, text: str) -> None:
        target = self._target(session, to, "msg")
        assert session.name is not None
        line = format_user_line(session.name, text)
        if len(line) > MAX_LINE_BYTES:
            # The sender's name can be longer than the "msg: NAME " it replaces:
            # a line the recipient would drop as too long is refused here.
            raise RemoteProtocolError(
                f"Message too long to relay: the line to {target.name} would exceed "
                f"{MAX_LINE_BYTES} bytes"
            )
        self.counts.relayed_lines += 1
        self.counts.relayed_bytes += len(line)
        if isinstance(target, PresenceRecord):
            assert self.cluster is not None
            deliver = Deliver(target.name, line.decode("utf-8"), session.name)
            self.cluster.send(target.instance, deliver)
            return
        target.outbox.send(line)

    def end(self, session: Session, name: str | None) -> None:
        name = name or session.current
        if name is None:
            raise RemoteProtocolError("You are not in a conversation; there is nothing to end")
        key = name.lower()
        assert session.name is not None
        if key not in session.partners:
            raise RemoteProtocolError(f"You are not in a conversation with {name}")
        session.partners.discard(key)
        session.invited.discard(key)
        if session.current and session.current.lower() == key:
            session.current = None
        other = self.online.get(key)
        if other is not None:
            self.ended_by(other, session.name)
        elif self.cluster is not None and (far := self.roster.get(key)) is not None:
            self.cluster.send(far.instance, Ended(far.name, session.name))
        session.say("OK", f"Conversation with {name} ended")

    def ended_by(self, session: Session, name: str) -> None:
        """``name`` ended its conversation with ``session``."""
        key = name.lower()
        session.partners.discard(key)
        session.invited.discard(key)
        if session.current and session.current.lower() == key:
            session.current = None
        session.tell(ConversationEnded(name, f"{name} ended the conversation"))

    def users(self) -> tuple[list[UserState], int]:
        """Online users first, then the most recently seen; and how many were left out."""
        here = (s.name for s in self.online.values() if s.name is not None)
        online = sorted({*here, *self.roster.names()})
        on = {n.lower() for n in online}
        shown = [UserState(n, True) for n in online[:MAX_USERS_LISTED]]
        room = MAX_USERS_LISTED - len(shown)
        if room > 0:
            for acc in self.store.list_accounts(room + len(online)):
                if acc.name.lower() not in on and len(shown) < MAX_USERS_LISTED:
                    shown.append(UserState(acc.name, False))
        total = self.store.count_accounts()
        return shown, max(0, total - len(shown))


def _not_peer(name: str) -> Failed:
    return Failed("punch", name, "not-peer", f"{name} cannot take part in hole punching")


def offline(request: str, name: str) -> Failed:
    """The answer to ``request`` (connect, msg, punch) about ``name``, who is offline."""
    return Failed(
        request, name, "offline", f"{name} is offline: try again when ::users shows {name} online"
    )
