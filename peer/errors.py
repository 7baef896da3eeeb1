"""Errors the peer reports to its user; each docstring says what to do next."""

from __future__ import annotations

from chathack.errors import ChathackError


class PeerError(ChathackError):
    """Something the peer cannot go on with; the message says what to do."""


class ServerUnreachable(PeerError):
    """The rendezvous did not answer: check --server HOST:PORT and that the server runs."""


class LoginFailed(PeerError):
    """The rendezvous refused the login: check the user name and password."""


class LinkFailed(PeerError):
    """A direct link could not be opened or broke; the relay is used instead."""
