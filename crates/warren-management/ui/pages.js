// The pages everyone with a management tag sees: overview, connections,
// channels, exchanges and queues, and their detail pages. Each page
// function returns {title, el, refresh}: the shell calls refresh() at
// once and then every refresh interval; refresh only updates data, so
// forms keep what the user typed.

import {h, fill, enc, link, num, rate, bytes, byteRate, duration, get, show, kvTable, debounce} from './dom.js';
import {api, apiGet, ApiError} from './api.js';
import {chart, record, history} from './chart.js';

// ---------------------------------------------------------------- tables

/** Table settings kept while the UI is open, by table id. */
const tableStates = new Map();

/**
 * A server-side paged, sorted and filtered list (RabbitMQ's `page`,
 * `page_size`, `name`, `use_regex`, `sort`, `sort_reverse`, `columns`).
 * `path(vhost)` is the list's API path; `columns`: [{label, sort, num,
 * cell(row), fields: [dotted paths the cell reads]}].
 */
export function listTable({id, path, columns, defaultSort = '', vhosts = true, noun = 'items'}) {
  const st = tableStates.get(id) || {page: 1, pageSize: 50, name: '', regex: false, sort: defaultSort, reverse: false, vhost: ''};
  tableStates.set(id, st);
  const fields = [...new Set(columns.flatMap((c) => c.fields || []))].join(',');

  const filter = h('input', {type: 'search', id: `${id}-filter`, value: st.name, placeholder: 'part of a name', 'aria-describedby': `${id}-count`});
  const regex = h('input', {type: 'checkbox', id: `${id}-regex`, checked: st.regex});
  const vhostSelect = h('select', {id: `${id}-vhost`}, h('option', {value: ''}, 'All'));
  const sizeSelect = h('select', {id: `${id}-size`},
    [20, 50, 100, 500].map((n) => h('option', {value: n, selected: n === st.pageSize}, String(n))));
  const again = () => { st.page = 1; refresh().catch(showError); };
  filter.addEventListener('input', debounce(() => { st.name = filter.value; again(); }, 300));
  regex.addEventListener('change', () => { st.regex = regex.checked; again(); });
  vhostSelect.addEventListener('change', () => { st.vhost = vhostSelect.value; again(); });
  sizeSelect.addEventListener('change', () => { st.pageSize = Number(sizeSelect.value); again(); });

  const headCells = columns.map((c) => {
    const th = h('th', {scope: 'col', class: c.num ? 'num' : null});
    if (c.sort) {
      th.appendChild(h('button', {type: 'button', class: 'sort', onclick: () => {
        if (st.sort === c.sort) st.reverse = !st.reverse;
        else { st.sort = c.sort; st.reverse = Boolean(c.num); }
        st.page = 1;
        refresh().catch(showError);
      }}, c.label));
    } else {
      th.textContent = c.label;
    }
    return th;
  });
  const body = h('tbody', {});
  const count = h('span', {class: 'count', id: `${id}-count`, 'aria-live': 'polite'});
  const prev = h('button', {type: 'button', class: 'secondary', id: `${id}-prev`, onclick: () => { st.page -= 1; refresh().catch(showError); }}, 'Previous');
  const next = h('button', {type: 'button', class: 'secondary', id: `${id}-next`, onclick: () => { st.page += 1; refresh().catch(showError); }}, 'Next');
  const pageLabel = h('span', {class: 'count'});
  const errorBox = h('div', {});
  const showError = (e) => fill(errorBox, h('div', {class: 'message error', role: 'alert'}, String(e.message || e)));

  const el = h('div', {class: 'list', id},
    h('div', {class: 'toolbar'},
      h('label', {for: filter.id}, 'Filter by name', filter),
      h('label', {class: 'check', for: regex.id}, regex, 'Regular expression'),
      vhosts ? h('label', {for: vhostSelect.id}, 'Virtual host', vhostSelect) : null,
      h('label', {for: sizeSelect.id}, 'Per page', sizeSelect)),
    errorBox,
    h('div', {class: 'table-wrap'}, h('table', {}, h('thead', {}, h('tr', {}, headCells)), body)),
    h('div', {class: 'pager'}, prev, pageLabel, next, count));

  let vhostsLoaded = false;
  async function loadVhosts() {
    if (!vhosts || vhostsLoaded) return;
    vhostsLoaded = true;
    try {
      const list = await apiGet('/api/vhosts?columns=name');
      for (const v of list) vhostSelect.appendChild(h('option', {value: v.name, selected: v.name === st.vhost}, v.name));
    } catch {
      // The list works without the selector.
    }
  }

  async function refresh(retried = false) {
    loadVhosts();
    const params = new URLSearchParams({page: String(st.page), page_size: String(st.pageSize)});
    if (st.name) params.set('name', st.name);
    if (st.regex) params.set('use_regex', 'true');
    params.set('sort', st.sort);
    if (st.reverse) params.set('sort_reverse', 'true');
    if (fields) params.set('columns', fields);
    let data;
    try {
      data = await apiGet(path(st.vhost) + '?' + params.toString());
    } catch (e) {
      if (e instanceof ApiError && e.error === 'page_out_of_range' && !retried) {
        st.page = 1;
        return refresh(true);
      }
      if (e instanceof ApiError && e.status === 400) {
        showError(new Error(`The filter was refused: ${e.reason}`));
        return undefined;
      }
      throw e;
    }
    fill(errorBox);
    headCells.forEach((th, i) => {
      const c = columns[i];
      if (c.sort && c.sort === st.sort) th.setAttribute('aria-sort', st.reverse ? 'descending' : 'ascending');
      else th.removeAttribute('aria-sort');
    });
    const rows = data.items.map((row) => h('tr', {},
      columns.map((c) => h('td', {class: [c.num ? 'num' : '', c.name ? 'name' : ''].join(' ').trim() || null}, c.cell(row)))));
    if (rows.length === 0) {
      rows.push(h('tr', {class: 'empty'}, h('td', {colspan: columns.length},
        data.total_count === 0 ? `No ${noun}.` : `No ${noun} match the filter.`)));
    }
    fill(body, rows);
    prev.disabled = data.page <= 1;
    next.disabled = data.page >= data.page_count;
    pageLabel.textContent = `Page ${data.page} of ${Math.max(1, data.page_count)}`;
    const first = data.item_count ? (data.page - 1) * data.page_size + 1 : 0;
    const last = (data.page - 1) * data.page_size + data.item_count;
    count.textContent = `${num(first)}–${num(last)} of ${num(data.filtered_count)} ${noun}` +
      (data.filtered_count !== data.total_count ? ` (filtered from ${num(data.total_count)})` : '');
    return data;
  }

  return {el, refresh};
}

