// Unit tests for the browser client's state machine (static/bridge.js), under Node's test runner:
//   node --test tests/unit/
// The Ladder does no I/O of its own; these tests play its transports and its clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ladder, relation, parseId } from '../../static/bridge.js';

/** A clock that moves only when told. */
class Clock {
  now = 0;
  seq = 0;
  timers = new Map();
  setTimeout = (fn, ms) => { const id = ++this.seq; this.timers.set(id, { at: this.now + ms, fn }); return id; };
  clearTimeout = (id) => { this.timers.delete(id); };
  /** Runs every timer due within ms, in order, letting promises settle between them. */
  async advance(ms) {
    const end = this.now + ms;
    for (;;) {
      await settle();
      let next = null;
      for (const [id, t] of this.timers) if (t.at <= end && (!next || t.at < next[1].at)) next = [id, t];
      if (!next) break;
      this.timers.delete(next[0]);
      this.now = next[1].at;
      next[1].fn();
    }
    this.now = end;
    await settle();
  }
}

const settle = () => new Promise((r) => setImmediate(r));
const id = (n, epoch = 'k1') => `${epoch}-${n}`;
const msg = (n, epoch) => ({ id: id(n, epoch), event: 'notice', data: { n }, time: '' });

/** A ladder wired to fake transports; bridged's stream for gap fills is `stream`. */
function harness(options = {}) {
  const clock = new Clock();
  const h = {
    clock, sessions: [], delivered: [], resets: [], states: [], reports: [], polls: [], tokenRefreshes: 0,
    stream: /** @type {any[]} */ ([]),
  };
  const env = {
    open(rung, params, handlers) {
      const s = { rung, params, h: handlers, stopped: false, stop() { this.stopped = true; } };
      h.sessions.push(s);
      return s;
    },
    async poll(cursor) {
      h.polls.push(cursor);
      const p = parseId(cursor);
      const messages = h.stream.filter((m) => !p || parseId(m.id).seq > p.seq);
      return { messages, cursor: messages.length ? messages.at(-1).id : cursor, reset: false, more: false };
    },
    async refreshToken() { h.tokenRefreshes++; },
    report: (ev) => h.reports.push(ev),
    onMessage: (m) => h.delivered.push(m.id),
    onReset: (r) => h.resets.push(r),
    onState: (s) => h.states.push(s),
    now: () => clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
  };
  h.ladder = new Ladder({ heartbeatMs: 600000, probeMinMs: 4000, probeMaxMs: 32000, ...options }, env);
  /** The newest open session, optionally of one rung. */
  h.live = (rung) => h.sessions.filter((s) => !s.stopped && (!rung || s.rung === rung)).at(-1);
  h.rung = () => h.ladder.state.rung;
  return h;
}

test('ids: next, repeat, gap and foreign by epoch and seq', () => {
  assert.equal(relation('k1-9', 'k1-10'), 'next');
  assert.equal(relation('k1-10', 'k1-9'), 'dup');
  assert.equal(relation('k1-10', 'k1-10'), 'dup');
  assert.equal(relation('k1-9', 'k1-11'), 'gap');
  assert.equal(relation('k1-9', 'k2-10'), 'foreign');
  assert.equal(relation('', 'k1-1'), 'gap');
  // seqs beyond 2^53 still compare exactly
  assert.equal(relation('k1-9007199254740993', 'k1-9007199254740994'), 'next');
  assert.equal(parseId('K1-1'), null);
});

test('a rung that cannot connect is left for the next one down, and the move is reported', async () => {
  const h = harness();
  h.ladder.start();
  assert.equal(h.rung(), 'ws');
  h.live('ws').h.fail({ network: true });
  assert.equal(h.rung(), 'sse');
  assert.equal(h.ladder.state.reason, 'connect_failed');
  assert.deepEqual(h.reports, [{ change: 'down', from: 'ws', to: 'sse', reason: 'connect_failed' }]);
});

test('a stream silent past twice its heartbeat steps down (a buffering proxy)', async () => {
  const h = harness({ rungs: ['sse', 'longpoll', 'poll'] });
  h.ladder.start();
  h.live('sse').h.hello({ heartbeatMs: 2000 });
  await h.clock.advance(3000);
  h.live('sse').h.ping();
  await h.clock.advance(3900);
  assert.equal(h.rung(), 'sse', 'pings keep it');
  await h.clock.advance(200);
  assert.equal(h.rung(), 'longpoll');
  assert.equal(h.ladder.state.reason, 'silent');
});

