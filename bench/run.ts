/**
 * `npm run bench`: the figures of bench/RESULTS.md, measured in one run.
 *
 *   1. plan vs `nix show-derivation -r` on closures of 2,000 and 20,000 derivations (100,000 with
 *      BENCH_FULL=1), generated with the real nix-instantiate into chroot stores under $BENCH_DIR
 *      (default /tmp/nix-builders-bench; kept between runs, regenerated when missing). Wall time
 *      (median of BENCH_RUNS, default 3, interleaved), CPU time and peak RSS (via /usr/bin/time when
 *      it exists), and the ratio plan / show-derivation. Target: ≤ 0.35.
 *   2. At 20,000: the .drv reader (sync loop vs a pool of 64 fs.promises reads) and the validity
 *      method (nix-daemon --stdio vs nix-store --check-validity), as plan's own phase timings.
 *   3. Startup: `node dist/cli.js show --json` vs `node -e 0`, median of 7, as a ratio. Target < 2.
 *   3b. lint vs `show --json` on 10,000 machines (target ≤ 1.5×), and 10 MB lines: time, peak RSS, output
 *      size (bench/lint.ts). BENCH_LINT=0 skips it.
 *   4. plan's facts cache at 20,000 (benchFactsCache below), in the store as generated (nothing built)
 *      and in a copy where the unchanged closure's outputs are registered valid (the CI case,
 *      benchBuilt). BENCH_ONLY=facts runs only it and the start-up table; BENCH_ONLY=startup only the
 *      start-up table; BENCH_ONLY=scale only the 100,000-derivation case (benchScale).
 *   5. As root: `doctor` over 16 lab builders against one, and `nix store ping` (bench/doctor.ts,
 *      bench/DOCTOR.md). Target ≤ 1.5×. Brings the lab up and down again unless it was up. BENCH_DOCTOR=0
 *      skips it.
 *   6. BENCH_ONLY=watch-scale: `watch` with 200 machine lines on the lab, probed every 60 s: its own CPU and
 *      RSS (bench/watch-scale.ts). Only that, as root, under the lab lock.
 *
 * It runs the built CLI (`npm run build` first). Until src/cli.ts wires `plan`, a small harness
 * calls dist/commands/plan.js's runPlan directly (same code, no commander). Must run as root or as a
 * user who can write $BENCH_DIR; needs nix-instantiate, nix-store, nix, /bin/busybox.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { decodeFacts, type FactsHeader, factsParts, indexFacts } from "../src/host/facts-cache.js";
import { benchDoctor } from "./doctor.js";
import { benchLint } from "./lint.js";
import { makeClosure } from "./make-closure.js";

const repo = resolve(import.meta.dirname, "..");
const benchDir = process.env.BENCH_DIR ?? "/tmp/nix-builders-bench";
const runs = Number(process.env.BENCH_RUNS ?? "3");
const sizes = [2000, 20000, ...(process.env.BENCH_FULL === "1" ? [100000] : [])];
const TIME = existsSync("/usr/bin/time") ? "/usr/bin/time" : null;

/** Machines that need no connection: plan only routes. A mix of systems, features, a maxJobs-0 machine. */
const BUILDERS = [
  "/tmp/nbb/arm aarch64-linux - 4 2 kvm,big-parallel",
  "/tmp/nbb/x86 x86_64-linux,i686-linux - 8 1 kvm,big-parallel",
  "/tmp/nbb/mac x86_64-darwin - 0 1",
].join("; ");

interface Measure {
  wallMs: number;
  cpuMs: number | null;
  maxRssKb: number | null;
  stdout: string;
  status: number | null;
}

