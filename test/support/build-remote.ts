/**
 * Drive the real Nix build hook (`build-remote`) the way the Nix daemon does, without building anything.
 *
 * The hook is started in cwd `/` (by default) with fds 4 and 5 referring to one pipe (a FIFO opened
 * read-write, so fd 4 writes and fd 5 reads the same buffer), is fed the settings triples and one `try`
 * request in Nix wire encoding, and its stderr is parsed into the `# reply` and the `@nix {json}` messages.
 *
 * Shared by the machines differential tests and the routing tests.
 */
import { spawn, spawnSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const BUILD_REMOTE = "/usr/libexec/nix/build-remote";

/** True when the real Nix build hook is installed (the differential tests skip otherwise). */
export function haveBuildRemote(hook: string = BUILD_REMOTE): boolean {
  return existsSync(hook);
}

export type HookReply = "accept" | "decline" | "decline-permanently" | "postpone";

export interface RunBuildRemoteOptions {
  /** The `builders` setting sent to the hook. */
  builders: string;
  /** The derivation's system (`drv.system`). */
  system: string;
  /** requiredSystemFeatures (a Buffer: exactly those bytes, e.g. not UTF-8). */
  features?: (string | Buffer)[];
  /** 1 when the local machine has a free build slot; default false. */
  amWilling?: boolean;
  /** A syntactically valid store path; default a fixed fake `.drv`. */
  drvPath?: string;
  /** Further settings, sent after `store` and `builders` (later ones win inside the hook). */
  extraSettings?: Record<string, string> | [string, string][];
  /** The hook's working directory; Nix uses `/`. */
  cwd?: string;
  /** Extra environment (merged over an isolated base environment); `undefined` removes a variable. */
  env?: Record<string, string | undefined>;
  /** The `store` setting for the hook; default a per-process temporary chroot store. */
  store?: string;
  /** The verbosity argument (0 = error ... 7 = vomit); default 0 except that the listing needs warn... see below. */
  verbosity?: number;
  /** Kill the hook after this many ms (default 20000). */
  timeoutMs?: number;
  /** Path of the hook binary. */
  hook?: string;
}

export interface RunBuildRemoteResult {
  /** The hook's answer, or null when it died before answering (e.g. a bad machine specification). */
  reply: HookReply | null;
  /** After `# accept`, the store URI line the hook printed. */
  acceptedUri?: string;
  /** The `msg` texts of the JSON log lines, ANSI codes removed, in order. */
  messages: string[];
  /** The same messages with their ANSI colour codes (Nix colours every interpolated argument). */
  rawMessages: string[];
  /** The `text` of `start` activities (e.g. `connecting to '…'`), ANSI codes removed. */
  activities: string[];
  /** Raw stderr. */
  stderr: string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** What the hook died of: the last message starting with `error: ` without that prefix, or the own text
   * (`raw_msg`) of an error printed with a trace. */
  error: string | null;
}

export const DEFAULT_DRV_PATH = "/nix/store/fjym90m5r8qrc51g6cxblkdf7z4jk19s-x.drv";

/** Remove ANSI colour escape sequences (CSI ... m and friends). */
export function stripAnsi(s: string): string {
  return s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");
}

/* ---------- Nix wire encoding ---------- */

export function wireU64(n: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

export function wireString(s: string | Buffer): Buffer {
  const data = typeof s === "string" ? Buffer.from(s, "utf8") : s;
  const pad = (8 - (data.length % 8)) % 8;
  return Buffer.concat([wireU64(data.length), data, Buffer.alloc(pad)]);
}

export function wireStrings(ss: readonly (string | Buffer)[]): Buffer {
  return Buffer.concat([wireU64(ss.length), ...ss.map((s) => wireString(s))]);
}

/* ---------- shared temporary state ---------- */

let scratch: string | null = null;

/** A per-process scratch directory (removed at exit). */
export function scratchDir(): string {
  if (scratch === null) {
    scratch = mkdtempSync(join(tmpdir(), "nb-hook-"));
    mkdirSync(join(scratch, "conf"));
    writeFileSync(join(scratch, "conf", "nix.conf"), "");
    const dir = scratch;
    process.on("exit", () => {
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        // best effort
      }
    });
  }
  return scratch;
}

function defaultStore(): string {
  return join(scratchDir(), "store");
}

let fifoCounter = 0;

function makeFifo(): string {
  const p = join(scratchDir(), `fd45-${process.pid}-${fifoCounter++}`);
  const r = spawnSync("mkfifo", [p]);
  if (r.status !== 0) throw new Error(`mkfifo failed: ${r.stderr}`);
  return p;
}

function settingsPairs(opts: RunBuildRemoteOptions): [string, string][] {
  const pairs: [string, string][] = [
    ["store", opts.store ?? defaultStore()],
    ["builders", opts.builders],
  ];
  const extra = opts.extraSettings;
  if (extra) pairs.push(...(Array.isArray(extra) ? extra : Object.entries(extra)));
  return pairs;
}

/** The bytes the parent writes to the hook's stdin for one `try` request. */
export function encodeHookRequest(opts: RunBuildRemoteOptions): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of settingsPairs(opts)) parts.push(wireU64(1), wireString(k), wireString(v));
  parts.push(wireU64(0));
  parts.push(wireString("try"));
  parts.push(wireU64(opts.amWilling ? 1 : 0));
  parts.push(wireString(opts.system));
  parts.push(wireString(opts.drvPath ?? DEFAULT_DRV_PATH));
  // a std::set<std::string>: unique, in byte order
  const feats = new Map<string, Buffer>();
  for (const f of opts.features ?? []) {
    const b = typeof f === "string" ? Buffer.from(f, "utf8") : f;
    feats.set(b.toString("hex"), b);
  }
  parts.push(wireStrings([...feats.values()].sort(Buffer.compare)));
  return Buffer.concat(parts);
}

