// The "Cancel session" button of the home list and the booking page: asks first, then cancels.

import { api } from '../api.js';
import { h, mount } from '../dom.js';
import { t } from '../i18n.js';

/** A button that cancels booking `id` after confirmation; `onDone()` after, errors into `notice`. */
export function cancelButton(id, { className = 'danger', onDone, notice }) {
  return h('button', {
    type: 'button',
    class: className,
    onclick: async (e) => {
      if (!window.confirm(t('booking.cancelConfirm'))) return;
      e.target.disabled = true;
      try {
        await api('POST', `/bookings/${id}/cancel`);
        onDone();
      } catch (err) {
        e.target.disabled = false;
        mount(notice, h('p', {}, err.problem.detail || t('error.generic')));
      }
    },
  }, t('booking.cancel'));
}
