// The bridged demo page: one user's stream read by bridge.js, with the demo's fault switches, so
// a person can watch the client step down the ladder and climb back. Plain ES module, no
// dependencies; everything from the network goes on the page as textContent, never as HTML.
//
// Query parameters (the browser tests use them; a person needs none):
//   user=alice            the user to read
//   appws=/app/ws         a same-origin path of an app's own socket for the top rung (the
//                         example app's frames); without it the top rung is bridged's /v1/ws
//   tokenTtl=20s          how long each demo token lives (5s to 1h), to watch refreshes
//   share=0               do not share one connection between tabs
//   rungs=longpoll,poll   limit the ladder
//   probeMinMs= probeMaxMs= longPollWaitMs= longPollMinMs= pollIntervalMs= failureWindowMs=
//                         the client's tuning (see bridge.d.ts)
import { connect } from './bridge.js';

const LOG_CAP = 60;
const params = new URLSearchParams(location.search);
const $ = (/** @type {string} */ id) => /** @type {any} */ (document.getElementById(id));

/** What the page saw, for people reading devtools and for the browser tests. */
const demo = (/** @type {any} */ (window).demo = { received: /** @type {string[]} */ ([]), resets: /** @type {any[]} */ ([]), states: /** @type {any[]} */ ([]), moves: /** @type {any[]} */ ([]), state: /** @type {any} */ (null) });

async function fetchJSON(/** @type {string} */ url, /** @type {RequestInit} */ init = {}) {
  const res = await fetch(url, { cache: 'no-store', ...init });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`HTTP ${res.status}${body?.error?.code ? ` ${body.error.code}` : ''}`);
  return body;
}

/** "320 ms", "4.1 s". */
const formatMs = (/** @type {number} */ ms) => (ms < 1000 ? `${Math.max(0, Math.round(ms))} ms` : `${(ms / 1000).toFixed(1)} s`);
const clock = () => new Date().toLocaleTimeString();
const RUNG_NAMES = { ws: 'WebSocket', sse: 'SSE', longpoll: 'long-poll', poll: 'poll' };
const REASONS = {
  start: 'started', connect_failed: 'could not connect', repeated_failures: 'failed repeatedly',
  silent: 'silent past two heartbeats', cut: 'long-polls cut early', probe_delivered: 'probe delivered',
};

// ---- the connection panel ----

function showState(/** @type {any} */ s) {
  demo.state = s;
  demo.states.push(s);
  for (const li of $('ladder').children) {
    const rung = li.dataset.rung;
    li.classList.toggle('active', s.rung === rung);
    li.classList.toggle('probing', s.probing === rung);
    li.querySelector('.rung-tag').textContent = s.rung === rung ? 'live' : s.probing === rung ? 'probing' : '';
  }
  $('st-rung').textContent = s.rung ? RUNG_NAMES[/** @type {keyof RUNG_NAMES} */ (s.rung)] : 'via another tab';
  $('st-reason').textContent = `${s.change ? `${s.change}: ` : ''}${REASONS[/** @type {keyof REASONS} */ (s.reason)] ?? s.reason}`;
  $('st-retries').textContent = String(s.retries ?? 0);
  $('st-last').textContent = s.lastId || 'none yet';
  $('st-wait').textContent = s.longPollWaitMs ? formatMs(s.longPollWaitMs) : '–';
  $('st-leader').textContent = s.leader ? 'holds the connection' : 'follows another tab';
  document.body.dataset.rung = s.rung ?? '';

  const last = demo.moves.at(-1);
  if (s.change && s.rung && (!last || last.since !== s.since)) {
    demo.moves.push({ since: s.since, change: s.change, rung: s.rung, reason: s.reason });
    const li = document.createElement('li');
    li.className = s.change;
    li.textContent = `${clock()} ${s.change === 'down' ? '↓' : '↑'} ${RUNG_NAMES[/** @type {keyof RUNG_NAMES} */ (s.rung)]}: ${REASONS[/** @type {keyof REASONS} */ (s.reason)] ?? s.reason}`;
    $('moves').prepend(li);
    while ($('moves').childElementCount > 12) $('moves').lastElementChild.remove();
  }
}

function showMessage(/** @type {any} */ m) {
  demo.received.push(m.id);
  $('count').textContent = String(demo.received.length);
  const d = m.data;
  const text = typeof d?.text === 'string' ? d.text : JSON.stringify(d);
  const sent = typeof d?.sentAt === 'number' ? d.sentAt : Date.parse(m.time);
  const latency = Date.now() - sent;
  const li = document.createElement('li');
  const body = li.appendChild(document.createElement('span'));
  body.className = 'text';
  body.textContent = text;
  const via = li.appendChild(document.createElement('span'));
  via.className = 'via';
  via.textContent = demo.state?.rung ? RUNG_NAMES[/** @type {keyof RUNG_NAMES} */ (demo.state.rung)] : 'relayed';
  const id = li.appendChild(document.createElement('code'));
  id.className = 'id';
  id.textContent = m.id;
  const lat = li.appendChild(document.createElement('span'));
  lat.className = latency >= 1000 ? 'latency slow' : 'latency';
  lat.textContent = Number.isFinite(latency) ? formatMs(latency) : '?';
  lat.title = 'from sentAt (or the message time) to now';
  $('log').prepend(li);
  while ($('log').childElementCount > LOG_CAP) $('log').lastElementChild.remove();
}

