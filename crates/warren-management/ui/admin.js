// Admin pages: users (tags, permissions, limits), virtual hosts
// (permissions, limits), policies, limits and definitions. The API
// decides what each user may do; these pages only offer what the user's
// tags allow and show the API's refusals as messages.

import {h, fill, enc, link, num, show, kvTable} from './dom.js';
import {api, apiGet, ApiError} from './api.js';
import {listTable, parseJson} from './pages.js';

const TAGS = ['administrator', 'monitoring', 'policymaker', 'management'];

function page(title, subtitle, ...children) {
  return h('div', {class: 'page'}, h('h1', {}, title, subtitle ? h('small', {}, ' ', subtitle) : null), children);
}

function subnav(ctx, current) {
  const items = [];
  if (ctx.rights.admin) {
    items.push(['users', 'Users'], ['vhosts', 'Virtual hosts']);
  }
  items.push(['policies', 'Policies']);
  if (ctx.rights.admin) items.push(['limits', 'Limits'], ['definitions', 'Definitions']);
  return h('nav', {class: 'toolbar', 'aria-label': 'Admin'}, items.map(([k, label]) =>
    h('a', {href: `#/admin/${k}`, 'aria-current': k === current ? 'page' : null, class: 'tab'}, label)));
}

/** A page an administrator alone may use. */
function adminOnly(ctx, title) {
  if (ctx.rights.admin) return null;
  return {title, el: page(title, null, subnav(ctx, ''), h('div', {class: 'message error', role: 'alert', id: 'not-allowed'},
    `Only users tagged administrator may manage ${title.toLowerCase()}. You are ${ctx.user}.`))};
}

function table(headers, rows, empty = 'None.') {
  if (rows.length === 0) return h('p', {class: 'muted'}, empty);
  return h('div', {class: 'table-wrap'}, h('table', {},
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', {scope: 'col'}, t)))),
    h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((c) => h('td', {}, c)))))));
}

/** Runs an action and reports its outcome; true on success. */
async function act(ctx, fn, done) {
  try {
    await fn();
    if (done) ctx.toast(done);
    ctx.refreshNow();
    return true;
  } catch (e) {
    ctx.toast(e instanceof ApiError ? ctx.explain(e) : String(e.message || e), 'error');
    return false;
  }
}

function tagChecks(prefix, selected) {
  const boxes = TAGS.map((t) => h('input', {type: 'checkbox', id: `${prefix}-${t}`, value: t, checked: selected.includes(t)}));
  const other = h('input', {type: 'text', id: `${prefix}-other`, value: selected.filter((t) => !TAGS.includes(t)).join(', '), placeholder: 'other tags, comma-separated'});
  return {
    el: h('fieldset', {}, h('legend', {}, 'Tags'),
      boxes.map((b) => h('label', {class: 'check', for: b.id}, b, b.value)),
      h('label', {for: other.id}, 'Other tags', other)),
    value: () => [...boxes.filter((b) => b.checked).map((b) => b.value),
      ...other.value.split(',').map((t) => t.trim()).filter(Boolean)].join(','),
  };
}

async function vhostOptions(select, selected) {
  try {
    const vs = await apiGet('/api/vhosts?columns=name');
    fill(select, vs.map((v) => h('option', {value: v.name, selected: v.name === selected}, v.name)));
  } catch {
    // Left empty: the API's refusal shows elsewhere.
  }
}

// ---------------------------------------------------------------- home

export function home(ctx) {
  if (ctx.rights.admin) location.replace('#/admin/users');
  else location.replace('#/admin/policies');
  return {title: 'Admin', el: page('Admin', null, subnav(ctx, ''))};
}

// ---------------------------------------------------------------- users

