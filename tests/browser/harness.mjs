// The browser tests' stack: the real bridged binary (built with -race, in demo mode so the
// demo page and its token endpoint exist), the example app (examples/wsapp) as "the app's
// socket", and internal/faultproxy in front of both, which the tests drive to break the network
// the way intermediaries do. Chromium is Debian's, driven by playwright-core; nothing downloads a
// browser. Every process is started here and ended here by its own PID.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const OUT = join(ROOT, 'tests', 'browser', 'out');
const SECRETS = {
  BRIDGE_JWT_SECRET: 'browser-tests-jwt-secret-0123456789-abcdef',
  BRIDGE_PUBLISH_KEY: 'browser-tests-publish-key-0123',
  BRIDGE_ADMIN_KEY: 'browser-tests-admin-key-01234',
};
export const HEARTBEAT_MS = 1000;

/** Resolves when fn() is truthy, polling; rejects after ms with what. Deadlines are generous: they catch hangs, not slowness. */
export async function waitFor(fn, what, ms = 60000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${String(last)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function build(dir) {
  const go = process.env.GO ?? 'go';
  const bins = {};
  for (const [name, pkg, race] of [['bridged', './cmd/bridged', true], ['faultproxy', './internal/cmd/faultproxy', false], ['wsapp', './examples/wsapp', false]]) {
    bins[name] = join(dir, name);
    execFileSync(go, ['build', ...(race ? ['-race'] : []), '-o', bins[name], pkg], { cwd: ROOT, stdio: 'inherit' });
  }
  return bins;
}

/**
 * Starts a command; proc.ready resolves once it prints its {"msg":"listening","addr"} line. A
 * command that does not is killed (by its PID) and ready rejects.
 */
function startProcess(name, bin, args, env) {
  const child = spawn(bin, args, { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = { name, child, output: [], addr: '', exited: undefined };
  proc.ready = new Promise((resolve, reject) => {
    let buf = '';
    const onData = (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        proc.output.push(line);
        if (proc.output.length > 2000) proc.output.shift();
        if (!proc.addr) {
          try {
            const l = JSON.parse(line);
            if (l.msg === 'listening' && l.addr) { proc.addr = l.addr; resolve(proc.addr); }
          } catch { /* not JSON */ }
        }
      }
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', onData);
    child.on('exit', (code) => { proc.exited = code; if (!proc.addr) reject(new Error(`${name} exited (${code}) before listening:\n${proc.output.join('\n')}`)); });
    setTimeout(() => {
      if (proc.addr) return;
      child.kill('SIGKILL');
      reject(new Error(`${name} did not listen within 60 s:\n${proc.output.join('\n')}`));
    }, 60000).unref();
  });
  return proc;
}

/** Ends a process we started, by its PID, and waits for it. */
async function stopProcess(proc) {
  if (!proc || proc.exited !== undefined) return proc?.exited;
  const exited = new Promise((r) => proc.child.once('exit', (code, signal) => r(code ?? signal)));
  proc.child.kill('SIGTERM');
  const t = setTimeout(() => proc.child.kill('SIGKILL'), 15000);
  const code = await exited;
  clearTimeout(t);
  return code;
}

export class Stack {
  async start() {
    this.dir = mkdtempSync(join(tmpdir(), 'bridged-browser-'));
    mkdirSync(OUT, { recursive: true });
    try {
      const bins = build(this.dir);
      this.bridged = startProcess('bridged', bins.bridged, [], {
        ...SECRETS, BRIDGE_ADDR: '127.0.0.1:0', BRIDGE_DEMO: 'true', BRIDGE_HEARTBEAT: `${HEARTBEAT_MS}ms`,
      });
      this.bridgedURL = `http://${await this.bridged.ready}`;
      this.app = startProcess('wsapp', bins.wsapp, ['-listen', '127.0.0.1:0', '-bridged', this.bridgedURL, '-heartbeat', `${HEARTBEAT_MS}ms`], SECRETS);
      this.appURL = `http://${await this.app.ready}`;
      this.proxy = startProcess('faultproxy', bins.faultproxy, ['-target', this.bridgedURL, '-route', `/app/=${this.appURL}`], {});
      this.url = `http://${await this.proxy.ready}`;
      this.browser = await chromium.launch({
        executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
        headless: true,
        args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
          '--disable-component-update', '--disable-sync'],
      });
    } catch (err) {
      await this.stop().catch(() => {});
      throw err;
    }
    return this;
  }

  async stop() {
    await this.browser?.close().catch(() => {});
    const codes = {};
    for (const p of [this.proxy, this.app, this.bridged]) if (p) codes[p.name] = await stopProcess(p);
    const out = this.bridged?.output.join('\n') ?? '';
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    if (out.includes('WARNING: DATA RACE') || out.includes('panic:')) throw new Error(`bridged reported a race or a panic:\n${out}`);
    if (this.bridged && codes.bridged !== 0) throw new Error(`bridged exited with ${codes.bridged} after SIGTERM:\n${out.slice(-4000)}`);
  }

  /** The proxy's faults: {refuseUpgrade, bufferEventStream, cutAfterMs}. */
  async faults(f) {
    const res = await fetch(`${this.url}/__faultproxy/faults`, { method: 'PUT', body: JSON.stringify(f) });
    if (!res.ok) throw new Error(`set faults: ${res.status}`);
  }

  async stats() { return (await fetch(`${this.url}/__faultproxy/stats`)).json(); }

  /** Publishes through the example app (which publishes to bridged, then sends on its sockets). */
  async send(user, n) {
    const res = await fetch(`${this.appURL}/send`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user, event: 'notice', data: { text: `message ${n}`, n, sentAt: Date.now() } }),
    });
    if (!res.ok) throw new Error(`send: ${res.status} ${await res.text()}`);
    return (await res.json()).id;
  }

  /** Publishes to user every everyMs until stop(); ids come back in publish order. */
  publisher(user, everyMs) {
    const p = { ids: [], everyMs, stopped: false, error: null };
    p.done = (async () => {
      for (let n = 1; !p.stopped; n++) {
        try { p.ids.push(await this.send(user, n)); } catch (err) { p.error = err; return; }
        await new Promise((r) => setTimeout(r, p.everyMs));
      }
    })();
    p.stop = async () => { p.stopped = true; await p.done; if (p.error) throw p.error; return p.ids; };
    return p;
  }

  /** A new page on the demo, with query parameters. */
  async open(context, query) {
    const page = await context.newPage();
    page.on('pageerror', (err) => { (page.errors ??= []).push(String(err)); });
    await page.goto(`${this.url}/?${new URLSearchParams(query)}`);
    await waitFor(() => page.evaluate(() => window.demo?.state), 'the page to start');
    return page;
  }
}

/** The page's state. */
export const state = (page) => page.evaluate(() => window.demo.state);

/** Waits until the page's ladder is on rung (and, when given, got there for reason). */
export async function onRung(page, rung, reason, ms = 60000) {
  let last;
  try {
    return await waitFor(async () => {
      const s = (last = await state(page));
      return s?.rung === rung && (!reason || s.reason === reason) && s;
    }, `rung ${rung}${reason ? ` (${reason})` : ''}`, ms);
  } catch (err) {
    const moves = await page.evaluate(() => window.demo.moves).catch(() => []);
    throw new Error(`${err.message}; state ${JSON.stringify(last)}; moves ${JSON.stringify(moves)}`);
  }
}

/** Waits until the page has received every id of ids, then checks it got exactly them, in order. */
export async function receivedExactly(page, ids, ms = 60000) {
  await waitFor(async () => (await page.evaluate(() => window.demo.received.length)) >= ids.length, `${ids.length} messages`, ms);
  return page.evaluate(() => window.demo.received.slice());
}
