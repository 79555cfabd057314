// Hand-written SVG charts for the console (no library): rates over time, bars per category.
// Every chart is an <svg class="chart ..."> whose marks carry data-* attributes, so tests and
// screen readers can read the numbers back.

const NS = "http://www.w3.org/2000/svg";
export const PALETTE = ["#1f6feb", "#d97706", "#059669", "#b42318", "#7c3aed", "#0e7490"];

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

const pct = (v) => `${(v * 100).toFixed(v === 1 || v === 0 ? 0 : 1)}%`;

// labels: x-axis labels; series: [{name, values: [0..1 | null]}]. A null breaks the line.
export function lineChart(labels, series, { width = 760, height = 260, cls = "" } = {}) {
  const left = 46, right = 14, top = 30, bottom = 30;
  const w = width - left - right, h = height - top - bottom;
  const present = series.flatMap((s) => s.values.filter((v) => v !== null));
  const lowest = present.length ? Math.min(...present) : 0;
  const yMin = lowest >= 0.8 ? 0.8 : lowest >= 0.5 ? 0.5 : 0;
  const n = Math.max(labels.length, 1);
  const x = (i) => left + (n > 1 ? (w * i) / (n - 1) : w / 2);
  const y = (v) => top + h * (1 - (Math.max(v, yMin) - yMin) / (1 - yMin));
  const svg = el("svg", {
    class: `chart ${cls}`, viewBox: `0 0 ${width} ${height}`, role: "img", "data-points": present.length,
  });
  for (let k = 0; k <= 4; k++) {
    const v = yMin + ((1 - yMin) * k) / 4;
    svg.append(
      el("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid" }),
      el("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, pct(v)),
    );
  }
  const step = Math.max(1, Math.ceil(n / 12));
  labels.forEach((label, i) => {
    if (i % step === 0 || i === n - 1) {
      svg.append(el("text", { x: x(i), y: height - 8, "text-anchor": "middle", class: "axis" }, label));
    }
  });
  series.forEach((s, k) => {
    const colour = PALETTE[k % PALETTE.length];
    const g = el("g", { class: "series", "data-name": s.name });
    let run = [];
    const flush = () => {
      if (run.length > 1) g.append(el("polyline", { points: run.join(" "), fill: "none", stroke: colour, "stroke-width": 2 }));
      run = [];
    };
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) { flush(); return; }
      run.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`);
      const dot = el("circle", { cx: x(i), cy: y(v), r: 3, fill: colour, class: "point", "data-label": labels[i], "data-value": v });
      dot.append(el("title", {}, `${s.name} ${labels[i]}: ${pct(v)}`));
      g.append(dot);
    });
    flush();
    svg.append(g);
    const lx = left + 4 + k * 130;
    svg.append(
      el("rect", { x: lx, y: 8, width: 12, height: 12, fill: colour, rx: 2 }),
      el("text", { x: lx + 16, y: 18, class: "legend" }, s.name),
    );
  });
  return svg;
}

// items: [{label, value, note?}] horizontal bars; max: the value a full bar means (default the max).
export function barChart(items, { width = 760, bar = 22, max, format = (v) => String(v), cls = "" } = {}) {
  const left = 190, right = 90;
  const height = Math.max(bar + 10, items.length * (bar + 10) + 6);
  const top = max ?? Math.max(0, ...items.map((i) => i.value ?? 0)) ?? 1;
  const svg = el("svg", { class: `chart ${cls}`, viewBox: `0 0 ${width} ${height}`, role: "img", "data-bars": items.length });
  items.forEach((item, i) => {
    const yy = 4 + i * (bar + 10);
    const v = item.value ?? 0;
    const len = top > 0 ? ((width - left - right) * v) / top : 0;
    svg.append(
      el("text", { x: left - 8, y: yy + bar * 0.7, "text-anchor": "end", class: "label" }, item.label),
      el("rect", { x: left, y: yy, width: width - left - right, height: bar, class: "track", rx: 3 }),
    );
    const rect = el("rect", {
      x: left, y: yy, width: Math.max(len, 0), height: bar, rx: 3, class: "bar",
      fill: item.colour || PALETTE[0], "data-label": item.label, "data-value": v,
    });
    rect.append(el("title", {}, `${item.label}: ${item.value === null ? "—" : format(v)}`));
    svg.append(rect);
    svg.append(el("text", { x: left + len + 6, y: yy + bar * 0.7, class: "value" },
      (item.value === null ? "—" : format(v)) + (item.note ? `  ${item.note}` : "")));
  });
  return svg;
}

export { pct };
