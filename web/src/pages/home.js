// My sessions: active, upcoming and past bookings, with cancel for upcoming ones.

import { api } from '../api.js';
import { h, mount } from '../dom.js';
import { formatSlot, t } from '../i18n.js';
import { cancelButton } from './cancel.js';

export async function homePage(main) {
  const notice = h('div', { role: 'alert' });
  const lists = h('div', {}, h('p', {}, t('loading')));
  mount(
    main,
    h('h1', {}, t('home.title')),
    h('p', {}, h('a', { href: '/app/book', class: 'button primary' }, t('home.book'))),
    notice,
    lists,
  );
  let bookings;
  try {
    bookings = await api('GET', '/bookings');
  } catch (e) {
    mount(lists);
    mount(notice, h('p', {}, t('error.load')));
    return;
  }
  const groups = { active: [], upcoming: [], past: [] };
  for (const b of bookings) (groups[b.status] || groups.past).push(b);
  groups.past.reverse();

  function item(b) {
    const start = new Date(b.start_time);
    const end = new Date(b.end_time);
    const cancel =
      b.status === 'upcoming'
        ? cancelButton(b.booking_id, { className: 'secondary small', onDone: () => homePage(main), notice })
        : null;
    return h(
      'li',
      { class: 'booking-item' },
      h('a', { href: `/app/bookings/${b.booking_id}` }, formatSlot(start, end)),
      ' ',
      h('span', { class: `badge ${b.status}` }, t(`status.${b.status}`)),
      cancel ? ' ' : null,
      cancel,
    );
  }

  function section(key, items) {
    const id = `h-${key}`;
    return h(
      'section',
      { 'aria-labelledby': id },
      h('h2', { id }, t(`home.${key}`)),
      items.length ? h('ul', { class: 'bookings' }, items.map(item)) : h('p', { class: 'muted' }, t(`home.none.${key}`)),
    );
  }

  mount(lists, section('active', groups.active), section('upcoming', groups.upcoming), section('past', groups.past));
}
