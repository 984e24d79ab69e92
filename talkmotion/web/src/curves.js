// Live curves of the main channels over the last few seconds.
const SECONDS = 5;
const HEAD_RANGE_DEG = 30; // head angles are drawn as ±30° across the plot's height
export const CURVES = [
  ["jawOpen", "#f2b134"], ["mouthFunnel", "#ed6a5a"], ["mouthPucker", "#c06cd8"],
  ["mouthSmileLeft", "#5ab06a"], ["eyeBlinkLeft", "#4fa3e0"], ["browInnerUp", "#d8d8d8"],
  ["pitch", "#ff7fbf"], ["yaw", "#7fffd4"], ["roll", "#b0a0ff"],
];

export class Curves {
  constructor(canvas, legend, channels, fps) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.fps = fps;
    this.columns = CURVES.map(([name, color]) => ({ name, color, index: channels.indexOf(name),
      head: name === "pitch" || name === "yaw" || name === "roll" }));
    this.rows = [];
    legend.innerHTML = "";
    for (const c of this.columns) {
      const li = document.createElement("li");
      li.innerHTML = `<span style="background:${c.color}"></span>${c.name}`;
      legend.appendChild(li);
    }
  }

  push(values) {
    this.rows.push(values);
    const keep = Math.round(SECONDS * this.fps);
    if (this.rows.length > keep) this.rows.splice(0, this.rows.length - keep);
  }

  draw() {
    const { ctx, canvas } = this;
    const w = canvas.width, h = canvas.height, n = Math.round(SECONDS * this.fps);
    ctx.clearRect(0, 0, w, h);
    ctx.strokeStyle = "#333a44";
    ctx.beginPath();
    ctx.moveTo(0, h / 2);
    ctx.lineTo(w, h / 2);
    ctx.stroke();
    for (const c of this.columns) {
      if (c.index < 0) continue;
      ctx.strokeStyle = c.color;
      ctx.beginPath();
      this.rows.forEach((row, k) => {
        const v = c.head ? 0.5 + row[c.index] / (2 * HEAD_RANGE_DEG) : row[c.index];
        const x = (w * (n - this.rows.length + k)) / n, y = h - Math.max(0, Math.min(1, v)) * h;
        if (k === 0) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
      });
      ctx.stroke();
    }
  }
}
