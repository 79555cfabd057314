// The console: sign-in, then the views the session's role may use. Plain ES module, no build.
// It calls the gateway's JSON API with the session cookie (same origin); state-changing requests
// carry the session's CSRF token in X-CSRF-Token. All text goes in through textContent.

import { barChart, lineChart, pct } from "./charts.js";

const LANGS = ["zh-CN", "en"];
const state = {
  lang: LANGS.includes(localStorage.getItem("console.lang")) ? localStorage.getItem("console.lang") : "zh-CN",
  strings: {},
  session: null,
  sites: [],
  teardown: [], // closers of the current view (EventSource, timers, key handlers)
};

// ---- helpers ------------------------------------------------------------------------------

function t(key, vars = {}) {
  let s = state.strings[key] ?? key;
  for (const [k, v] of Object.entries(vars)) s = s.replace(`{${k}}`, String(v));
  return s;
}

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function cookie(name) {
  const hit = document.cookie.split("; ").find((c) => c.startsWith(`${name}=`));
  return hit ? decodeURIComponent(hit.slice(name.length + 1)) : "";
}

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code || String(status));
    this.status = status;
    this.code = code;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = state.session?.csrf_token || cookie("scr_csrf");
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 204) return null;
  const data = await resp.json().catch(() => ({}));
  if (resp.status === 401 && state.session) {
    state.session = null;
    renderSignIn(t("error.session"));
  }
  if (!resp.ok) throw new ApiError(resp.status, data.code, data.detail);
  return data;
}

function errorBox(err) {
  const text = err instanceof ApiError && err.status === 403 ? t("error.forbidden") : `${t("error.generic")}: ${err.message}`;
  return h("div", { class: "error", role: "alert", "data-code": err.code || "" }, text);
}

const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString(state.lang, { hour12: false }) : "—");
const isoDay = (d) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
// "Today" is the site's own day (rates are dated in each site's time zone), not the browser's:
// a supervisor's laptop on UTC would otherwise hide a Shanghai site's evening. With no site, the
// furthest-ahead day of the key's sites.
const dayIn = (tz, d = new Date()) => {
  try {
    return new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" }).format(d);
  } catch {
    return isoDay(d);
  }
};
const today = (site) => {
  const zones = (state.sites || []).filter((s) => !site || s.site_id === site).map((s) => s.timezone).filter(Boolean);
  return zones.length ? zones.map((z) => dayIn(z)).sort().at(-1) : isoDay(new Date());
};
const daysAgo = (n, site) => {
  const [y, m, d] = today(site).split("-").map(Number);
  return isoDay(new Date(y, m - 1, d - n));
};
// A model without a manifest names classes, not catalogue categories: show either in words.
const has = (key) => Object.hasOwn(state.strings, key);
const catLabel = (c) => (has(`category.${c}`) ? t(`category.${c}`) : has(`class.${c}`) ? t(`class.${c}`) : c || "—");
const may = (perm) => state.session?.permissions.includes(perm);
const siteName = (id) => state.sites.find((s) => s.site_id === id)?.name || id;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query) };
}

function go(path, params) {
  const q = params ? `?${new URLSearchParams(Object.entries(params).filter(([, v]) => v))}` : "";
  location.hash = `#/${path}${q}`;
}

function teardown() {
  for (const close of state.teardown.splice(0)) close();
}

// ---- frame: header, navigation, sign-in ---------------------------------------------------

function views() {
  const out = [];
  if (may("read_rates")) out.push(["overview", "nav.overview"]);
  if (may("read_violations")) out.push(["violations", "nav.violations"]);
  if (may("review_scans")) out.push(["review", "nav.review"]);
  if (may("read_alerts")) out.push(["alerts", "nav.alerts"]);
  if (may("read_review_stats")) out.push(["reviewers", "nav.reviewers"]);
  if (may("read_rates")) out.push(["report", "nav.report"]);
  return out;
}

function defaultView() {
  const role = state.session?.role;
  if (role === "reviewer") return "review";
  if (role === "police") return "alerts";
  return views()[0]?.[0] || "overview";
}

function renderHeader(active) {
  const header = document.getElementById("top");
  header.replaceChildren(
    h("div", { class: "brand" }, t("app.title")),
    state.session
      ? h("nav", {}, views().map(([id, key]) =>
          h("a", { href: `#/${id}`, class: id === active ? "active" : "", "data-view": id }, t(key))))
      : h("nav"),
    h("div", { class: "who" },
      state.session
        ? [
            h("span", { class: "role", "data-role": state.session.role }, t(`role.${state.session.role}`)),
            h("span", { class: "key" }, state.session.key_id),
            h("button", { type: "button", id: "signout", onclick: signOut }, t("signout")),
          ]
        : null,
      h("button", { type: "button", id: "lang", onclick: toggleLang }, t("lang.toggle"))),
  );
}

async function toggleLang() {
  state.lang = state.lang === "zh-CN" ? "en" : "zh-CN";
  localStorage.setItem("console.lang", state.lang);
  await loadStrings();
  route();
}

async function loadStrings() {
  const resp = await fetch(`/console/static/i18n/${state.lang}.json`);
  state.strings = await resp.json();
  document.documentElement.lang = state.lang;
  document.title = t("app.title");
}

function renderSignIn(message) {
  teardown();
  renderHeader(null);
  const input = h("input", { type: "password", id: "api-key", name: "api_key", autocomplete: "off", required: true, size: 60 });
  const note = h("p", { class: "error", id: "signin-error", role: "alert", hidden: !message }, message || "");
  const form = h("form", { id: "signin", class: "card narrow" },
    h("h1", {}, t("signin.title")),
    h("label", { for: "api-key" }, t("signin.key")), input,
    h("p", { class: "hint" }, t("signin.hint")), note,
    h("button", { type: "submit" }, t("signin.submit")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      state.session = await api("/console/session", { method: "POST", body: { api_key: input.value.trim() } });
    } catch (err) {
      note.hidden = false;
      note.textContent = t("signin.failed");
      return;
    }
    input.value = "";
    await afterSignIn();
  });
  document.getElementById("main").replaceChildren(form);
}

