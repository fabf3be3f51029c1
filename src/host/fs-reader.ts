/**
 * The real {@link FileReader}s, with Nix's semantics (`read` follows symlinks like open(2); `exists` is an
 * lstat: a dangling symlink exists, ENOENT and ENOTDIR mean "absent") and bounded input:
 *
 * - only regular files are read (and `/dev/null`, which reads as empty, as Nix reads it). A FIFO, a device,
 *   a socket is answered with `ENOTREG` and what it is, without reading it: Nix blocks forever on a FIFO
 *   and reads `/dev/zero` until it runs out of memory; we must do neither. A directory is `EISDIR`, the
 *   error Nix gets from read(2).
 * - the file is stat'ed before it is opened (so no device is ever opened), then opened with
 *   O_NONBLOCK|O_NOCTTY, fstat'ed again (a swap in between is caught), and read up to {@link READ_LIMIT}:
 *   a bigger file is `EFBIG` and is not read. An out-of-memory abort is impossible by construction.
 *
 * {@link readerFor} gives the reader for one identity: reading as ourselves is done in this process;
 * reading as another user (when we are root) goes through ONE helper process per identity, started with
 * `setpriv` as that user (see run-as.ts) on the first read and kept for the rest of the run. It answers
 * every request with that user's credentials, so we see exactly what Nix running as that user sees
 * (a root-only file is `EACCES`, never its content). Every request has a deadline; a helper that misses
 * it is killed and every later read for that identity answers `ETIMEDOUT`.
 *
 * The helper protocol is one JSON line per request and per answer, over two FIFOs made in a private
 * mkdtemp directory (removed at once) so that this process can wait for an answer synchronously (the
 * nix.conf engine is synchronous) with a deadline.
 */

import type { ChildProcess } from "node:child_process";
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  mkdtempSync,
  openSync,
  readSync,
  realpathSync,
  rmSync,
  type Stats,
  statSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ExistsResult, ReadResult } from "../nix/conf.js";
import { childProcess } from "../os/lazy.js";
import { errCode, READ_LIMIT, readBounded } from "../os/read.js";
import { killGroup, type RunAsIdentity, runAsArgv, serviceEnv } from "./run-as.js";

/**
 * A helper exits after this long without a request (so that no process of the user outlives the command
 * by much, even in a long-lived process); the channel starts a new one after half of it.
 */
const HELPER_IDLE_MS = 10_000;

/** Deadline of one read as another user (ms). */
export const READ_TIMEOUT_MS = 10_000;

/** Facts about a path as one identity sees them, and the reader that answers them: the core's types. */
export type { IdentityReader, PathFacts } from "../nix/snapshot.js";

import type { IdentityReader, PathFacts } from "../nix/snapshot.js";

export { type NotRegularKind, READ_LIMIT, readBounded } from "../os/read.js";

// ---------------------------------------------------------------------------------------------------------
// The bounded read itself (src/os/read.ts). Written twice: in TypeScript for this process and in plain JavaScript for the
// helper (which must run from `node -e` as a user who may not be able to read our installed files). The
// unit test runs both over the same fixtures.

/** Nix's pathExists (lstat). */
export function existsLstat(path: string): ExistsResult {
  try {
    lstatSync(path);
    return { ok: true, exists: true };
  } catch (e) {
    const code = errCode(e);
    if (code === "ENOENT" || code === "ENOTDIR") return { ok: true, exists: false };
    return { ok: false, code };
  }
}

/** {@link PathFacts} as this process. */
export function pathFacts(path: string): PathFacts {
  let st: Stats;
  try {
    st = statSync(path);
  } catch (e) {
    return {
      exists: false,
      statError: errCode(e),
      isFile: null,
      mode: null,
      ownerUid: null,
      real: null,
      readable: null,
    };
  }
  let real: string | null = null;
  try {
    real = realpathSync(path);
  } catch {
    real = null;
  }
  const isFile = st.isFile();
  let readable: boolean | null = null;
  if (isFile || st.isDirectory()) {
    try {
      closeSync(openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY));
      readable = true;
    } catch {
      readable = false;
    }
  }
  return { exists: true, isFile, mode: Number(st.mode) & 0o7777, ownerUid: Number(st.uid), real, readable };
}

/** The reader of this process (root reading its own files, or a user reading as themself). */
export const nodeFileReader: IdentityReader = {
  who: "this process",
  read: (path) => readBounded(path),
  exists: (path) => existsLstat(path),
  facts: (path) => pathFacts(path),
};

// ---------------------------------------------------------------------------------------------------------
// The helper, run as another user.

