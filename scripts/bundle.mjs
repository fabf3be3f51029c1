// `npm run build`: the CLI bundled by esbuild into dist/cli.js plus shared chunks (TypeScript is
// checked apart by `npm run typecheck`). No module resolution at start-up and no node_modules at run
// time: commander and every other dependency are inside. src/cli.ts imports each command with a
// dynamic import(), so a command's chunk (and the Node built-ins it needs) loads only when it runs.
// Measured in bench/RESULTS.md ("start-up"): a single file without chunks loads every built-in any
// command imports (87 of Node's internal modules for `show`, against 70 with chunks).
// Entry points: dist/cli.js (the `nix-builders` bin) and dist/hook-recorder.js (started by
// libexec/build-hook beside every remote build; it must stay small).
// Usage: node scripts/bundle.mjs [OUTDIR]   (default dist)
//        node scripts/bundle.mjs --list-inputs   (the repository files the build reads, one per line)
import { chmodSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const listInputs = process.argv[2] === "--list-inputs";
const outdir = resolve(repo, listInputs ? "dist" : (process.argv[2] ?? "dist"));
const entries = { cli: "src/cli.ts", "hook-recorder": "src/hook-recorder.ts" };
const options = {
  entryPoints: Object.fromEntries(Object.entries(entries).map(([name, src]) => [name, join(repo, src)])),
  outdir,
  // Code the entry points share goes to OUTDIR/chunks, loaded on first use.
  chunkNames: "chunks/[name]-[hash]",
  bundle: true,
  splitting: true,
  platform: "node",
  format: "esm",
  target: "node20",
  // CommonJS dependencies (commander) call require() for Node's own modules.
  banner: {
    js: 'import { createRequire as __nbRequire } from "node:module";\nconst require = __nbRequire(import.meta.url);',
  },
  legalComments: "none",
  logLevel: "warning",
};
if (listInputs) {
  const r = await build({ ...options, write: false, metafile: true });
  for (const f of Object.keys(r.metafile.inputs))
    if (!f.includes("node_modules/")) process.stdout.write(`${relative(repo, resolve(repo, f))}\n`);
  process.stdout.write("scripts/bundle.mjs\n");
} else {
  rmSync(outdir, { recursive: true, force: true });
  mkdirSync(outdir, { recursive: true });
  await build(options);
  for (const name of Object.keys(entries)) chmodSync(join(outdir, `${name}.js`), 0o755);
}
