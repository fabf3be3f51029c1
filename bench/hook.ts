/**
 * `node --import tsx bench/hook.ts`: the build-hook wrapper's overhead against Nix 2.8's plain hook, in
 * one run (interleaved, median of BENCH_RUNS, default 31; `pairedMs` is the median of the differences
 * of the runs taken side by side, which a drifting load moves less). On a shared machine, run it as
 * `chrt -f 50 node --import tsx bench/hook.ts` (root): the bench and every process it starts (Nix, the
 * hook, the tees) then run before the machine's other work, so the load of others hardly moves the
 * figures. Three figures:
 *
 *   1. Hook answer latency: start the hook the way the worker does (fds 4/5 on one pipe, cwd /), send
 *      the settings and one `try` for a machine that takes it without connecting anywhere (a chroot
 *      store) and time until `# accept` and the machine line arrive. This is the wrapper's cost on the
 *      path of every remote build (one hook process per accepted build).
 *   2. Whole remote builds: `nix-store --realise` of one fresh derivation through the hook to a chroot
 *      store machine, plain vs wrapper (the ratio of wall times per build).
 *   3. The collector's cost per build, off the hook's path: one run of dist/hook-recorder.js over the
 *      spool pairs the wrapped answers left (one per answer), divided by their number.
 *
 * Needs Nix 2.8 (`/usr/libexec/nix/build-remote`, nix-store), /bin/busybox and the built recorder
 * (`npm run build`). Prints a JSON document.
 */
import { spawn } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUILD_REMOTE, encodeHookRequest } from "../test/support/build-remote.js";
import { runScenario, WRAPPER } from "../test/support/hook-scenario.js";

const runs = Number(process.env.BENCH_RUNS ?? "31");
const dir = mkdtempSync(join(tmpdir(), "nb-hookbench-"));
const state = join(dir, "state");
mkdirSync(state, { mode: 0o755 });
const spool = join(dir, "spool");
mkdirSync(join(dir, "conf"));
writeFileSync(join(dir, "conf", "nix.conf"), "build-users-group =\n");

/**
 * ms from spawning the hook until it printed the machine after `# accept`. The wrapper is given the real
 * hook as its arguments (as 2.30's `build-hook = <wrapper> <nix> __build-remote`): under a 2.8 daemon it
 * finds it with builtin tests instead, but here its parent is Node, for which it would run readlink.
 */
function answer(hook: string, argv0: string, extraEnv: Record<string, string> = {}): Promise<number> {
  const fifo = join(dir, `fifo-${Math.random().toString(36).slice(2)}`);
  const mk = spawn("mkfifo", [fifo]);
  return new Promise((resolveP, reject) => {
    mk.on("close", () => {
      const fd = openSync(fifo, "r+");
      const t0 = performance.now();
      const child = spawn(hook, hook === WRAPPER ? [BUILD_REMOTE, "0"] : ["0"], {
        cwd: "/",
        argv0,
        env: {
          PATH: process.env["PATH"] ?? "/usr/bin:/bin",
          NIX_CONF_DIR: join(dir, "conf"),
          NIX_USER_CONF_FILES: "",
          NIX_BUILDERS_STATE_DIR: state,
          NIX_BUILDERS_HOOK_SPOOL: spool,
          // The collector is measured on its own below.
          NIX_BUILDERS_HOOK_COLLECT_EVERY: "0",
          ...extraEnv,
        },
        stdio: ["pipe", "ignore", "pipe", fd, fd],
      });
      closeSync(fd);
      let err = "";
      let t1 = 0;
      child.stderr!.on("data", (c: Buffer) => {
        err += c.toString();
        if (t1 === 0 && /# accept\n[^\n]+\n/.test(err)) {
          t1 = performance.now();
          child.stdin!.end(); // the worker would now send the inputs; ending makes the hook exit
        }
      });
      child.stdin!.on("error", () => undefined);
      child.stdin!.write(
        encodeHookRequest({
          builders: `${join(dir, "machine")} x86_64-linux - 1`,
          system: "x86_64-linux",
          store: join(dir, "client"),
        }),
      );
      child.on("error", reject);
      child.on("close", () => {
        rmSync(fifo, { force: true });
        if (t1 === 0) reject(new Error(`no accept: ${err}`));
        else resolveP(t1 - t0);
      });
    });
  });
}

