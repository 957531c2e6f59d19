// The part of the booking page and the guest page that is the same: the prejoin, then the call,
// then a line saying how it ended. The join endpoint's answers before the call decide what the
// person is told (too early: a countdown; over, cancelled or revoked: why).

import { ApiError } from './api.js';
import { h, mount } from './dom.js';
import { t } from './i18n.js';
import { createPrejoin } from './prejoin.js';
import { startCall } from './call.js';

/**
 * mountSession(container, {getJoin, opensAt, reporter, canExtend, extend, beforeJoin, onCallChange, settings})
 * Returns destroy().
 */
export function mountSession(container, o) {
  let prejoin = null;
  let call = null;
  const problem = h('div', { role: 'alert', class: 'join-problem', 'data-testid': 'join-problem' });

  function showPrejoin() {
    prejoin = createPrejoin({ opensAt: o.opensAt, onJoin, beforeJoin: o.beforeJoin });
    mount(container, problem, prejoin.el);
  }

  async function onJoin({ stream, audioId, videoId }) {
    mount(problem);
    let first;
    try {
      first = await o.getJoin();
    } catch (e) {
      if (prejoin) prejoin.giveBack(stream);
      explain(e);
      return;
    }
    prejoin.destroy();
    prejoin = null;
    let used = false;
    const getJoin = () => {
      if (!used) {
        used = true;
        return Promise.resolve(first);
      }
      return o.getJoin();
    };
    const c = startCall({
      getJoin,
      stream,
      devices: { audioId, videoId },
      reporter: o.reporter,
      canExtend: o.canExtend,
      extend: o.extend,
      extendMinutes: o.settings.extend_minutes,
      warnMinutes: o.settings.end_warning_minutes,
      onLeft: (reason) => {
        call = null;
        const again = h('button', { type: 'button', class: 'secondary', onclick: showPrejoin }, t('call.again'));
        container.append(h('div', { class: 'after-call' }, reason === 'over' || reason === 'removed' ? null : again));
        if (o.onCallChange) o.onCallChange(false);
      },
    });
    call = c;
    mount(container, c.el);
    if (o.onCallChange) o.onCallChange(true);
    const leaveBtn = c.el.querySelector('.leave');
    if (leaveBtn) leaveBtn.focus();
  }

  function explain(e) {
    const status = e instanceof ApiError ? e.status : 0;
    if (status === 425 && e.problem.opens_at) {
      prejoin.setOpensAt(e.problem.opens_at);
      mount(problem, h('p', {}, t('join.early')));
    } else if (status === 410) mount(problem, h('p', {}, t('join.over')));
    else if (status === 409) mount(problem, h('p', {}, t('join.cancelled')));
    else if (status === 404) mount(problem, h('p', {}, t('join.notFound')));
    else if (status === 401) mount(problem, h('p', {}, t('join.signIn')));
    else if (status === 503) mount(problem, h('p', {}, t('join.starting')));
    else if (status === 400) mount(problem, h('p', {}, e.problem.detail || t('join.failed')));
    else mount(problem, h('p', {}, t('join.failed')));
  }

  showPrejoin();
  return () => {
    if (call) call.leave();
    if (prejoin) prejoin.destroy();
  };
}