async function afterSignIn() {
  state.sites = (await api("/console/sites")).sites;
  if (!location.hash || location.hash === "#/" || location.hash === "#") go(defaultView());
  else route();
}

async function signOut() {
  try { await api("/console/session", { method: "DELETE" }); } catch { /* already gone */ }
  state.session = null;
  location.hash = "";
  renderSignIn();
}

// ---- supervisor: rates, trends, flows, ranking, checkpoint --------------------------------

function siteSelect(current, onchange) {
  return h("select", { id: "site", onchange },
    state.sites.map((s) => h("option", { value: s.site_id, selected: s.site_id === current }, `${s.name} (${s.site_id})`)));
}

function currentSite(query) {
  const wanted = query.get("site");
  return state.sites.some((s) => s.site_id === wanted) ? wanted : state.sites[0]?.site_id;
}

function countsOf(row) {
  // The API gives rates; dispatched x rate gives the counts back (exact: rate = count/dispatched).
  const c = (r) => (r === null ? 0 : Math.round(r * row.dispatched));
  return { dispatched: row.dispatched, realname: c(row.realname_rate), inspection: c(row.inspection_rate),
    xray: c(row.xray_rate), all: c(row.three_100_rate) };
}

function mondayOf(day) {
  const d = new Date(`${day}T00:00:00`);
  d.setDate(d.getDate() - ((d.getDay() + 6) % 7));
  return isoDay(d);
}

function trendBuckets(rows, from, to, gran) {
  // Every day (or week) of the period, empty ones as null, so gaps show as gaps.
  const buckets = new Map();
  for (let d = new Date(`${from}T00:00:00`); isoDay(d) <= to; d.setDate(d.getDate() + 1)) {
    const key = gran === "week" ? mondayOf(isoDay(d)) : isoDay(d);
    if (!buckets.has(key)) buckets.set(key, { dispatched: 0, realname: 0, inspection: 0, xray: 0, all: 0 });
  }
  for (const row of rows) {
    const key = gran === "week" ? mondayOf(row.day) : row.day;
    const b = buckets.get(key);
    if (!b) continue;
    const c = countsOf(row);
    for (const k of Object.keys(b)) b[k] += c[k];
  }
  const labels = [...buckets.keys()].map((k) => k.slice(5));
  const rate = (k) => [...buckets.values()].map((b) => (b.dispatched ? b[k] / b.dispatched : null));
  return {
    labels,
    series: [
      { name: t("rule.realname"), values: rate("realname") },
      { name: t("rule.inspection"), values: rate("inspection") },
      { name: t("rule.xray"), values: rate("xray") },
      { name: t("rate.three_100"), values: rate("all") },
    ],
  };
}

function kpis(total) {
  const card = (label, value, cls) => h("div", { class: `kpi ${cls || ""}` }, h("span", {}, label), h("b", {}, value));
  const r = (v) => (v === null ? "—" : pct(v));
  return h("div", { class: "kpis", id: "kpis" },
    card(t("col.dispatched"), total.dispatched),
    card(t("rule.realname"), r(total.realname_rate)),
    card(t("rule.inspection"), r(total.inspection_rate)),
    card(t("rule.xray"), r(total.xray_rate)),
    card(t("rate.three_100"), r(total.three_100_rate), "main"));
}

const b64bytes = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const hexOf = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

// C2SP signed note: "<body>\n\n— <name> <base64(key id(4) || Ed25519 signature(64))>\n", checked
// against the verifier key "<name>+<hex key id>+<base64(0x01 || public key)>". WebCrypto's
// Ed25519 needs a secure context (HTTPS or loopback): elsewhere the note is shown unchecked.
async function verifyNote(note, vkey, expect) {
  if (!globalThis.crypto?.subtle || !vkey) return "unchecked";
  // base64 may itself hold "+": only the first two separate the fields.
  const first = vkey.indexOf("+");
  const second = vkey.indexOf("+", first + 1);
  if (first < 0 || second < 0) return "bad";
  const [name, keyId, keyB64] = [vkey.slice(0, first), vkey.slice(first + 1, second), vkey.slice(second + 1)];
  const keyBytes = b64bytes(keyB64 || "");
  const split = note.indexOf("\n\n");
  if (keyBytes[0] !== 1 || split < 0) return "bad";
  const body = note.slice(0, split + 1);
  const [origin, size, root] = body.split("\n");
  if (Number(size) !== expect.tree_size || root !== expect.root_hash) return "bad";
  let key;
  try {
    key = await crypto.subtle.importKey("raw", keyBytes.slice(1), { name: "Ed25519" }, false, ["verify"]);
  } catch { return "unchecked"; } // a browser without Ed25519 in WebCrypto
  for (const line of note.slice(split + 2).split("\n")) {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const raw = b64bytes(m[2]);
    if (hexOf(raw.slice(0, 4)) !== keyId) continue;
    if (await crypto.subtle.verify({ name: "Ed25519" }, key, raw.slice(4), new TextEncoder().encode(body))) return origin ? "verified" : "bad";
  }
  return "bad";
}

