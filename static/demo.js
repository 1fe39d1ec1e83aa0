// The bridged demo page: one user's stream read three ways at once (SSE, long-poll, poll), each
// transport keeping its own cursor. Plain ES module, no dependencies. Everything that came from
// the network is put on the page with textContent, never as HTML.

const LOG_CAP = 50; // entries kept in each panel's log
const POLL_EVERY_MS = 3000; // plain poll interval
const LONG_POLL_WAIT = '25s'; // what long-poll asks bridged to wait for
const MAX_BACKOFF_MS = 30000;

/** @typedef {{id: string, event: string, data: any, time: string}} Message */
/** @typedef {{messages: Message[], cursor: string, reset: boolean, more: boolean}} PollAnswer */
/** @typedef {{users: string[], heartbeatMs: number, longPollMs: number, publishKey?: string}} Info */

/** An HTTP failure, with what bridged said and when to retry. */
class HTTPError extends Error {
  /** @param {Response} res @param {any} body */
  constructor(res, body) {
    super(`HTTP ${res.status}${body?.error?.code ? ` ${body.error.code}` : ''}`);
    this.status = res.status;
    this.detail = body?.error?.message ?? '';
    const ra = Number(res.headers.get('Retry-After'));
    this.retryAfterMs = ra > 0 ? ra * 1000 : 0;
  }
}

/**
 * fetch that returns the parsed JSON body or throws HTTPError.
 * @param {string} url @param {RequestInit} [init]
 */
async function fetchJSON(url, init = {}) {
  const res = await fetch(url, { cache: 'no-store', ...init });
  if (!res.ok) throw new HTTPError(res, await res.json().catch(() => null));
  return res.json();
}

/** Resolves after ms, or at once when signal aborts (callers check signal.aborted). */
function sleep(ms, /** @type {AbortSignal} */ signal) {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(undefined);
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done() { clearTimeout(t); signal.removeEventListener('abort', done); resolve(undefined); }
  });
}

/** Exponential backoff with jitter, 1 s doubling to 30 s; a server's Retry-After wins if longer. */
function backoff(/** @type {number} */ failures, retryAfterMs = 0) {
  const base = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** Math.min(failures - 1, 5));
  return Math.max(retryAfterMs, base / 2 + Math.random() * base / 2);
}

