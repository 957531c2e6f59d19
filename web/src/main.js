// The Suroga Stream web client: book, invite and hold the call in the browser.
// Boot: the public client configuration, the language, the sign-in, then the page for the path.

import { api } from './api.js';
import { authMode, currentUser, initAuth, signIn, signOut, takeFragmentToken } from './auth.js';
import { h, mount, uid } from './dom.js';
import { LANGUAGES, initLanguage, language, onLanguage, setLanguage, t } from './i18n.js';
import { match, navigate, startRouter } from './router.js';
import { homePage } from './pages/home.js';
import { bookPage } from './pages/book.js';
import { bookingPage } from './pages/booking.js';
import { guestPage } from './pages/guest.js';

const root = document.getElementById('app');
let settings = {};
let cleanup = () => {};
let first = true;
let current = null;

function header() {
  const langId = uid('lang');
  const select = h(
    'select',
    { id: langId, onchange: (e) => setLanguage(e.target.value) },
    Object.entries(LANGUAGES).map(([code, l]) => h('option', { value: code, lang: code, selected: code === language() }, l.name)),
  );
  const user = currentUser();
  return h(
    'header',
    { class: 'top' },
    h('a', { class: 'brand', href: '/app/' }, 'Suroga Stream'),
    h(
      'div',
      { class: 'top-tools' },
      h('div', { class: 'lang' }, h('label', { for: langId }, t('nav.language')), select),
      user
        ? h(
            'div',
            { class: 'who' },
            h('span', { class: 'muted' }, t('nav.signedInAs', { name: user.name })),
            h('button', { type: 'button', class: 'link-button', onclick: async () => { await signOut(); navigate('/app/'); } }, t('nav.signOut')),
          )
        : null,
    ),
  );
}

function signInPage(main) {
  mount(
    main,
    h('h1', {}, t('signin.title')),
    authMode() === 'entra'
      ? h('p', {}, h('button', { type: 'button', class: 'primary', onclick: () => signIn(location.pathname) }, t('signin.entra')))
      : [h('p', {}, t('signin.local')), h('pre', {}, h('code', {}, 'suroga token --sub alice --url'))],
  );
}

async function render(route) {
  current = route;
  cleanup();
  cleanup = () => {};
  const main = h('main', { id: 'main', tabindex: '-1' });
  mount(root, h('a', { class: 'skip', href: '#main' }, t('nav.skip')), header(), main);
  const needsUser = route.name !== 'guest' && route.name !== 'notfound';
  document.title = `${t(`title.${route.name}`)} · Suroga Stream`;
  if (needsUser && !currentUser()) signInPage(main);
  else if (route.name === 'home') await homePage(main);
  else if (route.name === 'book') bookPage(main);
  else if (route.name === 'booking') cleanup = (await bookingPage(main, route.params, settings)) || (() => {});
  else if (route.name === 'guest') cleanup = (await guestPage(main, route.params, settings)) || (() => {});
  else mount(main, h('h1', {}, t('notfound.title')), h('p', {}, h('a', { href: '/app/' }, t('nav.home'))));
  // Screen readers start at the new page, not where the old one was.
  if (!first) main.focus();
  first = false;
}

async function boot() {
  initLanguage();
  try {
    settings = await api('GET', '/client-config', { auth: false });
  } catch (e) {
    settings = { auth: { mode: 'local' } };
  }
  await initAuth(settings);
  // A language switch re-renders the page, except during a call (it would end it): there the
  // next page shows the new language.
  onLanguage(() => {
    if (!root.querySelector('.call')) render(current || match(location.pathname));
  });
  window.addEventListener('pagehide', () => cleanup());
  // A sign-in link opened in a tab that already shows the app.
  window.addEventListener('hashchange', () => {
    if (takeFragmentToken()) render(match(location.pathname));
  });
  startRouter(render);
}

boot();
