// Warren's management UI: the shell. Hash routes (#/queues/%2F/q), a
// login form, the navigation the user's tags allow, the refresh timer and
// the alarm banner. Pages live in pages.js and admin.js.

import {h, fill} from './dom.js';
import {ApiError, api, login, logout, onSessionLost, rights, session} from './api.js';
import * as pages from './pages.js';
import * as admin from './admin.js';

const main = document.getElementById('main');
const top = document.getElementById('top');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const alarm = document.getElementById('alarm');
const toastBox = document.getElementById('toast');
const refreshSelect = document.getElementById('refresh');

/** Routes: a pattern over the hash path's raw segments, a page, its tab. */
const ROUTES = [
  [/^$/, pages.overview, 'overview'],
  [/^connections$/, pages.connections, 'connections'],
  [/^connections\/([^/]+)$/, pages.connection, 'connections'],
  [/^channels$/, pages.channels, 'channels'],
  [/^channels\/([^/]+)$/, pages.channel, 'channels'],
  [/^exchanges$/, pages.exchanges, 'exchanges'],
  [/^exchanges\/([^/]+)\/([^/]*)$/, pages.exchange, 'exchanges'],
  [/^queues$/, pages.queues, 'queues'],
  [/^queues\/([^/]+)\/([^/]+)$/, pages.queue, 'queues'],
  [/^admin$/, admin.home, 'admin'],
  [/^admin\/users$/, admin.users, 'admin'],
  [/^admin\/users\/([^/]+)$/, admin.user, 'admin'],
  [/^admin\/vhosts$/, admin.vhosts, 'admin'],
  [/^admin\/vhosts\/([^/]+)$/, admin.vhost, 'admin'],
  [/^admin\/policies$/, admin.policies, 'admin'],
  [/^admin\/limits$/, admin.limits, 'admin'],
  [/^admin\/definitions$/, admin.definitions, 'admin'],
];

const TABS = [
  ['overview', 'Overview', '#/'],
  ['connections', 'Connections', '#/connections'],
  ['channels', 'Channels', '#/channels'],
  ['exchanges', 'Exchanges', '#/exchanges'],
  ['queues', 'Queues', '#/queues'],
  ['admin', 'Admin', '#/admin'],
];

// ---------------------------------------------------------------- messages

/** A short note in the corner; errors stay longer. */
export function toast(text, kind = 'info') {
  const el = h('div', {class: kind === 'error' ? 'error' : 'info'}, text);
  toastBox.appendChild(el);
  setTimeout(() => el.remove(), kind === 'error' ? 9000 : 4000);
}

/** What an API failure means to the user, in one sentence. */
export function explain(e) {
  if (e instanceof ApiError) {
    if (e.status === 401) return `Not allowed: ${e.reason}.`;
    if (e.status === 404) return `Not found: ${e.reason === 'Not Found' ? 'it no longer exists' : e.reason}.`;
    if (e.status === 0) return e.reason;
    return `${e.reason} (HTTP ${e.status})`;
  }
  return String(e && e.message ? e.message : e);
}

const dialog = document.getElementById('confirm');
/** Asks before something that cannot be undone. Resolves true on OK. */
export function confirmAction(text, okLabel = 'OK') {
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = okLabel;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), {once: true});
    dialog.showModal();
    document.getElementById('confirm-ok').focus();
  });
}

// ---------------------------------------------------------------- refresh

const REFRESH_KEY = 'warren.refresh';
refreshSelect.value = localStorage.getItem(REFRESH_KEY) || '5';
if (!refreshSelect.value) refreshSelect.value = '5';

/** The refresh interval in ms (0: off). */
export function interval() {
  return Number(refreshSelect.value) * 1000;
}

let current = null; // {page, timer, generation}
let generation = 0;

refreshSelect.addEventListener('change', () => {
  localStorage.setItem(REFRESH_KEY, refreshSelect.value);
  schedule();
});

function schedule() {
  if (!current) return;
  clearTimeout(current.timer);
  const ms = interval();
  if (ms > 0) current.timer = setTimeout(tick, ms);
}

async function tick() {
  if (!current) return;
  const mine = current.generation;
  await Promise.all([runRefresh(current), checkAlarms()]);
  if (current && current.generation === mine) schedule();
}

