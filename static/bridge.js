// bridge.js: the browser client of bridged. A dependency-free ES module.
//
//   import { connect } from '/static/bridge.js';
//   const conn = connect({
//     url: 'https://bridge.example.com',            // bridged's base URL; '' for the page's origin
//     token: async () => (await fetch('/api/bridge-token')).text(),   // or a string
//     websocket: { url: (token) => `wss://app.example.com/ws?token=${token}`, map: (f) => f },  // optional
//     onMessage(m) { … },   // {id, event, data, time}: every message exactly once, in order
//     onReset(r) { … },     // messages were lost (expired before this client read them): refetch state
//     onState(s) { … },     // {rung, retries, lastId, reason, …}
//   });
//   conn.close();
//
// The ladder, top first: WebSocket (the app's own socket when `websocket` is given, else
// bridged's /v1/ws) -> SSE (/v1/sse) -> long-poll (/v1/poll?wait=) -> poll (/v1/poll). The
// client steps down one rung when the one it is on cannot connect, fails repeatedly, stays
// silent past twice its heartbeat (a proxy that buffers the stream), or, for long-poll, has its
// requests cut so early that a long-poll is no better than a poll. While below the top it probes
// the next higher rung in the background, with jittered backoff, and switches only once the probe
// has delivered something (a message or a heartbeat).
//
// One cursor spans every rung: ids are "<epoch base36>-<seq decimal>", and within an epoch the
// seqs of a user's stream are consecutive. A message is delivered only if it is the next one
// after the last delivered; an older one is a repeat and dropped; a later one (which only the
// app's socket can bring, since it does not resume) waits while the gap is fetched from bridged.
// So nothing is missed or repeated, whichever rungs the messages came by and however they
// interleave during a switch. A new epoch only ever follows a reset that bridged reported.
//
// Tabs of one origin share one connection: a leader, elected through Web Locks, runs the ladder
// and relays to the others over BroadcastChannel; when it closes, another tab takes over from its
// own last id. See bridge.d.ts for every option.

/** The rungs, top first. */
export const RUNGS = Object.freeze(['ws', 'sse', 'longpoll', 'poll']);

const DEFAULTS = Object.freeze({
  heartbeatMs: 15000, // assumed until a hello says otherwise (bridged's default BRIDGE_HEARTBEAT)
  pollIntervalMs: 3000,
  longPollWaitMs: 25000, // below common 30 s gateway timeouts
  longPollMinMs: 10000, // a long-poll cut shorter than this is not worth it: step down to poll
  failuresBeforeStepDown: 3,
  failureWindowMs: 60000,
  probeMinMs: 5000,
  probeMaxMs: 60000,
  reconnectMinMs: 500,
  reconnectMaxMs: 10000,
  requestTimeoutMs: 15000, // a plain poll, a ticket or a token request
});

// ---- cursors ----

/**
 * Parses an id "<epoch base36>-<seq decimal>". Returns null for anything else (and for '').
 * @param {string} id
 * @returns {{epoch: string, seq: bigint} | null}
 */
export function parseId(id) {
  if (typeof id !== 'string') return null;
  const m = /^([0-9a-z]{1,13})-([0-9]{1,20})$/.exec(id);
  return m ? { epoch: m[1], seq: BigInt(m[2]) } : null;
}

/**
 * How id stands to last, the last id delivered: 'next' (deliver it), 'dup' (already delivered),
 * 'gap' (messages between are missing) or 'foreign' (another epoch: after a reset, or a bad id).
 * @param {string} last @param {string} id
 * @returns {'next' | 'dup' | 'gap' | 'foreign'}
 */
export function relation(last, id) {
  const a = parseId(last);
  const b = parseId(id);
  if (!b) return 'foreign';
  if (!a) return 'gap'; // nothing delivered yet: only bridged can say what comes first
  if (a.epoch !== b.epoch) return 'foreign';
  if (b.seq <= a.seq) return 'dup';
  return b.seq === a.seq + 1n ? 'next' : 'gap';
}

/** The id just before id in its epoch ('' when id is the first). @param {string} id */
function predecessor(id) {
  const p = parseId(id);
  if (!p || p.seq === 0n) return '';
  return `${p.epoch}-${p.seq - 1n}`;
}