async function checkpointCard(site) {
  const box = h("section", { class: "card", id: "checkpoint" }, h("h2", {}, t("checkpoint.title")));
  try {
    const cp = await api(`/v1/sites/${encodeURIComponent(site)}/ledger/checkpoint`);
    const verdict = await verifyNote(cp.note || "", cp.vkey, cp);
    box.dataset.verified = verdict;
    box.append(
      h("p", { class: `badge ${verdict === "verified" ? "ok" : verdict === "bad" ? "bad" : ""}`, id: "checkpoint-verdict" },
        t(`checkpoint.${verdict}`)),
      h("dl", {},
        h("dt", {}, t("checkpoint.size")), h("dd", { "data-tree-size": cp.tree_size }, cp.tree_size),
        h("dt", {}, t("checkpoint.root")), h("dd", { class: "mono" }, cp.root_hash),
        cp.origin ? [h("dt", {}, t("checkpoint.origin")), h("dd", { class: "mono" }, cp.origin)] : null,
        cp.created_at ? [h("dt", {}, t("checkpoint.at")), h("dd", {}, fmtTime(cp.created_at))] : null,
        cp.vkey ? [h("dt", {}, t("checkpoint.key")), h("dd", { class: "mono" }, cp.vkey)] : null),
      h("details", {}, h("summary", {}, t("checkpoint.note")), h("pre", { class: "mono" }, cp.note || "")));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) box.append(h("p", { class: "empty", id: "no-checkpoint" }, t("checkpoint.none")));
    else box.append(errorBox(err));
  }
  return box;
}

async function ranking(from, to) {
  const rows = await Promise.all(state.sites.map(async (s) => {
    try {
      const r = await api(`/v1/sites/${encodeURIComponent(s.site_id)}/rates?from=${from}&to=${to}&group_by=flow`);
      return { site: s, total: r.total };
    } catch { return { site: s, total: null }; }
  }));
  rows.sort((a, b) => (b.total?.three_100_rate ?? -1) - (a.total?.three_100_rate ?? -1));
  return h("section", { class: "card", id: "ranking" },
    h("h2", {}, t("overview.ranking")),
    barChart(rows.map((r, i) => ({
      label: `${i + 1}. ${r.site.name}`,
      value: r.total?.three_100_rate ?? null,
      note: r.total ? `(${r.total.dispatched})` : "",
      colour: (r.total?.three_100_rate ?? 0) >= 0.95 ? "#059669" : (r.total?.three_100_rate ?? 0) >= 0.8 ? "#d97706" : "#b42318",
    })), { max: 1, format: pct, cls: "chart-ranking", width: 1100 }));
}

async function viewOverview(query) {
  const site = currentSite(query);
  const from = query.get("from") || daysAgo(29, site);
  const to = query.get("to") || today(site);
  const gran = query.get("gran") === "week" ? "week" : "day";
  const main = document.getElementById("main");
  const nav = (patch) => go("overview", { site, from, to, gran, ...patch });
  const fromIn = h("input", { type: "date", id: "from", value: from });
  const toIn = h("input", { type: "date", id: "to", value: to });
  const toolbar = h("form", { class: "toolbar", id: "overview-filters" },
    h("label", {}, t("filter.site"), siteSelect(site, (e) => nav({ site: e.target.value }))),
    h("label", {}, t("filter.from"), fromIn),
    h("label", {}, t("filter.to"), toIn),
    h("label", {}, t("filter.granularity"),
      h("select", { id: "gran", onchange: (e) => nav({ gran: e.target.value }) },
        h("option", { value: "day", selected: gran === "day" }, t("gran.day")),
        h("option", { value: "week", selected: gran === "week" }, t("gran.week")))),
    h("button", { type: "submit" }, t("filter.apply")),
    h("a", { class: "button secondary", href: `#/report?site=${encodeURIComponent(site)}` }, t("nav.report")));
  toolbar.addEventListener("submit", (e) => { e.preventDefault(); nav({ from: fromIn.value, to: toIn.value }); });
  main.replaceChildren(h("h1", {}, `${t("overview.title")} · ${siteName(site)}`), toolbar);
  if (!site) return;
  const base = `/v1/sites/${encodeURIComponent(site)}/rates?from=${from}&to=${to}`;
  let days, flows;
  try {
    [days, flows] = await Promise.all([api(`${base}&group_by=day`), api(`${base}&group_by=flow`)]);
  } catch (err) { main.append(errorBox(err)); return; }
  main.append(kpis(days.total));
  const trend = trendBuckets(days.rows, days.from, days.to, gran);
  main.append(h("section", { class: "card", id: "trend" },
    h("h2", {}, `${t("overview.trend")} (${t(`gran.${gran}`)})`),
    days.total.dispatched ? lineChart(trend.labels, trend.series, { cls: "chart-trend", width: 1100, height: 300 }) : h("p", { class: "empty" }, t("overview.no_data"))));
  const flowRows = flows.rows.filter((r) => r.dispatched > 0);
  main.append(h("div", { class: "grid2" },
    h("section", { class: "card", id: "by-flow" },
      h("h2", {}, `${t("overview.by_flow")} · ${t("rate.three_100")}`),
      barChart(flowRows.map((r) => ({ label: t(`flow.${r.flow}`), value: r.three_100_rate, note: `(${r.dispatched})` })),
        { max: 1, format: pct, cls: "chart-flow", width: 560 }),
      h("table", { class: "data", id: "flow-table" },
        h("thead", {}, h("tr", {}, [t("col.flow"), t("col.dispatched"), t("rule.realname"), t("rule.inspection"), t("rule.xray"), t("rate.three_100")].map((c) => h("th", {}, c)))),
        h("tbody", {}, flowRows.map((r) => h("tr", {},
          h("td", {}, t(`flow.${r.flow}`)), h("td", {}, r.dispatched),
          [r.realname_rate, r.inspection_rate, r.xray_rate, r.three_100_rate].map((v) => h("td", {}, v === null ? "—" : pct(v)))))))),
    await checkpointCard(site)));
  main.append(await ranking(from, to));
}