/** "320 ms", "4.1 s", "3 min". */
function formatMs(/** @type {number} */ ms) {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 60000)} min`;
}

/** Why an attempt failed, for the status line. */
function describe(/** @type {any} */ err) {
  if (err instanceof HTTPError) return err.detail ? `${err.message}: ${err.detail}` : err.message;
  if (err?.name === 'TimeoutError') return 'request timed out';
  return String(err?.message ?? err);
}

/**
 * One user's subscription: its token, and an AbortController that ends every transport.
 */
class Session {
  /** @param {string} user */
  constructor(user) {
    this.user = user;
    this.controller = new AbortController();
    this.signal = this.controller.signal;
    /** @type {Promise<string> | null} */ this.pending = null;
    /** @type {string | undefined} */ this.value = undefined;
  }

  /**
   * The current subscriber token. Pass the token that was just refused (a 401) to get a fresh
   * one; transports that hit the same 401 together share a single refresh.
   * @param {string} [stale]
   * @returns {Promise<string>}
   */
  token(stale) {
    if (!this.pending || (stale !== undefined && stale === this.value)) {
      this.value = undefined;
      this.pending = fetchJSON(`/demo/token?user=${encodeURIComponent(this.user)}`, { signal: this.signal })
        .then((t) => (this.value = t.token))
        .catch((err) => { this.pending = null; throw err; });
    }
    return this.pending;
  }

  stop() { this.controller.abort(); }
}

/** One column of the page: status, cursor, count, reset notice and a log, newest first. */
class Panel {
  /** @param {HTMLElement} parent @param {string} name @param {string} how */
  constructor(parent, name, how) {
    const tpl = /** @type {HTMLTemplateElement} */ (document.getElementById('panel-template'));
    const root = /** @type {HTMLElement} */ (tpl.content.firstElementChild.cloneNode(true));
    const q = (/** @type {string} */ sel) => /** @type {HTMLElement} */ (root.querySelector(sel));
    q('.panel-name').textContent = name;
    q('.panel-how').textContent = how;
    this.el = { status: q('.status'), detail: q('.status-detail'), cursor: q('.cursor'),
      count: q('.count'), reset: q('.reset-notice'), log: q('.log') };
    this.count = 0;
    parent.append(root);
  }

  /** Empties the panel for a new user. */
  clear() {
    this.count = 0;
    this.el.count.textContent = '0';
    this.el.cursor.textContent = 'none yet';
    this.el.reset.hidden = true;
    this.el.log.replaceChildren();
    this.setStatus('connecting');
  }

  /** @param {'connecting' | 'live' | 'retrying'} status @param {string} [detail] */
  setStatus(status, detail = '') {
    this.el.status.dataset.status = status;
    this.el.status.textContent = status;
    this.el.detail.textContent = detail;
    this.el.detail.hidden = !detail;
  }

  setCursor(/** @type {string} */ cursor) {
    if (cursor) this.el.cursor.textContent = cursor;
  }

  /** Adds a message to the top of the log. @param {Message} m */
  add(m) {
    this.el.count.textContent = String(++this.count);
    const d = m.data;
    const text = typeof d?.text === 'string' ? d.text : JSON.stringify(d);
    const sent = typeof d?.sentAt === 'number' ? d.sentAt : Date.parse(m.time);
    const latency = Date.now() - sent;

    const li = document.createElement('li');
    const body = li.appendChild(document.createElement('span'));
    body.className = 'text';
    body.textContent = text;
    if (m.event !== 'notice') {
      const ev = body.insertBefore(document.createElement('span'), body.firstChild);
      ev.className = 'event';
      ev.textContent = m.event;
    }
    const id = li.appendChild(document.createElement('code'));
    id.className = 'id';
    id.textContent = m.id;
    const lat = li.appendChild(document.createElement('span'));
    lat.className = latency >= 1000 ? 'latency slow' : 'latency';
    lat.textContent = Number.isFinite(latency) ? formatMs(latency) : '?';
    lat.title = 'from sentAt (or the message time) to now';
    this.prepend(li);
  }

  /** Shows that messages were lost: the transport goes on from the oldest message still kept. */
  reset() {
    const at = new Date().toLocaleTimeString();
    this.el.reset.textContent = `Reset at ${at}: messages after this transport's cursor are gone ` +
      '(expired, evicted, or the stream was lost); it went on from the oldest message still kept.';
    this.el.reset.hidden = false;
    const li = document.createElement('li');
    li.className = 'reset';
    li.textContent = `reset at ${at}: messages were lost here`;
    this.prepend(li);
  }

  prepend(/** @type {HTMLElement} */ li) {
    this.el.log.prepend(li);
    while (this.el.log.childElementCount > LOG_CAP) this.el.log.lastElementChild?.remove();
  }
}

/**
 * GET /v1/poll with the session's token, refreshing the token once on a 401.
 * @param {Session} session @param {URLSearchParams} query @param {AbortSignal} signal
 * @returns {Promise<PollAnswer>}
 */
async function poll(session, query, signal) {
  for (let attempt = 0; ; attempt++) {
    const token = await session.token();
    try {
      return await fetchJSON(`/v1/poll?${query}`, { headers: { Authorization: `Bearer ${token}` }, signal });
    } catch (err) {
      if (!(err instanceof HTTPError && err.status === 401) || attempt > 0) throw err;
      await session.token(token); // expired or refused: fetch a fresh one and ask again
    }
  }
}

/**
 * Long-poll (wait set) or plain poll loop. Keeps its cursor across failures and retries with
 * backoff, so nothing is lost or repeated.
 * @param {Session} session @param {Panel} panel @param {string} [wait]
 */
