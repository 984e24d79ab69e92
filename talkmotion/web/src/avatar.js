// An avatar and how frames drive it.
//
// Three ways in, tried in this order:
//   VRM with perfect sync   expressions named after the ARKit shapes ("jawOpen", "JawOpen")
//   VRM without             the VRM presets (aa, ih, ou, ee, oh, blink…), whose weights the
//                           server computes and sends with every frame
//   plain glTF              morph targets named after the ARKit shapes, set directly
// Head angles are degrees in the glTF/VRM frame (three.js's frame too), applied
// yaw, then pitch, then roll: Euler order "YXZ" (talkmotion/rotation.py).
import * as THREE from "three";
import { GLTFLoader } from "three/examples/jsm/loaders/GLTFLoader.js";
import { VRMLoaderPlugin, VRMUtils } from "@pixiv/three-vrm";

// A VRM needs this many ARKit-named expressions to count as perfect sync.
const PERFECT_SYNC_MIN = 20;
const DEG = Math.PI / 180;
// Morph targets some exporters name with a mesh prefix ("blendShape1.jawOpen") or "_" separators.
const normalise = (name) => name.split(".").pop().replace(/[_\s-]/g, "").toLowerCase();

export async function loadAvatar(url) {
  const loader = new GLTFLoader();
  loader.register((parser) => new VRMLoaderPlugin(parser));
  const gltf = await loader.loadAsync(url);
  const vrm = gltf.userData.vrm;
  if (vrm) {
    VRMUtils.removeUnnecessaryVertices(gltf.scene);
    VRMUtils.rotateVRM0(vrm); // VRM 0.x faces -Z; make every avatar face +Z like VRM 1.0
    if (vrm.lookAt) vrm.lookAt.autoUpdate = false; // our eyeLook* weights, not a look-at target
    return new VrmRig(vrm);
  }
  return new GltfRig(gltf.scene);
}

class Rig {
  constructor(root) {
    this.root = root;
    this.restHead = null;
    this.euler = new THREE.Euler(0, 0, 0, "YXZ");
    this.turn = new THREE.Quaternion();
  }

  setHead(pitch, yaw, roll) {
    if (!this.head) return;
    this.euler.set(pitch * DEG, yaw * DEG, roll * DEG, "YXZ");
    this.turn.setFromEuler(this.euler);
    this.head.quaternion.copy(this.restHead).multiply(this.turn);
  }

  rememberHead(node) {
    this.head = node || null;
    this.restHead = node ? node.quaternion.clone() : null;
  }

  /** All morph target influences on the avatar's meshes: {"mesh/morph": weight}. */
  influences() {
    const out = {};
    this.root.traverse((obj) => {
      if (!obj.isMesh || !obj.morphTargetDictionary) return;
      for (const [name, i] of Object.entries(obj.morphTargetDictionary)) {
        out[`${obj.name}/${name}`] = obj.morphTargetInfluences[i];
      }
    });
    return out;
  }

  /** The largest influence among the morph targets that open the mouth. */
  mouthInfluence() {
    let most = 0;
    for (const { mesh, index } of this.mouthTargets) most = Math.max(most, mesh.morphTargetInfluences[index]);
    return most;
  }

  headBox() {
    const box = new THREE.Box3();
    if (this.head) {
      const p = new THREE.Vector3();
      this.head.getWorldPosition(p);
      return box.setFromCenterAndSize(p.add(new THREE.Vector3(0, 0.06, 0)), new THREE.Vector3(0.25, 0.3, 0.25));
    }
    box.setFromObject(this.root);
    const size = box.getSize(new THREE.Vector3());
    return box.set(new THREE.Vector3(box.min.x, box.max.y - size.y * 0.25, box.min.z), box.max);
  }
}

class VrmRig extends Rig {
  constructor(vrm) {
    super(vrm.scene);
    this.vrm = vrm;
    this.kind = "vrm";
    const manager = vrm.expressionManager;
    const byName = new Map((manager ? manager.expressions : []).map((e) => [normalise(e.expressionName), e]));
    this.arkit = null; // filled in bind(): ARKit channel index → expression name
    this.byName = byName;
    this.rememberHead(vrm.humanoid && vrm.humanoid.getNormalizedBoneNode("head"));
  }

  bind(blendshapes, presets) {
    const manager = this.vrm.expressionManager;
    const arkit = [];
    blendshapes.forEach((name, i) => {
      const e = this.byName.get(normalise(name));
      if (e) arkit.push([i, e.expressionName]);
    });
    this.mode = arkit.length >= PERFECT_SYNC_MIN ? "perfect sync" : "VRM presets";
    this.arkit = this.mode === "perfect sync" ? arkit : [];
    this.presets = this.mode === "VRM presets"
      ? presets.map((name, i) => [i, manager && manager.getExpression(name) ? name : null]).filter(([, n]) => n)
      : [];
    const mouthNames = this.mode === "perfect sync" ? ["jawopen"] : ["aa"];
    this.mouthTargets = [];
    for (const key of mouthNames) {
      const e = this.byName.get(key);
      for (const bind of e ? e.binds : []) {
        for (const mesh of bind.primitives || []) {
          if (bind.index !== undefined) this.mouthTargets.push({ mesh, index: bind.index });
        }
      }
    }
    return { mode: this.mode, bound: this.arkit.length + this.presets.length };
  }

  apply(values, presetValues) {
    const manager = this.vrm.expressionManager;
    if (manager) {
      for (const [i, name] of this.arkit) manager.setValue(name, values[i]);
      if (presetValues) for (const [i, name] of this.presets) manager.setValue(name, presetValues[i]);
    }
    this.setHead(values[values.length - 3], values[values.length - 2], values[values.length - 1]);
  }

  rest() {
    if (this.vrm.expressionManager) this.vrm.expressionManager.resetValues();
    this.setHead(0, 0, 0);
  }

  update(dt) {
    this.vrm.update(dt);
  }
}

class GltfRig extends Rig {
  constructor(scene) {
    super(scene);
    this.kind = "glTF";
    let head = null;
    scene.traverse((obj) => {
      if (!head && /(^|[^a-z])head$/i.test(obj.name)) head = obj;
    });
    this.rememberHead(head);
  }

  bind(blendshapes) {
    const wanted = new Map(blendshapes.map((name, i) => [normalise(name), i]));
    this.targets = []; // [channel, mesh, morph index]
    this.root.traverse((obj) => {
      if (!obj.isMesh || !obj.morphTargetDictionary) return;
      for (const [name, index] of Object.entries(obj.morphTargetDictionary)) {
        const channel = wanted.get(normalise(name));
        if (channel !== undefined) this.targets.push([channel, obj, index]);
      }
    });
    const jaw = wanted.get("jawopen");
    this.mouthTargets = this.targets.filter(([c]) => c === jaw).map(([, mesh, index]) => ({ mesh, index }));
    this.mode = "morph targets";
    return { mode: this.mode, bound: this.targets.length };
  }

  apply(values) {
    for (const [channel, mesh, index] of this.targets) mesh.morphTargetInfluences[index] = values[channel];
    this.setHead(values[values.length - 3], values[values.length - 2], values[values.length - 1]);
  }

  rest() {
    for (const [, mesh, index] of this.targets) mesh.morphTargetInfluences[index] = 0;
    this.setHead(0, 0, 0);
  }

  update() {}
}
