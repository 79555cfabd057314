"""The supervisor's Reviewers panel in a real browser: reviewers judge real flagged images and
projected threats (TIP) through the API, and a supervisor reads each reviewer's numbers, weakest
TIP hit rate first, with the weak ones highlighted, only for the sites the key covers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from screening.alerts import ALERTS
from screening.alerts.tip import TipImage
from screening.domain.access import Role
from screening.protection import PersonalDataVault
from screening.services import access
from tests.conftest import RunningGateway, bounded_cleanup
from tests.web.conftest import OpenConsole
from tests.web.demo import DARK, Demo, seed, start_console_gateway


def fake_tip(_seed: int) -> TipImage:
    # The dark test image: the tiny detector boxes a knife on it, as on a real flagged scan.
    return TipImage(
        DARK, [{"class_name": "knife", "category": "controlled_knives", "box": [0, 0, 9, 9]}]
    )


@pytest.fixture
async def tip_demo(
    tmp_path: Path, pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> AsyncIterator[Demo]:
    """A console gateway that projects a threat into every reviewer's next item while its
    review service's ``tip_rate`` is 1, with two real flagged scans waiting at the test site."""
    gw, runner = await start_console_gateway(
        tmp_path,
        pool,
        vault,
        {"tip_rate": 1.0, "tip_pool_size": 1, "tip_renderer": fake_tip},
    )
    try:
        d = await seed(gw, days=1, per_day=2, scans_per_day=0, flagged=2)
        d.runner = runner
        yield d
    finally:
        await gw.http.close()
        await bounded_cleanup(runner)


async def reviewer(gw: RunningGateway, label: str, site: str) -> tuple[str, str]:
    """A labelled reviewer key of one site: (key id, key)."""
    return await access.create_key(gw.pool, Role.REVIEWER, [site], label)


async def judge(gw: RunningGateway, key: str, decisions: list[str]) -> None:
    """Lease the next item and decide it, once per decision, through the reviewers' API."""
    auth = {"Authorization": f"Bearer {key}"}
    for decision in decisions:
        async with gw.http.get(f"{gw.url}/v1/review/next", headers=auth) as resp:
            assert resp.status == 200, await resp.text()
            item = await resp.json()
        body = {
            "decision": decision,
            "category": "controlled_knives" if decision == "confirm" else None,
        }
        async with gw.http.post(
            f"{gw.url}/v1/review/items/{item['item_id']}/decision", json=body, headers=auth
        ) as resp:
            assert resp.status == 200, await resp.text()


def project_threats(gw: RunningGateway, on: bool) -> None:
    gw.app[ALERTS].review.tip_rate = 1.0 if on else 0.0


async def tip_pool_ready(gw: RunningGateway) -> None:
    tips = gw.app[ALERTS].tips
    async with asyncio.timeout(10):
        tips.ensure_started()
        while not tips.ready:  # noqa: ASYNC110 - rendered by a background task
            await asyncio.sleep(0.02)


async def table(page: Any) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = await page.locator("#reviewer-table tbody tr").evaluate_all(
        """trs => trs.map(tr => Object.fromEntries([
             ['weak', tr.dataset.weak], ['class', tr.className],
             ...[...tr.querySelectorAll('td')].map(
               td => [td.dataset.col, td.innerText.trim()])]))"""
    )
    return rows