// ---- the ladder: a state machine with its I/O injected, so Node's test runner drives it ----

/**
 * @typedef {{
 *   hello(info?: {heartbeatMs?: number}): void,
 *   ping(): void,
 *   message(m: any, resumable: boolean): void,
 *   reset(cursor: string): void,
 *   answer(a: {messages: any[], cursor: string, reset: boolean, more?: boolean}): void,
 *   fail(info?: {reason?: string, tokenStale?: boolean, status?: number, network?: boolean, retryAfterMs?: number}): void,
 *   close(reason: string): void,
 * }} Handlers
 */

/**
 * Ladder keeps one cursor across the rungs and decides which rung to use. It does no I/O of its
 * own: env opens sessions (one connection, or one poll request), keeps time and talks to the
 * page. Every callback from a session that is no longer current is ignored.
 */
export class Ladder {
  /**
   * @param {any} options normalized options (see connect)
   * @param {{
   *   open(rung: string, params: {cursor: string, waitMs: number}, h: Handlers): {stop(): void},
   *   poll(cursor: string): Promise<{messages: any[], cursor: string, reset: boolean, more?: boolean}>,
   *   refreshToken(): Promise<unknown>,
   *   report(ev: {change: string, from: string, to: string, reason: string}): void,
   *   onMessage(m: any): void, onReset(r: {from: string, to: string}): void, onState(s: any): void,
   *   now(): number, setTimeout(fn: () => void, ms: number): any, clearTimeout(t: any): void, random(): number,
   * }} env
   */
  constructor(options, env) {
    this.o = { ...DEFAULTS, ...options };
    this.env = env;
    /** @type {string[]} */ this.rungs = this.o.rungs ?? [...RUNGS];
    this.last = this.o.cursor ?? '';
    this.heartbeatMs = this.o.heartbeatMs;
    this.running = false;
    /** @type {any} */ this.active = null;
    /** @type {any} */ this.probe = null;
    this.probeTimer = null;
    this.reopenTimer = null;
    /** @type {number[]} */ this.failures = [];
    this.retries = 0;
    this.reason = 'start';
    /** @type {'down' | 'up' | null} */ this.change = null;
    /** @type {Record<string, number>} */ this.probeBackoff = {};
    /** @type {Record<string, number>} */ this.promotedAt = {};
    this.lp = { waitMs: this.o.longPollWaitMs, ceilingMs: this.o.longPollWaitMs, okAtCeiling: 0 };
    /** @type {any[]} */ this.pending = [];
    this.filling = false;
    this.tokenRefreshed = false;
    this.since = env.now();
  }

  /** Starts on the top rung. */
  start() {
    if (this.running) return;
    this.running = true;
    this.active = this.openSession(0, 'active');
    this.emitState();
  }

  /** Stops every session and timer. Delivered messages stay delivered. */
  stop() {
    this.running = false;
    for (const s of [this.active, this.probe]) if (s) this.stopSession(s);
    this.active = this.probe = null;
    this.env.clearTimeout(this.probeTimer);
    this.env.clearTimeout(this.reopenTimer);
    this.emitState();
  }

  /** The state onState reports. */
  get state() {
    return {
      rung: this.active ? this.active.rung : null,
      probing: this.probe ? this.probe.rung : null,
      retries: this.retries,
      lastId: this.last,
      reason: this.reason,
      change: this.change,
      since: this.since,
      heartbeatMs: this.heartbeatMs,
      longPollWaitMs: this.lp.waitMs,
    };
  }

  emitState() { this.env.onState(this.state); }

  // -- sessions --

