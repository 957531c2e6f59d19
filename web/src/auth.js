// Who the person is. Two ways in, chosen by GET /api/v1/client-config:
// - local: a development token passed once as /app/#token=<jwt> (what `suroga token --url` prints);
//   it is kept in sessionStorage (this tab only) and removed from the address bar at once;
// - entra: Microsoft Entra ID through MSAL.js (loaded only in that mode), redirect flow.
// Guests need neither: the invitation code is their credential.

const KEY = 'suroga.token';
let mode = 'local';
let msal = null;

function decode(jwt) {
  try {
    const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(decodeURIComponent(escape(atob(part))));
  } catch (e) {
    return null;
  }
}

function liveLocalToken() {
  const t = sessionStorage.getItem(KEY);
  const claims = t && decode(t);
  if (!claims || (claims.exp && claims.exp * 1000 < Date.now())) return null;
  return t;
}

/** Moves a `#token=` from the address bar into sessionStorage; true when there was one. */
export function takeFragmentToken() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (!hash.has('token')) return false;
  sessionStorage.setItem(KEY, hash.get('token'));
  hash.delete('token');
  const rest = hash.toString();
  history.replaceState(history.state, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
  return true;
}

/** Reads the fragment token (local) or finishes an Entra redirect; call once at start. */
export async function initAuth(config) {
  mode = (config.auth && config.auth.mode) || 'local';
  takeFragmentToken();
  if (mode === 'entra') {
    const { startMsal } = await import('./msal.js');
    msal = await startMsal(config.auth);
  }
}

/** The bearer token for the API, or null when nobody is signed in. */
export async function bearer() {
  if (mode === 'entra') {
    const t = msal ? await msal.token() : null;
    if (t) return t;
  }
  return liveLocalToken();
}

/** { name, id } of the signed-in person, or null. */
export function currentUser() {
  if (mode === 'entra' && msal) {
    const a = msal.account();
    if (a) return { name: a.name || a.username, id: a.localAccountId };
  }
  const t = liveLocalToken();
  const c = t && decode(t);
  return c ? { name: c.name || c.sub, id: c.oid || c.sub } : null;
}

export function authMode() {
  return mode;
}

/** Starts Entra sign-in (redirects away) and comes back to `returnTo`. */
export async function signIn(returnTo) {
  if (mode === 'entra' && msal) await msal.signIn(returnTo);
}

export async function signOut() {
  sessionStorage.removeItem(KEY);
  if (mode === 'entra' && msal) await msal.signOut();
}
