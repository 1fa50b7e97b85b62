// The segsync console: a client of the admin API (/api/v1) and nothing
// else. Every rule it shows comes from the API's answers (the actions a
// status allows and why not, validation, the request preview), so the
// console cannot disagree with the CLI. No framework and no build step:
// DOM nodes are built with h(), never from HTML strings, so nothing a
// destination or a segment name contains can run as script.

const PAGE_ROWS = 50;
const VIEWER_REASON = 'your token is a viewer: it may only read';
const ACTIONS = [
  ['run', 'Run ad hoc'],
  ['pause', 'Pause'],
  ['resync-all', 'Resync all users'],
  ['resync-last', 'Resync last difference'],
  ['archive', 'Archive'],
];
const SYNC_STATUSES = ['active', 'paused', 'failed', 'inactive'];

const state = {
  token: sessionStorage.getItem('segsync-token') || '',
  me: null,
  timers: [],
};

// ---------------------------------------------------------------- helpers

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body, opts = {}) {
  const headers = {};
  if (state.token) headers.Authorization = 'Bearer ' + state.token;
  let payload;
  if (body instanceof Blob) {
    payload = body;
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const r = await fetch(path, { method, headers, body: payload });
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (r.status === 401 && !opts.signin) {
    signOut('Your token is no longer accepted: sign in again.');
    throw new ApiError(401, 'not signed in');
  }
  if (!r.ok) {
    throw new ApiError(r.status, (data && data.error) || text || r.statusText);
  }
  return data;
}

function h(tag, props, ...kids) {
  const el = tag === 'svg' || props?.svg
    ? document.createElementNS('http://www.w3.org/2000/svg', tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false || k === 'svg') continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, kids);
  return el;
}

function s(tag, attrs, ...kids) {
  return h(tag, { ...attrs, svg: true }, ...kids);
}

function append(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
}

function pad(n) {
  return String(n).padStart(2, '0');
}

// A time as YYYY-MM-DD HH:MM in the browser's zone; '—' when absent.
function when(t) {
  if (t === null || t === undefined || t === '') return '—';
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return '—';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// The value of a datetime-local input for a time.
function localInput(ms) {
  if (ms === null || ms === undefined) return '';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function num(n) {
  return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US');
}

function schedule(s) {
  if (s === 'once') return 'One-time';
  if (s && s.every) return s.every[0].toUpperCase() + s.every.slice(1);
  return '—';
}

function badge(status) {
  return status ? h('span', { class: `badge ${status}`, text: status }) : h('span', { class: 'muted', text: '—' });
}

function flash(message, bad = false) {
  const box = document.getElementById('flash');
  box.replaceChildren(h('div', { class: bad ? 'msg bad' : 'msg', text: message }));
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => box.replaceChildren(), 6000);
}

function confirmDialog(title, text, confirmLabel) {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = confirmLabel;
  dlg.returnValue = '';
  dlg.showModal();
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
  });
}

function isViewer() {
  return state.me && state.me.role === 'viewer';
}

function field(label, input, hint, id) {
  const fid = id || input.id || ('f-' + Math.random().toString(36).slice(2));
  input.id = fid;
  return h('div', { class: 'field' },
    h('label', { for: fid, text: label }),
    input,
    hint ? h('span', { class: 'hint', id: fid + '-hint', text: hint }) : null,
    h('span', { class: 'error', id: fid + '-error', role: 'alert' }));
}

function setError(id, message) {
  const el = document.getElementById(id + '-error');
  if (el) el.textContent = message || '';
}

function every(ms, fn) {
  const t = setInterval(fn, ms);
  state.timers.push(t);
  return t;
}

// A table that becomes a list of cards on a phone (each cell labelled
// with its column's name by CSS, from data-label).
function table(headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'muted', text: empty });
  const heads = headers.map((c) => (c instanceof Node ? c : h('th', { scope: 'col', text: c })));
  const labels = heads.map((th) => th.textContent.replace(/ [▲▼]$/, ''));
  for (const row of rows) {
    [...row.children].forEach((td, i) => td.setAttribute('data-label', labels[i] || ''));
  }
  return h('div', { class: 'scroll' },
    h('table', { class: 'cards' },
      h('thead', {}, h('tr', {}, heads)),
      h('tbody', {}, rows)));
}

// ---------------------------------------------------------------- shell

const NAV = [
  ['#/syncs', 'Synced segments', 'syncs'],
  ['#/destinations', 'Destinations', 'destinations'],
  ['#/segments', 'Segments', 'segments'],
  ['#/notifications', 'Notifications', 'notifications'],
  ['#/workspaces', 'Workspaces', 'workspaces'],
  ['#/workers', 'Workers', 'workers'],
];

function shell(section) {
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  if (!state.me) {
    nav.replaceChildren();
    who.replaceChildren();
    return;
  }
  nav.replaceChildren(...NAV.map(([href, label, key]) =>
    h('a', { href, text: label, 'aria-current': key === section ? 'page' : null })));
  who.replaceChildren(
    h('span', { id: 'signed-in', text: `${state.me.name} (${state.me.role})` }),
    state.me.tokens_exist ? h('button', { type: 'button', onclick: () => signOut('Signed out.'), text: 'Sign out' }) : null);
}

function signOut(message) {
  state.token = '';
  state.me = null;
  sessionStorage.removeItem('segsync-token');
  if (message) flash(message);
  location.hash = '#/signin';
  route();
}

// Whether the token (if any) is accepted; the API answers 200 either way.
async function whoami() {
  const me = await api('GET', '/api/v1/whoami', undefined, { signin: true });
  state.me = me && me.signed_in ? me : null;
  return !!state.me;
}

function render(section, ...nodes) {
  shell(section);
  const main = document.getElementById('main');
  main.replaceChildren();
  append(main, nodes);
}

async function route() {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  const [path, query] = (location.hash.slice(1) || '/syncs').split('?');
  const q = new URLSearchParams(query || '');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  try {
    if (!state.me && parts[0] !== 'signin') {
      if (!(await whoami())) {
        location.hash = '#/signin';
        return;
      }
    }
    switch (parts[0]) {
      case 'signin': return signIn();
      case 'syncs':
        if (parts[1] === 'new') return syncForm(null, q);
        if (parts[1] && parts[2] === 'edit') return syncForm(Number(parts[1]), q);
        if (parts[1]) return syncDetail(Number(parts[1]));
        return syncList(q);
      case 'destinations':
        if (parts[1] === 'new') return destinationForm(null, q);
        if (parts[1]) return destinationForm(parts[1], q);
        return destinationList();
      case 'segments':
        if (parts[1]) return segmentDetail(parts[1]);
        return segmentList();
      case 'notifications': return notifications();
      case 'workspaces': return workspaces();
      case 'workers': return workers();
      default:
        return render(null, h('h1', { text: 'Not found' }), h('p', {}, h('a', { href: '#/syncs', text: 'Synced segments' })));
    }
  } catch (e) {
    if (e.status === 401) return;
    render(null, h('h1', { text: 'Something went wrong' }), h('p', { class: 'error', text: e.message }));
  }
}

