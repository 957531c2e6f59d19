// The call: one Janus session per attempt, a VideoRoom publisher handle for my camera and
// microphone and a subscriber handle for the other person's feed (janus.js 1.x, track based).
//
// What keeps it alive:
// - a lost WebSocket: janus.reconnect() reclaims the session (the hosts set
//   reclaim_session_timeout); if that fails, a new attempt joins again from the join endpoint;
// - an ICE failure: the publisher offers again with iceRestart, the subscriber asks Janus for a
//   restarted offer (configure + restart);
// - a token that ends before the (extended) session: the join endpoint is asked again before it
//   expires and the call moves to a fresh attempt with the new credentials;
// - the room destroyed or a kick: the join endpoint decides: 200 joins the session's new room,
//   404/409/410 end the call for this person.
// The person always sees one of: connecting, waiting, connected, reconnecting, failed, ended.

import Janus from 'janus-gateway';
import adapter from 'webrtc-adapter';

import { ApiError } from './api.js';
import { clock, h, mount } from './dom.js';
import { t } from './i18n.js';
import { capture, stopStream } from './media.js';
import { createSummary, level, sample } from './quality.js';

const PLUGIN = 'janus.plugin.videoroom';
/** Renew the Janus token this long before it expires (the session dies when it does). */
const RENEW_BEFORE_MS = 2 * 60 * 1000;
/** Give up rejoining after this long without success. */
const REJOIN_LIMIT_MS = 2 * 60 * 1000;
/** Re-send my media state this often, so a subscriber that joins late learns it. */
const STATE_EVERY_MS = 2000;

let janusReady = null;
function initJanus() {
  if (!janusReady) {
    janusReady = new Promise((resolve) => {
      let debug = false;
      try {
        // localStorage['suroga.debug'] = '1' logs janus.js's whole conversation to the console.
        debug = localStorage.getItem('suroga.debug') ? 'all' : false;
      } catch (e) {
        debug = false;
      }
      Janus.init({ debug, dependencies: Janus.useDefaultDependencies({ adapter }), callback: resolve });
    });
  }
  return janusReady;
}

function promised(fn) {
  return new Promise((resolve, reject) => fn({ success: resolve, error: reject }));
}

/**
 * startCall(options) -> {el, leave}
 * options: getJoin() -> JoinInfo (throws ApiError), stream (from the prejoin, owned by the call
 * from now on), devices {audioId, videoId}, canExtend, extend(minutes) -> new end (host only),
 * reporter (client events), onLeft(reason), warnMinutes.
 */
export function startCall(options) {
  const call = new Call(options);
  call.start();
  return { el: call.view.el, leave: () => call.leave('left'), call };
}

class Call {
  constructor(o) {
    this.o = o;
    this.stream = o.stream || new MediaStream();
    this.audioId = (o.devices && o.devices.audioId) || '';
    this.videoId = (o.devices && o.devices.videoId) || '';
    this.gen = 0;
    this.join = null;
    this.janus = null;
    this.pub = null;
    this.sub = null;
    this.subFeed = null;
    this.myId = null;
    this.privateId = null;
    this.idTaken = 0;
    this.remote = null; // {id, display}
    this.remoteState = { camera: true, mic: true, screen: false };
    this.remoteStream = new MediaStream();
    this.flags = { joined: false, transportLost: false, iceBad: false, remoteMedia: false };
    this.state = 'connecting';
    this.ended = false;
    this.mic = this.stream.getAudioTracks().length > 0;
    this.camera = this.stream.getVideoTracks().length > 0;
    this.screen = null; // the screen track while sharing
    this.startedAt = performance.now();
    this.firstMediaAt = null;
    this.counters = { reconnects: 0, ice_restarts: 0, rejoins: 0 };
    this.summary = createSummary();
    this.timers = [];
    this.view = new CallView(this);
  }

  report(type, data, urgent) {
    if (this.o.reporter) this.o.reporter.report(type, data, urgent);
  }

  async start() {
    await initJanus();
    this.timers.push(setInterval(() => this.sendState(), STATE_EVERY_MS));
    this.timers.push(setInterval(() => this.measure(), 2000));
    this.timers.push(setInterval(() => this.tickClock(), 1000));
    try {
      await this.connect(await this.o.getJoin());
    } catch (e) {
      this.handleJoinError(e);
    }
  }

  // ----- one attempt: a Janus session with one JoinInfo -----

