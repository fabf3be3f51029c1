/**
 * The build-hook wrapper's spool and its collector (docs/attribution.md, "The spool").
 *
 * libexec/build-hook does no recording of its own: it tees the worker's requests and the hook's stderr
 * into a pair of files `<hook pid>-<start µs>.in` / `.err` in a private spool directory (root's, 0700,
 * on a tmpfs: /run/nix-builders/hook-spool) and execs the real hook. Everything else happens here, off
 * the hook's path and later: turning a pair into records (HookSession), appending the records of the
 * hooks that have ended to builds.jsonl (`collectSpool`, under a lock, then the pair is deleted), reading
 * the pairs still waiting (the readers merge them with the stored records), and the `cannot build on`
 * signals for watch (`spoolSignals`, from the pairs of the last seconds).
 *
 * Trust: the spool directory must be owned by the running user and writable by nobody else, and every
 * file is opened without following links, must be a regular file of that user and is read bounded.
 */
import {
  closeSync,
  constants,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { type HookTry, ReplyDecoder, RequestDecoder, stripAnsi } from "../nix/hook-protocol.js";
import { readOwnFile } from "../os/read.js";
import {
  appendEventsSync,
  type BuildEvent,
  DEFAULT_MAX_BYTES,
  MAX_SIGNALS,
  type TryEvent,
  untrustedDir,
} from "./builds-store.js";

export const DEFAULT_SPOOL_DIR = "/run/nix-builders/hook-spool";

/** `$NIX_BUILDERS_HOOK_SPOOL` (the daemon's and root's environment; for tests) or the default. */
export function spoolDir(env: NodeJS.ProcessEnv = process.env): string {
  const d = env["NIX_BUILDERS_HOOK_SPOOL"];
  return d?.startsWith("/") ? d : DEFAULT_SPOOL_DIR;
}

/** The wrapper caps each spool file at this size (`ulimit -f`); the reader reads at most this much. */
export const SPOOL_FILE_MAX = 128 << 10;

const MAX_LINES = 20;

/** Turns the two decoded streams into events; pure apart from the clock and the sink. */
export class HookSession {
  private seq = 0;
  private readonly tries: (HookTry & { id: string; at: number })[] = [];
  private current: { cannotBuild: { machine: string; error: string }[]; lines: string[] } = {
    cannotBuild: [],
    lines: [],
  };
  private accepted: TryEvent | null = null;
  private awaitingMachine: TryEvent | null = null;
  private error: string | null = null;
  private readonly startedAt: number;

  constructor(
    private readonly hookPid: number,
    private readonly sink: {
      event(e: BuildEvent): void;
      signal(builder: string, at: number, reason: string, name: string): void;
    },
    private readonly now: () => number = Date.now,
    startedAt?: number,
  ) {
    this.startedAt = startedAt ?? now();
  }

  /** A `try` from the worker. */
  request(t: HookTry, at: number = this.now()): void {
    this.tries.push({ ...t, id: `${this.hookPid}-${this.startedAt}-${this.seq++}`, at });
  }

  reply(reply: TryEvent["reply"]): void {
    const t = this.tries.shift();
    const e: TryEvent = {
      v: 1,
      t: "try",
      id: t?.id ?? `${this.hookPid}-${this.startedAt}-${this.seq++}`,
      hook: this.hookPid,
      at: t?.at ?? this.now(),
      drv: t?.drv ?? "",
      system: t?.system ?? "",
      features: t?.features ?? [],
      amWilling: t?.amWilling ?? false,
      reply,
      machine: null,
      cannotBuild: this.current.cannotBuild,
    };
    this.current = { cannotBuild: [], lines: [] };
    if (reply === "accept") this.awaitingMachine = e;
    else this.sink.event(e);
  }

  machine(m: string): void {
    const e = this.awaitingMachine;
    if (!e) return;
    this.awaitingMachine = null;
    e.machine = m;
    this.accepted = e;
    this.sink.event(e);
  }

  cannotBuild(machine: string, error: string): void {
    const at = this.now();
    this.current.cannotBuild.push({ machine, error });
    this.sink.signal(
      machine,
      at,
      `cannot build on '${machine}': ${error}`,
      `${at}-${this.hookPid}-${this.seq++}`,
    );
  }

  message(level: number, text: string): void {
    if (level === 0 && text.startsWith("error: ")) this.error = text.slice("error: ".length);
    this.line(text);
  }

  line(text: string): void {
    const lines = this.current.lines;
    if (lines.length < MAX_LINES) lines.push(stripAnsi(text).slice(0, 500));
  }

  /** The hook's stderr ended: the hook is gone. */
  end(): void {
    if (this.awaitingMachine) this.machine("");
    if (this.accepted) {
      this.sink.event({
        v: 1,
        t: "end",
        id: this.accepted.id,
        at: this.now(),
        result: this.error === null ? "success" : "failure",
        error: this.error,
        lines: this.current.lines,
      });
      this.accepted = null;
      return;
    }
    // A try without an answer: the hook died while deciding.
    for (const t of this.tries.splice(0)) {
      this.sink.event({
        v: 1,
        t: "try",
        id: t.id,
        hook: this.hookPid,
        at: t.at,
        drv: t.drv,
        system: t.system,
        features: t.features,
        amWilling: t.amWilling,
        reply: null,
        machine: null,
        cannotBuild: this.current.cannotBuild,
      });
      this.sink.event({
        v: 1,
        t: "end",
        id: t.id,
        at: this.now(),
        result: "unknown",
        error: this.error,
        lines: this.current.lines,
      });
    }
  }
}

/* ---------- one spool pair → events ---------- */

export interface SpoolEntry {
  /** `<pid>-<start µs>`: the file names without `.in` / `.err`. */
  name: string;
  pid: number;
  /** The wrapper's start ($EPOCHREALTIME), in ms. */
  startMs: number;
  input: Buffer;
  err: Buffer;
  /** The last write of the requests (after an accept: the inputs, sent right after the machine). */
  inMtimeMs: number;
  /** The last write of the hook's stderr (its last message: for build-remote, the end of the copies). */
  errMtimeMs: number;
  /** The hook has exited. */
  finished: boolean;
}

const NAME = /^([1-9]\d{0,9})-(\d{10,20})$/;

/** `<pid>-<µs>` → pid and start in ms, or null for any other name. */
export function parseSpoolName(name: string): { pid: number; startMs: number } | null {
  const m = NAME.exec(name);
  if (!m) return null;
  const digits = m[2]!;
  // $EPOCHREALTIME is seconds with six decimals; the wrapper keeps the digits only.
  const startMs = Math.floor(Number(digits.slice(0, 10)) * 1000 + Number(`0.${digits.slice(10)}`) * 1000);
  return { pid: Number(m[1]), startMs };
}

/**
 * The events of one hook process, from its two spool files. Times: the first try at the wrapper's start,
 * a later try at the last write of the requests (for the accepted try, the inputs the worker sends right
 * after the machine), every later event at the last write of the hook's stderr. Without `finished`, an
 * accepted build has no end yet (in progress) and a try without a reply is not reported.
 */
export function spoolEvents(e: SpoolEntry): BuildEvent[] {
  const events: BuildEvent[] = [];
  const session = new HookSession(
    e.pid,
    { event: (ev) => events.push(ev), signal: () => undefined },
    () => e.errMtimeMs,
    e.startMs,
  );
  const tries: HookTry[] = [];
  for (const ev of new RequestDecoder().push(e.input)) if (ev.kind === "try") tries.push(ev);
  tries.forEach((t, i) => {
    session.request(t, i > 0 && i === tries.length - 1 ? Math.max(e.inMtimeMs, e.startMs) : e.startMs);
  });
  const rep = new ReplyDecoder();
  const replies = [...rep.push(e.err), ...(e.finished ? rep.end() : [])];
  for (const ev of replies) {
    if (ev.kind === "reply") session.reply(ev.reply);
    else if (ev.kind === "machine") session.machine(ev.machine);
    else if (ev.kind === "cannot-build") session.cannotBuild(ev.machine, ev.error);
    else if (ev.kind === "msg") session.message(ev.level, ev.text);
    else session.line(ev.text);
  }
  if (e.finished) session.end();
  return events;
}

/* ---------- reading the spool ---------- */

function euid(): number {
  return typeof process.geteuid === "function" ? process.geteuid() : 0;
}

/** A bounded read of a regular file of ours that nobody else may write; never through a link. */
function readPrivate(path: string, limit: number): { data: Buffer; mtimeMs: number } | null {
  const r = readOwnFile(path, limit, (st) => st.uid === euid() && (st.mode & 0o022) === 0);
  return r === null ? null : { data: r.data, mtimeMs: r.stat.mtimeMs };
}

let bootMs: number | null = null;
/** Whether the hook process `pid`, started at `startMs`, is still running (same pid namespace). */
export function hookAlive(pid: number, startMs: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "latin1");
  } catch {
    return false;
  }
  try {
    if (bootMs === null) {
      const m = /^btime (\d+)$/m.exec(readFileSync("/proc/stat", "latin1"));
      bootMs = m ? Number(m[1]) * 1000 : 0;
    }
    // Field 22 (starttime, in clock ticks of 1/100 s after boot); fields counted after the comm's ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const started = bootMs + Number(fields[19]) * 10;
    // A pid taken again by another process is a different start: that hook has ended.
    return Math.abs(started - startMs) < 3000;
  } catch {
    return true;
  }
}