test('a stream that connects but keeps failing steps down after three failures in the window', async () => {
  const h = harness({ rungs: ['sse', 'longpoll', 'poll'], failureWindowMs: 60000 });
  h.ladder.start();
  for (let i = 0; i < 2; i++) {
    h.live('sse').h.hello();
    h.live('sse').h.fail({ network: true });
    assert.equal(h.rung(), 'sse', `failure ${i + 1} reconnects`);
    await h.clock.advance(20000);
  }
  h.live('sse').h.hello();
  h.live('sse').h.fail({ network: true });
  assert.equal(h.rung(), 'longpoll');
  assert.equal(h.ladder.state.reason, 'repeated_failures');

  const spread = harness({ rungs: ['sse', 'poll'], failureWindowMs: 60000 });
  spread.ladder.start();
  for (let i = 0; i < 5; i++) {
    spread.live('sse').h.hello();
    spread.live('sse').h.fail({ network: true });
    await spread.clock.advance(31000);
  }
  assert.equal(spread.rung(), 'sse', 'failures far apart are not "repeated"');
});

test('a probe of the higher rung takes over only once it has delivered', async () => {
  const h = harness();
  h.ladder.start();
  h.live('ws').h.fail({ network: true });
  const sse = h.live('sse');
  sse.h.hello();
  sse.h.message(msg(1), true);
  await h.clock.advance(4000); // the probe opens within its jittered delay
  const probe = h.live('ws');
  assert.ok(probe, 'probe opened');
  assert.equal(probe.params.cursor, id(1), 'the probe resumes from the one cursor');
  assert.equal(h.rung(), 'sse');
  assert.equal(h.ladder.state.probing, 'ws');
  await h.clock.advance(500);
  assert.equal(h.rung(), 'sse', 'connected but silent: no switch yet');
  probe.h.hello();
  assert.equal(h.rung(), 'ws');
  assert.ok(sse.stopped, 'the lower rung is closed after the switch');
  assert.deepEqual(h.reports.at(-1), { change: 'up', from: 'sse', to: 'ws', reason: 'probe_delivered' });
});

test('messages arrive exactly once and in order across a switch, however the rungs interleave', async () => {
  const h = harness();
  h.ladder.start();
  h.live('ws').h.fail({ network: true });
  const sse = h.live('sse');
  sse.h.hello();
  for (let n = 1; n <= 3; n++) sse.h.message(msg(n), true);
  await h.clock.advance(4000);
  const probe = h.live('ws');
  assert.equal(probe.params.cursor, id(3));
  sse.h.message(msg(4), true); // the old rung goes on while the probe connects
  probe.h.hello();
  probe.h.message(msg(4), true); // the probe replays what the old rung already gave
  sse.h.message(msg(5), true); // a late frame from the closed rung is ignored
  probe.h.message(msg(5), true);
  probe.h.message(msg(6), true);
  assert.deepEqual(h.delivered, [1, 2, 3, 4, 5, 6].map((n) => id(n)));
});

test("the app's socket is not resumable: a gap is fetched from bridged before going on", async () => {
  const h = harness({ cursor: id(2) });
  h.stream = [msg(3), msg(4), msg(5)];
  h.ladder.start();
  const ws = h.live('ws');
  ws.h.hello();
  ws.h.message(msg(5), false); // 3 and 4 were sent while the socket was down
  assert.deepEqual(h.delivered, [], 'held back while the gap is fetched');
  await settle();
  assert.deepEqual(h.polls, [id(2)]);
  assert.deepEqual(h.delivered, [id(3), id(4), id(5)]);
  ws.h.message(msg(6), false);
  ws.h.message(msg(6), false);
  assert.deepEqual(h.delivered, [id(3), id(4), id(5), id(6)]);
});

