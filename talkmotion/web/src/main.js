// The talkmotion viewer: an avatar driven by frames streamed from `talkmotion serve`.
//
// Audio file: decoded here, resampled to 16 kHz, streamed to the server, and played
// at once; frame i is shown while the audio clock is in [i/fps, (i+1)/fps), so
// the face follows the sound whatever the network does.
// Microphone: 100 ms blocks go to the server as they are recorded; frame i is shown
// at mic start + i/fps + the model's latency + a small jitter buffer.
//
// window.talkmotionDebug exposes state and the mesh's morph target influences for tests.
import * as THREE from "three";
import { loadAvatar } from "./avatar.js";
import { Curves } from "./curves.js";
import { FrameTrack, Session } from "./session.js";

const SAMPLE_RATE = 16000;
const FILE_CHUNK_SECONDS = 1.0; // upload chunk: few messages, each far under the size limit
const FILE_AHEAD_SECONDS = 10;  // audio sent ahead of the frames received: a cancel never waits behind more
const MIC_BLOCK_S = 0.1;        // the worklet's block (pcm-worklet.js): frames wait for a whole block
const MIC_JITTER_S = 0.08;      // extra delay that absorbs network and scheduling jitter
const DEBUG_SAMPLES = 2000;     // (audio time, mouth, frame shown, frames received) samples kept for tests

const $ = (id) => document.getElementById(id);
const debug = {
  ready: false, error: null, mode: "idle", avatar: null, framesReceived: 0, lastIndex: -1,
  audioTime: 0, ended: false, played: 0, samples: [],
  mouth: () => (rig ? rig.mouthInfluence() : 0),
  frame: (index) => track.values[index] || null,   // a received frame row, by index
  influences: () => (rig ? rig.influences() : {}),
};
window.talkmotionDebug = debug;

let info = null;
let rig = null;
let curves = null;
let session = null;
let audioCtx = null;
let playback = null; // {mode: "file"|"mic", start, duration?, source?, stop()}
let upload = null;   // the file being streamed: {session, pcm, sent}
let fileTurn = 0;    // the latest file chosen; an older one still decoding gives way to it
const track = new FrameTrack();
const options = {};
const emotions = {};   // the emotion sliders: {name: intensity}, sent as a "style" message

// --- scene -------------------------------------------------------------------
const canvas = $("view");
const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
renderer.setPixelRatio(window.devicePixelRatio);
const scene = new THREE.Scene();
scene.background = new THREE.Color(0x2a2f38);
const camera = new THREE.PerspectiveCamera(30, 1, 0.01, 100);
scene.add(new THREE.AmbientLight(0xffffff, 0.6));
const sun = new THREE.DirectionalLight(0xffffff, 1.6);
sun.position.set(0.5, 1.5, 2);
scene.add(sun);
let lastTick = performance.now();

function resize() {
  const { clientWidth: w, clientHeight: h } = canvas;
  if (canvas.width !== w || canvas.height !== h) {
    renderer.setSize(w, h, false);
    camera.aspect = w / Math.max(1, h);
    camera.updateProjectionMatrix();
  }
}

function frameHead() {
  const box = rig.headBox();
  const center = box.getCenter(new THREE.Vector3());
  const size = box.getSize(new THREE.Vector3()).length();
  camera.position.set(center.x, center.y, center.z + size * 2.2);
  camera.lookAt(center);
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
  if (isError) debug.error = text;
}

// --- avatar ------------------------------------------------------------------
async function useAvatar(url, label) {
  status(`loading ${label}…`);
  let next, binding;
  try {
    next = await loadAvatar(url);
    binding = next.bind(info.blendshapes, info.presets);
  } catch (err) {
    console.warn(`avatar ${label}:`, err); // the loader's own words, for whoever debugs the file
    throw new Error(avatarProblem(err));
  }
  if (binding.bound === 0) {
    throw new Error("has no ARKit morph targets and no VRM expressions (aa, ih, ou, ee, oh, blink…), so nothing on it would move");
  }
  if (rig) scene.remove(rig.root);
  rig = next;
  scene.add(rig.root);
  rig.root.updateMatrixWorld(true);
  frameHead();
  debug.avatar = { kind: rig.kind, mode: binding.mode, bound: binding.bound, label };
  $("avatar-info").textContent = `${label}: ${rig.kind}, ${binding.mode} (${binding.bound} bound)`;
  status(`${label} ready`);
}

