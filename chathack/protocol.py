"""The rendezvous line grammar, shared by the server and the peer (sans-IO).

Theory of operation
-------------------
The rendezvous speaks UTF-8 text, one message per line (``\\n``, an optional
``\\r`` before it is ignored), so that a person can drive it with ``nc``. The
formats are the ones of the original hackathon notes:

client -> server::

    username: NAME          log in or register
    password: SECRET        answer to Servidor[PASSWORD]
    resume: NAME TOKEN      log in again with the last login's Servidor[TOKEN]
    key: BASE64             this user's identity key (the server vouches for it)
    port: N                 the TCP port this peer accepts direct links on
    lan: HOST:PORT ...      this peer's own addresses ("lan: -": none)
    connect: NAME           start a conversation with NAME
    punch: NAME             time a hole punch with NAME (both get Servidor[PUNCH])
    msg: NAME TEXT          relay one line to NAME
    mail: NAME ID TEXT      store TEXT for NAME, online or not (docs/MAILBOX.md)
    ack: ORIGIN ID ...      these MAIL lines arrived: the server may forget them
    read: ORIGIN ID ...     these MAIL lines were shown: tell their senders
    receipt: FLAG NAME ID ..  these receipts arrived: the server may forget them
    ::COMMAND [ARG]         ::users ::help ::end ::quit ...
    TEXT                    anything else: relayed to the current partner

server -> client::

    Servidor[FLAG]: TEXT    the origin is the server
    ORIGIN: TEXT            a line relayed from user ORIGIN

This module is the one import surface of the grammar, which lives in
:mod:`chathack.grammar`, :mod:`chathack.client_events` and
:mod:`chathack.server_lines`; together they turn bytes into those events and
events into bytes. It never
touches a socket, a clock or trio: :class:`LineBuffer` frames bytes into
lines, ``parse_*`` turn a line into a frozen dataclass, ``format_*`` go back.
Bad input from the other side raises :class:`RemoteProtocolError`, whose
message is fit to send back in a ``Servidor[ERROR]`` line; the connection
stays usable afterwards.
"""

from __future__ import annotations

from chathack.client_events import (
    CLIENT_KEYWORDS,
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
    PublishPrekeys,
    Punch,
    Receipt,
    ReceiptAck,
    Resume,
    Text,
    Username,
    format_client_event,
    parse_client_line,
)
from chathack.grammar import (
    CONTROLS_IN_LINE,
    FLAG_RE,
    KEY_RE,
    KICKED_PREFIX,
    MAIL_ID_RE,
    MAX_LAN_ADDRS,
    MAX_LINE_BYTES,
    MAX_MAIL_KEYS,
    MAX_RELAY_CHARS,
    MAX_STAMP_DIGITS,
    MAX_TEXT_CHARS,
    NAME_RE,
    RECEIPT_FLAGS,
    SERVER_ORIGIN,
    TOKEN_RE,
    LineBuffer,
    MailKey,
    check_mail_id,
    check_name,
    check_text,
    encode_line,
    format_endpoint,
    format_mail_keys,
    has_controls,
    is_endpoint,
    is_port,
    parse_endpoint,
)
from chathack.server_lines import (
    REFUSAL_CODES,
    MailItem,
    PeerAddress,
    Refusal,
    ServerEvent,
    ServerLine,
    UserLine,
    UserState,
    format_mail,
    format_peer_address,
    format_refusal,
    format_server_line,
    format_user_line,
    format_users,
    parse_mail,
    parse_mail_key,
    parse_peer_address,
    parse_refusal,
    parse_server_line,
    parse_users,
    parse_users_more,
)

__all__ = [
    "CLIENT_KEYWORDS",
    "CONTROLS_IN_LINE",
    "FLAG_RE",
    "KEY_RE",
    "KICKED_PREFIX",
    "MAIL_ID_RE",
    "MAX_LAN_ADDRS",
    "MAX_LINE_BYTES",
    "MAX_MAIL_KEYS",
    "MAX_RELAY_CHARS",
    "MAX_STAMP_DIGITS",
    "MAX_TEXT_CHARS",
    "NAME_RE",
    "RECEIPT_FLAGS",
    "REFUSAL_CODES",
    "SERVER_ORIGIN",
    "TOKEN_RE",
    "AskPrekeys",
    "ClientEvent",
    "Command",
    "Connect",
    "IdentityKey",
    "Lan",
    "LineBuffer",
    "ListenPort",
    "Mail",
    "MailAck",
    "MailItem",
    "MailKey",
    "MailRead",
    "Msg",
    "Password",
    "PeerAddress",
    "PublishPrekeys",
    "Punch",
    "Receipt",
    "ReceiptAck",
    "Refusal",
    "Resume",
    "ServerEvent",
    "ServerLine",
    "Text",
    "UserLine",
    "UserState",
    "Username",
    "check_mail_id",
    "check_name",
    "check_text",
    "encode_line",
    "format_client_event",
    "format_endpoint",
    "format_mail",
    "format_mail_keys",
    "format_peer_address",
    "format_refusal",
    "format_server_line",
    "format_user_line",
    "format_users",
    "has_controls",
    "is_endpoint",
    "is_port",
    "parse_client_line",
    "parse_endpoint",
    "parse_mail",
    "parse_mail_key",
    "parse_peer_address",
    "parse_refusal",
    "parse_server_line",
    "parse_users",
    "parse_users_more",
]