/** The spool directory's pairs (at most `limit`), read; null when the directory is missing or untrusted. */
export function readSpool(spool: string, limit = 4096): SpoolEntry[] | null {
  if (untrustedDir(spool) !== null) return null;
  let names: string[];
  try {
    names = readdirSync(spool);
  } catch {
    return null;
  }
  const out: SpoolEntry[] = [];
  for (const f of names.sort()) {
    if (!f.endsWith(".err") || out.length >= limit) continue;
    const name = f.slice(0, -4);
    const id = parseSpoolName(name);
    if (!id) continue;
    const err = readPrivate(join(spool, f), SPOOL_FILE_MAX);
    const input = readPrivate(join(spool, `${name}.in`), SPOOL_FILE_MAX);
    if (!err || !input) continue;
    out.push({
      name,
      ...id,
      input: input.data,
      err: err.data,
      inMtimeMs: input.mtimeMs,
      errMtimeMs: err.mtimeMs,
      finished: !hookAlive(id.pid, id.startMs),
    });
  }
  return out;
}

/** The events of every pair waiting in the spool (finished or not); never throws. */
export function readSpoolEvents(spool: string): BuildEvent[] {
  try {
    return (readSpool(spool) ?? []).flatMap(spoolEvents);
  } catch {
    return [];
  }
}