function showReset(/** @type {{from: string, to: string}} */ r) {
  demo.resets.push(r);
  $('reset-notice').textContent = `Reset at ${clock()}: messages after ${r.from || 'the start'} expired before this page read them; it goes on from ${r.to || 'the oldest kept'}.`;
  $('reset-notice').hidden = false;
}

// ---- the fault switches ----

async function setFaults(/** @type {Record<string, boolean>} */ change) {
  try {
    showFaults(await fetchJSON('/demo/faults', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(change) }));
  } catch (err) {
    $('page-error').textContent = `Could not change the faults: ${/** @type {Error} */ (err).message}`;
    $('page-error').hidden = false;
  }
}

function showFaults(/** @type {Record<string, boolean>} */ f) {
  for (const b of $('switches').querySelectorAll('button')) {
    const on = !!f[b.dataset.fault];
    b.setAttribute('aria-pressed', String(on));
    b.textContent = `${on ? 'Heal' : 'Break'} ${b.textContent.replace(/^(Heal|Break) /, '')}`;
  }
}

// ---- wiring ----

async function main() {
  /** @type {{users: string[], publishKey?: string}} */
  let info;
  try {
    info = await fetchJSON('/demo/info');
    showFaults(await fetchJSON('/demo/faults'));
  } catch (err) {
    $('page-error').textContent = `Could not load /demo/info (${/** @type {Error} */ (err).message}). Is bridged running in demo mode?`;
    $('page-error').hidden = false;
    return;
  }
  const users = info.users?.length ? info.users : ['alice'];
  const wanted = params.get('user');
  const user = wanted && /^[A-Za-z0-9._-]{1,64}$/.test(wanted) ? wanted : users.includes('alice') ? 'alice' : users[0];

  // user picker: a new user is a new page, so every tab of a user shares its connection
  const fieldset = $('users');
  for (const u of new Set([...users, user])) {
    const label = fieldset.appendChild(document.createElement('label'));
    const input = label.appendChild(document.createElement('input'));
    Object.assign(input, { type: 'radio', name: 'user', value: u, checked: u === user });
    label.append(u);
  }
  fieldset.addEventListener('change', (/** @type {any} */ e) => {
    params.set('user', e.target.value);
    location.search = params.toString();
  });

  $('switches').addEventListener('click', (/** @type {any} */ e) => {
    const b = e.target.closest('button');
    if (b) setFaults({ [b.dataset.fault]: b.getAttribute('aria-pressed') !== 'true' });
  });
  $('heal').addEventListener('click', () => setFaults({ ws: false, sse: false, longpoll: false, poll: false }));

  const ttl = params.get('tokenTtl');
  /** @type {any} */
  const options = {
    url: '',
    token: () => fetchJSON(`/demo/token?user=${encodeURIComponent(user)}${ttl ? `&ttl=${encodeURIComponent(ttl)}` : ''}`),
    onMessage: showMessage,
    onReset: showReset,
    onState: showState,
    share: params.get('share') === '0' ? false : `demo:${user}`,
  };
  for (const k of ['probeMinMs', 'probeMaxMs', 'longPollWaitMs', 'longPollMinMs', 'pollIntervalMs', 'failureWindowMs']) {
    const v = Number(params.get(k));
    if (v > 0) options[k] = v;
  }
  const rungs = params.get('rungs');
  if (rungs) options.rungs = rungs.split(',');
  const appws = params.get('appws');
  if (appws && appws.startsWith('/') && !appws.startsWith('//')) {
    // The example app's socket (examples/wsapp): its frames are {type, id, event, data}.
    options.websocket = {
      url: (/** @type {string} */ token) => `${appws}?token=${encodeURIComponent(token)}`,
      map: (/** @type {any} */ f) => (f.type === 'message' ? { id: f.id, event: f.event, data: f.data } : 'ping'),
    };
    $('ws-how').textContent = `${appws} (the app's)`;
  }
  demo.conn = connect(options);

  // publish by hand
  const key = info.publishKey;
  const body = (/** @type {string} */ text, extra = {}) => JSON.stringify({ user, event: 'notice', data: { text, ...extra } });
  const updateCurl = () => {
    $('curl').textContent = `curl -X POST ${location.origin}/v1/publish -H "Authorization: Bearer ${key ?? '$BRIDGE_PUBLISH_KEY'}" ` +
      `-d '${body($('publish-text').value || 'hello').replaceAll("'", `'\\''`)}'`;
    $('publish-user').textContent = user;
  };
  updateCurl();
  $('publish-text').addEventListener('input', updateCurl);
  $('copy').addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText($('curl').textContent);
      $('copy').textContent = 'Copied';
    } catch {
      getSelection()?.selectAllChildren($('curl'));
      $('copy').textContent = 'Press Ctrl+C';
    }
    setTimeout(() => { $('copy').textContent = 'Copy'; }, 1500);
  });
  const form = $('publish-form');
  if (!key) {
    form.querySelectorAll('input, button').forEach((/** @type {any} */ el) => { el.disabled = true; });
    $('publish-result').textContent = 'The operator set the publish key, so this page cannot publish; use curl.';
  }
  form.addEventListener('submit', async (/** @type {SubmitEvent} */ e) => {
    e.preventDefault();
    const text = $('publish-text').value.trim();
    if (!text || !key) return;
    try {
      const r = await fetchJSON('/v1/publish', {
        method: 'POST', headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' }, body: body(text, { sentAt: Date.now() }),
      });
      $('publish-result').textContent = `published as ${r.ids[0]}`;
    } catch (err) {
      $('publish-result').textContent = `failed: ${/** @type {Error} */ (err).message}`;
    }
  });
}

main();
