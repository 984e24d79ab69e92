// The WebSocket session with `talkmotion serve` (protocol: talkmotion/serve.py) and
// the frames it returns, kept by absolute frame index.

export class FrameTrack {
  constructor() {
    this.clear();
  }

  clear() {
    this.values = [];
    this.presets = [];
    this.count = 0;
  }

  put(msg) {
    msg.values.forEach((row, k) => {
      this.values[msg.start + k] = row;
      if (msg.presets) this.presets[msg.start + k] = msg.presets[k];
    });
    this.count = Math.max(this.count, msg.start + msg.values.length);
  }

  /** The newest frame at or before `index` within the last second (null if none). */
  at(index, fps = 30) {
    for (let i = Math.min(index, this.count - 1); i >= 0 && i > index - fps; i--) {
      if (this.values[i]) return { index: i, values: this.values[i], presets: this.presets[i] };
    }
    return null;
  }
}

export class Session {
  constructor(url, { onFrames, onEnd, onError }) {
    this.url = url;
    this.onFrames = onFrames;
    this.onEnd = onEnd;
    this.onError = onError;
    this.ws = null;
    this.hello = null;
    this.cancelsPending = 0; // cancels the server has not answered yet: drop frames until it has
  }

  /** Connect; resolves with the server's hello (fps, latency, names). */
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      ws.binaryType = "arraybuffer";
      let greeted = false;
      ws.onmessage = (event) => {
        const msg = JSON.parse(event.data);
        if (msg.type === "hello") {
          greeted = true;
          this.hello = msg;
          resolve(msg);
        } else if (msg.type === "cancelled") this.cancelsPending = Math.max(0, this.cancelsPending - 1);
        else if (msg.type === "frames") {
          if (this.cancelsPending === 0) this.onFrames(msg);
        } else if (msg.type === "end") {
          if (this.cancelsPending === 0) this.onEnd(msg);
        } else if (msg.type === "error") {
          this.onError(msg.message);
          if (!greeted) reject(new Error(msg.message));
        }
      };
      ws.onerror = () => {
        if (!greeted) reject(new Error(`cannot connect to ${this.url}`));
      };
      ws.onclose = (event) => {
        // 1001: the server closed an idle session; the next play opens another.
        if (greeted && ![1000, 1001, 1005].includes(event.code)) this.onError(`connection closed: ${event.reason || event.code}`);
        this.ws = null;
        this.cancelsPending = 0;
      };
      this.ws = ws;
    });
  }

  get connected() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  start(options) {
    this.send(JSON.stringify({ type: "start", format: "f32le", sample_rate: 16000, options, presets: true }));
  }

  sendPcm(samples) {
    this.send(samples.buffer.byteLength === samples.byteLength ? samples.buffer : samples.slice().buffer);
  }

  setOptions(options) {
    this.send(JSON.stringify({ type: "options", options }));
  }

  /** Emotions {name: 0..1}: the server ramps to them from its next frame (talkmotion/style.py). */
  setStyle(emotions) {
    this.send(JSON.stringify({ type: "style", emotions }));
  }

  end() {
    this.send(JSON.stringify({ type: "end" }));
  }

  /** Drop the utterance in progress: the server discards its queued audio, and frames
   * still on their way are ignored until the server confirms with "cancelled". */
  cancel() {
    if (!this.connected) return;
    this.cancelsPending += 1;
    this.send(JSON.stringify({ type: "cancel" }));
  }

  send(data) {
    if (this.connected) this.ws.send(data);
  }

  close() {
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }
}
