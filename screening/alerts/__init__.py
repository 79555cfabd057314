"""Flagged parcels: alert policy, review queue, hold orders, and police alerts that are never lost.

intake.py         hooks inside the scan-upload and ingest transactions: review item, hold,
                  alert (+ outbox rows) commit together with their cause, or not at all
policy.py         per-category review / police scores as versioned data (pure)
review.py         reviewers' queue: SKIP LOCKED leases, confirm / clear / escalate / skip, audit
                  samples, threat image projection (tip.py) and per-reviewer scores
outcomes.py       a review outcome appended to the event log for compliance
holds.py          hold orders and their releases pushed down the station WebSockets (and so to
                  the bridge, which stops the belt; a release is left to a person to restart it)
relay.py          outbox relay: claim under a lease, send (webhooks.py), retry, dead-letter
feed.py           the SSE live feed's wake-ups; notifications.py: LISTEN/NOTIFY per process
police.py         acknowledge / assign / close, audited identity reads, watchlist, endpoints
component.py      all of it as one unit, started and stopped by create_app
"""

from screening.alerts.component import ALERT_OPTIONS, ALERTS, AlertsComponent, acknowledge_hold

__all__ = ["ALERTS", "ALERT_OPTIONS", "AlertsComponent", "acknowledge_hold"]
