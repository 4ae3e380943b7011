// An AudioWorklet that measures the loudness of the audio flowing into it, on the audio thread.
//
// The page runs one per direction (the microphone, the agent's voice). It posts:
//   {type: "level", rms}                   about 20 times a second, for a level meter;
//   {type: "onset", at}                    when sound starts after at least `quietSeconds` of quiet;
//   {type: "end", at}                      when sound has stayed quiet for `quietSeconds` (`at` is the
//                                          end of the last loud block).
// `at` is the AudioContext time of the block's start; the page maps it to performance.now().
class LevelMeter extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const settings = options.processorOptions ?? {};
    this.threshold = settings.threshold ?? 0.01; // RMS of a 128-sample block: about -40 dBFS
    this.quietSeconds = settings.quietSeconds ?? 0.3;
    this.reportSeconds = settings.reportSeconds ?? 0.05;
    this.loud = false;
    this.lastLoudAt = -Infinity;
    this.peak = 0;
    this.reportedAt = 0;
  }

  process(inputs) {
    const channel = inputs[0]?.[0];
    if (!channel) return true;
    let sum = 0;
    for (let i = 0; i < channel.length; i += 1) sum += channel[i] * channel[i];
    const rms = Math.sqrt(sum / channel.length);
    const now = currentTime; // eslint-disable-line no-undef -- the worklet scope's clock
    if (rms >= this.threshold) {
      if (!this.loud) this.port.postMessage({ type: "onset", at: now });
      this.loud = true;
      this.lastLoudAt = now + channel.length / sampleRate; // eslint-disable-line no-undef
    } else if (this.loud && now - this.lastLoudAt >= this.quietSeconds) {
      this.loud = false;
      this.port.postMessage({ type: "end", at: this.lastLoudAt });
    }
    this.peak = Math.max(this.peak, rms);
    if (now - this.reportedAt >= this.reportSeconds) {
      this.port.postMessage({ type: "level", rms: this.peak });
      this.peak = 0;
      this.reportedAt = now;
    }
    return true;
  }
}

registerProcessor("level-meter", LevelMeter);
