// `npm run build`: the CLI bundled by esbuild into dist/cli.js plus shared chunks (TypeScript is
// checked apart by `npm run typecheck`). No module resolution at start-up and no node_modules at run
// time: commander and every other dependency are inside. src/cli.ts imports each command with a
// dynamic import(), so a command's chunk (and the Node built-ins it needs) loads only when it runs.
// Measured in bench/RESULTS.md ("start-up"): a single file without chunks loads every built-in any
// command imports (87 of Node's internal modules for `show`, against 70 with chunks).
// Usage: node scripts/bundle.mjs [OUTDIR]   (default dist)
import { chmodSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const outdir = resolve(repo, process.argv[2] ?? "dist");
rmSync(outdir, { recursive: true, force: true });
mkdirSync(outdir, { recursive: true });
// Entry points: one file each in OUTDIR; code they share goes to OUTDIR/chunks, loaded on first use.
const entries = { cli: "src/cli.ts" };
await build({
  entryPoints: Object.fromEntries(Object.entries(entries).map(([name, src]) => [name, join(repo, src)])),
  outdir,
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
});
for (const name of Object.keys(entries)) chmodSync(join(outdir, `${name}.js`), 0o755);