const col = (label, key, opts = {}) => ({
  label,
  sort: opts.sort === false ? null : (opts.sort || key),
  num: opts.num,
  fields: opts.fields || [key],
  cell: opts.cell || ((row) => (opts.num ? num(get(row, key)) : show(get(row, key)))),
});

const rateCol = (label, key) => col(label, key, {num: true, sort: key, cell: (r) => rate(get(r, key) || 0)});

function yesNo(v) {
  return v ? 'yes' : 'no';
}

function features(q) {
  const tags = [];
  if (q.durable) tags.push(h('span', {class: 'tag', title: 'durable'}, 'D'));
  if (q.auto_delete) tags.push(h('span', {class: 'tag', title: 'auto-delete'}, 'AD'));
  if (q.exclusive) tags.push(h('span', {class: 'tag', title: 'exclusive'}, 'Excl'));
  if (q.internal) tags.push(h('span', {class: 'tag', title: 'internal'}, 'I'));
  for (const k of Object.keys(q.arguments || {})) tags.push(h('span', {class: 'tag', title: `${k} = ${show(q.arguments[k])}`}, k.replace(/^x-/, '')));
  return tags;
}

/** The standard page frame. */
function page(title, subtitle, ...children) {
  return h('div', {class: 'page'}, h('h1', {}, title, subtitle ? h('small', {}, ' ', subtitle) : null), children);
}

/** A detail page that no longer exists shows this instead of an error. */
function gone(box, what, back) {
  fill(box, h('div', {class: 'message warn', role: 'status', id: 'gone'}, `${what} no longer exists. `, h('a', {href: back}, 'Back to the list')));
}

// ---------------------------------------------------------------- overview

const RATE_SERIES = [
  {key: 'publish', label: 'Publish'},
  {key: 'confirm', label: 'Confirm', missing: 'confirm rates need the monitoring or administrator tag'},
  {key: 'deliver_get', label: 'Deliver / get'},
  {key: 'ack', label: 'Ack'},
  {key: 'redeliver', label: 'Redeliver'},
  {key: 'return_unroutable', label: 'Return', missing: 'return rates need the monitoring or administrator tag'},
];
const DEPTH_SERIES = [
  {key: 'ready', label: 'Ready'},
  {key: 'unacked', label: 'Unacked'},
  {key: 'total', label: 'Total'},
];
const WINDOW_KEY = 'warren.chartWindow';

function windowSelect(charts) {
  const select = h('select', {id: 'chart-window'},
    [[1, 'last minute'], [5, 'last 5 minutes'], [10, 'last 10 minutes']].map(([m, label]) =>
      h('option', {value: m}, label)));
  select.value = localStorage.getItem(WINDOW_KEY) || '5';
  const apply = () => {
    for (const c of charts) c.setWindow(Number(select.value) * 60000);
  };
  apply();
  select.addEventListener('change', () => {
    localStorage.setItem(WINDOW_KEY, select.value);
    apply();
    for (const c of charts) c.redraw();
  });
  return h('label', {for: 'chart-window'}, 'Charts span', select);
}

function rateValues(stats) {
  const v = {};
  for (const s of RATE_SERIES) {
    const d = stats && stats[`${s.key}_details`];
    v[s.key] = d && typeof d.rate === 'number' ? d.rate : null;
  }
  return v;
}

function chartPair(key, {ratesTitle, depthTitle}) {
  const rates = chart({title: ratesTitle, series: RATE_SERIES, format: rate, id: `${key}-rates`});
  const depth = chart({title: depthTitle, series: DEPTH_SERIES, format: num, id: `${key}-depth`, integer: true});
  // A line breaks where samples are further apart than three of the
  // longest refresh intervals (the page was not shown, or refresh was off).
  const gap = () => 95_000;
  rates.redraw = () => rates.update(history(`${key}:rates`), gap());
  depth.redraw = () => depth.update(history(`${key}:depth`), gap());
  return {
    rates,
    depth,
    push(stats, ready, unacked) {
      const now = Date.now();
      rates.update(record(`${key}:rates`, rateValues(stats), now), gap());
      depth.update(record(`${key}:depth`, {ready, unacked, total: ready + unacked}, now), gap());
    },
  };
}

function meter(label, used, limit, alarmOn, {inverse = false} = {}) {
  // Memory: used against its limit. Disk: free space against the minimum.
  const fillEl = h('div', {class: 'fill'});
  const box = h('div', {class: 'meter' + (alarmOn ? ' alarm-on' : ''), role: 'img',
    'aria-label': `${label}: ${bytes(used)} ${inverse ? 'free' : 'used'}, limit ${bytes(limit)}`}, fillEl);
  if (typeof used === 'number' && typeof limit === 'number' && limit > 0) {
    if (inverse) {
      // A scale of four times the limit; the mark at the limit.
      const scale = Math.max(limit * 4, used);
      fillEl.style.width = `${Math.min(100, (used / scale) * 100)}%`;
      const mark = h('div', {class: 'mark'});
      mark.style.left = `${(limit / scale) * 100}%`;
      box.appendChild(mark);
    } else {
      fillEl.style.width = `${Math.min(100, (used / limit) * 100)}%`;
    }
  }
  return box;
}

