// The browser suite's harness: the real `suroga` binary (API + timers + its own local Janus),
// headless Debian Chromium driven by playwright-core, and helpers to read what a person would see
// and what the browser's RTCPeerConnections receive.
//
// Every test runs inside a network namespace that web/tests/run.sh makes (`unshare --net` with a
// veth pair on 198.18.7.0/24): Janus never offers loopback candidates, so media flows over the
// veth addresses, and nothing can leave the namespace. `assertIsolated()` refuses to run outside it.

import { spawn, execFileSync } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const WEB = join(dirname(fileURLToPath(import.meta.url)), '..');
export const ROOT = join(WEB, '..');
export const SECRET = 'browser-suite-hs256-secret-0123456789abcdef';
export const CHROMIUM = '/usr/bin/chromium';

/** Fails unless this process is in the test's own network namespace (lo + the veth pair only). */
export function assertIsolated() {
  const links = execFileSync('ip', ['-o', 'link', 'show']).toString();
  const names = links.split('\n').filter(Boolean).map((l) => l.split(':')[1].trim().split('@')[0]);
  const expected = ['lo', 'v0', 'v1'];
  if (process.env.SUROGA_TEST_NETNS !== '1' || names.sort().join(',') !== expected.join(',')) {
    throw new Error(
      `the browser suite must run inside its own network namespace (web/tests/run.sh); interfaces here: ${names.join(', ')}`,
    );
  }
  const routes = execFileSync('ip', ['-4', 'route', 'show']).toString();
  if (/default/.test(routes)) throw new Error(`a default route exists in the test namespace:\n${routes}`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `fn` until it returns a truthy value; throws with `message` (and the last value) on timeout. */
export async function waitFor(fn, { timeout = 30000, interval = 250, message = 'condition' } = {}) {
  const until = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${message}; last: ${last instanceof Error ? last.stack : JSON.stringify(last)}`);
    await sleep(interval);
  }
}

/**
 * Spawns a process of the suite with its stdout and stderr collected: {child, log (the chunks),
 * text(), exited() (null while it runs, else its exit code, signal or spawn error), stop(what)}.
 */
export function spawnLogged(cmd, args, options = {}) {
  const child = spawn(cmd, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = [];
  child.stdout.on('data', (d) => log.push(d.toString()));
  child.stderr.on('data', (d) => log.push(d.toString()));
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = code ?? signal;
  });
  child.on('error', (e) => {
    exited = e.message;
  });
  return {
    child,
    log,
    text: () => log.join(''),
    exited: () => exited,
    /** SIGTERM, then SIGKILL when it has not exited within 10 s. */
    async stop(what) {
      if (exited !== null) return;
      child.kill('SIGTERM');
      await waitFor(() => exited !== null, { timeout: 10000, message: `${what} to stop` }).catch(() => child.kill('SIGKILL'));
    },
  };
}

function b64url(x) {
  return Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');
}

/** A local HS256 token the service accepts (what `suroga token` mints), with an optional `name`. */
export function token(sub, { admin = false, name, ttlSeconds = 3600 } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { iss: 'suroga-local', aud: 'suroga-local', sub, iat: now, nbf: now, exp: now + ttlSeconds, roles: admin ? ['admin'] : [] };
  if (name) claims.name = name;
  const head = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}

/** The service: `suroga serve` on a free loopback port with a fresh data folder and local Janus. */
export async function startService(extraEnv = {}) {
  const bin = process.env.SUROGA_BIN || join(ROOT, 'target', 'debug', 'suroga');
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'suroga-web-'));
  const env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME || '/root',
    SUROGA_ADDR: `127.0.0.1:${port}`,
    SUROGA_DATA_DIR: dataDir,
    AUTH_HS256_SECRET: SECRET,
    LOG_FORMAT: 'json',
    RUST_LOG: 'info',
    SESSION_GRACE_MINUTES: '0',
    ...extraEnv,
  };
  const proc = spawnLogged(bin, ['serve'], { env });
  const { child, log } = proc;
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitFor(
      async () => {
        if (proc.exited() !== null) throw new Error(`suroga exited with ${proc.exited()}:\n${proc.text()}`);
        const r = await fetch(`${base}/api/v1/health`);
        return r.status === 200;
      },
      { timeout: 30000, message: 'the service to answer /api/v1/health' },
    );
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return {
    base,
    log,
    async stop() {
      await proc.stop('suroga');
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Calls the API; returns {status, body, headers}. */
export async function api(base, method, path, { bearer, body, headers = {} } = {}) {
  const h = { Accept: 'application/json', ...headers };
  if (bearer) h.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) h['Content-Type'] = 'application/json';
  const r = await fetch(`${base}/api/v1${path}`, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (e) {
    json = text;
  }
  return { status: r.status, body: json, headers: r.headers };
}

/**
 * Books [now + startS, now + endS) seconds for `user`, then runs the reconciler once, as its
 * timer would; returns the booking. Without that tick a test races the service's clock: the
 * first minute tick after start deallocates the idle local host, and a booking made just after
 * it waits (503 on /join) until the next tick starts the host again.
 */
export async function book(base, user, startS, endS) {
  const now = Date.now();
  const r = await api(base, 'POST', '/bookings', {
    bearer: token(user),
    body: { start_time: new Date(now + startS * 1000).toISOString(), end_time: new Date(now + endS * 1000).toISOString() },
  });
  if (r.status !== 201) throw new Error(`booking failed: ${r.status} ${JSON.stringify(r.body)}`);
  await runTimer(base, 'fleet-reconcile');
  return r.body;
}

/** Runs a timer job now, as the Functions host would (`POST /<name>` with its envelope). */
export async function runTimer(base, name) {
  const now = new Date().toISOString();
  const r = await fetch(`${base}/${name}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      Data: { timer: { Schedule: { AdjustForDST: true }, ScheduleStatus: null, IsPastDue: false } },
      Metadata: { sys: { MethodName: name, UtcNow: now, RandGuid: randomUUID() } },
    }),
  });
  if (r.status !== 200) throw new Error(`${name}: ${r.status} ${await r.text()}`);
  return r.json();
}