// ---- supervisor: violations, parcel drill-down, CSV ---------------------------------------

const REASONS = ["no_realname", "invalid_id_document", "no_contract_agreement", "realname_after_dispatch", "no_inspection", "inspection_not_passed",
  "sealed_before_inspection", "not_sealed", "no_xray", "xray_after_dispatch", "dispatched_while_flagged"];
const RULES = ["realname", "inspection", "xray"];
const FLOWS = ["air", "rail", "international", "inter_province", "intra_province", "same_city"];

function filterSelect(id, values, prefix, current) {
  return h("select", { id, name: id },
    h("option", { value: "" }, t("filter.any")),
    values.map((v) => h("option", { value: v, selected: v === current }, t(`${prefix}.${v}`))));
}

async function viewViolations(query) {
  const site = currentSite(query);
  const f = { site, from: query.get("from") || daysAgo(29, site), to: query.get("to") || today(site),
    reason: query.get("reason") || "", rule: query.get("rule") || "", flow: query.get("flow") || "" };
  const main = document.getElementById("main");
  const form = h("form", { class: "toolbar", id: "violation-filters" },
    h("label", {}, t("filter.site"), siteSelect(site, () => {})),
    h("label", {}, t("filter.from"), h("input", { type: "date", id: "from", name: "from", value: f.from })),
    h("label", {}, t("filter.to"), h("input", { type: "date", id: "to", name: "to", value: f.to })),
    h("label", {}, t("filter.reason"), filterSelect("reason", REASONS, "reason", f.reason)),
    h("label", {}, t("filter.rule"), filterSelect("rule", RULES, "rule", f.rule)),
    h("label", {}, t("filter.flow"), filterSelect("flow", FLOWS, "flow", f.flow)),
    h("button", { type: "submit", id: "apply" }, t("filter.apply")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const v = (id) => form.querySelector(`#${id}`).value;
    go("violations", { site: v("site"), from: v("from"), to: v("to"), reason: v("reason"), rule: v("rule"), flow: v("flow") });
  });
  const params = new URLSearchParams(Object.entries({ from: f.from, to: f.to, reason: f.reason, rule: f.rule, flow: f.flow }).filter(([, v]) => v));
  const exportLink = h("a", { class: "button secondary", id: "export-csv", download: "",
    href: `/console/export/${encodeURIComponent(site)}/violations.csv?${params}` }, t("violations.export"));
  const tbody = h("tbody");
  const count = h("span", { class: "count", id: "violation-count" });
  const more = h("button", { type: "button", id: "more", hidden: true }, t("violations.more"));
  const table = h("table", { class: "data", id: "violations" },
    h("thead", {}, h("tr", {}, [t("col.waybill"), t("col.reason"), t("col.rule"), t("col.flow"), t("col.dispatched_at")].map((c) => h("th", {}, c)))),
    tbody);
  main.replaceChildren(h("h1", {}, `${t("violations.title")} · ${siteName(site)}`), form, h("div", { class: "actions" }, exportLink, count), table, more);
  let cursor = null;
  const load = async () => {
    const q = new URLSearchParams(params);
    q.set("limit", /^\d+$/.test(query.get("limit") || "") ? query.get("limit") : "50");
    if (cursor) q.set("cursor", cursor);
    let page;
    try { page = await api(`/v1/sites/${encodeURIComponent(site)}/violations?${q}`); } catch (err) { main.append(errorBox(err)); return; }
    for (const v of page.items) {
      tbody.append(h("tr", { "data-reason": v.reason, "data-flow": v.flow },
        h("td", {}, h("a", { href: `#/parcel/${encodeURIComponent(v.waybill_no)}?site=${encodeURIComponent(site)}`, class: "waybill" }, v.waybill_no)),
        h("td", {}, t(`reason.${v.reason}`)), h("td", {}, t(`rule.${v.rule}`)), h("td", {}, t(`flow.${v.flow}`)), h("td", {}, fmtTime(v.dispatched_at))));
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    count.textContent = tbody.children.length ? t("violations.count", { n: tbody.children.length }) : t("violations.none");
  };
  more.addEventListener("click", load);
  await load();
}

function eventDetail(ev) {
  const p = ev.payload || {};
  const bits = [];
  if (p.flow) bits.push(t(`flow.${p.flow}`));
  if (p.carrier) bits.push(p.carrier);
  if (p.clerk_id) bits.push(p.clerk_id);
  if (p.result) bits.push(has(`value.${p.result}`) ? t(`value.${p.result}`) : p.result);
  if (p.scanner_id) bits.push(p.scanner_id);
  if (p.verdict) bits.push(has(`value.${p.verdict}`) ? t(`value.${p.verdict}`) : p.verdict);
  if (p.sender) bits.push([p.sender.name_masked, p.sender.document_masked].filter(Boolean).join(" "));
  if (p.contract_customer_ref) bits.push(p.contract_customer_ref);
  return bits.join(" · ");
}

async function viewParcel(waybill, query) {
  const site = query.get("site");
  const main = document.getElementById("main");
  main.replaceChildren(h("p", {}, "…"));
  let p;
  try {
    p = await api(`/v1/parcels/${encodeURIComponent(waybill)}${site ? `?site_id=${encodeURIComponent(site)}` : ""}`);
  } catch (err) { main.replaceChildren(errorBox(err)); return; }
  const status = p.compliant === null ? ["pending", t("parcel.pending")] : p.compliant ? ["ok", t("parcel.compliant")] : ["bad", t("parcel.violating")];
  const timeline = h("ol", { class: "timeline", id: "timeline" }, p.events.map((ev) => {
    // Only a scan id goes into the address: image_ref is the station's text, and "scans/../x"
    // would point the reviewer's browser (with its session) at another endpoint.
    const ref = /^scans\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i.exec(ev.payload?.image_ref || "");
    const scanRef = ref ? ref[1] : null;
    return h("li", { "data-type": ev.type },
      h("time", {}, fmtTime(ev.occurred_at)),
      h("b", {}, t(`event.${ev.type}`)),
      h("span", { class: "detail" }, eventDetail(ev)),
      scanRef ? h("img", { class: "thumb", alt: "X-ray", src: `/v1/scans/${scanRef}/image?overlay=boxes&site_id=${encodeURIComponent(p.site_id)}` }) : null);
  }));
  main.replaceChildren(
    h("button", { type: "button", class: "back link", onclick: () => history.back() }, `← ${t("parcel.back")}`),
    h("h1", {}, `${t("parcel.title")} ${p.waybill_no}`),
    h("div", { class: "card" },
      h("p", {}, `${siteName(p.site_id)} · ${t(`flow.${p.flow || ""}`)} · ${p.carrier || ""}`),
      h("span", { class: `badge ${status[0]}`, id: "parcel-status" }, status[1]),
      h("ul", { class: "rules" }, Object.entries(p.rules).map(([rule, st]) =>
        h("li", { class: st.ok ? "ok" : "bad", "data-rule": rule }, `${st.ok ? "✓" : "✗"} ${t(`rule.${rule}`)}`,
          st.reasons.length ? ` — ${st.reasons.map((r) => t(`reason.${r}`)).join(", ")}` : ""))),
      p.missing_before_dispatch.length
        ? h("p", {}, `${t("parcel.missing")}: ${p.missing_before_dispatch.map((r) => t(`reason.${r}`)).join(", ")}`) : null),
    h("section", { class: "card" }, h("h2", {}, t("parcel.timeline")), timeline));
}

// ---- reviewer: queue, image with boxes, decisions, keyboard --------------------------------

const CATEGORIES = ["firearms_and_parts", "ammunition", "controlled_knives", "explosives", "drugs_and_paraphernalia",
  "compressed_gases", "flammable_liquids", "lithium_batteries"];

// The item's lease expired or another reviewer holds it now: it is not ours to decide or skip.
const leaseLost = (err) => err instanceof ApiError && err.code === "lease_lost";

async function viewReview() {
  const main = document.getElementById("main");
  let item = null;
  let timer = null;
  const status = h("p", { class: "status", id: "review-status", role: "status" });
  const pane = h("div", { id: "review-pane" });
  main.replaceChildren(h("h1", {}, t("review.title")), h("p", { class: "hint" }, t("review.keys")), status, pane);

  const decide = async (decision) => {
    if (!item) return;
    const category = pane.querySelector("#category")?.value || null;
    const note = pane.querySelector("#note")?.value || "";
    try {
      await api(`/v1/review/items/${item.item_id}/decision`, {
        method: "POST", body: { decision, category: decision === "confirm" ? category : null, note },
      });
      status.textContent = t("review.done", { d: t(`review.${decision}`).replace(/\s*\(.\)$/, "") });
      status.dataset.decision = decision;
    } catch (err) {
      if (!leaseLost(err)) { pane.prepend(errorBox(err)); return; }
      status.textContent = t("review.lease_lost");  // no longer ours: move on
    }
    await next();
  };

  // N: give the item back at once (POST .../skip) so another reviewer can take it; the queue
  // then hands this reviewer every other waiting item before this one again.
  const skip = async () => {
    if (item) {
      try {
        await api(`/v1/review/items/${item.item_id}/skip`, { method: "POST" });
        status.textContent = t("review.skipped");
      } catch (err) {
        if (!leaseLost(err)) { pane.prepend(errorBox(err)); return; }
        status.textContent = t("review.lease_lost");
      }
    }
    await next();
  };

  async function next() {
    clearTimeout(timer);
    try { item = await api("/v1/review/next"); } catch (err) { pane.replaceChildren(errorBox(err)); return; }
    if (!item) {
      pane.replaceChildren(h("p", { class: "empty", id: "review-empty" }, t("review.empty")));
      timer = setTimeout(next, 5000);
      return;
    }
    const cats = [...new Set([...item.findings.map((f) => f.category).filter(Boolean), ...CATEGORIES])];
    const top = item.findings.slice().sort((a, b) => b.score - a.score)[0];
    pane.replaceChildren(h("div", { class: "review", "data-item": item.item_id },
      h("figure", {}, h("img", { id: "review-image", alt: "X-ray", src: item.image_url })),
      h("aside", { class: "card" },
        h("p", {}, `${siteName(item.site_id)} · ${t("review.level")} ${item.level}`),
        h("p", { class: "hint" }, `${t("review.lease")}: ${fmtTime(item.lease_until)}`),
        h("h2", {}, t("review.findings")),
        h("table", { class: "data", id: "findings" },
          h("tbody", {}, item.findings.map((f) => h("tr", {},
            h("td", {}, catLabel(f.category)), h("td", {}, f.class_name), h("td", {}, pct(f.score)))))),
        h("label", {}, t("review.category"),
          h("select", { id: "category" }, cats.map((c, i) =>
            h("option", { value: c, selected: c === top?.category }, `${i < 9 ? `${i + 1}. ` : ""}${catLabel(c)}`)))),
        h("label", {}, t("review.note"), h("input", { id: "note", type: "text", maxlength: 1000 })),
        h("div", { class: "buttons" },
          h("button", { type: "button", id: "confirm", class: "danger", onclick: () => decide("confirm") }, t("review.confirm")),
          h("button", { type: "button", id: "clear", onclick: () => decide("clear") }, t("review.clear")),
          item.level < 2 ? h("button", { type: "button", id: "escalate", onclick: () => decide("escalate") }, t("review.escalate")) : null,
          h("button", { type: "button", id: "skip", class: "secondary", onclick: skip }, t("review.next"))))));
  }

  const onKey = (e) => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement || e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key.toLowerCase();
    if (k === "c") decide("confirm");
    else if (k === "x") decide("clear");
    else if (k === "e" && item?.level < 2) decide("escalate");
    else if (k === "n") skip();
    else if (/^[1-9]$/.test(k)) {
      const sel = pane.querySelector("#category");
      if (sel && sel.options[Number(k) - 1]) sel.selectedIndex = Number(k) - 1;
    } else return;
    e.preventDefault();
  };
  document.addEventListener("keydown", onKey);
  state.teardown.push(() => { document.removeEventListener("keydown", onKey); clearTimeout(timer); });
  await next();
}