// ---------------------------------------------------------------- sign in

function signIn() {
  const input = h('input', { type: 'password', autocomplete: 'current-password', required: true });
  const error = h('p', { class: 'error', role: 'alert' });
  const form = h('form', {
    class: 'stack',
    onsubmit: async (ev) => {
      ev.preventDefault();
      state.token = input.value.trim();
      try {
        if (await whoami()) {
          sessionStorage.setItem('segsync-token', state.token);
          location.hash = '#/syncs';
        } else {
          state.token = '';
          error.textContent = 'This token is not accepted: check it, or create one with `segsync token create NAME`.';
        }
      } catch (e) {
        error.textContent = e.message;
      }
    },
  },
  field('API token', input, 'An admin token can act; a viewer token sees everything and changes nothing.', 'token'),
  error,
  h('div', {}, h('button', { class: 'primary', type: 'submit', text: 'Sign in' })));
  render(null, h('h1', { text: 'Sign in to segsync' }), form);
  input.focus();
}

// ---------------------------------------------------------------- syncs

// Why `action` cannot be done now, or null: the API's rule, or the viewer's.
function refusal(view, action) {
  if (isViewer()) return VIEWER_REASON;
  const why = view.actions ? view.actions[action] : 'unknown';
  return why === undefined ? 'not available' : why;
}

async function act(view, action, done) {
  if (action === 'archive') {
    const ok = await confirmDialog('Archive this sync?',
      `Sync ${view.id} (${view.segment} → ${view.destination}) stops for good: an archived sync can never run, be edited or be resumed.`,
      'Archive');
    if (!ok) return;
  }
  if (action === 'resync-all') {
    const ok = await confirmDialog('Resync all users?',
      `Every current member of ${view.segment} is sent to ${view.destination} again. The destination must be able to drop the segment's users and take them all again.`,
      'Resync all users');
    if (!ok) return;
  }
  try {
    const r = await api('POST', `/api/v1/syncs/${view.id}/${action}`);
    const label = ACTIONS.find(([a]) => a === action)[1];
    const word = { pause: 'paused', archive: 'archived' }[action];
    flash(r && r.execution
      ? `${label}: execution ${r.execution} started${r.note ? ' — ' + r.note : ''}.`
      : `Sync ${view.id} ${word}.`);
  } catch (e) {
    flash(e.message, true);
  }
  done();
}

function actionMenu(view, done) {
  const items = [h('li', {}, h('a', { href: `#/syncs/${view.id}`, text: 'View' }))];
  const editWhy = refusal(view, 'edit');
  items.push(h('li', {}, editWhy
    ? [h('button', { type: 'button', disabled: true, text: 'Edit', 'aria-describedby': `why-edit-${view.id}` }),
      h('span', { class: 'why', id: `why-edit-${view.id}`, text: editWhy })]
    : h('a', { href: `#/syncs/${view.id}/edit`, text: 'Edit' })));
  for (const [action, label] of ACTIONS) {
    const why = refusal(view, action);
    const id = `why-${action}-${view.id}`;
    items.push(h('li', {},
      h('button', {
        type: 'button',
        disabled: !!why,
        'data-action': action,
        'aria-describedby': why ? id : null,
        onclick: () => act(view, action, done),
        text: label,
      }),
      why ? h('span', { class: 'why', id, text: why }) : null));
  }
  return h('details', { class: 'menu' }, h('summary', { text: 'Actions', 'aria-label': `Actions for sync ${view.id}` }), h('ul', {}, items));
}

async function syncList(q) {
  const archived = q.get('tab') === 'archived';
  const all = await api('GET', '/api/v1/syncs');
  const mine = all.filter((v) => (v.status === 'archived') === archived);
  const ui = {
    status: q.get('status') || '',
    search: q.get('q') || '',
    sort: q.get('sort') || 'id',
    dir: q.get('dir') === 'asc' ? 1 : -1,
    page: Math.max(0, Number(q.get('page') || 0)),
  };
  const box = h('div', {});
  const columns = [
    ['segment', 'Segment', (v) => v.segment],
    ['status', 'Status', (v) => v.status],
    ['latest', 'Latest sync', (v) => v.latest_status || ''],
    ['destination', 'Destination', (v) => v.destination],
    ['schedule', 'Schedule', (v) => schedule(v.schedule)],
    ['last', 'Last synced', (v) => v.last_synced || ''],
    ['next', 'Next run', (v) => v.next_run || ''],
  ];
  const key = (v) => (ui.sort === 'id' ? v.id : columns.find(([c]) => c === ui.sort)[2](v));
  const draw = () => {
    const needle = ui.search.toLowerCase();
    const rows = mine
      .filter((v) => !ui.status || v.status === ui.status)
      .filter((v) => !needle || `${v.id} ${v.segment} ${v.destination} ${v.attribute}`.toLowerCase().includes(needle))
      .sort((a, b) => (key(a) < key(b) ? -ui.dir : key(a) > key(b) ? ui.dir : a.id - b.id));
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
    ui.page = Math.min(ui.page, pages - 1);
    const shown = rows.slice(ui.page * PAGE_ROWS, (ui.page + 1) * PAGE_ROWS);
    const header = columns.map(([c, label]) => h('th', {
      scope: 'col',
      'aria-sort': ui.sort === c ? (ui.dir > 0 ? 'ascending' : 'descending') : null,
    }, h('button', {
      class: 'sort',
      type: 'button',
      onclick: () => {
        ui.dir = ui.sort === c ? -ui.dir : 1;
        ui.sort = c;
        draw();
      },
      text: label + (ui.sort === c ? (ui.dir > 0 ? ' ▲' : ' ▼') : ''),
    })));
    header.push(h('th', { scope: 'col', text: 'Actions' }));
    const body = shown.map((v) => h('tr', { 'data-sync': v.id },
      h('td', {}, h('a', { href: `#/syncs/${v.id}`, text: v.segment }), h('span', { class: 'muted', text: ` #${v.id}` })),
      h('td', {}, badge(v.status)),
      h('td', {}, v.running ? badge('processing') : badge(v.latest_status)),
      h('td', { text: v.destination }),
      h('td', { text: schedule(v.schedule) }),
      h('td', { text: when(v.last_synced) }),
      h('td', { text: when(v.next_run) }),
      h('td', {}, actionMenu(v, () => route()))));
    box.replaceChildren(
      table(header, body, archived ? 'No archived syncs.' : 'No syncs match.'),
      h('div', { class: 'pager' },
        h('button', { type: 'button', 'aria-label': 'Previous page', disabled: ui.page === 0, onclick: () => { ui.page -= 1; draw(); }, text: 'Previous' }),
        h('span', { id: 'page-of', text: `Page ${ui.page + 1} of ${pages} · ${rows.length} sync${rows.length === 1 ? '' : 's'}` }),
        h('button', { type: 'button', 'aria-label': 'Next page', disabled: ui.page >= pages - 1, onclick: () => { ui.page += 1; draw(); }, text: 'Next' })));
  };
  const statusSelect = h('select', { onchange: (e) => { ui.status = e.target.value; ui.page = 0; draw(); } },
    h('option', { value: '', text: 'All statuses' }),
    SYNC_STATUSES.map((st) => h('option', { value: st, text: st[0].toUpperCase() + st.slice(1), selected: st === ui.status })));
  const search = h('input', { type: 'search', value: ui.search, placeholder: 'Segment, destination or id', oninput: (e) => { ui.search = e.target.value; ui.page = 0; draw(); } });
  draw();
  render('syncs',
    h('h1', { text: 'Synced segments' }),
    h('div', { class: 'tabs', role: 'tablist' },
      h('a', { href: '#/syncs', role: 'tab', 'aria-selected': String(!archived), text: 'Synced segments' }),
      h('a', { href: '#/syncs?tab=archived', role: 'tab', 'aria-selected': String(archived), text: 'Archived syncs' })),
    h('div', { class: 'toolbar' },
      archived ? null : field('Status', statusSelect, null, 'status-filter'),
      field('Search', search, null, 'search'),
      isViewer() ? null : h('a', { class: 'button primary', href: '#/syncs/new', text: 'New sync' })),
    box);
}