  /** @param {number} idx @param {'active' | 'probe'} role */
  openSession(idx, role) {
    const rung = this.rungs[idx];
    const sess = { idx, rung, role, delivered: false, startedAt: this.env.now(), silence: null, stopped: false,
      waitMs: rung === 'longpoll' ? (role === 'probe' ? Math.max(this.lp.waitMs, this.o.longPollMinMs) : this.lp.waitMs) : 0,
      handle: /** @type {any} */ (null) };
    const live = () => !sess.stopped && (sess === this.active || sess === this.probe);
    /** @type {Handlers} */
    const h = {
      hello: (info) => {
        if (!live()) return;
        if (info && info.heartbeatMs > 0) this.heartbeatMs = info.heartbeatMs;
        this.received(sess);
      },
      ping: () => { if (live()) this.received(sess); },
      message: (m, resumable) => {
        if (!live()) return;
        this.received(sess);
        this.accept(m, resumable);
      },
      reset: (cursor) => {
        if (!live()) return;
        this.received(sess);
        this.applyReset(cursor);
      },
      answer: (a) => {
        if (!live()) return;
        this.received(sess);
        this.applyAnswer(a);
        this.pollDone(sess, a);
      },
      fail: (info = {}) => { if (live()) this.failed(sess, info); },
      close: (reason) => { if (live()) this.serverClosed(sess, reason); },
    };
    if (rung === 'ws' || rung === 'sse') this.armSilence(sess);
    sess.handle = this.env.open(rung, { cursor: this.last, waitMs: sess.waitMs }, h);
    return sess;
  }

  stopSession(sess) {
    sess.stopped = true;
    this.env.clearTimeout(sess.silence);
    try { sess.handle?.stop(); } catch { /* already gone */ }
  }

  /** A streaming session that says nothing for twice the heartbeat is taken for dead or buffered. */
  armSilence(sess) {
    this.env.clearTimeout(sess.silence);
    let hb = this.heartbeatMs;
    if (sess.rung === 'ws' && this.o.appHeartbeatMs !== undefined) {
      hb = this.o.appHeartbeatMs;
      if (hb <= 0) { // the app's socket sends no keepalive: only its first frame is awaited
        if (sess.delivered) return;
        hb = this.heartbeatMs;
      }
    }
    sess.silence = this.env.setTimeout(() => {
      if (!sess.stopped) this.failed(sess, { reason: 'silent' });
    }, 2 * hb);
  }

  /** Anything a session delivers: it works. A probe that delivers takes over. */
  received(sess) {
    if (sess.rung === 'ws' || sess.rung === 'sse') this.armSilence(sess);
    const first = !sess.delivered;
    sess.delivered = true;
    this.tokenRefreshed = false;
    if (sess.role === 'probe') {
      this.promote(sess);
    } else if (first && this.retries > 0) {
      this.retries = 0;
      this.emitState();
    }
  }

  promote(sess) {
    const old = this.active;
    if (old) this.stopSession(old);
    this.env.clearTimeout(this.reopenTimer);
    sess.role = 'active';
    this.active = sess;
    this.probe = null;
    this.failures = [];
    this.retries = 0;
    this.promotedAt[sess.rung] = this.env.now();
    this.moved('up', old ? old.rung : sess.rung, sess.rung, 'probe_delivered');
    this.scheduleProbe();
  }

  /** @param {'up' | 'down'} change */
  moved(change, from, to, reason) {
    this.change = change;
    this.reason = reason;
    this.since = this.env.now();
    if (from !== to) this.env.report({ change, from, to, reason });
    this.emitState();
  }

  /** A session ended with an error (or went silent). */
  failed(sess, info) {
    this.stopSession(sess);
    if (sess === this.probe) {
      this.probe = null;
      const cur = this.probeBackoff[sess.rung] ?? this.o.probeMinMs;
      this.probeBackoff[sess.rung] = Math.min(this.o.probeMaxMs, cur * 2);
      this.scheduleProbe();
      this.emitState();
      return;
    }
    if (info.tokenStale && !this.tokenRefreshed) {
      this.tokenRefreshed = true; // once per failure streak: a token that stays refused is a failure
      this.env.refreshToken().then(() => this.reopen(0), () => this.reopen(this.backoff()));
      return;
    }
    const bottom = sess.idx === this.rungs.length - 1;
    const elapsed = this.env.now() - sess.startedAt;
    if (sess.rung === 'longpoll' && (info.network || info.status === 502 || info.status === 504) &&
        elapsed >= 500 && elapsed < sess.waitMs - 500) {
      // Cut by an intermediary: ask for less than it allows, or give long-poll up.
      const wait = Math.floor(elapsed * 0.8 / 100) * 100;
      if (wait < this.o.longPollMinMs && !bottom) return this.stepDown(sess, 'cut');
      this.lp = { waitMs: Math.max(wait, 100), ceilingMs: Math.max(wait, 100), okAtCeiling: 0 };
      return this.reopen(0);
    }
    if (bottom) return this.reopen(this.backoff());
    if (info.reason === 'silent') return this.stepDown(sess, 'silent');
    if (!sess.delivered) return this.stepDown(sess, 'connect_failed');
    const now = this.env.now();
    this.failures = this.failures.filter((t) => now - t < this.o.failureWindowMs);
    this.failures.push(now);
    if (this.failures.length >= this.o.failuresBeforeStepDown) return this.stepDown(sess, 'repeated_failures');
    this.reopen(this.backoff(info.retryAfterMs));
  }

