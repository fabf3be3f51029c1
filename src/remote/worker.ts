/**
 * Client side of the Nix worker (daemon) protocol (Nix 2.8.0 src/libstore/worker-protocol.hh, src/libstore/remote-store.cc; docs/protocols.md): the local daemon socket,
 * `nix-daemon --stdio` (ssh-ng://), or any pair of streams.
 *
 * Handshake, gated on the negotiated version N = min(ours, daemon's):
 *   C→S magic1; S→C magic2, daemon version; C→S our version;
 *   N ≥ 1.38: feature sets both ways; N ≥ 1.14: u64 0 (CPU affinity); N ≥ 1.11: u64 0 (reserveSpace);
 *   N ≥ 1.33: S→C Nix version string; N ≥ 1.35: S→C trust flag; then S→C log messages until LAST.
 *
 * We announce 1.34 by default (what 2.8 sends), so a newer daemon talks to us exactly as it talks
 * to a 2.8 client. Failure texts are 2.8's (`cannot open connection to remote store '<uri>': error: …`).
 *
 * Op numbers (2.8 `worker-protocol.hh`, unchanged in current Nix): IsValidPath 1, SetOptions 19,
 * QueryPathInfo 26, QueryValidPaths 31.
 */
import { connect, type Socket } from "node:net";
import type { Readable, Writable } from "node:stream";
import { chomp, printableBytes, readMagic, WireError, WireReader, WireWriter } from "./wire.js";

export const WORKER_MAGIC_1 = 0x6e697863;
export const WORKER_MAGIC_2 = 0x6478696f;
/** 1.34, the version Nix 2.8 – 2.14 speak. */
export const WORKER_PROTOCOL_2_8 = 0x122;
export const DEFAULT_DAEMON_SOCKET = "/nix/var/nix/daemon-socket/socket";

export const WorkerOp = {
  IsValidPath: 1,
  SetOptions: 19,
  QueryPathInfo: 26,
  QueryValidPaths: 31,
  BuildPaths: 9,
  BuildDerivation: 36,
} as const;

/**
 * A derivation as the worker protocol's BuildDerivation sends it (a `BasicDerivation`: no input
 * derivations). This is what hercules-ci-agent hands the daemon for an in-memory derivation.
 */
export interface BasicDerivationWire {
  readonly outputs: ReadonlyMap<
    string,
    { readonly path: string; readonly hashAlgo: string; readonly hash: string }
  >;
  readonly inputSrcs: readonly string[];
  readonly system: string;
  readonly builder: string;
  readonly args: readonly string[];
  readonly env: ReadonlyMap<string, string>;
}

/** BuildResult as the daemon answers BuildDerivation (status codes of `BuildResult::Status`). */
export interface BuildResultWire {
  /** 0 Built, 1 Substituted, 2 AlreadyValid, 3 PermanentFailure, … */
  readonly status: number;
  readonly errorMsg: string;
  readonly timesBuilt: number | null;
}

export const Stderr = {
  NEXT: 0x6f6c6d67,
  READ: 0x64617461,
  WRITE: 0x64617416,
  LAST: 0x616c7473,
  ERROR: 0x63787470,
  START_ACTIVITY: 0x53545254,
  STOP_ACTIVITY: 0x53544f50,
  RESULT: 0x52534c54,
} as const;

const minor = (v: number) => v & 0xff;

/** An error the daemon reported (STDERR_ERROR), decoded. */
export interface DaemonErrorInfo {
  /** Verbosity level of the error (0 = error). */
  level: number;
  /** The message as the daemon rendered it (may contain ANSI escapes). */
  message: string;
  /** Traces (`… while doing X`), outermost last as sent. */
  traces: string[];
  /** Exit status (only sent by daemons below 1.26). */
  status?: number;
}

export class DaemonError extends Error {
  readonly info: DaemonErrorInfo;
  constructor(info: DaemonErrorInfo) {
    super(info.message);
    this.name = "DaemonError";
    this.info = info;
  }
}

/** Strip ANSI colour escapes from daemon text. */
export function stripAnsi(s: string): string {
  return s.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
}

