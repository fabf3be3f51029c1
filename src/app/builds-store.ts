/**
 * The build records that the build-hook wrapper's recorder writes, and their readers (`builds`,
 * `who-built`, watch's status page). Format: docs/attribution.md.
 *
 * Layout under the state directory (`/var/lib/nix-builders`, or `$NIX_BUILDERS_STATE_DIR`):
 *   builds/builds.jsonl      newest records, one JSON object a line, appended with O_APPEND
 *   builds/builds.1.jsonl    rotated (older), then builds.2.jsonl; nothing older is kept
 *   watch/signals/*.json     one small file per `cannot build on` (for watch; it deletes them)
 *
 * Everything here is root's: a directory or file that is not owned by the running user, or that group or
 * others may write, is neither written nor read (a refusal for the readers, a silent skip for the writer).
 * Only node:fs is imported: the recorder starts once per build-hook process.
 */
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { untrustedDir as untrustedOwnDir } from "../os/owner.js";
import type { WatchSnapshot } from "./watch/model.js";

export const DEFAULT_STATE_DIR = "/var/lib/nix-builders";

/** `$NIX_BUILDERS_STATE_DIR` (root's environment; for tests) or /var/lib/nix-builders. */
export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  const d = env["NIX_BUILDERS_STATE_DIR"];
  return d?.startsWith("/") ? d : DEFAULT_STATE_DIR;
}

export function buildsDir(state: string): string {
  return join(state, "builds");
}

export function signalsDir(state: string): string {
  return join(state, "watch", "signals");
}

/** Rotation: the live file is rotated when it exceeds this many bytes; two rotated files are kept. */
export const DEFAULT_MAX_BYTES = 4 << 20;
export const KEPT_FILES = 3;
/** At most this many signal files wait in the signals directory; more are not written. */
export const MAX_SIGNALS = 64;
/** A record line is cut to stay below this size (one write(2), atomic with O_APPEND on a local file). */
export const MAX_LINE = 3800;

export type Reply = "accept" | "decline" | "postpone" | "decline-permanently";

/** One `try` of the worker and the hook's answer; written when the answer is known. */
export interface TryEvent {
  v: 1;
  t: "try";
  /** `<hook pid>-<hook start ms>-<n>`: unique per try. */
  id: string;
  hook: number;
  at: number;
  drv: string;
  system: string;
  features: string[];
  amWilling: boolean;
  reply: Reply | null;
  /** After `# accept`: the machine's store URI, as the hook printed it. */
  machine: string | null;
  /** `cannot build on` messages printed while the hook looked for a machine for this derivation. */
  cannotBuild: { machine: string; error: string }[];
}

/** The end of an accepted build: when the hook's stderr ended. */
export interface EndEvent {
  v: 1;
  t: "end";
  id: string;
  at: number;
  /** "success" (no error message), "failure" (the hook printed an error), "unknown" (no reply seen). */
  result: "success" | "failure" | "unknown";
  error: string | null;
  /** The hook's own log lines for this build (activities and messages), bounded. */
  lines: string[];
}

export type BuildEvent = TryEvent | EndEvent;

/** A try and its end, joined. */
export interface BuildRecord {
  id: string;
  drv: string;
  system: string;
  features: string[];
  reply: Reply | null;
  machine: string | null;
  startedAt: number;
  endedAt: number | null;
  /** "in-progress", "success", "failure", "unknown", or for a try that was not accepted its reply. */
  result: string;
  error: string | null;
  cannotBuild: { machine: string; error: string }[];
  lines: string[];
}

/** Cut a record line to MAX_LINE bytes by shortening its longest strings. */
export function encodeEvent(e: BuildEvent): string {
  let line = JSON.stringify(e);
  if (Buffer.byteLength(line) <= MAX_LINE) return `${line}\n`;
  const copy = JSON.parse(line) as BuildEvent;
  if (copy.t === "end") {
    copy.lines = copy.lines.slice(0, 5).map((l) => l.slice(0, 200));
    if (copy.error !== null) copy.error = copy.error.slice(0, 1000);
  } else {
    copy.cannotBuild = copy.cannotBuild
      .slice(0, 5)
      .map((c) => ({ machine: c.machine.slice(0, 300), error: c.error.slice(0, 300) }));
    copy.features = copy.features.slice(0, 20).map((f) => f.slice(0, 100));
  }
  line = JSON.stringify(copy);
  if (Buffer.byteLength(line) > MAX_LINE) {
    if (copy.t === "end") {
      copy.lines = [];
      copy.error = copy.error === null ? null : copy.error.slice(0, 500);
    } else copy.cannotBuild = [];
    line = JSON.stringify(copy);
  }
  return `${line}\n`;
}