/* ---------- the collector ---------- */

const LOCK = ".collect.lock";

/** Take the collector's lock (a file created exclusively, with our pid); a dead holder's lock is taken over. */
function lock(spool: string): boolean {
  const path = join(spool, LOCK);
  for (let i = 0; i < 2; i++) {
    try {
      const fd = openSync(
        path,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        0o600,
      );
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") return false;
      const held = readPrivate(path, 32);
      const pid = held ? Number(held.data.toString()) : Number.NaN;
      let alive = false;
      if (Number.isInteger(pid) && pid > 0) {
        try {
          process.kill(pid, 0);
          alive = true;
        } catch {
          alive = false;
        }
      }
      if (alive) return false;
      try {
        unlinkSync(path);
      } catch {
        return false;
      }
    }
  }
  return false;
}

export interface CollectResult {
  /** Pairs of ended hooks moved into builds.jsonl (and deleted). */
  collected: number;
  /** Pairs of hooks still running (left in place). */
  running: number;
  /** Pairs whose records could not be written (left in place, still read from the spool). */
  failed: number;
  /** Another collector holds the lock, or the spool is missing or untrusted. */
  skipped: boolean;
}

/**
 * Move the records of every ended hook from the spool into builds.jsonl, then delete its pair. Under a
 * lock (one collector at a time); a pair is deleted only after its records were written, so a full or
 * read-only state directory keeps them readable from the spool (the wrapper stops spooling at its cap).
 */
