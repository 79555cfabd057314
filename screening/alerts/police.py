"""The police side: alerts in scope, acknowledge / assign / close with a disposition (every action
recorded), the sender's identity behind an audited read, the watchlist, webhook endpoints, dead
letters and the alert policy."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from screening.alerts.errors import AlertClosedError, UnknownAlertError
from screening.alerts.intake import Clock, PolicyCache, utc_now
from screening.alerts.outcomes import append_review_event, lock_parcel
from screening.alerts.policy import AlertPolicy
from screening.alerts.webhooks import new_secret
from screening.domain.access import Principal, Role
from screening.errors import BadRequestError, ForbiddenError
from screening.protection import (
    PersonalDataError,
    PersonalDataVault,
    SealedValue,
    associated_data,
    field_associated_data,
)
from screening.storage import alerts as store
from screening.storage import review as review_store
from screening.storage.alerts import Alert, Hold

DISPOSITIONS = ("seized", "released", "false_alarm")
MIN_PURPOSE_CHARS = 8  # a case number or a sentence, not "x"


@dataclass(frozen=True, slots=True)
class SenderIdentity:
    record_event_id: uuid.UUID
    document_type: str | None
    document_number: str | None
    name: str | None
    phone: str | None
    contract_customer_ref: str | None


@dataclass(frozen=True, slots=True)
class MaskedSender:
    document_type: str | None
    document_masked: str | None
    name_masked: str | None
    phone_masked: str | None
    contract_customer_ref: str | None


def scope(principal: Principal) -> list[str] | None:
    return None if principal.sites is None else sorted(principal.sites)


class AlertService:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        vault: PersonalDataVault,
        policies: PolicyCache,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self._pool = pool
        self._vault = vault
        self._policies = policies
        self._clock = clock

    async def get(self, principal: Principal, alert_id: uuid.UUID) -> Alert:
        async with self._pool.acquire() as conn:
            alert = await store.get_alert(conn, alert_id, scope(principal))
        if alert is None:
            raise UnknownAlertError("no such alert in your sites")
        return alert

    async def details(
        self, principal: Principal, alert_id: uuid.UUID
    ) -> tuple[Alert, MaskedSender | None, list[dict[str, Any]]]:
        async with self._pool.acquire() as conn:
            alert = await store.get_alert(conn, alert_id, scope(principal))
            if alert is None:
                raise UnknownAlertError("no such alert in your sites")
            row = await store.find_sender(conn, alert.site_id, *_sender_key(alert))
            actions = await store.list_actions(conn, alert)
        sender = None
        if row is not None:
            sender = MaskedSender(
                row["document_type"],
                row["document_masked"],
                row["name_masked"],
                row["phone_masked"],
                row["contract_customer_ref"],
            )
        return alert, sender, actions

    async def find(self, principal: Principal, status: str | None, limit: int) -> list[Alert]:
        async with self._pool.acquire() as conn:
            return await store.list_alerts(conn, scope(principal), status, limit)

    async def act(
        self,
        principal: Principal,
        alert_id: uuid.UUID,
        action: str,
        *,
        assignee: str | None = None,
        disposition: str | None = None,
        note: str = "",
    ) -> Alert:
        """acknowledge, assign or close; each is recorded with who and when."""
        if action == "close" and disposition not in DISPOSITIONS:
            raise BadRequestError(
                "disposition is seized, released or false_alarm", code="invalid_disposition"
            )
        if action == "assign" and not assignee:
            raise BadRequestError("assign needs an assignee", code="missing_assignee")
        now = self._clock()
        async with self._pool.acquire() as conn, conn.transaction():
            found = await store.get_alert(conn, alert_id, scope(principal))
            if found is None:
                raise UnknownAlertError("no such alert in your sites")
            if action == "close" and found.waybill_no is not None:
                # Closing settles the parcel: its lock first, then the alert row, the order in
                # which a reviewer's confirmation takes them (else the two can deadlock).
                await lock_parcel(conn, found.site_id, found.waybill_no)
            alert = await store.get_alert(conn, alert_id, scope(principal), for_update=True)
            if alert is None:
                raise UnknownAlertError("no such alert in your sites")
            if alert.status == "closed":
                raise AlertClosedError("the alert is closed")
            detail: dict[str, Any] = {"note": note} if note else {}
            if action == "acknowledge":
                status = "acknowledged" if alert.status == "open" else alert.status
                await store.update_alert_state(conn, alert, status, None, None, None)
            elif action == "assign":
                detail["assignee"] = assignee
                await store.update_alert_state(conn, alert, "assigned", assignee, None, None)
            else:
                detail["disposition"] = disposition
                await store.update_alert_state(conn, alert, "closed", None, disposition, now)
                await self._settle_parcel(conn, alert, str(disposition), principal.key_id)
            await store.insert_action(
                conn, alert, uuid.uuid4(), action, principal.key_id, now, detail
            )
            updated = await store.get_alert(conn, alert_id, None)
        assert updated is not None
        return updated

    async def _settle_parcel(
        self, conn: Any, alert: Alert, disposition: str, actor: str
    ) -> Hold | None:
        """Closing an alert closes the parcel's hold: seized, or released. A release waits for
        the parcel's last open alert (a dismissed watchlist match must not let a parcel with a
        confirmed firearm go); then it clears, for compliance, every flagged scan of the parcel
        that nobody else still owes a decision on (its own, a station's, reviewers' clears
        deferred to police), and releases the hold unless a reviewer still has to decide
        another scan (that reviewer's clear releases it). A parcel police seized is never
        cleared."""
        if alert.waybill_no is None:
            return None
        now = self._clock()
        site_id, waybill_no = alert.site_id, alert.waybill_no
        status = "seized" if disposition == "seized" else "released"
        await lock_parcel(conn, site_id, waybill_no)
        if status == "seized":
            return await store.close_parcel_hold(conn, site_id, waybill_no, status, now, actor)
        if await store.parcel_has_open_alert(conn, site_id, waybill_no):
            return None  # (this alert is closed already in this transaction)
        own = (
            await review_store.upload_event_id(conn, site_id, alert.scan_id)
            if alert.scan_id is not None
            else None
        )
        # Every flag nobody else still owes a decision on is cleared now (the alert's own, a
        # station's, reviewers' clears deferred to police); the hold waits for the rest, and
        # the reviewer who clears the last of them releases it.
        waiting = await review_store.flags_awaiting_review(conn, site_id, waybill_no)
        await self._clear_flags(conn, site_id, waybill_no, alert.scan_id, actor,
                                f"alert:{alert.alert_id}", every_flag=True,
                                waiting=waiting)  # fmt: skip
        if waiting - {own}:
            return None
        return await store.close_parcel_hold(conn, site_id, waybill_no, status, now, actor)

    async def _clear_flags(
        self,
        conn: Any,
        site_id: str,
        waybill_no: str,
        scan_id: uuid.UUID | None,
        actor: str,
        key: str,
        *,
        every_flag: bool,
        waiting: set[uuid.UUID] | None = None,
    ) -> None:
        """Record a release as the clearing of flagged scans' events, so compliance lets the
        parcel leave (the caller holds the parcel's lock): the scan ``scan_id`` names, under
        ``key``, and with ``every_flag`` each other flagged scan of the parcel that no reviewer
        still has to decide (``waiting``, when the caller has read them already), under
        ``key/scan:<event id>``. Nothing, for a parcel police seized: a release of a later hold
        must not clear the flag it was seized for."""
        if await store.parcel_seized(conn, site_id, waybill_no):
            return
        own = (
            await review_store.upload_event_id(conn, site_id, scan_id)
            if scan_id is not None
            else None
        )
        flagged: list[uuid.UUID] = []
        if every_flag:
            if waiting is None:
                waiting = await review_store.flags_awaiting_review(conn, site_id, waybill_no)
            flagged = [
                e
                for e in await review_store.flagged_scan_events(conn, site_id, waybill_no)
                if e not in waiting
            ]
        for event_id in dict.fromkeys([*([own] if own else []), *flagged]):
            await append_review_event(
                conn, self._vault, site_id, event_id, "cleared", actor,
                key if event_id == own else f"{key}/scan:{event_id}", self._clock(),
            )  # fmt: skip

    async def identity(
        self, principal: Principal, alert_id: uuid.UUID, purpose: str
    ) -> tuple[Alert, SenderIdentity]:
        """The sender's full identity, for police only; the read is recorded in the same
        transaction (who, when, which record, the stated purpose) or not made at all."""
        if principal.role is not Role.POLICE:
            raise ForbiddenError("only police may read a sender's identity", code="forbidden_role")
        purpose = purpose.strip()
        if len(purpose) < MIN_PURPOSE_CHARS:
            raise BadRequestError(
                f"state the purpose of this read (at least {MIN_PURPOSE_CHARS} characters)",
                code="missing_purpose",
            )
        now = self._clock()
        async with self._pool.acquire() as conn, conn.transaction():
            alert = await store.get_alert(conn, alert_id, scope(principal))
            if alert is None:
                raise UnknownAlertError("no such alert in your sites")
            row = await store.find_sender(conn, alert.site_id, *_sender_key(alert))
            if row is None:
                raise UnknownAlertError("no real-name record for this alert", code="no_sender")
            record = (alert.site_id, str(row["event_id"]))

            def open_(field: str, blob: bytes | None) -> str | None:
                if blob is None or row is None:
                    return None
                sealed = SealedValue(row["pii_key_id"], bytes(blob))
                try:
                    return self._vault.open(sealed, aad=field_associated_data(*record, field))
                except PersonalDataError:
                    # Sealed before each field was bound: one associated data for the row.
                    return self._vault.open(sealed, aad=associated_data(*record))

            try:
                identity = SenderIdentity(
                    record_event_id=row["event_id"],
                    document_type=row["document_type"],
                    document_number=open_("document_number", row["document_sealed"]),
                    name=open_("name", row["name_sealed"]),
                    phone=open_("phone", row["phone_sealed"]),
                    contract_customer_ref=row["contract_customer_ref"],
                )
            except PersonalDataError as exc:
                raise UnknownAlertError(
                    "the sealed record cannot be opened", code="record_unreadable"
                ) from exc
            await store.record_pii_read(
                conn, alert, uuid.uuid4(), row["event_id"], principal.key_id, purpose, now
            )
        return alert, identity

    async def reads(self, principal: Principal, alert_id: uuid.UUID) -> list[dict[str, Any]]:
        async with self._pool.acquire() as conn:
            alert = await store.get_alert(conn, alert_id, scope(principal))
            if alert is None:
                raise UnknownAlertError("no such alert in your sites")
            return await store.list_pii_reads(conn, alert)

    # -- watchlist, endpoints, dead letters, policy --------------------------------------------

    async def add_watchlist(self, principal: Principal, entries: list[tuple[bytes, str]]) -> int:
        """List these entries. One already listed by another key keeps its label and owner,
        unless the caller's key has no site scope."""
        async with self._pool.acquire() as conn:
            await store.add_watchlist(conn, entries, principal.key_id, self._clock(),
                                      takes_over=principal.sites is None)
            return await store.watchlist_size(conn)

    async def remove_watchlist(self, principal: Principal, digests: list[bytes]) -> int:
        """The watchlist alerts at every site, so a key scoped to some sites may take off only
        the entries it put on; anyone else's needs a key without a site scope. All or nothing:
        the check runs on the rows the delete removed, and a refusal rolls the delete back."""
        async with self._pool.acquire() as conn, conn.transaction():
            removed = await store.remove_watchlist(conn, digests, principal.key_id, self._clock())
            if principal.sites is not None:
                others = sorted(d.hex() for d, by in removed.items() if by != principal.key_id)
                if others:
                    raise ForbiddenError(
                        f"{len(others)} of these entries were added by another key; removing "
                        "them needs a key without a site scope (nothing was removed): "
                        + ", ".join(others[:5]),
                        code="watchlist_entry_of_another_key",
                    )
            return await store.watchlist_size(conn)

    async def add_endpoint(
        self, url: str, sites: list[str], secret: str | None
    ) -> tuple[uuid.UUID, str]:
        endpoint_id = uuid.uuid4()
        secret = secret or new_secret()
        async with self._pool.acquire() as conn:
            await store.insert_endpoint(conn, endpoint_id, url, secret, sites, self._clock())
        return endpoint_id, secret

    async def endpoints(self) -> list[dict[str, Any]]:
        async with self._pool.acquire() as conn:
            return await store.list_endpoints(conn, self._clock())

    async def rotate_secret(
        self, endpoint_id: uuid.UUID, secret: str | None, overlap_s: float
    ) -> tuple[str, datetime | None]:
        """Give the endpoint a new secret (``secret``, or a fresh one); the old one is still
        signed with for ``overlap_s`` seconds. The new secret, and when the old one stops."""
        secret = secret or new_secret()
        now = self._clock()
        until = now + timedelta(seconds=overlap_s)
        async with self._pool.acquire() as conn:
            if not await store.rotate_endpoint_secret(conn, endpoint_id, secret, until, now):
                raise UnknownAlertError("no such endpoint", code="unknown_endpoint")
        return secret, until if overlap_s > 0 else None

    async def enable_endpoint(self, endpoint_id: uuid.UUID, enabled: bool) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await store.set_endpoint_enabled(
                conn, endpoint_id, enabled, None if enabled else "disabled by an admin"
            ):
                raise UnknownAlertError("no such endpoint", code="unknown_endpoint")
            await store.notify(conn, store.OUTBOX_CHANNEL, "endpoint")

    async def dead_letters(self, principal: Principal, limit: int) -> list[dict[str, Any]]:
        async with self._pool.acquire() as conn:
            return await store.list_dead(conn, scope(principal), limit)

    async def replay(self, alert_ids: list[uuid.UUID] | None, endpoint_id: uuid.UUID | None) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            return await store.replay_dead(conn, alert_ids, endpoint_id, self._clock())

    async def policy(self) -> AlertPolicy:
        async with self._pool.acquire() as conn:
            return await self._policies.get(conn)

    async def set_policy(self, principal: Principal, rules: dict[str, Any]) -> AlertPolicy:
        AlertPolicy.from_rules_json(0, rules)  # refuse a bad policy before storing it
        async with self._pool.acquire() as conn, conn.transaction():
            version = await store.insert_policy(conn, rules, principal.key_id, self._clock())
        self._policies.invalidate()
        return AlertPolicy.from_rules_json(version, rules)

    # -- holds -----------------------------------------------------------------------------------

    async def holds(self, principal: Principal, status: str | None, limit: int) -> list[Hold]:
        async with self._pool.acquire() as conn:
            return await store.list_holds(conn, scope(principal), status, limit)

    async def close_hold(self, principal: Principal, hold_id: uuid.UUID, status: str) -> Hold:
        if status not in ("released", "seized"):
            raise BadRequestError("a hold is released or seized", code="invalid_resolution")
        async with self._pool.acquire() as conn, conn.transaction():
            hold = await store.get_hold(conn, hold_id, scope(principal))
            if hold is None:
                raise UnknownAlertError("no such hold in your sites", code="unknown_hold")
            # As closing its alert does: the parcel's lock first, and a release clears the flag
            # that raised the hold, or compliance would still count the parcel as held back.
            await lock_parcel(conn, hold.site_id, hold.waybill_no)
            closed = await store.close_hold(
                conn, hold.site_id, hold_id, status, self._clock(), principal.key_id
            )
            if closed is None:
                raise AlertClosedError("the hold is already closed", code="hold_closed")
            if status == "released":
                # The flags the hold stood for: its scan's, or, for a station's own flag (no
                # image, so no review item and no scan id), the parcel's flagged scans, as
                # closing an alert clears them; else nobody could ever clear that flag.
                await self._clear_flags(
                    conn, hold.site_id, hold.waybill_no, hold.scan_id, principal.key_id,
                    f"hold:{hold_id}", every_flag=hold.scan_id is None,
                )  # fmt: skip
        return closed

    async def ack_hold(self, sites: list[str], hold_id: uuid.UUID) -> bool:
        async with self._pool.acquire() as conn:
            return await store.ack_hold(conn, sites, hold_id, self._clock())


def _sender_key(alert: Alert) -> tuple[uuid.UUID | None, str | None]:
    """Which real-name record an alert points at: the matched registration itself, else the
    parcel's latest one."""
    if alert.cause == "watchlist":
        return alert.source_event_id, None
    return None, alert.waybill_no
