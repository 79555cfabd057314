"""Alert policy as versioned data, and the webhook schedule and signature (pure parts)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from screening.alerts.errors import InvalidPolicyError
from screening.alerts.policy import AlertPolicy, CategoryRule
from screening.alerts.webhooks import (
    DEFAULT_SCHEDULE,
    RetrySchedule,
    alert_payload,
    encode_body,
    new_secret,
    signed_headers,
    webhook_id,
)
from screening.storage.alerts import Alert
from tests.alerts.conftest import AlertGateway

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_review_and_police_scores_are_per_category() -> None:
    policy = AlertPolicy(
        categories={"firearms_and_parts": CategoryRule(0.2, 0.7)},
        default=CategoryRule(0.5, None),
    )
    gun = policy.assess([{"category": "firearms_and_parts", "score": 0.75}])
    assert gun.needs_review
    assert gun.police_category == "firearms_and_parts"
    battery = policy.assess([{"category": "lithium_batteries", "score": 0.99}])
    assert battery.needs_review
    assert battery.police_category is None  # the default rule never calls police
    faint = policy.assess([{"category": "firearms_and_parts", "score": 0.1}])
    assert not faint.needs_review


@pytest.mark.parametrize(
    "rules",
    [
        {"categories": {"x": {"review": 1.5, "police": None}}},
        {"categories": {"x": {"review": 0.6, "police": 0.5}}},
        {"categories": {"x": "high"}},
        {"categories": [], "default": None},
    ],
)
def test_a_malformed_policy_is_refused(rules: dict[str, object]) -> None:
    with pytest.raises(InvalidPolicyError):
        AlertPolicy.from_rules_json(1, rules)


def test_the_default_schedule_retries_for_over_72_hours() -> None:
    assert sum(DEFAULT_SCHEDULE) >= 72 * 3600
    schedule = RetrySchedule()
    rng = random.Random(1)
    delays = [schedule.delay_after(n, rng) for n in range(1, schedule.max_attempts)]
    assert all(d >= base for d, base in zip(delays, DEFAULT_SCHEDULE[1:], strict=True))
    assert schedule.delay_after(1, rng, retry_after_s=60.0) == 60.0  # Retry-After is honoured


def test_signed_headers_verify_with_standardwebhooks() -> None:
    alert = Alert(
        "S1",
        uuid.uuid4(),
        1,
        1,
        "scan_score",
        "explosives",
        0.9,
        "W1",
        uuid.uuid4(),
        None,
        3,
        NOW,
        NOW,
        "open",
        None,
        None,
        None,
    )
    secret = new_secret()
    body = encode_body(alert_payload(alert, "https://gw.example"))
    headers = signed_headers(secret, webhook_id(alert), body, datetime.now(UTC))
    payload = Webhook(secret).verify(body, headers)
    assert payload["data"]["alert_id"] == str(alert.alert_id)
    assert headers["webhook-id"] == webhook_id(alert)  # the same on every retry
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(body, headers)


async def test_each_policy_update_is_a_new_version(agw: AlertGateway) -> None:
    _, before = await agw.call("GET", "/v1/alerts/policy", role="supervisor")
    await agw.set_policy(police=0.6)
    status, after = await agw.call("GET", "/v1/alerts/policy", role="supervisor")
    assert status == 200
    assert after["version"] == before["version"] + 1
    assert after["default"] == {"review": 0.3, "police": 0.6}
    status, body = await agw.call(
        "PUT",
        "/v1/alerts/policy",
        role="admin",
        json={"categories": {"x": {"review": 0.9, "police": 0.1}}},
    )
    assert status == 422
    assert body["code"] == "invalid_policy"
    assert (await agw.call("PUT", "/v1/alerts/policy", role="police", json={}))[0] == 403
