/**
 * lint's cost against `show --json` on the same input (one run, interleaved, medians; bench/RESULTS.md):
 *
 *   - 10,000 machines in one machines file (`builders = @file`), realistic lines (ssh URI, two systems, a key
 *     path, features; every 7th machine an extra feature, every 13th a mandatory one). Target: lint ≤ 1.5×.
 *   - 10 MB lines: one machine line with a 10 MB URI, a 10 MB `system-features` value of short words, a 10 MB
 *     `builders` value of `;`-separated machines, a 10 MB `max-jobs`, a 10 MB `extra-platforms` word. Time and
 *     peak RSS of each, and the size of lint's output (the value is never echoed: a few KB at most).
 *
 * Each case is a private NIX_CONF_DIR under a mkdtemp directory, removed afterwards. Runs the built CLI
 * (`npm run build` first). `node --import tsx bench/lint.ts` runs it alone.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const repo = resolve(import.meta.dirname, "..");
const cli = join(repo, "dist", "cli.js");
const TIME = existsSync("/usr/bin/time") ? "/usr/bin/time" : null;
const MB10 = 10 * 1024 * 1024;

interface Run {
  wallMs: number;
  maxRssKb: number | null;
  stdoutBytes: number;
  status: number | null;
}

function run(args: string[], confDir: string): Run {
  const argv = TIME ? [TIME, "-f", "@@TIME %M", "node", cli, ...args] : ["node", cli, ...args];
  const env = { ...process.env, NIX_CONF_DIR: confDir, NIX_USER_CONF_FILES: "", NIX_CONFIG: "" };
  const t0 = performance.now();
  const r = spawnSync(argv[0]!, argv.slice(1), { env, maxBuffer: 1 << 30, timeout: 300_000 });
  const wallMs = performance.now() - t0;
  const m = /@@TIME (\d+)/.exec(r.stderr?.toString() ?? "");
  return { wallMs, maxRssKb: m ? Number(m[1]) : null, stdoutBytes: r.stdout?.length ?? 0, status: r.status };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export function machinesText(n: number): string {
  const rows: string[] = [];
  for (let i = 0; i < n; i++) {
    const feats = `kvm,big-parallel${i % 7 === 0 ? `,feat${i}` : ""}`;
    rows.push(
      `ssh://builder${i}.example.org x86_64-linux,aarch64-linux /root/.ssh/id_builder 4 1 ${feats} ${i % 13 === 0 ? `mand${i}` : "-"} -`,
    );
  }
  return `${rows.join("\n")}\n`;
}

function confDir(base: string, name: string, conf: string, files: Record<string, string> = {}): string {
  const d = join(base, name);
  mkdirSync(d);
  writeFileSync(join(d, "nix.conf"), conf);
  for (const [f, t] of Object.entries(files)) writeFileSync(join(d, f), t);
  return d;
}

export interface LintBench {
  machines10k: {
    lintMs: number;
    showMs: number;
    ratio: number;
    lintPeakRssMB: number | null;
    showPeakRssMB: number | null;
  };
  tenMegabyteLines: {
    name: string;
    lintMs: number;
    showMs: number;
    lintPeakRssMB: number | null;
    lintOutputBytes: number;
    status: number | null;
  }[];
}

export function benchLint(runs = 3): LintBench {
  const base = mkdtempSync(join(tmpdir(), "nb-bench-lint-"));
  try {
    const mdir = join(base, "m10k");
    mkdirSync(mdir);
    writeFileSync(join(mdir, "machines"), machinesText(10_000));
    writeFileSync(join(mdir, "nix.conf"), `builders = @${join(mdir, "machines")}\n`);
    const lint: Run[] = [];
    const show: Run[] = [];
    run(["show", "--json"], mdir);
    run(["lint", "--json"], mdir);
    for (let i = 0; i < runs; i++) {
      show.push(run(["show", "--json"], mdir));
      lint.push(run(["lint", "--json"], mdir));
    }
    const mb = (rs: Run[]) =>
      rs[0]!.maxRssKb === null ? null : +(Math.max(...rs.map((r) => r.maxRssKb!)) / 1024).toFixed(1);
    const lw = median(lint.map((r) => r.wallMs));
    const sw = median(show.map((r) => r.wallMs));
    const cases: [string, string][] = [
      ["uri", `builders = ssh://${"a".repeat(MB10)} x86_64-linux\n`],
      ["system-features", `system-features = ${"f ".repeat(MB10 / 2)}\n`],
      ["builders-;", `builders = ${"ssh://h x86_64-linux - 1 1 kvm;".repeat(MB10 / 32)}\n`],
      ["max-jobs", `max-jobs = ${"9".repeat(MB10)}\n`],
      ["extra-platforms", `extra-platforms = ${"q".repeat(MB10)}\n`],
    ];
    const big = cases.map(([name, conf]) => {
      const d = confDir(base, name, conf);
      const s = run(["show", "--json"], d);
      const l = run(["lint", "--json"], d);
      return {
        name,
        lintMs: Math.round(l.wallMs),
        showMs: Math.round(s.wallMs),
        lintPeakRssMB: l.maxRssKb === null ? null : +(l.maxRssKb / 1024).toFixed(1),
        lintOutputBytes: l.stdoutBytes,
        status: l.status,
      };
    });
    return {
      machines10k: {
        lintMs: Math.round(lw),
        showMs: Math.round(sw),
        ratio: +(lw / sw).toFixed(2),
        lintPeakRssMB: mb(lint),
        showPeakRssMB: mb(show),
      },
      tenMegabyteLines: big,
    };
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = benchLint(Number(process.env.BENCH_RUNS ?? "3"));
  process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
}