export function collectSpool(spool: string, state: string, maxBytes = DEFAULT_MAX_BYTES): CollectResult {
  const res: CollectResult = { collected: 0, running: 0, failed: 0, skipped: false };
  if (untrustedDir(spool) !== null || !lock(spool)) return { ...res, skipped: true };
  try {
    const entries = readSpool(spool) ?? [];
    for (const e of entries) {
      if (!e.finished) {
        res.running++;
        continue;
      }
      if (!appendEventsSync(state, spoolEvents(e), maxBytes)) {
        res.failed++;
        continue;
      }
      for (const ext of [".in", ".err"])
        try {
          unlinkSync(join(spool, e.name + ext));
        } catch {
          // gone already
        }
      res.collected++;
    }
    // A `.in` without its `.err` (the wrapper could create only one) of a hook that has ended.
    try {
      for (const f of readdirSync(spool)) {
        if (!f.endsWith(".in")) continue;
        const id = parseSpoolName(f.slice(0, -3));
        if (!id || hookAlive(id.pid, id.startMs)) continue;
        try {
          lstatSync(join(spool, `${f.slice(0, -3)}.err`));
        } catch {
          unlinkSync(join(spool, f));
        }
      }
    } catch {
      // best effort
    }
  } finally {
    try {
      unlinkSync(join(spool, LOCK));
    } catch {
      // gone
    }
  }
  return res;
}

/* ---------- signals for watch ---------- */

/**
 * Write one signal file (`{builder, at, reason}`, the format `src/app/watch/signals.ts` takes) for every
 * `cannot build on` in the spool pairs written to in the last `windowMs` that `seen` does not hold yet.
 * At most MAX_SIGNALS files wait in `dir`. Never throws. Returns the number written.
 */
export function spoolSignals(
  spool: string,
  dir: string,
  seen: Set<string>,
  now = Date.now(),
  windowMs = 30_000,
): number {
  let written = 0;
  try {
    if (untrustedDir(spool) !== null) return 0;
    const present = new Set<string>();
    for (const f of readdirSync(spool)) {
      if (!f.endsWith(".err") || !parseSpoolName(f.slice(0, -4))) continue;
      const path = join(spool, f);
      let mtime: number;
      try {
        mtime = lstatSync(path).mtimeMs;
      } catch {
        continue;
      }
      present.add(f);
      if (now - mtime > windowMs) continue;
      const r = readPrivate(path, SPOOL_FILE_MAX);
      if (!r) continue;
      let k = 0;
      for (const ev of new ReplyDecoder().push(r.data)) {
        if (ev.kind !== "cannot-build") continue;
        const key = `${f}#${k++}`;
        if (seen.has(key)) continue;
        seen.add(key);
        if (
          writeSignal(dir, `${Math.round(r.mtimeMs)}-${f.slice(0, -4)}-${k}`, {
            builder: ev.machine,
            at: Math.round(r.mtimeMs),
            reason: `cannot build on '${ev.machine}': ${ev.error}`,
          })
        )
          written++;
      }
    }
    for (const key of seen) if (!present.has(key.slice(0, key.indexOf("#")))) seen.delete(key);
  } catch {
    // signals are best effort
  }
  return written;
}

function writeSignal(dir: string, name: string, v: { builder: string; at: number; reason: string }): boolean {
  try {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch {
      // there already (checked below)
    }
    if (untrustedDir(dir) !== null) return false;
    if (readdirSync(dir).length >= MAX_SIGNALS) return false;
    const tmp = join(dir, `.${name}.tmp`);
    const fd = openSync(
      tmp,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
    try {
      writeSync(fd, `${JSON.stringify({ ...v, reason: stripAnsi(v.reason).slice(0, 500) })}\n`);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, join(dir, `${name}.json`));
    return true;
  } catch {
    return false;
  }
}
