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

Attempts are slowed, never refused outright: per source address by a token
bucket (``--max-login-rate``), per account and address by growing delays
after wrong passwords (:class:`~rendezvous.accounts.FailedLogins`), and a
connection gets ``--max-login-tries`` before it is closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from chathack.protocol import Command, Password, Resume, Username
from rendezvous.accounts import FailedLogins, ResumeTokens
from rendezvous.connection import Connection
from rendezvous.hub import Hub, Session
from rendezvous.limits import Limits, login_buckets, source_key
from rendezvous.passwords import MIN_PASSWORD_CHARS, Passwords
from rendezvous.store import Account

log = logging.getLogger("chathack.rendezvous")

TOO_MANY_TRIES = "Too many failed attempts; connect again to retry"


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
        self, hub: Hub, passwords: Passwords, limits: Limits, clock: Callable[[], float]
    ) -> None:
        self.hub = hub
        self.passwords = passwords
        self.limits = limits
        self.clock = clock
        self.failed_logins = FailedLogins()
        self.tokens = ResumeTokens()
        self.login_rates = login_buckets(limits)

    async def _throttle(self, conn: Connection, session: Session, name: str) -> None:
        """Wrong passwords before make this attempt wait (per account and address)."""
        wait = self.failed_logins.delay(name, source_key(session.ip), trio.current_time())
        if wait > 0 and not conn.stopping:
            log.info("%s from %s: waiting %.1f s after failed logins", name, session.ip, wait)
            with conn.interruptible():
                await trio.sleep(wait)

    def logged_in(self, session: Session, account: Account, verb: str) -> None:
        self.hub.attach(session, account, self.clock())
        session.say(
            "OK", f"{verb} {account.name}. You are seen as {session.ip}. ::help lists the commands"
        )
        # Where this client's connection comes from, after any NAT (like STUN).
        session.say("SEEN", self.hub.public_of(session))
        token = self.tokens.issue(account.name, session.ip, trio.current_time())
        session.say("TOKEN", f"{token} {int(self.tokens.ttl)}")
        self.hub.after_login(session, self.clock())  # then what waits for it (mail)
        log.info("%s logged in from %s", account.name, session.ip)

    async def passwd_step(self, conn: Connection, session: Session, secret: str) -> None:
        """``::passwd``: the current password, then the new one."""
        assert session.name is not None
        step, session.passwd_step = session.passwd_step, None
        account = self.hub.store.get_account(session.name)
        if account is None:
            return
        if step == "old":
            await self._throttle(conn, session, account.name)
            ok, _ = await self.passwords.verify(account.pw_hash, secret)
            if not ok:
                self.failed_logins.failed(account.name, source_key(session.ip), trio.current_time())
                session.say("ERROR", "Wrong password: the password was not changed")
                return
            session.passwd_step = "new"
            session.say("PASSWORD", f"New password for {account.name}")
            return
        if len(secret) < MIN_PASSWORD_CHARS:
            session.say(
                "ERROR",
                f"Password too short: use at least {MIN_PASSWORD_CHARS} "
                "characters; the password was not changed",
            )
            return
        self.hub.store.set_password_hash(account.name, await self.passwords.hash(secret))
        self.tokens.revoke(account.name)
        session.say("OK", "Password changed")
        log.info("%s changed its password", account.name)

    async def _pace_login(self, conn: Connection, session: Session) -> None:
        """Password attempts from one source address are limited per minute."""
        wait = self.login_rates.take(source_key(session.ip), trio.current_time())
        if wait > 0 and not conn.stopping:
            log.debug("%s: over the password attempt rate; waiting %.1f s", session.ip, wait)
            with conn.interruptible():
                await trio.sleep(wait)

    async def step(
        self, conn: Connection, session: Session, login: LoginState, event: object
    ) -> bool:
        """Advance the login dialogue by one event; False closes the connection."""
        match event:
            case Username(name):
                login.name = name
                login.account = self.hub.store.get_account(name)
                if login.account is None:
                    session.say("PASSWORD", f"New user {name}: choose a password to register")
                else:
                    session.say("PASSWORD", f"Password for {login.account.name}")
                return True
            case Resume(name, token):
                account = self.hub.store.get_account(name)
                now = trio.current_time()
                if account is not None and self.tokens.redeem(name, token, session.ip, now):
                    self.logged_in(session, account, "Welcome back")
                    return True
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
                await self._pace_login(conn, session)
                await self._throttle(conn, session, login.name)
                account = await self._check_password(session, login, secret)
                if account is None:
                    if login.count_failure(self.limits):
                        session.say("BYE", TOO_MANY_TRIES)
                        return False
                    session.say("PASSWORD", f"Password for {login.name}")
                    return True
                self.failed_logins.succeeded(account.name, source_key(session.ip))
                self.logged_in(
                    session, account, "Registered" if login.account is None else "Welcome back"
                )
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
        self, session: Session, login: LoginState, secret: str
    ) -> Account | None:
        assert login.name is not None
        store = self.hub.store
        if login.account is None:
            if len(secret) < MIN_PASSWORD_CHARS:
                session.say(
                    "ERROR", f"Password too short: use at least {MIN_PASSWORD_CHARS} characters"
                )
                return None
            pw_hash = await self.passwords.hash(secret)
            # Someone may have registered the name while we hashed.
            if store.get_account(login.name) is not None:
                session.say("ERROR", f"{login.name} was registered a moment ago; pick another name")
                return None
            return store.create_account(login.name, pw_hash, self.clock())
        ok, new_hash = await self.passwords.verify(login.account.pw_hash, secret)
        if not ok:
            self.failed_logins.failed(
                login.account.name, source_key(session.ip), trio.current_time()
            )
            session.say("ERROR", f"Wrong password for {login.account.name}")
            log.info("failed login for %s from %s", login.account.name, session.ip)
            return None
        if new_hash is not None:
            store.set_password_hash(login.account.name, new_hash)
        return login.account
