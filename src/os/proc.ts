/**
 * The one way this program runs another: every child has a deadline, leads its own process group (so a
 * kill reaches whatever it started: ssh's ProxyCommand, a shell's children), is never run through a shell,
 * and has its output either collected up to a bound or streamed to the caller.
 *
 * At the deadline the whole group gets SIGTERM, and SIGKILL `killAfterMs` later (default 2 s) if it is
 * still there; the result says `timedOut`. A child that does not exit even then (stuck in the kernel)
 * is abandoned after one more grace period, so `done` always settles. Output beyond `maxOutputBytes`
 * per stream is dropped (and counted in `truncated`); it is never held in memory.
 *
 * Running as another user is a thin layer on top (src/host/run-as.ts builds the argv and environment).
 */
import type { ChildProcess } from "node:child_process";
import { childProcess } from "./lazy.js";

export interface ProcOptions {
  /** The whole environment of the child (nothing is inherited). Default: this process's. */
  readonly env?: NodeJS.ProcessEnv;
  /** Working directory; default `/`. */
  readonly cwd?: string;
  /** setuid/setgid for the child (no supplementary groups: see src/host/run-as.ts for a real identity). */
  readonly uid?: number;
  readonly gid?: number;
  /** Kill the process group after this many milliseconds. Required: nothing runs without a deadline. */
  readonly deadlineMs: number;
  /** From SIGTERM to SIGKILL at the deadline (ms); default 2000. */
  readonly killAfterMs?: number;
  /** Written to stdin, which is then closed. Without it stdin is /dev/null unless `stdin: "pipe"`. */
  readonly input?: string | Buffer;
  /** `pipe`: the caller writes stdin itself (`Proc.child.stdin`). Default `ignore` (/dev/null). */
  readonly stdin?: "pipe" | "ignore";
  /** Most bytes kept of each of stdout and stderr; default 16 MiB. */
  readonly maxOutputBytes?: number;
  /**
   * Streaming: called with each chunk of stdout (or stderr) as it arrives. The output is then not
   * collected (the result's text is empty) unless `collect` is true.
   */
  readonly onStdout?: (chunk: Buffer) => void;
  readonly onStderr?: (chunk: Buffer) => void;
  /** Open descriptors handed to the child as its fds 3, 4, … (e.g. a file to lock with flock(1)). */
  readonly extraFds?: readonly number[];
  /** Collect the output even when streaming it. */
  readonly collect?: boolean;
  /**
   * Leave stdout to the caller (`Proc.child.stdout`, for a binary protocol): neither collected nor
   * streamed here.
   */
  readonly rawStdout?: boolean;
}

export interface ProcResult {
  /** Exit status, or null when killed by a signal (or abandoned). */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** The deadline passed (or `kill()` was called) and the group was killed. */
  readonly timedOut: boolean;
  /** Bytes dropped beyond `maxOutputBytes`, per stream. */
  readonly truncated: { readonly stdout: number; readonly stderr: number };
  /** The child could not be started (ENOENT, EACCES…): the error, and code and signal are null. */
  readonly spawnError: NodeJS.ErrnoException | null;
  /** Milliseconds from start to exit. */
  readonly elapsedMs: number;
}

export interface Proc {
  readonly child: ChildProcess;
  /** Settles once the child has exited (or been abandoned): never rejects. */
  readonly done: Promise<ProcResult>;
  /** Kill the group now (SIGTERM, then SIGKILL), as at the deadline. */
  kill(): void;
}

const DEFAULT_MAX_OUTPUT = 16 << 20;

