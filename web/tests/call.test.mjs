// Two people hold a call: the host signed in, the guest with only the invitation link, each in
// their own headless Chromium, through the real API and a real Janus, inside the suite's network
// namespace. What each case proves is what a person would notice.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import {
  ROOT,
  api,
  assertIsolated,
  audit,
  book,
  cspViolations,
  cutWebSockets,
  inbound,
  launch,
  person,
  runTimer,
  sleep,
  solidY4m,
  startService,
  statesSeen,
  token,
  videoPixel,
  waitFor,
  waitForMediaFlowing,
  waitForState,
  webSockets,
} from './harness.mjs';

const ADMIN = token('operator', { admin: true });
// The README's screenshots: rewritten only on request (SUROGA_UPDATE_SCREENSHOTS=1), so a test run
// leaves the tree as it was; otherwise taken into a temporary folder all the same.
const SHOTS = process.env.SUROGA_UPDATE_SCREENSHOTS ? join(ROOT, 'docs', 'screenshots') : join(tmpdir(), `suroga-shots-${process.pid}`);
let svc;
let hostBrowser;
let guestBrowser;

before(async () => {
  assertIsolated();
  mkdirSync(SHOTS, { recursive: true });
  svc = await startService();
  // The host's camera shows a known picture (solid blue), so the guest can tell it from a screen.
  const blue = solidY4m(join(tmpdir(), `suroga-blue-${process.pid}.y4m`));
  hostBrowser = await launch({ video: blue });
  guestBrowser = await launch();
});

after(async () => {
  for (const b of [hostBrowser, guestBrowser]) if (b) await b.close();
  if (svc) await svc.stop();
});

const EN = { join: 'Join', mic: 'Microphone', cam: 'Camera', screen: 'Share screen', leave: 'Leave', name: 'Your name', create: 'Create invitation link' };
const PT = { join: 'Entrar', mic: 'Microfone', cam: 'Câmara', screen: 'Partilhar ecrã', leave: 'Sair', name: 'O seu nome', create: 'Criar ligação de convite' };

/**
 * A booked session with both people in the call. The host books through the API, opens the
 * booking page, creates the invitation with the button and reads the link from the page; the
 * guest opens the link, types a name and joins. Returns both pages and the booking.
 */
async function call({ startS = 60, endS = 3600, hostLang = EN, guestLang = EN, hostLocale = 'en-GB', guestLocale = 'en-GB', viewport, beforeJoin } = {}) {
  const hostId = `host-${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
  const booking = await book(svc.base, hostId, startS, endS);
  const host = await person(hostBrowser, { locale: hostLocale });
  const guest = await person(guestBrowser, { locale: guestLocale, viewport });
  await host.page.goto(`${svc.base}/app/bookings/${booking.booking_id}#token=${token(hostId, { name: 'Ana Host' })}`);
  await host.page.getByRole('button', { name: hostLang.create }).click();
  const link = host.page.getByTestId('invitation-link');
  await link.waitFor();
  const url = await link.inputValue();
  assert.match(url, new RegExp(`^${svc.base}/app/i/[A-Za-z0-9_-]{22,}$`), 'the invitation link opens the guest page here');
  if (beforeJoin) await beforeJoin({ host, booking, url });
  await guest.page.goto(url);
  await guest.page.getByLabel(guestLang.name).fill('Bea Guest');
  const hostJoin = host.page.getByRole('button', { name: hostLang.join, exact: true });
  const guestJoin = guest.page.getByRole('button', { name: guestLang.join, exact: true });
  await waitFor(async () => (await hostJoin.isEnabled()) && (await guestJoin.isEnabled()), { message: 'both Join buttons' });
  await hostJoin.click();
  await guestJoin.click();
  await waitForState(host.page, 'connected', 'the host', 45000);
  await waitForState(guest.page, 'connected', 'the guest', 45000);
  return { host, guest, booking, hostId, url };
}

async function close(...people) {
  for (const p of people) await p.context.close().catch(() => {});
}

