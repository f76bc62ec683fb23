// Small DOM and formatting helpers. No framework: elements are built with
// h() and updated in place, so a refresh never rebuilds a form the user
// is typing in.

/** Creates an element: h('a', {href: '#/'}, 'text', child, [more]). */
export function h(tag, attrs, ...children) {
  const el = tag === 'svg' || SVG_TAGS.has(tag)
    ? document.createElementNS('http://www.w3.org/2000/svg', tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'class') {
      el.setAttribute('class', v);
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else if (k === 'value' && 'value' in el && !(el instanceof SVGElement)) {
      el.value = v;
    } else if (k === 'checked' || k === 'selected' || k === 'disabled') {
      el[k] = Boolean(v);
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

const SVG_TAGS = new Set(['g', 'path', 'line', 'text', 'rect', 'polyline', 'title']);

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** The path segment of a name, for links and API paths. */
export const enc = encodeURIComponent;

/** A link to a page of the UI. */
export function link(parts, text) {
  return h('a', {href: '#/' + parts.map(enc).join('/')}, text);
}

/** 1234567 -> "1,234,567"; null -> "". */
export function num(n) {
  if (n === null || n === undefined || n === '') return '';
  if (typeof n !== 'number') return String(n);
  return n.toLocaleString('en-US', {maximumFractionDigits: 0});
}

/** A rate per second, with one decimal below 100. */
export function rate(r) {
  if (typeof r !== 'number' || !Number.isFinite(r)) return '';
  const a = Math.abs(r);
  const digits = a >= 100 || a === 0 ? 0 : 1;
  return r.toLocaleString('en-US', {minimumFractionDigits: digits, maximumFractionDigits: digits}) + '/s';
}

/** Bytes in binary units. */
export function bytes(b) {
  if (typeof b !== 'number' || !Number.isFinite(b)) return 'unknown';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = b;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + ' ' + units[i];
}

/** Bytes per second. */
export function byteRate(r) {
  return typeof r === 'number' && Number.isFinite(r) ? `${bytes(r)}/s` : '';
}

/** Milliseconds as "3d 4h", "5h 6m", "7m 8s". */
export function duration(ms) {
  if (typeof ms !== 'number') return '';
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hr = Math.floor(s / 3600); s -= hr * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d ${hr}h`;
  if (hr) return `${hr}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

/** A value from a dotted path. */
export function get(obj, path) {
  return path.split('.').reduce((o, k) => (o === null || o === undefined ? undefined : o[k]), obj);
}

/** A JSON value as short text for a table cell. */
export function show(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** A key/value table of an object's entries (arguments, properties). */
export function kvTable(obj, emptyText = 'none') {
  const entries = Object.entries(obj || {});
  if (entries.length === 0) return h('p', {class: 'muted'}, emptyText);
  return h('div', {class: 'table-wrap'}, h('table', {class: 'kv'}, h('tbody', {},
    entries.map(([k, v]) => h('tr', {}, h('th', {scope: 'row'}, k), h('td', {class: 'mono'}, show(v)))))));
}

/** Calls fn at most once per `ms` of quiet (typing in a filter). */
export function debounce(fn, ms) {
  let t = null;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}
