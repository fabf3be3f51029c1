/**
 * Run a program (normally the ssh argv from ssh-argv.ts) and speak the serve or worker handshake
 * over its stdio, with an overall deadline. Collects the child's stderr (bounded) as evidence,
 * kills the child's whole process group when done or on timeout, and reports timings.
 *
 * Never uses a shell: `program` + `args` go straight to execve.
 */
import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable, Writable } from "node:stream";
import { killGroup, startProc } from "../os/proc.js";
import { type ServeHandshakeResult, serveHandshake } from "./serve.js";
import {
  type NixSshArgv,
  type NixSshArgvInput,
  type ProbeSshOptions,
  probeSshArgv,
  probeSshEnv,
} from "./ssh-argv.js";
import { chomp, WireError, WireReader } from "./wire.js";
import { type WorkerHandshakeResult, workerHandshake } from "./worker.js";

export interface ProbeOptions {
  program: string;
  args: string[];
  /** Full environment for the child (default: this process's). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  uid?: number;
  gid?: number;
  protocol: "serve" | "worker";
  /** The host as Nix names it (serve messages). */
  host: string;
  /** The store URI (worker messages, e.g. `ssh-ng://host`). */
  storeUri: string;
  /** Overall deadline for spawn + handshake (+ optional query), default 20 s. */
  timeoutMs?: number;
  /** Current Nix reads a `started` line (from ssh's LocalCommand) before the protocol. */
  expectStartedLine?: boolean;
  /** Optionally ask which of these paths are valid on the other side (one round trip). */
  queryValidPaths?: string[];
  /** Max stderr bytes kept (default 64 KiB). */
  stderrLimit?: number;
  /**
   * Called once the handshake (and the optional query) succeeded, while the session is still open:
   * e.g. to run a second command over the same ssh connection (ControlMaster). The probe closes its
   * session only after this settles; its errors are ignored (the callback reports its own).
   */
  whileOpen?: () => Promise<unknown>;
}

export type ProbeFailureKind =
  | "spawn"
  | "ssh-start"
  | "eof"
  | "garbage"
  | "bad-magic"
  | "bad-version"
  | "daemon-error"
  | "timeout"
  | "io"
  | "connect"
  | "query";

export interface ProbeTimings {
  /** From spawn() to the first byte on the child's stdout; null if none came. */
  firstByteMs: number | null;
  /** From spawn() to the end of the handshake; null if it did not complete. */
  handshakeMs: number | null;
  /** From spawn() to the end of the optional query. */
  queryMs: number | null;
  /** From spawn() until the child was reaped (or abandoned). */
  totalMs: number;
}

export interface ProbeResult {
  ok: boolean;
  protocol: "serve" | "worker";
  argv: string[];
  serve?: ServeHandshakeResult;
  worker?: WorkerHandshakeResult;
  validPaths?: string[];
  failure?: { kind: ProbeFailureKind; nixMessage: string };
  /** The child's stderr (bounded), e.g. ssh's own diagnostics. */
  stderr: string;
  stderrTruncated: boolean;
  exitCode: number | null;
  signal: string | null;
  /** True when we had to kill the process group. */
  killed: boolean;
  timings: ProbeTimings;
}

/**
 * The line the 2.8 build hook prints when connecting fails:
 * `cannot build on '<uri>': error: <msg>[: <ssh stderr>]` (stderr only for ssh://, via log-fd).
 */
export function buildHookFailureText(storeUri: string, nixMessage: string, stderr: string): string {
  const tail = storeUri.startsWith("ssh://") ? chomp(stderr) : "";
  return `cannot build on '${storeUri}': error: ${nixMessage}${tail === "" ? "" : `: ${tail}`}`;
}

/**
 * `p`, or `fallback` after `ms`. The timer is cleared when `p` wins: a pending timer would keep the
 * process alive (and the command from exiting) for the rest of its delay.
 */
