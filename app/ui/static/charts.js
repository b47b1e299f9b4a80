/* Small SVG charts, no library: bars, lines, heatmap, mini distribution bars. */
"use strict";
const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac", "#eeca3b"];
  const color = (i) => PALETTE[i % PALETTE.length];
  function el(tag, attrs, parent) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }
  function text(parent, x, y, s, attrs) {
    const t = el("text", Object.assign({ x, y }, attrs || {}), parent);
    t.textContent = s;
    return t;
  }
  function svg(width, height) { return el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" }); }
  const fmt = (v) => (v === null || v === undefined || Number.isNaN(v)) ? "–" : (Math.abs(v) >= 1000 || Number.isInteger(v) ? String(v) : Number(v).toPrecision(3));

  function bars(container, labels, values, opts) {
    opts = opts || {};
    const w = opts.width || Math.max(320, labels.length * 34 + 60), h = opts.height || 200, pad = { l: 44, b: 28, t: 10, r: 10 };
    const s = svg(w, h);
    const max = opts.max || Math.max(1e-12, ...values);
    const bw = (w - pad.l - pad.r) / Math.max(1, labels.length);
    const y = (v) => h - pad.b - (v / max) * (h - pad.b - pad.t);
    el("line", { x1: pad.l, y1: h - pad.b, x2: w - pad.r, y2: h - pad.b, stroke: "#999" }, s);
    text(s, pad.l - 4, pad.t + 8, fmt(max), { "text-anchor": "end" });
    text(s, pad.l - 4, h - pad.b, "0", { "text-anchor": "end" });
    labels.forEach((lab, i) => {
      const r = el("rect", { x: pad.l + i * bw + 2, y: y(values[i]), width: Math.max(1, bw - 4), height: h - pad.b - y(values[i]), fill: opts.color || color(0) }, s);
      el("title", {}, r).textContent = `${lab}: ${fmt(values[i])}`;
      if (labels.length <= 40 || i % Math.ceil(labels.length / 40) === 0) text(s, pad.l + i * bw + bw / 2, h - pad.b + 14, String(lab), { "text-anchor": "middle" });
    });
    if (opts.xlabel) text(s, w / 2, h - 2, opts.xlabel, { "text-anchor": "middle" });
    container.replaceChildren(s);
  }

  function lines(container, series, opts) {
    opts = opts || {};
    const w = opts.width || 540, h = opts.height || 240, pad = { l: 50, b: 30, t: 10, r: 120 };
    const s = svg(w, h);
    const pts = series.flatMap((se) => se.points).filter((p) => p[1] !== null && Number.isFinite(p[1]));
    if (!pts.length) { container.replaceChildren(document.createTextNode("No data yet.")); return; }
    let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
    if (opts.ymin !== undefined) y0 = Math.min(y0, opts.ymin);
    if (x1 === x0) x1 = x0 + 1; if (y1 === y0) y1 = y0 + 1;
    const X = (v) => pad.l + (v - x0) / (x1 - x0) * (w - pad.l - pad.r);
    const Y = (v) => h - pad.b - (v - y0) / (y1 - y0) * (h - pad.b - pad.t);
    el("line", { x1: pad.l, y1: h - pad.b, x2: w - pad.r, y2: h - pad.b, stroke: "#999" }, s);
    el("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: h - pad.b, stroke: "#999" }, s);
    [y0, (y0 + y1) / 2, y1].forEach((v) => text(s, pad.l - 4, Y(v) + 4, fmt(v), { "text-anchor": "end" }));
    [x0, x1].forEach((v) => text(s, X(v), h - pad.b + 14, fmt(v), { "text-anchor": "middle" }));
    if (opts.xlabel) text(s, (w - pad.r + pad.l) / 2, h - 2, opts.xlabel, { "text-anchor": "middle" });
    series.forEach((se, i) => {
      const p = se.points.filter((q) => q[1] !== null && Number.isFinite(q[1]));
      if (!p.length) return;
      const c = se.color || color(i);
      el("polyline", { points: p.map((q) => `${X(q[0])},${Y(q[1])}`).join(" "), fill: "none", stroke: c, "stroke-width": 2, "stroke-dasharray": se.dash || "" }, s);
      if (p.length < 40) p.forEach((q) => { const d = el("circle", { cx: X(q[0]), cy: Y(q[1]), r: 2.5, fill: c }, s); el("title", {}, d).textContent = `${se.name} @ ${q[0]}: ${fmt(q[1])}`; });
      el("rect", { x: w - pad.r + 10, y: pad.t + i * 16, width: 10, height: 10, fill: c }, s);
      text(s, w - pad.r + 24, pad.t + i * 16 + 9, se.name);
    });
    container.replaceChildren(s);
  }

  function heatmap(container, matrix, rows, cols, opts) {
    opts = opts || {};
    const cell = Math.max(22, Math.min(48, Math.floor(480 / Math.max(1, cols.length))));
    const pad = { l: 90, t: 70 };
    const w = pad.l + cell * cols.length + 10, h = pad.t + cell * rows.length + 10;
    const s = svg(w, h);
    cols.forEach((c, j) => text(s, pad.l + j * cell + cell / 2, pad.t - 6, c, { "text-anchor": "start", transform: `rotate(-45 ${pad.l + j * cell + cell / 2} ${pad.t - 6})` }));
    rows.forEach((r, i) => {
      text(s, pad.l - 6, pad.t + i * cell + cell / 2 + 4, r, { "text-anchor": "end" });
      cols.forEach((c, j) => {
        const v = matrix[i][j];
        const shade = Math.round(255 - 200 * Math.max(0, Math.min(1, v)));
        const rect = el("rect", { x: pad.l + j * cell, y: pad.t + i * cell, width: cell - 1, height: cell - 1, fill: `rgb(${shade},${shade + (i === j ? 0 : 0)},255)` }, s);
        el("title", {}, rect).textContent = `true ${r}, labeled ${c}: ${fmt(v)}`;
        if (cell >= 30) text(s, pad.l + j * cell + cell / 2, pad.t + i * cell + cell / 2 + 4, v < 0.005 ? "0" : v.toFixed(2), { "text-anchor": "middle", fill: v > 0.6 ? "#fff" : "#222" });
      });
    });
    container.replaceChildren(s);
  }

  function mini(dist, classes, width) {
    width = width || Math.max(60, Math.min(160, classes.length * 14));
    const h = 22, s = svg(width, h);
    s.setAttribute("class", "mini");
    if (!dist) { text(s, 2, 15, "no votes"); return s; }
    const bw = width / dist.length;
    dist.forEach((p, i) => {
      const r = el("rect", { x: i * bw + 0.5, y: h - 1 - p * (h - 2), width: Math.max(1, bw - 1), height: Math.max(0.5, p * (h - 2)), fill: color(i) }, s);
      el("title", {}, r).textContent = `${classes[i]}: ${(p * 100).toFixed(1)}%`;
    });
    return s;
  }

  function reliability(container, bins) {
    const series = [
      { name: "perfect", points: [[0, 0], [1, 1]], color: "#999", dash: "4 3" },
      { name: "model", points: bins.filter((b) => b.count > 0).map((b) => [b.confidence, b.accuracy]) },
    ];
    lines(container, series, { xlabel: "confidence", ymin: 0 });
  }

  return { bars, lines, heatmap, mini, reliability, color, fmt };
})();
