// Collects microphone samples on the audio thread and posts them in ~100 ms
// Float32 blocks; the page sends each block to the server as one message.
const BLOCK_SECONDS = 0.1;

class PcmCollector extends AudioWorkletProcessor {
  constructor() {
    super();
    this.size = Math.round(sampleRate * BLOCK_SECONDS);
    this.block = new Float32Array(this.size);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    let offset = 0;
    while (offset < channel.length) {
      const n = Math.min(channel.length - offset, this.size - this.filled);
      this.block.set(channel.subarray(offset, offset + n), this.filled);
      this.filled += n;
      offset += n;
      if (this.filled === this.size) {
        this.port.postMessage(this.block.buffer, [this.block.buffer]);
        this.block = new Float32Array(this.size);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-collector", PcmCollector);