export interface LogMessage {
  type: "next" | "start-activity" | "stop-activity" | "result" | "write";
  text?: string;
  activity?: number;
  activityType?: number;
  level?: number;
  fields?: (number | bigint | string)[];
}

export type WorkerFailureKind =
  | "eof"
  | "garbage"
  | "bad-magic"
  | "bad-version"
  | "daemon-error"
  | "timeout"
  | "io"
  | "connect";

export interface WorkerFailure {
  ok: false;
  kind: WorkerFailureKind;
  /** Nix 2.8's full text (without the leading `error: `). */
  nixMessage: string;
  /** The inner reason, e.g. `unexpected end-of-file` or the daemon's own error text. */
  reason: string;
  daemonError?: DaemonErrorInfo;
  bytesSeen: Buffer;
  textSeen: string;
}

export interface WorkerHandshakeOk {
  ok: true;
  /** "1.34" for Nix 2.8. */
  protocolVersion: string;
  protocolVersionNumber: number;
  negotiated: number;
  /** The daemon's Nix version (N ≥ 1.33), e.g. "2.8.0". */
  daemonNixVersion: string | null;
  /** N ≥ 1.35: the daemon's view of us. null when not sent. */
  trusted: "trusted" | "not-trusted" | "unknown" | null;
  /** Features both sides support (N ≥ 1.38). */
  features: string[];
  /** Log messages the daemon sent before LAST (startup warnings). */
  messages: LogMessage[];
}

export type WorkerHandshakeResult = WorkerHandshakeOk | WorkerFailure;

export interface WorkerIo {
  input: Readable;
  output: Writable;
}

export interface WorkerHandshakeOptions {
  /** The store URI for messages, e.g. `daemon`, `unix:///…`, `ssh-ng://host`. */
  storeUri: string;
  /** Version to announce (default 1.34). Announcing ≥ 1.38 enables the feature exchange. */
  clientVersion?: number;
  /** Features to offer when N ≥ 1.38 (default none). */
  features?: string[];
  timeoutMs?: number;
  signal?: AbortSignal;
  reader?: WireReader;
  /** Byte budget for the connection (default 256 MiB). */
  budget?: number;
}

function failure(
  kind: WorkerFailureKind,
  storeUri: string,
  reason: string,
  bytesSeen: Buffer,
  daemonError?: DaemonErrorInfo,
): WorkerFailure {
  const f: WorkerFailure = {
    ok: false,
    kind,
    nixMessage: `cannot open connection to remote store '${storeUri}': error: ${reason}`,
    reason,
    bytesSeen,
    textSeen: printableBytes(bytesSeen),
  };
  if (daemonError) f.daemonError = daemonError;
  return f;
}

const noop = () => {};