export function overview(ctx) {
  const cards = h('div', {class: 'cards', id: 'totals'});
  const pair = chartPair('overview', {ratesTitle: 'Message rates', depthTitle: 'Queued messages'});
  const node = h('div', {id: 'node'});
  const listeners = h('div', {id: 'listeners'});
  const el = page('Overview', null,
    h('div', {class: 'toolbar'}, windowSelect([pair.rates, pair.depth])),
    h('div', {class: 'grid'}, h('section', {class: 'panel'}, pair.rates.el), h('section', {class: 'panel'}, pair.depth.el)),
    cards,
    h('div', {class: 'grid'},
      h('section', {class: 'panel'}, h('h2', {}, 'Node'), node),
      h('section', {class: 'panel'}, h('h2', {}, 'Listeners'), listeners)));

  async function refresh() {
    const o = await apiGet('/api/overview');
    const q = o.queue_totals || {};
    pair.push(o.message_stats, q.messages_ready || 0, q.messages_unacknowledged || 0);
    const t = o.object_totals || {};
    const card = (n, label, id) => h('div', {class: 'card', id}, h('div', {class: 'n'}, num(n)), h('div', {class: 'l'}, label));
    fill(cards,
      card(t.connections, 'Connections', 'total-connections'),
      card(t.channels, 'Channels', 'total-channels'),
      card(t.exchanges, 'Exchanges', 'total-exchanges'),
      card(t.queues, 'Queues', 'total-queues'),
      t.consumers !== undefined ? card(t.consumers, 'Consumers', 'total-consumers') : null,
      card(q.messages_ready, 'Ready', 'total-ready'),
      card(q.messages_unacknowledged, 'Unacked', 'total-unacked'));
    if (!ctx.rights.monitor) {
      fill(node, h('p', {class: 'muted'}, `${o.product_name || 'Warren'} ${o.product_version || ''}. Node details need the monitoring or administrator tag.`));
      fill(listeners, h('p', {class: 'muted'}, 'Listeners need the monitoring or administrator tag.'));
      return;
    }
    const [n] = await apiGet('/api/nodes');
    const memAlarm = Boolean(n.mem_alarm);
    const diskAlarm = Boolean(n.disk_free_alarm);
    fill(node,
      memAlarm || diskAlarm ? h('div', {class: 'message error', role: 'alert', id: 'node-alarm'},
        [memAlarm ? 'Memory alarm: publishers are blocked.' : null, diskAlarm ? 'Disk alarm: publishers are blocked.' : null].filter(Boolean).join(' ')) : null,
      h('div', {class: 'table-wrap'}, h('table', {class: 'kv'}, h('tbody', {},
        h('tr', {}, h('th', {scope: 'row'}, 'Name'), h('td', {}, n.name)),
        h('tr', {}, h('th', {scope: 'row'}, 'Version'), h('td', {}, `${o.product_name || ''} ${o.product_version || ''} (management API of RabbitMQ ${o.management_version})`)),
        h('tr', {}, h('th', {scope: 'row'}, 'Uptime'), h('td', {}, duration(n.uptime))),
        h('tr', {}, h('th', {scope: 'row'}, 'Memory'), h('td', {id: 'node-memory'},
          h('span', {class: memAlarm ? 'bad' : null}, `${bytes(n.mem_used)} used of ${bytes(n.mem_limit)} limit`, memAlarm ? ' — ALARM' : ''),
          meter('Memory', n.mem_used, n.mem_limit, memAlarm))),
        h('tr', {}, h('th', {scope: 'row'}, 'Disk'), h('td', {id: 'node-disk'},
          h('span', {class: diskAlarm ? 'bad' : null}, n.disk_free === null || n.disk_free === undefined
            ? `free space not measured yet; limit ${bytes(n.disk_free_limit)}`
            : `${bytes(n.disk_free)} free, limit ${bytes(n.disk_free_limit)}`, diskAlarm ? ' — ALARM' : ''),
          meter('Disk', n.disk_free, n.disk_free_limit, diskAlarm, {inverse: true}))),
        h('tr', {}, h('th', {scope: 'row'}, 'File descriptors'), h('td', {}, num(n.fd_used))),
        h('tr', {}, h('th', {scope: 'row'}, 'Sockets'), h('td', {}, num(n.sockets_used))),
        h('tr', {}, h('th', {scope: 'row'}, 'Processors'), h('td', {}, num(n.processors)))))));
    fill(listeners, h('div', {class: 'table-wrap'}, h('table', {},
      h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Protocol'), h('th', {scope: 'col'}, 'Address'), h('th', {scope: 'col', class: 'num'}, 'Port'))),
      h('tbody', {}, (o.listeners || []).map((l) => h('tr', {},
        h('td', {}, l.protocol), h('td', {}, l.ip_address), h('td', {class: 'num'}, String(l.port))))))));
  }

  return {title: 'Overview', el, refresh};
}

// ---------------------------------------------------------------- connections

export function connections() {
  const table = listTable({
    id: 'connections',
    noun: 'connections',
    defaultSort: 'name',
    path: (vh) => (vh ? `/api/vhosts/${enc(vh)}/connections` : '/api/connections'),
    columns: [
      col('Name', 'name', {cell: (c) => link(['connections', c.name], c.user_provided_name || c.name), fields: ['name', 'user_provided_name']}),
      col('Virtual host', 'vhost'),
      col('User', 'user'),
      col('State', 'state'),
      col('TLS', 'ssl', {cell: (c) => (c.ssl ? c.ssl_protocol || 'yes' : 'no'), fields: ['ssl', 'ssl_protocol']}),
      col('Client', 'client_properties.product', {sort: false, cell: (c) => show(get(c, 'client_properties.product'))}),
      col('Channels', 'channels', {num: true}),
      col('From client', 'recv_oct_details.rate', {num: true, cell: (c) => byteRate(get(c, 'recv_oct_details.rate') || 0)}),
      col('To client', 'send_oct_details.rate', {num: true, cell: (c) => byteRate(get(c, 'send_oct_details.rate') || 0)}),
    ],
  });
  return {title: 'Connections', el: page('Connections', null, table.el), refresh: table.refresh};
}

