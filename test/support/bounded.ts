/**
 * Real programs for the watch edge tests (Prometheus, promtool, Chromium, systemd-analyze, nix-instantiate),
 * each in its own process group with a hard deadline: the group is killed at the deadline and, for a
 * long-running server, in the test's cleanup. Output is bounded.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createServer } from "node:net";

export interface Bounded {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

const MAX_OUTPUT = 16 * 1024 * 1024;

/** Whether `cmd` is on PATH (for a clear skip message where a tool is not installed). */
export function have(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v "$1" >/dev/null`, "sh", cmd], { timeout: 5_000 }).status === 0;
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

/** Runs a program to completion (stdin from `input`), killing its whole group at `timeoutMs`. */
export function run(
  cmd: string,
  args: readonly string[],
  opts: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<Bounded> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      detached: true,
      stdio: ["pipe", "pipe", "pipe"],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.on("data", (d: Buffer) => {
      if (stdout.length < MAX_OUTPUT) stdout += d.toString("utf8");
    });
    child.stderr.on("data", (d: Buffer) => {
      if (stderr.length < MAX_OUTPUT) stderr += d.toString("utf8");
    });
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child, "SIGKILL");
    }, opts.timeoutMs ?? 60_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      // Whatever the program left behind in its group (Chromium's helpers) goes too.
      killGroup(child, "SIGKILL");
      resolve({ code, signal, stdout, stderr, timedOut });
    });
    child.stdin.on("error", () => {});
    child.stdin.end(opts.input ?? "");
  });
}

export interface Daemon {
  readonly child: ChildProcess;
  /** Its output so far (bounded). */
  output(): string;
  /** SIGTERM to the group, SIGKILL after 5 s; resolves when it has exited. */
  stop(): Promise<void>;
}

/** Starts a long-running program in its own group; it is killed at `deadlineMs` whatever happens. */
export function startDaemon(
  cmd: string,
  args: readonly string[],
  opts: { deadlineMs: number; env?: NodeJS.ProcessEnv; cwd?: string },
): Daemon {
  const child = spawn(cmd, args, {
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: opts.env ?? process.env,
    cwd: opts.cwd,
  });
  let out = "";
  const take = (d: Buffer) => {
    if (out.length < MAX_OUTPUT) out += d.toString("utf8");
  };
  child.stdout?.on("data", take);
  child.stderr?.on("data", take);
  child.on("error", (e) => {
    out += `\nspawn error: ${e.message}`;
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const deadline = setTimeout(() => killGroup(child, "SIGKILL"), opts.deadlineMs);
  deadline.unref();
  return {
    child,
    output: () => out,
    async stop() {
      clearTimeout(deadline);
      if (child.exitCode !== null || child.signalCode !== null) return;
      killGroup(child, "SIGTERM");
      const hard = setTimeout(() => killGroup(child, "SIGKILL"), 5_000);
      await exited;
      clearTimeout(hard);
    },
  };
}

/** A TCP port on 127.0.0.1 that was free a moment ago (for programs that cannot report port 0). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Polls `probe` every `everyMs` until it returns a value other than undefined, or throws at `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  opts: { timeoutMs?: number; everyMs?: number } = {},
): Promise<T> {
  const end = Date.now() + (opts.timeoutMs ?? 30_000);
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, opts.everyMs ?? 250));
  }
  throw new Error(
    `timed out waiting for ${what}${last instanceof Error ? ` (last error: ${last.message})` : ""}`,
  );
}