async function pollLoop(session, panel, wait) {
  const { signal } = session;
  let cursor = '';
  let failures = 0;
  while (!signal.aborted) {
    const query = new URLSearchParams({ cursor });
    if (wait) query.set('wait', wait);
    try {
      // a long-poll answers within its wait; anything much later is a dead connection
      const timeout = AbortSignal.timeout(wait ? 35000 : 10000);
      const b = await poll(session, query, AbortSignal.any([signal, timeout]));
      if (signal.aborted) return;
      failures = 0;
      panel.setStatus('live');
      if (b.reset) panel.reset();
      for (const m of b.messages) panel.add(m);
      cursor = b.cursor;
      panel.setCursor(cursor);
      if (b.more) continue; // more are waiting: ask again at once
      if (!wait) await sleep(POLL_EVERY_MS, signal);
    } catch (err) {
      if (signal.aborted) return;
      const delay = backoff(++failures, /** @type {any} */ (err).retryAfterMs);
      panel.setStatus('retrying', `${describe(err)}; next try in ${formatMs(delay)}`);
      await sleep(delay, signal);
    }
  }
}

/**
 * SSE via EventSource. The browser reconnects by itself with Last-Event-ID after a network
 * error; when it gives up (any non-200 answer, such as 401 or 503) or bridged sends
 * "event: close", this opens a new EventSource with a fresh token and cursor=<last id>.
 * @param {Session} session @param {Panel} panel
 */
function sseLoop(session, panel) {
  const { signal } = session;
  /** @type {EventSource | null} */ let es = null;
  let lastId = '';
  let failures = 0;
  let timer = 0;

  /** @param {string} why @param {string} [staleToken] */
  const retry = (why, staleToken) => {
    es?.close();
    es = null;
    const delay = backoff(++failures);
    panel.setStatus('retrying', `${why}; reopening in ${formatMs(delay)}`);
    timer = setTimeout(() => open(staleToken), delay);
  };

  /** @param {string} [staleToken] */
  const open = async (staleToken) => {
    let token;
    try {
      token = await session.token(staleToken);
    } catch (err) {
      if (!signal.aborted) retry(`token: ${describe(err)}`);
      return;
    }
    if (signal.aborted) return;
    const query = new URLSearchParams({ token });
    if (lastId) query.set('cursor', lastId);
    const src = (es = new EventSource(`/v1/sse?${query}`));
    /** @param {MessageEvent} ev */
    const onMessage = (ev) => {
      lastId = ev.lastEventId;
      panel.add(JSON.parse(ev.data));
      panel.setCursor(lastId);
    };
    // EventSource dispatches by event name and has no wildcard: listen for the demo's "notice"
    // and for "message", the event bridged assigns when a publish names none.
    src.addEventListener('notice', onMessage);
    src.addEventListener('message', onMessage);
    src.addEventListener('hello', (ev) => {
      failures = 0;
      panel.setStatus('live');
      panel.setCursor(JSON.parse(ev.data).cursor);
    });
    src.addEventListener('reset', (ev) => {
      lastId = ev.lastEventId; // bridged moved the stream's Last-Event-ID past the loss
      panel.reset();
      panel.setCursor(lastId);
    });
    src.addEventListener('close', (ev) => {
      const { reason } = JSON.parse(ev.data);
      retry(`closed by bridged (${reason})`, reason === 'token_expired' ? token : undefined);
    });
    src.addEventListener('error', () => {
      if (src !== es) return;
      if (src.readyState === EventSource.CONNECTING) {
        panel.setStatus('retrying', 'connection lost; the browser reconnects with Last-Event-ID');
      } else {
        // CLOSED: refused (EventSource hides the status; 401 is the likely one), so new token
        retry('stream refused', token);
      }
    });
  };

  signal.addEventListener('abort', () => { clearTimeout(timer); es?.close(); es = null; }, { once: true });
  panel.setStatus('connecting');
  open();
}

// ---- page wiring ----

const $ = (/** @type {string} */ id) => /** @type {any} */ (document.getElementById(id));

