// Builds the viewer into dist/: one bundled script (three.js and three-vrm from
// node_modules, no CDN), the microphone worklet, the page and its style sheet.
// Run by scripts/setup.sh after `npm ci`; `node build.mjs` by hand after edits.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, "src");
const dist = join(here, "dist");

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
await build({
  entryPoints: { viewer: join(src, "main.js"), "pcm-worklet": join(src, "pcm-worklet.js") },
  outdir: dist,
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  sourcemap: true,
  logLevel: "warning",
});
for (const file of ["index.html", "style.css"]) {
  await copyFile(join(src, file), join(dist, file));
}
console.log(`viewer built in ${dist}`);
