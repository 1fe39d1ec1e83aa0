// End-to-end: bridge.js in Debian's Chromium, on the demo page, against the real bridged and
// the example app behind a fault-injecting proxy. Every scenario publishes at a steady rate and
// ends by checking that the page got every message exactly once, in order. Outcomes only: no
// assertion on how fast anything happened.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Stack, OUT, onRung, receivedExactly, state, waitFor } from './harness.mjs';

const stack = new Stack();

before(() => stack.start());
after(() => stack.stop());

/** A test with a browser context of its own (closed, with its pages, however the test ends) and no faults. */
function browserTest(name, fn) {
  test(name, async () => {
    const context = await stack.browser.newContext({ viewport: { width: 1400, height: 900 } });
    try {
      await stack.faults({});
      await fn(context);
    } finally {
      await context.close().catch(() => {});
    }
  });
}

// Client tuning for a test's time scale (the defaults suit real networks: probes from 5 s).
const FAST = { probeMinMs: '1500', probeMaxMs: '4000', longPollWaitMs: '8000', longPollMinMs: '6000', pollIntervalMs: '500' };

async function noPageErrors(page) {
  assert.deepEqual(page.errors ?? [], [], 'the page threw');
}

browserTest('down the ladder as the network breaks, back to the top when it heals; every message once, in order', async (context) => {
  const user = 'ladder';
  const pub = stack.publisher(user, 250);
  const page = await stack.open(context, { user, appws: '/app/ws', share: '0', ...FAST });
  const shot = async (rung) => {
    await new Promise((r) => setTimeout(r, 500)); // let the page's 0.3 s transitions finish
    await page.screenshot({ path: join(OUT, `ladder-${rung}.png`) });
  };

  await onRung(page, 'ws');
  await waitFor(async () => (await page.evaluate(() => window.demo.received.length)) > 3, 'messages on the top rung');
  await shot('ws');

  // A proxy that does not speak WebSocket: the app's socket is dropped and cannot come back.
  await stack.faults({ refuseUpgrade: true });
  await onRung(page, 'sse', 'connect_failed');
  await waitFor(async () => (await page.evaluate(() => window.demo.received.length)) > 10, 'messages over SSE');
  await shot('sse');

  // A proxy that buffers text/event-stream: SSE connects but says nothing; after two heartbeats
  // without a hello or a ping the client takes long-poll.
  await stack.faults({ refuseUpgrade: true, bufferEventStream: true });
  await onRung(page, 'longpoll', 'silent');
  await shot('longpoll');

  // A gateway that cuts any request longer than 5 s. Messages now come every 6 s, so each
  // long-poll waits past the cut; a long-poll shorter than longPollMinMs is not worth it: poll.
  pub.everyMs = 6000;
  await stack.faults({ refuseUpgrade: true, bufferEventStream: true, cutAfterMs: 5000 });
  await onRung(page, 'poll', 'cut', 90000);
  await shot('poll');

  // Every fault removed: the probes climb back, one rung at a time, to the app's socket.
  pub.everyMs = 250;
  await stack.faults({});
  await onRung(page, 'ws', 'probe_delivered', 90000);
  const moves = await page.evaluate(() => window.demo.moves.map((m) => `${m.change} ${m.rung} ${m.reason}`));
  assert.deepEqual(moves.slice(-3), ['up longpoll probe_delivered', 'up sse probe_delivered', 'up ws probe_delivered'], 'climbed one rung at a time');

  const ids = await pub.stop();
  assert.ok(ids.length >= 10, `published ${ids.length}`);
  assert.deepEqual(await receivedExactly(page, ids), ids);
  assert.deepEqual(await page.evaluate(() => window.demo.resets), []);
  const st = await stack.stats();
  assert.ok(st.refused > 0 && st.cut > 0, `the proxy refused and cut: ${JSON.stringify(st)}`);
  assert.ok(st.byPath['/v1/ticket'] > 0, 'SSE and WebSocket URLs carry tickets, not the token');
  await noPageErrors(page);
  await page.close();
});

