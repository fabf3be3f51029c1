/**
 * The doctor benchmark (figures in bench/DOCTOR.md):
 *
 *   1. `doctor` over N lab builders (default 16), all at once (bounded concurrency 16);
 *   2. `doctor --builder <one>` (one builder, same local checks);
 *   3. `nix store ping --store <pinned ssh:// URI>` as root for the same N builders, one after another
 *      (what an operator does by hand; it covers ssh + handshake only, far less than the doctor).
 *
 * Everything runs on the lab's agent machine as root, `--user hercules-ci-agent`, median of BENCH_RUNS
 * (default 3) wall times, interleaved. Target: N builders take at most 1.5× the wall time of one.
 *
 *   node --import tsx bench/doctor.ts [--builders 16] [--runs 3]
 *
 * Brings the lab up with N builders when it has fewer (`test/lab/lab up --builders N`), and leaves it up.
 * Prints one JSON object on stdout. To hook into bench/run.ts: `import { benchDoctor } from "./doctor.js"`
 * and print its result (it needs root and the lab; skip it otherwise).
 */
import { spawnSync } from "node:child_process";
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

function timed(argv: string[]): { ms: number; code: number | null; stdout: string; stderr: string } {
  const t0 = performance.now();
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", maxBuffer: 1 << 28, cwd: repo });
  return { ms: performance.now() - t0, code: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export interface DoctorBench {
  builders: number;
  runs: number;
  doctorAllMs: number;
  doctorOneMs: number;
  /** doctorAll / doctorOne; target ≤ 1.5. */
  ratio: number;
  pingSequentialMs: number;
  /** Per-builder time inside the doctor (median over builders of the last all-builders run). */
  perBuilderMedianMs: number;
  exitCodes: { all: number | null; one: number | null };
  samples: { all: number[]; one: number[]; ping: number[] };
}

export function benchDoctor(opts: { builders?: number; runs?: number } = {}): DoctorBench {
  const n = opts.builders ?? 16;
  const runs = opts.runs ?? 3;
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
    timed([
      ...wd,
      "node",
      "--import",
      "tsx",
      "src/cli.ts",
      "doctor",
      "--user",
      "hercules-ci-agent",
      "--json",
      ...extra,
    ]);
  const builders = s.builders.slice(0, n);
  const only = builders.length < s.builders.length ? builders.flatMap((b) => ["--builder", b.address]) : [];
  const all: number[] = [];
  const one: number[] = [];
  const ping: number[] = [];
  let lastAll = "";
  const codes: { all: number | null; one: number | null } = { all: null, one: null };
  doctor(["--builder", builders[0]!.address]); // warm-up (tsx compile cache, ssh host state)
  for (let i = 0; i < runs; i++) {
    const a = doctor(only);
    all.push(a.ms);
    lastAll = a.stdout;
    codes.all = a.code;
    const o = doctor(["--builder", builders[0]!.address]);
    one.push(o.ms);
    codes.one = o.code;
    const t0 = performance.now();
    for (const b of builders) {
      timed([
        ...exec,
        "nix",
        "--extra-experimental-features",
        "nix-command",
        "store",
        "ping",
        "--store",
        b.storeUriPinned,
      ]);
    }
    ping.push(performance.now() - t0);
  }
  let perBuilder = 0;
  try {
    const j = JSON.parse(lastAll) as { summary: { builderDurationsMs: Record<string, number> } };
    perBuilder = median(Object.values(j.summary.builderDurationsMs));
  } catch {
    // no JSON: exit codes tell
  }
  const r = (x: number) => Math.round(x);
  return {
    builders: builders.length,
    runs,
    doctorAllMs: r(median(all)),
    doctorOneMs: r(median(one)),
    ratio: Math.round((median(all) / median(one)) * 100) / 100,
    pingSequentialMs: r(median(ping)),
    perBuilderMedianMs: r(perBuilder),
    exitCodes: codes,
    samples: { all: all.map(r), one: one.map(r), ping: ping.map(r) },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const arg = (name: string) => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? Number(process.argv[i + 1]) : undefined;
  };
  const res = benchDoctor({
    ...(arg("--builders") !== undefined ? { builders: arg("--builders")! } : {}),
    ...(arg("--runs") !== undefined ? { runs: arg("--runs")! } : {}),
  });
  process.stdout.write(`${JSON.stringify(res, null, 2)}\n`);
}