async function events(bookingId) {
  const r = await api(svc.base, 'GET', `/bookings/${bookingId}/client-events`, { bearer: ADMIN });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

test('host and guest each decode the other\'s video and audio; both see who they are talking to', async () => {
  const { host, guest, booking } = await call({
    beforeJoin: async ({ host }) => {
      await host.page.screenshot({ path: join(SHOTS, 'booking-page.png'), fullPage: true });
    },
  });
  try {
    const h = await waitForMediaFlowing(host.page, 'the host');
    const g = await waitForMediaFlowing(guest.page, 'the guest');
    assert.ok(h.video.frames > 0 && h.audio.bytes > 0 && g.video.frames > 0 && g.audio.bytes > 0);
    assert.match(await host.page.getByTestId('call-status').textContent(), /Connected with Bea Guest/);
    assert.match(await guest.page.getByTestId('call-status').textContent(), /Connected with Ana Host/);
    assert.equal(await host.page.getByTestId('call-status').getAttribute('role'), 'status');
    // The guest sees the host's camera (solid blue), large; itself small.
    const seen = await waitFor(async () => {
      const p = await videoPixel(guest.page, 'remote-video');
      return p && p.rgb[2] > 150 && p.rgb[1] < 100 && p;
    }, { message: 'the host\'s blue camera on the guest\'s screen' });
    assert.equal(seen.width, 320);
    await waitFor(async () => /Quality: (good|fair|poor) · \d+ kbit\/s/.test(await guest.page.getByTestId('quality').textContent()), { message: 'the quality indicator' });
    for (const p of [host.page, guest.page]) {
      assert.deepEqual(await audit(p), [], 'axe on the call');
      assert.deepEqual(await cspViolations(p), []);
      for (const name of ['Microphone', 'Camera', 'Share screen', 'Leave']) {
        assert.ok(await p.getByRole('button', { name, exact: true }).isVisible(), name);
      }
    }
    await sleep(1500);
    await host.page.screenshot({ path: join(SHOTS, 'call-host.png') });
    await guest.page.screenshot({ path: join(SHOTS, 'call-guest.png') });
    // Leaving sends the quality summary; both people's reports are kept with the booking.
    await host.page.getByRole('button', { name: 'Leave' }).click();
    await waitForState(host.page, 'ended', 'the host after Leave');
    await waitForState(guest.page, 'waiting', 'the guest, alone again');
    await guest.page.getByRole('button', { name: 'Leave' }).click();
    const reported = await waitFor(async () => {
      const list = await events(booking.booking_id);
      const kinds = (role) => list.filter((e) => e.role === role).map((e) => e.type);
      return kinds('host').includes('quality') && kinds('guest').includes('quality') && list;
    }, { message: 'both participants\' client events' });
    const connected = reported.find((e) => e.type === 'connected' && e.role === 'guest');
    assert.ok(connected && connected.data.ms > 0, JSON.stringify(reported));
    // Janus's events reached the service: the booking shows who was there, by role, and that the
    // session ended when both had left (the publishers joined with their derived ids).
    const session = await waitFor(async () => {
      const r = await api(svc.base, 'GET', `/bookings/${booking.booking_id}`, { bearer: ADMIN });
      const s = r.body && r.body.session;
      return s && s.ended_at && s.participants.length >= 2 && s;
    }, { message: 'the session record of the call' });
    const roles = session.participants.map((p) => p.role);
    assert.ok(roles.includes('host') && roles.includes('guest'), JSON.stringify(session));
    assert.ok(session.participants.every((p) => p.joined_at && p.left_at), JSON.stringify(session));
    assert.ok(session.participants.some((p) => p.display === 'Bea Guest'), JSON.stringify(session));
  } finally {
    await close(host, guest);
  }
});

test('camera off is shown to the other side, never as a frozen frame', async () => {
  const { host, guest } = await call();
  try {
    const camera = host.page.getByRole('button', { name: 'Camera', exact: true });
    assert.equal(await camera.getAttribute('aria-pressed'), 'true');
    await camera.click();
    await waitFor(async () => (await camera.getAttribute('aria-pressed')) === 'false', { message: 'the Camera toggle off' });
    assert.equal(await camera.textContent(), 'Camera', 'a fixed label');
    await waitFor(async () => (await guest.page.getByTestId('call-status').getAttribute('data-remote-camera')) === 'false', { message: 'the guest told the camera is off' });
    assert.match(await guest.page.getByTestId('call-status').textContent(), /Ana Host turned the camera off/);
    assert.ok(await guest.page.getByTestId('remote-placeholder').isVisible());
    assert.match(await guest.page.getByTestId('remote-placeholder').textContent(), /turned the camera off/);
    assert.equal(await guest.page.getByTestId('remote-video').evaluate((v) => getComputedStyle(v).visibility), 'hidden');
    // The host's camera is really off (released), not sending black frames.
    assert.equal(await host.page.evaluate(() => document.querySelector('[data-testid=local-video]').srcObject.getVideoTracks().length), 0);
    await camera.click();
    await waitFor(async () => (await guest.page.getByTestId('call-status').getAttribute('data-remote-camera')) === 'true', { message: 'camera back on' });
    await waitForMediaFlowing(guest.page, 'the guest after the camera came back');
    assert.equal(await guest.page.getByTestId('remote-video').evaluate((v) => getComputedStyle(v).visibility), 'visible');
  } finally {
    await close(host, guest);
  }
});

test('screen share reaches the other side, without renegotiation, and the camera comes back after', async () => {
  const { host, guest } = await call();
  try {
    const camera = await waitFor(async () => {
      const p = await videoPixel(guest.page, 'remote-video');
      return p && p.rgb[2] > 150 && p;
    }, { message: 'the host\'s camera' });
    const share = host.page.getByRole('button', { name: 'Share screen', exact: true });
    await share.click();
    await waitFor(async () => (await share.getAttribute('aria-pressed')) === 'true', { message: 'sharing' });
    await waitFor(async () => (await guest.page.getByTestId('call-status').getAttribute('data-remote-screen')) === 'true', { message: 'the guest told of the screen' });
    assert.match(await guest.page.getByTestId('call-status').textContent(), /Ana Host is sharing the screen/);
    const screen = await waitFor(async () => {
      const p = await videoPixel(guest.page, 'remote-video');
      return p && p.width !== camera.width && p.rgb[2] < 150 && p;
    }, { message: 'the screen (not the blue camera) on the guest\'s side' });
    assert.ok(screen.width > 320, JSON.stringify(screen));
    await waitForMediaFlowing(guest.page, 'the guest watching the screen');
    await share.click();
    await waitFor(async () => {
      const p = await videoPixel(guest.page, 'remote-video');
      return p && p.width === 320 && p.rgb[2] > 150;
    }, { message: 'the camera back on the guest\'s side' });
    assert.equal(await guest.page.getByTestId('call-status').getAttribute('data-remote-screen'), 'false');
  } finally {
    await close(host, guest);
  }
});

test('the WebSocket is cut and the call recovers by itself', async () => {
  const { host, guest, booking, hostId } = await call();
  try {
    const join = await api(svc.base, 'GET', `/bookings/${booking.booking_id}/join`, { bearer: token(hostId) });
    assert.equal(join.status, 200);
    const cut = cutWebSockets(join.body.janus.ws);
    assert.ok(cut.before >= 2, `both people had a WebSocket to Janus (${cut.before})`);
    await waitFor(() => webSockets(join.body.janus.ws).length >= 2, { message: 'new WebSockets', timeout: 30000 });
    for (const [p, who] of [[host.page, 'the host'], [guest.page, 'the guest']]) {
      await waitForState(p, 'connected', `${who} after the cut`, 45000);
      const seen = await statesSeen(p);
      const i = seen.lastIndexOf('reconnecting');
      assert.ok(i > 0 && seen.slice(i).includes('connected'), `${who} showed reconnecting, then connected: ${seen}`);
      await waitForMediaFlowing(p, `${who} after the cut`);
    }
    await waitFor(async () => (await events(booking.booking_id)).some((e) => e.type === 'reconnect'), { message: 'the reconnect reported' });
  } finally {
    await close(host, guest);
  }
});

test('near the end: a warning for both, "extend" for the host, then fresh credentials for both', async () => {
  // Ends 2.5 minutes after it starts: inside the 5-minute warning at once. The suite runs with no
  // grace, so the Janus tokens would expire at that end: both calls must move to fresh ones.
  const { host, guest, booking } = await call({ startS: 2, endS: 150 });
  try {
    for (const p of [host.page, guest.page]) {
      await p.getByTestId('end-warning').waitFor();
      assert.match(await p.getByTestId('end-warning').textContent(), /The session ends in [12]:\d\d\./);
    }
    assert.equal(await guest.page.getByRole('button', { name: /Extend/ }).count(), 0, 'only the host extends');
    await host.page.getByRole('button', { name: 'Extend by 15 minutes' }).click();
    await host.page.getByTestId('end-warning').waitFor({ state: 'hidden' });
    const b = await api(svc.base, 'GET', `/bookings/${booking.booking_id}`, { bearer: ADMIN });
    assert.ok(new Date(b.body.end_time) - new Date(booking.end_time) >= 14 * 60 * 1000, JSON.stringify(b.body));
    const renewed = await waitFor(async () => {
      const list = await events(booking.booking_id);
      const by = (role) => list.some((e) => e.role === role && e.type === 'token-renewed');
      return by('host') && by('guest') && list;
    }, { timeout: 90000, interval: 2000, message: 'both calls moving to fresh credentials' });
    assert.ok(renewed);
    await guest.page.getByTestId('end-warning').waitFor({ state: 'hidden' });
    for (const [p, who] of [[host.page, 'the host'], [guest.page, 'the guest']]) {
      await waitForState(p, 'connected', `${who} on fresh credentials`, 45000);
      await waitForMediaFlowing(p, `${who} on fresh credentials`);
    }
  } finally {
    await close(host, guest);
  }
});

test('the session\'s end ends the call for both', async () => {
  const { host, guest, booking, hostId } = await call({ startS: 3, endS: 3600 });
  try {
    // The host's session is moved to end in a few seconds; at the end the service removes both.
    await sleep(3000);
    const end = new Date(Date.now() + 6000).toISOString();
    const moved = await api(svc.base, 'POST', `/bookings/${booking.booking_id}/extend`, { bearer: token(hostId), body: { end_time: end } });
    assert.equal(moved.status, 200, JSON.stringify(moved.body));
    await sleep(7000);
    await runTimer(svc.base, 'fleet-reconcile');
    for (const [p, who] of [[host.page, 'the host'], [guest.page, 'the guest']]) {
      await waitForState(p, 'ended', who, 30000);
      assert.match(await p.getByTestId('call-status').textContent(), /The session is over/);
    }
    const before = await inbound(guest.page);
    await sleep(1500);
    assert.deepEqual(await inbound(guest.page), { ...before, video: { ...before.video }, audio: { ...before.audio } }, 'nothing flows any more');
  } finally {
    await close(host, guest);
  }
});

test('a revoked invitation ends the guest\'s call; the host stays in the session', async () => {
  const { host, guest, booking, hostId } = await call();
  try {
    const r = await api(svc.base, 'DELETE', `/bookings/${booking.booking_id}/invitation`, { bearer: token(hostId) });
    assert.equal(r.status, 204);
    await waitForState(guest.page, 'ended', 'the guest', 30000);
    assert.match(await guest.page.getByTestId('call-status').textContent(), /no longer have access/);
    await waitForState(host.page, 'waiting', 'the host, in the session\'s new room', 30000);
  } finally {
    await close(host, guest);
  }
});

test('in Portuguese, on a phone held upright: the call\'s controls and states speak Portuguese', async () => {
  const { host, guest } = await call({ guestLang: PT, guestLocale: 'pt-PT', viewport: { width: 390, height: 844 } });
  try {
    for (const name of [PT.mic, PT.cam, PT.screen, PT.leave]) {
      assert.ok(await guest.page.getByRole('button', { name, exact: true }).isVisible(), name);
    }
    assert.match(await guest.page.getByTestId('call-status').textContent(), /Em chamada com Ana Host/);
    assert.deepEqual(await audit(guest.page), []);
    const box = await guest.page.getByTestId('remote-video').boundingBox();
    assert.ok(box.height > box.width, `the other person fills a portrait screen: ${JSON.stringify(box)}`);
    const pip = await guest.page.getByTestId('local-video').boundingBox();
    assert.ok(pip.width < box.width / 2, 'myself small, in a corner');
    await guest.page.screenshot({ path: join(SHOTS, 'call-phone-pt.png') });
  } finally {
    await close(host, guest);
  }
});
