// The guest's page, /app/i/<code>: the session's time and host, "Your name", the prejoin, the
// call. No account is needed unless the invitation names a guest user.

import { api } from '../api.js';
import { currentUser, signIn, authMode } from '../auth.js';
import { h, mount, uid } from '../dom.js';
import { createReporter } from '../events.js';
import { formatSlot, t } from '../i18n.js';
import { mountSession } from '../session.js';

export async function guestPage(main, { code }, settings) {
  mount(main, h('h1', {}, t('guest.title')), h('p', {}, t('loading')));
  let info;
  try {
    info = await api('GET', `/invitations/${encodeURIComponent(code)}`, { auth: false });
  } catch (e) {
    mount(
      main,
      h('h1', {}, t('guest.title')),
      h('p', { role: 'alert', 'data-testid': 'invitation-invalid' }, e.status === 404 ? t('guest.invalid') : t('error.load')),
    );
    return () => {};
  }
  const start = new Date(info.start_time);
  const end = new Date(info.end_time);
  const nameId = uid('name');
  const saved = sessionStorage.getItem('suroga.guestName') || (currentUser() && currentUser().name) || '';
  const name = h('input', { id: nameId, type: 'text', required: true, maxlength: 64, autocomplete: 'name', value: saved, 'aria-describedby': `${nameId}-hint` });
  const nameProblem = h('p', { id: `${nameId}-hint`, class: 'hint' }, t('guest.nameHint'));
  const sessionBox = h('div', { class: 'session' });
  const intro = h(
    'div',
    { class: 'guest-intro' },
    h('p', { class: 'when' }, formatSlot(start, end)),
    h('p', {}, t('guest.host', { host: info.host_display })),
  );
  const nameField = h('div', { class: 'field' }, h('label', { for: nameId }, t('guest.name')), name, nameProblem);
  const signInBox = authMode() === 'entra' && !currentUser()
    ? h('p', { class: 'muted' }, t('guest.signInHint'), ' ', h('button', { type: 'button', class: 'link-button', onclick: () => signIn(location.pathname) }, t('nav.signIn')))
    : null;
  mount(
    main,
    h('h1', {}, t('guest.heading', { host: info.host_display })),
    intro,
    nameField,
    signInBox,
    sessionBox,
  );

  function validName() {
    const v = name.value.trim();
    // 1-64 printable characters, as the join endpoint requires.
    const ok = v.length >= 1 && v.length <= 64 && !/[\u0000-\u001f\u007f]/.test(v);
    name.setAttribute('aria-invalid', String(!ok));
    nameProblem.textContent = ok ? t('guest.nameHint') : t('guest.nameMissing');
    nameProblem.classList.toggle('error', !ok);
    if (!ok) name.focus();
    return ok;
  }

  return mountSession(sessionBox, {
    getJoin: () => {
      const displayName = name.value.trim();
      sessionStorage.setItem('suroga.guestName', displayName);
      // With an invitation for a named user the bearer token goes along (api() adds it).
      return api('POST', `/invitations/${encodeURIComponent(code)}/join`, { body: { display_name: displayName } });
    },
    opensAt: info.opens_at,
    settings,
    canExtend: false,
    beforeJoin: validName,
    reporter: createReporter({ invitation: code }),
    onCallChange: (inCall) => {
      nameField.hidden = inCall;
      intro.hidden = inCall;
    },
  });
}