function measure(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Measure {
  const argv = TIME ? [TIME, "-f", "@@TIME %U %S %M", cmd, ...args] : [cmd, ...args];
  const t0 = performance.now();
  const r = spawnSync(argv[0]!, argv.slice(1), { env, maxBuffer: 1 << 30, encoding: "utf8" });
  const wallMs = performance.now() - t0;
  let cpuMs: number | null = null;
  let maxRssKb: number | null = null;
  const m = /@@TIME ([\d.]+) ([\d.]+) (\d+)/.exec(r.stderr ?? "");
  if (m) {
    cpuMs = (Number(m[1]) + Number(m[2])) * 1000;
    maxRssKb = Number(m[3]);
  }
  return { wallMs, cpuMs, maxRssKb, stdout: r.stdout ?? "", status: r.status };
}

/** Median CPU time of some runs (null without /usr/bin/time). */
function cpu(ms: Measure[]): number | null {
  return ms[0]!.cpuMs === null ? null : Math.round(median(ms.map((m) => m.cpuMs!)));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function ensureStore(n: number): { store: string; root: string; generatedSeconds: number | null } {
  const dir = join(benchDir, `s${n}`);
  const marker = join(dir, "closure.json");
  if (existsSync(marker)) {
    const j = JSON.parse(readFileSync(marker, "utf8")) as { store: string; root: string };
    if (existsSync(join(j.store, "nix", "store", j.root.slice("/nix/store/".length))))
      return { ...j, generatedSeconds: null };
  }
  mkdirSync(dir, { recursive: true });
  process.stderr.write(`generating ${n} derivations in ${dir}/st …\n`);
  const r = makeClosure({ store: join(dir, "st"), n });
  writeFileSync(marker, JSON.stringify(r));
  return { store: r.store, root: r.root, generatedSeconds: r.seconds.eval + r.seconds.add };
}

/** The command that runs `plan` from dist/. */
function planCommand(): { cmd: string; pre: string[] } {
  const help = spawnSync("node", [join(repo, "dist", "cli.js"), "--help"], { encoding: "utf8" });
  if (/\bplan\b/.test(help.stdout ?? "")) return { cmd: "node", pre: [join(repo, "dist", "cli.js"), "plan"] };
  const harness = join(benchDir, "plan-harness.mjs");
  mkdirSync(benchDir, { recursive: true });
  writeFileSync(
    harness,
    `// Written by bench/run.ts: runs dist/commands/plan.js like the CLI would (argv: opts JSON, then args).
const { runPlan } = await import(${JSON.stringify(join(repo, "dist", "commands", "plan.js"))});
const { processIo } = await import(${JSON.stringify(join(repo, "dist", "commands", "io.js"))});
const [opts, ...args] = process.argv.slice(2);
process.exitCode = await runPlan(JSON.parse(opts), args, processIo);
`,
  );
  return { cmd: "node", pre: [harness] };
}

function planArgs(
  pc: { cmd: string; pre: string[] },
  store: string,
  root: string,
  extra: { read?: string; validity?: string; cacheDir?: string } = {},
): string[] {
  if (pc.pre[pc.pre.length - 1] === "plan") {
    const a = [...pc.pre, "--builders", BUILDERS, "--store", store, "--json", root];
    if (extra.read) a.push("--read", extra.read);
    if (extra.validity) a.push("--validity", extra.validity);
    // Without --cache-dir the plan is cold: the facts cache is neither read nor written.
    if (extra.cacheDir) a.push("--cache-dir", extra.cacheDir);
    else a.push("--no-cache");
    return a;
  }
  const cache = extra.cacheDir ? { cacheDir: extra.cacheDir } : { cache: false };
  return [...pc.pre, JSON.stringify({ builders: BUILDERS, store, json: true, ...extra, ...cache }), root];
}

/** A program that reads every file named in a list and nothing else: the floor of a cold plan. */
function floorCommand(): string {
  const file = join(benchDir, "read-floor.mjs");
  writeFileSync(
    file,
    `// Written by bench/run.ts: read every file listed in argv[2] (one per line), as plan's reader does.
import { closeSync, openSync, readFileSync, readSync } from "node:fs";
const buf = Buffer.allocUnsafe(1 << 20);
let bytes = 0;
for (const f of readFileSync(process.argv[2], "utf8").split("\\n")) {
  if (f === "") continue;
  const fd = openSync(f, "r");
  bytes += readSync(fd, buf, 0, buf.length, null);
  closeSync(fd);
}
process.stdout.write(String(bytes));
`,
  );
  return file;
}

/**
 * plan's facts cache at 20,000 derivations (issue: plan whose cost follows the change): cold plan
 * against the bare read of the same files, a warm plan of the unchanged closure, and a warm plan
 * after 1% of the derivations got a new leaf (bench/make-closure.ts --variant 1) against the cold
 * plan of that closure and against \`nix-store -r --dry-run\`. Plus the cache file's load time in
 * three formats (the binary file plan uses, the same tables as JSON, and as v8.serialize).
 */
async function benchFactsCache(
  pc: { cmd: string; pre: string[] },
  store: string,
  root: string,
  nixEnv: NodeJS.ProcessEnv,
): Promise<Record<string, unknown>> {
  const dir = join(benchDir, "s20000");
  const vMarker = join(dir, "variant1.json");
  let root1: string;
  if (existsSync(vMarker)) root1 = (JSON.parse(readFileSync(vMarker, "utf8")) as { root: string }).root;
  else {
    process.stderr.write("instantiating the changed closure (variant 1) …\n");
    const r = makeClosure({ store, n: 20000, variant: 1 });
    writeFileSync(vMarker, JSON.stringify(r));
    root1 = r.root;
  }
  const real = (p: string) => join(store, p);
  const list = join(dir, "drvs.txt");
  const drvs = execFileSync("nix-store", ["--store", store, "-qR", root], { env: nixEnv, maxBuffer: 1 << 28 })
    .toString()
    .split("\n")
    .filter((l) => l.endsWith(".drv"));
  writeFileSync(list, `${drvs.map(real).join("\n")}\n`);
  const floor = floorCommand();
  // The cache primed with the unchanged closure, kept aside and copied in before each changed run.
  const primed = mkdtempSync(join(benchDir, "facts-"));
  measure(pc.cmd, planArgs(pc, store, root, { cacheDir: primed }));
  const cacheFile = readdirSync(primed).find((f) => f.startsWith("plan-facts-"))!;
  const work = mkdtempSync(join(benchDir, "facts-"));
  const m: Record<string, Measure[]> = { floor: [], cold0: [], warm0: [], cold1: [], warm1: [], dryRun1: [] };
  for (let i = 0; i < runs; i++) {
    m.floor!.push(measure("node", [floor, list]));
    m.cold0!.push(measure(pc.cmd, planArgs(pc, store, root)));
    m.warm0!.push(measure(pc.cmd, planArgs(pc, store, root, { cacheDir: primed })));
    m.cold1!.push(measure(pc.cmd, planArgs(pc, store, root1)));
    copyFileSync(join(primed, cacheFile), join(work, cacheFile));
    m.warm1!.push(measure(pc.cmd, planArgs(pc, store, root1, { cacheDir: work })));
    m.dryRun1!.push(
      measure(
        "nix-store",
        ["--store", store, "--option", "substituters", "", "-r", "--dry-run", root1],
        nixEnv,
      ),
    );
  }
  const w = (k: string) => median(m[k]!.map((x) => x.wallMs));
  const phases = (k: string) => {
    const j = JSON.parse(m[k]![0]!.stdout) as { ms: unknown; cache: unknown };
    return { ms: j.ms, cache: j.cache };
  };
  // The file's load time in three formats: CPU time in this process, the least of 9 (steadier than
  // wall time on a shared machine).
  const buf = readFileSync(join(primed, cacheFile));
  const parts = factsParts(buf)!;
  const asJson = JSON.stringify({
    header: parts.header,
    strings: parts.strings,
    ints: Array.from(parts.ints),
  });
  // The same tables as NUL-separated UTF-8 strings plus raw little-endian ints (the first format tried).
  const stringBytes = Buffer.from(parts.strings.join("\0"), "utf8");
  const raw = Buffer.concat([
    stringBytes,
    Buffer.from(parts.ints.buffer, parts.ints.byteOffset, parts.ints.byteLength),
  ]);
  const time = (f: () => unknown) => {
    const xs: number[] = [];
    for (let i = 0; i < 9; i++) {
      const c = process.cpuUsage();
      f();
      const d = process.cpuUsage(c);
      xs.push((d.user + d.system) / 1000);
    }
    return +Math.min(...xs).toFixed(1);
  };
  const formats = {
    v8: { bytes: buf.length, loadCpuMs: time(() => decodeFacts(buf, "/nix/store")) },
    rawStringsAndInts: {
      bytes: raw.length,
      loadCpuMs: time(() => {
        const strings = raw.toString("utf8", 0, stringBytes.length).split("\0");
        const ints = new Int32Array(parts.ints.length);
        Buffer.from(ints.buffer).set(raw.subarray(stringBytes.length));
        return indexFacts(parts.header, strings, ints);
      }),
    },
    json: {
      bytes: Buffer.byteLength(asJson),
      loadCpuMs: time(() => {
        const j = JSON.parse(asJson) as { header: FactsHeader; strings: string[]; ints: number[] };
        return indexFacts(j.header, j.strings, Int32Array.from(j.ints));
      }),
    },
  };
  rmSync(primed, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
  const built = benchBuilt(pc, store, root, root1, nixEnv);
  const r = (a: number, b: number) => +(a / b).toFixed(3);
  return {
    drvFiles: drvs.length,
    wallMs: Object.fromEntries(Object.keys(m).map((k) => [k, Math.round(w(k))])),
    cpuMs: Object.fromEntries(Object.keys(m).map((k) => [k, cpu(m[k]!)])),
    ratios: {
      coldOverFloor: r(w("cold0"), w("floor")),
      warmUnchangedOverCold: r(w("warm0"), w("cold0")),
      warmChangedOverCold: r(w("warm1"), w("cold1")),
      warmChangedOverDryRun: r(w("warm1"), w("dryRun1")),
      cpu: {
        coldOverFloor: r(cpu(m.cold0!)!, cpu(m.floor!)!),
        warmUnchangedOverCold: r(cpu(m.warm0!)!, cpu(m.cold0!)!),
        warmChangedOverCold: r(cpu(m.warm1!)!, cpu(m.cold1!)!),
        warmChangedOverDryRun: r(cpu(m.warm1!)!, cpu(m.dryRun1!)!),
      },
    },
    phasesMs: {
      cold0: phases("cold0"),
      warm0: phases("warm0"),
      cold1: phases("cold1"),
      warm1: phases("warm1"),
    },
    formats,
    built,
  };
}

/**
 * The CI case: the same two closures in a copy of the store where every output of the unchanged
 * closure is registered valid (empty files, `nix-store --load-db`: --register-validity canonicalises the logical path, absent in a chroot store), as after a CI run built
 * it. A warm plan of the unchanged closure then asks only about the root's outputs, and after the 1%
 * change only about the changed derivations and their inputs' outputs.
 */
function benchBuilt(
  pc: { cmd: string; pre: string[] },
  store: string,
  root: string,
  root1: string,
  nixEnv: NodeJS.ProcessEnv,
): Record<string, unknown> {
  const dir = join(benchDir, "s20000-built");
  const st = join(dir, "st");
  const marker = join(dir, "built.json");
  if (!existsSync(marker)) {
    process.stderr.write("copying the 20k store and registering the unchanged closure's outputs …\n");
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    execFileSync("cp", ["-a", store, st]);
    const show = JSON.parse(
      execFileSync("nix", ["show-derivation", "--store", st, "-r", root], {
        env: nixEnv,
        maxBuffer: 1 << 30,
      }).toString(),
    ) as Record<string, { outputs: Record<string, { path?: string }> }>;
    // The NAR of an empty regular file: its hash and size are part of the registration.
    const str = (x: string) => {
      const b = Buffer.alloc(8 + Math.ceil(x.length / 8) * 8);
      b.writeUInt32LE(x.length, 0);
      b.write(x, 8, "latin1");
      return b;
    };
    const nar = Buffer.concat(["nix-archive-1", "(", "type", "regular", "contents", "", ")"].map(str));
    const narHash = createHash("sha256").update(nar).digest("hex");
    let reg = "";
    for (const d of Object.values(show))
      for (const o of Object.values(d.outputs))
        if (o.path) {
          writeFileSync(join(st, o.path), "");
          reg += `${o.path}\n${narHash}\n${nar.length}\n\n0\n`;
        }
    execFileSync("nix-store", ["--store", st, "--load-db"], {
      env: nixEnv,
      input: reg,
    });
    writeFileSync(marker, JSON.stringify({ root, root1 }));
  }
  const primed = mkdtempSync(join(benchDir, "facts-"));
  // Primed as CI would have it: by a plan of the closure before it was built (every derivation read).
  measure(pc.cmd, planArgs(pc, store, root, { cacheDir: primed }));
  const cacheFile = readdirSync(primed).find((f) => f.startsWith("plan-facts-"))!;
  const work = mkdtempSync(join(benchDir, "facts-"));
  const m: Record<string, Measure[]> = { cold0: [], warm0: [], cold1: [], warm1: [], dryRun1: [] };
  for (let i = 0; i < runs; i++) {
    m.cold0!.push(measure(pc.cmd, planArgs(pc, st, root)));
    m.warm0!.push(measure(pc.cmd, planArgs(pc, st, root, { cacheDir: primed })));
    m.cold1!.push(measure(pc.cmd, planArgs(pc, st, root1)));
    copyFileSync(join(primed, cacheFile), join(work, cacheFile));
    m.warm1!.push(measure(pc.cmd, planArgs(pc, st, root1, { cacheDir: work })));
    m.dryRun1!.push(
      measure("nix-store", ["--store", st, "--option", "substituters", "", "-r", "--dry-run", root1], nixEnv),
    );
  }
  rmSync(primed, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
  const r = (a: number, b: number) => +(a / b).toFixed(3);
  const c = (k: string) => cpu(m[k]!)!;
  const j = (k: string) => {
    const x = JSON.parse(m[k]![0]!.stdout) as { toBuild: number; valid: number; ms: unknown; cache: unknown };
    return { toBuild: x.toBuild, valid: x.valid, ms: x.ms, cache: x.cache };
  };
  return {
    wallMs: Object.fromEntries(
      Object.keys(m).map((k) => [k, Math.round(median(m[k]!.map((x) => x.wallMs)))]),
    ),
    cpuMs: Object.fromEntries(Object.keys(m).map((k) => [k, c(k)])),
    cpuRatios: {
      warmUnchangedOverCold: r(c("warm0"), c("cold0")),
      warmChangedOverCold: r(c("warm1"), c("cold1")),
      warmChangedOverDryRun: r(c("warm1"), c("dryRun1")),
    },
    runs: { cold0: j("cold0"), warm0: j("warm0"), cold1: j("cold1"), warm1: j("warm1") },
  };
}

/**
 * BENCH_ONLY=scale: the 100,000-derivation closure (generated once, ~2–5 min): a cold plan and a warm
 * one against `nix show-derivation -r` and `nix-store -r --dry-run` (no substituters), time and peak
 * RSS. BENCH_RUNS runs each (at most 3), interleaved.
 */
function benchScale(pc: { cmd: string; pre: string[] }, nixEnv: NodeJS.ProcessEnv): Record<string, unknown> {
  const { store, root } = ensureStore(100000);
  const primed = mkdtempSync(join(benchDir, "facts-"));
  measure(pc.cmd, planArgs(pc, store, root, { cacheDir: primed }));
  const m: Record<string, Measure[]> = { planCold: [], planWarm: [], showDerivation: [], dryRun: [] };
  for (let i = 0; i < Math.min(runs, 3); i++) {
    m.planCold!.push(measure(pc.cmd, planArgs(pc, store, root)));
    m.planWarm!.push(measure(pc.cmd, planArgs(pc, store, root, { cacheDir: primed })));
    m.showDerivation!.push(measure("nix", ["show-derivation", "--store", store, "-r", root], nixEnv));
    m.dryRun!.push(
      measure(
        "nix-store",
        ["--store", store, "--option", "substituters", "", "-r", "--dry-run", root],
        nixEnv,
      ),
    );
  }
  rmSync(primed, { recursive: true, force: true });
  const r = (a: number, b: number) => +(a / b).toFixed(3);
  const w = (k: string) => Math.round(median(m[k]!.map((x) => x.wallMs)));
  const c = (k: string) => cpu(m[k]!)!;
  const rss = (k: string) => +(Math.max(...m[k]!.map((x) => x.maxRssKb ?? 0)) / 1024).toFixed(1);
  const keys = Object.keys(m);
  return {
    n: 100000,
    wallMs: Object.fromEntries(keys.map((k) => [k, w(k)])),
    cpuMs: Object.fromEntries(keys.map((k) => [k, c(k)])),
    peakRssMB: Object.fromEntries(keys.map((k) => [k, rss(k)])),
    ratios: {
      coldOverShowDerivation: {
        wall: r(w("planCold"), w("showDerivation")),
        cpu: r(c("planCold"), c("showDerivation")),
      },
      coldRssOverShowDerivation: r(rss("planCold"), rss("showDerivation")),
      coldOverDryRun: { wall: r(w("planCold"), w("dryRun")), cpu: r(c("planCold"), c("dryRun")) },
      warmOverCold: { wall: r(w("planWarm"), w("planCold")), cpu: r(c("planWarm"), c("planCold")) },
    },
  };
}

async function main(): Promise<void> {
  process.stderr.write("building dist/ …\n");
  execFileSync("npm", ["run", "build"], { cwd: repo, stdio: ["ignore", "ignore", "inherit"] });
  const pc = planCommand();
  const nixEnv = { ...process.env, NIX_CONFIG: "experimental-features = nix-command" };
  const rows: Record<string, unknown>[] = [];
  let phases: Record<string, unknown> = {};
  let facts: Record<string, unknown> | null = null;

  // BENCH_ONLY=facts: only the facts-cache figures at 20,000 and the start-up table.
  const only = process.env.BENCH_ONLY;
  if (only === "scale") {
    process.stdout.write(
      `${JSON.stringify({ loadavg: readFileSync("/proc/loadavg", "utf8").trim(), scale: benchScale(pc, nixEnv) }, null, 2)}
`,
    );
    return;
  }
  // BENCH_ONLY=watch-scale: only watch with 200 lines on the lab (bench/watch-scale.ts; root, ~8 min).
  if (only === "watch-scale") {
    const { benchWatchScale } = await import("./watch-scale.js");
    process.stdout.write(`${JSON.stringify(await benchWatchScale(), null, 2)}
`);
    return;
  }
  for (const n of only === "startup" ? [] : sizes) {
    if (only === "facts") {
      if (n !== 20000) continue;
      const { store, root } = ensureStore(n);
      facts = await benchFactsCache(pc, store, root, nixEnv);
      continue;
    }
    const { store, root, generatedSeconds } = ensureStore(n);
    const plan: Measure[] = [];
    const show: Measure[] = [];
    // Warm the page cache once for both, then interleave.
    measure("nix", ["show-derivation", "--store", store, "-r", root], nixEnv);
    measure(pc.cmd, planArgs(pc, store, root));
    for (let i = 0; i < runs; i++) {
      plan.push(measure(pc.cmd, planArgs(pc, store, root)));
      show.push(measure("nix", ["show-derivation", "--store", store, "-r", root], nixEnv));
    }
    const out = JSON.parse(plan[0]!.stdout) as { toBuild: number; unbuildable: unknown[]; ms: unknown };
    const pw = median(plan.map((m) => m.wallMs));
    const sw = median(show.map((m) => m.wallMs));
    const rss = (ms: Measure[]) =>
      ms[0]!.maxRssKb === null ? null : Math.max(...ms.map((m) => m.maxRssKb!));
    rows.push({
      n,
      toBuild: out.toBuild,
      unbuildable: out.unbuildable.length,
      planWallMs: Math.round(pw),
      showDerivationWallMs: Math.round(sw),
      ratio: +(pw / sw).toFixed(3),
      planCpuMs: cpu(plan),
      showDerivationCpuMs: cpu(show),
      cpuRatio: cpu(plan) !== null ? +(cpu(plan)! / cpu(show)!).toFixed(3) : null,
      planPeakRssMB: rss(plan) === null ? null : +(rss(plan)! / 1024).toFixed(1),
      showDerivationPeakRssMB: rss(show) === null ? null : +(rss(show)! / 1024).toFixed(1),
      planPhasesMs: out.ms,
      generatedSeconds,
    });
    if (n === 20000) {
      const variant = (extra: { read?: string; validity?: string }) => {
        const m = measure(pc.cmd, planArgs(pc, store, root, extra));
        return { wallMs: Math.round(m.wallMs), phasesMs: (JSON.parse(m.stdout) as { ms: unknown }).ms };
      };
      phases = {
        "read=sync,validity=stdio": variant({ read: "sync", validity: "stdio" }),
        "read=pool,validity=stdio": variant({ read: "pool", validity: "stdio" }),
        "read=sync,validity=nix-store": variant({ read: "sync", validity: "nix-store" }),
      };
      facts = await benchFactsCache(pc, store, root, nixEnv);
    }
  }

  // Start-up: every command against `node -e 0`, interleaved, median of 7 (wall) and CPU (user+sys).
  // `show --json` and `route --system x86_64-linux --json` do their real work; the other commands
  // print their --help (their module loads, nothing runs).
  const cli = join(repo, "dist", "cli.js");
  const startCases: [string, string[]][] = [
    ["node -e 0", ["-e", "0"]],
    ["show --json", [cli, "show", "--json"]],
    ["route --system x86_64-linux --json", [cli, "route", "--system", "x86_64-linux", "--json"]],
    ...["config", "lint", "plan", "doctor", "verify", "use", "reset", "explain"].map(
      (c): [string, string[]] => [`${c} --help`, [cli, c, "--help"]],
    ),
  ];
  const startRuns = new Map<string, Measure[]>(startCases.map(([k]) => [k, []]));
  for (let i = 0; i < 7; i++)
    for (const [k, argv] of startCases) startRuns.get(k)!.push(measure("node", argv));
  const bareWall = median(startRuns.get("node -e 0")!.map((m) => m.wallMs));
  const bareCpu = cpu(startRuns.get("node -e 0")!);
  const startup = Object.fromEntries(
    [...startRuns].map(([k, ms]) => {
      const w = median(ms.map((m) => m.wallMs));
      const c = cpu(ms);
      return [
        k,
        {
          wallMs: Math.round(w),
          wallRatio: +(w / bareWall).toFixed(2),
          cpuMs: c,
          cpuRatio: c !== null && bareCpu ? +(c / bareCpu).toFixed(2) : null,
        },
      ];
    }),
  );

  const result = {
    date: new Date().toISOString(),
    cpus: spawnSync("nproc", { encoding: "utf8" }).stdout.trim(),
    loadavg: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" "),
    node: process.version,
    nix: spawnSync("nix", ["--version"], { encoding: "utf8" }).stdout.trim(),
    plan: rows,
    variantsAt20k: phases,
    factsCacheAt20k: facts,
    startup,
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(
    "\n| drvs | plan wall | show-derivation -r wall | ratio | plan CPU | show-drv CPU | CPU ratio | plan peak RSS | show-drv peak RSS |\n|---|---|---|---|---|---|---|---|---|\n",
  );
  for (const r of rows as Record<string, number | null>[]) {
    process.stdout.write(
      `| ${r.n} | ${r.planWallMs} ms | ${r.showDerivationWallMs} ms | ${r.ratio} | ${r.planCpuMs} ms | ${r.showDerivationCpuMs} ms | ${r.cpuRatio} | ${r.planPeakRssMB} MB | ${r.showDerivationPeakRssMB} MB |\n`,
    );
  }
  process.stdout.write(
    "\n| start-up | wall | ratio to node -e 0 | CPU | CPU ratio |\n|---|---|---|---|---|\n",
  );
  for (const [k, v] of Object.entries(startup))
    process.stdout.write(`| ${k} | ${v.wallMs} ms | ${v.wallRatio} | ${v.cpuMs} ms | ${v.cpuRatio} |\n`);

  if (process.env.BENCH_LINT !== "0") {
    const l = benchLint(runs);
    process.stdout.write(`\n${JSON.stringify({ lint: l }, null, 2)}\n`);
    process.stdout.write(
      `\nlint on 10,000 machines ${l.machines10k.lintMs} ms, show --json ${l.machines10k.showMs} ms, ratio ${l.machines10k.ratio} (target ≤ 1.5); 10 MB lines: ` +
        l.tenMegabyteLines
          .map((c) => `${c.name} ${c.lintMs} ms / ${c.lintPeakRssMB} MB / ${c.lintOutputBytes} B out`)
          .join(", ") +
        "\n",
    );
  }

  // The doctor over 16 lab builders (bench/doctor.ts): needs root (the lab); BENCH_DOCTOR=0 skips it.
  if (process.env.BENCH_DOCTOR === "0") return;
  if (process.getuid?.() !== 0) {
    process.stdout.write("\ndoctor: skipped (the lab needs root)\n");
    return;
  }
  const lab = join(repo, "test", "lab", "lab");
  const wasUp = spawnSync(lab, ["status", "--json"], { encoding: "utf8" }).status === 0;
  try {
    const d = await benchDoctor({ builders: 16, runs });
    process.stdout.write(`\n${JSON.stringify({ doctor: d }, null, 2)}\n`);
    process.stdout.write(
      `\ndoctor: 16 builders ${d.doctorAllMs} ms, one ${d.doctorOneMs} ms, ratio ${d.ratio} (target ≤ 1.5; CPU floor on ${d.cpus} CPUs ${d.floorRatio}); ` +
        `nix store ping: one ${d.pingOneMs} ms, 16 sequential ${d.pingSequentialMs} ms, 16 parallel ${d.pingParallelMs} ms (${d.pingParallelRatio}× one); ` +
        `blackhole with --timeout 5: ${d.blackhole.cause} after ${d.blackhole.builderMs} ms (command ${d.blackhole.commandMs} ms; bound 7000 ms); ` +
        d.withLatency
          .map(
            (l) =>
              `+${l.rttMs} ms per round trip: 16 builders ${l.doctorAllMs} ms, one ${l.doctorOneMs} ms, ratio ${l.ratio}`,
          )
          .join("; ") +
        "\n",
    );
  } finally {
    if (!wasUp) spawnSync(lab, ["down"]);
  }
}

await main();