function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.map(([k, v]) => [h('dt', { text: k }), h('dd', {}, v)]));
}

function chart(executions) {
  const pts = executions.filter((e) => e.status !== 'processing');
  if (!pts.length) return h('p', { class: 'muted', text: 'The chart appears after the first run.' });
  const W = 640;
  const H = 220;
  const L = 56;
  const R = 12;
  const T = 12;
  const B = 28;
  const max = Math.max(1, ...pts.map((e) => Math.max(e.total, e.added, e.removed)));
  const x = (i) => (pts.length === 1 ? L + (W - L - R) / 2 : L + (i * (W - L - R)) / (pts.length - 1));
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const series = [['total', '#0b5fff'], ['added', '#1a7f37'], ['removed', '#cf222e']];
  const svg = s('svg', {
    class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', id: 'history-chart',
    'aria-label': `Added, removed and total users over the last ${pts.length} runs`,
  },
  s('line', { x1: L, y1: y(0), x2: W - R, y2: y(0), stroke: '#d0d7de' }),
  s('line', { x1: L, y1: y(max), x2: W - R, y2: y(max), stroke: '#eef1f4' }),
  s('text', { x: L - 6, y: y(max) + 4, 'text-anchor': 'end' }, num(max)),
  s('text', { x: L - 6, y: y(0) + 4, 'text-anchor': 'end' }, '0'),
  s('text', { x: x(0), y: H - 8, 'text-anchor': pts.length === 1 ? 'middle' : 'start' }, when(pts[0].started_ms)),
  pts.length > 1 ? s('text', { x: x(pts.length - 1), y: H - 8, 'text-anchor': 'end' }, when(pts[pts.length - 1].started_ms)) : null,
  series.map(([k, color]) => [
    pts.length > 1 ? s('polyline', {
      fill: 'none', stroke: color, 'stroke-width': 2, 'data-series': k,
      points: pts.map((e, i) => `${x(i).toFixed(1)},${y(e[k]).toFixed(1)}`).join(' '),
    }) : null,
    pts.map((e, i) => s('circle', { cx: x(i).toFixed(1), cy: y(e[k]).toFixed(1), r: 3, fill: color, 'data-series': k, 'data-value': e[k] },
      s('title', {}, `Run ${e.seq}, ${when(e.started_ms)}: ${num(e[k])} ${k}`))),
  ]));
  return h('div', {},
    h('div', { class: 'legend' }, series.map(([k]) => h('span', {}, h('span', { class: `swatch ${k}` }), k))),
    svg);
}

function historyTable(executions) {
  const rows = [...executions].reverse().map((e) => h('tr', { 'data-seq': e.seq },
    h('td', { text: when(e.started_ms) }),
    h('td', { text: e.kind }),
    h('td', { text: e.trigger }),
    h('td', {}, badge(e.status)),
    h('td', { class: 'num', text: `${num(e.pages_done)} / ${num(e.total_pages)}` }),
    h('td', { class: 'num', 'data-col': 'added', text: num(e.added) }),
    h('td', { class: 'num', 'data-col': 'removed', text: num(e.removed) }),
    h('td', { class: 'num', 'data-col': 'updated', text: num(e.updated) }),
    h('td', { class: 'num', 'data-col': 'total', text: num(e.total) }),
    h('td', { class: 'num', text: num(e.skipped) }),
    h('td', { class: 'num', text: e.seconds === null || e.seconds === undefined ? '—' : `${e.seconds.toFixed(1)} s` }),
    h('td', { class: 'wrap', text: e.error || '' })));
  return table(
    ['Run time', 'Kind', 'Trigger', 'Status', 'Pages', 'Added', 'Removed', 'Updated', 'Total', 'Skipped', 'Duration', 'Error']
      .map((c, i) => h('th', { scope: 'col', class: i >= 4 && i <= 10 ? 'num' : null, text: c })),
    rows, 'No runs yet.');
}

