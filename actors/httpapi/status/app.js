// The status page: reads /api/v1/overview every few seconds and redraws
// its tables. Everything it shows comes from the network (names, labels,
// health details agents report), so it is written as text (textContent),
// never as HTML.
'use strict';

const every = 3000; // ms between refreshes
let lastOK = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = el('tr');
  for (const c of cells) {
    if (Array.isArray(c)) tr.appendChild(el('td', c[0], c[1]));
    else tr.appendChild(el('td', c));
  }
  return tr;
}

// fill replaces the rows of table id with rows, or one line saying empty.
function fill(id, rows, empty) {
  const body = document.querySelector('#' + id + ' tbody');
  const cols = document.querySelectorAll('#' + id + ' thead th').length;
  const next = document.createDocumentFragment();
  if (rows.length === 0) {
    const td = el('td', empty, 'empty');
    td.colSpan = cols;
    const tr = el('tr');
    tr.appendChild(td);
    next.appendChild(tr);
  }
  for (const r of rows) next.appendChild(r);
  body.replaceChildren(next);
}

function age(t, now) {
  const s = Math.max(0, Math.round((now - new Date(t)) / 1000));
  if (s < 60) return s + 's ago';
  if (s < 3600) return Math.floor(s / 60) + 'm ago';
  if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm ago';
  return Math.floor(s / 86400) + 'd ago';
}

function clock(t) {
  return new Date(t).toLocaleTimeString([], { hour12: false });
}

function proxies(data) {
  const byRegion = new Map();
  for (const m of data.members || []) {
    const r = m.region || '(no region)';
    if (!byRegion.has(r)) byRegion.set(r, []);
    byRegion.get(r).push(m);
  }
  const rows = [];
  for (const region of [...byRegion.keys()].sort()) {
    const head = el('tr', null, 'region');
    const th = el('th', 'Region ' + region);
    th.colSpan = 8;
    head.appendChild(th);
    rows.push(head);
    for (const m of byRegion.get(region).sort((a, b) => a.id.localeCompare(b.id))) {
      let link, rtt;
      if (m.link === 'self') {
        link = ['this proxy', 'muted'];
        rtt = ['—', 'muted'];
      } else if (m.link === 'ok') {
        link = ['ok', 'ok'];
        rtt = [(m.rtt_ms || 0).toFixed(2) + ' ms', 'num'];
      } else {
        link = [m.link, 'bad'];
        rtt = ['—', 'muted'];
      }
      const state = [m.state, m.state === 'alive' ? 'ok' : 'warn'];
      const tr = row([m.id, m.zone || '', state, link, rtt, [m.local_agents, 'num'], [m.routes, 'num'], m.version || '']);
      tr.dataset.proxy = m.id;
      rows.push(tr);
    }
  }
  fill('proxies', rows, 'no proxy answers');
}

function agents(data, now) {
  fill('agents', (data.agents || []).map((a) => {
    const tr = row([a.id, a.hostname || '', a.proxy_id + (a.local ? ' (this proxy)' : ''),
      a.online ? ['online', 'ok'] : ['offline', 'bad'], [a.resources, 'num'], age(a.connected, now), a.version || '']);
    tr.dataset.agent = a.id;
    return tr;
  }), 'no agent has a tunnel');
}

function resources(data) {
  fill('resources', (data.resources || []).map((r) => {
    const labels = Object.keys(r.labels || {}).sort().map((k) => k + '=' + r.labels[k]).join(', ');
    const cls = r.status === 'online' ? 'ok' : r.status === 'unhealthy' ? 'warn' : 'bad';
    const kind = r.kind + (r.port ? ' :' + r.port : '');
    const tr = row([r.name, kind, [r.status, cls], [r.healthy + ' / ' + r.agents, 'num'], labels, r.detail || '']);
    tr.dataset.resource = r.name;
    return tr;
  }), 'no resource is served');
}

function sessions(data, now) {
  fill('sessions', (data.sessions || []).map((s) => {
    const tr = row([s.id, s.user, s.login || '', s.resource, s.agent, s.path, age(s.started, now), [s.resumes || 0, 'num']]);
    tr.dataset.session = s.id;
    return tr;
  }), 'no session runs through this proxy');
}

function failovers(data) {
  fill('failovers', (data.failovers || []).map((f) =>
    row([clock(f.time), f.kind, f.session, f.resource, f.from, f.to, f.reason || ''])), 'none since the proxy started');
}

function render(data) {
  const now = new Date(data.time);
  document.getElementById('proxy').textContent = data.proxy + (data.region ? ' in ' + data.region : '');
  proxies(data);
  agents(data, now);
  resources(data);
  sessions(data, now);
  failovers(data);
}

function problem(text) {
  const b = document.getElementById('error');
  if (text) {
    b.textContent = text;
    b.hidden = false;
  } else {
    b.hidden = true;
  }
}

async function refresh() {
  try {
    const res = await fetch('/api/v1/overview', { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } });
    if (res.status === 401) {
      document.body.dataset.state = 'signed-out';
      problem('You are signed out (the sign-in expired, or the API token was replaced). Reload the page to sign in again.');
      return;
    }
    if (!res.ok) throw new Error('HTTP ' + res.status + ': ' + (await res.text()).slice(0, 200));
    render(await res.json());
    lastOK = new Date();
    const updated = document.getElementById('updated');
    updated.textContent = 'updated ' + clock(lastOK) + ', every ' + every / 1000 + ' s';
    updated.className = 'muted';
    document.body.dataset.state = 'ok';
    problem('');
  } catch (e) {
    document.body.dataset.state = 'error';
    document.getElementById('updated').className = 'bad';
    const since = lastOK ? ' Last answer at ' + clock(lastOK) + '; the tables show it.' : '';
    problem('The proxy does not answer (' + e.message + ').' + since + ' Retrying every ' + every / 1000 + ' s.');
  }
  setTimeout(refresh, every);
}

refresh();