  serverClosed(sess, reason) {
    if (sess === this.probe) return this.failed(sess, { reason: 'closed' });
    this.stopSession(sess);
    if (reason === 'token_expired') {
      this.env.refreshToken().then(() => this.reopen(0), () => this.reopen(this.backoff()));
    } else if (reason === 'shutdown') {
      this.reopen(Math.floor(this.env.random() * 1000)); // spread the reconnects of a draining node
    } else {
      this.failed(sess, { reason: 'closed' });
    }
  }

  /** Reconnects the active rung after ms. */
  reopen(ms) {
    if (!this.running || !this.active) return;
    const idx = this.active.idx;
    this.active.stopped = true;
    this.env.clearTimeout(this.reopenTimer);
    this.retries += ms > 0 ? 1 : 0;
    this.emitState();
    const delivered = this.active.delivered && (this.active.rung === 'longpoll' || this.active.rung === 'poll');
    const go = () => {
      if (!this.running || !this.active || this.active.idx !== idx) return;
      this.active = this.openSession(idx, 'active');
      this.active.delivered = delivered; // a stream proves itself per connection, a poll rung once
    };
    if (ms <= 0) go(); else this.reopenTimer = this.env.setTimeout(go, ms);
  }

  backoff(retryAfterMs = 0) {
    const base = Math.min(this.o.reconnectMaxMs, this.o.reconnectMinMs * 2 ** Math.min(this.retries, 10));
    return Math.max(retryAfterMs, base / 2 + this.env.random() * base / 2);
  }

  stepDown(sess, reason) {
    const to = sess.idx + 1;
    if (to >= this.rungs.length) return this.reopen(this.backoff());
    if (this.probe) { this.stopSession(this.probe); this.probe = null; }
    this.env.clearTimeout(this.reopenTimer);
    // A rung that failed soon after we climbed to it is probed less eagerly next time.
    const promoted = this.promotedAt[sess.rung];
    const recent = promoted !== undefined && this.env.now() - promoted < this.o.failureWindowMs;
    this.probeBackoff[sess.rung] = recent
      ? Math.min(this.o.probeMaxMs, (this.probeBackoff[sess.rung] ?? this.o.probeMinMs) * 2)
      : this.o.probeMinMs;
    this.failures = [];
    this.retries = 0;
    this.tokenRefreshed = false;
    if (reason === 'cut') this.lp = { waitMs: this.o.longPollMinMs, ceilingMs: this.o.longPollMinMs, okAtCeiling: 0 };
    this.active = this.openSession(to, 'active');
    this.moved('down', sess.rung, this.rungs[to], reason);
    this.scheduleProbe();
  }

  scheduleProbe() {
    this.env.clearTimeout(this.probeTimer);
    if (!this.running || !this.active || this.active.idx === 0) return;
    const target = this.active.idx - 1;
    const d = this.probeBackoff[this.rungs[target]] ?? this.o.probeMinMs;
    this.probeTimer = this.env.setTimeout(() => {
      if (!this.running || !this.active || this.active.idx !== target + 1 || this.probe) return;
      this.probe = this.openSession(target, 'probe');
      this.emitState();
    }, d / 2 + this.env.random() * d / 2);
  }