// ---- supervisor: image reviewers' performance (threat image projection) ---------------------

// Flag a reviewer whose TIP hit rate is below 80% once at least 5 projected threats were judged.
// A supervisor's audit line, shown in the panel, not a regulation; under 5 projections one miss
// moves the rate by 20 points or more, so such a small sample is shown but not flagged.
const TIP_HIT_THRESHOLD = 0.8; // 0..1
const TIP_MIN_PROJECTED = 5;

function weakTip(r) {
  return r.hit_rate !== null && r.tip_projected >= TIP_MIN_PROJECTED && r.hit_rate < TIP_HIT_THRESHOLD;
}

function byWeakestTip(a, b) {
  // Weakest hit rate first; on a tie the larger sample first; no projections at all last.
  if (a.hit_rate === null || b.hit_rate === null) return (a.hit_rate === null) - (b.hit_rate === null);
  return a.hit_rate - b.hit_rate || b.tip_projected - a.tip_projected || a.reviewer.localeCompare(b.reviewer);
}

async function viewReviewers(query) {
  // No site chosen: every site of the key (the API's own scope); else one of them.
  const site = state.sites.some((s) => s.site_id === query.get("site")) ? query.get("site") : "";
  // No "to" unless chosen: the API then counts up to now. The browser's today may be a day behind
  // a site's own (the API dates decisions in each site's time zone) and would hide today's work.
  const f = { site, from: query.get("from") || daysAgo(29), to: query.get("to") || "" };
  const main = document.getElementById("main");
  const form = h("form", { class: "toolbar", id: "reviewer-filters" },
    h("label", {}, t("filter.site"),
      h("select", { id: "site", name: "site" },
        h("option", { value: "" }, t("reviewers.all_sites")),
        state.sites.map((s) => h("option", { value: s.site_id, selected: s.site_id === site }, `${s.name} (${s.site_id})`)))),
    h("label", {}, t("filter.from"), h("input", { type: "date", id: "from", name: "from", value: f.from })),
    h("label", {}, t("filter.to"), h("input", { type: "date", id: "to", name: "to", value: f.to })),
    h("button", { type: "submit", id: "apply" }, t("filter.apply")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const v = (id) => form.querySelector(`#${id}`).value;
    go("reviewers", { site: v("site"), from: v("from"), to: v("to") });
  });
  const threshold = t("reviewers.threshold", { pct: `${Math.round(TIP_HIT_THRESHOLD * 100)}%`, n: TIP_MIN_PROJECTED });
  main.replaceChildren(
    h("h1", {}, `${t("reviewers.title")} · ${site ? siteName(site) : t("reviewers.all_sites")}`),
    form,
    h("p", { class: "hint", id: "tip-threshold", "data-threshold": TIP_HIT_THRESHOLD, "data-min": TIP_MIN_PROJECTED }, threshold));
  const q = new URLSearchParams(Object.entries(f).filter(([, v]) => v).map(([k, v]) => [k === "site" ? "site_id" : k, v]));
  let rows;
  try { rows = (await api(`/v1/review/stats?${q}`)).reviewers; } catch (err) { main.append(errorBox(err)); return; }
  const card = h("section", { class: "card", id: "reviewers" }, h("h2", {}, t("reviewers.tip")));
  main.append(card);
  if (!rows.length) {
    card.append(h("p", { class: "empty", id: "no-reviewers" }, t("reviewers.none")));
    return;
  }
  if (!rows.some((r) => r.tip_projected > 0)) card.append(h("p", { class: "empty", id: "no-projections" }, t("reviewers.no_tip")));
  rows.sort(byWeakestTip);
  const rate = (v) => (v === null ? "—" : pct(v));
  const cols = ["reviewer", "level", "decisions", "confirms", "clears", "tip_projected", "tip_hits", "tip_misses", "hit_rate", "false_alarms"];
  card.append(h("table", { class: "data", id: "reviewer-table" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, t(`reviewers.col.${c}`))))),
    h("tbody", {}, rows.map((r) => {
      const weak = weakTip(r);
      const few = r.hit_rate !== null && r.tip_projected < TIP_MIN_PROJECTED;
      return h("tr", { class: weak ? "weak" : "", "data-reviewer": r.reviewer, "data-weak": weak ? "true" : "false" },
        h("td", { "data-col": "reviewer" }, r.label || r.reviewer, r.label ? h("div", { class: "mono meta" }, r.reviewer) : null),
        h("td", { "data-col": "level" }, r.level),
        h("td", { "data-col": "decisions" }, r.decisions),
        h("td", { "data-col": "confirms" }, r.confirms),
        h("td", { "data-col": "clears" }, r.clears),
        h("td", { "data-col": "tip_projected" }, r.tip_projected),
        h("td", { "data-col": "tip_hits" }, r.tip_hits),
        h("td", { "data-col": "tip_misses" }, r.tip_misses),
        h("td", { "data-col": "hit_rate" },
          weak ? h("span", { class: "badge bad", title: threshold }, rate(r.hit_rate)) : rate(r.hit_rate),
          few ? h("div", { class: "meta" }, t("reviewers.few")) : null),
        h("td", { "data-col": "false_alarms" }, r.false_alarms,
          r.false_alarm_rate === null ? "" : h("span", { class: "meta" }, ` (${pct(r.false_alarm_rate)})`)));
    }))));
  card.append(h("p", { class: "hint" }, t("reviewers.legend")));
}