/** A loader's failure in words a user can act on (three.js's messages name its internals). */
function avatarProblem(err) {
  const text = String(err && err.message);
  if (err instanceof SyntaxError || /JSON|Unexpected token|magic|header/i.test(text)) {
    return "is not a glTF/VRM avatar: expected a .glb or .vrm file";
  }
  if (/version|extension|Unsupported/i.test(text)) {
    return "uses a glTF version or extension this viewer cannot read";
  }
  return "is damaged or not an avatar: its glTF data could not be read";
}

// --- session -----------------------------------------------------------------
async function ensureSession() {
  if (session && session.connected) return session;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  session = new Session(`${scheme}://${location.host}/ws`, {
    onFrames: (msg) => {
      track.put(msg);
      debug.framesReceived = track.count;
      feedUpload();
    },
    onEnd: () => {
      debug.serverEnded = true;
    },
    onError: (message) => status(message, true),
  });
  await session.open();
  return session;
}

function ensureAudio() {
  if (!audioCtx) audioCtx = new AudioContext();
  return audioCtx.resume().then(() => audioCtx);
}

async function to16k(buffer) {
  const length = Math.ceil(buffer.duration * SAMPLE_RATE);
  const offline = new OfflineAudioContext(1, length, SAMPLE_RATE);
  const source = offline.createBufferSource();
  source.buffer = buffer;
  source.connect(offline.destination);
  source.start();
  const rendered = await offline.startRendering();
  return rendered.getChannelData(0);
}

async function playFile(file) {
  stop();
  const turn = ++fileTurn;
  const ctx = await ensureAudio();
  status(`decoding ${file.name}…`);
  let buffer;
  try {
    buffer = await ctx.decodeAudioData(await file.arrayBuffer());
  } catch (err) {
    if (turn === fileTurn) status(`${file.name}: not audio this browser can decode (${err.message})`, true);
    return;
  }
  const pcm = await to16k(buffer);
  const s = await ensureSession();
  if (turn !== fileTurn) return; // another file was chosen meanwhile
  stop();
  track.clear();
  debug.ended = false;
  debug.serverEnded = false;
  debug.samples = [];
  s.start(options);
  s.setStyle(emotions);
  upload = { session: s, pcm, sent: 0 };
  feedUpload();
  const source = ctx.createBufferSource();
  source.buffer = buffer;
  source.connect(ctx.destination);
  const start = ctx.currentTime + 0.05;
  source.start(start);
  const mine = { mode: "file", start, duration: buffer.duration, stop: () => source.stop() };
  playback = mine;
  source.onended = () => {
    if (playback === mine) finish(); // a stopped file's late "ended" must not end the next one
  };
  debug.mode = "file";
  status(`playing ${file.name}`);
}

async function startMic() {
  stop();
  const s = await ensureSession();
  const ctx = new AudioContext({ sampleRate: SAMPLE_RATE });
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
  } catch (err) {
    status(`microphone: ${err.message}`, true);
    ctx.close();
    return;
  }
  await ctx.audioWorklet.addModule("/static/pcm-worklet.js");
  const input = ctx.createMediaStreamSource(stream);
  const collector = new AudioWorkletNode(ctx, "pcm-collector");
  track.clear();
  s.start(options);
  s.setStyle(emotions);
  // The mic clock starts with the first block, not with the context: getUserMedia and
  // the worklet take a while, and frames are timed from the first sample sent.
  const delay = (s.hello.latency_ms / 1000) + MIC_BLOCK_S + MIC_JITTER_S;
  playback = {
    mode: "mic", ctx, start: Infinity,
    stop: () => {
      stream.getTracks().forEach((t) => t.stop());
      ctx.close();
      s.end();
    },
  };
  const mic = playback;
  collector.port.onmessage = (event) => {
    const block = new Float32Array(event.data);
    if (mic.start === Infinity) mic.start = ctx.currentTime - block.length / SAMPLE_RATE + delay;
    s.sendPcm(block);
  };
  input.connect(collector);
  debug.mode = "mic";
  status("listening…");
}

/** Send the file's audio while it is less than FILE_AHEAD_SECONDS ahead of the frames back. */
function feedUpload() {
  if (!upload) return;
  const { session: s, pcm } = upload;
  const step = Math.round(FILE_CHUNK_SECONDS * SAMPLE_RATE);
  const ahead = () => upload.sent / SAMPLE_RATE - track.count / info.fps;
  while (upload.sent < pcm.length && ahead() < FILE_AHEAD_SECONDS) {
    s.sendPcm(pcm.slice(upload.sent, upload.sent + step));
    upload.sent += step;
  }
  if (upload.sent >= pcm.length) {
    s.end();
    upload = null;
  }
}

function finish() {
  playback = null;
  debug.mode = "idle";
  debug.ended = true;
  debug.played += 1;
  if (rig) rig.rest();
  status("done");
}