export function connection(ctx, name) {
  const info = h('div', {id: 'connection-info'});
  const props = h('div', {id: 'client-properties'});
  const channels = h('div', {id: 'connection-channels'});
  const status = h('div', {});
  const reason = h('input', {type: 'text', id: 'close-reason', value: 'Closed from the management UI'});
  const closeButton = h('button', {type: 'submit', class: 'danger', id: 'close-connection'}, 'Close connection');
  const closeForm = h('form', {class: 'inline', onsubmit: async (ev) => {
    ev.preventDefault();
    if (!await ctx.confirm(`Close connection ${name}? The client sees CONNECTION_FORCED with this reason.`, 'Close')) return;
    try {
      await api('DELETE', `/api/connections/${enc(name)}`, undefined, {'x-reason': reason.value});
      ctx.toast('Connection closed.');
      ctx.refreshNow();
    } catch (e) {
      ctx.toast(ctx.explain(e), 'error');
    }
  }}, h('label', {for: 'close-reason'}, 'Reason', reason), closeButton);
  const el = page('Connection', name, status, info,
    h('h2', {}, 'Client properties'), props,
    h('h2', {}, 'Channels'), channels,
    h('h2', {}, 'Close'), closeForm);

  async function refresh() {
    let c;
    try {
      c = await apiGet(`/api/connections/${enc(name)}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        gone(status, 'This connection', '#/connections');
        fill(info); fill(props); fill(channels);
        closeButton.disabled = true;
        return;
      }
      throw e;
    }
    const rows = [
      ['User', c.user], ['Virtual host', c.vhost], ['State', c.state], ['Protocol', c.protocol],
      ['Client address', `${c.peer_host}:${c.peer_port}`], ['Server address', `${c.host}:${c.port}`],
      ['TLS', c.ssl ? `${c.ssl_protocol || ''} ${c.ssl_cipher || ''}`.trim() : 'no'],
      ['Peer certificate', c.peer_cert_subject || ''],
      ['Authentication', c.auth_mechanism], ['Channels', num(c.channels)], ['Channel max', num(c.channel_max)],
      ['Frame max', num(c.frame_max)], ['Heartbeat', `${c.timeout}s`],
      ['Connected at', c.connected_at ? new Date(c.connected_at).toLocaleString() : ''],
      ['From client', `${byteRate(get(c, 'recv_oct_details.rate') || 0)} (${bytes(c.recv_oct)} in all)`],
      ['To client', `${byteRate(get(c, 'send_oct_details.rate') || 0)} (${bytes(c.send_oct)} in all)`],
    ];
    fill(info, h('div', {class: 'table-wrap'}, h('table', {class: 'kv'}, h('tbody', {},
      rows.map(([k, v]) => h('tr', {}, h('th', {scope: 'row'}, k), h('td', {}, v)))))));
    fill(props, kvTable(c.client_properties, 'The client sent no properties.'));
    const chs = await apiGet(`/api/connections/${enc(name)}/channels`);
    fill(channels, chs.length === 0 ? h('p', {class: 'muted'}, 'No channels.') : h('div', {class: 'table-wrap'}, h('table', {},
      h('thead', {}, h('tr', {}, ['Channel', 'Consumers', 'Unacked', 'Prefetch', 'Mode'].map((t) => h('th', {scope: 'col'}, t)))),
      h('tbody', {}, chs.map((ch) => h('tr', {},
        h('td', {}, link(['channels', ch.name], ch.name)),
        h('td', {class: 'num'}, num(ch.consumer_count)),
        h('td', {class: 'num'}, num(ch.messages_unacknowledged)),
        h('td', {class: 'num'}, num(ch.prefetch_count)),
        h('td', {}, channelMode(ch))))))));
  }
  return {title: `Connection ${name}`, el, refresh};
}

function channelMode(ch) {
  if (ch.confirm) return 'confirm';
  if (ch.transactional) return 'transactional';
  return '';
}

// ---------------------------------------------------------------- channels

export function channels() {
  const table = listTable({
    id: 'channels',
    noun: 'channels',
    defaultSort: 'name',
    path: (vh) => (vh ? `/api/vhosts/${enc(vh)}/channels` : '/api/channels'),
    columns: [
      col('Channel', 'name', {cell: (c) => link(['channels', c.name], c.name)}),
      col('Virtual host', 'vhost'),
      col('User', 'user'),
      col('Mode', 'confirm', {cell: channelMode, fields: ['confirm', 'transactional']}),
      col('Consumers', 'consumer_count', {num: true}),
      col('Unacked', 'messages_unacknowledged', {num: true}),
      col('Prefetch', 'prefetch_count', {num: true}),
    ],
  });
  return {title: 'Channels', el: page('Channels', null, table.el), refresh: table.refresh};
}

export function channel(ctx, name) {
  const status = h('div', {});
  const info = h('div', {id: 'channel-info'});
  const el = page('Channel', name, status, info);
  async function refresh() {
    let c;
    try {
      c = await apiGet(`/api/channels/${enc(name)}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) { gone(status, 'This channel', '#/channels'); fill(info); return; }
      throw e;
    }
    const conn = get(c, 'connection_details.name');
    const rows = [
      ['Connection', conn ? link(['connections', conn], conn) : ''],
      ['Number', num(c.number)], ['User', c.user], ['Virtual host', c.vhost], ['State', c.state],
      ['Mode', channelMode(c) || 'plain'], ['Prefetch (per consumer)', num(c.prefetch_count)],
      ['Prefetch (channel)', num(c.global_prefetch_count)], ['Consumers', num(c.consumer_count)],
      ['Unacked messages', num(c.messages_unacknowledged)],
    ];
    fill(info, h('div', {class: 'table-wrap'}, h('table', {class: 'kv'}, h('tbody', {},
      rows.map(([k, v]) => h('tr', {}, h('th', {scope: 'row'}, k), h('td', {}, v)))))));
  }
  return {title: `Channel ${name}`, el, refresh};
}

// ---------------------------------------------------------------- exchanges

const exchangeLabel = (name) => (name === '' ? '(AMQP default)' : name);