  async connect(join) {
    const gen = ++this.gen;
    this.join = join;
    this.endAt = join.end_time ? new Date(join.end_time) : null;
    this.flags.joined = false;
    this.flags.transportLost = false;
    this.setState();
    this.scheduleRenewal(gen);
    const servers = [join.janus && join.janus.ws, join.janus && join.janus.http].filter(Boolean);
    let established = false;
    this.janus = new Janus({
      server: servers.length === 1 ? servers[0] : servers,
      token: join.token,
      // Always explicit: no default STUN server may be contacted.
      iceServers: Array.isArray(join.ice_servers) ? join.ice_servers : [],
      success: () => {
        if (gen !== this.gen) return;
        established = true;
        this.attachPublisher(gen);
      },
      error: (cause) => {
        if (gen !== this.gen || this.ended) return;
        if (established) this.transportLost(gen, cause);
        else this.rejoin('connect-failed');
      },
      destroyed: () => {},
    });
  }

  joinBody(ptype, extra) {
    const j = this.join;
    const body = { request: 'join', room: j.room_id, ptype, pin: j.pin, ...extra };
    if (j.room_token) body.token = j.room_token;
    // The publisher joins with the id the service derived for this role, so Janus's events name
    // the role (the session record). While a previous attempt still holds the id (436, until Janus
    // reclaims it) a few tries wait for it; then the call goes on without it.
    if (ptype === 'publisher' && j.participant_id && this.idTaken < 4) body.id = j.participant_id;
    return body;
  }

  attachPublisher(gen) {
    this.janus.attach({
      plugin: PLUGIN,
      success: (handle) => {
        if (gen !== this.gen) return handle.detach();
        this.pub = handle;
        handle.send({ message: this.joinBody('publisher', { display: this.join.display }) });
      },
      error: () => gen === this.gen && this.rejoin('attach-failed'),
      onmessage: (msg, jsep) => gen === this.gen && this.onPublisherMessage(gen, msg, jsep),
      iceState: (s) => gen === this.gen && this.onIce('pub', s),
      webrtcState: () => {},
      ondataopen: () => this.sendState(),
      onlocaltrack: () => {},
      oncleanup: () => {},
    });
  }

  onPublisherMessage(gen, msg, jsep) {
    if (jsep) this.pub.handleRemoteJsep({ jsep });
    if (msg.error_code) {
      this.report('janus-error', { code: msg.error_code, stage: this.flags.joined ? 'call' : 'join' }, true);
      if (msg.error_code === 436) this.idTaken += 1;
      // 432: the room is full (my previous attempt may still be inside): try again shortly.
      this.rejoin(`janus-${msg.error_code}`, msg.error_code === 432 ? 3000 : 1000);
      return;
    }
    const ev = msg.videoroom;
    if (ev === 'joined') {
      this.myId = msg.id;
      this.privateId = msg.private_id;
      this.flags.joined = true;
      this.publish();
      this.onPublishers(gen, msg.publishers);
    } else if (ev === 'destroyed') {
      this.roomGone('destroyed');
    } else if (ev === 'event') {
      if (msg.publishers) this.onPublishers(gen, msg.publishers);
      const gone = msg.leaving ?? msg.unpublished ?? msg.kicked;
      if (gone === 'ok' && msg.reason === 'kicked') this.roomGone('kicked');
      else if (gone !== undefined && this.remote && gone === this.remote.id) this.remoteLeft();
    }
    this.setState();
  }

  publish() {
    const tracks = [];
    const a = this.stream.getAudioTracks()[0];
    const v = this.stream.getVideoTracks()[0];
    if (a) tracks.push({ type: 'audio', capture: a, recv: false, dontStop: true });
    if (v) tracks.push({ type: 'video', capture: v, recv: false, dontStop: true });
    tracks.push({ type: 'data' });
    this.pub.createOffer({
      tracks,
      success: (jsep) => this.pub.send({ message: { request: 'configure', audio: !!a, video: !!v }, jsep }),
      error: (e) => {
        this.report('publish-error', { name: String((e && e.name) || e).slice(0, 60) }, true);
        this.view.alert(t('call.error.publish'));
      },
    });
  }

  onPublishers(gen, list) {
    const other = (list || []).find((p) => p.id !== this.myId);
    if (!other) return;
    this.remote = { id: other.id, display: other.display || t('call.other') };
    this.subscribe(gen, other.id);
    this.setState();
  }

