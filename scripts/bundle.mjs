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
// commander require()s node:child_process when it loads (for executable subcommands, which we do not
// use), and child_process brings net, dgram and the stream wraps with it: a proxy that loads it on
// first use keeps it out of every command's start-up (bench/RESULTS.md, "start-up"). Our own code
// loads it lazily through src/os/lazy.ts.
// Node's built-ins are require()d, not imported: an ESM import of a built-in builds its namespace,
// which runs every lazy getter (node:fs then loads fs/promises, streams, watchers and dir).
const requireBuiltins = {
  name: "require-builtins",
  setup(b) {
    b.onResolve({ filter: /^node:/ }, (a) =>
      a.namespace === "file" && !a.importer.includes("/node_modules/") && a.kind === "import-statement"
        ? { path: a.path, namespace: "builtin" }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: "builtin" }, (a) => ({
      contents: `module.exports = require(${JSON.stringify(a.path)});\n`,
      loader: "js",
    }));
  },
};
const lazyChildProcess = {
  name: "lazy-child-process",
  setup(b) {
    b.onResolve({ filter: /^(node:)?child_process$/ }, (a) =>
      a.importer.includes("/node_modules/commander/")
        ? { path: "child_process", namespace: "lazy" }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: "lazy" }, () => ({
      contents:
        'let m;\nmodule.exports = new Proxy({}, { get: (_, k) => (m ??= require("node:" + "child_process"))[k] });\n',
      loader: "js",
    }));
  },
};
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
  plugins: [requireBuiltins, lazyChildProcess],
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: "none",
  logLevel: "warning",
};
if (listInputs) {
  const r = await build({ ...options, write: false, metafile: true });
  // Files only: the plugins' virtual modules (lazy:…, builtin:…) are made here, not read.
  for (const f of Object.keys(r.metafile.inputs))
    if (!f.includes("node_modules/") && !/^[a-z]+:/.test(f))
      process.stdout.write(`${relative(repo, resolve(repo, f))}\n`);
  process.stdout.write("scripts/bundle.mjs\n");
} else {
  rmSync(outdir, { recursive: true, force: true });
  mkdirSync(outdir, { recursive: true });
  await build(options);
  for (const name of Object.keys(entries)) chmodSync(join(outdir, `${name}.js`), 0o755);
}