  /** A poll request answered: schedule the next one; long-poll tunes its wait. */
  pollDone(sess, a) {
    if (sess !== this.active) return;
    sess.stopped = true;
    this.tokenRefreshed = false;
    if (sess.rung === 'longpoll') {
      const idle = !a.reset && a.messages.length === 0;
      if (idle && this.env.now() - sess.startedAt >= sess.waitMs - 500) this.grewOK();
    }
    const ms = a.more || sess.rung === 'longpoll' ? 0 : this.o.pollIntervalMs;
    const idx = sess.idx;
    const next = () => {
      if (!this.running || this.active !== sess) return;
      this.active = this.openSession(idx, 'active');
      this.active.delivered = true; // a poll rung has worked once it answered once
    };
    if (ms === 0) next(); else this.reopenTimer = this.env.setTimeout(next, ms);
  }

  /** A long-poll lasted its whole wait: the path holds it. Grow back toward the configured wait. */
  grewOK() {
    const lp = this.lp;
    if (lp.waitMs >= this.o.longPollWaitMs) return;
    if (lp.waitMs < lp.ceilingMs) {
      lp.waitMs = Math.min(lp.ceilingMs, lp.waitMs * 2);
    } else if (++lp.okAtCeiling >= 2) {
      // Held twice at the ceiling: try higher, in case what cut us has gone.
      lp.ceilingMs = Math.min(this.o.longPollWaitMs, lp.ceilingMs * 2);
      lp.waitMs = lp.ceilingMs;
      lp.okAtCeiling = 0;
    }
    this.emitState();
  }

  // -- the one cursor --

  /**
   * Delivers m if it is the next message; drops a repeat; holds a later one while the gap is
   * fetched. resumable: the source resumed from our cursor (bridged's rungs), so it cannot skip
   * without saying reset; the app's socket and other tabs are not.
   */
  accept(m, resumable) {
    if (!m || typeof m.id !== 'string') return;
    const rel = relation(this.last, m.id);
    if (rel === 'next' || (this.last === '' && resumable)) {
      this.deliver(m);
      this.drainPending();
    } else if (rel !== 'dup') {
      if (!this.pending.some((p) => p.id === m.id)) this.pending.push(m);
      this.fill();
    }
  }

  deliver(m) {
    this.last = m.id;
    this.env.onMessage(m);
    this.emitState();
  }

  drainPending() {
    let progress = true;
    while (progress && this.pending.length) {
      progress = false;
      this.pending = this.pending.filter((p) => {
        const rel = relation(this.last, p.id);
        if (rel === 'dup') return false;
        if (rel === 'next') { this.deliver(p); progress = true; return false; }
        return true;
      });
    }
  }

  /** Fetches what lies between the last delivered message and the ones held back. */
  async fill() {
    if (this.filling) return;
    this.filling = true;
    try {
      for (let rounds = 0; this.pending.length && rounds < 50; rounds++) {
        const a = await this.env.poll(this.last);
        this.applyAnswer(a);
        if (!a.more) break;
      }
      if (this.pending.length) {
        // bridged has nothing between: those messages are gone (or never were). Say so.
        const seq = (m) => parseId(m.id)?.seq ?? 0n;
        this.pending.sort((x, y) => (seq(x) < seq(y) ? -1 : seq(x) > seq(y) ? 1 : 0));
        this.lost(predecessor(this.pending[0].id));
        this.drainPending();
      }
      this.filling = false;
    } catch {
      this.filling = false;
      if (this.pending.length) this.env.setTimeout(() => this.fill(), this.backoff());
    }
  }

  /** A poll answer from bridged: a reset first, then its messages, all resumable. */
  applyAnswer(a) {
    if (a.reset) {
      const start = a.messages.length ? predecessor(a.messages[0].id) : a.cursor;
      this.applyReset(start);
    }
    for (const m of a.messages) this.accept(m, true);
  }

  /** bridged says messages after a cursor are gone and the stream goes on from start. */
  applyReset(start) {
    if (this.last === '') { this.last = start; return; }
    const a = parseId(this.last);
    const b = parseId(start);
    if (a && b && a.epoch === b.epoch && b.seq <= a.seq) return; // we already have everything up to start
    this.lost(start);
  }

  lost(start) {
    const from = this.last;
    this.last = start;
    this.env.onReset({ from, to: start });
    this.emitState();
  }
}

// ---- tokens and tickets ----

/** Reads exp (seconds) from a JWT without verifying it; the token is the user's own. */
function jwtClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return null;
  }
}

