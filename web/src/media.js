// Camera and microphone: capture, device lists, the level meter, and what went wrong in words a
// person can act on.

/** Why media cannot start: 'no-webrtc' | 'denied' | 'no-device' | 'in-use' | 'other'. */
export function mediaProblem(err) {
  const name = err && err.name;
  if (name === 'NotAllowedError' || name === 'SecurityError' || name === 'PermissionDeniedError') return 'denied';
  if (name === 'NotFoundError' || name === 'OverconstrainedError' || name === 'DevicesNotFoundError') return 'no-device';
  if (name === 'NotReadableError' || name === 'TrackStartError' || name === 'AbortError') return 'in-use';
  return 'other';
}

export function hasWebRTC() {
  return !!(
    window.RTCPeerConnection &&
    navigator.mediaDevices &&
    navigator.mediaDevices.getUserMedia &&
    window.isSecureContext !== false
  );
}

/**
 * Asks for camera and microphone (the chosen devices, if any). When one kind is missing, retries
 * with the other alone, so a person without a camera can still talk. Returns {stream, problem}:
 * stream may be null (then problem says why), problem may be set with a partial stream.
 */
export async function capture(audioId, videoId) {
  const audio = audioId ? { deviceId: { exact: audioId } } : true;
  const video = videoId
    ? { deviceId: { exact: videoId }, width: { ideal: 1280 }, height: { ideal: 720 } }
    : { width: { ideal: 1280 }, height: { ideal: 720 } };
  try {
    return { stream: await navigator.mediaDevices.getUserMedia({ audio, video }), problem: null };
  } catch (err) {
    const problem = mediaProblem(err);
    if (problem !== 'no-device') return { stream: null, problem, error: err };
    for (const only of [{ audio }, { video }]) {
      try {
        return { stream: await navigator.mediaDevices.getUserMedia(only), problem: 'no-device', partial: true };
      } catch (e) {
        // Try the other kind.
      }
    }
    return { stream: null, problem, error: err };
  }
}

export async function devices() {
  try {
    const all = await navigator.mediaDevices.enumerateDevices();
    return {
      audio: all.filter((d) => d.kind === 'audioinput' && d.deviceId),
      video: all.filter((d) => d.kind === 'videoinput' && d.deviceId),
    };
  } catch (e) {
    return { audio: [], video: [] };
  }
}

export function stopStream(stream) {
  if (stream) for (const track of stream.getTracks()) track.stop();
}

/** Feeds the microphone's level (0..1) to `onLevel` about 10 times a second; returns stop(). */
export function levelMeter(stream, onLevel) {
  const track = stream && stream.getAudioTracks()[0];
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!track || !Ctx) return () => {};
  const ctx = new Ctx();
  const source = ctx.createMediaStreamSource(new MediaStream([track]));
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 512;
  source.connect(analyser);
  const data = new Float32Array(analyser.fftSize);
  const timer = setInterval(() => {
    analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (const v of data) sum += v * v;
    // RMS to a 0..1 scale that moves visibly for speech (about -50 dBFS to 0).
    const db = 20 * Math.log10(Math.sqrt(sum / data.length) || 1e-8);
    onLevel(Math.min(1, Math.max(0, (db + 50) / 50)));
  }, 100);
  return () => {
    clearInterval(timer);
    source.disconnect();
    ctx.close().catch(() => {});
  };
}
