// The pages as a person meets them: both languages (pt-BR falls back to pt-PT), an axe-core
// audit of each page, no CSP violation, booking and cancelling through the forms, and every
// control reachable by keyboard with a visible focus.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertIsolated, audit, book, cspViolations, launch, person, startService, token, waitFor } from './harness.mjs';

let svc;
let browser;
before(async () => {
  assertIsolated();
  svc = await startService();
  browser = await launch();
});
after(async () => {
  if (browser) await browser.close();
  if (svc) await svc.stop();
});

const TEXT = {
  en: { lang: 'en', signin: 'Sign in', home: 'My sessions', book: 'Book a session', booking: 'Session', invalid: /This invitation link is not valid/, notfound: 'Page not found', join: 'Join' },
  pt: { lang: 'pt-PT', signin: 'Iniciar sessão', home: 'As minhas sessões', book: 'Marcar uma sessão', booking: 'Sessão', invalid: /Esta ligação de convite não é válida/, notfound: 'Página não encontrada', join: 'Entrar' },
};

async function visit(page, url, heading) {
  await page.goto(url);
  await page.getByRole('heading', { level: 1, name: heading, exact: true }).waitFor({ timeout: 15000 });
}

for (const [locale, t] of [['en-GB', TEXT.en], ['pt-PT', TEXT.pt], ['pt-BR', TEXT.pt]]) {
  test(`every page renders in ${locale}, passes axe-core and keeps to the CSP`, async () => {
    const { page, context } = await person(browser, { locale });
    try {
      const user = `lang-${locale}-${Date.now()}`;
      const b = await book(svc.base, user, 40 * 60, 100 * 60);
      const pages = [
        [`${svc.base}/app/`, t.signin],
        [`${svc.base}/app/#token=${token(user, { name: 'Ana' })}`, t.home],
        [`${svc.base}/app/book`, t.book],
        [`${svc.base}/app/bookings/${b.booking_id}`, t.booking],
        [`${svc.base}/app/no/such/page`, t.notfound],
      ];
      for (const [url, heading] of pages) {
        await visit(page, url, heading);
        assert.equal(await page.getAttribute('html', 'lang'), t.lang, url);
        assert.deepEqual(await audit(page), [], `axe on ${url}`);
        assert.deepEqual(await cspViolations(page), [], `CSP on ${url}`);
      }
      // The booking page holds the device check and its Join button, named in the language.
      await visit(page, `${svc.base}/app/bookings/${b.booking_id}`, t.booking);
      await page.getByRole('button', { name: t.join, exact: true }).waitFor();
      // The guest page for a code that opens nothing.
      await page.goto(`${svc.base}/app/i/not-a-live-code`);
      await waitFor(async () => t.invalid.test((await page.textContent('main')) || ''), { message: 'the invalid-link message' });
      assert.deepEqual(await audit(page), []);
    } finally {
      await context.close();
    }
  });
}

test('the language can be switched, and the choice stays', async () => {
  const { page, context } = await person(browser, { locale: 'en-US' });
  try {
    await visit(page, `${svc.base}/app/#token=${token(`switch-${Date.now()}`)}`, 'My sessions');
    await page.getByLabel('Language').selectOption('pt-PT');
    await page.getByRole('heading', { level: 1, name: 'As minhas sessões' }).waitFor();
    assert.equal(await page.getAttribute('html', 'lang'), 'pt-PT');
    await page.reload();
    await page.getByRole('heading', { level: 1, name: 'As minhas sessões' }).waitFor();
    await page.getByLabel('Idioma').selectOption('en');
    await page.getByRole('heading', { level: 1, name: 'My sessions' }).waitFor();
  } finally {
    await context.close();
  }
});

test('a host books a session with the form, finds it in the list, and cancels it', async () => {
  const { page, context } = await person(browser, { locale: 'en-US' });
  try {
    await visit(page, `${svc.base}/app/#token=${token(`booker-${Date.now()}`)}`, 'My sessions');
    await page.getByText('No upcoming sessions.').waitFor();
    await page.getByRole('link', { name: 'Book a session' }).click();
    await page.getByRole('heading', { level: 1, name: 'Book a session' }).waitFor();
    const start = new Date(Date.now() + 3 * 3600 * 1000);
    const two = (n) => String(n).padStart(2, '0');
    await page.getByLabel('Date').fill(`${start.getFullYear()}-${two(start.getMonth() + 1)}-${two(start.getDate())}`);
    await page.getByLabel('Start time').fill(`${two(start.getHours())}:00`);
    await page.getByLabel('Length').selectOption('45');
    await page.getByRole('button', { name: 'Book', exact: true }).click();
    await page.waitForURL(/\/app\/bookings\/[0-9a-f-]{36}$/);
    assert.equal(await page.getByTestId('booking-status').textContent(), 'Upcoming');
    assert.match(await page.getByTestId('booking-when').textContent(), /:00[^:]*–[^:]*:45/);
    await page.getByRole('link', { name: 'Back to my sessions' }).click();
    const item = page.locator('section', { has: page.getByRole('heading', { name: 'Upcoming' }) }).locator('li');
    await item.first().waitFor();
    assert.equal(await item.count(), 1);
    page.once('dialog', (d) => d.accept());
    await item.getByRole('button', { name: 'Cancel session' }).click();
    const past = page.locator('section', { has: page.getByRole('heading', { name: 'Past' }) });
    await past.getByText('Cancelled').waitFor();
    await page.getByText('No upcoming sessions.').waitFor();
  } finally {
    await context.close();
  }
});

