/**
 * The doctor benchmark (figures in bench/DOCTOR.md):
 *
 *   1. `doctor` over N lab builders (default 16), all at once (bounded concurrency 16);
 *   2. `doctor --builder <one>` (one builder, same local checks);
 *   3. `nix store ping --store <pinned ssh:// URI>` as root: for one builder, for the N one after
 *      another (what an operator does by hand), and for the N all at once (background jobs). Ping only
 *      covers ssh + handshake, far less than the doctor; the parallel ping shows what N of Nix's own
 *      connections cost on this box.
 *   4. `doctor --builder <b1> --timeout 5` with b1 blackholed: the `timeout` verdict must come within
 *      the timeout + 2 s.
 *   5. 1 and 2 again with every builder behind the lab's `slow` fault at 50 and 200 ms of extra round
 *      trip (builders far away, as real ones are): the per-builder time is then mostly waiting.
 *
 * Everything runs on the lab's agent machine as root, `--user hercules-ci-agent`, with the built CLI
 * (`node dist/cli.js`, what the `nix-builders` bin runs; built first when missing), median of the runs,
 * interleaved. Target: N builders take at most 1.5× the wall time of one.
 *
 * The lab's builders run on this machine's CPUs, so the whole machine's CPU time (/proc/stat: user,
 * nice, system, irq, softirq) is measured around each doctor run, client and builders together. With
 * `cpus` CPUs, a run that needs C CPU-seconds cannot take less than C / cpus of wall time: `floorRatio`
 * is that bound for the N-builder run divided by the one-builder wall time, the best ratio this box
 * allows for the work the doctor does.
 *
 *   node --import tsx bench/doctor.ts [--builders 16] [--runs 3]
 *
 * Brings the lab up with N builders when it has fewer (`test/lab/lab up --builders N`), and leaves it up.
 * Prints one JSON object on stdout. bench/run.ts calls `benchDoctor()` when run as root.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { cpus } from "node:os";
import { resolve } from "node:path";

const repo = resolve(import.meta.dirname, "..");
const LAB = `${repo}/test/lab/lab`;

interface LabJson {
  up: boolean;
  agent: { exec: string[] };
  builders: { name: string; address: string; storeUriPinned: string }[];
}

function labStatus(): LabJson | null {
  const r = spawnSync(LAB, ["status", "--json"], { encoding: "utf8" });
  if (r.status !== 0) return null;
  const j = JSON.parse(r.stdout) as LabJson;
  return j.up ? j : null;
}

/** CPU time of the whole machine so far, in ms (user + nice + system + irq + softirq). */
function machineCpuMs(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).map(Number);
  const ticks = f[1]! + f[2]! + f[3]! + f[6]! + f[7]!;
  return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
}

interface Timed {
  ms: number;
  cpuMs: number;
  code: number | null;
  stdout: string;
}

function timed(argv: string[]): Timed {
  const c0 = machineCpuMs();
  const t0 = performance.now();
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", maxBuffer: 1 << 28, cwd: repo });
  return { ms: performance.now() - t0, cpuMs: machineCpuMs() - c0, code: r.status, stdout: r.stdout ?? "" };
}

