"""The login dialogue and ``::passwd``: the part of a connection's life in
which it waits on password hashing (argon2id in threads), so it is async and
lives apart from the synchronous hub.

Per connection the I/O layer (:mod:`rendezvous.server`) keeps a
:class:`LoginState` and hands every line before login to :meth:`Logins.step`::

    <- Servidor[USERNAME]: Who are you? Send "username: NAME"
    -> username: alice                 (or: resume: alice TOKEN)
    <- Servidor[PASSWORD]: Password for alice
    -> password: secret
    <- Servidor[OK]: Welcome back alice ...
    <- Servidor[SEEN]: 203.0.113.101:40211
    <- Servidor[TOKEN]: 3q2-... 600

Attempts are slowed per source address by a token bucket
(``--max-login-rate``; a registration counts ``REGISTRATION_COST`` attempts),
and per account and address by growing delays after wrong passwords
(:class:`~rendezvous.accounts.FailedLogins`), *reserved* before anything is
hashed; a connection gets ``--max-login-tries`` wrong passwords before it is
closed. The hashing itself goes through a fair queue
(:mod:`rendezvous.hashqueue`, driven by
:class:`~rendezvous.passwords.HashScheduler`), which refuses some attempts
cheaply, before any hash, with a ``RETRY`` line and the ``PASSWORD`` prompt
again: a second attempt at an account while one is pending, a registration
past ``--max-new-accounts``, a full line of hashes. A refusal is not a wrong
password: it does not count against ``--max-login-tries``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from contextlib import suppress

import trio

from chathack.protocol import Command, Password, Resume, Username
from chathack.server_events import PasswdResult, Seen, TokenIssued
from rendezvous.accounts import FailedLogins, ResumeTokens
from rendezvous.connection import Connection
from rendezvous.counts import Counts
from rendezvous.hashqueue import NEW_ACCOUNTS, PENDING, HashQueue, Kind, Refusal
from rendezvous.hub import Hub, Session
from rendezvous.limits import Limits, login_buckets, source_key
from rendezvous.login_guard import LocalLoginGuard, LoginGuard, Pending
from rendezvous.passwords import MIN_PASSWORD_CHARS, HashScheduler, Passwords
from rendezvous.shared import (
    AccountBook,
    LocalAccountBook,
    LocalClaims,
    LocalTokenBook,
    PresenceClaims,
    SharedStoreDown,
    Taken,
    TokenBook,
)
from rendezvous.store import Account

log = logging.getLogger("chathack.rendezvous")

TOO_MANY_TRIES = "Too many failed attempts; connect again to retry"
#: Said (with BYE) when a login needs the shared store and it does not answer.
STORE_DOWN = (
    "This server cannot reach the store it shares with the other servers, so it "
    "cannot log you in now; try again in a moment (or another server)"
)
#: The flag of a password line refused before any hash (busy, pending, rate):
#: not a wrong password, so a program sends the same one again a little later
#: (``ERROR`` would read as "wrong", and a script would give up for good).
RETRY_FLAG = "RETRY"
#: Password attempts (of ``--max-login-rate``) one registration counts for: it makes
#: an account too. So one address registers 10 a minute by default, and it takes 30
#: addresses to use up ``--max-new-accounts`` (300) and keep others from registering.
REGISTRATION_COST = 3


def looks_like(name: str, registered: str) -> str:
    return (
        f"{name} reads too much like {registered}, a registered user: pick a name "
        "nobody could take for theirs"
    )


class Failed(enum.Enum):
    """How a password line that let nobody in ended."""

    WRONG = "wrong"  # a wrong password (or one too short): counts against the tries
    REFUSED = "refused"  # refused before any hashing: try again, it does not count


class LoginState:
    """One connection's progress through the login dialogue."""

    __slots__ = ("account", "failures", "name")

    def __init__(self) -> None:
        self.name: str | None = None
        self.account: Account | None = None
        self.failures = 0

    def count_failure(self, limits: Limits) -> bool:
        """Count one failure; True when the connection has used up its tries."""
        self.failures += 1
        return self.failures >= limits.max_login_tries