async function readFields(r: WireReader): Promise<(number | bigint | string)[]> {
  const n = await r.num();
  if (n > 4096) throw new WireError("budget", `too many log fields (${n})`, r.offset);
  const out: (number | bigint | string)[] = [];
  for (let i = 0; i < n; i++) {
    const t = await r.u32();
    if (t === 0) {
      const v = await r.u64();
      out.push(v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
    } else if (t === 1) out.push(await r.string());
    else
      throw new WireError(
        "too-large",
        `got unsupported field type ${t.toString(16)} from Nix daemon`,
        r.offset,
      );
  }
  return out;
}

/** 2.8's structured error (N ≥ 1.26): "Error", level, name, message, havePos=0, traces (havePos=0, text). */
async function readStructuredError(r: WireReader): Promise<DaemonErrorInfo> {
  const type = await r.string(1024);
  if (type !== "Error")
    throw new WireError("too-large", `unexpected error type '${type}' from Nix daemon`, r.offset);
  const level = await r.u32();
  await r.string(1024); // name, unused ("Error")
  const message = await r.string(1 << 20);
  const havePos = await r.num();
  if (havePos !== 0)
    throw new WireError("too-large", "daemon error with a position is not supported", r.offset);
  const nTraces = await r.num();
  if (nTraces > 10_000) throw new WireError("budget", `too many error traces (${nTraces})`, r.offset);
  const traces: string[] = [];
  for (let i = 0; i < nTraces; i++) {
    const tp = await r.num();
    if (tp !== 0) throw new WireError("too-large", "daemon trace with a position is not supported", r.offset);
    traces.push(await r.string(1 << 20));
  }
  return { level, message, traces };
}

/**
 * Read log messages until LAST. Returns the collected messages, or a DaemonError for STDERR_ERROR.
 * STDERR_READ (the daemon wants data from us) is never expected for the ops we run: it is an error.
 */
export async function drainStderr(
  r: WireReader,
  negotiated: number,
  onMessage?: (m: LogMessage) => void,
): Promise<{ messages: LogMessage[]; error?: DaemonErrorInfo }> {
  const messages: LogMessage[] = [];
  const push = (m: LogMessage) => {
    if (messages.length < 1000) messages.push(m);
    onMessage?.(m);
  };
  for (;;) {
    const code = await r.u64();
    const c = code <= 0xffffffffn ? Number(code) : -1;
    switch (c) {
      case Stderr.LAST:
        return { messages };
      case Stderr.ERROR:
        if (minor(negotiated) >= 26) return { messages, error: await readStructuredError(r) };
        {
          const message = await r.string(1 << 20);
          const status = await r.u32();
          return { messages, error: { level: 0, message, traces: [], status } };
        }
      case Stderr.NEXT:
        push({ type: "next", text: chomp(await r.string(1 << 20)) });
        break;
      case Stderr.WRITE:
        push({ type: "write", text: await r.string(1 << 20) });
        break;
      case Stderr.START_ACTIVITY: {
        const activity = await r.num();
        const level = await r.u32();
        const activityType = await r.u32();
        const text = await r.string(1 << 20);
        const fields = await readFields(r);
        await r.u64(); // parent
        push({ type: "start-activity", activity, level, activityType, text, fields });
        break;
      }
      case Stderr.STOP_ACTIVITY:
        push({ type: "stop-activity", activity: await r.num() });
        break;
      case Stderr.RESULT: {
        const activity = await r.num();
        const activityType = await r.u32();
        const fields = await readFields(r);
        push({ type: "result", activity, activityType, fields });
        break;
      }
      case Stderr.READ:
        throw new WireError(
          "too-large",
          "the daemon asked for data (STDERR_READ), which this client never sends",
          r.offset,
        );
      default:
        throw new WireError(
          "too-large",
          `unknown message type 0x${code.toString(16)} from the daemon`,
          r.offset,
        );
    }
  }
}

export interface PathInfo {
  path: string;
  deriver: string | null;
  /** Base16 sha256 of the NAR (as 2.8 sends it, without the `sha256:` prefix). */
  narHash: string;
  references: string[];
  registrationTime: number;
  narSize: number;
  ultimate: boolean;
  sigs: string[];
  /** Rendered content address, or "" . */
  ca: string;
}

/** A worker connection after a successful handshake. Ops are serialised (one at a time). */
export class WorkerConnection {
  private queue: Promise<unknown> = Promise.resolve();
  /** Log messages from the last op. */
  lastMessages: LogMessage[] = [];

  constructor(
    readonly io: WorkerIo,
    readonly reader: WireReader,
    readonly handshake: WorkerHandshakeOk,
    readonly storeUri: string,
    private readonly opTimeoutMs: number,
    private readonly closer: () => void,
  ) {}

  private run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(noop);
    return p;
  }

  /** Send a request, drain STDERR until LAST (throwing DaemonError on ERROR), then read the reply. */
  private op<T>(
    request: WireWriter,
    readReply: (r: WireReader) => Promise<T>,
    timeoutMs?: number,
  ): Promise<T> {
    return this.run(async () => {
      const r = this.reader;
      r.deadline = Date.now() + (timeoutMs ?? this.opTimeoutMs);
      try {
        await request.flushTo(this.io.output, timeoutMs ?? this.opTimeoutMs);
        const { messages, error } = await drainStderr(r, this.handshake.negotiated);
        this.lastMessages = messages;
        if (error) throw new DaemonError(error);
        return await readReply(r);
      } finally {
        r.deadline = undefined;
      }
    });
  }

  /** IsValidPath (op 1). */
  isValidPath(path: string): Promise<boolean> {
    return this.op(new WireWriter().u64(WorkerOp.IsValidPath).string(path), (r) => r.bool());
  }

  /**
   * QueryValidPaths (op 31): the subset of `paths` that is valid, in one round trip however many
   * paths there are. `substitute` is only sent when N ≥ 1.27. A path outside the daemon's store
   * directory makes a 2.8 daemon report an error and close the connection.
   */
  queryValidPaths(
    paths: Iterable<string>,
    opts: { substitute?: boolean; timeoutMs?: number } = {},
  ): Promise<string[]> {
    const w = new WireWriter().u64(WorkerOp.QueryValidPaths).strings(paths);
    if (minor(this.handshake.negotiated) >= 27) w.bool(opts.substitute ?? false);
    return this.op(w, (r) => r.strings(), opts.timeoutMs);
  }

  /** QueryPathInfo (op 26); null when the path is not valid (N ≥ 1.17, always true for us). */
  queryPathInfo(path: string): Promise<PathInfo | null> {
    return this.op(new WireWriter().u64(WorkerOp.QueryPathInfo).string(path), async (r) => {
      const N = minor(this.handshake.negotiated);
      if (N >= 17 && !(await r.bool())) return null;
      const deriver = await r.string();
      const narHash = await r.string();
      const references = await r.strings();
      const registrationTime = await r.num();
      const narSize = await r.num();
      let ultimate = false;
      let sigs: string[] = [];
      let ca = "";
      if (N >= 16) {
        ultimate = await r.bool();
        sigs = await r.strings();
        ca = await r.string();
      }
      return {
        path,
        deriver: deriver === "" ? null : deriver,
        narHash,
        references,
        registrationTime,
        narSize,
        ultimate,
        sigs,
        ca,
      };
    });
  }

  /**
   * SetOptions (op 19) with 2.8's fixed fields and an overrides map. Not required: a 2.8 daemon
   * serves ops without it (verified); the 2.8 client sends it on unix-socket connections only.
   */
  setOptions(
    o: {
      keepFailed?: boolean;
      keepGoing?: boolean;
      tryFallback?: boolean;
      verbosity?: number;
      maxBuildJobs?: number;
      maxSilentTime?: number;
      verboseBuild?: boolean;
      buildCores?: number;
      useSubstitutes?: boolean;
      overrides?: Record<string, string>;
    } = {},
  ): Promise<void> {
    const w = new WireWriter()
      .u64(WorkerOp.SetOptions)
      .bool(o.keepFailed ?? false)
      .bool(o.keepGoing ?? false)
      .bool(o.tryFallback ?? false)
      .u64(o.verbosity ?? 0)
      .u64(o.maxBuildJobs ?? 1)
      .u64(o.maxSilentTime ?? 0)
      .u64(1) // obsolete useBuildHook
      .u64(o.verboseBuild ? 0 : 7) // lvlError : lvlVomit
      .u64(0) // obsolete log type
      .u64(0) // obsolete print build trace
      .u64(o.buildCores ?? 0)
      .bool(o.useSubstitutes ?? false);
    if (minor(this.handshake.negotiated) >= 12) {
      const entries = Object.entries(o.overrides ?? {});
      w.u64(entries.length);
      for (const [k, v] of entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) w.string(k).string(v);
    }
    return this.op(w, async () => undefined);
  }

  /**
   * BuildDerivation (op 36): build `drv` (in memory) as `drvPath`, buildMode 0 (normal). The log
   * messages (activities such as `building '…' on '…'`, type 105) are in `lastMessages` afterwards.
   * Encoding as `writeDerivation` in `2.8.0:src/libstore/derivations.cc` (outputs as path, hash
   * algorithm, hash; sets of strings; env as a count and pairs), the reply as `BuildResult`.
   */
  buildDerivation(drvPath: string, drv: BasicDerivationWire, timeoutMs?: number): Promise<BuildResultWire> {
    const w = new WireWriter().u64(WorkerOp.BuildDerivation).string(drvPath).u64(drv.outputs.size);
    for (const [name, o] of drv.outputs) w.string(name).string(o.path).string(o.hashAlgo).string(o.hash);
    w.strings([...drv.inputSrcs].sort())
      .string(drv.system)
      .string(drv.builder)
      .strings(drv.args);
    const env = [...drv.env].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    w.u64(env.length);
    for (const [k, v] of env) w.string(k).string(v);
    w.u64(0); // bmNormal
    return this.op(
      w,
      async (r) => {
        const N = minor(this.handshake.negotiated);
        const status = await r.num();
        const errorMsg = await r.string();
        let timesBuilt: number | null = null;
        if (N >= 29) {
          timesBuilt = await r.num();
          await r.bool(); // isNonDeterministic
          await r.num(); // startTime
          await r.num(); // stopTime
        }
        if (N >= 37) {
          for (let i = 0; i < 2; i++) if (await r.bool()) await r.num(); // cpuUser, cpuSystem
        }
        if (N >= 28) {
          const n = await r.num();
          for (let i = 0; i < n; i++) {
            await r.string();
            await r.string();
          }
        }
        return { status, errorMsg, timesBuilt };
      },
      timeoutMs,
    );
  }

  /**
   * BuildPaths (op 9) for derived paths (`<drv>!out`, N ≥ 1.30; `<drv>!*` for all outputs), buildMode 0.
   * The daemon reads the derivation from its store: the path the build hook can take.
   */
  buildPaths(paths: readonly string[], timeoutMs?: number): Promise<void> {
    const w = new WireWriter().u64(WorkerOp.BuildPaths).strings(paths);
    if (minor(this.handshake.negotiated) >= 15) w.u64(0);
    return this.op(
      w,
      async (r) => {
        await r.num();
      },
      timeoutMs,
    );
  }

  /** End the connection (closes our side; the daemon exits its connection loop on EOF). */
  close(): void {
    this.reader.detach();
    this.closer();
  }
}