function progressPanel(p) {
  const rate = p.rate_rpm === null || p.rate_rpm === undefined
    ? 'rate not measured yet'
    : `${num(p.rate_rpm)} of ${num(p.limit_rpm)} requests/min`;
  return h('section', { class: 'panel live', id: 'progress', 'aria-live': 'polite' },
    h('h2', { text: `Run ${p.seq} in progress` }),
    h('progress', { max: Math.max(1, p.total_pages), value: p.pages_done }),
    h('p', {},
      h('strong', { id: 'pages-done', text: `${num(p.pages_done)} of ${num(p.total_pages)} pages acknowledged` }),
      ` · ≈${num(p.users_done)} of ${num(p.users_planned)} users · ${num(Math.round(p.users_per_s))} users/s · ${rate}`));
}

async function syncDetail(id) {
  const [v, executions] = await Promise.all([
    api('GET', `/api/v1/syncs/${id}`),
    api('GET', `/api/v1/syncs/${id}/executions`),
  ]);
  executions.sort((a, b) => a.seq - b.seq);
  const buttons = [];
  const editWhy = refusal(v, 'edit');
  buttons.push(h('div', {}, editWhy
    ? [h('button', { type: 'button', disabled: true, text: 'Edit' }), h('span', { class: 'why', text: editWhy })]
    : h('a', { class: 'button', href: `#/syncs/${id}/edit`, text: 'Edit' })));
  for (const [action, label] of ACTIONS) {
    const why = refusal(v, action);
    buttons.push(h('div', {},
      h('button', { type: 'button', disabled: !!why, 'data-action': action, class: action === 'archive' ? 'danger' : null, onclick: () => act(v, action, () => route()), text: label }),
      why ? h('span', { class: 'why', text: why }) : null));
  }
  const live = h('div', { id: 'live' }, v.progress ? progressPanel(v.progress) : null);
  render('syncs',
    h('p', {}, h('a', { href: '#/syncs', text: '← Synced segments' })),
    h('h1', {}, `${v.segment} → ${v.destination} `, badge(v.status)),
    h('div', { class: 'actions', role: 'group', 'aria-label': 'Actions' }, buttons),
    live,
    h('div', { class: 'grid2' },
      h('section', {}, h('h2', { text: 'Sync' }), facts([
        ['Sync id', String(v.id)],
        ['Segment', h('a', { href: `#/segments/${encodeURIComponent(v.segment)}`, text: v.segment })],
        ['Destination', h('a', { href: `#/destinations/${encodeURIComponent(v.destination)}`, text: v.destination })],
        ['Synced attribute', v.attribute],
        ['Schedule', `${schedule(v.schedule)} (${v.timezone})`],
        ['Start', when(v.start_ms)],
        ['End', v.end_ms ? when(v.end_ms) : 'none'],
        ['Notification emails', v.notify.length ? v.notify.join(', ') : 'none'],
      ])),
      h('section', {}, h('h2', { text: 'Status' }), facts([
        ['Status', badge(v.status)],
        ['Latest sync status', v.running ? badge('processing') : badge(v.latest_status)],
        ['Last synced', when(v.last_synced)],
        ['Next sync', when(v.next_run)],
        ['Updated by', v.updated_by || '—'],
        ['Updated', when(v.updated_ms)],
      ]))),
    h('h2', { text: 'History' }),
    chart(executions),
    h('div', { id: 'history' }, historyTable(executions)));
  if (v.running) {
    every(1000, async () => {
      const now = await api('GET', `/api/v1/syncs/${id}`);
      if (!now.running) {
        route();
        return;
      }
      live.replaceChildren(now.progress ? progressPanel(now.progress) : null);
    });
  }
}

