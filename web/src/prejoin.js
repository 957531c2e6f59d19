// Before joining: a live preview, camera and microphone selection, a microphone level meter,
// guidance when something is missing, and (when the session is not open yet) a countdown.

import { clock, h, mount, uid } from './dom.js';
import { formatTime, t } from './i18n.js';
import { capture, devices, hasWebRTC, levelMeter, stopStream } from './media.js';

/**
 * createPrejoin({opensAt, onJoin, beforeJoin}) -> {el, destroy, setOpensAt}
 * onJoin({stream, audioId, videoId}) is called when the person presses Join (the stream then
 * belongs to the caller). beforeJoin() may return false to stop (e.g. a missing name).
 */
export function createPrejoin({ opensAt, onJoin, beforeJoin }) {
  let stream = null;
  let stopMeter = () => {};
  let timer = null;
  let audioId = '';
  let videoId = '';
  let opening = opensAt ? new Date(opensAt) : null;
  let joining = false;
  // Join waits for the first camera/microphone request to settle, so the call starts with them.
  let ready = false;

  const video = h('video', {
    'data-testid': 'local-video',
    autoplay: true,
    muted: true,
    playsinline: true,
    class: 'mirror',
    'aria-label': t('prejoin.preview'),
  });
  video.muted = true;
  const guidance = h('div', { class: 'guidance', role: 'alert' });
  const camId = uid('cam');
  const micId = uid('mic');
  const meterId = uid('meter');
  const camSelect = h('select', { id: camId, onchange: () => restart(micSelect.value, camSelect.value) });
  const micSelect = h('select', { id: micId, onchange: () => restart(micSelect.value, camSelect.value) });
  const meter = h('meter', { id: meterId, min: 0, max: 1, low: 0.25, high: 0.9, optimum: 0.5, value: 0 });
  const countdown = h('p', { class: 'countdown', 'data-testid': 'countdown', hidden: true });
  let counting = false;
  const opened = h('p', { class: 'visually-hidden', 'aria-live': 'polite' });
  const retry = h('button', { type: 'button', class: 'secondary', hidden: true, onclick: () => restart(audioId, videoId) }, t('prejoin.retry'));
  const join = h('button', { type: 'button', class: 'primary', onclick: doJoin }, t('call.join'));

  const headingId = uid('prejoin');
  const el = h(
    'section',
    { class: 'prejoin', 'aria-labelledby': headingId },
    h('h2', { id: headingId }, t('prejoin.title')),
    h('div', { class: 'preview' }, video),
    guidance,
    retry,
    h(
      'div',
      { class: 'devices' },
      h('div', { class: 'field' }, h('label', { for: camId }, t('prejoin.camera')), camSelect),
      h('div', { class: 'field' }, h('label', { for: micId }, t('prejoin.microphone')), micSelect),
      h('div', { class: 'field' }, h('label', { for: meterId }, t('prejoin.level')), meter),
    ),
    countdown,
    opened,
    join,
  );

  function showGuidance(problem) {
    retry.hidden = !problem || problem === 'no-webrtc';
    if (!problem) {
      mount(guidance);
      guidance.dataset.problem = '';
      return;
    }
    guidance.dataset.problem = problem;
    mount(guidance, h('p', {}, t(`prejoin.problem.${problem}`)));
  }

  async function fillDevices() {
    const list = await devices();
    const options = (items, chosen, label) =>
      items.length
        ? items.map((d, i) => h('option', { value: d.deviceId, selected: d.deviceId === chosen }, d.label || `${label} ${i + 1}`))
        : [h('option', { value: '' }, t('prejoin.none'))];
    mount(camSelect, options(list.video, videoId, t('prejoin.camera')));
    mount(micSelect, options(list.audio, audioId, t('prejoin.microphone')));
    camSelect.disabled = list.video.length === 0;
    micSelect.disabled = list.audio.length === 0;
  }

  async function restart(nextAudio, nextVideo) {
    stopMeter();
    stopStream(stream);
    stream = null;
    video.srcObject = null;
    if (!hasWebRTC()) {
      showGuidance('no-webrtc');
      join.disabled = true;
      return;
    }
    const got = await capture(nextAudio, nextVideo);
    stream = got.stream;
    showGuidance(got.problem);
    if (stream) {
      audioId = stream.getAudioTracks()[0]?.getSettings().deviceId || '';
      videoId = stream.getVideoTracks()[0]?.getSettings().deviceId || '';
      video.srcObject = stream;
      stopMeter = levelMeter(stream, (v) => {
        meter.value = v;
      });
    }
    await fillDevices();
    ready = true;
    tick();
  }

  function tick() {
    const left = opening ? opening.getTime() - Date.now() : 0;
    if (left > 0) {
      counting = true;
      join.disabled = true;
      countdown.hidden = false;
      countdown.textContent = t('prejoin.opens', { time: formatTime(opening), left: clock(left) });
    } else {
      // Announced once, when a countdown the person saw reaches zero.
      if (counting) opened.textContent = t('prejoin.open');
      counting = false;
      countdown.hidden = true;
      join.disabled = joining || !ready || !hasWebRTC();
    }
  }

  async function doJoin() {
    if (joining) return;
    if (beforeJoin && beforeJoin() === false) return;
    joining = true;
    join.disabled = true;
    stopMeter();
    const s = stream;
    stream = null;
    try {
      await onJoin({ stream: s, audioId, videoId });
    } finally {
      joining = false;
      tick();
    }
  }

  restart('', '');
  tick();
  timer = setInterval(tick, 1000);

  return {
    el,
    setOpensAt(at) {
      opening = at ? new Date(at) : null;
      tick();
    },
    /** Takes the stream back (the join failed before the call used it). */
    giveBack(s) {
      if (s && !stream) {
        stream = s;
        video.srcObject = s;
        stopMeter = levelMeter(s, (v) => {
          meter.value = v;
        });
      } else stopStream(s);
    },
    destroy() {
      clearInterval(timer);
      stopMeter();
      stopStream(stream);
      stream = null;
    },
  };
}
