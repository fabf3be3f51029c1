/**
 * Real remote builds through Nix 2.8's real build hook, with chroot stores as the machines: the client is
 * `nix-build --store <dir>/client` (no daemon) with `max-jobs = 0`, so every derivation goes to the hook.
 * One machine (`ssh://bad.invalid`) cannot be reached: the hook prints `cannot build on` and picks the
 * next one, or declines when there is none. Each run uses fresh stores under its own directory; the
 * directory is replaced by `<R>` in the log lines, so runs compare line for line.
 */
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const WRAPPER = resolve(import.meta.dirname, "..", "..", "libexec", "build-hook");
export const RECORDER = resolve(import.meta.dirname, "..", "..", "dist", "hook-recorder.js");

export function haveNixBuild(): boolean {
  return spawnSync("nix-build", ["--version"]).status === 0 && existsSync("/bin/busybox");
}

/** attribute → [system, shell command]. */
export const DERIVATIONS: Record<string, [string, string]> = {
  x1: ["x86_64-linux", "echo x1; echo x1 > $out"],
  x2: ["x86_64-linux", "echo x2 > $out"],
  x3: ["x86_64-linux", "echo x3 > $out"],
  i1: ["i686-linux", "echo i1; echo i1 > $out"],
  i2: ["i686-linux", "echo i2 > $out"],
  f1: ["x86_64-linux", "echo f1 fails; exit 3"],
  // Only the unreachable machine has this system: the hook declines, and Nix cannot build it here.
  a1: ["armv7l-linux", "echo a1 > $out"],
};

export interface ScenarioRun {
  dir: string;
  exitCode: number | null;
  /** The client's stderr lines with the run directory replaced by `<R>`. */
  lines: string[];
  /** attribute → whether its output is valid in the client store afterwards. */
  built: Record<string, boolean>;
  /** attribute → .drv path. */
  drvs: Record<string, string>;
  ms: number;
  cleanup(): void;
}

export interface RunOptions {
  /** Use the wrapper as build-hook (default: Nix's own hook). */
  wrapper?: boolean;
  /** Environment added for the build (e.g. NIX_BUILDERS_STATE_DIR, NIX_BUILDERS_HOOK_RECORDER). */
  env?: Record<string, string>;
  attrs?: string[];
  /** Called once the build has started (e.g. to break the recorder while it runs). */
  during?: (pid: number) => void;
  timeoutMs?: number;
}

export async function runScenario(opts: RunOptions = {}): Promise<ScenarioRun> {
  const dir = mkdtempSync(join(tmpdir(), "nb-hooksc-"));
  const conf = join(dir, "conf");
  mkdirSync(conf);
  for (const d of ["client", "b1", "b2", "bb"]) mkdirSync(join(dir, d));
  writeFileSync(
    join(conf, "nix.conf"),
    [
      "sandbox = false",
      "fsync-metadata = false",
      "substituters =",
      "build-users-group =",
      "max-jobs = 0",
      "system = x86_64-linux",
      "extra-platforms = i686-linux",
      "",
    ].join("\n"),
  );
  copyFileSync("/bin/busybox", join(dir, "bb", "busybox"));
  const env: NodeJS.ProcessEnv = {
    PATH: process.env["PATH"] ?? "/usr/bin:/bin",
    HOME: dir,
    NIX_CONF_DIR: conf,
    NIX_USER_CONF_FILES: "",
  };
  const client = join(dir, "client");
  const bb = execText("nix-store", ["--store", client, "--add", join(dir, "bb")], env);
  const attrs = opts.attrs ?? Object.keys(DERIVATIONS);
  const expr = `let bb = builtins.storePath "${bb}"; in {\n${Object.entries(DERIVATIONS)
    .map(
      ([a, [system, cmd]]) =>
        `  ${a} = derivation { name = "${a}"; system = "${system}"; builder = "\${bb}/busybox"; args = [ "sh" "-c" ${JSON.stringify(cmd)} ]; };`,
    )
    .join("\n")}\n}\n`;
  writeFileSync(join(dir, "e.nix"), expr);
  const drvList = execText(
    "nix-instantiate",
    ["--store", client, join(dir, "e.nix"), ...attrs.flatMap((a) => ["-A", a])],
    env,
  ).split("\n");
  const drvs = Object.fromEntries(attrs.map((a, i) => [a, drvList[i]!]));
  const builders = [
    "ssh://bad.invalid x86_64-linux,armv7l-linux - 1 1",
    `${join(dir, "b1")} x86_64-linux - 1 1`,
    `${join(dir, "b2")} i686-linux - 1 1`,
  ].join(" ; ");
  const args = ["--store", client, "--realise", "--keep-going", "--builders", builders, ...drvList];
  if (opts.wrapper) args.push("--option", "build-hook", WRAPPER);
  const t0 = performance.now();
  const child = spawn("nix-store", args, {
    env: { ...env, ...(opts.env ?? {}) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (opts.during && child.pid !== undefined) opts.during(child.pid);
  const err: Buffer[] = [];
  child.stderr!.on("data", (c: Buffer) => err.push(c));
  child.stdout!.resume();
  const exitCode = await new Promise<number | null>((res) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 120_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      res(code);
    });
  });
  const ms = performance.now() - t0;
  const lines = Buffer.concat(err)
    .toString("utf8")
    .split(dir)
    .join("<R>")
    .split("\n")
    .filter((l) => l !== "");
  const built: Record<string, boolean> = {};
  for (const a of attrs) {
    const out = spawnSync("nix-store", ["--store", client, "--query", "--outputs", drvs[a]!], {
      env,
      encoding: "utf8",
    });
    const path = out.stdout.trim();
    built[a] = spawnSync("nix-store", ["--store", client, "--check-validity", path], { env }).status === 0;
  }
  return {
    dir,
    exitCode,
    lines,
    built,
    drvs,
    ms,
    cleanup: () => rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 }),
  };
}

function execText(cmd: string, args: string[], env: NodeJS.ProcessEnv): string {
  const r = spawnSync(cmd, args, { env, encoding: "utf8", timeout: 60_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout.trim();
}

/**
 * The client's log lines, distinct and sorted: parallel builds interleave differently run to run.
 * - How often a line repeats is timing: the worker asks the hook again about a derivation no machine
 *   takes each time another build ends, and each decline prints the hook's "Failed to find a machine"
 *   text again. At load 19 a wrapper run and the plain run differed only in those counts; quieter runs
 *   give 3 each, with and without the wrapper.
 * - "waiting for a machine to build …" is timing too: the hook postponed because every slot of the
 *   machine was taken at that moment (seen once in a plain run of the unit suite, for either side).
 */
export function normalised(lines: string[]): string[] {
  return [...new Set(lines.filter((l) => !l.startsWith("waiting for a machine to build ")))].sort();
}

/** `building '<drv>' on '<machine>'` lines of the client log: drv → machine (with `<R>`). */
export function buildingOn(lines: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const l of lines) {
    const x = /^building '([^']+)' on '([^']+)'/.exec(l);
    if (x) m.set(x[1]!, x[2]!);
  }
  return m;
}
