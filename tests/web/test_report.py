"""The monthly report: printable HTML with rates, violations by reason, X-ray machine usage and
alerts; the same page as PDF through headless Chromium, or 501 where there is none."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from screening.api.ledger import LEDGER_SIGNER
from screening.errors import ScreeningError
from screening.services import ledger as ledger_service
from screening.web.pdf import find_chromium, html_to_pdf
from tests.web.conftest import needs_chromium
from tests.web.demo import Demo


def report_month() -> str:
    return (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m")


async def get(demo: Demo, path: str, role: str = "supervisor") -> tuple[int, str, Any]:
    gw = demo.gateway
    async with gw.http.get(f"{gw.url}{path}", headers=gw.auth(role)) as resp:
        return resp.status, resp.headers["Content-Type"], await resp.read()


async def test_the_report_holds_rates_violations_machines_and_alerts(demo: Demo) -> None:
    gw = demo.gateway
    site, month = gw.keys.site, report_month()
    status, ctype, body = await get(demo, f"/console/reports/{site}/{month}")
    assert status == 200
    assert ctype.startswith("text/html")
    page = body.decode()
    for section in ("rates", "violations", "scanners", "alerts", "ledger"):
        assert f'id="{section}"' in page
    assert "@media print" in page
    assert "@page" in page
    # The month's dispatched count is the rates API's for the same days.
    first = f"{month}-01"
    last = (datetime.fromisoformat(first) + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    async with gw.http.get(
        f"{gw.url}/v1/sites/{site}/rates?from={first}&to={last.date()}&group_by=day",
        headers=gw.auth("supervisor"),
    ) as resp:
        rates = await resp.json()
    kpi = re.search(r'<div class="kpi">发出件数<b>(\d+)</b>', page)
    assert kpi is not None
    assert int(kpi.group(1)) == rates["total"]["dispatched"] > 0
    assert page.count('<polyline fill="none"') >= 4  # four rate lines
    # Each X-ray machine has a row and a heatmap row of one cell per day of the month.
    for scanner in ("XR-1", "XR-2", "XR-3"):
        assert f"<td>{scanner}</td>" in page
    assert page.count("<rect x=") >= 3 * last.day
    assert "先封后验" in page or "未过机" in page  # violations named in Chinese


async def test_a_station_report_has_no_alert_section_and_english_on_request(demo: Demo) -> None:
    site, month = demo.gateway.keys.site, report_month()
    status, _, body = await get(demo, f"/console/reports/{site}/{month}?lang=en", role="station")
    assert status == 200
    page = body.decode()
    assert 'id="alerts"' not in page  # a station key may not read alerts
    assert "Monthly compliance report" in page


async def test_the_ledger_section_prints_the_root_as_the_api_and_the_note_give_it(
    fresh: Demo,
) -> None:
    gw = fresh.gateway
    site = gw.keys.site
    await ledger_service.make_checkpoint(gw.pool, site, gw.app[LEDGER_SIGNER])
    async with gw.http.get(
        f"{gw.url}/v1/sites/{site}/ledger/checkpoint", headers=gw.auth("supervisor")
    ) as resp:
        assert resp.status == 200
        root = (await resp.json())["root_hash"]  # base64, as in the signed note
    status, _, body = await get(fresh, f"/console/reports/{site}/{report_month()}")
    assert status == 200
    assert root in body.decode()


async def test_bad_months_and_formats_are_refused(demo: Demo) -> None:
    site = demo.gateway.keys.site
    for month in ("2026-13", "2026-1", "26-01", "latest", "9999-12", "0000-01"):
        status, ctype, _ = await get(demo, f"/console/reports/{site}/{month}")
        assert status == 400
        assert ctype.startswith("application/problem+json")
    status, _, _ = await get(demo, f"/console/reports/{site}/2026-11?format=docx")
    assert status == 400


@needs_chromium
async def test_the_report_prints_to_pdf_with_chromium(demo: Demo) -> None:
    site, month = demo.gateway.keys.site, report_month()
    status, ctype, body = await get(demo, f"/console/reports/{site}/{month}?format=pdf")
    assert status == 200
    assert ctype == "application/pdf"
    assert body.startswith(b"%PDF-")
    assert len(body) > 10_000


@needs_chromium
async def test_chinese_text_prints_in_a_cjk_font() -> None:
    """Without a CJK font (Debian: fonts-noto-cjk) Chinese prints as empty boxes."""
    pdf = await html_to_pdf('<html lang="zh-CN"><body><p>三个100% 合规率月报</p></body></html>',
                            find_chromium())
    fonts = re.findall(rb"/FontName\s*/[A-Z]{6}\+([A-Za-z0-9-]+)", pdf)
    assert any(b"CJK" in f or b"Hei" in f or b"Song" in f for f in fonts), fonts


async def test_without_chromium_pdf_is_a_501_problem() -> None:
    with pytest.raises(ScreeningError) as caught:
        await html_to_pdf("<p>x</p>", None)
    assert caught.value.status == 501
    assert caught.value.code == "pdf_unavailable"