async def test_a_supervisor_sees_each_reviewers_tip_hit_rate_weakest_first(
    tip_demo: Demo, open_console: OpenConsole
) -> None:
    gw = tip_demo.gateway
    site, other = gw.keys.site, gw.keys.other_site
    page = await open_console(gw.url, gw.keys.by_role["supervisor"])
    views = await page.locator("header nav a").evaluate_all("els => els.map(e => e.dataset.view)")
    assert "reviewers" in views
    await page.click("header nav a[data-view=reviewers]")
    await page.wait_for_selector("main[data-ready=reviewers] #no-reviewers")  # nobody judged yet

    # Real items first: decisions but no projected threat yet.
    li_id, li = await reviewer(gw, "李明", site)
    project_threats(gw, on=False)
    await judge(gw, li, ["confirm", "clear"])  # the two flagged scans
    await page.reload()
    await page.wait_for_selector("main[data-ready=reviewers] #no-projections")
    (only,) = await table(page)
    assert (only["reviewer"].splitlines()[0], only["decisions"], only["hit_rate"]) == (
        "李明",
        "2",
        "—",
    )

    # Projected threats: a confirm is a hit, a clear a miss.
    project_threats(gw, on=True)
    await tip_pool_ready(gw)
    _, wang = await reviewer(gw, "王芳", site)
    _, zhao = await reviewer(gw, "赵强", site)
    _, chen = await reviewer(gw, "陈静", other)  # another site's reviewer
    await judge(gw, li, ["confirm"] * 5)
    await judge(gw, wang, ["confirm", "clear", "confirm", "clear", "confirm"])
    await judge(gw, zhao, ["clear", "clear"])
    await judge(gw, chen, ["clear"] * 5)
    async with gw.http.put(
        f"{gw.url}/v1/review/reviewers/{li_id}/level", json={"level": 2}, headers=gw.auth("admin")
    ) as resp:
        assert resp.status == 200

    await page.reload()
    await page.wait_for_selector("main[data-ready=reviewers] #reviewer-table")
    threshold = await page.text_content("#tip-threshold") or ""
    assert "80%" in threshold
    assert "5" in threshold
    rows = await table(page)
    # Weakest first; the other site's reviewer is not in this supervisor's scope.
    assert [r["reviewer"].splitlines()[0] for r in rows] == ["赵强", "王芳", "李明"]
    zhao_row, wang_row, li_row = rows
    assert {k: wang_row[k] for k in ("tip_projected", "tip_hits", "tip_misses", "hit_rate")} == {
        "tip_projected": "5",
        "tip_hits": "3",
        "tip_misses": "2",
        "hit_rate": "60.0%",
    }
    assert wang_row["weak"] == "true"
    assert "weak" in wang_row["class"]
    # 0 of 2 is the lowest rate, but two projections are too few to judge: not highlighted.
    assert (zhao_row["tip_projected"], zhao_row["tip_misses"]) == ("2", "2")
    assert zhao_row["hit_rate"].startswith("0%")
    assert "样本过少" in zhao_row["hit_rate"]
    assert zhao_row["weak"] == "false"
    assert {k: li_row[k] for k in li_row if k not in ("reviewer", "class")} == {
        "weak": "false",
        "level": "2",
        "decisions": "2",
        "confirms": "1",
        "clears": "1",
        "tip_projected": "5",
        "tip_hits": "5",
        "tip_misses": "0",
        "hit_rate": "100%",
        "false_alarms": "0 (0%)",  # of 1 confirmed
    }
    assert li_id in li_row["reviewer"]  # the label, then the key id
    assert await page.locator("#reviewer-table tr.weak").count() == 1

    # A period with no decisions shows the empty state.
    long_ago = (datetime.now(UTC) - timedelta(days=40)).date().isoformat()
    await page.goto(f"{gw.url}/console/#/reviewers?from={long_ago}&to={long_ago}")
    await page.wait_for_selector("main[data-ready=reviewers] #no-reviewers")

    # A supervisor of both sites sees the other site's reviewer too, and can pick one site.
    both = await open_console(gw.url, tip_demo.supervisor_both, lang="en")
    await both.goto(f"{gw.url}/console/#/reviewers")
    await both.wait_for_selector("main[data-ready=reviewers] #reviewer-table")
    assert "below 80%" in (await both.text_content("#tip-threshold") or "")
    assert "TIP hit rate" in (await both.text_content("#reviewer-table thead") or "")
    names = [r["reviewer"].splitlines()[0] for r in await table(both)]
    assert names == ["陈静", "赵强", "王芳", "李明"]
    await both.select_option("#site", other)
    await both.click("#reviewer-filters #apply")
    await both.wait_for_function(f"location.hash.includes('site={other}')")
    await both.wait_for_selector("main[data-ready=reviewers] #reviewer-table")
    (chen_row,) = await table(both)
    assert (chen_row["reviewer"].splitlines()[0], chen_row["hit_rate"], chen_row["weak"]) == (
        "陈静",
        "0%",
        "true",
    )