const BASE_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  // Host candidates with real addresses: Janus ignores mDNS names (ignore_mdns = true).
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--no-first-run',
  // No name resolves; the rules apply to address literals too, so the service (loopback) and the
  // namespace's own addresses (TURN over TCP connects through the resolver) are left alone.
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE 198.18.7.*',
  '--autoplay-policy=no-user-gesture-required',
];

/**
 * Headless Debian Chromium. fakeDevices: a fake camera and microphone (else none: NotFoundError);
 * fakeUi: permission prompts accepted (else refused: NotAllowedError).
 */
export async function launch({ fakeDevices = true, fakeUi = true, video } = {}) {
  const args = [...BASE_ARGS];
  if (fakeDevices) args.push('--use-fake-device-for-media-stream');
  if (fakeUi) args.push('--use-fake-ui-for-media-stream', '--auto-accept-this-tab-capture', '--auto-select-desktop-capture-source=Entire screen');
  if (video) args.push(`--use-file-for-fake-video-capture=${video}`);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

// Records every RTCPeerConnection the page makes, and every CSP violation, for the tests.
const INIT = `(() => {
  const Orig = window.RTCPeerConnection;
  window.__pcs = [];
  window.__csp = [];
  if (Orig) {
    const Hooked = function (...args) { const pc = new Orig(...args); window.__pcs.push(pc); return pc; };
    Hooked.prototype = Orig.prototype;
    Object.setPrototypeOf(Hooked, Orig);
    window.RTCPeerConnection = Hooked;
  }
  document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
  // Every connection state the call showed, in order (the person would have seen each one).
  window.__states = [];
  new MutationObserver((records) => {
    for (const r of records) {
      const s = r.target.getAttribute && r.target.getAttribute('data-state');
      if (r.target.dataset && r.target.dataset.testid === 'call-status' && s && window.__states[window.__states.length - 1] !== s) window.__states.push(s);
    }
  }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-state'] });
})();`;

/** A browser context for one person: language, viewport, the hooks above. */
export async function person(browser, { locale = 'en-US', viewport = { width: 1280, height: 800 }, permissions } = {}) {
  const context = await browser.newContext({ locale, viewport, permissions });
  await context.addInitScript(INIT);
  const page = await context.newPage();
  page.consoleLog = [];
  page.on('console', (m) => page.consoleLog.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => page.consoleLog.push(`pageerror: ${e.message}`));
  return { context, page };
}

/** Inbound media of the page's live connections: {video: {frames, bytes}, audio: {bytes, samples}}. */
export async function inbound(page) {
  return page.evaluate(async () => {
    const out = { video: { frames: 0, bytes: 0, width: 0 }, audio: { bytes: 0, samples: 0 } };
    for (const pc of window.__pcs || []) {
      if (pc.connectionState === 'closed') continue;
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          out.video.frames += s.framesDecoded || 0;
          out.video.bytes += s.bytesReceived || 0;
          out.video.width = Math.max(out.video.width, s.frameWidth || 0);
        } else if (s.kind === 'audio') {
          out.audio.bytes += s.bytesReceived || 0;
          out.audio.samples += s.totalSamplesReceived || 0;
        }
      });
    }
    return out;
  });
}

