// Relay-only calls through a real coturn: the service hands each participant its host's TURN
// server with credentials minted for the join and the deployment's `ICE_TRANSPORT_POLICY=relay`;
// each browser then gathers relayed candidates only, so every packet between it and Janus goes
// through coturn. coturn runs with the Janus VMs' own configuration (web/tests/coturn.mjs) inside
// the suite's network namespace: TURN on 198.18.7.1, and Janus's 198.18.7.2 the only peer it
// relays to. Credentials minted with another secret, or expired, are refused by coturn.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { api, assertIsolated, book, launch, person, startService, token, waitFor, waitForMediaFlowing, waitForState } from './harness.mjs';
import { JANUS_IP, TURN_IP, startCoturn, turnCredential } from './coturn.mjs';

const TURN_SECRET = 'browser-suite-turn-shared-secret-5f2c';
let turn;
let svc;
let hostBrowser;
let guestBrowser;

/** The service's settings for a relay-only deployment with these ICE URLs (for every host). */
function relayOnly(urls) {
  return { TURN_URLS: JSON.stringify(urls), TURN_SHARED_SECRET: TURN_SECRET, ICE_TRANSPORT_POLICY: 'relay' };
}

before(async () => {
  assertIsolated();
  turn = await startCoturn(TURN_SECRET);
  svc = await startService(relayOnly([turn.stunUrl, turn.turnUrl('udp')]));
  hostBrowser = await launch();
  guestBrowser = await launch();
});

after(async () => {
  for (const b of [hostBrowser, guestBrowser]) if (b) await b.close();
  if (svc) await svc.stop();
  if (turn) await turn.stop();
});

/** A booked session (through `service`) with host and guest connected through the web client. */
async function call(service) {
  const hostId = `turn-host-${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
  const booking = await book(service.base, hostId, 60, 3600);
  const inv = await api(service.base, 'POST', `/bookings/${booking.booking_id}/invitation`, { bearer: token(hostId) });
  assert.equal(inv.status, 201, JSON.stringify(inv.body));
  const host = await person(hostBrowser);
  const guest = await person(guestBrowser);
  await host.page.goto(`${service.base}/app/bookings/${booking.booking_id}#token=${token(hostId, { name: 'Ana Host' })}`);
  await guest.page.goto(inv.body.url);
  await guest.page.getByLabel('Your name').fill('Bea Guest');
  const hostJoin = host.page.getByRole('button', { name: 'Join', exact: true });
  const guestJoin = guest.page.getByRole('button', { name: 'Join', exact: true });
  await waitFor(async () => (await hostJoin.isEnabled()) && (await guestJoin.isEnabled()), { message: 'both Join buttons' });
  await hostJoin.click();
  await guestJoin.click();
  try {
    await waitForState(host.page, 'connected', 'the host', 45000);
    await waitForState(guest.page, 'connected', 'the guest', 45000);
  } catch (e) {
    // What the pages show, each part bounded and best effort: a stuck page must not replace the
    // failure's own message with a timeout of its own.
    const look = (p) => p.catch((err) => `unreadable: ${err.message.split('\n')[0]}`);
    const dump = {
      host: await look(selectedPairs(host.page)),
      guest: await look(selectedPairs(guest.page)),
      guestState: await look(guest.page.getAttribute('[data-testid="call-status"]', 'data-state', { timeout: 2000 })),
    };
    throw new Error(`${e.message}\n${JSON.stringify(dump)}\n${turn.text().split('\n').filter((l) => /ERROR|error/.test(l)).slice(-10).join('\n')}`);
  }
  return { host, guest, booking, hostId };
}

async function close(...people) {
  for (const p of people) await p.context.close().catch(() => {});
}

/**
 * For each live RTCPeerConnection of the page: its ICE transport policy, the candidate types it
 * gathered, and its selected candidate pair (the transport's, else the nominated succeeded one).
 */
function selectedPairs(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const pc of window.__pcs || []) {
      if (pc.connectionState === 'closed') continue;
      const stats = await pc.getStats();
      const byId = new Map();
      stats.forEach((s) => byId.set(s.id, s));
      let pair = null;
      stats.forEach((s) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId);
      });
      if (!pair) {
        stats.forEach((s) => {
          if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
        });
      }
      const local = pair && byId.get(pair.localCandidateId);
      const remote = pair && byId.get(pair.remoteCandidateId);
      const gathered = [];
      stats.forEach((s) => {
        if (s.type === 'local-candidate') gathered.push(s.candidateType);
      });
      out.push({
        policy: pc.getConfiguration().iceTransportPolicy,
        gathered,
        local: local && { type: local.candidateType, address: local.address, relayProtocol: local.relayProtocol },
        remote: remote && { address: remote.address },
        bytesReceived: pair ? pair.bytesReceived : 0,
      });
    }
    return out;
  });
}