/** Runs a page's refresh, showing a failure above the page. */
async function runRefresh(c) {
  if (!c.page.refresh) return;
  try {
    await c.page.refresh();
    if (c.generation === generation) fill(c.errorBox);
  } catch (e) {
    if (c.generation !== generation) return;
    if (e instanceof ApiError && e.loginFailed) return;
    fill(c.errorBox, h('div', {class: 'message error', role: 'alert'}, explain(e)));
  }
}

/** Refreshes the current page now (after an action). */
export function refreshNow() {
  if (current) runRefresh(current);
}

// ---------------------------------------------------------------- alarms

async function checkAlarms() {
  if (!session()) return;
  try {
    await api('GET', '/api/health/checks/alarms');
    alarm.hidden = true;
  } catch (e) {
    if (e instanceof ApiError && e.status === 503) {
      const raised = ((e.body && e.body.alarms) || []).map((a) => a.resource);
      const what = raised.length ? raised.join(' and ') : 'resource';
      alarm.textContent = `ALARM: ${what} alarm in effect on this node. Publishers are blocked until it clears.`;
      alarm.hidden = false;
    }
  }
}

// ---------------------------------------------------------------- routing

function route() {
  const path = location.hash.replace(/^#\/?/, '').replace(/\/$/, '');
  for (const [re, page, tab] of ROUTES) {
    const m = path.match(re);
    if (m) {
      let params;
      try {
        params = m.slice(1).map(decodeURIComponent);
      } catch {
        break;
      }
      return {page, tab, params};
    }
  }
  return {page: pages.notFound, tab: null, params: [path]};
}

function renderNav(tab) {
  const r = rights();
  fill(nav, TABS
    .filter(([key]) => key !== 'admin' || r.admin || r.policymaker)
    .map(([key, label, href]) => h('li', {}, h('a', {href, 'aria-current': key === tab ? 'page' : null}, label))));
}

function show() {
  if (current) clearTimeout(current.timer);
  current = null;
  const s = session();
  if (!s) {
    showLogin();
    return;
  }
  top.hidden = false;
  who.textContent = s.user;
  who.title = 'Tags: ' + (s.tags.join(', ') || 'none');
  const {page, tab, params} = route();
  renderNav(tab);
  generation += 1;
  const errorBox = h('div', {class: 'page-error'});
  const ctx = {toast, confirm: confirmAction, explain, rights: rights(s), refreshNow, interval, user: s.user};
  let built;
  try {
    built = page(ctx, ...params);
  } catch (e) {
    built = {title: 'Error', el: h('div', {class: 'message error'}, explain(e))};
  }
  fill(main, errorBox, built.el);
  document.title = `${built.title} · Warren`;
  main.focus({preventScroll: true});
  current = {page: built, timer: null, generation, errorBox};
  tick();
}

function showLogin(message) {
  top.hidden = true;
  alarm.hidden = true;
  const user = h('input', {type: 'text', name: 'username', id: 'login-user', autocomplete: 'username', required: true, autofocus: true});
  const password = h('input', {type: 'password', name: 'password', id: 'login-password', autocomplete: 'current-password'});
  const status = h('div', {id: 'login-status', role: 'alert'}, message ? h('div', {class: 'message error'}, message) : null);
  const button = h('button', {type: 'submit', id: 'login-submit'}, 'Log in');
  const form = h('form', {class: 'stack panel', id: 'login-form', onsubmit: async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    fill(status);
    try {
      await login(user.value, password.value);
      show();
    } catch (e) {
      const text = e instanceof ApiError && e.status === 401
        ? (e.reason === 'Login failed' ? 'Login failed: wrong user name or password.' : `Login refused: ${e.reason}.`)
        : explain(e);
      fill(status, h('div', {class: 'message error'}, text));
      button.disabled = false;
      password.focus();
    }
  }},
  h('label', {for: 'login-user'}, 'User name', user),
  h('label', {for: 'login-password'}, 'Password', password),
  status,
  h('div', {class: 'buttons'}, button));
  fill(main, h('div', {class: 'login'},
    h('h1', {}, h('img', {src: '/ui/favicon.svg', alt: '', width: 32, height: 32}), 'Warren'),
    h('p', {class: 'muted'}, 'Log in with a broker user that has a management tag (management, policymaker, monitoring or administrator).'),
    form));
  document.title = 'Log in · Warren';
  user.focus();
}

document.getElementById('logout').addEventListener('click', () => {
  logout();
  location.hash = '#/';
  show();
});

onSessionLost(() => showLogin('Your session ended: the broker no longer accepts these credentials. Log in again.'));

window.addEventListener('hashchange', show);
show();
