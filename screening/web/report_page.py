"""The monthly report as one self-contained, printable HTML page (inline CSS and SVG; A4 print CSS),
and its handler: ``/console/reports/{site_id}/{yyyy-mm}``, ``?format=pdf`` for a PDF."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

from aiohttp import web

from screening.api.auth import principal_of
from screening.api.context import GATEWAY
from screening.api.ledger import LEDGER_SIGNER
from screening.domain.access import Permission
from screening.domain.rates import RateCounts
from screening.errors import BadRequestError
from screening.services import queries
from screening.web import svg
from screening.web.console import strings
from screening.web.pdf import html_to_pdf
from screening.web.report import MonthlyReport, monthly_report, parse_month
from screening.web.state import CONSOLE

RATES = ("realname_ok", "inspection_ok", "xray_ok", "all_ok")
RATE_KEYS = ("rule.realname", "rule.inspection", "rule.xray", "rate.three_100")

CSS = """
@page { size: A4; margin: 14mm 12mm; }
* { box-sizing: border-box; }
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei",
       system-ui, sans-serif; color: #111827; margin: 24px auto; max-width: 900px;
       font-size: 13px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 22px 0 8px; border-bottom: 2px solid #1f6feb; padding-bottom: 3px; }
.meta { color: #4b5563; margin-bottom: 12px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; }
th, td { border: 1px solid #d1d5db; padding: 3px 6px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f4f6; }
.kpis { display: flex; gap: 10px; flex-wrap: wrap; }
.kpi { border: 1px solid #d1d5db; border-radius: 6px; padding: 8px 12px; min-width: 130px; }
.kpi b { display: block; font-size: 20px; }
.empty { color: #6b7280; font-style: italic; }
.mono { font-family: ui-monospace, monospace; word-break: break-all; }
pre.mono { white-space: pre-wrap; }
.bad { color: #b00020; font-weight: bold; }
.toolbar { margin-bottom: 10px; }
section { break-inside: avoid; }
@media print { .toolbar { display: none; } body { margin: 0; max-width: none; } }
"""


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.1f}%"


def _rate_cells(c: RateCounts) -> str:
    return f"<td>{c.dispatched}</td>" + "".join(f"<td>{_pct(c.rate(k))}</td>" for k in RATES)


def _table(head: Sequence[str], rows: Sequence[str], cls: str = "") -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def render(report: MonthlyReport, lang: str) -> str:
    t = strings(lang)

    def s(key: str) -> str:
        return escape(t.get(key, key))

    def category(code: str) -> str:
        # A model without a manifest names its classes, not catalogue categories.
        return escape(t.get("category." + code) or t.get("class." + code) or code)

    site = report.site
    month = report.month.strftime("%Y-%m")
    rate_head = [t["col.dispatched"], *(t[k] for k in RATE_KEYS)]
    parts: list[str] = [
        f'<!doctype html><html lang="{"en" if lang == "en" else "zh-CN"}"><head>'
        f'<meta charset="utf-8"><title>{s("report.title")} {escape(site.site_id)} {month}</title>'
        f"<style>{CSS}</style></head><body>",
        f"<h1>{s('report.title')} · {escape(site.name)} ({escape(site.site_id)}) · {month}</h1>",
        f'<div class="toolbar"><a href="?format=pdf&amp;lang={lang}">{s("report.pdf")}</a></div>',
        f'<div class="meta">{s("report.timezone")}: {escape(site.policy.timezone)} · '
        f"{s('report.generated')}: {report.generated_at.strftime('%Y-%m-%d %H:%M UTC')}</div>",
    ]
    # Rates.
    kpis = [f'<div class="kpi">{s("col.dispatched")}<b>{report.total.dispatched}</b></div>']
    kpis += [
        f'<div class="kpi">{s(label)}<b>{_pct(report.total.rate(k))}</b></div>'
        for k, label in zip(RATES, RATE_KEYS, strict=True)
    ]
    parts.append(f'<section id="rates"><h2>{s("report.rates")}</h2>')
    parts.append(f'<div class="kpis">{"".join(kpis)}</div>')
    by_day = {r.day: r.counts for r in report.daily}
    labels = [d.strftime("%d") for d in report.days]
    series = [
        (t[label], [by_day[d].rate(k) if d in by_day else None for d in report.days])
        for k, label in zip(RATES, RATE_KEYS, strict=True)
    ]
    lowest = min((v for _, vs in series for v in vs if v is not None), default=0.0)
    parts.append(svg.line_chart(labels, series, y_min=0.0 if lowest < 0.5 else 0.5))
    day_rows = [
        f"<tr><td>{d.isoformat()}</td>{_rate_cells(by_day[d])}</tr>"
        for d in report.days
        if d in by_day
    ]
    parts.append(
        _table([t["col.day"], *rate_head], day_rows, "daily")
        if day_rows
        else f'<p class="empty">{s("report.no_parcels")}</p>'
    )
    flow_rows = [
        f"<tr><td>{s('flow.' + (r.flow or ''))}</td>{_rate_cells(r.counts)}</tr>"
        for r in report.by_flow
    ]
    if flow_rows:
        parts.append(f"<h3>{s('report.by_flow')}</h3>")
        parts.append(_table([t["col.flow"], *rate_head], flow_rows, "flows"))
    parts.append("</section>")
    # Violations by reason.
    parts.append(f'<section id="violations"><h2>{s("report.violations")}</h2>')
    if report.violations:
        parts.append(
            svg.bar_chart([(t.get("reason." + r, r), float(n)) for r, _, n in report.violations])
        )
        rows = [
            f"<tr><td>{s('reason.' + r)}</td><td>{s('rule.' + rule)}</td><td>{n}</td></tr>"
            for r, rule, n in report.violations
        ]
        parts.append(_table([t["col.reason"], t["col.rule"], t["col.parcels"]], rows))
    else:
        parts.append(f'<p class="empty">{s("report.no_violations")}</p>')
    parts.append("</section>")
    # X-ray machine usage.
    parts.append(f'<section id="scanners"><h2>{s("report.scanners")}</h2>')
    if report.scanners:
        parts.append(
            svg.heatmap(
                [
                    (u.scanner_id, [u.per_day.get(d, (0, 0))[0] for d in report.days])
                    for u in report.scanners
                ],
                labels,
            )
        )
        rows = []
        for u in report.scanners:
            active = sum(1 for n, _ in u.per_day.values() if n)
            peak = max((n for n, _ in u.per_day.values()), default=0)
            rows.append(
                f"<tr><td>{escape(u.scanner_id)}</td><td>{u.scans}</td><td>{u.flagged}</td>"
                f"<td>{active}</td><td>{peak}</td>"
                f"<td>{u.scans / active if active else 0:.1f}</td></tr>"
            )
        parts.append(
            _table(
                [
                    t["col.scanner"],
                    t["col.scans"],
                    t["col.flagged"],
                    t["col.active_days"],
                    t["col.peak_day"],
                    t["col.per_active_day"],
                ],
                rows,
                "scanners",
            )
        )
    else:
        parts.append(f'<p class="empty">{s("report.no_scans")}</p>')
    parts.append("</section>")
    # Alerts and dispositions.
    if report.alerts is not None:
        parts.append(f'<section id="alerts"><h2>{s("report.alerts")}</h2>')
        if report.alerts:
            kinds = ("seized", "released", "false_alarm")
            rows = [
                f"<tr><td>{category(a.category)}</td><td>{a.total}</td><td>{a.open}</td>"
                + "".join(f"<td>{a.dispositions.get(k, 0)}</td>" for k in kinds)
                + "</tr>"
                for a in report.alerts
            ]
            head = [t["col.category"], t["col.alerts"], t["col.open"]]
            head += [t["disposition." + k] for k in kinds]
            parts.append(_table(head, rows, "alerts"))
        else:
            parts.append(f'<p class="empty">{s("report.no_alerts")}</p>')
        parts.append("</section>")
    # Ledger.
    parts.append(f'<section id="ledger"><h2>{s("checkpoint.title")}</h2>')
    cp = report.checkpoint
    if cp is None:
        parts.append(f'<p class="empty">{s("checkpoint.none")}</p>')
    else:
        status = s("checkpoint.verified") if cp.verified else s("checkpoint.bad")
        parts.append(
            f'<p class="{"ok" if cp.verified else "bad"}" id="checkpoint-status">'
            f"{status}</p>"
            f"<p>{s('checkpoint.size')}: <b>{cp.tree_size}</b> · "
            f"{s('checkpoint.at')}: {cp.created_at.strftime('%Y-%m-%d %H:%M UTC')}</p>"
            f'<p class="mono">{s("checkpoint.root")}: {cp.root_hash}</p>'
            # The note and the key it verifies with: the printed report can be checked offline
            # (`screening verify --checkpoint`, or any signed-note verifier).
            f'<p>{s("checkpoint.note")}:</p><pre class="mono">{escape(cp.note)}</pre>'
            f'<p class="mono">vkey: {escape(cp.vkey)}</p>'
        )
    parts.append("</section></body></html>")
    return "".join(parts)


async def get_report(request: web.Request) -> web.Response:
    """Printable HTML of one site's month; ``?format=pdf`` prints it with headless Chromium."""
    principal = await principal_of(request, Permission.READ_RATES)
    site_id = request.match_info["site_id"]
    queries.require_cover(principal, site_id)  # before the request's parameters are judged
    fmt = request.query.get("format", "html")
    if fmt not in ("html", "pdf"):
        raise BadRequestError("format is html or pdf", code="invalid_query")
    lang = "en" if request.query.get("lang") == "en" else "zh-CN"
    month = parse_month(request.match_info["month"])
    report = await monthly_report(
        request.app[GATEWAY].pool,
        principal,
        site_id,
        month,
        datetime.now(UTC),
        request.app[LEDGER_SIGNER],
    )
    page = render(report, lang)
    headers = {
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        # A static page: its own inline styles and SVG, nothing else, never framed.
        "Content-Security-Policy": (
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        ),
    }
    if fmt == "pdf":
        pdf = await html_to_pdf(page, request.app[CONSOLE].chromium)
        name = f"report-{site_id}-{month.strftime('%Y-%m')}.pdf"
        headers["Content-Disposition"] = f'inline; filename="{name}"'
        return web.Response(body=pdf, content_type="application/pdf", headers=headers)
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers=headers)