// ---- police: live alerts, detail, acknowledge, close ---------------------------------------

async function viewAlerts(query, selected) {
  const main = document.getElementById("main");
  const live = h("span", { class: "live off", id: "live" }, t("alerts.offline"));
  const list = h("ul", { class: "alerts", id: "alert-list" });
  const detail = h("div", { class: "card", id: "alert-detail" }, h("p", { class: "empty" }, t("alerts.select")));
  main.replaceChildren(h("h1", {}, t("alerts.title"), " ", live), h("div", { class: "split" }, list, detail));
  const seen = new Map();

  const row = (a, fresh) => {
    const li = h("li", { class: `alert ${a.status}${fresh ? " fresh" : ""}${a.alert_id === selected ? " selected" : ""}`, "data-alert": a.alert_id, "data-status": a.status },
      h("a", { href: `#/alerts/${a.alert_id}` },
        fresh ? h("span", { class: "badge new" }, t("alerts.new")) : null,
        h("b", {}, catLabel(a.category)),
        h("span", {}, `${siteName(a.site_id)} · ${a.waybill_no || "—"}`),
        h("span", { class: "meta" }, [a.score === null ? "" : pct(a.score), t(`status.${a.status}`), fmtTime(a.created_at)].filter(Boolean).join(" · "))));
    return li;
  };
  const confirmedAt = new Map();  // alert id -> the confirmation its row shows
  const confirmationOf = (a) => (a.confirmation ? a.confirmation.confirmed_at : null);
  const upsert = (a, fresh) => {
    confirmedAt.set(a.alert_id, confirmationOf(a));
    const old = seen.get(a.alert_id);
    const li = row(a, fresh);
    seen.set(a.alert_id, li);
    if (old) old.replaceWith(li); else list.prepend(li);
  };

  try {
    const { alerts } = await api("/v1/alerts?limit=100");
    for (const a of alerts.slice().reverse()) upsert(a, false);
  } catch (err) { list.replaceChildren(errorBox(err)); }
  if (!list.children.length) list.append(h("li", { class: "empty", id: "no-alerts" }, t("alerts.none")));

  const source = new EventSource("/v1/alerts/stream");
  source.addEventListener("open", () => { live.textContent = t("alerts.live"); live.className = "live on"; });
  source.addEventListener("error", () => { live.textContent = t("alerts.offline"); live.className = "live off"; });
  const onFeed = (ev) => {
    const a = JSON.parse(ev.data);
    list.querySelector("#no-alerts")?.remove();
    // "New" for an alert not seen before or one a reviewer has just confirmed; a police action
    // (acknowledged, assigned, closed) only updates its row.
    const confirmation = confirmationOf(a);
    const fresh = !seen.has(a.alert_id) || (confirmation !== null && confirmation !== confirmedAt.get(a.alert_id));
    upsert(a, fresh);
  };
  // An alert comes again when it is updated (a reviewer confirmed it, police acted on it): its
  // row is replaced.
  source.addEventListener("alert", onFeed);
  state.teardown.push(() => source.close());

  if (selected) await showAlert(selected, detail, (a) => upsert(a, false));
}