export function exchanges(ctx) {
  const table = listTable({
    id: 'exchanges',
    noun: 'exchanges',
    defaultSort: 'name',
    path: (vh) => (vh ? `/api/exchanges/${enc(vh)}` : '/api/exchanges'),
    columns: [
      col('Name', 'name', {cell: (e) => link(['exchanges', e.vhost, e.name === '' ? 'amq.default' : e.name], exchangeLabel(e.name)), fields: ['name', 'vhost']}),
      col('Virtual host', 'vhost'),
      col('Type', 'type'),
      col('Features', 'durable', {sort: false, cell: features, fields: ['durable', 'auto_delete', 'internal', 'arguments']}),
      col('Policy', 'policy'),
    ],
  });
  return {title: 'Exchanges', el: page('Exchanges', null, table.el, addExchangeForm(ctx, table)), refresh: table.refresh};
}

function addExchangeForm(ctx, table) {
  const vhost = h('input', {type: 'text', id: 'new-exchange-vhost', value: '/', required: true});
  const name = h('input', {type: 'text', id: 'new-exchange-name', required: true});
  const type = h('select', {id: 'new-exchange-type'}, ['direct', 'fanout', 'topic', 'headers', 'x-consistent-hash', 'x-random', 'x-delayed-message', 'x-message-deduplication'].map((t) => h('option', {value: t}, t)));
  const durable = h('input', {type: 'checkbox', id: 'new-exchange-durable', checked: true});
  const args = h('textarea', {id: 'new-exchange-args', placeholder: '{"alternate-exchange": "unrouted"}'});
  return h('section', {class: 'panel'}, h('h2', {}, 'Add an exchange'), h('form', {class: 'stack', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const body = {type: type.value, durable: durable.checked, auto_delete: false, internal: false, arguments: parseJson(args.value, 'Arguments')};
      await api('PUT', `/api/exchanges/${enc(vhost.value)}/${enc(name.value)}`, body);
      ctx.toast(`Exchange ${name.value} declared.`);
      name.value = '';
      table.refresh();
    } catch (e) {
      ctx.toast(ctx.explain(e), 'error');
    }
  }},
  h('label', {for: vhost.id}, 'Virtual host', vhost), h('label', {for: name.id}, 'Name', name), h('label', {for: type.id}, 'Type', type),
  h('label', {class: 'check', for: durable.id}, durable, 'Durable'), h('label', {for: args.id}, 'Arguments (JSON object)', args),
  h('div', {class: 'buttons'}, h('button', {type: 'submit'}, 'Add exchange'))));
}

/** A JSON object typed in a textarea ('' is {}). */
export function parseJson(text, what) {
  if (!text.trim()) return {};
  let v;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`${what} is not valid JSON: ${e.message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${what} must be a JSON object.`);
  return v;
}

function bindingsTable(rows, {showSource, showDest, onDelete}) {
  if (rows.length === 0) return h('p', {class: 'muted'}, 'No bindings.');
  return h('div', {class: 'table-wrap'}, h('table', {},
    h('thead', {}, h('tr', {},
      showSource ? h('th', {scope: 'col'}, 'From exchange') : null,
      showDest ? h('th', {scope: 'col'}, 'To') : null,
      h('th', {scope: 'col'}, 'Routing key'), h('th', {scope: 'col'}, 'Arguments'), h('th', {scope: 'col'}, ''))),
    h('tbody', {}, rows.map((b) => h('tr', {},
      showSource ? h('td', {}, b.source === '' ? '(AMQP default)' : link(['exchanges', b.vhost, b.source], b.source)) : null,
      showDest ? h('td', {}, link([b.destination_type === 'queue' ? 'queues' : 'exchanges', b.vhost, b.destination], `${b.destination_type} ${b.destination}`)) : null,
      h('td', {class: 'mono'}, b.routing_key),
      h('td', {class: 'mono'}, Object.keys(b.arguments || {}).length ? JSON.stringify(b.arguments) : ''),
      h('td', {}, b.source === '' ? h('span', {class: 'muted'}, 'implicit') : h('button', {type: 'button', class: 'secondary', onclick: () => onDelete(b)}, 'Unbind')))))));
}

async function unbind(ctx, b) {
  const kind = b.destination_type === 'queue' ? 'q' : 'e';
  try {
    await api('DELETE', `/api/bindings/${enc(b.vhost)}/e/${enc(b.source)}/${kind}/${enc(b.destination)}/${enc(b.properties_key)}`);
    ctx.toast('Binding removed.');
    ctx.refreshNow();
  } catch (e) {
    ctx.toast(ctx.explain(e), 'error');
  }
}

function publishForm(ctx, {vhost, exchange, routingKey, idPrefix}) {
  const key = h('input', {type: 'text', id: `${idPrefix}-key`, value: routingKey || ''});
  const payload = h('textarea', {id: `${idPrefix}-payload`});
  const persistent = h('select', {id: `${idPrefix}-mode`}, h('option', {value: '1'}, 'Non-persistent'), h('option', {value: '2'}, 'Persistent'));
  const headers = h('textarea', {id: `${idPrefix}-headers`, placeholder: '{"x-trace": "abc"}'});
  const contentType = h('input', {type: 'text', id: `${idPrefix}-content-type`, placeholder: 'text/plain'});
  const result = h('div', {id: `${idPrefix}-result`, 'aria-live': 'polite'});
  return h('form', {class: 'stack', id: `${idPrefix}-form`, onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const properties = {delivery_mode: Number(persistent.value), headers: parseJson(headers.value, 'Headers')};
      if (contentType.value) properties.content_type = contentType.value;
      const r = await api('POST', `/api/exchanges/${enc(vhost)}/${enc(exchange === '' ? 'amq.default' : exchange)}/publish`,
        {properties, routing_key: key.value, payload: payload.value, payload_encoding: 'string'});
      const text = r && r.routed ? 'Message published.' : 'Message published, but it was not routed to any queue.';
      fill(result, h('p', {class: r && r.routed ? 'ok' : 'bad'}, text));
      ctx.toast(text);
      ctx.refreshNow();
    } catch (e) {
      fill(result, h('p', {class: 'bad'}, ctx.explain(e)));
    }
  }},
  routingKey === undefined || exchange !== '' ? h('label', {for: key.id}, 'Routing key', key) : null,
  h('label', {for: persistent.id}, 'Delivery mode', persistent),
  h('label', {for: contentType.id}, 'Content type', contentType),
  h('label', {for: headers.id}, 'Headers (JSON object)', headers),
  h('label', {for: payload.id}, 'Payload', payload),
  h('div', {class: 'buttons'}, h('button', {type: 'submit', id: `${idPrefix}-submit`}, 'Publish message')),
  result);
}