test('every control of the booking page is reachable by keyboard, with a visible focus', async () => {
  const { page, context } = await person(browser, { locale: 'en-US' });
  try {
    const user = `keys-${Date.now()}`;
    const b = await book(svc.base, user, 60, 3600);
    await visit(page, `${svc.base}/app/bookings/${b.booking_id}#token=${token(user)}`, 'Session');
    await page.getByRole('button', { name: 'Join', exact: true }).waitFor();
    const seen = new Map();
    for (let i = 0; i < 40; i += 1) {
      await page.keyboard.press('Tab');
      const f = await page.evaluate(() => {
        const el = document.activeElement;
        if (!el || el === document.body) return null;
        const label = el.labels && el.labels[0] ? el.labels[0].textContent : '';
        const style = getComputedStyle(el);
        return {
          name: `${el.tagName.toLowerCase()}:${(label || el.getAttribute('aria-label') || el.textContent || '').trim()}`,
          outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2,
        };
      });
      if (f) seen.set(f.name, f.outline);
    }
    for (const wanted of [
      'a:Skip to content',
      'select:Language',
      'button:Sign out',
      'input:Only this user may join (optional)',
      'button:Create invitation link',
      'button:Cancel session',
      'select:Camera',
      'select:Microphone',
      'button:Join',
      'a:Back to my sessions',
    ]) {
      assert.ok(seen.has(wanted), `${wanted} is not reachable by Tab; reached: ${[...seen.keys()].join(', ')}`);
      assert.ok(seen.get(wanted), `${wanted} has no visible focus indicator`);
    }
  } finally {
    await context.close();
  }
});

test('the API docs page works under its own strict CSP (inline code allowed by hash only)', async () => {
  const { page, context } = await person(browser, { locale: 'en-US' });
  try {
    const res = await page.goto(`${svc.base}/api/docs`);
    const csp = res.headers()['content-security-policy'];
    assert.match(csp, /script-src 'sha256-[A-Za-z0-9+/=]+';/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    await page.locator('details.op').first().waitFor();
    assert.ok((await page.locator('details.op').count()) > 10, 'the operations are listed');
    assert.deepEqual(await cspViolations(page), []);
  } finally {
    await context.close();
  }
});

test('the host creates, copies and revokes the guest invitation on the booking page; the guest page follows', async () => {
  const { page, context } = await person(browser, { locale: 'en-GB', permissions: ['clipboard-read', 'clipboard-write'] });
  const guest = await person(browser, { locale: 'en-GB' });
  try {
    const user = `inviter-${Date.now()}`;
    const b = await book(svc.base, user, 30 * 60, 90 * 60);
    await visit(page, `${svc.base}/app/bookings/${b.booking_id}#token=${token(user, { name: 'Ana' })}`, 'Session');
    assert.match(await page.getByTestId('invitation-state').textContent(), /No invitation yet/);
    await page.getByRole('button', { name: 'Create invitation link' }).click();
    const url = await page.getByLabel('Invitation link').inputValue();
    assert.match(url, /\/app\/i\/[A-Za-z0-9_-]+$/);
    await page.getByRole('button', { name: 'Copy link' }).click();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), url);
    await page.getByText('Link copied.').waitFor({ state: 'attached' });
    // The guest's page: the session's time and host, and the name field.
    await guest.page.goto(url);
    await guest.page.getByRole('heading', { level: 1, name: 'Session with Ana' }).waitFor();
    assert.ok(await guest.page.getByLabel('Your name').isVisible());
    assert.deepEqual(await audit(guest.page), []);
    // A reload shows the invitation as active (its code is never shown again).
    await page.reload();
    await page.getByTestId('invitation-state').waitFor();
    assert.match(await page.getByTestId('invitation-state').textContent(), /An invitation link is active/);
    await page.getByRole('button', { name: 'Revoke invitation' }).click();
    await waitFor(async () => /No invitation yet/.test(await page.getByTestId('invitation-state').textContent()), { message: 'revoked' });
    await guest.page.reload();
    await guest.page.getByTestId('invitation-invalid').waitFor();
  } finally {
    await context.close();
    await guest.context.close();
  }
});
