// Production sign-in, end to end without leaving the machine: the service configured for
// Microsoft Entra ID (AUTH_ISSUER, AUTH_AUDIENCE, AUTH_CLIENT_ID) tells the page to use MSAL.js;
// the browser's requests to login.microsoftonline.com are answered inside the browser by a
// stand-in that follows the OAuth 2.0 authorization code flow with PKCE (the test checks what
// MSAL.js asks for), and the access token it issues is verified by the service against a JWKS
// served on loopback. The person then sees their sessions, signed in with their Entra name.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { createServer } from 'node:http';
import { assertIsolated, audit, cspViolations, launch, person, startService } from './harness.mjs';

const TENANT = 'tenant-a';
const LOGIN = 'https://login.microsoftonline.com';
const ISSUER = `${LOGIN}/${TENANT}/v2.0`;
const AUDIENCE = 'api://suroga';
const CLIENT = 'spa-client';
const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const KID = 'test-key-1';

let svc;
let jwks;
let browser;

function b64url(x) {
  return Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');
}

function rs256(claims) {
  const head = `${b64url({ alg: 'RS256', typ: 'JWT', kid: KID })}.${b64url(claims)}`;
  return `${head}.${sign('RSA-SHA256', Buffer.from(head), privateKey).toString('base64url')}`;
}

before(async () => {
  assertIsolated();
  jwks = createServer((req, res) => {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: KID, use: 'sig', alg: 'RS256' }] }));
  });
  await new Promise((r) => jwks.listen(0, '127.0.0.1', r));
  svc = await startService({
    AUTH_ISSUER: ISSUER,
    AUTH_AUDIENCE: AUDIENCE,
    AUTH_JWKS_URL: `http://127.0.0.1:${jwks.address().port}/keys`,
    AUTH_CLIENT_ID: CLIENT,
  });
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (svc) await svc.stop();
  if (jwks) jwks.close();
});

test('Entra ID sign-in through MSAL.js: authorization code with PKCE, then the API accepts the token', async () => {
  const { page, context } = await person(browser, { locale: 'en-GB' });
  const seen = { authorize: null, token: null };
  const now = Math.floor(Date.now() / 1000);
  const oid = '00000000-0000-0000-0000-00000000a11c';
  await context.route(`${LOGIN}/**`, async (route) => {
    const req = route.request();
    const url = new URL(req.url());
    const json = (body) => route.fulfill({ status: 200, contentType: 'application/json', headers: { 'Access-Control-Allow-Origin': '*' }, body: JSON.stringify(body) });
    if (url.pathname.endsWith('/discovery/instance')) {
      return json({
        tenant_discovery_endpoint: `${ISSUER}/.well-known/openid-configuration`,
        'api-version': '1.1',
        metadata: [{ preferred_network: 'login.microsoftonline.com', preferred_cache: 'login.windows.net', aliases: ['login.microsoftonline.com', 'login.windows.net', 'login.microsoft.com', 'sts.windows.net'] }],
      });
    }
    if (url.pathname.endsWith('/.well-known/openid-configuration')) {
      return json({
        issuer: `${LOGIN}/{tenantid}/v2.0`,
        authorization_endpoint: `${LOGIN}/${TENANT}/oauth2/v2.0/authorize`,
        token_endpoint: `${LOGIN}/${TENANT}/oauth2/v2.0/token`,
        end_session_endpoint: `${LOGIN}/${TENANT}/oauth2/v2.0/logout`,
        jwks_uri: `${LOGIN}/${TENANT}/discovery/v2.0/keys`,
        response_modes_supported: ['query', 'fragment', 'form_post'],
        response_types_supported: ['code'],
        scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
        subject_types_supported: ['pairwise'],
        id_token_signing_alg_values_supported: ['RS256'],
        http_logout_supported: true,
        frontchannel_logout_supported: true,
      });
    }
    if (url.pathname.endsWith('/oauth2/v2.0/authorize')) {
      seen.authorize = Object.fromEntries(url.searchParams);
      const back = new URLSearchParams({
        code: 'code-from-the-stand-in',
        state: url.searchParams.get('state'),
        client_info: b64url({ uid: oid, utid: TENANT }),
      });
      const sep = url.searchParams.get('response_mode') === 'query' ? '?' : '#';
      return route.fulfill({ status: 302, headers: { Location: `${url.searchParams.get('redirect_uri')}${sep}${back}` } });
    }
    if (url.pathname.endsWith('/oauth2/v2.0/token')) {
      seen.token = Object.fromEntries(new URLSearchParams(req.postData() || ''));
      const claims = { iss: ISSUER, tid: TENANT, oid, sub: 'pairwise-sub', name: 'Ana Entra', preferred_username: 'ana@example.org', iat: now, nbf: now, exp: now + 3600 };
      return json({
        token_type: 'Bearer',
        scope: `${AUDIENCE}/.default`,
        expires_in: 3600,
        ext_expires_in: 3600,
        access_token: rs256({ ...claims, aud: AUDIENCE, scp: 'access_as_user', azp: CLIENT }),
        id_token: rs256({ ...claims, aud: CLIENT, nonce: seen.authorize.nonce, ver: '2.0' }),
        client_info: b64url({ uid: oid, utid: TENANT }),
      });
    }
    return route.fulfill({ status: 404, body: 'not part of the stand-in' });
  });
  try {
    const cfg = await (await fetch(`${svc.base}/api/v1/client-config`)).json();
    assert.deepEqual(cfg.auth, { mode: 'entra', client_id: CLIENT, authority: `${LOGIN}/${TENANT}`, scopes: [`${AUDIENCE}/.default`] });
    await page.goto(`${svc.base}/app/`);
    const button = page.getByRole('button', { name: 'Sign in with Microsoft' });
    await button.waitFor();
    assert.deepEqual(await audit(page), []);
    await button.click();
    await page.getByRole('heading', { level: 1, name: 'My sessions' }).waitFor({ timeout: 20000 });
    await page.getByText('Signed in as Ana Entra').waitFor();
    // What MSAL.js asked the authority for: our app, our redirect, the API's scope, PKCE.
    assert.equal(seen.authorize.client_id, CLIENT);
    assert.equal(seen.authorize.redirect_uri, `${svc.base}/app/`);
    assert.equal(seen.authorize.response_type, 'code');
    assert.equal(seen.authorize.code_challenge_method, 'S256');
    assert.match(seen.authorize.scope, /api:\/\/suroga\/\.default/);
    assert.equal(seen.token.grant_type, 'authorization_code');
    assert.equal(createHash('sha256').update(seen.token.code_verifier).digest('base64url'), seen.authorize.code_challenge);
    // The list came from the API with the Entra token: no error shown, the empty lists are there.
    await page.getByText('No upcoming sessions.').waitFor();
    const served = svc.log.join('').split('\n').filter((l) => l.includes('"/api/v1/bookings"'));
    assert.ok(served.some((l) => /"status":200/.test(l)), `GET /api/v1/bookings answered 200: ${served.join('\n')}`);
    assert.deepEqual(await cspViolations(page), []);
  } finally {
    await context.close();
  }
});