test('a reset moves the cursor and tells the page; one behind the cursor changes nothing', async () => {
  const h = harness({ rungs: ['sse', 'poll'], cursor: id(5) });
  h.ladder.start();
  const sse = h.live('sse');
  sse.h.hello();
  sse.h.reset(id(3)); // a probe that started behind us: we have everything up to 5
  assert.deepEqual(h.resets, []);
  sse.h.reset(id(0, 'k2')); // the stream was lost and started again
  assert.deepEqual(h.resets, [{ from: id(5), to: id(0, 'k2') }]);
  sse.h.message(msg(1, 'k2'), true);
  assert.deepEqual(h.delivered, [id(1, 'k2')]);
  // A poll answer that resets: its first message starts the new position.
  const p = harness({ rungs: ['poll'], cursor: id(1, 'k2') });
  p.ladder.start();
  p.live('poll').h.answer({ messages: [msg(7, 'k3'), msg(8, 'k3')], cursor: id(8, 'k3'), reset: true });
  assert.deepEqual(p.resets, [{ from: id(1, 'k2'), to: id(6, 'k3') }]);
  assert.deepEqual(p.delivered, [id(7, 'k3'), id(8, 'k3')]);
});

test('long-poll: an early cut shrinks the wait, full waits grow it back, a cut below the floor steps down', async () => {
  const h = harness({ rungs: ['longpoll', 'poll'], longPollWaitMs: 8000, longPollMinMs: 1000 });
  h.ladder.start();
  let s = h.live('longpoll');
  assert.equal(s.params.waitMs, 8000);
  await h.clock.advance(3000);
  s.h.fail({ network: true }); // a gateway cut it at 3 s
  s = h.live('longpoll');
  assert.equal(s.params.waitMs, 2400);
  assert.equal(h.rung(), 'longpoll');
  const waits = [];
  for (let i = 0; i < 6; i++) {
    s = h.live('longpoll');
    waits.push(s.params.waitMs);
    await h.clock.advance(s.params.waitMs);
    s.h.answer({ messages: [], cursor: '', reset: false });
  }
  assert.deepEqual(waits, [2400, 2400, 4800, 4800, 8000, 8000]);

  const cut = harness({ rungs: ['longpoll', 'poll'], longPollWaitMs: 25000, longPollMinMs: 10000 });
  cut.ladder.start();
  await cut.clock.advance(5000);
  cut.live('longpoll').h.fail({ network: true });
  assert.equal(cut.rung(), 'poll');
  assert.equal(cut.ladder.state.reason, 'cut');
});

test('an expired token is refreshed and the same rung resumes; a shutdown reconnects', async () => {
  const h = harness({ rungs: ['ws', 'sse', 'poll'] });
  h.ladder.start();
  h.live('ws').h.hello();
  h.live('ws').h.message(msg(1), true);
  h.live('ws').h.close('token_expired');
  await settle();
  assert.equal(h.tokenRefreshes, 1);
  assert.equal(h.rung(), 'ws');
  assert.equal(h.live('ws').params.cursor, id(1));
  h.live('ws').h.hello();
  h.live('ws').h.fail({ tokenStale: true }); // a 401 on connect
  await settle();
  assert.equal(h.tokenRefreshes, 2);
  assert.equal(h.rung(), 'ws');
  h.live('ws').h.close('shutdown');
  await h.clock.advance(1000);
  assert.equal(h.rung(), 'ws');
  assert.equal(h.reports.length, 0, 'none of these is a step down');
});

test('a failing probe backs off, doubling up to the maximum', async () => {
  const h = harness({ rungs: ['sse', 'poll'], probeMinMs: 4000, probeMaxMs: 16000 });
  h.ladder.start();
  h.live('sse').h.fail({ network: true });
  const opened = [];
  for (let i = 0; i < 4; i++) {
    const before = h.clock.now;
    while (!h.live('sse')) await h.clock.advance(100);
    opened.push(h.clock.now - before);
    h.live('sse').h.fail({ network: true });
  }
  // jitter puts each between half and all of 4, 8, 16, 16 s (random() is 0.5 here: three quarters)
  assert.deepEqual(opened, [3000, 6000, 12000, 12000]);
  assert.equal(h.rung(), 'poll');
});

test('poll is the bottom: it retries for ever and counts retries', async () => {
  const h = harness({ rungs: ['poll'] });
  h.ladder.start();
  for (let i = 0; i < 4; i++) {
    h.live('poll').h.fail({ status: 503 });
    await h.clock.advance(20000);
  }
  assert.equal(h.rung(), 'poll');
  assert.equal(h.ladder.state.retries, 4);
  h.live('poll').h.answer({ messages: [msg(1)], cursor: id(1), reset: false });
  assert.equal(h.ladder.state.retries, 0);
  assert.deepEqual(h.delivered, [id(1)]);
});
