// Microsoft Entra ID sign-in through MSAL.js (a separate chunk, loaded only when client-config
// says `entra`). Redirect flow with PKCE; tokens live in sessionStorage, as MSAL recommends for
// a page that must not outlive the tab.

import { PublicClientApplication, InteractionRequiredAuthError } from '@azure/msal-browser';

export async function startMsal(cfg) {
  const app = new PublicClientApplication({
    auth: {
      clientId: cfg.client_id,
      authority: cfg.authority,
      redirectUri: `${location.origin}/app/`,
      navigateToLoginRequestUrl: false,
    },
    cache: { cacheLocation: 'sessionStorage' },
  });
  await app.initialize();
  const result = await app.handleRedirectPromise();
  if (result && result.account) app.setActiveAccount(result.account);
  if (!app.getActiveAccount()) {
    const all = app.getAllAccounts();
    if (all.length) app.setActiveAccount(all[0]);
  }
  if (result && result.state) {
    // Back to the page that asked for the sign-in (only a path inside the app).
    const to = result.state;
    if (to.startsWith('/app/')) history.replaceState(null, '', to);
  }
  const scopes = cfg.scopes || [];
  return {
    account: () => app.getActiveAccount(),
    async token() {
      const account = app.getActiveAccount();
      if (!account) return null;
      try {
        return (await app.acquireTokenSilent({ scopes, account })).accessToken;
      } catch (e) {
        if (e instanceof InteractionRequiredAuthError) return null;
        throw e;
      }
    },
    signIn: (returnTo) => app.loginRedirect({ scopes, state: returnTo }),
    signOut: () => app.logoutRedirect({ postLogoutRedirectUri: `${location.origin}/app/` }),
  };
}
