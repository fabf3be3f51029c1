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
 *   4. As root: `doctor` over 16 lab builders against one, and `nix store ping` (bench/doctor.ts,
 *      bench/DOCTOR.md). Target ≤ 1.5×. Brings the lab up and down again unless it was up. BENCH_DOCTOR=0
 *      skips it.
 *
 * It runs the built CLI (`npm run build` first). Until src/cli.ts wires `plan`, a small harness
 * calls dist/commands/plan.js's runPlan directly (same code, no commander). Must run as root or as a
 * user who can write $BENCH_DIR; needs nix-instantiate, nix-store, nix, /bin/busybox.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
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
  extra: { read?: string; validity?: string } = {},
): string[] {
  if (pc.pre[pc.pre.length - 1] === "plan") {
    const a = [...pc.pre, "--builders", BUILDERS, "--store", store, "--json", root];
    if (extra.read) a.push("--read", extra.read);
    if (extra.validity) a.push("--validity", extra.validity);
    return a;
  }
  return [...pc.pre, JSON.stringify({ builders: BUILDERS, store, json: true, ...extra }), root];
}

async function main(): Promise<void> {
  process.stderr.write("building dist/ …\n");
  execFileSync("npm", ["run", "build"], { cwd: repo, stdio: ["ignore", "ignore", "inherit"] });
  const pc = planCommand();
  const nixEnv = { ...process.env, NIX_CONFIG: "experimental-features = nix-command" };
  const rows: Record<string, unknown>[] = [];
  let phases: Record<string, unknown> = {};

  for (const n of sizes) {
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
    const cpu = (ms: Measure[]) =>
      ms[0]!.cpuMs === null ? null : Math.round(median(ms.map((m) => m.cpuMs!)));
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
    }
  }

  // Startup: show --json vs node -e 0.
  const cli = join(repo, "dist", "cli.js");
  const bare: number[] = [];
  const showRuns: number[] = [];
  for (let i = 0; i < 7; i++) {
    bare.push(measure("node", ["-e", "0"]).wallMs);
    showRuns.push(measure("node", [cli, "show", "--json"]).wallMs);
  }
  const startup = {
    nodeMs: Math.round(median(bare)),
    showJsonMs: Math.round(median(showRuns)),
    ratio: +(median(showRuns) / median(bare)).toFixed(2),
  };

  const result = {
    date: new Date().toISOString(),
    cpus: spawnSync("nproc", { encoding: "utf8" }).stdout.trim(),
    loadavg: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" "),
    node: process.version,
    nix: spawnSync("nix", ["--version"], { encoding: "utf8" }).stdout.trim(),
    plan: rows,
    variantsAt20k: phases,
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
    `\nstartup: node -e 0 ${startup.nodeMs} ms, show --json ${startup.showJsonMs} ms, ratio ${startup.ratio}\n`,
  );

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
