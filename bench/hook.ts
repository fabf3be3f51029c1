/**
 * `node --import tsx bench/hook.ts`: the build-hook wrapper's overhead against Nix 2.8's plain hook, in
 * one run (interleaved, median of BENCH_RUNS, default 7). Two figures:
 *
 *   1. Hook answer latency: start the hook the way the worker does (fds 4/5 on one pipe, cwd /), send
 *      the settings and one `try` for a machine that takes it without connecting anywhere (a chroot
 *      store) and time until `# accept` and the machine line arrive. This is the wrapper's cost on the
 *      path of every remote build (one hook process per accepted build).
 *   2. Whole remote builds: `nix-store --realise` of one fresh derivation through the hook to a chroot
 *      store machine, plain vs wrapper (the ratio of wall times per build).
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

const runs = Number(process.env.BENCH_RUNS ?? "7");
const dir = mkdtempSync(join(tmpdir(), "nb-hookbench-"));
const state = join(dir, "state");
mkdirSync(state, { mode: 0o755 });
mkdirSync(join(dir, "conf"));
writeFileSync(join(dir, "conf", "nix.conf"), "build-users-group =\n");

/** ms from spawning the hook until it printed the machine after `# accept`. */
function answer(hook: string, argv0: string, extraEnv: Record<string, string> = {}): Promise<number> {
  const fifo = join(dir, `fifo-${Math.random().toString(36).slice(2)}`);
  const mk = spawn("mkfifo", [fifo]);
  return new Promise((resolveP, reject) => {
    mk.on("close", () => {
      const fd = openSync(fifo, "r+");
      const t0 = performance.now();
      const child = spawn(hook, ["0"], {
        cwd: "/",
        argv0,
        env: {
          PATH: process.env["PATH"] ?? "/usr/bin:/bin",
          NIX_CONF_DIR: join(dir, "conf"),
          NIX_USER_CONF_FILES: "",
          NIX_BUILDERS_STATE_DIR: state,
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

const plainBuild: number[] = [];
const wrapBuild: number[] = [];
const attrs = ["x2"];
for (let i = 0; i < Math.max(3, Math.floor(runs / 2)); i++) {
  const a = await runScenario({ attrs });
  a.cleanup();
  plainBuild.push(a.ms);
  const b = await runScenario({ attrs, wrapper: true, env: { NIX_BUILDERS_STATE_DIR: state } });
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
    ratio: round(wa / pa, 3),
  },
  /** The wrapper with recording off (bash and exec only): the recorder's share is the rest. */
  hookAnswerNoRecorder: { wrapperMs: round(median(bareAns)), overheadMs: round(median(bareAns) - pa) },
  remoteBuild: {
    plainMs: round(pb),
    wrapperMs: round(wb),
    overheadMs: round(wb - pb),
    ratio: round(wb / pb, 3),
  },
  samples: {
    plainAns: plainAns.map((x) => round(x)),
    wrapAns: wrapAns.map((x) => round(x)),
    plainBuild: plainBuild.map((x) => round(x)),
    wrapBuild: wrapBuild.map((x) => round(x)),
  },
};
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);

function round(x: number, d = 1): number {
  const f = 10 ** d;
  return Math.round(x * f) / f;
}