/** Holds the subscriber token; fetches a fresh one on demand and ahead of its expiry. */
class Tokens {
  constructor(source) {
    this.source = source;
    this.value = typeof source === 'string' ? source : '';
    this.expires = 0;
    this.pending = null;
    this.timer = 0;
    this.fetches = 0;
    if (this.value) this.learn(this.value, undefined);
  }

  learn(token, expires) {
    this.value = token;
    const exp = expires ? Date.parse(expires) : (jwtClaims(token)?.exp ?? 0) * 1000;
    this.expires = Number.isFinite(exp) ? exp : 0;
    clearTimeout(this.timer);
    if (this.expires && typeof this.source === 'function') {
      // Fetch the next token at 80% of this one's life, so new connections never carry a dead one.
      const left = this.expires - Date.now();
      this.timer = setTimeout(() => this.refresh().catch(() => {}), Math.max(1000, left * 0.8));
    }
  }

  /** The current token, fetching one if there is none or it has expired. */
  async get() {
    if (this.value && (!this.expires || this.expires > Date.now() + 1000)) return this.value;
    return this.refresh();
  }

  /** A fresh token; concurrent callers share one fetch. */
  refresh() {
    if (typeof this.source !== 'function') return Promise.resolve(this.value);
    if (!this.pending) {
      this.fetches++;
      this.pending = Promise.resolve(this.source()).then((t) => {
        const token = typeof t === 'string' ? t : t?.token;
        if (!token) throw new Error('bridge.js: the token function returned no token');
        this.learn(token, typeof t === 'object' ? t.expires : undefined);
        return token;
      }).finally(() => { this.pending = null; });
    }
    return this.pending;
  }

  sub() { return jwtClaims(this.value)?.sub ?? ''; }

  stop() { clearTimeout(this.timer); }
}

/** An HTTP answer that is not 2xx. */
class HTTPError extends Error {
  constructor(status, retryAfterMs) {
    super(`HTTP ${status}`);
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }
}

function retryAfter(res) {
  const s = Number(res.headers.get('Retry-After'));
  return s > 0 ? s * 1000 : 0;
}

// ---- the browser's transports ----

/**
 * The env a Ladder needs, on the browser's fetch, EventSource and WebSocket.
 * @param {any} o normalized options
 * @param {Tokens} tokens
 */