/** Parse the hook's stderr into reply, accepted URI and messages. */
export function parseHookStderr(
  stderr: string,
): Pick<RunBuildRemoteResult, "reply" | "acceptedUri" | "messages" | "rawMessages" | "activities" | "error"> {
  const lines = stderr.split("\n");
  let reply: HookReply | null = null;
  let acceptedUri: string | undefined;
  const messages: string[] = [];
  const rawMessages: string[] = [];
  const activities: string[] = [];
  let traced: string | null = null;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.startsWith("# ")) {
      const r = line.slice(2);
      if (
        reply === null &&
        (r === "accept" || r === "decline" || r === "decline-permanently" || r === "postpone")
      ) {
        reply = r;
        if (r === "accept" && i + 1 < lines.length) acceptedUri = lines[i + 1];
      }
      continue;
    }
    if (line.startsWith("@nix ")) {
      try {
        const j = JSON.parse(line.slice(5)) as {
          action?: string;
          msg?: string;
          raw_msg?: string;
          text?: string;
        };
        if (j.action === "msg" && typeof j.msg === "string") {
          messages.push(stripAnsi(j.msg));
          rawMessages.push(j.msg);
          // An error with a trace (2.26+: `error:\n … while parsing …\n\n error: <text>`): its own text.
          if (j.msg.startsWith("\x1b[31;1merror:\x1b[0m\n") && typeof j.raw_msg === "string")
            traced = stripAnsi(j.raw_msg);
        } else if (j.action === "start" && typeof j.text === "string") activities.push(stripAnsi(j.text));
      } catch {
        messages.push(stripAnsi(line));
        rawMessages.push(line);
      }
    }
  }
  let error: string | null = traced;
  for (const m of messages) if (m.startsWith("error: ")) error = m.slice("error: ".length);
  const out: Pick<
    RunBuildRemoteResult,
    "reply" | "acceptedUri" | "messages" | "rawMessages" | "activities" | "error"
  > = {
    reply,
    messages,
    rawMessages,
    activities,
    error,
  };
  if (acceptedUri !== undefined) out.acceptedUri = acceptedUri;
  return out;
}

/**
 * Run the real build hook once with one `try` request, close its stdin, and collect its answer.
 *
 * The environment is isolated: NIX_CONF_DIR points at an empty directory and NIX_USER_CONF_FILES is empty,
 * so only the settings sent over the protocol (and compiled-in defaults) apply.
 */