async function showAlert(id, box, onChange) {
  let a;
  try { a = await api(`/v1/alerts/${encodeURIComponent(id)}`); } catch (err) { box.replaceChildren(errorBox(err)); return; }
  const handle = may("handle_alerts") && a.status !== "closed";
  const disposition = h("select", { id: "disposition" }, ["seized", "released", "false_alarm"].map((d) => h("option", { value: d }, t(`disposition.${d}`))));
  const act = async (action, body) => {
    try {
      const updated = await api(`/v1/alerts/${a.alert_id}/${action}`, { method: "POST", body });
      onChange(updated);
      await showAlert(id, box, onChange);
    } catch (err) { box.prepend(errorBox(err)); }
  };
  const s = a.sender;
  const assignee = h("input", { id: "assignee", type: "text", maxlength: 128, value: a.assignee || "", size: 12 });
  box.replaceChildren(
    h("h2", {}, `${t("alerts.detail")}: ${catLabel(a.category)}`),
    a.image_url ? h("img", { id: "alert-image", alt: "X-ray", src: a.image_url }) : null,
    h("dl", { class: "facts" },
      h("dt", {}, t("col.site")), h("dd", {}, siteName(a.site_id)),
      h("dt", {}, t("col.waybill")), h("dd", {}, a.waybill_no || "—"),
      h("dt", {}, t("col.score")), h("dd", {}, a.score === null ? "—" : pct(a.score)),
      h("dt", {}, t("alerts.cause")), h("dd", {}, has(`cause.${a.cause}`) ? t(`cause.${a.cause}`) : a.cause),
      a.confirmation ? [h("dt", {}, t("alerts.confirmed")), h("dd", { id: "alert-confirmed" },
        [fmtTime(a.confirmation.confirmed_at), a.confirmation.reviewer, a.confirmation.category ? catLabel(a.confirmation.category) : ""].filter(Boolean).join(" · "))] : null,
      h("dt", {}, t("col.time")), h("dd", {}, fmtTime(a.occurred_at)),
      h("dt", {}, t("col.status")), h("dd", { id: "alert-status", "data-status": a.status },
        t(`status.${a.status}`), a.disposition ? ` · ${t(`disposition.${a.disposition}`)}` : ""),
      h("dt", {}, t("alerts.sender")), h("dd", {}, s ? [s.name_masked, s.document_masked, s.phone_masked].filter(Boolean).join(" · ") : "—")),
    handle ? h("div", { class: "buttons" },
      a.status === "open" ? h("button", { type: "button", id: "acknowledge", onclick: () => act("acknowledge", { note: "" }) }, t("alerts.acknowledge")) : null,
      h("label", {}, t("alerts.assignee"), assignee),
      h("button", { type: "button", id: "assign", class: "secondary", onclick: () => assignee.value.trim() && act("assign", { assignee: assignee.value.trim(), note: "" }) }, t("alerts.assign")),
      h("label", {}, t("alerts.disposition"), disposition),
      h("button", { type: "button", id: "close", class: "danger", onclick: () => act("close", { disposition: disposition.value, note: "" }) }, t("alerts.close"))) : null,
    s && may("read_identity") ? identityBox(a) : null,
    h("h3", {}, t("alerts.actions")),
    h("ul", { class: "actions-log" }, (a.actions || []).map((x) => h("li", {}, `${fmtTime(x.at)} · ${has(`action.${x.action}`) ? t(`action.${x.action}`) : x.action} · ${x.actor}${x.detail?.disposition ? ` · ${t(`disposition.${x.detail.disposition}`)}` : ""}${x.detail?.note ? ` · ${x.detail.note}` : ""}`))));
}