export function users(ctx) {
  const denied = adminOnly(ctx, 'Users');
  if (denied) return denied;
  const list = listTable({
    id: 'users',
    noun: 'users',
    vhosts: false,
    defaultSort: 'name',
    path: () => '/api/users',
    columns: [
      {label: 'Name', sort: 'name', fields: ['name'], cell: (u) => link(['admin', 'users', u.name], u.name)},
      {label: 'Tags', sort: null, fields: ['tags'], cell: (u) => (u.tags || []).map((t) => h('span', {class: 'tag'}, t))},
      {label: 'Password', sort: null, fields: ['password_hash'], cell: (u) => (u.password_hash ? 'set' : 'none (cannot log in with a password)')},
      {label: 'Limits', sort: null, fields: ['limits'], cell: (u) => (Object.keys(u.limits || {}).length ? JSON.stringify(u.limits) : '')},
    ],
  });
  const name = h('input', {type: 'text', id: 'new-user-name', required: true, autocomplete: 'off'});
  const password = h('input', {type: 'password', id: 'new-user-password', autocomplete: 'new-password'});
  const tags = tagChecks('new-user-tag', ['management']);
  const vhost = h('select', {id: 'new-user-vhost'});
  const grant = h('input', {type: 'checkbox', id: 'new-user-grant', checked: true});
  vhostOptions(vhost, '/');
  const form = h('form', {class: 'stack', id: 'new-user-form', onsubmit: async (ev) => {
    ev.preventDefault();
    const body = {tags: tags.value()};
    if (password.value) body.password = password.value;
    const who = name.value;
    const ok = await act(ctx, async () => {
      await api('PUT', `/api/users/${enc(who)}`, body);
      if (grant.checked && vhost.value) {
        await api('PUT', `/api/permissions/${enc(vhost.value)}/${enc(who)}`, {configure: '.*', write: '.*', read: '.*'});
      }
    }, `User ${who} saved.`);
    if (ok) { name.value = ''; password.value = ''; list.refresh(); }
  }},
  h('label', {for: name.id}, 'Name', name), h('label', {for: password.id}, 'Password (empty: no password)', password), tags.el,
  h('label', {class: 'check', for: grant.id}, grant, 'Give full permissions on virtual host'), h('label', {for: vhost.id}, 'Virtual host', vhost),
  h('div', {class: 'buttons'}, h('button', {type: 'submit', id: 'new-user-submit'}, 'Add user')));
  return {title: 'Users', el: page('Users', null, subnav(ctx, 'users'), list.el, h('section', {class: 'panel'}, h('h2', {}, 'Add a user'), form)), refresh: list.refresh};
}

