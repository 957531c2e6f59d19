import { test } from 'node:test';
import { execFileSync } from 'node:child_process';
import { api, assertIsolated, startService, launch, person, token, book, waitForState, waitForMediaFlowing, inbound, sleep, waitFor } from './harness.mjs';

test('scratch: ws cut', async () => {
  assertIsolated();
  const svc = await startService();
  const browser = await launch();
  const browser2 = await launch();
  try {
    const b = await book(svc.base, 'alice', 30, 3600);
    const tok = token('alice', { name: 'Alice' });
    const join = await api(svc.base, 'GET', `/bookings/${b.booking_id}/join`, { bearer: tok });
    const wsPort = new URL(join.body.janus.ws).port;
    const a = await person(browser);
    const c = await person(browser2);
    for (const p of [a, c]) {
      await p.context.addInitScript("localStorage.setItem('suroga.debug','1')");
      await p.page.goto(`${svc.base}/app/bookings/${b.booking_id}#token=${tok}`);
      await p.page.getByRole('button', { name: 'Join', exact: true }).click();
    }
    try {
      await sleep(15000);
      console.log('A', a.page.consoleLog.filter(l => /videoroom|publishers|error|Error/.test(l)).slice(-20).join('\n'));
      console.log('C', c.page.consoleLog.filter(l => /videoroom|publishers|error|Error/.test(l)).slice(-20).join('\n'));
      await waitForState(a.page, 'connected', 'a', 40000);
      await waitForState(c.page, 'connected', 'c', 40000);
      const pid = browser.process ? null : null;
      console.log(execFileSync('ss', ['-tnp', `dport = :${wsPort}`]).toString());
      const states = [];
      const t0 = Date.now();
      const rec = setInterval(async () => { states.push([Date.now() - t0, await a.page.getAttribute('[data-testid=call-status]', 'data-state').catch(() => '?')]); }, 200);
      execFileSync('ss', ['-K', 'dport', '=', `:${wsPort}`]);
      await sleep(8000);
      clearInterval(rec);
      console.log(JSON.stringify(states));
      await waitForState(a.page, 'connected', 'a after', 40000);
      await waitForMediaFlowing(a.page, 'a after');
      await waitForMediaFlowing(c.page, 'c after');
      await sleep(3000);
      console.log(execFileSync('ss', ['-tnp', `dport = :${wsPort}`]).toString());
    } finally {
      console.log(a.page.consoleLog.slice(-15).join('\n'));
    }
  } finally {
    await browser.close(); await browser2.close();
    await svc.stop();
  }
});
