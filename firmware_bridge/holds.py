"""Hold orders at the station, as plain state: which holds stopped this belt, which the gateway has
since released, and whether the operator may restart the belt. No I/O; ``app.py`` acts on it.

A release never restarts the belt by itself (PROTOCOL.md, "Hold release"): a person at the
tunnel restarts it, once the held parcel is dealt with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

# BELT_STOP's reason is a protocol string of at most 255 UTF-8 bytes (PROTOCOL.md, "Messages");
# the gateway's hold id has no such bound, and may be anything.
STOP_REASON_ID_CHARS: Final = 64


def stop_reason(hold_id: str) -> str:
    """The BELT_STOP reason for a hold: ASCII (one byte a character) and bounded, so any hold id
    fits the frame; the full id is in the log and on ``/status``."""
    safe = hold_id.encode("ascii", "backslashreplace").decode("ascii")
    return f"hold {safe[:STOP_REASON_ID_CHARS]}"


@dataclass(frozen=True, slots=True)
class Release:
    hold_id: str
    waybill_no: str
    resolution: str  # released (the parcel may go on) or seized (police keep it)
    at: datetime


@dataclass(slots=True)
class HoldBook:
    open: dict[str, str] = field(default_factory=dict)  # hold_id -> waybill_no
    released: list[Release] = field(default_factory=list)  # newest last, at most ``keep``
    belt_stopped: bool = False  # the belt is stopped for a hold and not restarted since
    keep: int = 20

    def hold(self, hold_id: str, waybill_no: str) -> bool:
        """Record a hold; False for one this book has already seen released (a late copy of
        the order, overtaken by its release): it must not stop the belt again for good."""
        if any(r.hold_id == hold_id for r in self.released):
            return False
        self.open[hold_id] = waybill_no
        self.belt_stopped = True
        return True

    def release(self, release: Release) -> bool:
        """Record a release (again, if re-sent: idempotent); True when no hold keeps the belt
        stopped any more, so the operator may restart it."""
        self.open.pop(release.hold_id, None)
        if all(r.hold_id != release.hold_id for r in self.released):
            self.released = [*self.released, release][-self.keep :]
        return self.restart_allowed

    @property
    def restart_allowed(self) -> bool:
        return self.belt_stopped and not self.open

    @property
    def keeps_belt_stopped(self) -> bool:
        """A hold stopped the belt and no person has restarted it since, or a hold is still
        open: nothing but an operator may start the belt (PROTOCOL.md, "Hold release")."""
        return self.belt_stopped or bool(self.open)

    def restarted(self) -> None:
        self.belt_stopped = False

    def to_json(self) -> str:
        """The book as kept in the spool, so a restarted bridge still knows which holds stopped
        its belt (the gateway does not send an acknowledged hold again)."""
        return json.dumps(
            {
                "open": self.open,
                "released": [
                    [r.hold_id, r.waybill_no, r.resolution, r.at.isoformat()]
                    for r in self.released
                ],
                "belt_stopped": self.belt_stopped,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> HoldBook:
        doc = json.loads(text)
        return cls(
            open={str(k): str(v) for k, v in doc["open"].items()},
            released=[
                Release(h, w, res, datetime.fromisoformat(at)) for h, w, res, at in doc["released"]
            ],
            belt_stopped=bool(doc["belt_stopped"]),
        )
