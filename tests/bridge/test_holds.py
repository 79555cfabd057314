"""The station's hold book: a release is recorded (once, however often it is re-sent) and only
says the operator may restart the belt; it never restarts it."""

from __future__ import annotations

from datetime import UTC, datetime

from firmware_bridge.holds import HoldBook, Release

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