// The sync form: create (id null) or edit. The API enforces the rules; the
// form shows them where they apply and puts the API's refusal next to the
// field it is about.
async function syncForm(id, q) {
  const [segments, dests, v] = await Promise.all([
    api('GET', '/api/v1/segments'),
    api('GET', '/api/v1/destinations'),
    id ? api('GET', `/api/v1/syncs/${id}`) : Promise.resolve(null),
  ]);
  const editing = !!v;
  const now = Date.now();
  const startPassed = editing && v.start_ms <= now;
  const periodic = editing ? v.schedule !== 'once' : (q.get('schedule') || 'periodic') !== 'once';
  const segment = h('select', { required: true, disabled: editing },
    segments.map((sg) => h('option', { value: sg.name, text: sg.name, selected: (editing ? v.segment : q.get('segment')) === sg.name })));
  const destination = h('select', {
    required: true,
    onchange: (e) => {
      if (e.target.value === '__new') location.hash = '#/destinations/new?then=sync';
    },
  },
  dests.map((d) => h('option', { value: d.name, text: d.name, selected: (editing ? v.destination : q.get('destination')) === d.name })),
  h('option', { value: '__new', text: '+ Add a new destination…' }));
  const attribute = h('input', { value: editing ? v.attribute : 'uid', required: true, disabled: editing });
  const once = h('input', { type: 'radio', name: 'kind', value: 'once', id: 'kind-once', checked: !periodic, disabled: editing });
  const per = h('input', { type: 'radio', name: 'kind', value: 'periodic', id: 'kind-periodic', checked: periodic, disabled: editing });
  const freq = h('select', {}, ['hourly', 'daily', 'weekly', 'monthly'].map((f) =>
    h('option', { value: f, text: f[0].toUpperCase() + f.slice(1), selected: (editing && v.schedule.every ? v.schedule.every : 'daily') === f })));
  const start = h('input', { type: 'datetime-local', value: editing ? localInput(v.start_ms) : '', disabled: startPassed });
  const end = h('input', { type: 'datetime-local', value: editing ? localInput(v.end_ms) : '' });
  const tz = h('input', { value: editing ? v.timezone : (Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'), disabled: editing });
  const notify = h('input', { type: 'text', value: editing ? v.notify.join(', ') : '', placeholder: 'ops@example.com, team@example.com' });
  const kindNote = h('span', { class: 'hint', id: 'kind-hint', text: editing
    ? 'A one-time sync never becomes periodic, nor a periodic one one-time: create a new sync instead.'
    : 'A one-time sync sends the whole segment once; a periodic one then sends only what changed.' });
  const periodicOnly = h('div', { class: 'stack-periodic' },
    field('Frequency', freq, null, 'frequency'),
    field('End (optional)', end, 'No runs after it; leave empty for no end.', 'end'));
  const syncKind = () => {
    periodicOnly.hidden = !per.checked;
  };
  once.addEventListener('change', syncKind);
  per.addEventListener('change', syncKind);
  syncKind();
  const formError = h('p', { class: 'error', role: 'alert', id: 'form-error' });
  const editWhy = editing ? refusal(v, 'edit') : (isViewer() ? VIEWER_REASON : null);
  const save = h('button', { class: 'primary', type: 'submit', disabled: !!editWhy, text: editing ? 'Save changes' : 'Create sync' });
  const form = h('form', {
    class: 'stack',
    onsubmit: async (ev) => {
      ev.preventDefault();
      for (const f of ['segment', 'destination', 'attribute', 'schedule', 'start', 'end', 'notify', 'timezone']) setError(f, '');
      formError.textContent = '';
      const emails = notify.value.split(',').map((x) => x.trim()).filter(Boolean);
      const startIso = start.value ? new Date(start.value).toISOString() : null;
      const endIso = end.value ? new Date(end.value).toISOString() : null;
      try {
        let saved;
        if (editing) {
          const body = { destination: destination.value, notify: emails };
          if (v.schedule !== 'once') {
            body.every = freq.value;
            if (endIso) body.end = endIso;
            else if (v.end_ms) body.no_end = true;
          }
          if (!startPassed && startIso && new Date(startIso).getTime() !== v.start_ms) body.start = startIso;
          saved = await api('PATCH', `/api/v1/syncs/${id}`, body);
          flash('Sync saved.');
        } else {
          const body = {
            segment: segment.value,
            destination: destination.value,
            attribute: attribute.value.trim(),
            schedule: per.checked ? { every: freq.value } : 'once',
            notify: emails,
            timezone: tz.value.trim() || null,
          };
          if (startIso) body.start = startIso;
          if (per.checked && endIso) body.end = endIso;
          saved = await api('POST', '/api/v1/syncs', body);
          flash(`Sync ${saved.id} created.`);
        }
        location.hash = `#/syncs/${saved.id}`;
      } catch (e) {
        const m = e.message;
        const target = /end date/i.test(m) ? 'end'
          : /start/i.test(m) ? 'start'
            : /periodic|one-time/i.test(m) ? 'schedule'
              : /destination/i.test(m) ? 'destination'
                : /segment/i.test(m) ? 'segment'
                  : /attribute/i.test(m) ? 'attribute'
                    : /email|notify/i.test(m) ? 'notify'
                      : /time ?zone/i.test(m) ? 'timezone' : null;
        if (target && document.getElementById(target + '-error')) setError(target, m);
        else formError.textContent = m;
      }
    },
  },
  editWhy ? h('p', { class: 'banner', text: `This sync cannot be edited now: ${editWhy}.` }) : null,
  field('Segment', segment, editing ? 'A sync keeps its segment.' : null, 'segment'),
  field('Destination', destination, null, 'destination'),
  field('Synced attribute', attribute, editing ? 'A sync keeps its attribute.' : 'The one user attribute sent as the identifier.', 'attribute'),
  h('fieldset', { 'aria-describedby': 'kind-hint' },
    h('legend', { text: 'Schedule' }),
    h('div', { class: 'row' }, once, h('label', { for: 'kind-once', text: 'One-time' }), per, h('label', { for: 'kind-periodic', text: 'Periodic' })),
    kindNote,
    h('span', { class: 'error', id: 'schedule-error', role: 'alert' }),
    field('Start', start, startPassed
      ? 'The start date has passed and can no longer be changed.'
      : 'Empty: now. Fixed once it has passed.', 'start'),
    periodicOnly,
    field('Timezone', tz, editing ? 'Set when the sync was created.' : 'Schedules run in this zone (IANA name).', 'timezone')),
  field('Notification emails', notify, 'Comma-separated; told when a run succeeds or fails and when the sync changes.', 'notify'),
  formError,
  h('div', { class: 'row' }, save, h('a', { href: editing ? `#/syncs/${id}` : '#/syncs', text: 'Cancel' })));
  render('syncs', h('p', {}, h('a', { href: editing ? `#/syncs/${id}` : '#/syncs', text: editing ? '← Sync' : '← Synced segments' })),
    h('h1', { text: editing ? `Edit sync ${id}` : 'New sync' }), form);
}

// ---------------------------------------------------------------- destinations

async function destinationList() {
  const dests = await api('GET', '/api/v1/destinations');
  render('destinations',
    h('h1', { text: 'Destinations' }),
    h('div', { class: 'toolbar' }, isViewer() ? null : h('a', { class: 'button primary', href: '#/destinations/new', text: 'Add destination' })),
    table(['Name', 'Format', 'URL', 'Page size', 'Rate limit', 'Resync all'].map((c) => h('th', { scope: 'col', text: c })),
      dests.map((d) => h('tr', {},
        h('td', {}, h('a', { href: `#/destinations/${encodeURIComponent(d.name)}`, text: d.name })),
        h('td', { text: d.format }),
        h('td', { class: 'wrap', text: d.url }),
        h('td', { class: 'num', text: num(d.page_size ?? 1000) }),
        h('td', { class: 'num', text: `${num(d.rpm ?? 25000)}/min` }),
        h('td', { text: d.allow_resync ? 'allowed' : 'no' }))),
      'No destinations yet.'));
}

// A list of [name, value] pairs with add and remove buttons.
function pairs(id, label, initial, onchange) {
  const rows = h('div', { class: 'pairs', id });
  const add = (k = '', v = '') => {
    const key = h('input', { 'aria-label': `${label} name`, value: k, oninput: onchange, placeholder: 'name' });
    const val = h('input', { 'aria-label': `${label} value`, value: v, oninput: onchange, placeholder: 'value' });
    const row = h('div', { class: 'row' }, key, val,
      h('button', { type: 'button', 'aria-label': `Remove ${label.toLowerCase()}`, text: 'Remove', onclick: () => { row.remove(); onchange(); } }));
    rows.append(row);
  };
  for (const [k, v] of initial || []) add(k, v);
  const box = h('fieldset', {}, h('legend', { text: label }), rows,
    h('div', {}, h('button', { type: 'button', text: `Add ${label.toLowerCase().replace(/s$/, '')}`, onclick: () => { add(); onchange(); } })));
  box.values = () => [...rows.children].map((r) => [r.children[0].value.trim(), r.children[1].value])
    .filter(([k]) => k);
  return box;
}

async function destinationForm(name, q) {
  const d = name ? await api('GET', `/api/v1/destinations/${encodeURIComponent(name)}`) : {};
  const editing = !!name;
  const readOnly = isViewer();
  let timer;
  const changed = () => {
    clearTimeout(timer);
    timer = setTimeout(preview, 250);
  };
  const input = (id, value, props = {}) => h('input', { id, value: value ?? '', oninput: changed, disabled: readOnly, ...props });
  const f = {
    name: input('d-name', d.name, { required: true, disabled: editing || readOnly }),
    url: input('d-url', d.url, { type: 'url', required: true, placeholder: 'https://api.example.com/segments' }),
    format: h('select', { id: 'd-format', onchange: () => { cohortBox.hidden = f.format.value !== 'cohortsync'; changed(); }, disabled: readOnly },
      h('option', { value: 'segment_sync', text: 'Segment sync (add_users / remove_users)', selected: d.format !== 'cohortsync' }),
      h('option', { value: 'cohortsync', text: 'Cohort Sync (another workspace)', selected: d.format === 'cohortsync' })),
    cohort_name: input('d-cohort-name', d.cohort_name),
    cohort_id: input('d-cohort-id', d.cohort_id),
    cohort_description: input('d-cohort-description', d.cohort_description),
    partner: input('d-partner', d.partner),
    max_body_bytes: input('d-max-body', d.max_body_bytes, { type: 'number', min: 1024, max: 131072 }),
    user: input('d-user', d.basic?.user, { autocomplete: 'off' }),
    password: input('d-password', d.basic?.password, { type: 'password', autocomplete: 'new-password' }),
    identifier_key: input('d-identifier-key', d.identifier_key, { placeholder: 'the attribute’s name' }),
    add_key: input('d-add-key', d.add_key, { placeholder: 'add_users' }),
    remove_key: input('d-remove-key', d.remove_key, { placeholder: 'remove_users' }),
    page_size: input('d-page-size', d.page_size, { type: 'number', min: 100, max: 10000, placeholder: '1000' }),
    rpm: input('d-rpm', d.rpm, { type: 'number', min: 1, max: 25000, placeholder: '25000' }),
    allow_resync: h('input', { id: 'd-allow-resync', type: 'checkbox', checked: d.allow_resync, onchange: changed, disabled: readOnly }),
    app: input('d-app', d.app),
    timeout_ms: input('d-timeout', d.timeout_ms, { type: 'number', min: 1, placeholder: '30000' }),
    retry_delay_ms: input('d-retry-delay', d.retry_delay_ms, { type: 'number', min: 0, placeholder: '3000' }),
    max_retries: input('d-retries', d.max_retries, { type: 'number', min: 0, placeholder: '3' }),
    in_flight: input('d-in-flight', d.in_flight, { type: 'number', min: 1, placeholder: '32' }),
    attribute: h('input', { id: 'd-sample-attribute', value: 'uid', oninput: changed }),
  };
  const headers = pairs('d-headers', 'Headers', d.headers, changed);
  const params = pairs('d-params', 'Query parameters', d.params, changed);
  const statics = pairs('d-static', 'Static key-values', d.static_kv, changed);
  const cohortBox = h('fieldset', { hidden: f.format.value !== 'cohortsync' },
    h('legend', { text: 'Cohort Sync' }),
    field('Cohort name', f.cohort_name, 'Default: "." and the segment’s name.'),
    field('Cohort id', f.cohort_id, 'Default: segsync-<sync id>.'),
    field('Description', f.cohort_description),
    field('Partner', f.partner, 'Default: moengage.'),
    field('Largest body (bytes)', f.max_body_bytes, 'Default and ceiling: 131072.'));
  const previewBox = h('pre', { id: 'preview', 'aria-live': 'polite', text: '…' });
  const previewError = h('p', { class: 'error', id: 'preview-error', role: 'alert' });
  const testBox = h('div', { id: 'test-result', 'aria-live': 'polite' });
  const formError = h('p', { class: 'error', role: 'alert', id: 'form-error' });
  const config = () => {
    const n = (x) => (x.value === '' ? null : Number(x.value));
    const t = (x) => (x.value.trim() === '' ? null : x.value.trim());
    const c = {
      name: f.name.value.trim() || 'preview',
      url: f.url.value.trim(),
      format: f.format.value,
      headers: headers.values(),
      params: params.values(),
      identifier_key: t(f.identifier_key),
      add_key: t(f.add_key),
      remove_key: t(f.remove_key),
      static_kv: statics.values(),
      page_size: n(f.page_size),
      rpm: n(f.rpm),
      allow_resync: f.allow_resync.checked,
      app: t(f.app),
      timeout_ms: n(f.timeout_ms),
      retry_delay_ms: n(f.retry_delay_ms),
      max_retries: n(f.max_retries),
      in_flight: n(f.in_flight),
    };
    if (f.user.value || f.password.value) c.basic = { user: f.user.value, password: f.password.value };
    if (c.format === 'cohortsync') {
      Object.assign(c, {
        cohort_name: t(f.cohort_name), cohort_id: t(f.cohort_id), cohort_description: t(f.cohort_description),
        partner: t(f.partner), max_body_bytes: n(f.max_body_bytes),
      });
    }
    return c;
  };
  const attr = () => encodeURIComponent(f.attribute.value.trim() || 'uid');
  async function preview() {
    if (!f.url.value.trim()) {
      previewError.textContent = '';
      previewBox.textContent = 'Type the URL to see the request.';
      return;
    }
    try {
      const p = await api('POST', `/api/v1/destination-preview?attribute=${attr()}`, config());
      previewError.textContent = '';
      previewBox.textContent = `${p.method} ${p.url}\n${p.headers.map(([k, v]) => `${k}: ${v}`).join('\n')}\n\n${JSON.stringify(p.body, null, 2)}`;
    } catch (e) {
      previewError.textContent = e.message;
    }
  }
  const test = async () => {
    testBox.replaceChildren(h('p', { class: 'muted', text: 'Sending one sample user…' }));
    try {
      const r = await api('POST', `/api/v1/destination-test?attribute=${attr()}`, config());
      testBox.replaceChildren(h('div', { class: r.ok ? 'panel ok' : 'panel bad' },
        h('p', {}, h('strong', { id: 'test-verdict', text: r.ok ? 'Connection works' : 'Connection failed' }), ` — ${r.message}`),
        facts([['Status', r.status === null ? 'no answer' : String(r.status)], ['Content type', r.content_type || '—']]),
        h('pre', { id: 'test-body', text: r.body || '(empty body)' })));
    } catch (e) {
      testBox.replaceChildren(h('div', { class: 'panel bad' }, h('strong', { id: 'test-verdict', text: 'Cannot test' }), ` — ${e.message}`));
    }
  };
  const form = h('form', {
    class: 'stack',
    onsubmit: async (ev) => {
      ev.preventDefault();
      formError.textContent = '';
      const c = config();
      c.name = f.name.value.trim();
      try {
        if (editing) await api('PUT', `/api/v1/destinations/${encodeURIComponent(name)}`, c);
        else await api('POST', '/api/v1/destinations', c);
        flash(`Destination ${c.name} saved.`);
        location.hash = q.get('then') === 'sync' ? `#/syncs/new?destination=${encodeURIComponent(c.name)}` : '#/destinations';
      } catch (e) {
        formError.textContent = e.message;
      }
    },
  },
  readOnly ? h('p', { class: 'banner', text: `Read only: ${VIEWER_REASON}.` }) : null,
  field('Name', f.name, editing ? 'A destination keeps its name.' : null),
  field('URL', f.url, 'http or https; query parameters may also go below.'),
  field('Format', f.format),
  cohortBox,
  headers,
  params,
  h('fieldset', {}, h('legend', { text: 'Basic auth (optional)' }), field('User', f.user), field('Password', f.password, editing ? 'Shown masked; leave it as is to keep it.' : null)),
  h('fieldset', {}, h('legend', { text: 'Keys in the body' }),
    field('Identifier key', f.identifier_key, 'Default: the synced attribute’s name.'),
    field('Added users key', f.add_key),
    field('Removed users key', f.remove_key)),
  statics,
  h('fieldset', {}, h('legend', { text: 'Delivery' }),
    field('Page size (users per request)', f.page_size, '100 to 10000; default 1000.'),
    field('Rate limit (requests per minute)', f.rpm, '1 to 25000; default 25000.'),
    h('div', { class: 'row check' }, f.allow_resync, h('label', { for: 'd-allow-resync', text: 'Allow resync of all users (the destination can drop and take the whole segment again)' })),
    field('Timeout (ms)', f.timeout_ms),
    field('Retry delay (ms)', f.retry_delay_ms),
    field('Retries', f.max_retries),
    field('Requests in flight', f.in_flight),
    field('Connected app (optional)', f.app)),
  formError,
  h('div', { class: 'row' },
    readOnly ? null : h('button', { class: 'primary', type: 'submit', text: editing ? 'Save destination' : 'Add destination' }),
    editing && !readOnly ? h('button', {
      type: 'button',
      class: 'danger',
      text: 'Delete',
      onclick: async () => {
        if (!(await confirmDialog('Delete this destination?', `${name} is removed; a sync that still uses it keeps it from being deleted.`, 'Delete'))) return;
        try {
          await api('DELETE', `/api/v1/destinations/${encodeURIComponent(name)}`);
          flash(`Destination ${name} deleted.`);
          location.hash = '#/destinations';
        } catch (e) {
          formError.textContent = e.message;
        }
      },
    }) : null,
    h('a', { href: '#/destinations', text: 'Cancel' })));
  render('destinations',
    h('p', {}, h('a', { href: '#/destinations', text: '← Destinations' })),
    h('h1', { text: editing ? `Destination ${name}` : 'Add destination' }),
    h('div', { class: 'grid2' },
      form,
      h('section', { class: 'side' },
        h('h2', { text: 'Request preview' }),
        field('Sample attribute', f.attribute, 'The preview and the test send users of this attribute.'),
        previewError,
        previewBox,
        h('h2', { text: 'Test connection' }),
        h('p', { class: 'muted', text: 'Sends one sample user as configured above (saved or not). It works when the answer is 2xx with application/json.' }),
        readOnly ? h('p', { class: 'why', text: VIEWER_REASON }) : h('button', { type: 'button', id: 'test-connection', onclick: test, text: 'Test connection' }),
        testBox)));
  preview();
}

// ---------------------------------------------------------------- segments

async function segmentList() {
  const segments = await api('GET', '/api/v1/segments');
  const name = h('input', { required: true, pattern: '[^/]+', placeholder: 'segment name' });
  const upload = uploadForm(() => name.value.trim(), (n) => { location.hash = `#/segments/${encodeURIComponent(n)}`; });
  render('segments',
    h('h1', { text: 'Segments' }),
    table(['Segment', 'Members', 'Snapshots', 'Last import', 'Source'].map((c, i) => h('th', { scope: 'col', class: i === 1 || i === 2 ? 'num' : null, text: c })),
      segments.map((sg) => {
        const last = sg.snapshots[sg.snapshots.length - 1];
        return h('tr', {},
          h('td', {}, h('a', { href: `#/segments/${encodeURIComponent(sg.name)}`, text: sg.name })),
          h('td', { class: 'num', text: num(last ? last.members : 0) }),
          h('td', { class: 'num', text: num(sg.snapshots.length) }),
          h('td', { text: when(last ? last.at_ms : null) }),
          h('td', { text: last ? last.source : '—' }));
      }), 'No segments yet.'),
    isViewer() ? null : [h('h2', { text: 'Import a segment' }), h('div', { class: 'stack' }, field('Segment name', name, 'A new name creates the segment; an existing one gets a new snapshot.', 'new-segment')), upload]);
}

// A file upload streamed to the snapshot endpoint (the body is the file).
function uploadForm(segmentName, done) {
  const file = h('input', { type: 'file', required: true, accept: '.txt,.csv,.ndjson,.json,.gz' });
  const idColumn = h('input', { placeholder: 'distinct_id' });
  const result = h('p', { role: 'status' });
  return h('form', {
    class: 'stack',
    onsubmit: async (ev) => {
      ev.preventDefault();
      const n = segmentName();
      const fl = file.files[0];
      if (!n || !fl) {
        result.className = 'error';
        result.textContent = 'Choose a segment name and a file.';
        return;
      }
      const qs = new URLSearchParams({ source: fl.name, size: String(fl.size) });
      if (idColumn.value.trim()) qs.set('id_column', idColumn.value.trim());
      result.className = 'muted';
      result.textContent = `Uploading ${fl.name} (${num(fl.size)} bytes)…`;
      try {
        const r = await api('POST', `/api/v1/segments/${encodeURIComponent(n)}/snapshots?${qs}`, fl);
        flash(`Snapshot ${r.snapshot} of ${n}: ${num(r.lines)} lines, ${num(r.users_new)} new users.`);
        done(n);
      } catch (e) {
        result.className = 'error';
        result.textContent = `Nothing was imported: ${e.message}`;
      }
    },
  },
  field('File (id list, CSV or NDJSON, gzip or not)', file, null, 'upload-file'),
  field('Id column (CSV/NDJSON)', idColumn, 'Default: distinct_id.', 'upload-id-column'),
  result,
  h('div', {}, h('button', { class: 'primary', type: 'submit', text: 'Import snapshot' })));
}

async function segmentDetail(name) {
  const sg = await api('GET', `/api/v1/segments/${encodeURIComponent(name)}`);
  const changes = new Map((sg.changes || []).map((c) => [c.seq, c]));
  const last = sg.snapshots[sg.snapshots.length - 1];
  render('segments',
    h('p', {}, h('a', { href: '#/segments', text: '← Segments' })),
    h('h1', { text: sg.name }),
    facts([
      ['Members', num(last ? last.members : 0)],
      ['Snapshots', num(sg.snapshots.length)],
      ['Created', when(sg.created_ms)],
      ['Syncs', h('a', { href: `#/syncs?q=${encodeURIComponent(sg.name)}`, text: 'syncs of this segment' })],
    ]),
    h('h2', { text: 'Snapshots' }),
    table(['Snapshot', 'Time', 'Source', 'Members', 'Added', 'Removed', 'New users'].map((c, i) => h('th', { scope: 'col', class: i >= 3 ? 'num' : null, text: c })),
      [...sg.snapshots].reverse().map((sn) => {
        const c = changes.get(sn.seq);
        return h('tr', { 'data-seq': sn.seq },
          h('td', { text: `${sn.seq}${sn.live ? ' (live)' : ''}` }),
          h('td', { text: when(sn.at_ms) }),
          h('td', { text: sn.source }),
          h('td', { class: 'num', text: num(sn.members) }),
          h('td', { class: 'num', text: c ? num(c.added) : '—' }),
          h('td', { class: 'num', text: c ? num(c.removed) : '—' }),
          h('td', { class: 'num', text: num(sn.new_users) }));
      }), 'No snapshots.'),
    isViewer() ? null : [h('h2', { text: 'Import a new snapshot' }), uploadForm(() => sg.name, () => route())]);
}

// ---------------------------------------------------------------- the rest

async function notifications() {
  const all = await api('GET', '/api/v1/notifications');
  render('notifications',
    h('h1', { text: 'Notifications' }),
    table(['Time', 'Sync', 'Kind', 'To', 'Subject', 'Delivery'].map((c) => h('th', { scope: 'col', text: c })),
      [...all].reverse().map((n) => {
        const delivery = typeof n.delivery === 'string' ? n.delivery.toLowerCase() : 'failed';
        return h('tr', {},
          h('td', { text: when(n.at_ms) }),
          h('td', {}, h('a', { href: `#/syncs/${n.sync_id}`, text: `#${n.sync_id}` })),
          h('td', { text: typeof n.kind === 'string' ? n.kind : JSON.stringify(n.kind) }),
          h('td', { class: 'wrap', text: n.to.join(', ') }),
          h('td', { class: 'wrap', text: n.subject }),
          h('td', {}, badge(delivery), delivery === 'failed' && n.delivery.failed ? h('span', { class: 'why', text: n.delivery.failed }) : null));
      }), 'No notifications yet.'));
}

async function workers() {
  const w = await api('GET', '/api/v1/workers');
  render('workers',
    h('h1', { text: 'Workers' }),
    h('p', { text: w.nats
      ? `Pages go to workers through NATS JetStream at ${w.nats} (a page held ${w.ack_wait_secs} s without a sign of life goes to another worker).`
      : 'serve runs without --nats: pages are sent from this process, there are no workers.' }),
    table(['Name', 'State', 'Host', 'In flight', 'Delivered', 'Failed or handed back', 'Seen', 'Last error'].map((c) => h('th', { scope: 'col', text: c })),
      w.workers.map((x) => h('tr', {},
        h('td', {}, x.metrics ? h('a', { href: x.metrics, text: x.name }) : x.name),
        h('td', {}, badge(x.draining ? 'draining' : x.state)),
        h('td', { text: `${x.host} (pid ${x.pid})` }),
        h('td', { class: 'num', text: String(x.in_flight) }),
        h('td', { class: 'num', text: String(x.delivered) }),
        h('td', { class: 'num', text: String(x.failed) }),
        h('td', { text: `${x.seen_secs_ago} s ago` }),
        h('td', { class: 'wrap', text: x.last_error || '—' }))),
      w.nats ? 'No worker has reported yet: start one with segsync worker --nats URL.' : 'No workers.'));
}

async function workspaces() {
  const [ws, cohorts] = await Promise.all([api('GET', '/api/v1/workspaces'), api('GET', '/api/v1/cohorts')]);
  const id = h('input', { required: true });
  const key = h('input', { type: 'password', required: true, autocomplete: 'off' });
  const uid = h('input', { value: 'uid' });
  const error = h('p', { class: 'error', role: 'alert' });
  const form = h('form', {
    class: 'stack',
    onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        await api('POST', '/api/v1/workspaces', { id: id.value.trim(), data_api_key: key.value, uid_attribute: uid.value.trim() || 'uid' });
        flash(`Workspace ${id.value.trim()} registered.`);
        route();
      } catch (e) {
        error.textContent = e.message;
      }
    },
  },
  field('Workspace id', id, null, 'ws-id'),
  field('Data API key', key, 'Kept in the store; never shown again.', 'ws-key'),
  field('Identifier attribute', uid, 'Received members are users with this attribute.', 'ws-uid'),
  error,
  h('div', {}, h('button', { class: 'primary', type: 'submit', text: 'Register workspace' })));
  render('workspaces',
    h('h1', { text: 'Workspaces' }),
    table(['Workspace', 'Identifier attribute', 'Anonymous id attribute', 'Registered'].map((c) => h('th', { scope: 'col', text: c })),
      ws.map((w) => h('tr', {}, h('td', { text: w.id }), h('td', { text: w.uid_attribute }), h('td', { text: w.anonymous_id_attribute }), h('td', { text: when(w.created_ms) }))),
      'No workspaces registered.'),
    h('h2', { text: 'Cohorts received from other workspaces' }),
    table(['Cohort', 'Workspace', 'Cohort id', 'Partner', 'Requests', 'Last change'].map((c, i) => h('th', { scope: 'col', class: i === 4 ? 'num' : null, text: c })),
      cohorts.map((c) => h('tr', {},
        h('td', {}, h('a', { href: `#/segments/${encodeURIComponent(c.name)}`, text: c.name })),
        h('td', { text: c.workspace }), h('td', { text: c.cohort_id }), h('td', { text: c.partner }),
        h('td', { class: 'num', text: num(c.requests) }), h('td', { text: when(c.updated_ms) }))),
      'No cohorts received yet.'),
    isViewer() ? null : [h('h2', { text: 'Register a workspace' }), form]);
}

window.addEventListener('hashchange', route);
route();
