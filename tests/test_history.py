"""The peer's history (:class:`peer.history.History`), synchronously, in
memory and in a file: delivery states only move forward, a mail id is shown
once, and mail not yet stored waits to be sent again, across a reopen."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.history import STATES, History


@pytest.fixture
def history() -> History:
    return History(None)


def test_states_move_forward_only(history: History) -> None:
    history.add_outgoing("bob", "hi", 1.0, "e-1")
    assert history.state_of("Bob", "e-1") == "sent"  # names are case-insensitive
    assert not history.advance("bob", "e-1", "sent")  # already there
    assert history.advance("bob", "e-1", "delivered")  # may skip "stored"
    assert not history.advance("bob", "e-1", "stored")  # never backwards
    assert not history.advance("bob", "e-1", "delivered")
    assert history.advance("bob", "e-1", "read")
    assert history.state_of("bob", "e-1") == "read"
    assert not history.advance("bob", "nope", "delivered")  # unknown id
    assert not history.advance("carol", "e-1", "delivered")  # someone else's


def test_a_refused_mail_stays_refused(history: History) -> None:
    history.add_outgoing("bob", "hi", 1.0, "m-1", payload="#cm1:sealed")
    assert [p.msg_id for p in history.pending_mail()] == ["m-1"]
    history.give_up("bob", "m-1")
    assert history.state_of("bob", "m-1") == "refused"
    assert not history.advance("bob", "m-1", "delivered")
    assert history.pending_mail() == []


@given(st.lists(st.sampled_from(STATES), max_size=12))
def test_any_sequence_of_advances_ends_at_the_furthest_state(steps: list[str]) -> None:
    history = History(None)
    history.add_outgoing("bob", "hi", 1.0, "e-1")
    furthest = 0
    for state in steps:
        moved = history.advance("bob", "e-1", state)
        assert moved == (STATES.index(state) > furthest)
        furthest = max(furthest, STATES.index(state))
    assert history.state_of("bob", "e-1") == STATES[furthest]


def test_a_mail_id_is_shown_once_and_everything_survives_a_reopen(tmp_path: Path) -> None:
    first = History(tmp_path)
    assert first.add_incoming("alice", "hello", 1.0, "m-7")
    assert not first.add_incoming("alice", "hello", 2.0, "m-7")  # delivered again
    first.add_outgoing("alice", "queued", 3.0, "m-8", payload="#cm1:x")
    first.advance("alice", "m-8", "stored")
    first.add_outgoing("alice", "unsent", 4.0, "m-9", payload="#cm1:y")
    first.close()
    again = History(tmp_path)
    assert not again.add_incoming("alice", "hello", 5.0, "m-7")
    assert again.state_of("alice", "m-8") == "stored"
    assert [(p.msg_id, p.payload) for p in again.pending_mail()] == [("m-9", "#cm1:y")]
    assert [(e.text, e.outgoing) for e in again.last("alice", 10)] == [
        ("hello", False),
        ("queued", True),
        ("unsent", True),
    ]
    again.close()