/* ---------- trust checks ---------- */

function euid(): number {
  return typeof process.geteuid === "function" ? process.geteuid() : 0;
}

/** Why a directory must not be used, or null when it is ours and only we may write it. */
export function untrustedDir(path: string): string | null {
  // Only the last component, owned by us (the callers made or checked the directories above).
  return untrustedOwnDir(path);
}

/* ---------- the writer ---------- */

/** builds.1 → builds.2, builds → builds.1 (renames: a concurrent appender at worst writes to .1). */
export function rotate(dir: string, kept = KEPT_FILES): void {
  for (let i = kept - 2; i >= 0; i--) {
    try {
      renameSync(
        join(dir, i === 0 ? "builds.jsonl" : `builds.${i}.jsonl`),
        join(dir, `builds.${i + 1}.jsonl`),
      );
    } catch {
      // a missing file is fine
    }
  }
}

function ensurePrivateDir(dir: string): boolean {
  try {
    lstatSync(dir);
  } catch {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch {
      return false;
    }
  }
  return untrustedDir(dir) === null;
}

/**
 * The writer (the spool's collector, src/app/hook-spool.ts): append records to builds.jsonl, rotating it
 * at maxBytes, each line with one write(2) (O_APPEND: concurrent writers never interleave). Never throws;
 * false when the directory or file is not ours alone, or any line could not be written.
 */
export function appendEventsSync(state: string, events: BuildEvent[], maxBytes = DEFAULT_MAX_BYTES): boolean {
  if (events.length === 0) return true;
  const dir = buildsDir(state);
  if (untrustedDir(state) !== null || !ensurePrivateDir(dir)) return false;
  const live = join(dir, "builds.jsonl");
  let ok = true;
  let fd = -1;
  const open = (): boolean => {
    try {
      fd = openSync(
        live,
        constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW,
        0o600,
      );
      const st = fstatSync(fd);
      if (!st.isFile() || st.uid !== euid() || (st.mode & 0o022) !== 0) {
        closeSync(fd);
        fd = -1;
        return false;
      }
      if (st.size >= maxBytes) {
        closeSync(fd);
        fd = -1;
        rotate(dir);
        return open();
      }
      return true;
    } catch {
      fd = -1;
      return false;
    }
  };
  if (!open()) return false;
  try {
    for (const e of events) {
      const line = Buffer.from(encodeEvent(e));
      try {
        if (writeSync(fd, line) !== line.length) ok = false;
      } catch {
        ok = false;
        break;
      }
    }
  } finally {
    closeSync(fd);
  }
  return ok;
}

/* ---------- the readers ---------- */

export class StoreRefusal extends Error {
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`${path}: ${reason}`);
  }
}

/** Bounded read of a regular file we own (never follows a symlink). */
function readOwned(path: string, limit: number): string | null {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return null;
    throw new StoreRefusal(path, code === "ELOOP" ? "is a symbolic link" : `cannot be read (${code})`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new StoreRefusal(path, "not a regular file");
    if (st.uid !== euid() || (st.mode & 0o022) !== 0)
      throw new StoreRefusal(
        path,
        "not owned by this user alone (records are only trusted from root's own files)",
      );
    const size = Math.min(st.size, limit);
    const buf = Buffer.alloc(size);
    let off = 0;
    while (off < size) {
      const n = readSync(fd, buf, off, size - off, null);
      if (n === 0) break;
      off += n;
    }
    return buf.subarray(0, off).toString("utf8");
  } finally {
    closeSync(fd);
  }
}

/** Every event in the store, oldest file first. Unparseable lines are skipped. */
export function readEvents(state: string, maxBytes = DEFAULT_MAX_BYTES): BuildEvent[] {
  const dir = buildsDir(state);
  const bad = untrustedDir(dir);
  if (bad === "ENOENT") return [];
  if (bad !== null) throw new StoreRefusal(dir, bad);
  const out: BuildEvent[] = [];
  for (let i = KEPT_FILES - 1; i >= 0; i--) {
    const text = readOwned(join(dir, i === 0 ? "builds.jsonl" : `builds.${i}.jsonl`), maxBytes * 2);
    if (text === null) continue;
    for (const line of text.split("\n")) {
      if (line === "") continue;
      try {
        const e = JSON.parse(line) as BuildEvent;
        if (e && e.v === 1 && (e.t === "try" || e.t === "end") && typeof e.id === "string") out.push(e);
      } catch {
        // a line cut by a full disk
      }
    }
  }
  return out;
}

