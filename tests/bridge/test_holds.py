"""The station's hold book: a release is recorded (once, however often it is re-sent) and only
says the operator may restart the belt; it never restarts it."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.frames import BeltStop
from firmware_bridge.holds import HoldBook, Release, stop_reason

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_the_belt_may_be_restarted_only_when_every_hold_that_stopped_it_is_released() -> None:
    book = HoldBook()
    assert not book.restart_allowed  # nothing stopped it
    book.hold("h-1", "SF1")
    book.hold("h-2", "SF2")
    assert not book.release(Release("h-1", "SF1", "released", NOW))
    assert list(book.open) == ["h-2"]
    assert book.release(Release("h-2", "SF2", "seized", NOW))
    assert book.restart_allowed
    book.restarted()
    assert not book.restart_allowed


def test_a_late_copy_of_a_released_hold_does_not_stop_the_belt_again() -> None:
    book = HoldBook()
    assert book.hold("h-1", "SF1")
    book.release(Release("h-1", "SF1", "released", NOW))
    book.restarted()
    assert not book.hold("h-1", "SF1")  # the order, re-sent, arriving after its release
    assert not book.open
    assert not book.keeps_belt_stopped


def test_the_book_survives_a_round_trip_through_its_saved_form() -> None:
    book = HoldBook()
    book.hold("h-1", "SF1")
    book.hold("h-2", "SF2")
    book.release(Release("h-1", "SF1", "seized", NOW))
    again = HoldBook.from_json(book.to_json())
    assert again.open == {"h-2": "SF2"}
    assert again.released == [Release("h-1", "SF1", "seized", NOW)]
    assert again.belt_stopped
    assert not again.restart_allowed


def test_a_re_sent_or_unknown_release_is_recorded_once_and_changes_nothing_else() -> None:
    book = HoldBook(keep=3)
    book.hold("h-1", "SF1")
    release = Release("h-1", "SF1", "released", NOW)
    assert book.release(release)
    assert book.release(release)  # the gateway re-sent it before our ack arrived
    assert [r.hold_id for r in book.released] == ["h-1"]
    book.restarted()
    assert not book.release(Release("h-9", "SF9", "released", NOW))  # never held here
    for i in range(5):
        book.release(Release(f"x-{i}", "SF", "released", NOW))
    assert [r.hold_id for r in book.released] == ["x-2", "x-3", "x-4"]  # bounded


@given(st.text(max_size=2000))
def test_any_hold_id_gives_a_belt_stop_reason_the_protocol_can_carry(hold_id: str) -> None:
    reason = stop_reason(hold_id)
    assert reason.isascii()
    assert reason.startswith("hold ")
    assert BeltStop.decode_payload(BeltStop(reason).encode_payload()) == BeltStop(reason)


def test_a_short_ascii_hold_id_is_kept_whole_in_the_stop_reason() -> None:
    assert stop_reason("4f9c0e1a-7d2b-4c55-9a0e-3b1f2d6c8e90") == (
        "hold 4f9c0e1a-7d2b-4c55-9a0e-3b1f2d6c8e90"
    )
    assert stop_reason("扣-1") == "hold \\u6263-1"


def test_the_belt_is_kept_stopped_until_a_person_restarts_it() -> None:
    book = HoldBook()
    assert not book.keeps_belt_stopped
    book.hold("h-1", "SF1")
    assert book.keeps_belt_stopped
    book.release(Release("h-1", "SF1", "released", NOW))
    assert book.keeps_belt_stopped  # released, but nobody has restarted it yet
    book.restarted()
    assert not book.keeps_belt_stopped
    book.hold("h-2", "SF2")
    book.restarted()  # an operator restarted it with h-2 still open
    assert book.keeps_belt_stopped
