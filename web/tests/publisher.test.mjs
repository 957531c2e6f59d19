// A real browser joins a booked session with exactly what the join endpoint returned and
// publishes: the API, asking Janus, then lists it as a publisher of the session's room.
// (Formerly tests/browser.rs with a fixture page; now the web client itself, in the namespace.)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { api, assertIsolated, book, launch, person, startService, token, waitFor, waitForState } from './harness.mjs';

let svc;
before(async () => {
  assertIsolated();
  svc = await startService();
});
after(async () => svc && svc.stop());

test('a browser that joins is listed by the API as a publisher of the session', async () => {
  const browser = await launch();
  try {
    const host = `publisher-${Date.now()}`;
    const b = await book(svc.base, host, 60, 3600);
    const { page } = await person(browser);
    await page.goto(`${svc.base}/app/bookings/${b.booking_id}#token=${token(host, { name: 'Ana' })}`);
    await page.getByRole('button', { name: 'Join', exact: true }).click();
    await waitForState(page, 'waiting', 'the host, alone in the room');
    const listed = await waitFor(
      async () => {
        const r = await api(svc.base, 'GET', `/bookings/${b.booking_id}/participants`, { bearer: token(host) });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        return r.body.participants.some((p) => p.publisher && p.display === 'Ana') && r.body;
      },
      { timeout: 20000, message: 'the API to list the browser as a publisher' },
    );
    assert.equal(listed.participant_count, 1, JSON.stringify(listed));
    const join = await api(svc.base, 'GET', `/bookings/${b.booking_id}/join`, { bearer: token(host, { name: 'Ana' }) });
    assert.equal(listed.room_id, join.body.room_id, 'the session\'s own Janus room, the one /join named');
  } finally {
    await browser.close();
  }
});