class Logins:
    """Logging in (password or resume token), registering, and ``::passwd``."""

    def __init__(
        self,
        hub: Hub,
        passwords: Passwords,
        limits: Limits,
        clock: Callable[[], float],
        *,
        accounts: AccountBook | None = None,
        token_book: TokenBook | None = None,
        claims: PresenceClaims | None = None,
        guard: LoginGuard | None = None,
        counts: Counts | None = None,
    ) -> None:
        self.hub = hub
        self.counts = counts or Counts()  # login outcomes, for the operators
        self.passwords = passwords
        self.limits = limits
        self.clock = clock
        #: Who hashes next (fair across addresses, one attempt per account), and the
        #: back-off after wrong passwords (``hash_queue.failed``), reserved in it.
        #: With several instances the delays, the one pending attempt per account
        #: and the registration rate are the shared ``guard``'s (rendezvous/login_guard.py),
        #: and the queue here only orders this instance's hashing.
        self.guard: LoginGuard = guard or LocalLoginGuard()
        shared = guard is not None
        self.hash_queue = HashQueue(
            passwords.workers,
            FailedLogins(base=0.0) if shared else FailedLogins(),
            new_accounts_per_minute=0.0 if shared else limits.max_new_accounts,
        )
        self.hashing = HashScheduler(self.hash_queue)
        self.tokens = ResumeTokens()
        self.login_rates = login_buckets(limits)
        #: Accounts, resume tokens and login epochs: this process's own, or
        #: shared with the other instances (rendezvous/shared.py).
        self.accounts = accounts or LocalAccountBook(hub.store)
        self.token_book = token_book or LocalTokenBook(self.tokens)
        self.claims = claims or LocalClaims()

    @property
    def failed_logins(self) -> FailedLogins:
        return self.hash_queue.failed

    @failed_logins.setter
    def failed_logins(self, failed: FailedLogins) -> None:
        self.hash_queue.failed = failed

    async def logged_in(
        self, session: Session, account: Account, verb: str, outcome: str = "password"
    ) -> bool:
        """Let ``session`` in as ``account``; False (and a BYE said) if the shared
        store could not record it: the connection is then closed."""
        try:
            session.epoch = await self.claims.claim(account.name)
            token = await self.token_book.issue(account.name, session.ip, trio.current_time())
        except SharedStoreDown as e:
            log.error("%s not logged in: %s", account.name, e)
            session.say("BYE", STORE_DOWN)
            return False
        if session.closed:
            return False
        self.hub.attach(session, account, self.clock())
        session.say(
            "OK", f"{verb} {account.name}. You are seen as {session.ip}. ::help lists the commands"
        )
        # Where this client's connection comes from, after any NAT (like STUN).
        session.tell(Seen(session.ip, session.remote_port or 0))
        session.tell(TokenIssued(token, int(self.token_book.ttl)))
        self.hub.after_login(session, self.clock())  # then what waits for it (mail)
        log.info("%s logged in from %s", account.name, session.ip)
        self.counts.logins[outcome] += 1  # password, registered, resumed
        return True

    async def _verify(
        self, conn: Connection, session: Session, account: Account, secret: str
    ) -> tuple[bool, str | None] | Refusal:
        """Check ``secret`` against ``account`` in its turn, its back-off reserved
        first (here and, with several instances, in the shared guard); the
        verdict feeds the back-off. Or the refusal, before any hash."""
        source = source_key(session.ip)
        admitted = await self.guard.admit(account.name, source)
        if isinstance(admitted, Pending):
            return Refusal("account", PENDING.format(account.name))
        verdict: bool | None = None
        try:
            if admitted > 0:
                log.info(
                    "%s from %s: waiting %.1f s after failed logins",
                    account.name,
                    session.ip,
                    admitted,
                )
                with conn.interruptible():
                    await trio.sleep(admitted)
            checked = await self._verify_here(conn, session, account, secret)
            if not isinstance(checked, Refusal):
                verdict = checked[0]
            return checked
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2), suppress(SharedStoreDown):
                await self.guard.verdict(account.name, source, verdict)

    async def _verify_here(
        self, conn: Connection, session: Session, account: Account, secret: str
    ) -> tuple[bool, str | None] | Refusal:
        ticket = self.hashing.reserve(Kind.LOGIN, account.name, source_key(session.ip))
        if isinstance(ticket, Refusal):
            log.debug("%s from %s: refused (%s)", account.name, session.ip, ticket.reason)
            return ticket
        verdict: bool | None = None
        try:
            wait = ticket.start - trio.current_time()
            if wait > 0:
                log.info(
                    "%s from %s: waiting %.1f s after failed logins", account.name, session.ip, wait
                )
            refusal = await self.hashing.wait_turn(ticket, conn.interruptible)
            if refusal is not None:
                return refusal
            result = await self.passwords.verify(account.pw_hash, secret)
            verdict = result[0]
            return result
        finally:
            self.hashing.done(ticket, verdict)

    async def _hash(
        self, conn: Connection, session: Session, kind: Kind, name: str | None, secret: str
    ) -> str | Refusal:
        """Hash a new password (a registration of ``name``, or ``::passwd``) in its turn."""
        if kind is Kind.REGISTER and not await self.guard.admit_registration():
            return Refusal("new-accounts", NEW_ACCOUNTS)
        ticket = self.hashing.reserve(kind, name, source_key(session.ip))
        if isinstance(ticket, Refusal):
            log.debug("%s from %s: refused (%s)", name, session.ip, ticket.reason)
            return ticket
        try:
            refusal = await self.hashing.wait_turn(ticket, conn.interruptible)
            if refusal is not None:
                return refusal
            return await self.passwords.hash(secret)
        finally:
            self.hashing.done(ticket)

    async def passwd_step(self, conn: Connection, session: Session, secret: str) -> None:
        """``::passwd``: the current password, then the new one."""
        assert session.name is not None
        step, session.passwd_step = session.passwd_step, None
        try:
            await self._passwd_step(conn, session, step, secret)
        except SharedStoreDown as e:
            log.error("%s: ::passwd not done: %s", session.name, e)
            session.tell(PasswdResult(False, STORE_DOWN))

    async def _passwd_step(
        self, conn: Connection, session: Session, step: str | None, secret: str
    ) -> None:
        assert session.name is not None
        account = await self.accounts.get(session.name)
        if account is None:
            return
        if step == "old":
            checked = await self._verify(conn, session, account, secret)
            if isinstance(checked, Refusal):
                session.tell(PasswdResult(False, checked.text))
                return
            if not checked[0]:
                session.tell(PasswdResult(False, "Wrong password"))
                return
            session.passwd_step = "new"
            session.say("PASSWORD", f"New password for {account.name}")
            return
        if len(secret) < MIN_PASSWORD_CHARS:
            short = f"Password too short: use at least {MIN_PASSWORD_CHARS} characters"
            session.tell(PasswdResult(False, short))
            return
        pw_hash = await self._hash(conn, session, Kind.HASH, account.name, secret)
        if isinstance(pw_hash, Refusal):
            session.tell(PasswdResult(False, pw_hash.text))
            return
        await self.accounts.set_password_hash(account.name, pw_hash)
        await self.token_book.revoke(account.name)
        session.tell(PasswdResult(True))
        log.info("%s changed its password", account.name)

    async def _pace_login(self, conn: Connection, session: Session, cost: float) -> None:
        """Password attempts from one source address are limited per minute."""
        wait = self.login_rates.take(source_key(session.ip), trio.current_time(), cost)
        if wait > 0 and not conn.stopping:
            self.counts.rate_limited["login"] += 1
            log.debug("%s: over the password attempt rate; waiting %.1f s", session.ip, wait)
            with conn.interruptible():
                await trio.sleep(wait)

    async def step(
        self, conn: Connection, session: Session, login: LoginState, event: object
    ) -> bool:
        """Advance the login dialogue by one event; False closes the connection."""
        try:
            return await self._step(conn, session, login, event)
        except SharedStoreDown as e:
            log.error("login from %s refused: %s", session.ip, e)
            session.say("BYE", STORE_DOWN)
            return False

    async def _step(
        self, conn: Connection, session: Session, login: LoginState, event: object
    ) -> bool:
        match event:
            case Username(name):
                login.name = name
                login.account = await self.accounts.get(name)
                lookalike = None if login.account else await self.accounts.lookalike(name)
                if lookalike is not None:
                    session.say("ERROR", looks_like(name, lookalike))
                    login.name = None
                    session.say("USERNAME", 'Who are you? Send "username: NAME"')
                elif login.account is None:
                    session.say("PASSWORD", f"New user {name}: choose a password to register")
                else:
                    session.say("PASSWORD", f"Password for {login.account.name}")
                return True
            case Resume(name, token):
                account = await self.accounts.get(name)
                now = trio.current_time()
                if account is not None and await self.token_book.redeem(
                    name, token, session.ip, now
                ):
                    return await self.logged_in(session, account, "Welcome back", "resumed")
                self.counts.logins["failed"] += 1
                session.say(
                    "ERROR",
                    "That resume token was refused (expired, used, or issued "
                    "to another address): log in with your password",
                )
                if login.count_failure(self.limits):
                    session.say("BYE", TOO_MANY_TRIES)
                    return False
                session.say("USERNAME", 'Who are you? Send "username: NAME"')
                return True
            case Password(secret) if login.name is not None:
                account = await self._check_password(conn, session, login, secret)
                if isinstance(account, Account):
                    if login.account is None:
                        return await self.logged_in(session, account, "Registered", "registered")
                    return await self.logged_in(session, account, "Welcome back")
                self.counts.logins["failed" if account is Failed.WRONG else "throttled"] += 1
                if account is Failed.WRONG and login.count_failure(self.limits):
                    session.say("BYE", TOO_MANY_TRIES)
                    return False
                session.say("PASSWORD", f"Password for {login.name}")
                return True
            case Command("quit", _):
                session.say("BYE", "Goodbye")
                return False
            case _:
                session.say("ERROR", 'Log in first: send "username: NAME", then "password: SECRET"')
                if login.count_failure(self.limits):
                    session.say("BYE", TOO_MANY_TRIES)
                    return False
                session.say("USERNAME", 'Who are you? Send "username: NAME"')
                return True

    async def _check_password(
        self, conn: Connection, session: Session, login: LoginState, secret: str
    ) -> Account | Failed:
        assert login.name is not None
        if login.account is None:
            if len(secret) < MIN_PASSWORD_CHARS:  # refused before any wait or hash
                session.say(
                    "ERROR", f"Password too short: use at least {MIN_PASSWORD_CHARS} characters"
                )
                return Failed.WRONG
            await self._pace_login(conn, session, REGISTRATION_COST)
            pw_hash = await self._hash(conn, session, Kind.REGISTER, login.name, secret)
            if isinstance(pw_hash, Refusal):
                session.say(RETRY_FLAG, pw_hash.text)
                return Failed.REFUSED
            # Someone may have registered the name (or one like it) while we
            # hashed, here or on another instance: register() decides, once.
            made = await self.accounts.register(login.name, pw_hash, self.clock())
            if isinstance(made, Taken):
                if made.same:
                    session.say(
                        "ERROR", f"{login.name} was registered a moment ago; pick another name"
                    )
                else:
                    session.say("ERROR", looks_like(login.name, made.registered))
                return Failed.WRONG
            return made
        await self._pace_login(conn, session, 1)
        checked = await self._verify(conn, session, login.account, secret)
        if isinstance(checked, Refusal):
            session.say(RETRY_FLAG, checked.text)
            return Failed.REFUSED
        ok, new_hash = checked
        if not ok:
            session.say("ERROR", f"Wrong password for {login.account.name}")
            log.info("failed login for %s from %s", login.account.name, session.ip)
            return Failed.WRONG
        if new_hash is not None:
            await self.accounts.set_password_hash(login.account.name, new_hash)
        return login.account