export function user(ctx, name) {
  const denied = adminOnly(ctx, 'Users');
  if (denied) return denied;
  const base = `/api/users/${enc(name)}`;
  const status = h('div', {});
  const perms = h('div', {id: 'user-permissions'});
  const topic = h('div', {id: 'user-topic-permissions'});
  const limits = h('div', {id: 'user-limits'});
  let current = null;
  let tags = tagChecks('user-tag', []);
  const tagsBox = h('div', {}, tags.el);
  const tagForm = h('form', {class: 'stack', id: 'user-tags-form', onsubmit: async (ev) => {
    ev.preventDefault();
    // The password is kept: the user's current hash goes back with the tags.
    const body = {tags: tags.value()};
    if (current && current.password_hash) { body.password_hash = current.password_hash; body.hashing_algorithm = current.hashing_algorithm; }
    await act(ctx, () => api('PUT', base, body), 'Tags saved.');
  }}, tagsBox, h('div', {class: 'buttons'}, h('button', {type: 'submit'}, 'Save tags')));
  const newPassword = h('input', {type: 'password', id: 'user-password', autocomplete: 'new-password', required: true});
  const passwordForm = h('form', {class: 'inline', onsubmit: async (ev) => {
    ev.preventDefault();
    const ok = await act(ctx, () => api('PUT', base, {tags: (current && current.tags || []).join(','), password: newPassword.value}), 'Password changed.');
    if (ok) newPassword.value = '';
  }}, h('label', {for: newPassword.id}, 'New password', newPassword), h('button', {type: 'submit'}, 'Change password'));

  const vhost = h('select', {id: 'perm-vhost'});
  vhostOptions(vhost, '/');
  const conf = h('input', {type: 'text', id: 'perm-configure', value: '.*'});
  const write = h('input', {type: 'text', id: 'perm-write', value: '.*'});
  const read = h('input', {type: 'text', id: 'perm-read', value: '.*'});
  const permForm = h('form', {class: 'inline', id: 'perm-form', onsubmit: async (ev) => {
    ev.preventDefault();
    await act(ctx, () => api('PUT', `/api/permissions/${enc(vhost.value)}/${enc(name)}`, {configure: conf.value, write: write.value, read: read.value}), 'Permissions set.');
  }}, h('label', {for: vhost.id}, 'Virtual host', vhost), h('label', {for: conf.id}, 'Configure', conf),
  h('label', {for: write.id}, 'Write', write), h('label', {for: read.id}, 'Read', read), h('button', {type: 'submit'}, 'Set permission'));

  const limitName = h('select', {id: 'user-limit-name'}, h('option', {value: 'max-connections'}, 'max-connections'), h('option', {value: 'max-channels'}, 'max-channels'));
  const limitValue = h('input', {type: 'number', id: 'user-limit-value', required: true});
  const limitForm = h('form', {class: 'inline', onsubmit: async (ev) => {
    ev.preventDefault();
    await act(ctx, () => api('PUT', `/api/user-limits/${enc(name)}/${enc(limitName.value)}`, {value: Number(limitValue.value)}), 'Limit set.');
  }}, h('label', {for: limitName.id}, 'Limit', limitName), h('label', {for: limitValue.id}, 'Value (-1: none)', limitValue), h('button', {type: 'submit'}, 'Set limit'));

  const del = h('button', {type: 'button', class: 'danger', id: 'delete-user', onclick: async () => {
    if (!await ctx.confirm(`Delete user ${name}? Its connections are closed.`, 'Delete')) return;
    if (await act(ctx, () => api('DELETE', base), `User ${name} deleted.`)) location.hash = '#/admin/users';
  }}, 'Delete user');

  const el = page('User', name, subnav(ctx, 'users'), status,
    h('section', {class: 'panel'}, h('h2', {}, 'Tags'), tagForm),
    h('section', {class: 'panel'}, h('h2', {}, 'Password'), passwordForm),
    h('section', {class: 'panel'}, h('h2', {}, 'Permissions'), perms, permForm, h('h2', {}, 'Topic permissions'), topic),
    h('section', {class: 'panel'}, h('h2', {}, 'Limits'), limits, limitForm),
    h('section', {class: 'panel'}, h('h2', {}, 'Delete'), del));

  async function refresh() {
    let u;
    try {
      u = await apiGet(base);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        fill(status, h('div', {class: 'message warn'}, 'This user no longer exists. ', h('a', {href: '#/admin/users'}, 'Back to users')));
        return;
      }
      throw e;
    }
    if (!current) {
      tags = tagChecks('user-tag', u.tags || []);
      fill(tagsBox, tags.el);
    }
    current = u;
    const [ps, ts] = await Promise.all([apiGet(`${base}/permissions`), apiGet(`${base}/topic-permissions`)]);
    fill(perms, table(['Virtual host', 'Configure', 'Write', 'Read', ''], ps.map((p) => [
      link(['admin', 'vhosts', p.vhost], p.vhost), h('code', {}, p.configure), h('code', {}, p.write), h('code', {}, p.read),
      h('button', {type: 'button', class: 'secondary', onclick: () => act(ctx, () => api('DELETE', `/api/permissions/${enc(p.vhost)}/${enc(name)}`), 'Permissions cleared.')}, 'Clear')]),
    'No permissions: this user can use no virtual host.'));
    fill(topic, table(['Virtual host', 'Exchange', 'Write', 'Read'], ts.map((p) => [p.vhost, p.exchange, h('code', {}, p.write), h('code', {}, p.read)]), 'None.'));
    const l = u.limits || {};
    fill(limits, table(['Limit', 'Value', ''], Object.entries(l).map(([k, v]) => [k, num(v),
      h('button', {type: 'button', class: 'secondary', onclick: () => act(ctx, () => api('DELETE', `/api/user-limits/${enc(name)}/${enc(k)}`), 'Limit cleared.')}, 'Clear')]), 'No limits.'));
  }
  return {title: `User ${name}`, el, refresh};
}

// ---------------------------------------------------------------- vhosts

