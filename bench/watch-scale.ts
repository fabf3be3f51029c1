/**
 * watch at scale (issue 14's acceptance, figures in bench/RESULTS.md): 200 machine lines probed every 60 s
 * use ≤ 80 MB RSS and ≤ 5% of one CPU on average, besides ssh itself.
 *
 * The 200 lines are the lab's 16 builders behind 200 distinct host names: `w001.watch-scale.lab` …
 * `w200.watch-scale.lab`, the i-th name resolving to builder b((i−1) mod 16 + 1). The names go into the
 * agent machine's `/etc/hosts` (its `/etc` is a copy-on-write overlay, so the host's file is untouched and
 * `lab down` forgets them). Each line is that builder's `machinesLine` with the host name in its store URI:
 * the host key stays pinned in the 8th column, which Nix (and so the probe) writes into a known_hosts file
 * under the name in the URI, so every one of the 200 probes is a real ssh connection, host-key check,
 * handshake and store query, as Nix would make it. Each builder's sshd serves 12 or 13 names.
 *
 * watch runs as root on the agent machine, from the built CLI (`node dist/cli.js watch`, what the package
 * runs), with `--interval 60` and otherwise the defaults (16 probes at once, 5 s of start jitter, the remote
 * configuration every 10th probe), and `--listen 127.0.0.1:0`; the bench fetches `/metrics` every 15 s, as a
 * Prometheus would. Once a second it samples watch's own process (`nsenter` execs node, so the pid is
 * watch's): utime+stime from /proc/<pid>/stat (its own CPU, children excluded), cutime+cstime (the children
 * it has reaped: ssh and the local checks' commands), and VmRSS / VmHWM from /proc/<pid>/status.
 *
 * The CPU average is taken from the end of the first round (start-up and the first full probes excluded;
 * they are reported apart) to the end of the last of BENCH_WATCH_ROUNDS (default 5) more rounds. At the end
 * every one of the 200 lines must be `up`, or the figures would not be of real probes.
 *
 *   bash -c 'npx tsx bench/watch-scale.ts; test/lab/lab down'
 *   BENCH_ONLY=watch-scale npm run bench        (the same, from bench/run.ts)
 *
 * Env: BENCH_WATCH_BUDGET (seconds: measure fewer rounds rather than run longer; 0 = no limit),
 * BENCH_WATCH_NODE_FLAGS (node flags for watch, e.g. --cpu-prof), BENCH_WATCH_LINES (200), BENCH_WATCH_INTERVAL (60), BENCH_WATCH_ROUNDS (5), BENCH_WATCH_BUILDERS (16).
 * Brings the lab up with 16 builders when it has fewer, and leaves it up (the caller takes it down).
 * Prints one JSON object on stdout; progress on stderr.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { controlRequest } from "../src/app/watch/control.js";
import type { WatchSnapshot } from "../src/app/watch/model.js";

const repo = resolve(import.meta.dirname, "..");
const LAB = `${repo}/test/lab/lab`;
const HZ = 100; // USER_HZ on Linux

interface LabJson {
  up: boolean;
  agent: { exec: string[] };
  builders: { name: string; address: string; machinesLine: string }[];
}

function labStatus(): LabJson | null {
  const r = spawnSync(LAB, ["status", "--json"], { encoding: "utf8", timeout: 180_000 });
  if (r.status !== 0) return null;
  const j = JSON.parse(r.stdout) as LabJson;
  return j.up ? j : null;
}

interface Sample {
  t: number;
  /** Own CPU (utime + stime), ms. */
  cpuMs: number;
  /** Reaped children's CPU (cutime + cstime), ms. */
  childCpuMs: number;
  rssKb: number;
  hwmKb: number;
}

function sample(pid: number): Sample | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // fields after "(comm)": state is field 3; utime 14, stime 15, cutime 16, cstime 17
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const tick = (i: number) => Number(f[i - 3]);
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0);
    return {
      t: performance.now(),
      cpuMs: ((tick(14) + tick(15)) * 1000) / HZ,
      childCpuMs: ((tick(16) + tick(17)) * 1000) / HZ,
      rssKb: kb("VmRSS"),
      hwmKb: kb("VmHWM"),
    };
  } catch {
    return null;
  }
}