/** Signal the child's whole process group (falls back to the child alone). */
export function killGroup(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

/** Collects a stream up to a bound. */
class Bounded {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  dropped = 0;
  constructor(private readonly limit: number) {}
  push(b: Buffer): void {
    const room = this.limit - this.size;
    if (room >= b.length) {
      this.chunks.push(b);
      this.size += b.length;
    } else {
      if (room > 0) {
        this.chunks.push(b.subarray(0, room));
        this.size += room;
      }
      this.dropped += b.length - Math.max(room, 0);
    }
  }
  text(): string {
    return Buffer.concat(this.chunks).toString("utf8");
  }
}

/** Output collected (bounded) or streamed to the caller; stdin written and closed. */
function wireStreams(child: ChildProcess, opts: ProcOptions, out: Bounded, err: Bounded): void {
  const keep = opts.collect === true;
  if (!opts.rawStdout)
    child.stdout?.on("data", (b: Buffer) => {
      if (opts.onStdout) opts.onStdout(b);
      if (!opts.onStdout || keep) out.push(b);
    });
  child.stderr?.on("data", (b: Buffer) => {
    if (opts.onStderr) opts.onStderr(b);
    if (!opts.onStderr || keep) err.push(b);
  });
  if (child.stdin) {
    child.stdin.on("error", () => {
      // the program may exit without reading its input
    });
    if (opts.input !== undefined) child.stdin.end(opts.input);
  }
}

/** Children started here that have not ended: their groups, for a command's SIGINT/SIGTERM handler. */
const live = new Set<ChildProcess>();

/** Send `signal` to the process group of every child still running (a command exiting on a signal). */
export function killLiveGroups(signal: NodeJS.Signals = "SIGTERM"): void {
  for (const c of live) killGroup(c, signal);
}

/** Start `argv` (no shell) in its own process group, with a deadline. */
export function startProc(argv: readonly string[], opts: ProcOptions): Proc {
  if (argv.length === 0) throw new Error("startProc: empty argv");
  if (!(opts.deadlineMs > 0)) throw new Error("startProc: a deadline is required");
  const started = Date.now();
  const wantStdin = opts.input !== undefined || opts.stdin === "pipe";
  const child = childProcess().spawn(argv[0]!, argv.slice(1), {
    env: opts.env ?? process.env,
    cwd: opts.cwd ?? "/",
    stdio: [wantStdin ? "pipe" : "ignore", "pipe", "pipe", ...(opts.extraFds ?? [])],
    detached: true,
    shell: false,
    ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
    ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
  });
  const limit = opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const out = new Bounded(limit);
  const err = new Bounded(limit);
  let timedOut = false;
  let killTimer: NodeJS.Timeout | undefined;
  let abandonTimer: NodeJS.Timeout | undefined;
  let settle: (r: ProcResult) => void = () => {};
  let settled = false;
  const done = new Promise<ProcResult>((res) => {
    settle = res;
  });
  const finish = (
    code: number | null,
    signal: NodeJS.Signals | null,
    spawnError: NodeJS.ErrnoException | null,
  ) => {
    if (settled) return;
    settled = true;
    live.delete(child);
    clearTimeout(deadline);
    if (killTimer) clearTimeout(killTimer);
    if (abandonTimer) clearTimeout(abandonTimer);
    settle({
      code,
      signal,
      stdout: out.text(),
      stderr: err.text(),
      timedOut,
      truncated: { stdout: out.dropped, stderr: err.dropped },
      spawnError,
      elapsedMs: Date.now() - started,
    });
  };
  const grace = opts.killAfterMs ?? 2000;
  const kill = () => {
    if (settled || timedOut) return;
    timedOut = true;
    killGroup(child, "SIGTERM");
    killTimer = setTimeout(() => {
      killGroup(child, "SIGKILL");
      // a child stuck in the kernel never exits: stop waiting for it
      abandonTimer = setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
        child.stdin?.destroy();
        finish(null, null, null);
      }, grace);
    }, grace);
  };
  const deadline = setTimeout(kill, opts.deadlineMs);
  if (child.pid !== undefined) live.add(child);
  wireStreams(child, opts, out, err);
  child.once("error", (e: NodeJS.ErrnoException) => {
    // a spawn failure (the only "error" before "close" that leaves no process)
    if (child.pid === undefined) finish(null, null, e);
  });
  child.once("close", (code, signal) => finish(code, signal, null));
  return { child, done, kill };
}

/** Run `argv` to the end (or the deadline) and collect its output. Never rejects for the child's sake. */
export function runProc(argv: readonly string[], opts: ProcOptions): Promise<ProcResult> {
  return startProc(argv, opts).done;
}

/** The first non-blank line of a program's stderr, bounded, for a one-line reason. */
export function firstLine(text: string, max = 200): string {
  const l = text.split("\n").find((x) => x.trim() !== "") ?? "";
  return l.length > max ? `${l.slice(0, max)}…` : l;
}

/** A one-line reason for a result that is not a clean exit 0, or null when it is one. */
export function failureText(r: ProcResult): string | null {
  if (r.spawnError) return r.spawnError.code ?? r.spawnError.message;
  if (r.timedOut) return `no answer within ${Math.round(r.elapsedMs / 100) / 10} s`;
  if (r.signal) return `killed by ${r.signal}`;
  if (r.code !== 0) {
    const l = firstLine(r.stderr);
    return `exit ${r.code}${l ? `: ${l}` : ""}`;
  }
  return null;
}