/** The median of b[i] - a[i]. */
function paired(a: number[], b: number[]): number {
  return median(a.map((x, i) => b[i]! - x));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const plainAns: number[] = [];
const wrapAns: number[] = [];
const bareAns: number[] = [];
await answer(BUILD_REMOTE, "build-remote"); // warm the page cache
await answer(WRAPPER, "build-hook");
for (let i = 0; i < runs; i++) {
  plainAns.push(await answer(BUILD_REMOTE, "build-remote"));
  wrapAns.push(await answer(WRAPPER, "build-hook"));
  bareAns.push(await answer(WRAPPER, "build-hook", { NIX_BUILDERS_HOOK_RECORD: "0" }));
}

// The collector over the pairs the answers left (each a settings block, a try and an accept).
const { readSpool } = await import("../src/app/hook-spool.js");
const pairs = (readSpool(spool) ?? []).length;
const c0 = performance.now();
const col = spawn(process.execPath, [join(import.meta.dirname, "..", "dist", "hook-recorder.js")], {
  env: {
    PATH: process.env["PATH"] ?? "/usr/bin:/bin",
    NIX_BUILDERS_STATE_DIR: state,
    NIX_BUILDERS_HOOK_SPOOL: spool,
  },
  stdio: "ignore",
});
await new Promise((r) => col.on("close", r));
const collectMs = performance.now() - c0;
const left = (readSpool(spool) ?? []).length;

const plainBuild: number[] = [];
const wrapBuild: number[] = [];
const attrs = ["x2"];
for (let i = 0; i < Math.max(5, Math.floor(runs / 3)); i++) {
  const a = await runScenario({ attrs });
  a.cleanup();
  plainBuild.push(a.ms);
  const b = await runScenario({
    attrs,
    wrapper: true,
    env: { NIX_BUILDERS_STATE_DIR: state, NIX_BUILDERS_HOOK_SPOOL: spool },
  });
  b.cleanup();
  wrapBuild.push(b.ms);
}
rmSync(dir, { recursive: true, force: true });

const pa = median(plainAns);
const wa = median(wrapAns);
const pb = median(plainBuild);
const wb = median(wrapBuild);
const result = {
  runs,
  load: (await import("node:os")).loadavg().map((x) => Number(x.toFixed(2))),
  hookAnswer: {
    plainMs: round(pa),
    wrapperMs: round(wa),
    overheadMs: round(wa - pa),
    pairedMs: round(paired(plainAns, wrapAns)),
    ratio: round(wa / pa, 3),
  },
  /** The wrapper with recording off (bash and exec only): the spool's share (two tees) is the rest. */
  hookAnswerNoRecorder: {
    wrapperMs: round(median(bareAns)),
    overheadMs: round(median(bareAns) - pa),
    pairedMs: round(paired(plainAns, bareAns)),
  },
  /** One collector run (Node start-up included) over the spool pairs, per pair; off the hook's path. */
  collector: { pairs, left, ms: round(collectMs), perBuildMs: round(collectMs / Math.max(1, pairs), 2) },
  remoteBuild: {
    plainMs: round(pb),
    wrapperMs: round(wb),
    overheadMs: round(wb - pb),
    pairedMs: round(paired(plainBuild, wrapBuild)),
    ratio: round(wb / pb, 3),
  },
  samples: {
    plainAns: plainAns.map((x) => round(x)),
    bareAns: bareAns.map((x) => round(x)),
    wrapAns: wrapAns.map((x) => round(x)),
    plainBuild: plainBuild.map((x) => round(x)),
    wrapBuild: wrapBuild.map((x) => round(x)),
  },
};
/**
 * BENCH_LAB=1 (the lab up, under its lock: `test/lab/lab up --builders 1`): whole remote builds on the
 * lab, root's `nix-build` through the agent machine's daemon to a builder over ssh, with the daemon's own
 * hook and with `--option build-hook <wrapper>` (root is trusted), interleaved, BENCH_LAB_RUNS each
 * (default 9). Each build is a fresh one-line derivation.
 */
if (process.env["BENCH_LAB"] === "1") {
  const { lab, labExec } = await import("../test/e2e/support/lab.js");
  const st = JSON.parse(lab(["status", "--json"]).stdout) as {
    busybox: string;
    builders: { systems: string[] }[];
  };
  const system = st.builders[0]!.systems.find((x) => x !== "x86_64-linux") ?? "aarch64-linux";
  const bb = `\${builtins.storePath ${JSON.stringify(st.busybox)}}/busybox`;
  const one = (wrapper: boolean, i: number): number => {
    const nonce = `hb-${wrapper ? "w" : "p"}-${i}-${Date.now().toString(36)}`;
    const expr = `derivation { name = "${nonce}"; system = "${system}"; builder = "${bb}"; args = [ "sh" "-c" "echo ${nonce} > $out" ]; }`;
    const t0 = performance.now();
    const r = labExec(
      ["nix-build", "--no-out-link", "-E", expr, ...(wrapper ? ["--option", "build-hook", WRAPPER] : [])],
      { timeoutMs: 120_000 },
    );
    const ms = performance.now() - t0;
    if (r.code !== 0 || !/building '[^']+' on '/.test(r.stderr)) throw new Error(`lab build: ${r.stderr}`);
    return ms;
  };
  const plainLab: number[] = [];
  const wrapLab: number[] = [];
  const labRuns = Number(process.env["BENCH_LAB_RUNS"] ?? "9");
  one(false, -1);
  one(true, -1);
  for (let i = 0; i < labRuns; i++) {
    plainLab.push(one(false, i));
    wrapLab.push(one(true, i));
  }
  const pl = median(plainLab);
  const wl = median(wrapLab);
  Object.assign(result, {
    labRemoteBuild: {
      runs: labRuns,
      plainMs: round(pl),
      wrapperMs: round(wl),
      overheadMs: round(wl - pl),
      pairedMs: round(paired(plainLab, wrapLab)),
      ratio: round(wl / pl, 3),
      plain: plainLab.map((x) => round(x)),
      wrapper: wrapLab.map((x) => round(x)),
    },
  });
  labExec(["rm", "-rf", "/run/nix-builders/hook-spool"]);
}
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);

function round(x: number, d = 1): number {
  const f = 10 ** d;
  return Math.round(x * f) / f;
}
