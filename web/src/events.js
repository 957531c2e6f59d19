// Client events for operators: connection time, ICE failures, reconnects and a quality summary,
// sent in small batches to POST /api/v1/client-events with the person's own credential (the
// bearer token of the host, the invitation code of a guest). Losing one is acceptable; blocking
// the call for one is not, so every send is fire-and-forget.

import { api } from './api.js';

const MAX_BATCH = 20;

export function createReporter({ bookingId, invitation }) {
  let queue = [];
  let timer = null;

  function flush(final) {
    clearTimeout(timer);
    timer = null;
    while (queue.length) {
      const events = queue.splice(0, MAX_BATCH);
      const body = invitation ? { invitation, events } : { booking_id: bookingId, events };
      api('POST', '/client-events', { body, auth: !invitation, keepalive: !!final }).catch(() => {});
    }
  }

  return {
    /** Queues one event; `data` is a small flat object of numbers and short strings. */
    report(type, data = {}, urgent = false) {
      queue.push({ type, at: new Date().toISOString(), data });
      if (urgent || queue.length >= MAX_BATCH) flush(false);
      else if (!timer) timer = setTimeout(() => flush(false), 5000);
    },
    /** Sends what is queued now (also while the page unloads). */
    flush: () => flush(true),
  };
}