/** Run the worker handshake over `io`. Never throws; never waits longer than `timeoutMs`. */
export async function workerHandshake(
  io: WorkerIo,
  opts: WorkerHandshakeOptions & { closer?: () => void; opTimeoutMs?: number },
): Promise<{ result: WorkerHandshakeResult; connection?: WorkerConnection }> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const deadline = Date.now() + timeoutMs;
  io.output.on("error", noop);
  const reader =
    opts.reader ??
    new WireReader(io.input, {
      deadline,
      timeoutMs,
      signal: opts.signal,
      budget: opts.budget ?? 256 * 1024 * 1024,
    });
  reader.deadline = Math.min(deadline, reader.deadline ?? deadline);
  const start = reader.offset;
  const seen = () => reader.seen().subarray(start);
  const clientVersion = opts.clientVersion ?? WORKER_PROTOCOL_2_8;
  const uri = opts.storeUri;

  try {
    await new WireWriter().u64(WORKER_MAGIC_1).flushTo(io.output, timeoutMs);
  } catch {
    // the peer may already be gone; reading tells us how
  }
  try {
    const first = await readMagic(reader, io.output, start);
    if ("text" in first)
      return {
        result: failure(
          "garbage",
          uri,
          `protocol mismatch, got '${chomp(first.text.toString("utf8"))}'`,
          first.text,
        ),
      };
    if (first.magic !== WORKER_MAGIC_2)
      return { result: failure("bad-magic", uri, "protocol mismatch", seen()) };
    const daemonVersion = await reader.u32();
    if ((daemonVersion & 0xff00) !== 0x100)
      return { result: failure("bad-version", uri, "Nix daemon protocol version not supported", seen()) };
    if (minor(daemonVersion) < 10)
      return { result: failure("bad-version", uri, "the Nix daemon version is too old", seen()) };
    const negotiated = Math.min(daemonVersion, clientVersion);
    const N = minor(negotiated);
    const w = new WireWriter().u64(clientVersion);
    let features: string[] = [];
    if (N >= 38) {
      w.strings(opts.features ?? []);
      await w.flushTo(io.output, timeoutMs);
      const theirs = await reader.strings(1000);
      const mine = new Set(opts.features ?? []);
      features = theirs.filter((f) => mine.has(f));
    }
    if (N >= 14) w.u64(0);
    if (N >= 11) w.u64(0);
    await w.flushTo(io.output, timeoutMs);
    const daemonNixVersion = N >= 33 ? await reader.string(1024) : null;
    let trusted: WorkerHandshakeOk["trusted"] = null;
    if (N >= 35) {
      const t = await reader.u32();
      trusted = t === 1 ? "trusted" : t === 2 ? "not-trusted" : "unknown";
    }
    const { messages, error } = await drainStderr(reader, negotiated);
    if (error) return { result: failure("daemon-error", uri, stripAnsi(error.message), seen(), error) };
    const ok: WorkerHandshakeOk = {
      ok: true,
      protocolVersion: `${daemonVersion >> 8}.${daemonVersion & 0xff}`,
      protocolVersionNumber: daemonVersion,
      negotiated,
      daemonNixVersion,
      trusted,
      features,
      messages,
    };
    reader.deadline = undefined;
    const closer = opts.closer ?? (() => io.output.end());
    return {
      result: ok,
      connection: new WorkerConnection(io, reader, ok, uri, opts.opTimeoutMs ?? 120_000, closer),
    };
  } catch (e) {
    if (e instanceof WireError) {
      if (e.kind === "eof") return { result: failure("eof", uri, "unexpected end-of-file", seen()) };
      if (e.kind === "timeout" || e.kind === "aborted")
        return {
          result: failure(
            "timeout",
            uri,
            `no worker-protocol greeting within ${timeoutMs} ms (${seen().length} bytes received)`,
            seen(),
          ),
        };
      if (e.kind === "stream") {
        const why = /ECONNRESET/.test(e.message)
          ? "Connection reset by peer"
          : e.message.replace(/^reading: /, "");
        return { result: failure("io", uri, `reading from file: ${why}`, seen()) };
      }
      return { result: failure("io", uri, e.message, seen()) };
    }
    return { result: failure("io", uri, String(e), seen()) };
  }
}