// The sender's full identity: police only, and every read is recorded with its stated purpose
// (POST /v1/alerts/{id}/identity). Shown in the page, never cached or stored by the console.
function identityBox(a) {
  const purpose = h("input", { id: "purpose", type: "text", minlength: 8, maxlength: 500, size: 40, placeholder: t("identity.purpose_hint") });
  const out = h("div", { id: "identity" });
  const reveal = async () => {
    if (purpose.value.trim().length < 8) { purpose.focus(); return; }
    try {
      const who = await api(`/v1/alerts/${a.alert_id}/identity`, { method: "POST", body: { purpose: purpose.value.trim() } });
      out.replaceChildren(h("dl", { class: "facts identity" },
        h("dt", {}, t("identity.name")), h("dd", { id: "identity-name" }, who.name || "—"),
        h("dt", {}, t("identity.document")), h("dd", { id: "identity-document" }, [who.document_type, who.document_number].filter(Boolean).join(" ") || "—"),
        h("dt", {}, t("identity.phone")), h("dd", {}, who.phone || "—"),
        who.contract_customer_ref ? [h("dt", {}, t("identity.contract")), h("dd", {}, who.contract_customer_ref)] : null),
        h("p", { class: "hint" }, t("identity.recorded")));
    } catch (err) { out.replaceChildren(errorBox(err)); }
  };
  return h("details", { class: "identity-box" },
    h("summary", {}, t("identity.title")),
    h("div", { class: "buttons" }, h("label", {}, t("identity.purpose"), purpose),
      h("button", { type: "button", id: "reveal", class: "secondary", onclick: reveal }, t("identity.reveal"))),
    out);
}

// ---- monthly report -----------------------------------------------------------------------

function viewReport(query) {
  const site = currentSite(query);
  const month = query.get("month") || today(site).slice(0, 7);
  const main = document.getElementById("main");
  const monthIn = h("input", { type: "month", id: "month", value: month });
  const sel = siteSelect(site, () => {});
  const links = h("div", { class: "actions" });
  const update = () => {
    const base = `/console/reports/${encodeURIComponent(sel.value)}/${monthIn.value}`;
    const lang = state.lang === "en" ? "lang=en" : "lang=zh-CN";
    links.replaceChildren(
      h("a", { class: "button", id: "open-report", href: `${base}?${lang}`, target: "_blank", rel: "noopener" }, t("report.open")),
      h("a", { class: "button secondary", id: "pdf-report", href: `${base}?format=pdf&${lang}`, target: "_blank", rel: "noopener" }, t("report.pdf")));
  };
  sel.addEventListener("change", update);
  monthIn.addEventListener("change", update);
  update();
  main.replaceChildren(h("h1", {}, t("report.title")),
    h("div", { class: "toolbar" }, h("label", {}, t("filter.site"), sel), h("label", {}, t("report.month"), monthIn)), links);
}

// ---- routing ------------------------------------------------------------------------------

async function route() {
  teardown();
  if (!state.session) { renderSignIn(); return; }
  const { parts, query } = parseHash();
  const view = parts[0] || defaultView();
  const allowed = new Set(views().map(([id]) => id));
  const active = view === "parcel" ? "violations" : view;
  renderHeader(active);
  const main = document.getElementById("main");
  main.dataset.view = view;
  delete main.dataset.ready;
  try {
    if (view === "parcel" && may("read_parcels")) await viewParcel(parts[1], query);
    else if (!allowed.has(view)) go(defaultView());
    else if (view === "overview") await viewOverview(query);
    else if (view === "violations") await viewViolations(query);
    else if (view === "review") await viewReview();
    else if (view === "alerts") await viewAlerts(query, parts[1]);
    else if (view === "reviewers") await viewReviewers(query);
    else if (view === "report") viewReport(query);
  } catch (err) {
    main.append(errorBox(err));
  }
  main.dataset.ready = view;
}

async function start() {
  await loadStrings();
  window.addEventListener("hashchange", route);
  try {
    state.session = await api("/console/session");
  } catch {
    renderSignIn();
    return;
  }
  await afterSignIn();
}

start();

export { verifyNote }; // for tests of the checkpoint check