export function vhosts(ctx) {
  const denied = adminOnly(ctx, 'Virtual hosts');
  if (denied) return denied;
  const list = listTable({
    id: 'vhosts',
    noun: 'virtual hosts',
    vhosts: false,
    defaultSort: 'name',
    path: () => '/api/vhosts',
    columns: [
      {label: 'Name', sort: 'name', fields: ['name'], cell: (v) => link(['admin', 'vhosts', v.name], v.name)},
      {label: 'Description', sort: 'description', fields: ['description'], cell: (v) => v.description || ''},
      {label: 'Tags', sort: null, fields: ['tags'], cell: (v) => (v.tags || []).map((t) => h('span', {class: 'tag'}, t))},
      {label: 'Default queue type', sort: null, fields: ['default_queue_type'], cell: (v) => v.default_queue_type},
      {label: 'Ready', sort: 'messages_ready', num: true, fields: ['messages_ready'], cell: (v) => num(v.messages_ready)},
      {label: 'Unacked', sort: 'messages_unacknowledged', num: true, fields: ['messages_unacknowledged'], cell: (v) => num(v.messages_unacknowledged)},
    ],
  });
  const name = h('input', {type: 'text', id: 'new-vhost-name', required: true});
  const description = h('input', {type: 'text', id: 'new-vhost-description'});
  const dqt = h('select', {id: 'new-vhost-dqt'}, ['classic', 'quorum'].map((t) => h('option', {value: t}, t)));
  const form = h('form', {class: 'stack', id: 'new-vhost-form', onsubmit: async (ev) => {
    ev.preventDefault();
    const ok = await act(ctx, () => api('PUT', `/api/vhosts/${enc(name.value)}`, {description: description.value, default_queue_type: dqt.value}), `Virtual host ${name.value} saved.`);
    if (ok) { name.value = ''; description.value = ''; list.refresh(); }
  }}, h('label', {for: name.id}, 'Name', name), h('label', {for: description.id}, 'Description', description),
  h('label', {for: dqt.id}, 'Default queue type', dqt), h('div', {class: 'buttons'}, h('button', {type: 'submit'}, 'Add virtual host')));
  return {title: 'Virtual hosts', el: page('Virtual hosts', null, subnav(ctx, 'vhosts'), list.el, h('section', {class: 'panel'}, h('h2', {}, 'Add a virtual host'), form)), refresh: list.refresh};
}

