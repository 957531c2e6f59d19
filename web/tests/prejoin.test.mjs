// Before joining: the device check and the guidance a person gets when something is missing.
// Each case is a real browser on the booking page of a real service (no call needed).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertIsolated, audit, book, launch, person, startService, token, waitFor } from './harness.mjs';

let svc;
before(async () => {
  assertIsolated();
  svc = await startService();
});
after(async () => svc && svc.stop());

async function bookingPage(browserOptions, { startS = 60, init } = {}) {
  const browser = await launch(browserOptions);
  const { page, context } = await person(browser);
  if (init) await context.addInitScript(init);
  const user = `host-${Date.now()}-${Math.random()}`;
  const b = await book(svc.base, user, startS, startS + 3600);
  await page.goto(`${svc.base}/app/bookings/${b.booking_id}#token=${token(user, { name: 'Ana' })}`);
  await page.waitForSelector('.prejoin');
  return { browser, page };
}

async function problem(page) {
  await waitFor(async () => (await page.getAttribute('.guidance', 'data-problem')) || null, { message: 'guidance' });
  return {
    kind: await page.getAttribute('.guidance', 'data-problem'),
    text: await page.textContent('.guidance'),
    role: await page.getAttribute('.guidance', 'role'),
  };
}

test('a working camera and microphone: live preview, device lists, a moving level meter', async () => {
  const { browser, page } = await bookingPage({});
  try {
    await waitFor(() => page.evaluate(() => document.querySelector('[data-testid=local-video]').videoWidth > 0), { message: 'preview' });
    const cams = await page.locator('select').nth(1).locator('option').count();
    assert.ok(cams >= 1);
    assert.ok(await page.getByLabel('Camera', { exact: true }).isEnabled());
    assert.ok(await page.getByLabel('Microphone', { exact: true }).isEnabled());
    // The fake microphone beeps: the meter must move.
    await waitFor(() => page.evaluate(() => document.querySelector('meter').value > 0.05), { message: 'the level meter to move' });
    assert.equal(await page.getAttribute('.guidance', 'data-problem'), '');
    assert.ok(await page.getByRole('button', { name: 'Join', exact: true }).isEnabled());
    assert.deepEqual(await audit(page), []);
  } finally {
    await browser.close();
  }
});

test('permission denied: the person is told how to allow the camera and microphone', async () => {
  const { browser, page } = await bookingPage({ fakeUi: false });
  try {
    const p = await problem(page);
    assert.equal(p.kind, 'denied');
    assert.equal(p.role, 'alert');
    assert.match(p.text, /blocking the camera and microphone/);
    assert.ok(await page.getByRole('button', { name: 'Try again' }).isVisible());
    assert.deepEqual(await audit(page), []);
  } finally {
    await browser.close();
  }
});

test('no camera or microphone: the person is told, and may still join to watch and listen', async () => {
  const { browser, page } = await bookingPage({ fakeDevices: false });
  try {
    const p = await problem(page);
    assert.equal(p.kind, 'no-device');
    assert.match(p.text, /No camera or microphone was found/);
    assert.ok(await page.getByRole('button', { name: 'Join', exact: true }).isEnabled());
  } finally {
    await browser.close();
  }
});

test('a browser without WebRTC is told to use another one and cannot press Join', async () => {
  const { browser, page } = await bookingPage({}, { init: 'delete window.RTCPeerConnection; delete window.webkitRTCPeerConnection;' });
  try {
    const p = await problem(page);
    assert.equal(p.kind, 'no-webrtc');
    assert.match(p.text, /cannot make video calls/);
    assert.ok(await page.getByRole('button', { name: 'Join', exact: true }).isDisabled());
  } finally {
    await browser.close();
  }
});

test('too early: a countdown to the window opening, and Join waits for it', async () => {
  // Starts in 20 minutes: the join window opens 15 minutes before, so in about 5 minutes.
  const { browser, page } = await bookingPage({}, { startS: 20 * 60 });
  try {
    const countdown = page.getByTestId('countdown');
    await countdown.waitFor();
    const first = await countdown.textContent();
    assert.match(first, /The session opens at .+\. You can join in [45]:\d\d\./);
    assert.ok(await page.getByRole('button', { name: 'Join', exact: true }).isDisabled());
    await waitFor(async () => (await countdown.textContent()) !== first, { message: 'the countdown to tick' });
  } finally {
    await browser.close();
  }
});