/** Run every argv at once; wall time until the last exits. */
async function timedParallel(argvs: string[][]): Promise<number> {
  const t0 = performance.now();
  await Promise.all(
    argvs.map(
      (argv) =>
        new Promise<void>((done) => {
          const c = spawn(argv[0]!, argv.slice(1), { stdio: "ignore", cwd: repo });
          c.on("close", () => done());
          c.on("error", () => done());
        }),
    ),
  );
  return performance.now() - t0;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export interface DoctorBench {
  builders: number;
  runs: number;
  cpus: number;
  doctorAllMs: number;
  doctorOneMs: number;
  /** doctorAll / doctorOne; target ≤ 1.5. */
  ratio: number;
  /** Machine CPU time (client and lab builders) of the N-builder and one-builder doctor runs. */
  doctorAllCpuMs: number;
  doctorOneCpuMs: number;
  /** (doctorAllCpuMs − doctorOneCpuMs) / (N − 1): what one more builder costs, both sides. */
  cpuPerBuilderMs: number;
  /** (doctorAllCpuMs / cpus) / doctorOneMs: no run of this work can have a lower ratio on this box. */
  floorRatio: number;
  pingOneMs: number;
  pingSequentialMs: number;
  pingParallelMs: number;
  /** pingParallel / pingOne: N of Nix's own connections at once, against one. */
  pingParallelRatio: number;
  /** Per-builder time inside the doctor (median over builders of the last all-builders run). */
  perBuilderMedianMs: number;
  /**
   * `doctor --builder <b1> --timeout 5` with the lab's `blackhole` fault on b1 (packets dropped): the
   * acceptance bound is a `timeout` verdict within the timeout + 2 s.
   */
  blackhole: { timeoutMs: number; builderMs: number | null; commandMs: number; cause: string | null };
  /**
   * The same two runs with every builder behind the lab's `slow` fault (each round trip that many ms
   * longer, like builders far away): per-builder time is then mostly waiting, as with real remote
   * builders, and no longer CPU on this box.
   */
  withLatency: { rttMs: number; doctorAllMs: number; doctorOneMs: number; ratio: number }[];
  exitCodes: { all: number | null; one: number | null };
  samples: { all: number[]; one: number[]; pingSequential: number[]; pingParallel: number[] };
}

export async function benchDoctor(opts: { builders?: number; runs?: number } = {}): Promise<DoctorBench> {
  const n = opts.builders ?? 16;
  const runs = opts.runs ?? 3;
  const cli = `${repo}/dist/cli.js`;
  if (!existsSync(cli)) {
    const b = spawnSync("npm", ["run", "build"], { cwd: repo, encoding: "utf8" });
    if (b.status !== 0) throw new Error(`npm run build failed: ${b.stderr}`);
  }
  let s = labStatus();
  if (!s || s.builders.length < n) {
    const up = spawnSync(LAB, ["up", "--builders", String(n)], { encoding: "utf8" });
    if (up.status !== 0) throw new Error(`lab up failed: ${up.stderr}`);
    s = labStatus();
  } else {
    for (const b of s.builders) spawnSync(LAB, ["heal", b.name]);
  }
  if (!s) throw new Error("the lab is down");
  const exec = s.agent.exec;
  const wd = [...exec.slice(0, -1), `--wd=${repo}`, "--"];
  const doctor = (extra: string[]) =>
    timed([...wd, "node", cli, "doctor", "--user", "hercules-ci-agent", "--json", ...extra]);
  const builders = s.builders.slice(0, n);
  const only = builders.length < s.builders.length ? builders.flatMap((b) => ["--builder", b.address]) : [];
  const ping = (uri: string) => [
    ...exec,
    "nix",
    "--extra-experimental-features",
    "nix-command",
    "store",
    "ping",
    "--store",
    uri,
  ];
  const all: Timed[] = [];
  const one: Timed[] = [];
  const pingOne: number[] = [];
  const pingSeq: number[] = [];
  const pingPar: number[] = [];
  let lastAll = "";
  const codes: { all: number | null; one: number | null } = { all: null, one: null };
  doctor(["--builder", builders[0]!.address]); // warm-up (page cache, ssh host state)
  for (let i = 0; i < runs; i++) {
    const a = doctor(only);
    all.push(a);
    lastAll = a.stdout;
    codes.all = a.code;
    const o = doctor(["--builder", builders[0]!.address]);
    one.push(o);
    codes.one = o.code;
    pingOne.push(timed(ping(builders[0]!.storeUriPinned)).ms);
    const t0 = performance.now();
    for (const b of builders) timed(ping(b.storeUriPinned));
    pingSeq.push(performance.now() - t0);
    pingPar.push(await timedParallel(builders.map((b) => ping(b.storeUriPinned))));
  }
  // Blackhole: one run (it waits for the deadline by design).
  spawnSync(LAB, ["fault", builders[0]!.name, "blackhole"]);
  let blackhole: DoctorBench["blackhole"];
  try {
    const b = doctor(["--builder", builders[0]!.address, "--timeout", "5"]);
    let builderMs: number | null = null;
    let cause: string | null = null;
    try {
      const j = JSON.parse(b.stdout) as {
        checks: { status: string; cause: string | null }[];
        summary: { builderDurationsMs: Record<string, number> };
      };
      builderMs = Object.values(j.summary.builderDurationsMs)[0] ?? null;
      cause = j.checks.find((c) => c.status === "fail")?.cause ?? null;
    } catch {
      // no JSON: cause stays null
    }
    blackhole = { timeoutMs: 5000, builderMs, commandMs: Math.round(b.ms), cause };
  } finally {
    spawnSync(LAB, ["heal", builders[0]!.name, "blackhole"]);
  }
  // Latency: every builder `slow` (--slow-ms high enough that no builder warns).
  const withLatency: DoctorBench["withLatency"] = [];
  for (const rttMs of [50, 200]) {
    for (const b of builders)
      spawnSync(LAB, ["fault", b.name, "slow"], {
        env: { ...process.env, NIX_BUILDERS_LAB_SLOW_MS: String(rttMs) },
      });
    try {
      const la: number[] = [];
      const lo: number[] = [];
      for (let i = 0; i < runs; i++) {
        la.push(doctor([...only, "--slow-ms", "60000"]).ms);
        lo.push(doctor(["--builder", builders[0]!.address, "--slow-ms", "60000"]).ms);
      }
      withLatency.push({
        rttMs,
        doctorAllMs: Math.round(median(la)),
        doctorOneMs: Math.round(median(lo)),
        ratio: Math.round((median(la) / median(lo)) * 100) / 100,
      });
    } finally {
      for (const b of builders) spawnSync(LAB, ["heal", b.name, "slow"]);
    }
  }
  let perBuilder = 0;
  try {
    const j = JSON.parse(lastAll) as { summary: { builderDurationsMs: Record<string, number> } };
    perBuilder = median(Object.values(j.summary.builderDurationsMs));
  } catch {
    // no JSON: exit codes tell
  }
  const r = (x: number) => Math.round(x);
  const r2 = (x: number) => Math.round(x * 100) / 100;
  const ncpu = cpus().length;
  const allMs = median(all.map((x) => x.ms));
  const oneMs = median(one.map((x) => x.ms));
  const allCpu = median(all.map((x) => x.cpuMs));
  const oneCpu = median(one.map((x) => x.cpuMs));
  return {
    builders: builders.length,
    runs,
    cpus: ncpu,
    doctorAllMs: r(allMs),
    doctorOneMs: r(oneMs),
    ratio: r2(allMs / oneMs),
    doctorAllCpuMs: r(allCpu),
    doctorOneCpuMs: r(oneCpu),
    cpuPerBuilderMs: builders.length > 1 ? r((allCpu - oneCpu) / (builders.length - 1)) : 0,
    floorRatio: r2(allCpu / ncpu / oneMs),
    pingOneMs: r(median(pingOne)),
    pingSequentialMs: r(median(pingSeq)),
    pingParallelMs: r(median(pingPar)),
    pingParallelRatio: r2(median(pingPar) / median(pingOne)),
    perBuilderMedianMs: r(perBuilder),
    blackhole,
    withLatency,
    exitCodes: codes,
    samples: {
      all: all.map((x) => r(x.ms)),
      one: one.map((x) => r(x.ms)),
      pingSequential: pingSeq.map(r),
      pingParallel: pingPar.map(r),
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const arg = (name: string) => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? Number(process.argv[i + 1]) : undefined;
  };
  const res = await benchDoctor({
    ...(arg("--builders") !== undefined ? { builders: arg("--builders")! } : {}),
    ...(arg("--runs") !== undefined ? { runs: arg("--runs")! } : {}),
  });
  process.stdout.write(`${JSON.stringify(res, null, 2)}\n`);
}