/** The helper program (plain JavaScript for `node -e`): the same algorithm as above, one JSON line each. */
export const HELPER_SOURCE = `"use strict";
const fs = require("fs");
const C = fs.constants;
const LIMIT = ${READ_LIMIT};
const sab = new Int32Array(new SharedArrayBuffer(4));
const sleep = (ms) => Atomics.wait(sab, 0, 0, ms);
let nullRdev = -1;
try { const s = fs.statSync("/dev/null"); if (s.isCharacterDevice()) nullRdev = s.rdev; } catch {}
const code = (e) => (e && typeof e.code === "string" ? e.code : "EIO");
function kind(st) {
  if (st.isFIFO()) return "a FIFO";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  if (st.isSocket()) return "a socket";
  return "not a file";
}
// src/nix/bytes.ts decodeBytes: UTF-8, and each byte outside a valid sequence as U+DC00 + byte
function seqLen(b, i) {
  const b0 = b[i];
  if (b0 < 0x80) return 1;
  const b1 = i + 1 < b.length ? b[i + 1] : -1;
  if (b0 >= 0xc2 && b0 <= 0xdf) return b1 >= 0x80 && b1 <= 0xbf ? 2 : 0;
  const lo = b0 === 0xe0 ? 0xa0 : b0 === 0xf0 ? 0x90 : 0x80;
  const hi = b0 === 0xed ? 0x9f : b0 === 0xf4 ? 0x8f : 0xbf;
  if (b1 < lo || b1 > hi) return 0;
  const b2 = i + 2 < b.length ? b[i + 2] : -1;
  if (b2 < 0x80 || b2 > 0xbf) return 0;
  if (b0 >= 0xe0 && b0 <= 0xef) return 3;
  if (b0 < 0xf0 || b0 > 0xf4) return 0;
  const b3 = i + 3 < b.length ? b[i + 3] : -1;
  return b3 >= 0x80 && b3 <= 0xbf ? 4 : 0;
}
function decode(b) {
  if (require("buffer").isUtf8(b)) return b.toString("utf8");
  const parts = [];
  let esc = [];
  const flush = () => { if (esc.length) parts.push(String.fromCharCode.apply(null, esc)); esc = []; };
  let i = 0, run = 0;
  while (i < b.length) {
    const n = seqLen(b, i);
    if (n > 0) { i += n; continue; }
    if (run < i) { flush(); parts.push(b.toString("utf8", run, i)); }
    esc.push(0xdc00 + b[i]);
    if (esc.length === 8192) flush();
    i++;
    run = i;
  }
  flush();
  if (run < b.length) parts.push(b.toString("utf8", run, b.length));
  return parts.join("");
}
function read(p) {
  let st;
  try { st = fs.statSync(p); } catch (e) { return { ok: false, code: code(e) }; }
  if (st.isDirectory()) return { ok: false, code: "EISDIR" };
  if (!st.isFile()) {
    if (st.isCharacterDevice() && st.rdev === nullRdev) return { ok: true, text: "" };
    return { ok: false, code: "ENOTREG", detail: kind(st) };
  }
  if (st.size > LIMIT) return { ok: false, code: "EFBIG" };
  let fd;
  try { fd = fs.openSync(p, C.O_RDONLY | C.O_NONBLOCK | C.O_NOCTTY); } catch (e) { return { ok: false, code: code(e) }; }
  try {
    const st2 = fs.fstatSync(fd);
    if (st2.isDirectory()) return { ok: false, code: "EISDIR" };
    if (!st2.isFile()) return { ok: false, code: "ENOTREG", detail: kind(st2) };
    const chunks = [];
    let total = 0;
    for (;;) {
      const buf = Buffer.alloc(Math.min(65536, LIMIT + 1 - total));
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      chunks.push(buf.subarray(0, n));
      total += n;
      if (total > LIMIT) return { ok: false, code: "EFBIG" };
    }
    return { ok: true, text: decode(Buffer.concat(chunks)) };
  } catch (e) { return { ok: false, code: code(e) }; }
  finally { fs.closeSync(fd); }
}
function exists(p) {
  try { fs.lstatSync(p); return { ok: true, exists: true }; }
  catch (e) { const c = code(e); return c === "ENOENT" || c === "ENOTDIR" ? { ok: true, exists: false } : { ok: false, code: c }; }
}
function facts(p) {
  let st;
  try { st = fs.statSync(p); } catch (e) { return { exists: false, statError: code(e), isFile: null, mode: null, ownerUid: null, real: null, readable: null }; }
  let real = null;
  try { real = fs.realpathSync(p); } catch {}
  const isFile = st.isFile();
  let readable = null;
  if (isFile || st.isDirectory()) {
    try { fs.closeSync(fs.openSync(p, C.O_RDONLY | C.O_NONBLOCK | C.O_NOCTTY)); readable = true; } catch { readable = false; }
  }
  return { exists: true, isFile, mode: st.mode & 0o7777, ownerUid: st.uid, real, readable };
}
function send(obj) {
  const b = Buffer.from(JSON.stringify(obj) + "\\n");
  let off = 0;
  while (off < b.length) {
    try { off += fs.writeSync(1, b, off, b.length - off); }
    catch (e) { if (code(e) === "EAGAIN") { sleep(2); continue; } process.exit(1); }
  }
}
function handle(line) {
  let q;
  try { q = JSON.parse(line); } catch { send({ ok: false, code: "EINVAL" }); return; }
  const p = String(q.path);
  if (q.op === "read") send(read(p));
  else if (q.op === "exists") send(exists(p));
  else if (q.op === "facts") send(facts(p));
  else send({ ok: false, code: "EINVAL" });
}
const chunk = Buffer.alloc(65536);
let pending = Buffer.alloc(0);
let last = Date.now();
for (;;) {
  let n;
  try { n = fs.readSync(0, chunk, 0, chunk.length, null); }
  catch (e) {
    if (code(e) !== "EAGAIN") process.exit(0);
    if (Date.now() - last > ${HELPER_IDLE_MS}) process.exit(0);
    sleep(5);
    continue;
  }
  if (n === 0) process.exit(0);
  last = Date.now();
  pending = Buffer.concat([pending, chunk.subarray(0, n)]);
  let i;
  while ((i = pending.indexOf(10)) >= 0) {
    const line = pending.subarray(0, i).toString("utf8");
    pending = pending.subarray(i + 1);
    handle(line);
  }
}
`;

