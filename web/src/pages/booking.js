// The host's booking page: when and what state, the guest invitation (create, copy, revoke),
// cancel, and the session itself (prejoin, then the call, with extend near the end).

import { api } from '../api.js';
import { h, mount, uid } from '../dom.js';
import { createReporter } from '../events.js';
import { formatSlot, t } from '../i18n.js';
import { mountSession } from '../session.js';
import { cancelButton } from './cancel.js';

export async function bookingPage(main, { id }, settings) {
  mount(main, h('h1', {}, t('booking.title')), h('p', {}, t('loading')));
  let booking;
  try {
    booking = await api('GET', `/bookings/${id}`);
  } catch (e) {
    mount(main, h('h1', {}, t('booking.title')), h('p', { role: 'alert' }, e.status === 404 ? t('booking.notFound') : t('error.load')));
    return () => {};
  }
  let end = new Date(booking.end_time);
  const start = new Date(booking.start_time);
  const when = h('p', { class: 'when', 'data-testid': 'booking-when' }, formatSlot(start, end));
  const notice = h('div', { role: 'alert' });
  const live = h('p', { class: 'visually-hidden', 'aria-live': 'polite' });
  const details = h('div', { class: 'booking-details' });
  const sessionBox = h('div', { class: 'session' });
  const sessionHeading = uid('session');

  mount(
    main,
    h('h1', {}, t('booking.title')),
    when,
    h('p', {}, t('booking.status'), ' ', h('span', { class: `badge ${booking.status}`, 'data-testid': 'booking-status' }, t(`status.${booking.status}`))),
    notice,
    live,
    details,
    booking.status === 'cancelled' || booking.status === 'past'
      ? null
      : h('section', { class: 'session-section', 'aria-labelledby': sessionHeading }, h('h2', { id: sessionHeading }, t('booking.session')), sessionBox),
    h('p', {}, h('a', { href: '/app/' }, t('nav.back'))),
  );

  // ----- the invitation -----
  const invHeading = uid('inv');
  const inv = h('section', { class: 'invitation', 'aria-labelledby': invHeading });
  const guestId = uid('guest');
  const linkId = uid('link');

  function showLink(url) {
    const input = h('input', { id: linkId, type: 'text', readonly: true, value: url, 'data-testid': 'invitation-link', class: 'link' });
    return h(
      'div',
      { class: 'invite-link' },
      h('label', { for: linkId }, t('invite.link')),
      input,
      h('button', {
        type: 'button',
        class: 'secondary',
        onclick: async () => {
          try {
            await navigator.clipboard.writeText(url);
          } catch (e) {
            input.select();
            document.execCommand('copy');
          }
          live.textContent = t('invite.copied');
        },
      }, t('invite.copy')),
      h('p', { class: 'muted' }, t('invite.once')),
    );
  }

  async function renderInvitation(fresh) {
    let current = null;
    if (!fresh) {
      try {
        current = await api('GET', `/bookings/${id}/invitation`);
      } catch (e) {
        if (e.status !== 404) mount(notice, h('p', {}, t('error.load')));
      }
    }
    const guestInput = h('input', { id: guestId, type: 'text', maxlength: 200, autocomplete: 'off' });
    const create = h('button', {
      type: 'button',
      class: 'primary',
      onclick: async () => {
        create.disabled = true;
        mount(notice);
        try {
          const body = guestInput.value.trim() ? { guest: guestInput.value.trim() } : {};
          const made = await api('POST', `/bookings/${id}/invitation`, { body });
          renderInvitation(made);
          live.textContent = t('invite.created');
        } catch (e) {
          create.disabled = false;
          mount(notice, h('p', {}, e.problem.detail || t('error.generic')));
        }
      },
    }, fresh || current ? t('invite.replace') : t('invite.create'));
    const revoke = h('button', {
      type: 'button',
      class: 'danger',
      onclick: async () => {
        revoke.disabled = true;
        try {
          await api('DELETE', `/bookings/${id}/invitation`);
          renderInvitation(null);
          live.textContent = t('invite.revoked');
        } catch (e) {
          revoke.disabled = false;
          mount(notice, h('p', {}, e.problem.detail || t('error.generic')));
        }
      },
    }, t('invite.revoke'));
    const state = fresh || current;
    mount(
      inv,
      h('h2', { id: invHeading }, t('invite.title')),
      fresh
        ? showLink(fresh.url)
        : current
          ? h('p', { 'data-testid': 'invitation-state' }, current.joined ? t('invite.joined') : t('invite.active'))
          : h('p', { class: 'muted', 'data-testid': 'invitation-state' }, t('invite.none')),
      h('div', { class: 'field' }, h('label', { for: guestId }, t('invite.guest')), guestInput, h('p', { class: 'hint' }, t('invite.guestHint'))),
      h('div', { class: 'actions' }, create, state ? revoke : null),
    );
  }

  const actions = h('div', { class: 'actions' });
  if (booking.status === 'upcoming') {
    actions.append(cancelButton(id, { onDone: () => bookingPage(main, { id }, settings), notice }));
  }
  if (booking.status === 'upcoming' || booking.status === 'active') {
    mount(details, inv, actions);
    renderInvitation(null);
  } else {
    mount(details, actions);
  }

  if (booking.status === 'cancelled' || booking.status === 'past') return () => {};

  // ----- the session -----
  const extend = async (minutes) => {
    const next = new Date(end.getTime() + minutes * 60000);
    const b = await api('POST', `/bookings/${id}/extend`, { body: { end_time: next.toISOString() } });
    end = new Date(b.end_time);
    when.textContent = formatSlot(start, end);
    return b.end_time;
  };
  const opensAt = new Date(start.getTime() - (settings.join_opens_before_minutes ?? 15) * 60000);
  return mountSession(sessionBox, {
    getJoin: () => api('GET', `/bookings/${id}/join`),
    opensAt,
    settings,
    canExtend: true,
    extend,
    reporter: createReporter({ bookingId: id }),
    onCallChange: (inCall) => {
      details.hidden = inCall;
    },
  });
}