export function runBuildRemote(opts: RunBuildRemoteOptions): Promise<RunBuildRemoteResult> {
  const hook = opts.hook ?? BUILD_REMOTE;
  const fifo = makeFifo();
  const fd = openSync(fifo, "r+"); // O_RDWR on a FIFO: one pipe, both ends
  const env: Record<string, string> = {};
  for (const k of ["PATH", "HOME", "USER", "LANG", "TMPDIR"]) {
    const v = process.env[k];
    if (v !== undefined) env[k] = v;
  }
  env["NIX_CONF_DIR"] = join(scratchDir(), "conf");
  env["NIX_USER_CONF_FILES"] = "";
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  const child = spawn(hook, [String(opts.verbosity ?? 1)], {
    cwd: opts.cwd ?? "/",
    env,
    stdio: ["pipe", "ignore", "pipe", fd, fd],
    argv0: "build-remote",
  });
  closeSync(fd);
  const chunks: Buffer[] = [];
  child.stderr!.on("data", (c: Buffer) => chunks.push(c));
  child.stdin!.on("error", () => {
    // the hook may die before reading everything (bad machine specification): EPIPE is expected
  });
  child.stdin!.end(encodeHookRequest(opts));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      if (child.pid !== undefined) child.kill("SIGKILL");
    }, opts.timeoutMs ?? 20000);
    child.on("error", (e) => {
      clearTimeout(timer);
      rmSync(fifo, { force: true });
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      rmSync(fifo, { force: true });
      const stderr = Buffer.concat(chunks).toString("utf8");
      resolve({ ...parseHookStderr(stderr), stderr, exitCode: code, signal });
    });
  });
}

export interface ListedMachine {
  systemTypes: string[];
  maxJobs: number;
  supportedFeatures: string[];
  mandatoryFeatures: string[];
}

export interface NoMachineListing {
  drv: string;
  system: string;
  features: string[];
  count: number;
  machines: ListedMachine[];
}

/**
 * Parse the "Failed to find a machine for remote build!" message, using the colour codes Nix puts around
 * every interpolated value (so `big, kvm` stays one column). Works for both the 2.8 and the bracketed form.
 */
export function parseNoMachineListing(rawMsg: string): NoMachineListing | null {
  if (!stripAnsi(rawMsg).startsWith("Failed to find a machine for remote build!")) return null;
  const lines = rawMsg.split("\n");
  const args = (line: string): string[] =>
    [...line.matchAll(/\x1b\[[0-9;]*m(.*?)\x1b\[0m/g)].map((m) => stripAnsi(m[1]!));
  const list = (s: string): string[] => {
    const t = s.startsWith("[") && s.endsWith("]") ? s.slice(1, -1) : s;
    return t === "" ? [] : t.split(", ");
  };
  const drv = args(lines[1] ?? "")[0] ?? "";
  const req = args(lines[2] ?? "");
  const reqPlain = stripAnsi(lines[2] ?? "");
  const bracketed = reqPlain.includes(", [");
  const count = Number(args(lines[3] ?? "")[0] ?? "NaN");
  const machines: ListedMachine[] = [];
  for (const line of lines.slice(5)) {
    const a = args(line);
    if (a.length !== 4) return null;
    const unwrap = (s: string): string[] => (bracketed ? list(s) : s === "" ? [] : s.split(", "));
    machines.push({
      systemTypes: unwrap(a[0]!),
      maxJobs: Number(a[1]),
      supportedFeatures: unwrap(a[2]!),
      mandatoryFeatures: unwrap(a[3]!),
    });
  }
  return {
    drv,
    system: req[0] ?? "",
    features: bracketed ? list(req[1] ?? "") : req[1] ? req[1].split(", ") : [],
    count,
    machines,
  };
}

/** A `Reader` over the real file system (errno names as codes), for tests that compare with the real hook. */
export const nodeFsReader = {
  read(path: string): { ok: true; text: string } | { ok: false; code: string } {
    try {
      return { ok: true, text: readFileSync(path, "utf8") };
    } catch (e) {
      return { ok: false, code: (e as NodeJS.ErrnoException).code ?? "EIO" };
    }
  },
};

/** Run many hook invocations with bounded parallelism, preserving order. */
export async function runBuildRemoteMany(
  all: RunBuildRemoteOptions[],
  parallelism = 4,
): Promise<RunBuildRemoteResult[]> {
  const results: RunBuildRemoteResult[] = new Array(all.length);
  let next = 0;
  // Each worker has a store of its own (`<store>-w<N>`): hooks that share one store's SQLite database
  // can see it busy on a loaded machine, and then print a warning that the comparison would read.
  const worker = async (_: unknown, w: number): Promise<void> => {
    while (next < all.length) {
      const i = next++;
      const o = all[i]!;
      results[i] = await runBuildRemote({ ...o, store: `${o.store ?? defaultStore()}-w${w}` });
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallelism, all.length) }, worker));
  return results;
}
