/**
 * Time our .drv parser on a closure made by bench/make-closure.ts, and compare with
 * `nix show-derivation -r` on the same root.
 *
 *   node --import tsx bench/parse-closure.ts --store /tmp/bench/st --root /nix/store/…-n-0.drv [--runs 5] [--no-nix]
 *
 * Prints one JSON line with: drvs, bytes, read (ms: read + parse via readDerivationClosure, cold-ish),
 * parse (ms: parse only over texts already in memory; best of --runs, wall and CPU), per-drv and per-KB figures, and
 * nix show-derivation -r wall time.
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { readDerivationClosure } from "../src/host/derivation-read.js";
import { parseDerivation } from "../src/nix/derivation.js";

function main(argv: string[]): void {
  const arg = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const store = arg("--store");
  const root = arg("--root");
  const runs = Number(arg("--runs") ?? "5");
  if (!store || !root) {
    process.stderr.write("usage: parse-closure.ts --store DIR --root DRV [--runs N] [--no-nix]\n");
    process.exit(2);
  }
  const realStoreDir = join(resolve(store), "nix", "store");

  // 1. Walk the closure from the root: read + parse each .drv once.
  const t0 = performance.now();
  const closure = readDerivationClosure([root], { realStoreDir });
  const t1 = performance.now();

  // 2. Parse only: texts preloaded, best of N runs.
  const texts: string[] = [];
  let bytes = 0;
  for (const p of closure.keys()) {
    const t = readFileSync(join(realStoreDir, p.slice("/nix/store/".length)), "utf8");
    texts.push(t);
    bytes += Buffer.byteLength(t);
  }
  let best = Number.POSITIVE_INFINITY;
  let bestCpu = Number.POSITIVE_INFINITY;
  let features = 0;
  for (let r = 0; r < runs; r++) {
    const a = performance.now();
    const c = process.cpuUsage();
    for (const t of texts) features += parseDerivation(t).facts.requiredSystemFeatures.length;
    const cu = process.cpuUsage(c);
    best = Math.min(best, performance.now() - a);
    bestCpu = Math.min(bestCpu, (cu.user + cu.system) / 1000);
  }

  // 3. The oracle: nix show-derivation -r.
  let nixMs: number | null = null;
  if (!argv.includes("--no-nix")) {
    const env = { ...process.env, NIX_CONFIG: "experimental-features = nix-command" };
    const a = performance.now();
    const r = spawnSync("nix", ["show-derivation", "--store", resolve(store), "-r", root], {
      env,
      maxBuffer: 1 << 30,
      stdio: ["ignore", "pipe", "ignore"],
    });
    nixMs = performance.now() - a;
    if (r.status !== 0) nixMs = null;
  }

  const n = closure.size;
  const out = {
    drvs: n,
    bytes,
    readAndParseMs: +(t1 - t0).toFixed(1),
    readAndParseUsPerDrv: +(((t1 - t0) * 1000) / n).toFixed(2),
    parseOnlyMs: +best.toFixed(1),
    parseOnlyUsPerDrv: +((best * 1000) / n).toFixed(2),
    parseOnlyUsPerKB: +((best * 1000) / (bytes / 1024)).toFixed(3),
    // CPU time is less disturbed than wall time when the machine is shared.
    parseOnlyCpuMs: +bestCpu.toFixed(1),
    parseOnlyCpuUsPerKB: +((bestCpu * 1000) / (bytes / 1024)).toFixed(3),
    nixShowDerivationMs: nixMs === null ? null : +nixMs.toFixed(0),
    checksum: features,
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main(process.argv.slice(2));
