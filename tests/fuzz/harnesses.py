"""Every fuzz harness, by name: ``HARNESSES[name](data: bytes) -> None``.

A harness feeds bytes into one real parser or state machine and checks its
contract: it returns normally when the code under test behaved (a valid
event, or the documented error, which the harness catches); any exception
that escapes it is a bug, and its traceback says where. The contract of
each is in its docstring; tests/fuzz/README.md explains how to run them.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.fuzz.cluster_harnesses import cluster_messages
from tests.fuzz.file_harnesses import file_transfer
from tests.fuzz.link_harnesses import conversation, file_chunks, handshake, link_frame, sealed
from tests.fuzz.peer_harnesses import mail_payload, partner_frames, peer_server_events
from tests.fuzz.protocol_harnesses import client_line, server_line
from tests.fuzz.server_harnesses import hub_lines, stored_rows

Harness = Callable[[bytes], None]

HARNESSES: dict[str, Harness] = {
    h.__name__: h
    for h in (
        client_line,
        server_line,
        link_frame,
        conversation,
        handshake,
        sealed,
        file_chunks,
        file_transfer,
        peer_server_events,
        partner_frames,
        mail_payload,
        hub_lines,
        stored_rows,
        cluster_messages,
    )
}
