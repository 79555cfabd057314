"""The reviewer's queue and the police's live alerts in two real browsers: a reviewer confirms a
flagged image with the keyboard and the police view receives the alert over SSE, opens it with
its image, acknowledges and closes it."""

from __future__ import annotations

import uuid
from typing import Any

from tests.gateway.events import resident_id
from tests.web.conftest import OpenConsole
from tests.web.demo import Demo


async def image_loaded(page: Any, selector: str) -> bool:
    await page.wait_for_selector(selector)
    await page.wait_for_function(
        f"document.querySelector('{selector}').complete && "
        f"document.querySelector('{selector}').naturalWidth > 0"
    )
    return True


async def test_a_reviewer_confirms_and_police_see_the_alert_live(
    fresh: Demo, open_console: OpenConsole
) -> None:
    gw = fresh.gateway
    police = await open_console(gw.url, gw.keys.by_role["police"])
    assert police.url.endswith("#/alerts")  # police land on their alerts
    await police.wait_for_selector("#live.on")  # the SSE stream is open
    assert await police.locator("#alert-list li.alert").count() == 0

    reviewer = await open_console(gw.url, gw.keys.by_role["reviewer"])
    assert reviewer.url.endswith("#/review")
    await reviewer.wait_for_selector("#review-pane [data-item]")
    assert await image_loaded(reviewer, "#review-image")
    src = await reviewer.get_attribute("#review-image", "src")
    assert src is not None
    assert "/v1/review/items/" in src
    assert await reviewer.locator("#findings tr").count() >= 1
    first_item = await reviewer.get_attribute("#review-pane [data-item]", "data-item")
    # N gives the item back at once and shows the next; with nothing else waiting, the items it
    # skipped come back, least recently skipped first.
    shown = "document.querySelector('#review-pane [data-item]')?.dataset.item"
    await reviewer.keyboard.press("n")
    await reviewer.wait_for_function(f"{shown} !== '{first_item}'")
    await reviewer.keyboard.press("n")
    await reviewer.wait_for_function(f"{shown} === '{first_item}'")
    await reviewer.wait_for_selector("#review-image")
    # Keyboard: 3 picks the third category, C confirms.
    options = await reviewer.locator("#category option").evaluate_all(
        "els => els.map(e => e.value)"
    )
    assert "controlled_knives" in options
    await reviewer.keyboard.press("3")
    chosen = await reviewer.input_value("#category")
    assert chosen == options[2]
    await reviewer.keyboard.press("c")
    await reviewer.wait_for_selector("#review-status[data-decision=confirm]")
    # The next flagged item is leased and shown at once; X clears it.
    await reviewer.wait_for_function(
        f"document.querySelector('#review-pane [data-item]')?.dataset.item !== '{first_item}'"
    )
    await reviewer.keyboard.press("x")
    await reviewer.wait_for_selector("#review-status[data-decision=clear]")
    await reviewer.wait_for_selector("#review-empty")

    # Live: the confirmed item arrives on the police page without a reload.
    alert = police.locator("#alert-list li.alert.fresh")
    await alert.wait_for(timeout=10_000)
    assert await alert.count() == 1
    label = {"controlled_knives": "管制刀具", "ammunition": "弹药"}.get(chosen, chosen)
    assert label in (await alert.text_content() or "")
    await alert.locator("a").click()
    await police.wait_for_selector("#alert-detail #alert-status[data-status=open]")
    assert await image_loaded(police, "#alert-image")
    await police.click("#acknowledge")
    await police.wait_for_selector("#alert-status[data-status=acknowledged]")
    await police.fill("#assignee", "王警官")
    await police.click("#assign")
    await police.wait_for_selector("#alert-status[data-status=assigned]")
    # Another officer hands it on: the feed brings the alert's new state to this console, which
    # updates its row; an action is not news, so the row is not marked new again.
    alert_id = await police.locator("#alert-list li.alert").first.get_attribute("data-alert")
    async with gw.http.post(
        f"{gw.url}/v1/alerts/{alert_id}/assign",
        json={"assignee": "李警官"},
        headers=gw.auth("police"),
    ) as resp:
        assert resp.status == 200
    await police.wait_for_timeout(1500)  # the feed's update has come
    assert await police.locator("#alert-list li.alert.fresh").count() == 0
    # The full identity, read with a stated purpose (and recorded by the alerts API).
    await police.click("#alert-detail details.identity-box summary")
    await police.fill("#purpose", "案件 2026-118 核查寄件人")
    await police.click("#reveal")
    await police.wait_for_selector("#identity-name")
    assert await police.text_content("#identity-name") == "张三"
    assert resident_id() in (await police.text_content("#identity-document") or "")
    await police.select_option("#disposition", "seized")
    await police.click("#close")
    await police.wait_for_selector("#alert-status[data-status=closed]")
    assert "查扣" in (await police.text_content("#alert-status") or "")
    assert await police.locator("#alert-list li.alert[data-status=closed]").count() == 1
    assert await police.locator(".actions-log li").count() == 4  # acknowledge, 2 assigns, close


async def test_a_supervisor_reads_alerts_but_cannot_act_or_review(
    fresh: Demo, open_console: OpenConsole
) -> None:
    gw = fresh.gateway
    page = await open_console(gw.url, gw.keys.by_role["supervisor"])
    views = await page.locator("header nav a").evaluate_all("els => els.map(e => e.dataset.view)")
    assert views == ["overview", "violations", "alerts", "reviewers", "report"]
    await page.goto(f"{gw.url}/console/#/review")
    await page.wait_for_selector("main[data-ready=overview]")  # not a view of this role
    resp = await page.request.get(f"{gw.url}/v1/review/next")
    assert resp.status == 403


async def test_a_station_sees_its_rates_but_neither_queue_nor_alerts(
    demo: Demo, open_console: OpenConsole
) -> None:
    gw = demo.gateway
    page = await open_console(gw.url, gw.keys.by_role["station"])
    views = await page.locator("header nav a").evaluate_all("els => els.map(e => e.dataset.view)")
    assert views == ["overview", "violations", "report"]
    for path in ("/v1/alerts", "/v1/review/next"):
        resp = await page.request.get(f"{gw.url}{path}")
        assert resp.status == 403, path


async def test_a_reviewer_whose_lease_ran_out_moves_on_instead_of_getting_stuck(
    fresh: Demo, open_console: OpenConsole
) -> None:
    gw = fresh.gateway
    reviewer = await open_console(gw.url, gw.keys.by_role["reviewer"], lang="en")
    await reviewer.wait_for_selector("#review-pane [data-item]")
    item = await reviewer.get_attribute("#review-pane [data-item]", "data-item")
    assert item is not None
    # The reviewer looked away past the lease: the item is no longer theirs to skip.
    async with gw.pool.acquire() as conn:
        await conn.execute(
            "UPDATE review_items SET lease_until = now() - interval '1 second'"
            " WHERE item_id = $1",
            uuid.UUID(item),
        )
    await reviewer.keyboard.press("n")
    await reviewer.wait_for_function(
        "document.querySelector('#review-status')?.textContent.includes('lease ran out')"
    )
    # Moved on to the queue (which hands the freed item out again), with no error left behind.
    await reviewer.wait_for_selector("#review-pane [data-item]")
    assert await reviewer.locator("#review-pane .error").count() == 0