/** Join try and end events into records, oldest first. */
export function joinEvents(events: BuildEvent[]): BuildRecord[] {
  const byId = new Map<string, BuildRecord>();
  const ends = new Map<string, EndEvent>();
  for (const e of events) {
    if (e.t === "end") ends.set(e.id, e);
    else
      byId.set(e.id, {
        id: e.id,
        drv: e.drv,
        system: e.system,
        features: e.features ?? [],
        reply: e.reply,
        machine: e.machine,
        startedAt: e.at,
        endedAt: e.reply === "accept" ? null : e.at,
        result: e.reply === "accept" ? "in-progress" : (e.reply ?? "no-reply"),
        error: null,
        cannotBuild: e.cannotBuild ?? [],
        lines: [],
      });
  }
  for (const [id, end] of ends) {
    const r = byId.get(id);
    if (!r) continue;
    r.endedAt = end.at;
    r.result = end.result;
    r.error = end.error;
    r.lines = end.lines ?? [];
  }
  return [...byId.values()].sort((a, b) => a.startedAt - b.startedAt);
}

/** A remote build: accepted, or declined after a `cannot build on` (a build that could not go out). */
export function isRemoteBuild(r: BuildRecord): boolean {
  return r.reply === "accept" || r.cannotBuild.length > 0;
}

/**
 * The remote builds among the records, oldest first: every accepted try, and for a derivation that never
 * went out, its last try that met a `cannot build on` (the worker asks again for the same derivation; one
 * row per derivation is enough).
 */
export function remoteBuilds(records: BuildRecord[]): BuildRecord[] {
  const lastDeclined = new Map<string, BuildRecord>();
  const accepted = new Set<string>();
  for (const r of records) {
    if (r.reply === "accept") accepted.add(r.drv);
    else if (r.cannotBuild.length > 0) lastDeclined.set(r.drv, r);
  }
  return records.filter(
    (r) => r.reply === "accept" || (lastDeclined.get(r.drv) === r && !accepted.has(r.drv)),
  );
}

export function isFailed(r: BuildRecord): boolean {
  return r.result === "failure" || (r.reply !== "accept" && r.cannotBuild.length > 0);
}

/** One of `WatchSnapshot.recentBuilds` (src/app/watch/model.ts). */
export type RecentBuild = NonNullable<WatchSnapshot["recentBuilds"]>[number];

/**
 * The recent remote builds, newest first, for watch's status page. Never throws: an untrusted or
 * unreadable store gives no builds.
 */
export function readRecentBuilds(
  state: string,
  opts: { since?: number; limit?: number; spool?: () => BuildEvent[] } = {},
): RecentBuild[] {
  let records: BuildRecord[];
  try {
    // The hook spool's waiting records (src/app/hook-spool.ts readSpoolEvents) are read first.
    const waiting = opts.spool?.() ?? [];
    records = joinEvents([...waiting, ...readEvents(state)]);
  } catch {
    return [];
  }
  return remoteBuilds(records)
    .filter((r) => r.startedAt >= (opts.since ?? 0))
    .reverse()
    .slice(0, opts.limit ?? 50)
    .map((r) => ({
      drv: r.drv,
      system: r.system,
      machine: r.machine ?? r.cannotBuild[r.cannotBuild.length - 1]?.machine ?? null,
      startedAt: r.startedAt,
      endedAt: r.endedAt,
      result: r.reply === "accept" ? r.result : "failure",
    }));
}

export interface BuilderCounters {
  builder: string;
  builds: number;
  failures: number;
  inProgress: number;
  /** `cannot build on` this builder. */
  connectFailures: number;
  /** Durations of finished builds, in seconds. */
  durations: number[];
}

/** Per-builder counters over the stored records (builds accepted by a builder, failures, durations). */
export function builderCounters(records: BuildRecord[]): BuilderCounters[] {
  const m = new Map<string, BuilderCounters>();
  const get = (b: string): BuilderCounters => {
    let c = m.get(b);
    if (!c) {
      c = { builder: b, builds: 0, failures: 0, inProgress: 0, connectFailures: 0, durations: [] };
      m.set(b, c);
    }
    return c;
  };
  for (const r of records) {
    for (const cb of r.cannotBuild) get(cb.machine).connectFailures++;
    if (r.reply !== "accept" || r.machine === null) continue;
    const c = get(r.machine);
    c.builds++;
    if (r.result === "in-progress") c.inProgress++;
    if (r.result === "failure") c.failures++;
    if (r.endedAt !== null && r.result !== "in-progress") c.durations.push((r.endedAt - r.startedAt) / 1000);
  }
  return [...m.values()].sort((a, b) => a.builder.localeCompare(b.builder));
}