function browserEnv(o, tokens, page) {
  const base = o.url.replace(/\/+$/, '');
  let tickets = o.tickets !== false; // until POST /v1/ticket answers 404
  let reporting = o.reportEvents !== false;

  const authFetch = async (path, init = {}, timeoutMs = o.requestTimeoutMs, signal = undefined) => {
    for (let attempt = 0; ; attempt++) {
      const token = await tokens.get();
      const signals = [AbortSignal.timeout(timeoutMs)];
      if (signal) signals.push(signal);
      const res = await fetch(base + path, {
        ...init, cache: 'no-store', signal: AbortSignal.any(signals),
        headers: { ...(init.headers ?? {}), Authorization: `Bearer ${token}` },
      });
      if (res.status === 401 && attempt === 0 && typeof o.token === 'function') {
        await tokens.refresh();
        continue;
      }
      return res;
    }
  };

  /** Query parameters that prove who we are on a URL: a ticket when bridged has them, else the token. */
  const credential = async () => {
    if (tickets) {
      const res = await authFetch('/v1/ticket', { method: 'POST' });
      if (res.ok) return { ticket: (await res.json()).ticket };
      if (res.status === 404 || res.status === 405) tickets = false;
      else throw new HTTPError(res.status, retryAfter(res));
    }
    return { token: await tokens.get() };
  };

  const poll = async (cursor, waitMs = 0, signal = undefined) => {
    const q = new URLSearchParams({ cursor });
    if (waitMs > 0) q.set('wait', `${waitMs}ms`);
    const res = await authFetch(`/v1/poll?${q}`, {}, waitMs + o.requestTimeoutMs, signal);
    if (!res.ok) throw new HTTPError(res.status, retryAfter(res));
    return res.json();
  };

  /** @param {string} rung @param {{cursor: string, waitMs: number}} p @param {Handlers} h */
  const open = (rung, p, h) => {
    const ctl = new AbortController();
    let stopped = false;
    /** @type {EventSource | WebSocket | null} */ let conn = null;
    const handle = { stop() { stopped = true; ctl.abort(); conn?.close(); } };
    const failWith = (err) => {
      if (stopped) return;
      if (err instanceof HTTPError) h.fail({ status: err.status, tokenStale: err.status === 401, retryAfterMs: err.retryAfterMs });
      else h.fail({ network: true });
    };

    if (rung === 'poll' || rung === 'longpoll') {
      poll(p.cursor, rung === 'longpoll' ? p.waitMs : 0, ctl.signal).then((a) => { if (!stopped) h.answer(a); }, failWith);
    } else if (rung === 'sse') {
      credential().then((cred) => {
        if (stopped) return;
        const q = new URLSearchParams({ plain: '1', ...cred });
        if (p.cursor) q.set('cursor', p.cursor);
        const es = new EventSource(`${base}/v1/sse?${q}`);
        conn = es;
        const json = (/** @type {MessageEvent} */ ev) => JSON.parse(ev.data);
        es.addEventListener('hello', (ev) => h.hello({ heartbeatMs: json(ev).heartbeat }));
        es.addEventListener('ping', () => h.ping());
        es.addEventListener('reset', (ev) => h.reset(json(ev).cursor));
        es.addEventListener('message', (ev) => h.message(json(ev), true));
        es.addEventListener('close', (ev) => { es.close(); h.close(json(ev).reason); });
        es.addEventListener('error', () => { es.close(); if (!stopped) h.fail({ network: true }); });
      }, failWith);
    } else if (rung === 'ws' && o.websocket) {
      // The app's own socket: live frames only, mapped to messages by the app's function.
      Promise.resolve(tokens.get()).then(async (token) => {
        const u = typeof o.websocket.url === 'function' ? await o.websocket.url(token) : o.websocket.url;
        if (stopped) return;
        const ws = new WebSocket(new URL(u, location.href).href.replace(/^http/, 'ws'));
        conn = ws;
        let first = true;
        ws.onmessage = (ev) => {
          let f;
          try { f = o.websocket.map(JSON.parse(ev.data)); } catch { return; }
          if (first) { first = false; h.hello(); }
          if (f && typeof f === 'object' && typeof f.id === 'string') h.message(f, false);
          else if (f === 'ping') h.ping();
        };
        ws.onclose = (ev) => wsClosed(ev, h, () => stopped);
      }, failWith);
    } else if (rung === 'ws') {
      credential().then((cred) => {
        if (stopped) return;
        const q = new URLSearchParams(cred);
        if (p.cursor) q.set('cursor', p.cursor);
        const ws = new WebSocket(`${new URL(base || '/', location.href).href.replace(/^http/, 'ws').replace(/\/+$/, '')}/v1/ws?${q}`);
        conn = ws;
        let closed = false;
        ws.onmessage = (ev) => {
          let f;
          try { f = JSON.parse(ev.data); } catch { return; }
          switch (f.type) {
            case 'hello': h.hello({ heartbeatMs: f.heartbeat }); break;
            case 'ping': h.ping(); break;
            case 'reset': h.reset(f.cursor); break;
            case 'message': { const { type, ...m } = f; h.message(m, true); break; }
            case 'close': closed = true; h.close(f.reason); break;
          }
        };
        ws.onclose = (ev) => { if (!closed) wsClosed(ev, h, () => stopped); };
      }, failWith);
    }
    return handle;
  };

  const report = (ev) => {
    if (!reporting) return;
    authFetch('/v1/client-events', {
      method: 'POST', keepalive: true, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(ev),
    }).then((res) => { if (res.status === 404) reporting = false; }, () => {});
  };

  return {
    open,
    poll: (cursor) => poll(cursor),
    refreshToken: () => tokens.refresh(),
    report,
    onMessage: page.message,
    onReset: page.reset,
    onState: page.state,
    now: () => Date.now(),
    setTimeout: (fn, ms) => setTimeout(fn, ms),
    clearTimeout: (t) => clearTimeout(t),
    random: Math.random,
  };
}