  subscribe(gen, feed) {
    if (this.sub && this.subFeed === feed) return;
    if (this.sub) this.sub.detach();
    this.sub = null;
    this.subFeed = feed;
    this.janus.attach({
      plugin: PLUGIN,
      success: (handle) => {
        if (gen !== this.gen) return handle.detach();
        this.sub = handle;
        handle.send({
          message: this.joinBody('subscriber', { streams: [{ feed }], private_id: this.privateId }),
        });
      },
      error: () => gen === this.gen && this.rejoin('attach-failed'),
      onmessage: (msg, jsep) => {
        if (gen !== this.gen) return;
        if (msg.error_code) {
          this.report('janus-error', { code: msg.error_code, stage: 'subscribe' }, true);
          return;
        }
        if (msg.videoroom === 'destroyed') return this.roomGone('destroyed');
        if (jsep) {
          this.sub.createAnswer({
            jsep,
            tracks: [{ type: 'data' }],
            success: (answer) => this.sub.send({ message: { request: 'start', room: this.join.room_id }, jsep: answer }),
            error: () => this.rejoin('answer-failed'),
          });
        }
      },
      onremotetrack: (track, mid, on, meta) => gen === this.gen && this.onRemoteTrack(track, on, meta),
      ondata: (data) => gen === this.gen && this.onRemoteData(data),
      iceState: (s) => gen === this.gen && this.onIce('sub', s),
      webrtcState: (up) => {
        if (gen !== this.gen) return;
        if (up && this.firstMediaAt === null) {
          this.firstMediaAt = performance.now();
          this.report('connected', { ms: Math.round(this.firstMediaAt - this.startedAt), rejoins: this.counters.rejoins }, true);
        }
        this.setState();
      },
      oncleanup: () => {},
    });
  }

  // ----- remote media, rendered by track and never stopped on "removed" -----

  onRemoteTrack(track, on, meta) {
    const reason = meta && meta.reason;
    if (on) {
      for (const old of this.remoteStream.getTracks()) {
        if (old.kind === track.kind && old.id !== track.id) this.remoteStream.removeTrack(old);
      }
      if (!this.remoteStream.getTrackById(track.id)) this.remoteStream.addTrack(track);
      this.view.showRemote(this.remoteStream);
      if (track.kind === 'video' || track.kind === 'audio') this.flags.remoteMedia = true;
    } else if (reason === 'ended') {
      const t0 = this.remoteStream.getTrackById(track.id);
      if (t0) this.remoteStream.removeTrack(t0);
    }
    this.setState();
  }

  onRemoteData(data) {
    try {
      const s = JSON.parse(data);
      if (s && s.v === 1) {
        const before = JSON.stringify(this.remoteState);
        this.remoteState = { camera: !!s.camera, mic: !!s.mic, screen: !!s.screen };
        if (JSON.stringify(this.remoteState) !== before) this.setState();
      }
    } catch (e) {
      // Not ours: ignore.
    }
  }

  remoteLeft() {
    if (this.sub) this.sub.detach();
    this.sub = null;
    this.subFeed = null;
    this.remote = null;
    this.flags.remoteMedia = false;
    this.remoteStream = new MediaStream();
    this.view.showRemote(null);
    this.remoteState = { camera: true, mic: true, screen: false };
    this.setState();
  }

  // ----- my media: microphone, camera, screen -----

  sendState() {
    if (!this.pub || this.ended) return;
    const text = JSON.stringify({ v: 1, camera: this.camera || !!this.screen, mic: this.mic, screen: !!this.screen });
    try {
      this.pub.data({ text, error: () => {} });
    } catch (e) {
      // The data channel is not open yet: the next tick sends it.
    }
  }

  toggleMic() {
    const a = this.stream.getAudioTracks()[0];
    if (!a) return;
    this.mic = !this.mic;
    a.enabled = this.mic;
    this.sendState();
    this.view.update();
  }

  async setVideoTrack(track) {
    if (!this.pub) return;
    const spec = track
      ? { type: 'video', capture: track, recv: false, dontStop: true }
      : { type: 'video', remove: true };
    const hasVideo = this.pub.webrtcStuff && this.pub.webrtcStuff.pc &&
      this.pub.webrtcStuff.pc.getTransceivers().some((tr) => tr.receiver.track.kind === 'video');
    if (hasVideo) {
      await promised((cb) => this.pub.replaceTracks({ tracks: [spec], ...cb }));
    } else if (track) {
      // I joined without a camera: add a video track (this one renegotiates).
      await promised((cb) =>
        this.pub.createOffer({
          tracks: [{ ...spec, add: true }],
          success: (jsep) => {
            this.pub.send({ message: { request: 'configure', video: true }, jsep });
            cb.success();
          },
          error: cb.error,
        }),
      );
    }
  }

