"""The log redactor: identity-document and phone numbers never leave the process in a log line,
and the identifiers that are not personal data (waybills, event ids, times) stay readable."""

from __future__ import annotations

import io
import json
import logging

import pytest

from screening.logs import RedactingJsonFormatter, RedactingTextFormatter, redact


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("sender 11010519491231002X refused", "sender 1101**********002X refused"),
        ("id11010519491231002x", "id1101**********002x"),  # right after letters
        ("id11010519491231002Xzhang", "id1101**********002Xzhang"),  # and before them
        ("passport E12345678.", "passport E******78."),
        ("EA1234567", "E******67"),
        ("G12345678", "G******78"),
        ("permit H12345678 / M1234567890", "permit H******78 / M********90"),
        ("call 13812345678", "call 138****5678"),
        ("call +8613812345678 or 008613812345678", "call +86138****5678 or 0086138****5678"),
    ],
)
def test_personal_numbers_are_masked(text: str, masked: str) -> None:
    assert redact(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "SF1234567890",
        "WH0042611290517000012",  # a 19-digit waybill is not an 18-character ID
        "WH004261129051700001",  # 18 digits, but no birth date and no valid check digit
        "JDX012345678901",  # waybills of the 2017 PR card's shape are left alone
        "DPK364081396587",
        "2091fea6-8cb4-4708-adf6-0c2a25426dc8",
        "2026-11-29T05:30:39.123+08:00",
        "91350100M000100Y43",  # a company's credit code names no person
        "tree size 12345678, took 1234 ms",
    ],
)
def test_what_is_not_personal_data_stays_readable(text: str) -> None:
    assert redact(text) == text


def _emit(formatter: logging.Formatter, message: str, **extra: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("tests.logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    try:
        int("bad document 11010519491231002X")  # a ValueError quoting its input
    except ValueError:
        logger.exception(message, extra=extra)
    return stream.getvalue()


def test_json_lines_mask_the_message_the_extra_fields_and_the_traceback() -> None:
    line = _emit(RedactingJsonFormatter(), "rejected", phone="13812345678", note="E12345678")
    entry = json.loads(line)
    assert entry["phone"] == "138****5678"
    assert entry["note"] == "E******78"
    assert "11010519491231002X" not in line
    assert "1101**********002X" in entry["exc"]


def test_text_lines_are_masked_too() -> None:
    line = _emit(RedactingTextFormatter("%(message)s"), "call 13812345678")
    assert "13812345678" not in line
    assert "11010519491231002X" not in line
    assert "138****5678" in line
