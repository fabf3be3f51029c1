/**
 * `nix-builders watch` on the lab (4 builders), with short intervals given by flags. One watch process
 * runs on the agent machine for the whole file; the tests run in order:
 *   - healthy: the output is the source byte for byte;
 *   - b2 blackholed: held (maxJobs 0) after 2 failed probes;
 *   - 10 derivations (4 in CI; NIX_BUILDERS_WATCH_FULL=1 for 10) that b2 (preferred: highest speed factor) and b3 serve: with watch they never touch b2;
 *     without watch each one first waits for b2's connect timeout (figures printed);
 *   - heal: b2 back after probation;
 *   - every builder down: the guard keeps the file as the source and the local fault is reported;
 *   - SIGTERM restores the source.
 * Run under the lab lock (docs/lab.md).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { controlRequest } from "../../src/app/watch/control.js";
import type { WatchSnapshot } from "../../src/app/watch/model.js";
import { CLI_NODE_ARGS } from "../support/cli.js";
import {
  ensureLab,
  type LabStatus,
  lab,
  labExec,
  labSkipReason,
  nonceDrvExpr,
  REPO,
  remoteBuildLines,
} from "./support/lab.js";

const skip = labSkipReason();
const INTERVAL = 2;
const TIMEOUT = 3;
/** The acceptance run (docs/watch.md's figures): NIX_BUILDERS_WATCH_FULL=1. CI runs shorter waits. */
const FULL = process.env["NIX_BUILDERS_WATCH_FULL"] === "1";
/**
 * NIX_SSHOPTS ConnectTimeout for the run without watch (Nix itself sets none: the kernel's ~2 min): 4 s in
 * CI, 10 s in the acceptance run. Each build waits for it once either way.
 */
