// The dashboard's charts, drawn as SVG from the answers of /api/charts. No library: a few
// shapes and labels each, scaled to a fixed view box that the page stretches to its width.
"use strict";

window.Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 520;
  const H = 200;
  const PAD = { left: 36, right: 10, top: 12, bottom: 26 };

  function node(tag, attrs, text) {
    const el = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function canvas(container, label, height) {
    const svg = node("svg", { viewBox: `0 0 ${W} ${height || H}`, role: "img", "aria-label": label });
    container.replaceChildren(svg);
    return svg;
  }

  function titled(el, text) {
    el.appendChild(node("title", {}, text));
    return el;
  }

  function nothing(svg, text, height) {
    svg.appendChild(node("text", { x: W / 2, y: (height || H) / 2, "text-anchor": "middle", class: "nothing" }, text));
  }

  // A y axis from 0 to a round maximum, with a grid line at the top and the middle.
  function axis(svg, most, height) {
    const h = height || H;
    const top = niceMax(most);
    for (const value of [0, top / 2, top]) {
      const y = yOf(value, top, h);
      svg.appendChild(node("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "grid" }));
      svg.appendChild(node("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end" }, short(value)));
    }
    return top;
  }

  function niceMax(value) {
    if (value <= 4) return 4;
    const step = 10 ** Math.floor(Math.log10(value));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
    return 10 * step;
  }

  function short(value) {
    if (value >= 1000) return `${(value / 1000).toFixed(value % 1000 ? 1 : 0)}k`;
    return Number.isInteger(value) ? String(value) : value.toFixed(1);
  }

  function yOf(value, top, height) {
    const h = height || H;
    return h - PAD.bottom - (value / top) * (h - PAD.top - PAD.bottom);
  }

  function clock(date, hours) {
    const options = hours > 24 ? { weekday: "short", hour: "2-digit" } : { hour: "2-digit", minute: "2-digit" };
    return date.toLocaleString([], options);
  }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    if (value < 60) return `${value.toFixed(value < 10 ? 1 : 0)} s`;
    if (value < 3600) return `${Math.floor(value / 60)} min ${String(Math.round(value % 60)).padStart(2, "0")} s`;
    return `${(value / 3600).toFixed(1)} h`;
  }

  // Completed and failed rows per hour of the window, stacked.
  function hourly(container, charts) {
    const svg = canvas(container, "Completed and failed rows per hour");
    const now = new Date(charts.now);
    const first = new Date(now.getTime() - charts.window_hours * 3600e3);
    first.setUTCMinutes(0, 0, 0);
    const counts = new Map(charts.per_hour.map((h) => [new Date(h.hour).getTime(), h]));
    const hours = [];
    for (let t = first.getTime(); t <= now.getTime(); t += 3600e3) {
      const found = counts.get(t) || { completed: 0, failed: 0 };
      hours.push({ at: new Date(t), completed: found.completed, failed: found.failed });
    }
    const most = Math.max(0, ...hours.map((h) => h.completed + h.failed));
    if (most === 0) return nothing(svg, "No row ended in this window.");
    const top = axis(svg, most);
    const slot = (W - PAD.left - PAD.right) / hours.length;
    const width = Math.max(1, slot * 0.75);
    hours.forEach((h, i) => {
      const x = PAD.left + i * slot + (slot - width) / 2;
      const yDone = yOf(h.completed, top);
      const yAll = yOf(h.completed + h.failed, top);
      const label = `${clock(h.at, charts.window_hours)}: ${h.completed} completed, ${h.failed} failed`;
      const group = titled(node("g", { "data-hour": h.at.toISOString() }), label);
      group.appendChild(node("rect", { x, y: yDone, width, height: yOf(0, top) - yDone, class: "completed" }));
      group.appendChild(node("rect", { x, y: yAll, width, height: yDone - yAll, class: "failed" }));
      svg.appendChild(group);
    });
    const ticks = [[0, "start"], [Math.floor(hours.length / 2), "middle"], [hours.length - 1, "end"]];
    for (const [i, anchor] of ticks) {
      const x = anchor === "start" ? PAD.left : anchor === "end" ? W - PAD.right : PAD.left + (i + 0.5) * slot;
      svg.appendChild(node("text", { x, y: H - 8, "text-anchor": anchor }, clock(hours[i].at, charts.window_hours)));
    }
    legend(svg, [["completed", "completed"], ["failed", "failed"]]);
  }

  function legend(svg, entries) {
    let x = W - PAD.right - 150;
    for (const [cls, text] of entries) {
      svg.appendChild(node("rect", { x, y: 2, width: 10, height: 10, class: cls }));
      svg.appendChild(node("text", { x: x + 14, y: 11, class: "label" }, text));
      x += 75;
    }
  }

  // How long completed rows ran, as a histogram, with the median and the 95th percentile marked.
  function durations(container, d, note) {
    const svg = canvas(container, "Distribution of generation times");
    note.textContent = d.count ? `p50 ${seconds(d.p50_s)} · p95 ${seconds(d.p95_s)} · ${d.count} completed` : "";
    if (!d.count) return nothing(svg, "No row completed in this window.");
    const edges = d.edges_s;
    const counts = new Array(edges.length + 1).fill(0);
    for (const b of d.buckets) counts[b.bucket] = b.count;
    const used = counts.map((n, i) => (n ? i : -1)).filter((i) => i >= 0);
    let lo = Math.max(0, Math.min(...used) - 1);
    let hi = Math.min(edges.length, Math.max(...used) + 1);
    while (hi - lo < 4 && (lo > 0 || hi < edges.length)) {
      if (hi < edges.length) hi++;
      else lo--;
    }
    const top = axis(svg, Math.max(...counts));
    const slot = (W - PAD.left - PAD.right) / (hi - lo + 1);
    const label = (i) => (i === 0 ? `< ${seconds(edges[0])}` : i === edges.length ? `≥ ${seconds(edges[i - 1])}` : `≤ ${seconds(edges[i])}`);
    for (let i = lo; i <= hi; i++) {
      const x = PAD.left + (i - lo) * slot;
      const y = yOf(counts[i], top);
      const bar = node("rect", { x: x + slot * 0.1, y, width: slot * 0.8, height: yOf(0, top) - y, class: "bar" });
      svg.appendChild(titled(bar, `${label(i)}: ${counts[i]}`));
      svg.appendChild(node("text", { x: x + slot / 2, y: H - 8, "text-anchor": "middle" }, label(i)));
    }
    for (const [name, value] of [["p50", d.p50_s], ["p95", d.p95_s]]) {
      let b = edges.filter((edge) => edge <= value).length;
      b = Math.min(Math.max(b, lo), hi);
      const lower = b === 0 ? 0 : edges[b - 1];
      const upper = b === edges.length ? lower * 2 : edges[b];
      const within = Math.min(1, Math.max(0, (value - lower) / (upper - lower)));
      const x = PAD.left + (b - lo + within) * slot;
      svg.appendChild(node("line", { x1: x, x2: x, y1: PAD.top, y2: H - PAD.bottom, class: "marker" }));
      svg.appendChild(node("text", { x: x + 4, y: PAD.top + (name === "p50" ? 10 : 24), class: "label" }, `${name} ${seconds(value)}`));
    }
  }

  // The most frequent reasons rows failed, as horizontal bars.
  function failures(container, list) {
    const rowH = 30;
    const height = Math.max(H, list.length * rowH + 16);
    const svg = canvas(container, "Failures by reason", height);
    if (!list.length) return nothing(svg, "No row failed in this window.");
    const most = Math.max(...list.map((f) => f.count));
    const room = W - 60;
    list.forEach((f, i) => {
      const y = 8 + i * rowH;
      const reason = f.reason.length > 80 ? `${f.reason.slice(0, 79)}…` : f.reason;
      svg.appendChild(titled(node("text", { x: 4, y: y + 10, class: "label" }, reason), f.reason));
      const width = Math.max(2, (f.count / most) * room);
      svg.appendChild(titled(node("rect", { x: 4, y: y + 14, width, height: 10, class: "reason" }), `${f.count}× ${f.reason}`));
      svg.appendChild(node("text", { x: width + 10, y: y + 23 }, String(f.count)));
    });
  }

  // Rows waiting for a claim over the window: the most at once in each slice, as an area.
  function queue(container, charts) {
    const svg = canvas(container, "Queue depth over time");
    const q = charts.queue;
    const bySlice = new Map(q.depth.map((s) => [s.slice, s]));
    const values = [];
    let carried = 0;
    for (let i = 0; i < q.slices; i++) {
      const found = bySlice.get(i);
      values.push(found ? found.most : carried);
      if (found) carried = found.last;
    }
    const top = axis(svg, Math.max(1, ...values));
    const step = (W - PAD.left - PAD.right) / q.slices;
    const points = values.map((v, i) => [PAD.left + i * step, yOf(v, top), PAD.left + (i + 1) * step]);
    const line = points.map(([x0, y, x1]) => `${x0},${y} ${x1},${y}`).join(" ");
    const base = yOf(0, top);
    svg.appendChild(node("polygon", { points: `${PAD.left},${base} ${line} ${W - PAD.right},${base}`, class: "area" }));
    svg.appendChild(titled(node("polyline", { points: line, class: "line" }), `most waiting at once: ${Math.max(...values)}`));
    const now = new Date(charts.now);
    const since = new Date(now.getTime() - charts.window_hours * 3600e3);
    svg.appendChild(node("text", { x: PAD.left, y: H - 8 }, clock(since, charts.window_hours)));
    svg.appendChild(node("text", { x: W - PAD.right, y: H - 8, "text-anchor": "end" }, "now"));
  }

  return { hourly, durations, failures, queue, seconds };
})();
