// sonraft's live web view. Plain JavaScript, no build step, nothing loaded from elsewhere.
//
// Everything comes from the admin API of the node that served this page, with the operator
// token in an Authorization header: the image (sites, cells, KPIs, history, pending
// proposals) once, then the change stream GET /watch, read as a fetch body (EventSource cannot
// send headers) and resumed with Last-Event-ID after any break, so the page stays live
// without a reload and never shows a change set twice.
'use strict';

const TOKEN_KEY = 'sonraft-token';
const FEED_MAX = 300;
const TRIALS_SHOWN = 20;
const KPI_HISTORY = 120;
const SVG_NS = 'http://www.w3.org/2000/svg';

const S = {
  sites: new Map(),
  cells: new Map(),
  kpis: new Map(), // cell -> [[period_end_ms, prb, rrc, thp, ho_att, ho_succ], ...], oldest first
  lastId: null,
  selected: null,
  shown: new Set(), // cursors in the feed
  trials: new Set(), // indexes of the trials in the feed
  stream: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    // Through the CSSOM: the page's content security policy refuses style attributes.
    else if (k === 'background') e.style.background = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// The token and the API

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

// A link may carry the token in its fragment (never sent to a server): keep it for this tab
// only and take it out of the address bar and the history.
function tokenFromFragment() {
  const m = location.hash.match(/(?:^#|&)token=([^&]*)/);
  if (m) {
    // Out of the address bar first: a malformed escape must not leave the token there.
    history.replaceState(null, '', location.pathname + location.search);
    try {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    } catch (e) {
      // Not a token: the page asks for one.
    }
  }
}

let asking = null;
function askToken(why) {
  if (!asking) {
    asking = new Promise((resolve) => {
      $('login-error').textContent = why || '';
      const form = $('login-form');
      const done = (ev) => {
        ev.preventDefault();
        sessionStorage.setItem(TOKEN_KEY, $('token').value);
        $('login').close();
        form.removeEventListener('submit', done);
        asking = null;
        resolve();
      };
      form.addEventListener('submit', done);
      $('login').showModal();
    });
  }
  return asking;
}

async function api(path, opts = {}) {
  for (;;) {
    if (!token()) await askToken('');
    const headers = Object.assign({}, opts.headers || {}, { Authorization: 'Bearer ' + token() });
    const r = await fetch(path, Object.assign({}, opts, { headers }));
    if (r.status !== 401) return r;
    sessionStorage.removeItem(TOKEN_KEY);
    await askToken('That token was refused.');
  }
}

async function json(path) {
  const r = await api(path);
  if (!r.ok) throw new Error(path + ' answered ' + r.status + ': ' + (await r.text()));
  return r.json();
}

// ---------------------------------------------------------------------------------------------
// Formatting

function utc(ms) {
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

// applied / refused / pending / undone, as the feed colours it.
function kindOf(rec) {
  const o = rec.outcome.outcome;
  if (o === 'pending') return 'pending';
  if (o !== 'applied') return 'refused';
  if (rec.origin.function === 'fallback' && /^undoes /.test(rec.reason)) return 'undone';
  return 'applied';
}

function refusal(o) {
  switch (o.outcome) {
    case 'rejected':
    case 'invalid':
      return o.reason;
    case 'conflict':
      return 'stale read: now ' + Object.entries(o.current || {}).map(([e, v]) => e + '@' + (v === null ? 'gone' : v)).join(', ');
    case 'pending':
      return 'waits for approval as proposal ' + o.id;
    default:
      return '';
  }
}

function writesText(writes) {
  return (writes || []).map((w) => w.entity + ' ' + w.param + '=' + JSON.stringify(w.value)).join(', ');
}

function recordItem(rec, fresh) {
  const kind = kindOf(rec);
  const label = kind === 'refused' ? rec.outcome.outcome : kind;
  const li = el('li', { class: fresh ? 'fresh' : '', 'data-cursor': rec.cursor, 'data-kind': kind },
    el('span', { class: 'when' }, utc(rec.log_time_ms) + ' #' + rec.index),
    el('span', { class: 'outcome ' + kind }, label),
    el('span', { class: 'fn' }, rec.origin.function),
    writesText(rec.writes) + ' ',
    el('span', { class: 'why' }, '[' + rec.reason + ']'));
  const why = refusal(rec.outcome);
  if (why) li.append(el('div', { class: 'why' }, (kind === 'refused' ? 'refused: ' : '') + why));
  return li;
}

function cellsOf(rec) {
  const out = new Set();
  for (const w of rec.writes || []) {
    const parts = w.entity.split('/');
    if (parts[0] === 'cell') out.add(parts[1]);
    if (parts[0] === 'relation') { out.add(parts[1]); out.add(parts[2]); }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The map

const KPI = {
  prb_dl_permille: { col: 1, scale: (v) => v / 10, unit: '%', bad: (v) => v / 1000 },
  thp_dl_kbps: { col: 3, scale: (v) => v / 1000, unit: 'Mbit/s', bad: (v) => 1 - Math.min(1, v / 50000) },
  ho_success: { col: -1, scale: (v) => v, unit: '%', bad: (v) => Math.min(1, (100 - v) / 10) },
  rrc_conn_mean: { col: 2, scale: (v) => v, unit: '', bad: (v) => Math.min(1, v / 200) },
};

function kpiValue(row, name) {
  if (!row) return null;
  if (name === 'ho_success') return row[4] > 0 ? (100 * row[5]) / row[4] : null;
  return row[KPI[name].col];
}

function colour(bad) {
  const t = Math.max(0, Math.min(1, bad));
  return 'hsl(' + Math.round(120 * (1 - t)) + ', 70%, 45%)';
}

function latest(cell) {
  const h = S.kpis.get(cell);
  return h && h.length ? h[h.length - 1] : null;
}

function cellColour(cell) {
  const name = $('kpi').value;
  const v = kpiValue(latest(cell), name);
  if (v === null || v === undefined) return '#cfd8dc';
  return colour(KPI[name].bad(v));
}

function wedge(cx, cy, r, azimuth, width) {
  const rad = (d) => (d * Math.PI) / 180;
  const a0 = rad(azimuth - width / 2);
  const a1 = rad(azimuth + width / 2);
  const x0 = cx + r * Math.sin(a0), y0 = cy - r * Math.cos(a0);
  const x1 = cx + r * Math.sin(a1), y1 = cy - r * Math.cos(a1);
  return `M${cx.toFixed(1)},${cy.toFixed(1)} L${x0.toFixed(1)},${y0.toFixed(1)} A${r},${r} 0 0 1 ${x1.toFixed(1)},${y1.toFixed(1)} Z`;
}

function drawMap() {
  const map = $('map');
  map.replaceChildren();
  const sites = [...S.sites.values()];
  if (!sites.length) {
    $('map-note').textContent = 'The image has no sites yet.';
    return;
  }
  const lat0 = sites.reduce((a, s) => a + s.lat, 0) / sites.length;
  const k = Math.cos((lat0 * Math.PI) / 180);
  const xs = sites.map((s) => s.lon * k), ys = sites.map((s) => -s.lat);
  const minX = Math.min(...xs), maxX = Math.max(...xs), minY = Math.min(...ys), maxY = Math.max(...ys);
  const W = 1000, H = 700, M = 60;
  const span = Math.max(maxX - minX, maxY - minY, 1e-6);
  const scale = Math.min((W - 2 * M) / Math.max(maxX - minX, span * 0.01), (H - 2 * M) / Math.max(maxY - minY, span * 0.01));
  // Centred in the view.
  const offX = (W - (maxX - minX) * scale) / 2, offY = (H - (maxY - minY) * scale) / 2;
  const pos = new Map();
  sites.forEach((s, i) => pos.set(s.id, [offX + (xs[i] - minX) * scale, offY + (ys[i] - minY) * scale]));
  // Wedges about half the distance to the nearest other site.
  let nearest = Infinity;
  const pts = [...pos.values()];
  for (let i = 0; i < pts.length && i < 400; i++)
    for (let j = i + 1; j < pts.length; j++)
      nearest = Math.min(nearest, Math.hypot(pts[i][0] - pts[j][0], pts[i][1] - pts[j][1]));
  const R = Math.max(6, Math.min(60, Number.isFinite(nearest) ? nearest * 0.45 : 40));
  const cells = [...S.cells.values()].sort((a, b) => (a.rat === b.rat ? 0 : a.rat === 'NR' ? 1 : -1));
  for (const c of cells) {
    const p = pos.get(c.site);
    if (!p) continue;
    const r = c.rat === 'NR' ? R * 0.6 : R;
    const path = svg('path', {
      d: wedge(p[0], p[1], r, c.azimuth || 0, c.rat === 'NR' ? 40 : 60),
      class: 'cell' + (S.selected === c.id ? ' selected' : ''),
      fill: cellColour(c.id),
      'data-cell': c.id,
    });
    const title = svg('title');
    title.textContent = c.id;
    path.append(title);
    path.addEventListener('click', () => selectCell(c.id));
    map.append(path);
  }
  for (const s of sites) {
    const p = pos.get(s.id);
    map.append(svg('circle', { cx: p[0], cy: p[1], r: 2.5, class: 'site' }));
    if (sites.length <= 60) {
      const t = svg('text', { x: p[0] + 4, y: p[1] - 4, class: 'site-label' });
      t.textContent = s.id;
      map.append(t);
    }
  }
  $('map-note').textContent = `${sites.length} sites, ${S.cells.size} cells`;
  drawLegend();
}

function recolour() {
  for (const p of $('map').querySelectorAll('path.cell')) p.setAttribute('fill', cellColour(p.dataset.cell));
}

function drawLegend() {
  const name = $('kpi').value;
  const good = name === 'prb_dl_permille' || name === 'rrc_conn_mean' ? 'low' : 'high';
  $('legend').replaceChildren(
    el('span', { background: colour(0) }), good + ' ',
    el('span', { background: colour(0.5) }),
    el('span', { background: colour(1) }), (good === 'low' ? 'high' : 'low') + ' ',
    el('span', { background: '#cfd8dc' }), 'no KPI yet');
}

// ---------------------------------------------------------------------------------------------
// The cell panel

const PARAMS = [
  ['rat', 'RAT', (v) => v],
  ['pci', 'PCI', (v) => v],
  ['arfcn', 'ARFCN', (v) => v],
  ['azimuth', 'azimuth', (v) => v + ' °'],
  ['electrical_tilt', 'electrical tilt', (v) => (v / 10).toFixed(1) + ' °'],
  ['tilt_box', 'tilt box', (v) => (v.min / 10).toFixed(1) + ' … ' + (v.max / 10).toFixed(1) + ' °'],
  ['max_tx_power_dbm', 'max TX power', (v) => v + ' dBm'],
  ['hysteresis', 'hysteresis', (v) => (v / 2).toFixed(1) + ' dB'],
  ['time_to_trigger_ms', 'time to trigger', (v) => v + ' ms'],
  ['a3_offset', 'A3 offset', (v) => (v / 2).toFixed(1) + ' dB'],
  ['admin_state', 'admin state', (v) => v],
  ['energy_saving', 'energy saving', (v) => v],
  ['version', 'version', (v) => v],
];

async function selectCell(id) {
  S.selected = id;
  for (const p of $('map').querySelectorAll('path.cell')) p.classList.toggle('selected', p.dataset.cell === id);
  renderCell();
  await refreshCellHistory();
}

function renderCell() {
  const c = S.cells.get(S.selected);
  if (!c) return;
  $('cell-title').textContent = 'Cell ' + c.id + ' (site ' + c.site + ')';
  $('cell-hint').textContent = '';
  $('cell-params').tBodies[0].replaceChildren(...PARAMS.filter(([k]) => c[k] !== undefined).map(([k, label, f]) => {
    const by = c.last_change && c.last_change[k];
    return el('tr', {}, el('td', {}, label), el('td', {}, f(c[k])), el('td', { class: 'note' }, by ? 'by ' + by.by + ' #' + by.index : ''));
  }));
  renderCellKpis();
}

function renderCellKpis() {
  const h = S.kpis.get(S.selected) || [];
  const name = $('kpi').value;
  const plot = $('cell-kpis');
  plot.replaceChildren();
  const vals = h.map((r) => kpiValue(r, name)).filter((v) => v !== null);
  if (vals.length > 1) {
    const max = Math.max(...vals), min = Math.min(...vals);
    const pts = vals.map((v, i) => `${((i / (vals.length - 1)) * 296 + 2).toFixed(1)},${(78 - ((v - min) / (max - min || 1)) * 74).toFixed(1)}`);
    plot.append(svg('polyline', { points: pts.join(' ') }));
  }
  const row = h.length ? h[h.length - 1] : null;
  const rows = row
    ? [
        ['period end', utc(row[0])],
        ['load (PRB)', (row[1] / 10).toFixed(1) + ' %'],
        ['RRC connections', row[2]],
        ['DL throughput', (row[3] / 1000).toFixed(1) + ' Mbit/s'],
        ['handovers', row[5] + ' / ' + row[4] + (row[4] ? ' (' + ((100 * row[5]) / row[4]).toFixed(1) + ' %)' : '')],
        ['periods seen', h.length],
      ]
    : [['KPIs', 'none reported yet']];
  $('cell-kpi-now').tBodies[0].replaceChildren(...rows.map(([a, b]) => el('tr', {}, el('td', {}, a), el('td', {}, b))));
}

async function refreshCellHistory() {
  const id = S.selected;
  if (!id) return;
  try {
    const recs = await json('/image/history?consistency=local&limit=15&cell=' + encodeURIComponent(id));
    if (S.selected === id) $('cell-history').replaceChildren(...recs.map((r) => recordItem(r, false)));
  } catch (e) {
    $('cell-history').replaceChildren(el('li', { class: 'error' }, String(e.message || e)));
  }
}

async function refreshCells(ids) {
  for (const id of ids) {
    try {
      const r = await api('/image/cells/' + encodeURIComponent(id) + '?consistency=local');
      if (r.ok) S.cells.set(id, await r.json());
      else if (r.status === 404) S.cells.delete(id);
    } catch (e) { /* the stream's next event tries again */ }
  }
  if (S.selected && ids.has(S.selected)) { renderCell(); refreshCellHistory(); }
}

// ---------------------------------------------------------------------------------------------
// Pending proposals and cluster health

async function refreshPending() {
  try {
    const list = await json('/son/pending?consistency=local');
    const items = list.map((p) => el('li', { 'data-pending': p.id },
      el('span', { class: 'when' }, utc(p.recorded_at_ms) + ' #' + p.id),
      el('span', { class: 'fn' }, p.origin.function),
      writesText(p.writes) + ' ', el('span', { class: 'why' }, '[' + p.reason + ']'),
      el('div', {},
        el('button', { class: 'approve', type: 'button', onclick: () => decide(p.id, 'approve') }, 'approve'),
        el('button', { class: 'reject', type: 'button', onclick: () => decide(p.id, 'reject') }, 'reject'))));
    $('pending').replaceChildren(...(items.length ? items : [el('li', { class: 'note' }, 'none waiting')]));
  } catch (e) {
    $('pending').replaceChildren(el('li', { class: 'error' }, String(e.message || e)));
  }
}

async function decide(id, verb) {
  const r = await api('/son/pending/' + id + '/' + verb, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ note: (verb === 'approve' ? 'approved' : 'rejected') + ' in the web view' }),
  });
  // Said beside the list, not in a modal dialog: the page stays live while the operator reads.
  const note = $('decision');
  if (r.ok) {
    note.className = 'note';
    note.textContent = 'proposal ' + id + ' ' + (verb === 'approve' ? 'approved' : 'rejected');
  } else {
    const body = await r.json().catch(() => ({}));
    note.className = 'error';
    note.textContent = 'proposal ' + id + ' not ' + (verb === 'approve' ? 'approved' : 'rejected') + ': ' +
      (body.outcome ? refusal(body) : body.detail || r.status);
  }
  refreshPending();
}

async function refreshHealth() {
  try {
    const h = await json('/cluster/health');
    $('health').tBodies[0].replaceChildren(...h.members.map((m) => el('tr', {},
      el('td', {}, m.id + (m.id === h.leader ? ' ★' : '')), el('td', {}, m.site), el('td', {}, m.role),
      el('td', { class: m.answers ? '' : 'error' }, m.answers ? 'yes' : 'no' + (m.error ? ': ' + m.error : '')),
      el('td', {}, m.lag === null || m.lag === undefined ? '-' : m.lag))));
    $('health-verdict').textContent = h.healthy
      ? `healthy · leader ${h.leader} · term ${h.term} · tolerates ${h.fault_tolerance} failure(s)`
      : 'problems: ' + h.problems.map((p) => p.detail).join('; ');
    $('health-verdict').className = h.healthy ? 'note' : 'error';
  } catch (e) {
    $('health-verdict').textContent = String(e.message || e);
    $('health-verdict').className = 'error';
  }
}

// ---------------------------------------------------------------------------------------------
// The feed and the change stream

function addRecord(rec, fresh) {
  if (S.shown.has(rec.cursor)) return;
  S.shown.add(rec.cursor);
  const feed = $('feed');
  feed.prepend(recordItem(rec, fresh));
  trimFeed(feed);
}

function trimFeed(feed) {
  while (feed.children.length > FEED_MAX) {
    const last = feed.lastElementChild;
    if (last.dataset.cursor !== undefined) S.shown.delete(last.dataset.cursor);
    if (last.dataset.trial !== undefined) S.trials.delete(Number(last.dataset.trial));
    last.remove();
  }
}

// A SON change's verification closed: kept, undone (its undo comes as a fallback change set
// too) or unverified. Each trial once, whether the stream or the journal told of it first.
function addTrial(t, fresh) {
  if (S.trials.has(t.index)) return;
  S.trials.add(t.index);
  const feed = $('feed');
  const kind = t.state === 'undone' ? 'undone' : t.state === 'kept' ? 'applied' : 'pending';
  feed.prepend(el('li', { class: fresh ? 'fresh' : '', 'data-trial': t.index },
    el('span', { class: 'when' }, utc(t.closed_at_ms || Date.now()) + ' #' + t.index),
    el('span', { class: 'outcome ' + kind }, 'trial ' + t.state),
    el('span', { class: 'fn' }, t.function),
    t.cells.join(', ') + ' ',
    el('span', { class: 'why' }, t.reason ? '[' + t.reason + ']' : '')));
  trimFeed(feed);
}

// The newest verdicts from the journal: on opening the page, and after each (re)connection of
// the stream, which tells only of the trials that close while it is connected.
async function refreshTrials() {
  try {
    const t = await json('/son/trials?limit=' + TRIALS_SHOWN);
    const closed = [...t.closed].sort((a, b) => a.closed_at_ms - b.closed_at_ms || a.index - b.index);
    for (const trial of closed) addTrial(trial, false);
  } catch (e) {
    // The stream's events still come; the next connection tries again.
  }
}

function setLive(on, text) {
  const b = $('live');
  b.className = 'badge ' + (on ? 'on' : 'off');
  b.textContent = text;
}

function addKpis(k) {
  const cols = k.fields;
  const at = (name) => cols.indexOf(name);
  const order = ['period_end_ms', 'prb_dl_permille', 'rrc_conn_mean', 'thp_dl_kbps', 'ho_att', 'ho_succ'].map(at);
  for (const [cell, raw] of Object.entries(k.cells)) {
    const row = order.map((i) => (i >= 0 ? raw[i] : 0));
    const h = S.kpis.get(cell) || [];
    if (!h.length || h[h.length - 1][0] < row[0]) h.push(row);
    while (h.length > KPI_HISTORY) h.shift();
    S.kpis.set(cell, h);
  }
  recolour();
  if (S.selected && k.cells[S.selected]) renderCellKpis();
}

let pendingRefresh = null;
const touched = new Set();
function afterChange(rec) {
  for (const c of cellsOf(rec)) touched.add(c);
  if (pendingRefresh) return;
  pendingRefresh = setTimeout(async () => {
    pendingRefresh = null;
    const ids = new Set(touched);
    touched.clear();
    await refreshCells(ids);
    recolour();
    refreshPending();
  }, 250);
}

function dispatch(ev) {
  let data = null;
  try { data = JSON.parse(ev.data); } catch (e) { return; }
  switch (ev.event) {
    case 'changeset':
      if (ev.id) S.lastId = ev.id;
      addRecord(data, true);
      afterChange(data);
      break;
    case 'caught_up':
      setLive(true, 'live · node ' + data.node);
      refreshTrials();
      break;
    case 'cluster':
      $('cluster').textContent = `node ${data.node} (${data.role}) · leader ${data.leader_id ?? 'none'} · term ${data.term} · voters ${data.voters.join(',')}`;
      refreshHealth();
      break;
    case 'kpis':
      addKpis(data);
      break;
    case 'trial':
      addTrial(data, true);
      break;
    case 'gap':
      $('feed').prepend(el('li', { class: 'error' }, 'some records were dropped before this page saw them: ' + data.detail));
      break;
    case 'closed':
      setLive(false, 'reconnecting (' + data.reason + ')');
      break;
  }
}

// Reads one connection of the stream until it ends or breaks.
async function readStream(resp) {
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const ev = { event: 'message', id: null, data: null };
      for (const line of block.split('\n')) {
        if (!line || line[0] === ':') continue;
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        let value = i < 0 ? '' : line.slice(i + 1);
        if (value[0] === ' ') value = value.slice(1);
        if (field === 'event') ev.event = value;
        else if (field === 'id') ev.id = value;
        else if (field === 'data') ev.data = ev.data === null ? value : ev.data + '\n' + value;
      }
      if (ev.data !== null) dispatch(ev);
    }
  }
}

async function follow() {
  for (;;) {
    try {
      const headers = {};
      let path = '/watch';
      if (S.lastId) headers['Last-Event-ID'] = S.lastId;
      else path += '?from_index=1';
      const r = await api(path, { headers });
      if (!r.ok) throw new Error('/watch answered ' + r.status);
      await readStream(r);
    } catch (e) {
      // A broken connection or a node that went away: try again below.
    }
    setLive(false, 'reconnecting');
    await sleep(1000);
  }
}

// ---------------------------------------------------------------------------------------------

async function start() {
  tokenFromFragment();
  $('kpi').addEventListener('change', () => { drawLegend(); recolour(); renderCellKpis(); });
  $('logout').addEventListener('click', () => { sessionStorage.removeItem(TOKEN_KEY); location.reload(); });
  const [sites, cells, kpis, recent] = await Promise.all([
    json('/image/sites?consistency=local'),
    json('/image/cells?consistency=local'),
    json('/image/kpis?consistency=local'),
    json('/image/history?consistency=local&limit=50'),
  ]);
  for (const s of sites) S.sites.set(s.id, s);
  for (const c of cells) S.cells.set(c.id, c);
  for (const k of kpis) S.kpis.set(k.cell, [[k.period_end_ms, k.prb_dl_permille, k.rrc_conn_mean, k.thp_dl_kbps, k.ho_att, k.ho_succ]]);
  drawMap();
  for (const rec of [...recent].reverse()) addRecord(rec, false);
  if (recent.length) S.lastId = recent[0].cursor;
  refreshPending();
  refreshHealth();
  setInterval(refreshHealth, 5000);
  follow();
}

start().catch((e) => {
  setLive(false, 'error');
  $('map-note').textContent = 'Cannot load the image: ' + (e.message || e);
});
