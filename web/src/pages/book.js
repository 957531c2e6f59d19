// Book a session: a date, a start time and a length; any free room (or a new one) is booked.

import { api } from '../api.js';
import { h, mount, uid } from '../dom.js';
import { t } from '../i18n.js';
import { navigate } from '../router.js';

function two(n) {
  return String(n).padStart(2, '0');
}

export function bookPage(main) {
  // One key per form: a double submit or a retry after a lost answer books once.
  const key = crypto.randomUUID();
  const soon = new Date(Date.now() + 60 * 60 * 1000);
  soon.setMinutes(0, 0, 0);
  const dateId = uid('date');
  const timeId = uid('time');
  const lenId = uid('len');
  const date = h('input', { id: dateId, type: 'date', required: true, value: `${soon.getFullYear()}-${two(soon.getMonth() + 1)}-${two(soon.getDate())}` });
  const time = h('input', { id: timeId, type: 'time', required: true, step: 300, value: `${two(soon.getHours())}:${two(soon.getMinutes())}` });
  const length = h(
    'select',
    { id: lenId },
    [30, 45, 60, 90, 120].map((m) => h('option', { value: m, selected: m === 60 }, t('book.minutes', { n: m }))),
  );
  const problem = h('div', { role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'primary' }, t('book.submit'));
  const form = h(
    'form',
    {
      class: 'book-form',
      onsubmit: async (e) => {
        e.preventDefault();
        mount(problem);
        const start = new Date(`${date.value}T${time.value}`);
        if (Number.isNaN(start.getTime())) {
          mount(problem, h('p', {}, t('book.invalid')));
          return;
        }
        const end = new Date(start.getTime() + Number(length.value) * 60000);
        submit.disabled = true;
        try {
          const b = await api('POST', '/bookings', {
            body: { start_time: start.toISOString(), end_time: end.toISOString() },
            headers: { 'Idempotency-Key': key },
          });
          navigate(`/app/bookings/${b.booking_id}`);
        } catch (err) {
          submit.disabled = false;
          mount(problem, h('p', {}, err.status === 409 ? t('book.taken') : err.problem.detail || t('error.generic')));
        }
      },
    },
    h('div', { class: 'field' }, h('label', { for: dateId }, t('book.date')), date),
    h('div', { class: 'field' }, h('label', { for: timeId }, t('book.time')), time),
    h('div', { class: 'field' }, h('label', { for: lenId }, t('book.length')), length),
    problem,
    submit,
  );
  mount(main, h('h1', {}, t('book.title')), form, h('p', {}, h('a', { href: '/app/' }, t('nav.back'))));
}