/** Quotes s for a POSIX shell. */
const shellQuote = (/** @type {string} */ s) => `'${s.replaceAll("'", `'\\''`)}'`;

/** The publish request for user and text, as a JSON string. */
const publishBody = (/** @type {string} */ user, /** @type {string} */ text, extra = {}) =>
  JSON.stringify({ user, event: 'notice', data: { text, ...extra } });

async function main() {
  const panelsEl = $('panels');
  const panels = {
    sse: new Panel(panelsEl, 'SSE', 'EventSource on GET /v1/sse; resumes with Last-Event-ID.'),
    longPoll: new Panel(panelsEl, 'Long-poll', `GET /v1/poll?wait=${LONG_POLL_WAIT}, in a loop.`),
    poll: new Panel(panelsEl, 'Poll', `GET /v1/poll every ${POLL_EVERY_MS / 1000} s.`),
  };

  /** @type {Info} */
  let info;
  try {
    info = await fetchJSON('/demo/info');
  } catch (err) {
    $('page-error').textContent = `Could not load /demo/info (${describe(err)}). Is bridged running in demo mode?`;
    $('page-error').hidden = false;
    return;
  }
  const key = info.publishKey;
  const users = info.users?.length ? info.users : ['alice'];

  /** @type {Session | null} */ let session = null;
  let user = users.includes('alice') ? 'alice' : users[0];

  const updateCurl = () => {
    const text = $('publish-text').value || 'hello';
    $('curl').textContent = `curl -X POST ${location.origin}/v1/publish ` +
      `-H "Authorization: Bearer ${key ?? '$BRIDGE_PUBLISH_KEY'}" ` +
      `-d ${shellQuote(publishBody(user, text))}`;
    $('publish-user').textContent = user;
  };

  /** Tears down the current user's transports and starts all three for u. */
  const select = (/** @type {string} */ u) => {
    session?.stop();
    user = u;
    for (const p of Object.values(panels)) p.clear();
    session = new Session(u);
    sseLoop(session, panels.sse);
    pollLoop(session, panels.longPoll, LONG_POLL_WAIT);
    pollLoop(session, panels.poll);
    updateCurl();
  };

  // user picker
  const fieldset = $('users');
  for (const u of users) {
    const label = fieldset.appendChild(document.createElement('label'));
    const input = label.appendChild(document.createElement('input'));
    input.type = 'radio';
    input.name = 'user';
    input.value = u;
    input.checked = u === user;
    label.append(u);
  }
  fieldset.addEventListener('change', (/** @type {Event} */ e) => select(/** @type {HTMLInputElement} */ (e.target).value));

  // publish by hand
  $('copy').addEventListener('click', async () => {
    const text = $('curl').textContent;
    try {
      await navigator.clipboard.writeText(text);
      $('copy').textContent = 'Copied';
    } catch {
      getSelection()?.selectAllChildren($('curl')); // no clipboard access: select it instead
      $('copy').textContent = 'Press Ctrl+C';
    }
    setTimeout(() => { $('copy').textContent = 'Copy'; }, 1500);
  });
  $('publish-text').addEventListener('input', updateCurl);

  const form = $('publish-form');
  const result = $('publish-result');
  if (!key) {
    form.querySelectorAll('input, button').forEach((/** @type {HTMLInputElement} */ el) => { el.disabled = true; });
    result.textContent = 'The publish key was set by the operator, so this page cannot publish; use curl.';
  }
  form.addEventListener('submit', async (/** @type {SubmitEvent} */ e) => {
    e.preventDefault();
    const text = $('publish-text').value.trim();
    if (!text || !key) return;
    result.textContent = 'publishing…';
    try {
      const r = await fetchJSON('/v1/publish', {
        method: 'POST',
        headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
        body: publishBody(user, text, { sentAt: Date.now() }),
      });
      result.textContent = `published to ${user} as ${r.ids[0]}`;
    } catch (err) {
      const hint = err instanceof HTTPError && err.status === 401 ? ' (did bridged restart with a new key? reload the page)' : '';
      result.textContent = `failed: ${describe(err)}${hint}`;
    }
  });

  select(user);
}

main();
