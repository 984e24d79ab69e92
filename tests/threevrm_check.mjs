// Loads a VRM and a .vrma with three.js + three-vrm + three-vrm-animation (the viewer's own
// packages, in Node: no browser needed for parsing), plays the animation to its end and
// prints what the avatar shows as one JSON line. Used by tests/test_threevrm.py.
//   node tests/threevrm_check.mjs WEB_NODE_MODULES AVATAR.vrm ANIMATION.vrma
import fs from 'fs';
import path from 'path';
import { pathToFileURL } from 'url';

const [modules, avatarPath, animationPath] = process.argv.slice(2);
const lib = (p) => import(pathToFileURL(path.join(modules, p)).href);
const THREE = await lib('three/build/three.module.js');
const { GLTFLoader } = await lib('three/examples/jsm/loaders/GLTFLoader.js');
const { VRMLoaderPlugin } = await lib('@pixiv/three-vrm/lib/three-vrm.module.js');
const { VRMAnimationLoaderPlugin, createVRMAnimationClip } =
  await lib('@pixiv/three-vrm-animation/lib/three-vrm-animation.module.js');

function load(file, Plugin) {
  const loader = new GLTFLoader();
  loader.register((parser) => new Plugin(parser));
  const bytes = fs.readFileSync(file);
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  return new Promise((resolve, reject) => loader.parse(buffer, '', resolve, reject));
}

console.warn = () => {};  // three-vrm's advisory warnings would break the one-line output
const vrm = (await load(avatarPath, VRMLoaderPlugin)).userData.vrm;
const animation = (await load(animationPath, VRMAnimationLoaderPlugin)).userData.vrmAnimations[0];
const clip = createVRMAnimationClip(animation, vrm);
const mixer = new THREE.AnimationMixer(vrm.scene);
mixer.clipAction(clip).play();
mixer.update(animation.duration * 0.999);
vrm.update(0);
let face = null;
vrm.scene.traverse((o) => { if (o.isMesh && o.morphTargetDictionary && 'jawOpen' in o.morphTargetDictionary) face = o; });
const morphs = {};
for (const [name, i] of Object.entries(face.morphTargetDictionary)) morphs[name] = face.morphTargetInfluences[i];
console.log(JSON.stringify({
  metaVersion: vrm.meta.metaVersion,
  expressions: vrm.expressionManager.expressions.map((e) => e.expressionName),
  duration: animation.duration,
  tracks: clip.tracks.map((t) => t.name),
  morphs,
  head: vrm.humanoid.getNormalizedBoneNode('head').quaternion.toArray(),
  neck: vrm.humanoid.getNormalizedBoneNode('neck').quaternion.toArray(),
  lookAt: vrm.lookAt ? { yaw: vrm.lookAt.yaw, pitch: vrm.lookAt.pitch } : null,
}));