function stop() {
  // A file still streaming, or frames still coming for it, belong to nothing now.
  if (playback && playback.mode === "file" && session) session.cancel();
  upload = null;
  if (playback) {
    const p = playback;
    playback = null;
    p.stop();
  }
  debug.mode = "idle";
  if (rig) rig.rest();
}

// --- controls ----------------------------------------------------------------
function buildControls(controls) {
  const box = $("controls");
  for (const c of controls) {
    options[c.name] = c.default;
    const label = document.createElement("label");
    label.className = "control";
    label.title = c.live ? "applies at once" : "applies from the next start";
    const name = document.createElement("span");
    name.textContent = c.name.replace(/_/g, " ");
    label.appendChild(name);
    let input;
    const out = document.createElement("output");
    if (c.kind === "choice") {
      input = document.createElement("select");
      for (const choice of c.choices) input.add(new Option(choice, choice, false, choice === c.default));
    } else {
      input = document.createElement("input");
      Object.assign(input, { type: "range", min: c.min, max: c.max, step: c.step, value: c.default });
      out.textContent = c.default;
    }
    input.id = `opt-${c.name}`;
    input.addEventListener("input", () => {
      const value = c.kind === "choice" ? input.value : Number(input.value);
      options[c.name] = value;
      out.textContent = c.kind === "choice" ? "" : value;
      if (c.live && session && session.connected) session.setOptions({ [c.name]: value });
    });
    label.appendChild(input);
    label.appendChild(out);
    box.appendChild(label);
  }
}

function buildEmotionSliders(names) {
  const box = $("emotions");
  for (const name of names.filter((n) => n !== "neutral")) {
    emotions[name] = 0;
    const label = document.createElement("label");
    label.className = "control";
    label.title = "applies at once, ramping in";
    const text = document.createElement("span");
    text.textContent = name;
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: 0, max: 1, step: 0.05, value: 0, id: `emotion-${name}` });
    const out = document.createElement("output");
    out.textContent = "0";
    input.addEventListener("input", () => {
      emotions[name] = Number(input.value);
      out.textContent = input.value;
      if (session && session.connected) session.setStyle(emotions);
    });
    label.append(text, input, out);
    box.appendChild(label);
  }
}

// --- render loop -------------------------------------------------------------
function currentIndex() {
  if (!playback) return -1;
  const t = playback.mode === "file" ? audioCtx.currentTime - playback.start : playback.ctx.currentTime - playback.start;
  debug.audioTime = t;
  return t < 0 ? -1 : Math.floor(t * info.fps);
}

function tick() {
  requestAnimationFrame(tick);
  const now = performance.now();
  const dt = (now - lastTick) / 1000;
  lastTick = now;
  resize();
  if (rig) {
    const index = currentIndex();
    const frame = index >= 0 ? track.at(index, info.fps) : null;
    if (frame && frame.index !== debug.lastIndex) {
      rig.apply(frame.values, frame.presets);
      curves.push(frame.values);
      debug.lastIndex = frame.index;
    }
    rig.update(dt);
    if (playback && playback.mode === "file") {
      debug.samples.push([debug.audioTime, rig.mouthInfluence(), debug.lastIndex, track.count]);
      if (debug.samples.length > DEBUG_SAMPLES) debug.samples.shift();
    }
  }
  if (curves) curves.draw();
  renderer.render(scene, camera);
}

// --- start -------------------------------------------------------------------
async function main() {
  try {
    const response = await fetch("/api/info");
    if (!response.ok) throw new Error(`server: ${(await response.json()).error || response.status}`);
    info = await response.json();
    $("model-info").textContent = `model ${info.model}: ${info.fps} fps, ${info.latency_ms.toFixed(0)} ms latency`;
    buildControls(info.controls);
    buildEmotionSliders(info.emotions || []);
    curves = new Curves($("curves"), $("legend"), [...info.blendshapes, ...info.head], info.fps);
    $("reference-avatar").onclick = () => useAvatar("/avatar/reference.vrm", "reference avatar");
    $("avatar-file").onchange = (e) => {
      const file = e.target.files[0];
      if (file) useAvatar(URL.createObjectURL(file), file.name).catch((err) => status(`${file.name}: ${err.message}`, true));
    };
    $("audio-file").onchange = (e) => {
      const file = e.target.files[0];
      if (file) playFile(file).catch((err) => status(err.message, true));
    };
    $("mic").onclick = () => startMic().catch((err) => status(err.message, true));
    $("stop").onclick = () => {
      stop();
      status("stopped");
    };
    tick();
    await useAvatar("/avatar/reference.vrm", "reference avatar");
    debug.ready = true;
  } catch (err) {
    status(err.message, true);
  }
}

main();
