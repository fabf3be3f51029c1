// `npm run build`: the CLI as one bundled ES module, dist/cli.js (esbuild; TypeScript is checked
// apart by `npm run typecheck`). One file means no module resolution at start-up: Node reads and
// compiles one script instead of resolving and loading ~70 modules and commander's CommonJS files.
// A command's code is still initialised only when that command runs: src/cli.ts imports each command
// with a dynamic import(), which esbuild turns into a lazy initialiser inside the bundle.
// Usage: node scripts/bundle.mjs [OUTDIR]   (default dist)
import { chmodSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const outdir = resolve(repo, process.argv[2] ?? "dist");
rmSync(outdir, { recursive: true, force: true });
mkdirSync(outdir, { recursive: true });
const entries = [["cli", "src/cli.ts"]];
for (const [name, src] of entries) {
  const outfile = join(outdir, `${name}.js`);
  await build({
    entryPoints: [join(repo, src)],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    // CommonJS dependencies (commander) call require() for Node's own modules.
    banner: { js: 'import { createRequire as __nbRequire } from "node:module";\nconst require = __nbRequire(import.meta.url);' },
    legalComments: "none",
    logLevel: "warning",
  });
  chmodSync(outfile, 0o755);
}