export function exchange(ctx, vhost, name) {
  const real = name === 'amq.default' ? '' : name;
  const status = h('div', {});
  const info = h('div', {id: 'exchange-info'});
  const source = h('div', {id: 'exchange-bindings-source'});
  const dest = h('div', {id: 'exchange-bindings-destination'});
  const delButton = h('button', {type: 'button', class: 'danger', id: 'delete-exchange', onclick: async () => {
    if (!await ctx.confirm(`Delete exchange ${name} in ${vhost} and its bindings?`, 'Delete')) return;
    try {
      await api('DELETE', `/api/exchanges/${enc(vhost)}/${enc(name)}`);
      ctx.toast(`Exchange ${name} deleted.`);
      location.hash = '#/exchanges';
    } catch (e) {
      ctx.toast(ctx.explain(e), 'error');
    }
  }}, 'Delete this exchange');
  const el = page('Exchange', `${exchangeLabel(real)} in ${vhost}`, status, info,
    h('h2', {}, 'Bindings from this exchange'), source,
    h('h2', {}, 'Bindings to this exchange'), dest,
    h('div', {class: 'actions'},
      h('section', {}, h('h3', {}, 'Publish a message'), publishForm(ctx, {vhost, exchange: real, idPrefix: 'xpub'})),
      real === '' || real.startsWith('amq.') ? null : h('section', {}, h('h3', {}, 'Delete'), delButton)));
  async function refresh() {
    let e;
    try {
      e = await apiGet(`/api/exchanges/${enc(vhost)}/${enc(name)}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) { gone(status, 'This exchange', '#/exchanges'); fill(info); return; }
      throw err;
    }
    const rows = [['Type', e.type], ['Durable', yesNo(e.durable)], ['Auto-delete', yesNo(e.auto_delete)],
      ['Internal', yesNo(e.internal)], ['Policy', e.policy || '']];
    if (e.messages_delayed !== undefined) rows.push(['Messages delayed', num(e.messages_delayed)]);
    fill(info, h('div', {class: 'table-wrap'}, h('table', {class: 'kv'}, h('tbody', {},
      rows.map(([k, v]) => h('tr', {}, h('th', {scope: 'row'}, k), h('td', {}, v))),
      h('tr', {}, h('th', {scope: 'row'}, 'Arguments'), h('td', {}, kvTable(e.arguments)))))));
    if (real === '') {
      fill(source, h('p', {class: 'muted'}, 'The default exchange routes to every queue by its name.'));
      fill(dest);
      return;
    }
    const [src, dst] = await Promise.all([
      apiGet(`/api/exchanges/${enc(vhost)}/${enc(name)}/bindings/source`),
      apiGet(`/api/exchanges/${enc(vhost)}/${enc(name)}/bindings/destination`)]);
    fill(source, bindingsTable(src, {showDest: true, onDelete: (b) => unbind(ctx, b)}));
    fill(dest, bindingsTable(dst, {showSource: true, onDelete: (b) => unbind(ctx, b)}));
  }
  return {title: `Exchange ${exchangeLabel(real)}`, el, refresh};
}

// ---------------------------------------------------------------- queues

export function queues(ctx) {
  const table = listTable({
    id: 'queues',
    noun: 'queues',
    defaultSort: 'name',
    path: (vh) => (vh ? `/api/queues/${enc(vh)}` : '/api/queues'),
    columns: [
      col('Name', 'name', {cell: (q) => link(['queues', q.vhost, q.name], q.name), fields: ['name', 'vhost']}),
      col('Virtual host', 'vhost'),
      col('Type', 'type'),
      col('Features', 'durable', {sort: false, cell: features, fields: ['durable', 'auto_delete', 'exclusive', 'arguments']}),
      col('Policy', 'policy'),
      col('Consumers', 'consumers', {num: true}),
      col('Ready', 'messages_ready', {num: true}),
      col('Unacked', 'messages_unacknowledged', {num: true}),
      col('Total', 'messages', {num: true}),
      rateCol('Incoming', 'message_stats.publish_details.rate'),
      rateCol('Deliver / get', 'message_stats.deliver_get_details.rate'),
      rateCol('Ack', 'message_stats.ack_details.rate'),
    ],
  });
  return {title: 'Queues', el: page('Queues', null, table.el, addQueueForm(ctx, table)), refresh: table.refresh};
}

function addQueueForm(ctx, table) {
  const vhost = h('input', {type: 'text', id: 'new-queue-vhost', value: '/', required: true});
  const name = h('input', {type: 'text', id: 'new-queue-name', required: true});
  const type = h('select', {id: 'new-queue-type'}, ['classic', 'quorum'].map((t) => h('option', {value: t}, t)));
  const durable = h('input', {type: 'checkbox', id: 'new-queue-durable', checked: true});
  const args = h('textarea', {id: 'new-queue-args', placeholder: '{"x-message-ttl": 60000}'});
  return h('section', {class: 'panel'}, h('h2', {}, 'Add a queue'), h('form', {class: 'stack', id: 'new-queue-form', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const a = parseJson(args.value, 'Arguments');
      if (type.value === 'quorum') a['x-queue-type'] = 'quorum';
      await api('PUT', `/api/queues/${enc(vhost.value)}/${enc(name.value)}`, {durable: durable.checked, auto_delete: false, arguments: a});
      ctx.toast(`Queue ${name.value} declared.`);
      name.value = '';
      table.refresh();
    } catch (e) {
      ctx.toast(ctx.explain(e), 'error');
    }
  }},
  h('label', {for: vhost.id}, 'Virtual host', vhost), h('label', {for: name.id}, 'Name', name), h('label', {for: type.id}, 'Type', type),
  h('label', {class: 'check', for: durable.id}, durable, 'Durable'), h('label', {for: args.id}, 'Arguments (JSON object)', args),
  h('div', {class: 'buttons'}, h('button', {type: 'submit', id: 'new-queue-submit'}, 'Add queue'))));
}

export function queue(ctx, vhost, name) {
  const base = `/api/queues/${enc(vhost)}/${enc(name)}`;
  const status = h('div', {});
  const info = h('div', {id: 'queue-info'});
  const policy = h('div', {id: 'queue-policy'});
  const args = h('div', {id: 'queue-arguments'});
  const consumers = h('div', {id: 'queue-consumers'});
  const bindings = h('div', {id: 'queue-bindings'});
  const pair = chartPair(`queue:${vhost}:${name}`, {ratesTitle: 'Message rates', depthTitle: 'Queued messages'});

  // Get messages.
  const getCount = h('input', {type: 'number', id: 'get-count', value: '1', min: '1', max: '10000'});
  const ackmode = h('select', {id: 'get-ackmode'},
    h('option', {value: 'ack_requeue_true'}, 'Nack, requeue (leave them in the queue)'),
    h('option', {value: 'ack_requeue_false'}, 'Ack (remove them from the queue)'),
    h('option', {value: 'reject_requeue_false'}, 'Reject, do not requeue (dead-letter them)'));
  const encoding = h('select', {id: 'get-encoding'}, h('option', {value: 'auto'}, 'Text if valid UTF-8, else base64'), h('option', {value: 'base64'}, 'base64'));
  const got = h('div', {id: 'get-result', 'aria-live': 'polite'});
  const getForm = h('form', {class: 'stack', id: 'get-form', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const msgs = await api('POST', `${base}/get`, {count: Number(getCount.value) || 1, ackmode: ackmode.value, encoding: encoding.value, truncate: 50000});
      fill(got, msgs.length === 0 ? h('p', {class: 'muted', id: 'get-empty'}, 'The queue is empty.') : msgs.map((m, i) => h('div', {class: 'got'},
        h('p', {}, h('strong', {}, `Message ${i + 1}`), ` · exchange ${m.exchange === '' ? '(AMQP default)' : m.exchange} · routing key `, h('code', {}, m.routing_key),
          ` · ${m.redelivered ? 'redelivered' : 'first delivery'} · ${num(m.payload_bytes)} bytes · ${num(m.message_count)} left`),
        Object.keys(m.properties || {}).length ? kvTable(m.properties) : null,
        h('pre', {class: 'payload', 'data-encoding': m.payload_encoding}, m.payload))));
      ctx.refreshNow();
    } catch (e) {
      fill(got, h('p', {class: 'bad'}, ctx.explain(e)));
    }
  }},
  h('label', {for: getCount.id}, 'Messages', getCount), h('label', {for: ackmode.id}, 'Ack mode', ackmode),
  h('label', {for: encoding.id}, 'Encoding', encoding),
  h('div', {class: 'buttons'}, h('button', {type: 'submit', id: 'get-submit'}, 'Get messages')), got);

  // Move messages.
  const moveTo = h('input', {type: 'text', id: 'move-destination', required: true, list: 'move-queues', autocomplete: 'off'});
  const moveList = h('datalist', {id: 'move-queues'});
  const moveCount = h('input', {type: 'number', id: 'move-count', min: '1', placeholder: 'all'});
  const moveResult = h('div', {id: 'move-result', 'aria-live': 'polite'});
  const moveForm = h('form', {class: 'stack', id: 'move-form', onsubmit: async (ev) => {
    ev.preventDefault();
    const body = {destination: moveTo.value};
    if (moveCount.value) body.count = Number(moveCount.value);
    try {
      const r = await api('POST', `${base}/move`, body);
      fill(moveResult, h('p', {class: 'ok'}, `Moved ${num(r.moved)} message${r.moved === 1 ? '' : 's'} to ${moveTo.value}.`));
      ctx.refreshNow();
    } catch (e) {
      fill(moveResult, h('p', {class: 'bad'}, ctx.explain(e)));
    }
  }},
  h('p', {class: 'muted'}, 'Each message is put on the destination queue before it is acknowledged here, so none is lost if the move stops.'),
  h('label', {for: moveTo.id}, 'Destination queue (same virtual host)', moveTo), moveList,
  h('label', {for: moveCount.id}, 'How many (empty: all ready messages)', moveCount),
  h('div', {class: 'buttons'}, h('button', {type: 'submit', id: 'move-submit'}, 'Move messages')), moveResult);
  moveTo.addEventListener('focus', async () => {
    if (moveList.childElementCount) return;
    try {
      const r = await apiGet(`/api/queues/${enc(vhost)}?page=1&page_size=500&columns=name`);
      fill(moveList, r.items.filter((q) => q.name !== name).map((q) => h('option', {value: q.name})));
    } catch {
      // Typing the name works without suggestions.
    }
  }, {once: true});

  // Bind.
  const bindFrom = h('input', {type: 'text', id: 'bind-exchange', required: true});
  const bindKey = h('input', {type: 'text', id: 'bind-key'});
  const bindForm = h('form', {class: 'inline', id: 'bind-form', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await api('POST', `/api/bindings/${enc(vhost)}/e/${enc(bindFrom.value)}/q/${enc(name)}`, {routing_key: bindKey.value, arguments: {}});
      ctx.toast('Binding added.');
      ctx.refreshNow();
    } catch (e) {
      ctx.toast(ctx.explain(e), 'error');
    }
  }}, h('label', {for: bindFrom.id}, 'From exchange', bindFrom), h('label', {for: bindKey.id}, 'Routing key', bindKey),
  h('button', {type: 'submit'}, 'Bind'));

  const purgeButton = h('button', {type: 'button', class: 'danger', id: 'purge', onclick: async () => {
    if (!await ctx.confirm(`Purge queue ${name}? Its ready messages are deleted.`, 'Purge')) return;
    try {
      await api('DELETE', `${base}/contents`);
      ctx.toast(`Queue ${name} purged.`);
      ctx.refreshNow();
    } catch (e) {
      ctx.toast(ctx.explain(e), 'error');
    }
  }}, 'Purge messages');
  const ifEmpty = h('input', {type: 'checkbox', id: 'delete-if-empty'});
  const ifUnused = h('input', {type: 'checkbox', id: 'delete-if-unused'});
  const deleteButton = h('button', {type: 'button', class: 'danger', id: 'delete-queue', onclick: async () => {
    if (!await ctx.confirm(`Delete queue ${name} and all its messages?`, 'Delete')) return;
    const q = new URLSearchParams();
    if (ifEmpty.checked) q.set('if-empty', 'true');
    if (ifUnused.checked) q.set('if-unused', 'true');
    try {
      await api('DELETE', `${base}${q.toString() ? '?' + q : ''}`);
      ctx.toast(`Queue ${name} deleted.`);
      location.hash = '#/queues';
    } catch (e) {
      ctx.toast(ctx.explain(e), 'error');
    }
  }}, 'Delete queue');

  const el = page('Queue', `${name} in ${vhost}`, status,
    h('div', {class: 'toolbar'}, windowSelect([pair.rates, pair.depth])),
    h('div', {class: 'grid'}, h('section', {class: 'panel'}, pair.depth.el), h('section', {class: 'panel'}, pair.rates.el)),
    info,
    h('div', {class: 'grid'},
      h('section', {}, h('h2', {}, 'Effective policy'), policy),
      h('section', {}, h('h2', {}, 'Arguments'), args)),
    h('h2', {}, 'Consumers'), consumers,
    h('h2', {}, 'Bindings'), bindings, bindForm,
    h('h2', {}, 'Actions'),
    h('div', {class: 'actions'},
      h('section', {}, h('h3', {}, 'Publish a message'), h('p', {class: 'muted'}, 'Published to the default exchange with this queue\'s name as routing key.'),
        publishForm(ctx, {vhost, exchange: '', routingKey: name, idPrefix: 'qpub'})),
      h('section', {}, h('h3', {}, 'Get messages'), getForm),
      h('section', {}, h('h3', {}, 'Move messages'), moveForm),
      h('section', {}, h('h3', {}, 'Purge or delete'),
        h('div', {class: 'buttons'}, purgeButton),
        h('p', {}),
        h('label', {class: 'check', for: ifEmpty.id}, ifEmpty, ' only if empty'), ' ',
        h('label', {class: 'check', for: ifUnused.id}, ifUnused, ' only if it has no consumers'),
        h('div', {class: 'buttons'}, deleteButton))));

  async function refresh() {
    let q;
    try {
      q = await apiGet(base);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        gone(status, 'This queue', '#/queues');
        fill(info);
        return;
      }
      throw e;
    }
    pair.push(q.message_stats, q.messages_ready || 0, q.messages_unacknowledged || 0);
    const rows = [
      ['Type', q.type], ['State', q.state], ['Durable', yesNo(q.durable)], ['Auto-delete', yesNo(q.auto_delete)],
      ['Exclusive', yesNo(q.exclusive)], ['Ready', h('span', {id: 'queue-ready'}, num(q.messages_ready))],
      ['Unacked', h('span', {id: 'queue-unacked'}, num(q.messages_unacknowledged))],
      ['Total', h('span', {id: 'queue-total'}, num(q.messages))], ['Ready bytes', bytes(q.message_bytes_ready)],
      ['Consumers', num(q.consumers)], ['Consumer utilisation', `${Math.round((q.consumer_utilisation || 0) * 100)}%`],
      ['Policy', q.policy || ''], ['Operator policy', q.operator_policy || ''],
    ];
    if (q.exclusive_consumer_tag) rows.push(['Exclusive consumer', q.exclusive_consumer_tag]);
    fill(info, h('div', {class: 'table-wrap'}, h('table', {class: 'kv'}, h('tbody', {},
      rows.map(([k, v]) => h('tr', {}, h('th', {scope: 'row'}, k), h('td', {}, v)))))));
    fill(policy, kvTable(q.effective_policy_definition, 'No policy applies.'));
    fill(args, kvTable(q.arguments, 'No arguments.'));
    const cs = q.consumer_details || [];
    fill(consumers, cs.length === 0 ? h('p', {class: 'muted'}, 'No consumers.') : h('div', {class: 'table-wrap'}, h('table', {},
      h('thead', {}, h('tr', {}, ['Channel', 'Consumer tag', 'Ack required', 'Prefetch', 'Exclusive', 'Status', 'Arguments'].map((t) => h('th', {scope: 'col'}, t)))),
      h('tbody', {}, cs.map((c) => h('tr', {},
        h('td', {}, get(c, 'channel_details.name') ? link(['channels', c.channel_details.name], c.channel_details.name) : ''),
        h('td', {class: 'mono'}, c.consumer_tag), h('td', {}, yesNo(c.ack_required)), h('td', {class: 'num'}, num(c.prefetch_count)),
        h('td', {}, yesNo(c.exclusive)), h('td', {}, c.activity_status), h('td', {class: 'mono'}, Object.keys(c.arguments || {}).length ? JSON.stringify(c.arguments) : '')))))));
    const bs = await apiGet(`${base}/bindings`);
    fill(bindings, bindingsTable(bs, {showSource: true, onDelete: (b) => unbind(ctx, b)}));
  }
  return {title: `Queue ${name}`, el, refresh};
}

// ---------------------------------------------------------------- not found

export function notFound(ctx, path) {
  return {title: 'Not found', el: page('Not found', null, h('p', {}, `There is no page at #/${path}. `, h('a', {href: '#/'}, 'Go to the overview'), '.'))};
}