  async toggleCamera() {
    if (this.screen) return;
    const current = this.stream.getVideoTracks()[0];
    try {
      if (this.camera && current) {
        this.camera = false;
        // The button shows the new state at once; the track goes while it does.
        this.view.update();
        await this.setVideoTrack(null);
        this.stream.removeTrack(current);
        current.stop();
      } else {
        const got = await capture('', this.videoId);
        const v = got.stream && got.stream.getVideoTracks()[0];
        if (!v) throw new Error(got.problem || 'no-device');
        stopStream(new MediaStream(got.stream.getAudioTracks()));
        this.stream.addTrack(v);
        await this.setVideoTrack(v);
        this.camera = true;
      }
    } catch (e) {
      this.view.alert(t('call.error.camera'));
    }
    this.sendState();
    this.view.update();
  }

  async toggleScreen() {
    if (this.screen) return this.stopScreen();
    let display;
    try {
      display = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch (e) {
      if (e && e.name !== 'NotAllowedError') this.view.alert(t('call.error.screen'));
      return;
    }
    const track = display.getVideoTracks()[0];
    try {
      await this.setVideoTrack(track);
    } catch (e) {
      track.stop();
      this.view.alert(t('call.error.screen'));
      return;
    }
    this.screen = track;
    // The browser's own "Stop sharing" ends the track: go back to the camera.
    track.addEventListener('ended', () => this.screen === track && this.stopScreen());
    this.view.showLocal(new MediaStream([track]), false);
    this.sendState();
    this.view.update();
  }

  async stopScreen() {
    const track = this.screen;
    this.screen = null;
    const cam = this.camera ? this.stream.getVideoTracks()[0] : null;
    try {
      await this.setVideoTrack(cam && cam.readyState === 'live' ? cam : null);
    } catch (e) {
      this.view.alert(t('call.error.camera'));
    }
    if (track) track.stop();
    this.view.showLocal(this.stream, true);
    this.sendState();
    this.view.update();
  }

  // ----- staying connected -----

  onIce(which, s) {
    if (s === 'failed') {
      this.flags.iceBad = true;
      this.counters.ice_restarts += 1;
      this.report('ice-failed', { handle: which }, true);
      if (which === 'pub' && this.pub) {
        this.pub.createOffer({
          iceRestart: true,
          success: (jsep) => this.pub.send({ message: { request: 'configure' }, jsep }),
          error: () => this.rejoin('ice-restart-failed'),
        });
      } else if (which === 'sub' && this.sub) {
        this.sub.send({ message: { request: 'configure', restart: true } });
      }
    } else if (s === 'disconnected') {
      this.flags.iceBad = true;
    } else if (s === 'connected' || s === 'completed') {
      this.flags.iceBad = false;
    }
    this.setState();
  }

  transportLost(gen, cause) {
    if (this.flags.transportLost) return;
    this.flags.transportLost = true;
    this.counters.reconnects += 1;
    this.setState();
    const started = performance.now();
    const attempt = (n) => {
      if (gen !== this.gen || this.ended) return;
      this.janus.reconnect({
        success: () => {
          if (gen !== this.gen) return;
          this.flags.transportLost = false;
          this.report('reconnect', { how: 'reclaim', ms: Math.round(performance.now() - started) }, true);
          this.setState();
        },
        error: () => {
          if (gen !== this.gen) return;
          // The server may be briefly unreachable: retry the reclaim a few times, then join again.
          if (n < 4) setTimeout(() => attempt(n + 1), 1000 * (n + 1));
          else this.rejoin('reclaim-failed');
        },
      });
    };
    attempt(0);
  }

  /** Ends this attempt and joins again through the join endpoint (after `delay` ms). */
  rejoin(reason, delay = 0) {
    if (this.ended || this.rejoining) return;
    this.rejoining = true;
    const gen = ++this.gen;
    this.counters.rejoins += 1;
    this.report('rejoin', { reason }, true);
    const closed = this.teardownAttempt();
    this.flags.transportLost = true;
    this.setState();
    if (!this.rejoinSince) this.rejoinSince = Date.now();
    setTimeout(async () => {
      await closed;
      if (gen !== this.gen || this.ended) return;
      try {
        const join = await this.o.getJoin();
        this.rejoining = false;
        if (gen !== this.gen || this.ended) return;
        this.rejoinSince = null;
        await this.connect(join);
      } catch (e) {
        this.rejoining = false;
        this.handleJoinError(e);
      }
    }, delay);
  }

  handleJoinError(e) {
    const status = e instanceof ApiError ? e.status : 0;
    if ([401, 403, 404, 409, 410].includes(status)) return this.finish(status === 410 ? 'over' : 'removed');
    if (status === 425) return this.finish('early');
    // Network trouble or the host still starting (503): keep trying for a while.
    if (this.rejoinSince && Date.now() - this.rejoinSince > REJOIN_LIMIT_MS) return this.fail();
    if (!this.rejoinSince) this.rejoinSince = Date.now();
    const wait = Math.min(10000, ((e && e.retryAfter) || 2) * 1000);
    this.rejoin('join-retry', wait);
  }

  /** The room was destroyed or I was kicked: the join endpoint says whether the session goes on. */
  roomGone(why) {
    this.report('room-gone', { why }, true);
    this.rejoin(why);
  }

  scheduleRenewal(gen) {
    clearTimeout(this.renewTimer);
    const exp = this.join && this.join.token_expires_at ? new Date(this.join.token_expires_at).getTime() : 0;
    if (!exp) return;
    const wait = Math.max(5000, exp - RENEW_BEFORE_MS - Date.now());
    this.renewTimer = setTimeout(() => this.renew(gen), wait);
  }

  /** Asks for fresh credentials; moves the call to them when they outlive the current token. */
  async renew(gen) {
    if (gen !== this.gen || this.ended) return;
    let fresh;
    try {
      fresh = await this.o.getJoin();
    } catch (e) {
      if (e instanceof ApiError && [404, 409, 410].includes(e.status)) return; // the room's end will come
      this.renewTimer = setTimeout(() => this.renew(gen), 15000);
      return;
    }
    if (gen !== this.gen || this.ended) return;
    const oldExp = new Date(this.join.token_expires_at).getTime();
    const newExp = new Date(fresh.token_expires_at).getTime();
    if (fresh.end_time) this.endAt = new Date(fresh.end_time);
    if (newExp > oldExp + 30000 || fresh.room_id !== this.join.room_id) {
      this.report('token-renewed', {}, true);
      const g = ++this.gen;
      await this.teardownAttempt();
      if (g === this.gen && !this.ended) await this.connect(fresh);
    } else {
      this.renewTimer = setTimeout(() => this.renew(gen), Math.max(10000, (oldExp - Date.now()) / 2));
    }
  }

  /** The host extended the session: show the new end and fetch credentials that last. */
  extended(newEnd) {
    this.endAt = new Date(newEnd);
    this.warned = false;
    this.view.hideWarning();
    this.renew(this.gen);
  }

  /** Closes this attempt's Janus session; see the promise below. */
  teardownAttempt() {
    clearTimeout(this.renewTimer);
    const janus = this.janus;
    this.janus = null;
    this.pub = null;
    this.sub = null;
    this.subFeed = null;
    this.remote = null;
    this.flags.joined = false;
    this.flags.remoteMedia = false;
    this.remoteStream = new MediaStream();
    this.view.showRemote(null);
    if (!janus) return Promise.resolve();
    // Resolves once Janus confirmed (or could not be told): my old publisher must be gone before
    // the next attempt publishes, or the room (2 publishers) refuses it.
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(done, 3000);
      try {
        janus.destroy({ cleanupHandles: true, notifyDestroyed: false, unload: false, success: done, error: done });
      } catch (e) {
        // The transport is gone: Janus drops the session on its own.
        done();
      }
    });
  }

  // ----- time, quality, state -----

  tickClock() {
    if (!this.endAt || this.ended) return;
    const left = this.endAt.getTime() - Date.now();
    const warnMs = (this.o.warnMinutes || 5) * 60 * 1000;
    if (left <= warnMs && left > 0) {
      if (!this.warned) {
        this.warned = true;
        this.report('end-warning', { left_s: Math.round(left / 1000) });
      }
      this.view.showWarning(left);
    } else {
      this.view.hideWarning();
    }
  }

  async measure() {
    if (this.ended) return;
    const rpc = this.sub && this.sub.webrtcStuff && this.sub.webrtcStuff.pc;
    const spc = this.pub && this.pub.webrtcStuff && this.pub.webrtcStuff.pc;
    if (!rpc && !spc) return;
    try {
      const prev = this.lastSample;
      const s = await sample(rpc, spc, prev);
      this.lastSample = s;
      // A rate needs two samples: the first one only sets the baseline.
      if (!prev || this.state !== 'connected') return this.view.quality(null);
      this.summary.add(s);
      this.view.quality(s);
    } catch (e) {
      // A connection closing under us: the next sample starts over.
      this.lastSample = null;
    }
  }

  setState() {
    if (this.ended) return;
    let s;
    if (this.flags.transportLost || this.rejoining) s = 'reconnecting';
    else if (!this.flags.joined) s = this.gen > 1 ? 'reconnecting' : 'connecting';
    else if (this.flags.iceBad) s = 'reconnecting';
    else if (!this.remote) s = 'waiting';
    else if (this.flags.remoteMedia && this.sub && this.sub.webrtcStuff && this.sub.webrtcStuff.pc) s = 'connected';
    else s = 'connecting';
    if (s !== this.state) {
      this.state = s;
      if (s === 'connected') this.rejoinSince = null;
    }
    this.view.update();
  }

  fail() {
    this.finish('failed');
  }

  /** Ends the call for this person: reason left | over | removed | early | failed. */
  finish(reason) {
    if (this.ended) return;
    this.gen += 1;
    this.teardownAttempt();
    this.ended = true;
    this.endReason = reason;
    this.state = reason === 'failed' ? 'failed' : 'ended';
    for (const id of this.timers) clearInterval(id);
    clearTimeout(this.renewTimer);
    if (this.screen) this.screen.stop();
    stopStream(this.stream);
    this.report('ended', { reason, seconds: Math.round((performance.now() - this.startedAt) / 1000), ...this.counters });
    this.report('quality', this.summary.result());
    if (this.o.reporter) this.o.reporter.flush();
    this.view.update();
    this.view.ended(reason);
    if (this.o.onLeft) this.o.onLeft(reason);
  }

  leave(reason = 'left') {
    this.finish(reason);
  }
}