/** Both of the page's connections (publisher, subscriber) run over a relay of coturn to Janus. */
async function assertRelayed(page, who, relayProtocol) {
  const pairs = await selectedPairs(page);
  const seen = JSON.stringify(pairs);
  assert.ok(pairs.length >= 2, `${who}: a publisher and a subscriber connection: ${seen}`);
  for (const p of pairs) {
    assert.equal(p.policy, 'relay', `${who}: built with iceTransportPolicy relay: ${seen}`);
    assert.ok(p.gathered.length > 0 && p.gathered.every((t) => t === 'relay'), `${who}: relayed candidates only: ${seen}`);
    assert.deepEqual(p.local, { type: 'relay', address: TURN_IP, relayProtocol }, `${who}: the selected pair is relayed by coturn: ${seen}`);
    assert.equal(p.remote.address, JANUS_IP, `${who}: to Janus's private address, the one peer coturn allows: ${seen}`);
    assert.ok(p.bytesReceived > 0, `${who}: media arrived over the relayed pair: ${seen}`);
  }
}

test('forced to relay, host and guest decode each other through coturn over UDP', async () => {
  const { host, guest } = await call(svc);
  try {
    for (const [p, who] of [[host.page, 'the host'], [guest.page, 'the guest']]) {
      await waitForMediaFlowing(p, who);
      await assertRelayed(p, who, 'udp');
    }
    // coturn refused to relay to Janus's other addresses: its only peer is Janus's private one.
    assert.match(turn.text(), /peer IP 198\.18\.7\.1 denied/, 'coturn refused a peer other than Janus\'s address');
  } finally {
    await close(host, guest);
  }
});

test('forced to relay with TURN over TCP only (a network that blocks UDP), the call still carries media', async () => {
  const tcp = await startService(relayOnly([turn.turnUrl('tcp')]));
  let people = [];
  try {
    const { host, guest } = await call(tcp);
    people = [host, guest];
    for (const [p, who] of [[host.page, 'the host'], [guest.page, 'the guest']]) {
      await waitForMediaFlowing(p, who);
      await assertRelayed(p, who, 'tcp');
    }
  } finally {
    await close(...people);
    await tcp.stop();
  }
});

/** What a browser gathers with only these ICE servers and relay-only: candidates and errors. */
function gather(page, iceServers) {
  return page.evaluate(async (servers) => {
    const pc = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: 'relay' });
    const candidates = [];
    const errors = [];
    pc.onicecandidate = (e) => {
      if (e.candidate && e.candidate.candidate) candidates.push({ type: e.candidate.type, address: e.candidate.address });
    };
    pc.onicecandidateerror = (e) => errors.push({ code: e.errorCode, text: e.errorText });
    pc.createDataChannel('probe');
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      const done = () => pc.iceGatheringState === 'complete' && resolve();
      pc.onicegatheringstatechange = done;
      done();
      setTimeout(resolve, 20000);
    });
    pc.close();
    return { candidates, errors };
  }, iceServers);
}

test('coturn refuses TURN credentials minted with another secret, and expired ones', async () => {
  const hostId = `turn-creds-${Date.now()}`;
  const booking = await book(svc.base, hostId, 60, 3600);
  const join = await api(svc.base, 'GET', `/bookings/${booking.booking_id}/join`, { bearer: token(hostId) });
  assert.equal(join.status, 200, JSON.stringify(join.body));
  assert.equal(join.body.ice_transport_policy, 'relay');
  const minted = join.body.ice_servers.find((s) => s.username);
  assert.deepEqual(minted.urls, [turn.turnUrl('udp')], JSON.stringify(join.body.ice_servers));
  assert.equal(minted.username, `${Math.floor(new Date(join.body.token_expires_at) / 1000)}:${booking.booking_id}.host`);
  const { context, page } = await person(hostBrowser);
  try {
    await page.goto(`${svc.base}/app/`);
    const ok = await gather(page, [minted]);
    assert.ok(ok.candidates.some((c) => c.type === 'relay' && c.address === TURN_IP), `the join's credentials open a relay: ${JSON.stringify(ok)}`);

    const otherSecret = { ...minted, credential: turnCredential('not-the-shared-secret', minted.username) };
    const expiredName = `${Math.floor(Date.now() / 1000) - 60}:${booking.booking_id}.host`;
    const expired = { ...minted, username: expiredName, credential: turnCredential(TURN_SECRET, expiredName) };
    for (const [server, what] of [[otherSecret, 'another secret'], [expired, 'an expired username']]) {
      const refused = await gather(page, [server]);
      assert.deepEqual(refused.candidates, [], `no relay with ${what}: ${JSON.stringify(refused)}`);
      assert.ok(refused.errors.some((e) => e.code === 401), `coturn answered 401 for ${what}: ${JSON.stringify(refused)}`);
    }
  } finally {
    await context.close();
  }
});