/** A WebSocket's close code says what to do (see README: 1001, 4001, 1011, 4008). */
function wsClosed(ev, h, stopped) {
  if (stopped()) return;
  if (ev.code === 4001) h.close('token_expired');
  else if (ev.code === 1001) h.close('shutdown');
  else if (ev.code === 1011) h.close('unavailable');
  else h.fail({ network: true, retryAfterMs: ev.code === 4008 ? 5000 : 0 });
}

// ---- connect, and sharing one connection between the tabs of an origin ----

/**
 * Connects to bridged. See the module comment and bridge.d.ts.
 * @param {import('./bridge').ConnectOptions} options
 * @returns {import('./bridge').Connection}
 */
export function connect(options) {
  if (!options || !options.token) throw new TypeError('bridge.js: connect needs a token (a string or a function)');
  const o = { ...DEFAULTS, url: '', ...options };
  if (!o.rungs) o.rungs = o.websocket === false ? RUNGS.slice(1) : [...RUNGS];
  if (o.rungs.some((r) => !RUNGS.includes(r)) || !o.rungs.length) throw new TypeError('bridge.js: rungs must be a non-empty subset of ws, sse, longpoll, poll, top first');
  o.rungs = RUNGS.filter((r) => o.rungs.includes(r));
  if (o.websocket) {
    if (typeof o.websocket.map !== 'function') o.websocket = { ...o.websocket, map: (f) => f };
    o.appHeartbeatMs = o.websocket.heartbeatMs;
  }
  if (o.rungs.includes('ws') && typeof WebSocket === 'undefined') o.rungs = o.rungs.filter((r) => r !== 'ws');
  if (o.rungs.includes('sse') && typeof EventSource === 'undefined') o.rungs = o.rungs.filter((r) => r !== 'sse');

  const tokens = new Tokens(o.token);
  let leader = true;
  let closed = false;
  let lastState = {};
  /** @type {BroadcastChannel | null} */ let channel = null;
  const page = {
    message: (m) => {
      if (leader) channel?.postMessage({ type: 'message', m });
      o.onMessage?.(m);
    },
    reset: (r) => {
      if (leader) channel?.postMessage({ type: 'reset', to: r.to });
      o.onReset?.(r);
    },
    state: (s) => {
      lastState = { ...s, leader, tokenFetches: tokens.fetches };
      if (leader) channel?.postMessage({ type: 'state', s: lastState });
      o.onState?.(lastState);
    },
  };
  const env = browserEnv(o, tokens, page);
  const ladder = new Ladder(o, env);

  const canShare = o.share !== false && typeof navigator !== 'undefined' && navigator.locks && typeof BroadcastChannel !== 'undefined';
  /** @type {() => void} */ let release = () => {};
  if (!canShare) {
    ladder.start();
  } else {
    // A follower until the lock is ours: the leader's messages arrive over the channel, and the
    // ladder only keeps the cursor (and fetches a gap, if this tab joined late).
    leader = false;
    tokens.get().then(() => {
      if (closed) return;
      const key = `bridged:${o.url || location.origin}:${typeof o.share === 'string' ? o.share : tokens.sub()}`;
      channel = new BroadcastChannel(key);
      channel.onmessage = (ev) => {
        const d = ev.data;
        if (leader && d?.type === 'hello') { channel?.postMessage({ type: 'state', s: lastState }); return; }
        if (leader || closed) return;
        if (d?.type === 'message') ladder.accept(d.m, false);
        else if (d?.type === 'reset') ladder.applyReset(d.to);
        else if (d?.type === 'state') {
          lastState = { ...d.s, lastId: ladder.last, leader: false, tokenFetches: tokens.fetches };
          o.onState?.(lastState);
        }
      };
      page.state({ ...ladder.state, rung: null });
      channel.postMessage({ type: 'hello' }); // the leader answers with its state
      const held = new Promise((resolve) => { release = resolve; });
      navigator.locks.request(key, () => {
        if (closed) return undefined;
        leader = true;
        ladder.start(); // from this tab's own last id: nothing lost, nothing repeated
        return held; // the lock is ours until close(), or until the tab goes away
      }).catch(() => {});
    }, () => { if (!closed) { leader = true; ladder.start(); } });
  }

  return {
    close() {
      if (closed) return;
      closed = true;
      ladder.stop();
      tokens.stop();
      channel?.close();
      release();
    },
    get state() { return lastState; },
  };
}
