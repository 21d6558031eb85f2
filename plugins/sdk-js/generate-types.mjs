// Generates the TypeScript types of the contract (the `model-handler` world
// of wit/edgeserve.wit) with jco into plugins/sdk-js/types, which
// edgeserve.d.ts builds on. Run it after changing the WIT:
//
//   node plugins/sdk-js/generate-types.mjs NODE_MODULES [WIT_DIR] [OUT_DIR]
//
// NODE_MODULES holds @bytecodealliance/jco: `edgeserve build` of a
// JavaScript handler installs it in ~/.cache/edgeserve/toolchains/js.
// tests/tests/authoring.rs runs this too and fails when the committed types
// differ from what it generates.
//
// Why not `jco guest-types wit -n model-handler -o types`: jco 1.35 runs its
// WIT reader (a component) on @bytecodealliance/preview2-shim 0.26, whose
// Node filesystem starts with no preopened directory, and the CLI never adds
// one. The reader then sees no file at all and fails with "failed to read
// path for WIT [...]: No such file or directory (os error 44)" whatever the
// path, flags or world. So this preopens the WIT folder in the shim jco
// loads, then calls jco's own generator.

import { mkdir, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const [modules, witArg, outArg] = process.argv.slice(2);
if (!modules) {
  console.error("usage: node generate-types.mjs NODE_MODULES [WIT_DIR] [OUT_DIR]");
  process.exit(2);
}
const wit = resolve(witArg ?? join(here, "../../wit"));
const out = resolve(outArg ?? join(here, "types"));

const transpile = createRequire(join(resolve(modules), "_.js")).resolve(
  "@bytecodealliance/jco-transpile",
);
const shim = createRequire(transpile).resolve("@bytecodealliance/preview2-shim/filesystem");
const { _addPreopen } = await import(pathToFileURL(shim).href);
_addPreopen(wit, wit);
const { generateGuestTypes } = await import(pathToFileURL(transpile).href);
const files = await generateGuestTypes(wit, { worldName: "model-handler", outDir: `${out}/` });

await rm(out, { recursive: true, force: true });
for (const [path, text] of Object.entries(files)) {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, text);
  console.log(`wrote ${path}`);
}