// ----- the view -----

class CallView {
  constructor(call) {
    this.call = call;
    this.remoteVideo = h('video', { 'data-testid': 'remote-video', autoplay: true, playsinline: true, 'aria-label': t('call.remoteVideo') });
    this.localVideo = h('video', { 'data-testid': 'local-video', autoplay: true, playsinline: true, class: 'mirror', 'aria-label': t('call.localVideo') });
    this.localVideo.muted = true;
    this.placeholder = h('p', { class: 'remote-placeholder', 'data-testid': 'remote-placeholder' });
    this.status = h('p', { role: 'status', class: 'call-status', 'data-testid': 'call-status', 'data-state': 'connecting' }, t('call.state.connecting'));
    this.alertBox = h('div', { role: 'alert', class: 'call-alert' });
    this.warning = h('div', { class: 'end-warning', hidden: true });
    this.warningText = h('p', { 'data-testid': 'end-warning' });
    this.qualityEl = h('p', { class: 'quality', 'data-testid': 'quality', 'data-level': 'none' });
    this.micBtn = h('button', { type: 'button', class: 'toggle mic', 'aria-pressed': 'true', onclick: () => call.toggleMic() }, t('call.microphone'));
    this.camBtn = h('button', { type: 'button', class: 'toggle cam', 'aria-pressed': 'true', onclick: () => call.toggleCamera() }, t('call.camera'));
    this.screenBtn = h('button', { type: 'button', class: 'toggle screen', 'aria-pressed': 'false', onclick: () => call.toggleScreen() }, t('call.screen'));
    this.leaveBtn = h('button', { type: 'button', class: 'danger leave', onclick: () => call.leave('left') }, t('call.leave'));
    if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) this.screenBtn.disabled = true;
    if (call.o.canExtend) {
      this.extendBtn = h('button', { type: 'button', class: 'secondary', onclick: () => this.doExtend() }, t('call.extend', { minutes: call.o.extendMinutes || 15 }));
    }
    mount(this.warning, this.warningText, this.extendBtn);
    this.el = h(
      'section',
      { class: 'call', 'aria-label': t('call.title') },
      h('div', { class: 'stage' }, this.remoteVideo, this.placeholder, h('div', { class: 'pip' }, this.localVideo)),
      h('div', { class: 'call-info' }, this.status, this.qualityEl),
      this.warning,
      this.alertBox,
      h('div', { class: 'controls', role: 'toolbar', 'aria-label': t('call.controls') }, this.micBtn, this.camBtn, this.screenBtn, this.leaveBtn),
    );
    this.showLocal(call.stream, true);
    this.update();
  }

  showLocal(stream, mirror) {
    this.localVideo.srcObject = stream;
    this.localVideo.classList.toggle('mirror', !!mirror);
  }

  showRemote(stream) {
    if (this.remoteVideo.srcObject !== stream) this.remoteVideo.srcObject = stream;
  }

  alert(text) {
    mount(this.alertBox, h('p', {}, text));
    clearTimeout(this.alertTimer);
    this.alertTimer = setTimeout(() => mount(this.alertBox), 8000);
  }

  async doExtend() {
    const c = this.call;
    this.extendBtn.disabled = true;
    try {
      const end = await c.o.extend(c.o.extendMinutes || 15);
      c.extended(end);
    } catch (e) {
      this.alert(e && e.status === 409 ? t('call.error.extendTaken') : t('call.error.extend'));
    } finally {
      this.extendBtn.disabled = false;
    }
  }

  showWarning(leftMs) {
    this.warning.hidden = false;
    this.warningText.textContent = t('call.endsIn', { left: clock(leftMs) });
    if (!this.warnedOnce) {
      this.warnedOnce = true;
      this.alert(t('call.endsSoon', { minutes: Math.ceil(leftMs / 60000) }));
    }
  }

  hideWarning() {
    this.warning.hidden = true;
    this.warnedOnce = false;
  }

  quality(s) {
    if (!s) {
      this.qualityEl.dataset.level = 'none';
      this.qualityEl.textContent = '';
      return;
    }
    const lv = level(s);
    this.qualityEl.dataset.level = lv;
    const rtt = s.rtt == null ? '–' : `${Math.round(s.rtt)} ms`;
    this.qualityEl.textContent = t('call.quality', {
      level: t(`call.quality.${lv}`),
      kbps: Math.round(s.kbps),
      loss: (s.loss * 100).toFixed(1),
      rtt,
    });
  }

  update() {
    const c = this.call;
    const name = c.remote ? c.remote.display : '';
    let text = t(`call.state.${c.state}`, { name });
    if (c.state === 'connected') {
      const extra = [];
      if (c.remoteState.screen) extra.push(t('call.remote.screen', { name }));
      else if (!c.remoteState.camera) extra.push(t('call.remote.cameraOff', { name }));
      if (!c.remoteState.mic) extra.push(t('call.remote.micOff', { name }));
      if (extra.length) text = `${text}. ${extra.join('. ')}.`;
    }
    if (this.status.textContent !== text) this.status.textContent = text;
    this.status.dataset.state = c.state;
    this.status.dataset.remoteCamera = c.remote ? String(c.remoteState.camera) : '';
    this.status.dataset.remoteScreen = c.remote ? String(c.remoteState.screen) : '';
    // A camera that is off shows a message, never a frozen or black frame.
    const remoteCameraOff = c.remote && !c.remoteState.camera && !c.remoteState.screen;
    this.remoteVideo.classList.toggle('hidden-video', !c.remote || remoteCameraOff);
    this.placeholder.textContent = !c.remote ? t('call.placeholder.waiting') : remoteCameraOff ? t('call.remote.cameraOff', { name }) : '';
    this.placeholder.hidden = !(!c.remote || remoteCameraOff);
    const hasMic = c.stream.getAudioTracks().length > 0;
    this.micBtn.setAttribute('aria-pressed', String(c.mic && hasMic));
    this.micBtn.disabled = !hasMic || c.ended;
    this.camBtn.setAttribute('aria-pressed', String(c.camera));
    this.camBtn.disabled = !!c.screen || c.ended;
    this.screenBtn.setAttribute('aria-pressed', String(!!c.screen));
    if (c.ended) {
      this.screenBtn.disabled = true;
      this.leaveBtn.disabled = true;
    }
  }

  ended(reason) {
    this.hideWarning();
    this.quality(null);
    this.status.textContent = t(`call.end.${reason}`);
    this.remoteVideo.srcObject = null;
    this.localVideo.srcObject = null;
  }
}
