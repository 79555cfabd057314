"""Flagged parcels: alert policy, review queue, hold orders, and police alerts that are never lost
(transactional outbox, Standard Webhooks relay, live feed)."""

from screening.alerts.component import ALERT_OPTIONS, ALERTS, AlertsComponent, acknowledge_hold

__all__ = ["ALERTS", "ALERT_OPTIONS", "AlertsComponent", "acknowledge_hold"]