export function vhost(ctx, name) {
  const denied = adminOnly(ctx, 'Virtual hosts');
  if (denied) return denied;
  const status = h('div', {});
  const info = h('div', {});
  const perms = h('div', {id: 'vhost-permissions'});
  const limits = h('div', {id: 'vhost-limits'});
  const limitName = h('select', {id: 'vhost-limit-name'}, h('option', {value: 'max-connections'}, 'max-connections'), h('option', {value: 'max-queues'}, 'max-queues'));
  const limitValue = h('input', {type: 'number', id: 'vhost-limit-value', required: true});
  const limitForm = h('form', {class: 'inline', id: 'vhost-limit-form', onsubmit: async (ev) => {
    ev.preventDefault();
    await act(ctx, () => api('PUT', `/api/vhost-limits/${enc(name)}/${enc(limitName.value)}`, {value: Number(limitValue.value)}), 'Limit set.');
  }}, h('label', {for: limitName.id}, 'Limit', limitName), h('label', {for: limitValue.id}, 'Value (-1: none)', limitValue), h('button', {type: 'submit'}, 'Set limit'));
  const user = h('input', {type: 'text', id: 'vperm-user', required: true});
  const conf = h('input', {type: 'text', id: 'vperm-configure', value: '.*'});
  const write = h('input', {type: 'text', id: 'vperm-write', value: '.*'});
  const read = h('input', {type: 'text', id: 'vperm-read', value: '.*'});
  const permForm = h('form', {class: 'inline', onsubmit: async (ev) => {
    ev.preventDefault();
    await act(ctx, () => api('PUT', `/api/permissions/${enc(name)}/${enc(user.value)}`, {configure: conf.value, write: write.value, read: read.value}), 'Permissions set.');
  }}, h('label', {for: user.id}, 'User', user), h('label', {for: conf.id}, 'Configure', conf),
  h('label', {for: write.id}, 'Write', write), h('label', {for: read.id}, 'Read', read), h('button', {type: 'submit'}, 'Set permission'));
  const del = h('button', {type: 'button', class: 'danger', onclick: async () => {
    if (!await ctx.confirm(`Delete virtual host ${name} with all its queues, exchanges and messages?`, 'Delete')) return;
    if (await act(ctx, () => api('DELETE', `/api/vhosts/${enc(name)}`), `Virtual host ${name} deleted.`)) location.hash = '#/admin/vhosts';
  }}, 'Delete virtual host');
  const el = page('Virtual host', name, subnav(ctx, 'vhosts'), status, info,
    h('section', {class: 'panel'}, h('h2', {}, 'Permissions'), perms, permForm),
    h('section', {class: 'panel'}, h('h2', {}, 'Limits'), limits, limitForm),
    h('section', {class: 'panel'}, h('h2', {}, 'Delete'), del));
  async function refresh() {
    let v;
    try {
      v = await apiGet(`/api/vhosts/${enc(name)}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        fill(status, h('div', {class: 'message warn'}, 'This virtual host no longer exists. ', h('a', {href: '#/admin/vhosts'}, 'Back')));
        return;
      }
      throw e;
    }
    fill(info, kvTable({description: v.description, tags: (v.tags || []).join(', '), 'default queue type': v.default_queue_type,
      ready: v.messages_ready, unacked: v.messages_unacknowledged}));
    const [ps, ls] = await Promise.all([apiGet(`/api/vhosts/${enc(name)}/permissions`), apiGet(`/api/vhost-limits/${enc(name)}`)]);
    fill(perms, table(['User', 'Configure', 'Write', 'Read', ''], ps.map((p) => [
      link(['admin', 'users', p.user], p.user), h('code', {}, p.configure), h('code', {}, p.write), h('code', {}, p.read),
      h('button', {type: 'button', class: 'secondary', onclick: () => act(ctx, () => api('DELETE', `/api/permissions/${enc(name)}/${enc(p.user)}`), 'Permissions cleared.')}, 'Clear')]),
    'No user may use this virtual host.'));
    const value = (ls[0] && ls[0].value) || {};
    fill(limits, table(['Limit', 'Value', ''], Object.entries(value).map(([k, n]) => [k, num(n),
      h('button', {type: 'button', class: 'secondary', onclick: () => act(ctx, () => api('DELETE', `/api/vhost-limits/${enc(name)}/${enc(k)}`), 'Limit cleared.')}, 'Clear')]), 'No limits.'));
  }
  return {title: `Virtual host ${name}`, el, refresh};
}

// ---------------------------------------------------------------- policies

export function policies(ctx) {
  if (!ctx.rights.policymaker) {
    return {title: 'Policies', el: page('Policies', null, h('div', {class: 'message error', role: 'alert', id: 'not-allowed'},
      `Only users tagged policymaker or administrator may manage policies. You are ${ctx.user}.`))};
  }
  const lists = {policies: h('div', {id: 'policies-list'}), operator: h('div', {id: 'operator-policies-list'})};
  function form(operator) {
    const p = operator ? 'op' : 'pol';
    const vhost = h('select', {id: `${p}-vhost`});
    vhostOptions(vhost, '/');
    const name = h('input', {type: 'text', id: `${p}-name`, required: true});
    const pattern = h('input', {type: 'text', id: `${p}-pattern`, required: true, placeholder: '^orders\\.'});
    const applyTo = h('select', {id: `${p}-apply`}, ['queues', 'exchanges', 'all', 'classic_queues', 'quorum_queues'].map((t) => h('option', {value: t}, t)));
    const priority = h('input', {type: 'number', id: `${p}-priority`, value: '0'});
    const definition = h('textarea', {id: `${p}-definition`, required: true, placeholder: '{"max-length": 10000, "message-ttl": 60000}'});
    const path = operator ? 'operator-policies' : 'policies';
    return h('form', {class: 'stack', id: `${p}-form`, onsubmit: async (ev) => {
      ev.preventDefault();
      await act(ctx, async () => {
        const def = parseJson(definition.value, 'Definition');
        await api('PUT', `/api/${path}/${enc(vhost.value)}/${enc(name.value)}`,
          {pattern: pattern.value, 'apply-to': applyTo.value, priority: Number(priority.value) || 0, definition: def});
      }, `Policy ${name.value} saved.`);
    }},
    h('label', {for: vhost.id}, 'Virtual host', vhost), h('label', {for: name.id}, 'Name', name),
    h('label', {for: pattern.id}, 'Pattern (regular expression on names)', pattern), h('label', {for: applyTo.id}, 'Apply to', applyTo),
    h('label', {for: priority.id}, 'Priority', priority), h('label', {for: definition.id}, 'Definition (JSON object)', definition),
    h('div', {class: 'buttons'}, h('button', {type: 'submit'}, operator ? 'Add operator policy' : 'Add policy')));
  }
  const el = page('Policies', null, subnav(ctx, 'policies'), lists.policies,
    h('section', {class: 'panel'}, h('h2', {}, 'Add or update a policy'), form(false)),
    ctx.rights.admin ? [h('h2', {}, 'Operator policies'), lists.operator, h('section', {class: 'panel'}, h('h2', {}, 'Add or update an operator policy'), form(true))] : null);
  async function refresh() {
    const render = (ps, path) => table(['Virtual host', 'Name', 'Pattern', 'Apply to', 'Priority', 'Definition', ''], ps.map((p) => [
      p.vhost, p.name, h('code', {}, p.pattern), p['apply-to'], num(p.priority), h('code', {}, JSON.stringify(p.definition)),
      h('button', {type: 'button', class: 'secondary', onclick: async () => {
        if (await ctx.confirm(`Delete policy ${p.name} in ${p.vhost}?`, 'Delete')) await act(ctx, () => api('DELETE', `/api/${path}/${enc(p.vhost)}/${enc(p.name)}`), 'Policy deleted.');
      }}, 'Delete')]), 'No policies.');
    fill(lists.policies, render(await apiGet('/api/policies'), 'policies'));
    if (ctx.rights.admin) fill(lists.operator, render(await apiGet('/api/operator-policies'), 'operator-policies'));
  }
  return {title: 'Policies', el, refresh};
}

// ---------------------------------------------------------------- limits

export function limits(ctx) {
  const denied = adminOnly(ctx, 'Limits');
  if (denied) return denied;
  const vl = h('div', {id: 'vhost-limits-list'});
  const ul = h('div', {id: 'user-limits-list'});
  const el = page('Limits', null, subnav(ctx, 'limits'),
    h('h2', {}, 'Virtual host limits'), vl, h('p', {class: 'muted'}, 'Set them on a virtual host\'s page.'),
    h('h2', {}, 'User limits'), ul, h('p', {class: 'muted'}, 'Set them on a user\'s page.'));
  async function refresh() {
    const [v, u] = await Promise.all([apiGet('/api/vhost-limits'), apiGet('/api/user-limits')]);
    fill(vl, table(['Virtual host', 'Limits'], v.map((x) => [link(['admin', 'vhosts', x.vhost], x.vhost), show(x.value)]), 'No virtual host has limits.'));
    fill(ul, table(['User', 'Limits'], u.map((x) => [link(['admin', 'users', x.user], x.user), show(x.value)]), 'No user has limits.'));
  }
  return {title: 'Limits', el, refresh};
}

// ---------------------------------------------------------------- definitions

export function definitions(ctx) {
  const denied = adminOnly(ctx, 'Definitions');
  if (denied) return denied;
  const exportResult = h('div', {id: 'export-result', 'aria-live': 'polite'});
  const exportButton = h('button', {type: 'button', id: 'export', onclick: async () => {
    try {
      const defs = await apiGet('/api/definitions');
      const blob = new Blob([JSON.stringify(defs, null, 2)], {type: 'application/json'});
      const a = h('a', {href: URL.createObjectURL(blob), download: `warren-definitions-${new Date().toISOString().slice(0, 10)}.json`});
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
      fill(exportResult, h('p', {class: 'ok'}, `Downloaded: ${(defs.users || []).length} users, ${(defs.vhosts || []).length} virtual hosts, ${(defs.queues || []).length} queues, ${(defs.exchanges || []).length} exchanges, ${(defs.bindings || []).length} bindings, ${(defs.policies || []).length} policies.`));
    } catch (e) {
      fill(exportResult, h('p', {class: 'bad'}, ctx.explain(e)));
    }
  }}, 'Download definitions');
  const file = h('input', {type: 'file', id: 'import-file', accept: 'application/json,.json'});
  const importResult = h('div', {id: 'import-result', 'aria-live': 'polite'});
  const importForm = h('form', {class: 'stack', id: 'import-form', onsubmit: async (ev) => {
    ev.preventDefault();
    const f = file.files && file.files[0];
    if (!f) { fill(importResult, h('p', {class: 'bad'}, 'Choose a file first.')); return; }
    try {
      const text = await f.text();
      parseJson(text, 'The file');
      await api('POST', '/api/definitions', text);
      fill(importResult, h('p', {class: 'ok'}, `Imported ${f.name}.`));
      ctx.toast('Definitions imported.');
    } catch (e) {
      fill(importResult, h('p', {class: 'bad'}, e instanceof ApiError ? ctx.explain(e) : String(e.message || e)));
    }
  }},
  h('label', {for: file.id}, 'Definitions file (JSON, as RabbitMQ or Warren export it)', file),
  h('div', {class: 'buttons'}, h('button', {type: 'submit', id: 'import-submit'}, 'Upload definitions')), importResult);
  const el = page('Definitions', null, subnav(ctx, 'definitions'),
    h('section', {class: 'panel'}, h('h2', {}, 'Export'), h('p', {}, 'Users, virtual hosts, permissions, policies, queues, exchanges and bindings as one JSON file (no messages).'), exportButton, exportResult),
    h('section', {class: 'panel'}, h('h2', {}, 'Import'), h('p', {}, 'Adds or updates what the file defines; nothing else is deleted.'), importForm));
  return {title: 'Definitions', el};
}