function raceTimer<T, F>(p: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<F>((r) => {
    timer = setTimeout(() => r(fallback), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** A result before anything ran: not ok, no output, no timings. */
function notRun(protocol: ProbeResult["protocol"], argv: string[]): ProbeResult {
  return {
    ok: false,
    protocol,
    argv,
    stderr: "",
    stderrTruncated: false,
    exitCode: null,
    signal: null,
    killed: false,
    timings: { firstByteMs: null, handshakeMs: null, queryMs: null, totalMs: 0 },
  };
}

/** What the conversation over the session needs: the options, the wire and the clock. */
interface Conversation {
  opts: ProbeOptions;
  result: ProbeResult;
  reader: WireReader;
  io: { input: Readable; output: Writable };
  signal: AbortSignal;
  deadline: number;
  timeoutMs: number;
  since: () => number;
}

/**
 * The conversation over an open session: the `started` line (when the argv prints one), the store
 * protocol's handshake, and optionally one QueryValidPaths. It fills `result` and never throws for the
 * remote side's sake.
 */
async function converse(conv: Conversation): Promise<void> {
  const { opts, result, reader, io, signal, deadline, timeoutMs, since } = conv;
  if (opts.expectStartedLine) {
    let line: string | null = null;
    try {
      line = await reader.line(4096);
    } catch (e) {
      if (e instanceof WireError && (e.kind === "timeout" || e.kind === "aborted")) {
        result.failure = {
          kind: "timeout",
          nixMessage: `no 'started' line from ssh within ${timeoutMs} ms`,
        };
        return;
      }
    }
    if (line !== "started") {
      result.failure = {
        kind: "ssh-start",
        nixMessage: `failed to start SSH connection to '${opts.host}'`,
      };
      return;
    }
  }
  const left = () => Math.max(1, deadline - Date.now());
  // Both protocols: the handshake, then (optionally) one QueryValidPaths.
  let hs: ServeHandshakeResult | WorkerHandshakeResult;
  let query: ((paths: string[]) => Promise<string[]>) | undefined;
  if (opts.protocol === "serve") {
    const r = await serveHandshake(io, { host: opts.host, reader, timeoutMs: left(), signal });
    result.serve = hs = r.result;
    const c = r.connection;
    if (c)
      query = (paths) => {
        reader.deadline = deadline;
        return c.queryValidPaths(paths);
      };
  } else {
    const r = await workerHandshake(io, {
      storeUri: opts.storeUri,
      reader,
      timeoutMs: left(),
      signal,
      opTimeoutMs: left(),
    });
    result.worker = hs = r.result;
    const c = r.connection;
    if (c) query = (paths) => c.queryValidPaths(paths, { timeoutMs: left() });
  }
  if (!hs.ok || !query) {
    result.failure = { kind: hs.ok ? "io" : hs.kind, nixMessage: hs.ok ? "" : hs.nixMessage };
    return;
  }
  result.timings.handshakeMs = since();
  if (opts.queryValidPaths) {
    try {
      result.validPaths = await query(opts.queryValidPaths);
      result.timings.queryMs = since();
    } catch (e) {
      result.failure = { kind: "query", nixMessage: e instanceof Error ? e.message : String(e) };
      return;
    }
  }
  result.ok = true;
}

/** Close our side of the session, give the server a moment to exit at EOF, then kill its group. */
async function closeSession(
  child: ChildProcessWithoutNullStreams,
  exited: Promise<void>,
  result: ProbeResult,
): Promise<void> {
  // Close our side; a well-behaved server exits at EOF. Give it a moment, then kill the group.
  child.stdin.end();
  const graceMs = result.failure?.kind === "timeout" ? 0 : 1500;
  const reaped = await raceTimer(
    exited.then(() => true),
    graceMs,
    false,
  );
  if (!reaped && child.pid !== undefined) {
    result.killed = true;
    killGroup(child, "SIGKILL");
    await raceTimer(exited, 2000, undefined);
  } else if (child.pid !== undefined) {
    // ssh may leave helpers (ProxyCommand) behind in its group.
    killGroup(child, "SIGKILL");
  }
}

export async function probe(opts: ProbeOptions): Promise<ProbeResult> {
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const t0 = performance.now();
  const deadline = Date.now() + timeoutMs;
  const since = () => Math.round((performance.now() - t0) * 10) / 10;
  const stderrLimit = opts.stderrLimit ?? 64 * 1024;
  const argv = [opts.program, ...opts.args];
  const result = notRun(opts.protocol, argv);

  const stderrParts: Buffer[] = [];
  let stderrLen = 0;
  // Own process group, so a kill reaches ssh and anything it started. The probe keeps its own deadline
  // below; the helper's is the backstop for the whole life of the session (whileOpen included).
  const proc = startProc([opts.program, ...opts.args], {
    env: opts.env ?? process.env,
    cwd: opts.cwd ?? process.cwd(),
    ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
    ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
    deadlineMs: 2 * timeoutMs + 10_000,
    stdin: "pipe",
    rawStdout: true,
    onStderr: (b: Buffer) => {
      if (stderrLen < stderrLimit) {
        const k = b.subarray(0, stderrLimit - stderrLen);
        stderrParts.push(k);
        stderrLen += k.length;
        if (k.length < b.length) result.stderrTruncated = true;
      } else result.stderrTruncated = true;
    },
  });
  const child = proc.child as ChildProcessWithoutNullStreams;
  child.stdout.once("data", () => {
    result.timings.firstByteMs = since();
  });
  const exited = proc.done.then((r) => {
    result.exitCode = r.code;
    result.signal = r.signal;
  });
  const spawnError = proc.done.then((r) => r.spawnError ?? new Promise<Error>(() => {}));

  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), Math.max(0, deadline - Date.now()));
  const reader = new WireReader(child.stdout, {
    deadline,
    timeoutMs,
    signal: ac.signal,
    budget: 256 * 1024 * 1024,
  });
  const io = { input: child.stdout, output: child.stdin };

  const work = converse({ opts, result, reader, io, signal: ac.signal, deadline, timeoutMs, since });

  const first = await Promise.race([work.then(() => null), spawnError]);
  if (first === null && result.ok && opts.whileOpen) await opts.whileOpen().catch(() => {});
  if (first instanceof Error) {
    const code = (first as NodeJS.ErrnoException).code;
    ac.abort();
    await work.catch(() => {});
    // Nix's own wording when exec fails (`unable to execute 'ssh'`), plus the reason.
    result.failure = {
      kind: "spawn",
      nixMessage: `unable to execute '${opts.program}': ${code === "ENOENT" ? "No such file or directory" : first.message}`,
    };
    delete result.serve;
    delete result.worker;
    result.ok = false;
  }
  clearTimeout(timer);
  reader.detach();

  await closeSession(child, exited, result);
  child.stdout.destroy();
  child.stderr.destroy();
  result.stderr = Buffer.concat(stderrParts, stderrLen).toString("utf8");
  result.timings.totalMs = since();
  return result;
}

/** A private temp dir (mode 0700) holding `host-key`, like Nix's `/tmp/nix-<pid>-<n>/host-key`. */
export async function makeHostKeyDir(): Promise<{ dir: string; file: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "nix-builders-"));
  return { dir, file: join(dir, "host-key"), cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export interface ProbeStoreOptions
  extends Omit<ProbeOptions, "program" | "args" | "protocol" | "host" | "storeUri"> {
  ssh?: ProbeSshOptions;
  /** Base environment before the probe adjustments of `probeSshEnv` (default process.env). */
  baseEnv?: NodeJS.ProcessEnv;
}

/**
 * Probe an `ssh://` / `ssh-ng://` store the way Nix would connect to it: Nix's argv (plus the probe
 * options), a pinned host key written to a private temp file, the right handshake.
 */
export async function probeStore(
  input: Omit<NixSshArgvInput, "hostKeyFile">,
  opts: ProbeStoreOptions = {},
): Promise<ProbeResult & { ssh: NixSshArgv }> {
  const hk = await makeHostKeyDir();
  try {
    const ssh = probeSshArgv({ ...input, hostKeyFile: hk.file }, opts.ssh);
    if (ssh.error) {
      return { ...notRun(ssh.protocol, []), failure: { kind: "spawn", nixMessage: ssh.error }, ssh };
    }
    if (ssh.knownHostsContent !== undefined) await writeFile(hk.file, ssh.knownHostsContent, { mode: 0o600 });
    const { ssh: _s, baseEnv, ...rest } = opts;
    const r = await probe({
      ...rest,
      program: ssh.program,
      args: ssh.args,
      env: probeSshEnv(baseEnv ?? process.env, ssh),
      protocol: ssh.protocol,
      host: ssh.host,
      storeUri: input.storeUri.split("?")[0]!,
      expectStartedLine: ssh.expectStartedLine,
    });
    return { ...r, ssh };
  } finally {
    await hk.cleanup();
  }
}