browserTest('a token that expires mid-stream is refreshed, and nothing is lost', async (context) => {
  const user = 'expiring';
  const pub = stack.publisher(user, 200);
  // bridged's own /v1/ws as the top rung; every token lives 5 s, and bridged ends a stream
  // whose token expires (4001), so this page runs through several.
  const page = await stack.open(context, { user, tokenTtl: '5s', share: '0', ...FAST });
  await onRung(page, 'ws');
  await waitFor(async () => (await state(page)).tokenFetches >= 4, 'four tokens', 90000);
  const ids = await pub.stop();
  assert.deepEqual(await receivedExactly(page, ids), ids);
  const s = await state(page);
  assert.equal(s.rung, 'ws', 'an expired token is not a reason to step down');
  assert.deepEqual(await page.evaluate(() => window.demo.moves), [], 'no step down or up');
  await noPageErrors(page);
  await page.close();
});

browserTest('tabs of one origin share one connection, and another tab takes over when the leader closes', async (context) => {
  const user = 'tabs';
  const open = (s) => (s.open.ws ?? 0) + (s.open.sse ?? 0) + (s.open.longpoll ?? 0);
  await waitFor(async () => open(await stack.stats()) === 0, 'the earlier pages\' connections to end');
  const pub = stack.publisher(user, 200);
  const pages = [];
  for (let i = 0; i < 6; i++) pages.push(await stack.open(context, { user, ...FAST }));
  const leaders = async () => {
    const states = await Promise.all(pages.filter((p) => !p.isClosed()).map((p) => state(p)));
    return states.filter((s) => s.leader).length;
  };
  await waitFor(async () => (await leaders()) === 1, 'one leader');
  await onRung(pages[0], 'ws');
  // The sixth tab is not stuck behind HTTP/1.1's six connections: it receives too.
  await waitFor(async () => (await pages[5].evaluate(() => window.demo.received.length)) > 5, 'the sixth tab to receive');
  const st = await stack.stats();
  assert.equal(open(st), 1, `one streaming connection for six tabs: ${JSON.stringify(st.open)}`);

  let leader = -1;
  for (let i = 0; i < pages.length; i++) if ((await state(pages[i])).leader) leader = i;
  await pages[leader].close();
  const rest = pages.filter((p) => !p.isClosed());
  await waitFor(async () => (await leaders()) === 1, 'a new leader');
  await waitFor(async () => (await Promise.all(rest.map((p) => p.evaluate(() => window.demo.received.length)))).every((n) => n > 0), 'messages after the handover');
  await new Promise((r) => setTimeout(r, 2000)); // messages keep flowing through the new leader
  const ids = await pub.stop();
  for (const p of rest) {
    assert.deepEqual(await receivedExactly(p, ids), ids);
    await noPageErrors(p);
    await p.close();
  }
});

browserTest('the long-poll wait shrinks after early cuts and grows back when they stop', async (context) => {
  const user = 'longpoll';
  const pub = stack.publisher(user, 10000);
  const page = await stack.open(context, { user, rungs: 'longpoll,poll', share: '0', ...FAST, longPollWaitMs: '8000', longPollMinMs: '1000' });
  await onRung(page, 'longpoll');
  assert.equal((await state(page)).longPollWaitMs, 8000);
  await stack.faults({ cutAfterMs: 3000 });
  const shrunk = await waitFor(async () => { const s = await state(page); return s.longPollWaitMs < 3000 && s; }, 'a wait below the cut');
  assert.equal(shrunk.rung, 'longpoll', 'a shorter wait still works: no step down');
  await stack.faults({});
  await waitFor(async () => (await state(page)).longPollWaitMs === 8000, 'the wait back to 8 s', 90000);
  const ids = await pub.stop();
  assert.deepEqual(await receivedExactly(page, ids), ids);
  assert.equal((await state(page)).rung, 'longpoll');
  await noPageErrors(page);
  await page.close();
});
