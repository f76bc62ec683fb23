// A small SVG line chart of recent samples. Its drawing box is fixed
// (640 x 200 user units in a box of fixed aspect ratio), so redrawing it
// on every refresh never moves anything else on the page.

import {h, fill} from './dom.js';

const W = 640;
const H = 200;
const PAD = {left: 54, right: 10, top: 10, bottom: 22};

/** How much history is kept per chart (the longest window offered). */
export const KEEP_MS = 10 * 60 * 1000;

/**
 * Samples kept across page changes, by key (`overview`,
 * `queue:/:name`): [{t, v: {series: number|null}}].
 */
const histories = new Map();

/** Appends a sample to a history and drops what is older than KEEP_MS. */
export function record(key, values, t = Date.now()) {
  let hist = histories.get(key);
  if (!hist) { hist = []; histories.set(key, hist); }
  hist.push({t, v: values});
  while (hist.length && hist[0].t < t - KEEP_MS) hist.shift();
  return hist;
}

export function history(key) {
  return histories.get(key) || [];
}

/** A round tick step at or above x: 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6,
 * 7.5 or 8 x 10^n, so four steps make round labels. */
function niceStep(x) {
  if (x <= 0) return 0.25;
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7.5, 8, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

/** Time ticks: every 10 s up to a minute, every minute up to five,
 * every two minutes beyond. */
function tickStep(span) {
  if (span <= 60_000) return 10_000;
  if (span <= 5 * 60_000) return 60_000;
  return 120_000;
}

function tickLabel(ms) {
  return ms % 60_000 === 0 ? `-${ms / 60_000}m` : `-${ms / 1000}s`;
}

function shortNum(v) {
  if (v >= 1e9) return (v / 1e9).toFixed(v % 1e9 ? 1 : 0) + 'G';
  if (v >= 1e6) return (v / 1e6).toFixed(v % 1e6 ? 1 : 0) + 'M';
  if (v >= 1e3) return (v / 1e3).toFixed(v % 1e3 ? 1 : 0) + 'k';
  return String(Math.round(v * 100) / 100);
}

/**
 * A chart. `series`: [{key, label}], up to six; `format(v)` for the
 * legend; `windowMs` the span shown. Call update(history) to redraw.
 */
export function chart({title, series, format, windowMs = 5 * 60 * 1000, id, integer = false}) {
  const svg = h('svg', {viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title, preserveAspectRatio: 'none'});
  const legendValues = new Map();
  const legend = h('ul', {class: 'legend'}, series.map((s, i) => {
    const value = h('span', {class: 'value', 'data-series': s.key}, '');
    legendValues.set(s.key, value);
    return h('li', {}, h('span', {class: `swatch s${i + 1}`, 'aria-hidden': 'true'}), h('span', {}, s.label), value);
  }));
  const el = h('figure', {class: 'chart', id, 'data-chart': id || title},
    h('figcaption', {}, title),
    h('div', {class: 'plot'}, svg),
    legend);
  let span = windowMs;

  function update(hist, gapMs = 30_000) {
    const now = Date.now();
    const from = now - span;
    const shown = hist.filter((p) => p.t >= from - gapMs);
    let max = 0;
    for (const p of shown) for (const s of series) {
      const v = p.v[s.key];
      if (typeof v === 'number' && v > max) max = v;
    }
    // Four gridlines; whole numbers for counts.
    const step = Math.max(niceStep(max / 4), integer ? 1 : 0);
    const top = step * 4;
    const x = (t) => PAD.left + ((t - from) / span) * (W - PAD.left - PAD.right);
    const y = (v) => PAD.top + (1 - v / top) * (H - PAD.top - PAD.bottom);
    const parts = [];
    for (let i = 0; i <= 4; i++) {
      const v = (top / 4) * i;
      parts.push(h('line', {class: 'gridline', x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v)}));
      parts.push(h('text', {class: 'axis', x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end'}, shortNum(v)));
    }
    const every = tickStep(span);
    for (let ago = 0; ago <= span; ago += every) {
      const anchor = ago === 0 ? 'end' : ago === span ? 'start' : 'middle';
      parts.push(h('text', {class: 'axis', x: x(now - ago), y: H - 6, 'text-anchor': anchor},
        ago === 0 ? 'now' : tickLabel(ago)));
    }
    series.forEach((s, i) => {
      let d = '';
      let prevT = null;
      for (const p of shown) {
        const v = p.v[s.key];
        if (typeof v !== 'number') { prevT = null; continue; }
        const cmd = prevT === null || p.t - prevT > gapMs ? 'M' : 'L';
        d += `${cmd}${Math.max(PAD.left, x(p.t)).toFixed(1)},${y(v).toFixed(1)}`;
        prevT = p.t;
      }
      if (d) parts.push(h('path', {class: `series s${i + 1}`, d, 'data-series': s.key}));
    });
    fill(svg, parts);
    const last = hist[hist.length - 1];
    for (const s of series) {
      const v = last ? last.v[s.key] : undefined;
      const cell = legendValues.get(s.key);
      if (typeof v === 'number') {
        cell.textContent = format(v);
        cell.classList.remove('na');
        cell.removeAttribute('title');
      } else {
        cell.textContent = 'n/a';
        cell.classList.add('na');
        cell.title = s.missing || 'not reported by this broker';
      }
    }
  }

  return {
    el,
    update,
    setWindow(ms) { span = ms; },
  };
}
