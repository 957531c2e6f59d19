// Call quality from RTCPeerConnection.getStats(): what arrives (bitrate, loss) on the receiving
// connection and the round-trip time of the selected candidate pair, sampled every two seconds.
// The level is a word as well as a number of bars, so it never relies on colour alone.

/** One sample: {kbps, loss (0..1), rtt (ms or null), frames, bytes} from the two connections. */
export async function sample(receivingPc, sendingPc, previous) {
  const now = { at: performance.now(), bytes: 0, lost: 0, received: 0, frames: 0, rtt: null };
  if (receivingPc) {
    const stats = await receivingPc.getStats();
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp') {
        now.bytes += s.bytesReceived || 0;
        now.lost += Math.max(0, s.packetsLost || 0);
        now.received += s.packetsReceived || 0;
        if (s.kind === 'video') now.frames += s.framesDecoded || 0;
      }
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded' && s.currentRoundTripTime != null) {
        now.rtt = s.currentRoundTripTime * 1000;
      }
    });
  }
  if (now.rtt == null && sendingPc) {
    const stats = await sendingPc.getStats();
    stats.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded' && s.currentRoundTripTime != null) {
        now.rtt = s.currentRoundTripTime * 1000;
      }
    });
  }
  if (!previous) return { ...now, kbps: 0, loss: 0 };
  const seconds = Math.max(0.001, (now.at - previous.at) / 1000);
  const packets = now.received - previous.received + (now.lost - previous.lost);
  return {
    ...now,
    kbps: Math.max(0, ((now.bytes - previous.bytes) * 8) / 1000 / seconds),
    loss: packets > 0 ? Math.max(0, now.lost - previous.lost) / packets : 0,
    flowing: now.bytes > previous.bytes,
  };
}

/** 'good' | 'fair' | 'poor' for a sample. */
export function level(s) {
  if (!s || !s.flowing) return 'poor';
  if (s.loss > 0.05 || (s.rtt != null && s.rtt > 400)) return 'poor';
  if (s.loss > 0.02 || (s.rtt != null && s.rtt > 200)) return 'fair';
  return 'good';
}

/** Running totals for the summary sent when the call ends. */
export function createSummary() {
  let n = 0;
  let kbps = 0;
  let loss = 0;
  let rtt = 0;
  let rttN = 0;
  const levels = { good: 0, fair: 0, poor: 0 };
  return {
    add(s) {
      n += 1;
      kbps += s.kbps;
      loss += s.loss;
      if (s.rtt != null) {
        rtt += s.rtt;
        rttN += 1;
      }
      levels[level(s)] += 1;
    },
    result() {
      return {
        samples: n,
        avg_kbps: n ? Math.round(kbps / n) : 0,
        avg_loss_pct: n ? Math.round((loss / n) * 1000) / 10 : 0,
        avg_rtt_ms: rttN ? Math.round(rtt / rttN) : null,
        good: levels.good,
        fair: levels.fair,
        poor: levels.poor,
      };
    },
  };
}