const BASELINE_CONNECT_TIMEOUT = Number(process.env["NIX_BUILDERS_WATCH_BASELINE_CT"] ?? (FULL ? 10 : 4));
/** Derivations built with and without watch: the acceptance measures 10; CI builds 4, each of which still waits. */
const DRVS = FULL ? 10 : 4;
/** The longest re-probe delay: how long b2 may wait after the heal before its next probe. */
const BACKOFF_MAX = FULL ? 20 : 8;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("watch on the lab", { skip }, () => {
  let s: LabStatus;
  let dir = "";
  let src = "";
  let out = "";
  let stateDir = "";
  let watch: ChildProcess | null = null;
  let log = "";
  let SOURCE = "";
  const figures: string[] = [];

  const snapshot = async (): Promise<WatchSnapshot> => {
    const a = await controlRequest(stateDir, { op: "status" }, 10_000);
    assert.ok(a.ok);
    return a.result as WatchSnapshot;
  };
  const b = (snap: WatchSnapshot, name: string) => snap.builders.find((x) => x.builder.includes(`@${name}`))!;
  async function until<T>(what: string, fn: () => Promise<T | null>, ms: number): Promise<T> {
    const end = Date.now() + ms;
    for (;;) {
      const v = await fn().catch(() => null);
      if (v !== null && v !== undefined && v !== false) return v as T;
      if (Date.now() > end)
        throw new Error(`timed out waiting for ${what}\n--- watch log:\n${log.slice(-4000)}`);
      await sleep(250);
    }
  }

  before(async () => {
    s = ensureLab({ builders: 4 });
    // /tmp is shared by the host and the agent machine.
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "nb-watch-lab-"));
    fs.chmodSync(dir, 0o755);
    src = path.join(dir, "source");
    out = path.join(dir, "out", "machines");
    stateDir = path.join(dir, "state");
    // b2 is the one Nix prefers (speed 4), b3 next (speed 2); all four serve aarch64-linux.
    const speed: Record<string, string> = { b1: "1", b2: "4", b3: "2", b4: "1" };
    SOURCE = `${s.builders
      .slice(0, 4)
      .map((x) => {
        const cols = x.machinesLine.split(/\s+/);
        cols[4] = speed[x.name]!;
        return cols.join(" ");
      })
      .join("\n")}\n`;
    fs.writeFileSync(src, SOURCE, { mode: 0o644 });
    const argv = [
      ...s.agent.exec.slice(0, -1),
      `--wd=${REPO}`,
      s.agent.exec[s.agent.exec.length - 1]!,
      process.execPath,
      ...CLI_NODE_ARGS,
      "watch",
      "--source",
      src,
      "--output",
      out,
      "--state-dir",
      stateDir,
      "--interval",
      String(INTERVAL),
      "--timeout",
      String(TIMEOUT),
      "--backoff-base",
      "6",
      "--backoff-jitter",
      "0",
      // the blackhole lasts through the run without watch: keep the re-probe delay short
      "--backoff-max",
      String(BACKOFF_MAX),
      "--count-window",
      "0",
      "--min-write-interval",
      "0",
    ];
    watch = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
    watch.stderr!.on("data", (d: Buffer) => {
      log += d.toString();
    });
    await until("watch ready", async () => (await snapshot()).lastRoundAt !== null, 60_000);
  });

  after(() => {
    if (watch && watch.exitCode === null) watch.kill("SIGKILL");
    try {
      for (const x of s.builders.slice(0, 4)) lab(["heal", x.name], { allowFail: true });
    } catch {
      // the lab may be down already
    }
    if (figures.length) process.stderr.write(`watch lab figures:\n  ${figures.join("\n  ")}\n`);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test("healthy: the output is the source byte for byte", async () => {
    const snap = await until(
      "every builder up",
      async () => {
        const x = await snapshot();
        return x.builders.every((y) => y.state === "up") ? x : null;
      },
      60_000,
    );
    assert.equal(fs.readFileSync(out, "utf8"), SOURCE);
    assert.equal(snap.localFault, null, JSON.stringify(snap.localFault));
  });

  test("b2 blackholed: held (maxJobs 0) after 2 failed probes", async () => {
    lab(["fault", "b2", "blackhole"]);
    const t0 = Date.now();
    const snap = await until(
      "b2 held",
      async () => {
        const x = await snapshot();
        return b(x, s.builders[1]!.address).disposition === "held" ? x : null;
      },
      60_000,
    );
    const secs = (Date.now() - t0) / 1000;
    const b2 = b(snap, s.builders[1]!.address);
    figures.push(
      `b2 blackholed → held after ${secs.toFixed(1)} s (interval ${INTERVAL} s, timeout ${TIMEOUT} s)`,
    );
    assert.equal(b2.state, "quarantined");
    assert.equal(b2.lastFailure?.cause, "timeout");
    // two failed probes, each at most one interval (plus jitter and the probe's own timeout) apart
    assert.ok(secs <= 2 * (INTERVAL + TIMEOUT + 1) + INTERVAL, `held after ${secs} s`);
    const line = fs.readFileSync(out, "utf8").split("\n")[1]!;
    const cols = line.split(" ");
    assert.equal(cols[3], "0");
    assert.equal(line, SOURCE.split("\n")[1]!.replace(/^(\S+ \S+ \S+ )\S+/, "$10"));
  });

  async function build10(
    builders: string,
    env: string[],
  ): Promise<{ secs: number; machines: string[]; log: string }> {
    const exprs = Array.from({ length: DRVS }, () => `(${nonceDrvExpr(s).expr})`);
    const inst = labExec(["nix-instantiate", "-E", `[ ${exprs.join(" ")} ]`], { timeoutMs: 60_000 });
    assert.equal(inst.code, 0, inst.stderr);
    const drvs = inst.stdout.trim().split("\n");
    assert.equal(drvs.length, DRVS);
    const t0 = Date.now();
    const r = labExec(
      ["env", ...env, "nix-store", "--realise", ...drvs, "--builders", builders, "-j", String(DRVS)],
      {
        timeoutMs: 900_000,
      },
    );
    const secs = (Date.now() - t0) / 1000;
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    return { secs, machines: remoteBuildLines(r.stderr).map((x) => x.uri), log: r.stderr };
  }

  test(`${DRVS} derivations b2 and b3 serve: with watch none waits on b2; without, each one does`, async () => {
    const b2 = s.builders[1]!;
    const b3 = s.builders[2]!;
    const withWatch = await build10(`@${out}`, []);
    figures.push(
      `${DRVS} derivations with watch (b2 held): ${withWatch.secs.toFixed(1)} s, on ${withWatch.machines.join(" ")}`,
    );
    assert.equal(withWatch.machines.length, DRVS);
    assert.ok(!withWatch.machines.some((m) => m.includes(`@${b2.address}`)), "nothing went to b2");
    assert.ok(!withWatch.log.includes(`cannot build on '${b2.storeUri}`), "Nix never tried b2");
    assert.ok(
      withWatch.machines[0]!.includes(`@${b3.address}`),
      `the first went to b3: ${withWatch.machines[0]}`,
    );

    const without = await build10(`@${src}`, [`NIX_SSHOPTS=-o ConnectTimeout=${BASELINE_CONNECT_TIMEOUT}`]);
    const tries = without.log.split(`cannot build on '${b2.storeUri}`).length - 1;
    figures.push(
      `${DRVS} derivations without watch (ssh ConnectTimeout=${BASELINE_CONNECT_TIMEOUT} s via NIX_SSHOPTS): ${without.secs.toFixed(1)} s, ${tries} connect attempts to b2 timed out`,
    );
    assert.ok(tries >= 1, "without watch, Nix tried the blackholed b2");
    assert.ok(without.secs > withWatch.secs + BASELINE_CONNECT_TIMEOUT * (tries - 1));
  });

  test("heal: b2 is back after probation", async () => {
    lab(["heal", "b2"]);
    const t0 = Date.now();
    const snap = await until(
      "b2 up",
      async () => {
        const x = await snapshot();
        // the state changes before the round's write: wait for both
        return b(x, s.builders[1]!.address).state === "up" && fs.readFileSync(out, "utf8") === SOURCE
          ? x
          : null;
      },
      120_000,
    );
    figures.push(
      `b2 healed → listed again after ${((Date.now() - t0) / 1000).toFixed(1)} s (backoff 6 s ×3 up to ${BACKOFF_MAX} s, 2 passes)`,
    );
    const path_ = b(snap, s.builders[1]!.address).transitions.map((t) => t.to);
    assert.deepEqual(path_.slice(-2), ["probation", "up"]);
    assert.equal(fs.readFileSync(out, "utf8"), SOURCE);
  });

  test("every builder down: the guard keeps the file and the local fault is reported", async () => {
    for (const x of s.builders.slice(0, 4)) lab(["fault", x.name, "down"]);
    const snap = await until(
      "all-failed guard",
      async () => {
        const x = await snapshot();
        return x.guards.includes("all-failed") && fs.readFileSync(out, "utf8") === SOURCE ? x : null;
      },
      90_000,
    );
    assert.equal(snap.localFault?.cause, "all-builders-failed");
    assert.ok(snap.builders.every((y) => y.disposition === "listed"));
    // and it stays so for a few more rounds
    await sleep(3 * INTERVAL * 1000);
    assert.equal(fs.readFileSync(out, "utf8"), SOURCE);
    for (const x of s.builders.slice(0, 4)) lab(["heal", x.name]);
  });

  test("SIGTERM restores the source's full list", async () => {
    const d = await controlRequest(stateDir, { op: "drain", name: s.builders[3]!.address });
    assert.ok(d.ok);
    assert.ok(!fs.readFileSync(out, "utf8").includes(`@${s.builders[3]!.address} `));
    watch!.kill("SIGTERM");
    const code = await new Promise<number | null>((r) => watch!.once("exit", (c) => r(c)));
    assert.equal(code, 0, log.slice(-2000));
    assert.equal(fs.readFileSync(out, "utf8"), SOURCE);
  });
});