export interface ConnectDaemonOptions extends Omit<WorkerHandshakeOptions, "storeUri" | "reader"> {
  /** Socket path (default /nix/var/nix/daemon-socket/socket). */
  socketPath?: string;
  /** For messages; default `daemon` for the default socket, else `unix://<path>`. */
  storeUri?: string;
  opTimeoutMs?: number;
}

/** Connect to a daemon's unix socket and run the handshake. The socket is destroyed on failure. */
export async function connectDaemon(
  opts: ConnectDaemonOptions = {},
): Promise<{ result: WorkerHandshakeResult; connection?: WorkerConnection; socket?: Socket }> {
  const socketPath = opts.socketPath ?? DEFAULT_DAEMON_SOCKET;
  const storeUri = opts.storeUri ?? (opts.socketPath === undefined ? "daemon" : `unix://${socketPath}`);
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const socket = connect(socketPath);
  socket.on("error", noop);
  const connectErr = await new Promise<Error | null>((resolve) => {
    const t = setTimeout(() => resolve(new Error(`connecting timed out after ${timeoutMs} ms`)), timeoutMs);
    socket.once("connect", () => {
      clearTimeout(t);
      resolve(null);
    });
    socket.once("error", (e) => {
      clearTimeout(t);
      resolve(e);
    });
  });
  if (connectErr) {
    socket.destroy();
    const code = (connectErr as NodeJS.ErrnoException).code;
    const why =
      code === "ENOENT"
        ? "No such file or directory"
        : code === "ECONNREFUSED"
          ? "Connection refused"
          : code === "EACCES"
            ? "Permission denied"
            : connectErr.message;
    // 2.8 wording: `cannot connect to socket at '<path>': <strerror>`, not wrapped (the connect
    // happens before the handshake's error context).
    const reason = `cannot connect to socket at '${socketPath}': ${why}`;
    return {
      result: {
        ok: false,
        kind: "connect",
        nixMessage: reason,
        reason,
        bytesSeen: Buffer.alloc(0),
        textSeen: "",
      },
    };
  }
  const { result, connection } = await workerHandshake(
    { input: socket, output: socket },
    { ...opts, storeUri, closer: () => socket.end() },
  );
  if (!result.ok) socket.destroy();
  const out: { result: WorkerHandshakeResult; connection?: WorkerConnection; socket?: Socket } = { result };
  if (connection) {
    out.connection = connection;
    out.socket = socket;
  }
  return out;
}