export interface WatchScaleBench {
  lines: number;
  builders: number;
  intervalSec: number;
  /** Rounds measured after the first (fewer than asked when BENCH_WATCH_BUDGET ran out). */
  rounds: number;
  /** Wall time of the measured stretch (end of round 1 → end of the last round). */
  measuredSec: number;
  /** watch's own CPU over the measured stretch, % of one CPU; target ≤ 5. */
  cpuPercent: number;
  /** Reaped children's CPU (ssh, the local checks' commands) over the same stretch, % of one CPU. */
  childCpuPercent: number;
  /** Start-up and the first round: own CPU seconds and wall seconds. */
  firstRound: { cpuSec: number; wallSec: number };
  /** Peak (VmHWM) and average (of the 1 s samples in the measured stretch) RSS, MB; target ≤ 80. */
  peakRssMb: number;
  avgRssMb: number;
  /** Seconds between the ends of consecutive rounds (the probe period each builder saw). */
  roundGapSec: number[];
  /** Probes per builder at the end (every line must have been probed each round) and states. */
  probesMin: number;
  states: Record<string, number>;
  metricsScrapes: number;
  metricsBytes: number;
  ok: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function benchWatchScale(
  o: { lines?: number; intervalSec?: number; rounds?: number; builders?: number } = {},
): Promise<WatchScaleBench> {
  const lines = o.lines ?? Number(process.env.BENCH_WATCH_LINES ?? 200);
  const intervalSec = o.intervalSec ?? Number(process.env.BENCH_WATCH_INTERVAL ?? 60);
  const rounds = o.rounds ?? Number(process.env.BENCH_WATCH_ROUNDS ?? 5);
  const nb = o.builders ?? Number(process.env.BENCH_WATCH_BUILDERS ?? 16);
  const budgetSec = Number(process.env.BENCH_WATCH_BUDGET ?? 0);
  const tBench = performance.now();
  if (!existsSync(`${repo}/dist/cli.js`)) spawnSync("npm", ["run", "build"], { cwd: repo, stdio: "inherit" });

  let lab = labStatus();
  if (!lab || lab.builders.length < nb) {
    process.stderr.write(`watch-scale: lab up --builders ${nb}\n`);
    const r = spawnSync(LAB, ["up", "--builders", String(nb)], { stdio: "inherit", timeout: 300_000 });
    if (r.status !== 0) throw new Error(`lab up failed (${r.status})`);
    lab = labStatus() ?? labStatus();
    if (!lab)
      throw new Error(`lab not up: ${spawnSync(LAB, ["status", "--json"], { encoding: "utf8" }).stderr}`);
  }
  const bs = lab.builders.slice(0, nb);
  const agentExec = lab.agent.exec;

  // 200 names in the agent machine's /etc/hosts (an overlay: the host's /etc/hosts is not touched).
  const name = (i: number) => `w${String(i + 1).padStart(3, "0")}.watch-scale.lab`;
  const hosts = Array.from({ length: lines }, (_, i) => `${bs[i % nb]!.address} ${name(i)}`).join("\n");
  const add = spawnSync(
    agentExec[0]!,
    [
      ...agentExec.slice(1),
      "sh",
      "-c",
      "grep -v 'watch-scale.lab$' /etc/hosts > /etc/hosts.ws; cat >> /etc/hosts.ws && mv /etc/hosts.ws /etc/hosts",
    ],
    { input: `${hosts}\n`, encoding: "utf8", timeout: 30_000 },
  );
  if (add.status !== 0) throw new Error(`cannot write the agent's /etc/hosts: ${add.stderr}`);

  const dir = mkdtempSync(join(tmpdir(), "nb-watch-scale-"));
  chmodSync(dir, 0o755);
  const src = join(dir, "source");
  const source = Array.from({ length: lines }, (_, i) => {
    const b = bs[i % nb]!;
    return b.machinesLine.replace(`@${b.address} `, `@${name(i)} `);
  });
  if (source.some((l, i) => !l.includes(`@${name(i)} `))) throw new Error("unexpected machinesLine shape");
  writeFileSync(src, `${source.join("\n")}\n`, { mode: 0o644 });
  const stateDir = join(dir, "state");

  const argv = [
    ...agentExec.slice(0, -1),
    `--wd=${repo}`,
    agentExec[agentExec.length - 1]!,
    process.execPath,
    ...(process.env.BENCH_WATCH_NODE_FLAGS ?? "").split(" ").filter(Boolean),
    "dist/cli.js",
    "watch",
    "--source",
    src,
    "--output",
    join(dir, "out", "machines"),
    "--state-dir",
    stateDir,
    "--interval",
    String(intervalSec),
    "--listen",
    "127.0.0.1:0",
  ];
  let log = "";
  const w: ChildProcess = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
  w.stderr!.on("data", (d: Buffer) => {
    log += d.toString();
  });
  const pid = w.pid!;
  const t0 = performance.now();
  const samples: Sample[] = [];
  const sampler = setInterval(() => {
    const s = sample(pid);
    if (s) samples.push(s);
  }, 1000);
  let scrapes = 0;
  let scrapeBytes = 0;
  let scraper: NodeJS.Timeout | null = null;
  const snap = async (): Promise<WatchSnapshot | null> => {
    try {
      const a = await controlRequest(stateDir, { op: "status" }, 10_000);
      return a.ok ? (a.result as WatchSnapshot) : null;
    } catch {
      return null;
    }
  };
  try {
    // Round 1 (start-up and the first probe of every line, with its remote configuration).
    let s: WatchSnapshot | null = null;
    // A round ends with the state file written (engine.ts): its mtime marks the rounds, with no request
    // to watch (a status request renders all 200 builders, which would add to what is measured).
    const stateFile = join(stateDir, "state.json");
    const mtime = () => {
      try {
        return statSync(stateFile).mtimeMs;
      } catch {
        return null;
      }
    };
    const waitRound = async (after: number | null, ms: number): Promise<number> => {
      const end = Date.now() + ms;
      for (;;) {
        if (w.exitCode !== null) throw new Error(`watch exited ${w.exitCode}:\n${log.slice(-3000)}`);
        const m = mtime();
        if (m !== null && m !== after) return m;
        if (Date.now() > end) throw new Error(`no round within ${ms} ms:\n${log.slice(-3000)}`);
        await sleep(500);
      }
    };
    let m = await waitRound(null, 300_000);
    const first = sample(pid)!;
    process.stderr.write(
      `watch-scale: peak RSS ${(first.hwmKb / 1024).toFixed(1)} MB; round 1 done after ${((first.t - t0) / 1000).toFixed(1)} s, ${(first.cpuMs / 1000).toFixed(2)} s CPU\n`,
    );
    const url = /listening on (http:\/\/\S+)/.exec(log)?.[1];
    if (url) {
      scraper = setInterval(() => {
        fetch(`${url}/metrics`)
          .then((r) => r.text())
          .then((t) => {
            scrapes++;
            scrapeBytes = t.length;
          })
          .catch(() => undefined);
      }, 15_000);
    }
    const roundEnds: number[] = [m];
    let measured = 0;
    for (let r = 0; r < rounds; r++) {
      // The lab lock is held at most ~10 minutes: stop early when another round would not fit.
      if (budgetSec > 0 && (performance.now() - tBench) / 1000 + 1.6 * intervalSec > budgetSec) break;
      m = await waitRound(m, (intervalSec + 120) * 1000);
      measured++;
      roundEnds.push(m);
      const x = sample(pid)!;
      process.stderr.write(
        `watch-scale: round ${r + 2} done: own CPU ${((100 * (x.cpuMs - first.cpuMs)) / (x.t - first.t)).toFixed(2)}% since round 1, children ${((100 * (x.childCpuMs - first.childCpuMs)) / (x.t - first.t)).toFixed(1)}%, RSS ${(x.rssKb / 1024).toFixed(1)} MB, peak ${(x.hwmKb / 1024).toFixed(1)} MB\n`,
      );
    }
    const last = sample(pid)!;
    s = await snap();
    if (!s) throw new Error(`no status from watch:\n${log.slice(-3000)}`);
    const span = samples.filter((x) => x.t >= first.t && x.t <= last.t);
    const wallMs = last.t - first.t;
    const states: Record<string, number> = {};
    for (const b of s.builders) states[b.state] = (states[b.state] ?? 0) + 1;
    const probesMin = Math.min(
      ...s.builders.map((b) => Object.values(b.probeCounts).reduce((a, c) => a + c, 0)),
    );
    const res: WatchScaleBench = {
      lines,
      builders: nb,
      intervalSec,
      rounds: measured,
      measuredSec: Math.round(wallMs / 100) / 10,
      cpuPercent: Math.round(((last.cpuMs - first.cpuMs) / wallMs) * 10000) / 100,
      childCpuPercent: Math.round(((last.childCpuMs - first.childCpuMs) / wallMs) * 10000) / 100,
      firstRound: {
        cpuSec: Math.round(first.cpuMs / 10) / 100,
        wallSec: Math.round((first.t - t0) / 100) / 10,
      },
      peakRssMb: Math.round(last.hwmKb / 102.4) / 10,
      avgRssMb: Math.round(span.reduce((a, x) => a + x.rssKb, 0) / span.length / 102.4) / 10,
      roundGapSec: roundEnds.slice(1).map((x, i) => Math.round((x - roundEnds[i]!) / 100) / 10),
      probesMin,
      states,
      metricsScrapes: scrapes,
      metricsBytes: scrapeBytes,
      ok: false,
    };
    res.ok =
      s.builders.length === lines &&
      (states.up ?? 0) === lines &&
      measured >= 1 &&
      probesMin >= measured + 1 &&
      res.cpuPercent <= 5 &&
      res.peakRssMb <= 80;
    return res;
  } finally {
    clearInterval(sampler);
    if (scraper) clearInterval(scraper);
    if (w.exitCode === null) {
      w.kill("SIGTERM");
      await Promise.race([new Promise((r) => w.once("exit", r)), sleep(15_000)]);
      if (w.exitCode === null) w.kill("SIGKILL");
    }
    spawnSync(
      agentExec[0]!,
      [
        ...agentExec.slice(1),
        "sh",
        "-c",
        "grep -v 'watch-scale.lab$' /etc/hosts > /etc/hosts.ws; mv /etc/hosts.ws /etc/hosts",
      ],
      { timeout: 30_000 },
    );
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  benchWatchScale()
    .then((r) => {
      process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      process.exit(r.ok ? 0 : 1);
    })
    .catch((e) => {
      process.stderr.write(`watch-scale: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(2);
    });
}
