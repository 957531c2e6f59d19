// A real coturn (Debian's `turnserver`) for the browser suite, started inside the suite's network
// namespace with the Janus VMs' own configuration (infra/vm/turnserver.conf), rendered as the
// deployment and the VM's render-config would. As on a VM, the TURN address is a second address
// of Janus's network interface (198.18.7.3 on v1, next to Janus's 198.18.7.2), and Janus's
// address is the only peer coturn relays to; the shared secret is the test's. TLS is off, as
// render-config leaves it until the VM has a certificate; there is no NAT, so no external-ip.
//
// Why the second address on Janus's interface, as in production: libnice sends from the
// interface its candidate lives on, so a packet from Janus (v1) to an address of the other veth
// end (v0) crosses the pair and arrives from a local source address, which Linux drops.

import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, spawnLogged, waitFor } from './harness.mjs';

export const TURN_IP = '198.18.7.3';
export const JANUS_IP = '198.18.7.2';
const JANUS_LINK = 'v1';

/** A TCP port free on `ip` (coturn takes the same number over UDP; nothing else runs UDP here). */
function freePort(ip) {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, ip, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** coturn's TURN REST API credential: base64(HMAC-SHA1(secret, username)). */
export function turnCredential(secret, username) {
  return createHmac('sha1', secret).update(username).digest('base64');
}

/** Starts coturn; returns {port, urls(transport), log, stop()}. Fails loudly when it cannot start. */
export async function startCoturn(secret) {
  execFileSync('ip', ['addr', 'add', `${TURN_IP}/32`, 'dev', JANUS_LINK]);
  const dir = mkdtempSync(join(tmpdir(), 'suroga-coturn-'));
  const port = await freePort(TURN_IP);
  const tlsPort = await freePort(TURN_IP);
  const tokens = {
    __TURN_PRIVATE_IP__: TURN_IP,
    __TURN_PORT__: String(port),
    __TURN_TLS_PORT__: String(tlsPort),
    __TURN_FQDN__: 'turn.suroga.test',
    __JANUS_PRIVATE_IP__: JANUS_IP,
    '@@TURN_SHARED_SECRET@@': secret,
    '/run/suroga-turn/': `${dir}/`,
  };
  let conf = readFileSync(join(ROOT, 'infra', 'vm', 'turnserver.conf'), 'utf8');
  for (const [k, v] of Object.entries(tokens)) conf = conf.split(k).join(v);
  // No NAT in the namespace, so no public/private mapping: coturn would also permit the
  // mapping's private part (its own address) as a peer, and the test proves that the only peer
  // it relays to is Janus's private address.
  conf = conf.replace(/^external-ip=.*\n/m, '');
  if (/__[A-Z_]+__|@@/.test(conf)) throw new Error(`a marker is left in the rendered turnserver.conf:\n${conf}`);
  writeFileSync(join(dir, 'turnserver.conf'), `${conf}no-tls\n`, { mode: 0o600 });
  const proc = spawnLogged('turnserver', ['-c', join(dir, 'turnserver.conf'), '--pidfile', join(dir, 'turnserver.pid')]);
  const { child, log, text } = proc;
  try {
    await waitFor(
      () => {
        if (proc.exited() !== null) throw new Error(`turnserver exited (${proc.exited()}):\n${text()}`);
        const listening = (flag) =>
          execFileSync('ss', ['-Hln', flag, 'src', `${TURN_IP}:${port}`]).toString().trim() !== '';
        return listening('-u') && listening('-t');
      },
      { timeout: 15000, interval: 100, message: `coturn listening on ${TURN_IP}:${port} (UDP and TCP)` },
    );
  } catch (e) {
    child.kill('SIGKILL');
    execFileSync('ip', ['addr', 'del', `${TURN_IP}/32`, 'dev', JANUS_LINK]);
    throw e;
  }
  return {
    port,
    log,
    text,
    /** The TURN URL for `transport` ('udp' or 'tcp'). */
    turnUrl: (transport) => `turn:${TURN_IP}:${port}?transport=${transport}`,
    stunUrl: `stun:${TURN_IP}:${port}`,
    async stop() {
      await proc.stop('coturn');
      rmSync(dir, { recursive: true, force: true });
      execFileSync('ip', ['addr', 'del', `${TURN_IP}/32`, 'dev', JANUS_LINK]);
    },
  };
}