const sleepCell = new Int32Array(new SharedArrayBuffer(4));
function sleepMs(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}

/** Thrown inside {@link HelperChannel} when the helper missed its deadline or died. */
class ChannelDown {
  constructor(readonly code: "ETIMEDOUT" | "ECHILD") {}
}

/** One helper process running as `id`, spoken to synchronously. */
class HelperChannel {
  private child: ChildProcess | null = null;
  private reqFd = -1;
  private respFd = -1;
  private pending: Buffer = Buffer.alloc(0);
  private down: ChannelDown | null = null;
  /** How many helper processes were started (for tests: one per identity and run). */
  started = 0;

  constructor(
    private readonly id: RunAsIdentity,
    private readonly timeoutMs: number,
  ) {}

  private start(): void {
    const dir = mkdtempSync(join(tmpdir(), "nix-builders-reader-"));
    try {
      const st = lstatSync(dir);
      if (!st.isDirectory() || (st.mode & 0o077) !== 0 || st.uid !== process.getuid?.())
        throw new Error(`${dir}: not a private directory`);
      const req = join(dir, "req");
      const resp = join(dir, "resp");
      const mk = childProcess().spawnSync("mkfifo", ["-m", "600", req, resp], {
        timeout: 5000,
        stdio: "ignore",
      });
      if (mk.status !== 0) throw new Error("mkfifo failed");
      const respR = openSync(resp, constants.O_RDONLY | constants.O_NONBLOCK);
      const respW = openSync(resp, constants.O_WRONLY);
      const reqR = openSync(req, constants.O_RDONLY | constants.O_NONBLOCK);
      const reqW = openSync(req, constants.O_WRONLY);
      for (const fd of [respR, reqR]) {
        const s = fstatSync(fd);
        if (!s.isFIFO() || s.uid !== process.getuid?.()) throw new Error(`${dir}: not our FIFO`);
      }
      const argv = runAsArgv(this.id, [process.execPath, "--no-warnings", "-e", HELPER_SOURCE]);
      const child = childProcess().spawn(argv[0]!, argv.slice(1), {
        env: serviceEnv(this.id),
        cwd: "/",
        stdio: [reqR, respW, "ignore"],
        detached: true,
        shell: false,
      });
      child.on("error", () => {
        // reported as ECHILD on the next request
      });
      child.unref();
      closeSync(reqR);
      closeSync(respW);
      this.child = child;
      this.reqFd = reqW;
      this.respFd = respR;
      this.started++;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  /** When the last answer came (a helper idle for long has exited or is about to). */
  private lastUse = 0;

  /** Stop the helper: it reads end-of-file and exits (nothing is killed that is not ours). */
  close(): void {
    this.closeFds();
    this.pending = Buffer.alloc(0);
  }

  private kill(code: ChannelDown["code"]): ChannelDown {
    this.down = new ChannelDown(code);
    if (this.child) killGroup(this.child, "SIGKILL");
    this.closeFds();
    return this.down;
  }

  /** Close both FIFO ends and forget the child. */
  private closeFds(): void {
    for (const fd of [this.reqFd, this.respFd]) {
      try {
        if (fd >= 0) closeSync(fd);
      } catch {
        // already closed
      }
    }
    this.reqFd = this.respFd = -1;
    this.child = null;
  }

  /** One request, one answer; throws ChannelDown. */
  request(op: "read" | "exists" | "facts", path: string): unknown {
    if (this.down) throw this.down;
    if (this.child && Date.now() - this.lastUse > HELPER_IDLE_MS / 2) this.close();
    if (!this.child) this.start();
    const line = Buffer.from(`${JSON.stringify({ op, path })}\n`);
    try {
      let off = 0;
      while (off < line.length) off += writeSync(this.reqFd, line, off, line.length - off);
    } catch {
      throw this.kill("ECHILD");
    }
    const deadline = Date.now() + this.timeoutMs;
    const chunk = Buffer.alloc(65536);
    // the answer so far, as a list of pieces (concatenated once: a 16 MiB answer comes in 256 pieces)
    const parts: Buffer[] = [];
    let size = 0;
    let wait = 1;
    let fresh = this.pending;
    this.pending = Buffer.alloc(0);
    for (;;) {
      const nl = fresh.indexOf(10);
      if (nl >= 0) {
        parts.push(fresh.subarray(0, nl));
        this.pending = Buffer.from(fresh.subarray(nl + 1));
        this.lastUse = Date.now();
        return JSON.parse(Buffer.concat(parts).toString("utf8")) as unknown;
      }
      if (fresh.length > 0) parts.push(Buffer.from(fresh));
      size += fresh.length;
      // a runaway answer cannot grow without bound either (the helper caps contents at READ_LIMIT)
      if (size > READ_LIMIT * 8 + 4096) throw this.kill("ECHILD");
      let n: number;
      try {
        n = readSync(this.respFd, chunk, 0, chunk.length, null);
      } catch (e) {
        if (errCode(e) !== "EAGAIN") throw this.kill("ECHILD");
        if (Date.now() > deadline) throw this.kill("ETIMEDOUT");
        sleepMs(wait);
        wait = Math.min(wait * 2, 20);
        fresh = Buffer.alloc(0);
        continue;
      }
      if (n === 0) throw this.kill("ECHILD");
      wait = 1;
      fresh = chunk.subarray(0, n);
    }
  }
}

const downDetail: Record<ChannelDown["code"], string> = {
  ETIMEDOUT: "timed out",
  ECHILD: "the reading process failed",
};

/** A reader that reads as `id` through a helper process (we must be root). */
export function helperReader(
  id: RunAsIdentity,
  timeoutMs = READ_TIMEOUT_MS,
): IdentityReader & {
  readonly helpersStarted: number;
  /** Stop the helper (a later read starts another). */
  close(): void;
} {
  const ch = new HelperChannel(id, timeoutMs);
  const ask = <T>(op: "read" | "exists" | "facts", path: string, onDown: (c: ChannelDown) => T): T => {
    try {
      return ch.request(op, path) as T;
    } catch (e) {
      if (e instanceof ChannelDown) return onDown(e);
      return onDown(new ChannelDown("ECHILD"));
    }
  };
  return {
    who: id.name,
    get helpersStarted() {
      return ch.started;
    },
    close: () => ch.close(),
    read: (path) =>
      ask<ReadResult>("read", path, (d) => ({ ok: false, code: d.code, detail: downDetail[d.code] })),
    exists: (path) => ask<ExistsResult>("exists", path, (d) => ({ ok: false, code: d.code })),
    facts: (path) =>
      ask<PathFacts>("facts", path, (d) => ({
        exists: false,
        statError: d.code,
        isFile: null,
        mode: null,
        ownerUid: null,
        real: null,
        readable: null,
      })),
  };
}

const readers = new Map<number, ReturnType<typeof helperReader>>();

/**
 * Stop every helper {@link readerFor} started: at the end of a command, so that no process of the user
 * outlives it (a caller may delete the user next). A later read starts a new helper.
 */
export function closeReaders(): void {
  for (const r of readers.values()) r.close();
  readers.clear();
}

/**
 * The reader for files Nix reads as `id`: this process when that is us (or when we are not root and so
 * cannot become anyone else: the caller then reads as itself, as before), else one helper per identity
 * for the whole run.
 */
export function readerFor(id: RunAsIdentity): IdentityReader {
  const me = process.getuid?.() ?? -1;
  if (id.uid === me || me !== 0) return nodeFileReader;
  let r = readers.get(id.uid);
  if (!r) {
    r = helperReader(id);
    readers.set(id.uid, r);
  }
  return r;
}