/** Waits until the page's inbound video frames and bytes and audio bytes grow between two samples. */
export async function waitForMediaFlowing(page, who, timeout = 30000) {
  let before = await inbound(page);
  return waitFor(
    async () => {
      await sleep(1000);
      const now = await inbound(page);
      const ok =
        now.video.frames > before.video.frames &&
        now.video.bytes > before.video.bytes &&
        now.audio.bytes > before.audio.bytes &&
        now.audio.samples > before.audio.samples;
      before = now;
      return ok && now;
    },
    { timeout, message: `${who} decoding the other's video and audio` },
  );
}

export function state(page) {
  return page.getAttribute('[data-testid="call-status"]', 'data-state');
}

export async function waitForState(page, wanted, who, timeout = 30000) {
  const list = Array.isArray(wanted) ? wanted : [wanted];
  await waitFor(async () => list.includes(await state(page)), {
    timeout,
    message: `${who} to show ${list.join('|')} (now ${await state(page).catch(() => '?')}; log: ${page.consoleLog.slice(-8).join(' | ')})`,
  });
}

const AXE = readFileSync(join(WEB, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');

/** axe-core (WCAG 2.x A and AA) on the page as it is now: the serious and critical violations. */
export async function audit(page) {
  // Evaluated through the DevTools protocol, so the page's CSP (no inline scripts) still holds.
  await page.evaluate(`${AXE}\n;0`);
  const result = await page.evaluate(() =>
    window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }),
  );
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

/** The call states the page showed, in order. */
export function statesSeen(page) {
  return page.evaluate(() => window.__states || []);
}

/** Cuts the page's WebSocket(s) to Janus (the browser process `pid`) with `ss -K`: both ends see a reset. */
export function cutWebSockets(wsUrl) {
  const port = new URL(wsUrl).port;
  const before = execFileSync('ss', ['-Htn', 'state', 'established', 'dport', '=', `:${port}`]).toString().trim().split('\n').filter(Boolean).length;
  execFileSync('ss', ['-K', 'state', 'established', 'dport', '=', `:${port}`], { stdio: ['ignore', 'ignore', 'ignore'] });
  const after = execFileSync('ss', ['-Htn', 'state', 'established', 'dport', '=', `:${port}`]).toString().trim().split('\n').filter(Boolean).length;
  return { before, after };
}

/** Open WebSocket connections to Janus. */
export function webSockets(wsUrl) {
  const port = new URL(wsUrl).port;
  return execFileSync('ss', ['-Htn', 'state', 'established', 'dport', '=', `:${port}`]).toString().trim().split('\n').filter(Boolean);
}

/** CSP violations the page reported. */
export function cspViolations(page) {
  return page.evaluate(() => window.__csp || []);
}

/**
 * Writes a Y4M video of `frames` solid frames of one colour (Y, U, V) for
 * --use-file-for-fake-video-capture: a camera whose picture the tests can recognise.
 */
export function solidY4m(path, { width = 320, height = 240, frames = 15, yuv = [41, 240, 110] } = {}) {
  const header = Buffer.from(`YUV4MPEG2 W${width} H${height} F15:1 Ip A1:1 C420jpeg\n`);
  const y = Buffer.alloc(width * height, yuv[0]);
  const u = Buffer.alloc((width / 2) * (height / 2), yuv[1]);
  const v = Buffer.alloc((width / 2) * (height / 2), yuv[2]);
  const frame = Buffer.concat([Buffer.from('FRAME\n'), y, u, v]);
  writeFileSync(path, Buffer.concat([header, ...Array(frames).fill(frame)]));
  return path;
}

/** The colour [r, g, b] at the centre of a <video> (by data-testid), and its size. */
export async function videoPixel(page, testid) {
  return page.evaluate((id) => {
    const v = document.querySelector(`[data-testid="${id}"]`);
    if (!v || !v.videoWidth) return null;
    const c = document.createElement('canvas');
    c.width = v.videoWidth;
    c.height = v.videoHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(v, 0, 0);
    const d = ctx.getImageData(Math.floor(c.width / 2), Math.floor(c.height / 2), 1, 1).data;
    return { rgb: [d[0], d[1], d[2]], width: v.videoWidth, height: v.videoHeight };
  }, testid);
}
