/**
 * Crash-safe replacement of small configuration files (nix.conf, machines files) for `use` / `reset`.
 *
 * Sequence, all under an exclusive lock on `<dir>/.nix-builders.lock`:
 *   1. refuse when the path is (or resolves through) a symlink into the Nix store: NixOS / nix-darwin own it;
 *   2. read the current file; identical bytes → nothing is touched (no backup, no rename, same mtime);
 *   3. back the old file up as `<file>.nix-builders.<ISO timestamp>.bak` via a hard link (the old inode itself:
 *      same bytes, owner, mode and mtime; falls back to a copy when linking is not possible);
 *   4. write a temp file in the same directory, fchown/fchmod it, fsync it, rename it over the target, and
 *      fsync the directory.
 * A crash at any point leaves the target either old or new, never partial or missing; leftover temp files
 * are removed by the next writer (it holds the lock, so nobody else can be writing them).
 *
 * The lock is a kernel flock(2) lock: we open the lock file and let util-linux's `flock -x FD` (Node has no
 * flock binding) take the lock on our open file description; it then belongs to our process and the kernel
 * drops it when we close the fd or die, kill -9 included. So a crashed holder can never block the next run.
 * The lock file is normally left in place; `releaseAndRemove` deletes it without the classic unlink race,
 * because every holder checks, once locked, that the path still names the file it locked (else it starts
 * over). It holds the pid of the last holder for error messages. A caller that serialises the writers of
 * a file itself (`use`/`reset`, under their record's lock) passes `unlocked`: no lock file in that directory.
 *
 * Root writing into a user's directory passes `opts.as` (that user): then every path-based step, the lock
 * file included, runs with the user's credentials (host/user-creds.ts), the new file is the user's, and
 * set-id bits are never written. `opts.noFollow` refuses a symlink at the target instead of following it.
 * A path we must not write (a symlink we do not follow, not a regular file) is an UnsafeFileError.
 */

import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { runProc } from "../os/proc.js";
import { type Creds, withUserCreds } from "./user-creds.js";

export const LOCK_NAME = ".nix-builders.lock";
const TMP_INFIX = ".nix-builders.tmp.";

export interface AtomicWriteOptions {
  /** Owner of the written file. Default: the current file's owner, else the current process. */
  readonly uid?: number;
  readonly gid?: number;
  /** Permission bits. Default: the current file's mode, else 0o644. */
  readonly mode?: number;
  /** Back up the previous content when it changes (default true). */
  readonly backup?: boolean;
  /** Store directory whose symlinks mark a managed file (default `/nix/store`). */
  readonly storeDir?: string;
  /** How long to wait for another nix-builders run (default 30 s); then a LockTimeoutError. */
  readonly lockTimeoutMs?: number;
  /** Clock for the backup name (tests). */
  readonly now?: () => Date;
  /** Do every path-based step with this user's credentials (root writing in a user's home). */
  readonly as?: Creds;
  /** Refuse a symlink at the target (default: follow symlinks owned by root or by us). */
  readonly noFollow?: boolean;
  /** Largest old file we read (default 16 MiB); a bigger one is an UnsafeFileError. */
  readonly maxBytes?: number;
  /**
   * The caller already serialises every writer of this file (use/reset hold their record's lock): take no
   * lock in the file's directory, so no lock file is left there.
   */
  readonly unlocked?: boolean;
  /** Give the written file this modification time, in ms since the epoch (reset puts the original's back). */
  readonly mtimeMs?: number;
}

export const MAX_FILE_BYTES = 16 * 1024 * 1024;

/** A path we refuse to write or read: `path` names it, the message is one line and starts with it. */
export class UnsafeFileError extends Error {
  readonly path: string;
  constructor(file: string, reason: string) {
    super(`${file}: ${reason}`);
    this.name = "UnsafeFileError";
    this.path = file;
  }
}

/** Run `fn` with `as`'s credentials when given (see user-creds.ts), else as we are. */
function creds<T>(as: Creds | undefined, fn: () => T): T {
  return as ? withUserCreds(as, fn) : fn();
}

export type AtomicWriteResult =
  | {
      readonly status: "written";
      /** The file actually written (symlinks outside the store are followed). */
      readonly path: string;
      readonly created: boolean;
      readonly backup: string | null;
    }
  | { readonly status: "unchanged"; readonly path: string; readonly metadataFixed: boolean }
  | {
      readonly status: "managed";
      readonly path: string;
      /** The symlink target inside the store (or the resolved store path). */
      readonly target: string;
    };

export class LockTimeoutError extends Error {
  readonly lockPath: string;
  readonly holderPid: number | null;
  constructor(lockPath: string, holderPid: number | null) {
    super(
      `another nix-builders run holds ${lockPath}${holderPid === null ? "" : ` (pid ${holderPid})`}; try again later`,
    );
    this.name = "LockTimeoutError";
    this.lockPath = lockPath;
    this.holderPid = holderPid;
  }
}

function isUnder(p: string, dir: string): boolean {
  const d = dir.endsWith("/") ? dir : `${dir}/`;
  return p === dir || p.startsWith(d);
}

/**
 * If `file` is a symlink into the store, directly or through a chain of symlinks (NixOS: /etc/nix/nix.conf
 * → /etc/static/nix/nix.conf → /nix/store/…), return the store target. Also when a parent directory
 * resolves into the store. Otherwise null.
 */
export function managedTarget(file: string, storeDir = "/nix/store"): string | null {
  let cur = path.resolve(file);
  for (let hops = 0; hops < 40; hops++) {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(cur);
    } catch {
      break;
    }
    if (!st.isSymbolicLink()) break;
    const next = path.resolve(path.dirname(cur), fs.readlinkSync(cur));
    if (isUnder(next, storeDir)) return next;
    cur = next;
  }
  try {
    const real = fs.realpathSync(file);
    if (isUnder(real, storeDir)) return real;
  } catch {
    try {
      const realDir = fs.realpathSync(path.dirname(path.resolve(file)));
      if (isUnder(realDir, storeDir)) return path.join(realDir, path.basename(file));
    } catch {
      // the directory does not exist; the write will fail later with a clear error
    }
  }
  return null;
}

/**
 * Where a write to `file` really lands: symlinks (outside the store) are followed, but only symlinks owned by
 * root or by us (root must not be steered by a symlink another user planted in a directory it writes to).
 * A dangling link is an error.
 */
function resolveTarget(file: string, noFollow = false): string {
  const me = process.geteuid?.() ?? 0;
  let cur = path.resolve(file);
  for (let hops = 0; ; hops++) {
    if (hops > 40) throw new UnsafeFileError(file, "too many levels of symbolic links");
    let st: fs.Stats;
    try {
      st = fs.lstatSync(cur);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") break; // a new file in that directory
      throw e;
    }
    if (!st.isSymbolicLink()) break;
    if (noFollow) throw new UnsafeFileError(cur, "is a symbolic link; refusing to write through it");
    if (st.uid !== 0 && st.uid !== me) {
      throw new UnsafeFileError(cur, `is a symlink owned by uid ${st.uid}; refusing to write through it`);
    }
    cur = path.resolve(path.dirname(cur), fs.readlinkSync(cur));
  }
  if (cur !== path.resolve(file) && !fs.existsSync(cur)) {
    throw new UnsafeFileError(file, `is a dangling symlink (to ${cur}); refusing to write through it`);
  }
  return path.join(fs.realpathSync(path.dirname(cur)), path.basename(cur));
}

// ---------------------------------------------------------------------------------------------------------
// Locking

export interface HeldLock {
  readonly path: string;
  release(): void;
  /**
   * Unlink the lock file, then release. Safe because every holder checks, once locked, that the path
   * still names the file it locked (else it locks again): a waiter on the unlinked file starts over.
   */
  releaseAndRemove(): void;
}

async function runFlock(fd: number, timeoutMs: number): Promise<"locked" | "timeout"> {
  const secs = Math.max(0, timeoutMs / 1000).toFixed(3);
  // fd 3 in the child is our open file description; the lock stays with it after flock exits. flock's
  // own --timeout ends the wait; the helper's deadline (5 s later) is the backstop.
  const r = await runProc(["flock", "--exclusive", "--conflict-exit-code", "75", "--timeout", secs, "3"], {
    env: process.env,
    cwd: process.cwd(),
    deadlineMs: timeoutMs + 5000,
    extraFds: [fd],
    maxOutputBytes: 4096,
  });
  if (r.spawnError) throw new Error(`cannot run flock (util-linux): ${r.spawnError.message}`);
  if (r.code === 0) return "locked";
  if (r.code === 75 || r.timedOut) return "timeout";
  throw new Error(`flock failed (exit ${r.code}): ${r.stderr.trim()}`);
}

/**
 * Take the exclusive lock of directory `dir`. Released by `release()` or by process death. With `as`, the
 * lock file is opened (and created) with that user's credentials; flock(2) itself needs no rights.
 */
export async function acquireLock(dir: string, timeoutMs = 30_000, as?: Creds): Promise<HeldLock> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const held = await lockOnce(dir, Math.max(0, deadline - Date.now()), as);
    if (held !== null) return held;
  }
}

/** One attempt: the held lock, or null when the lock file was removed while we waited (try again). */
async function lockOnce(dir: string, timeoutMs: number, as?: Creds): Promise<HeldLock | null> {
  const lockPath = path.join(dir, LOCK_NAME);
  // O_NOFOLLOW: never let a planted symlink make us truncate some other file. Read-only is enough for
  // flock(2), so a lock file created by another user (e.g. root, in the agent's home) still works.
  const flags = fs.constants.O_CREAT | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;
  let writable = true;
  const fd = creds(as, () => {
    let f: number;
    try {
      f = fs.openSync(lockPath, flags | fs.constants.O_RDWR, 0o644);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ELOOP")
        throw new UnsafeFileError(
          lockPath,
          "is a symbolic link; lock files are never reached through symbolic links",
        );
      if (code !== "EACCES") throw e;
      f = fs.openSync(lockPath, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
      writable = false;
    }
    if (!fs.fstatSync(f).isFile()) {
      fs.closeSync(f);
      throw new UnsafeFileError(lockPath, "is not a regular file");
    }
    return f;
  });
  try {
    const r = await runFlock(fd, timeoutMs);
    if (r === "timeout") {
      let holder: number | null = null;
      try {
        const n = Number.parseInt(fs.readFileSync(lockPath, "utf8"), 10);
        holder = Number.isFinite(n) ? n : null;
      } catch {
        // unreadable: no pid to report
      }
      throw new LockTimeoutError(lockPath, holder);
    }
    // The holder before us may have removed the lock file (releaseAndRemove): then ours is stale.
    const mine = fs.fstatSync(fd);
    const now = creds(as, () => {
      try {
        return fs.lstatSync(lockPath);
      } catch {
        return null;
      }
    });
    if (now === null || now.ino !== mine.ino || now.dev !== mine.dev) {
      fs.closeSync(fd);
      return null;
    }
    if (writable) {
      fs.ftruncateSync(fd, 0);
      fs.writeSync(fd, `${process.pid}\n`, 0);
    }
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    fs.closeSync(fd); // closing the last reference drops the flock
  };
  return {
    path: lockPath,
    release,
    releaseAndRemove() {
      if (!released) creds(as, () => fs.rmSync(lockPath, { force: true }));
      release();
    },
  };
}

/** Run `fn` while holding the lock of `dir`. */
export async function withLock<T>(
  dir: string,
  fn: () => Promise<T> | T,
  timeoutMs?: number,
  as?: Creds,
): Promise<T> {
  const lock = await acquireLock(dir, timeoutMs, as);
  try {
    return await fn();
  } finally {
    lock.release();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Writing

/** fsync a directory (after a rename or unlink in it), so the change survives a crash. */
export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** `<file>.nix-builders.<ISO timestamp>.bak`, made unique with `-N` if needed. */
export function backupName(file: string, when: Date): string {
  return `${file}.nix-builders.${when.toISOString()}.bak`;
}

function uniqueBackupPath(file: string, when: Date): string {
  const base = backupName(file, when);
  if (!fs.existsSync(base)) return base;
  for (let i = 1; ; i++) {
    const p = base.replace(/\.bak$/, `-${i}.bak`);
    if (!fs.existsSync(p)) return p;
  }
}

function makeBackup(file: string, st: fs.Stats, bytes: Buffer, when: Date): string {
  const dest = uniqueBackupPath(file, when);
  try {
    fs.linkSync(file, dest); // the old inode: bytes, owner, mode and mtime preserved exactly
    const b = fs.lstatSync(dest);
    if (b.ino === st.ino && b.dev === st.dev) return dest;
    fs.unlinkSync(dest); // the path changed under us: fall back to the bytes we read
  } catch {
    // e.g. a file system without hard links: write a copy, then restore owner, mode and times
  }
  const tmp = path.join(
    path.dirname(file),
    `.${path.basename(dest)}${TMP_INFIX}${randomBytes(4).toString("hex")}`,
  );
  const fd = fs.openSync(tmp, "wx", 0o600);
  try {
    let off = 0;
    while (off < bytes.length) off += fs.writeSync(fd, bytes, off, bytes.length - off);
    fs.fchownSync(fd, st.uid, st.gid);
    fs.fchmodSync(fd, st.mode & 0o7777);
    fs.futimesSync(fd, st.atime, st.mtime);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, dest);
  return dest;
}

function removeStaleTemps(dir: string, base: string): void {
  const prefix = `.${base}${TMP_INFIX}`;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    if (n.startsWith(prefix) || (n.startsWith(`.${base}.nix-builders.`) && n.includes(TMP_INFIX))) {
      try {
        fs.unlinkSync(path.join(dir, n));
      } catch {
        // gone already
      }
    }
  }
}

/**
 * Atomically replace `file` with `content`. See the module comment for the guarantees.
 * Throws LockTimeoutError when another run holds the lock for too long, UnsafeFileError for a path we must
 * not write, and ordinary errors for I/O failures (e.g. EPERM when chown is not allowed).
 */
export async function atomicWrite(
  file: string,
  content: string | Uint8Array,
  opts: AtomicWriteOptions = {},
): Promise<AtomicWriteResult> {
  const storeDir = opts.storeDir ?? "/nix/store";
  const managed = creds(opts.as, () => managedTarget(file, storeDir));
  if (managed !== null) return { status: "managed", path: file, target: managed };

  const target = creds(opts.as, () => resolveTarget(file, opts.noFollow));
  const dir = path.dirname(target);
  const base = path.basename(target);
  const data = typeof content === "string" ? Buffer.from(content, "utf8") : Buffer.from(content);

  const locked = <T>(fn: () => T): Promise<T> =>
    opts.unlocked ? Promise.resolve().then(fn) : withLock(dir, fn, opts.lockTimeoutMs, opts.as);
  return locked(() =>
    creds(opts.as, () => {
      removeStaleTemps(dir, base);
      const old = openOld(target, opts.maxBytes ?? MAX_FILE_BYTES);
      if (old && opts.as && old.st.uid !== opts.as.uid) {
        fs.closeSync(old.fd);
        throw new UnsafeFileError(
          target,
          `owned by uid ${old.st.uid}, not by ${opts.as.name}; a file's owner is never changed`,
        );
      }
      try {
        return writeLocked(target, dir, base, data, old, opts);
      } finally {
        if (old) fs.closeSync(old.fd);
      }
    }),
  );
}

/**
 * The current file at `target`, opened O_NOFOLLOW (the file we compare, back up and fix up is the one we
 * resolved, not a swapped-in symlink), or null when there is none. Bounded: at most `maxBytes`.
 */
function openOld(target: string, maxBytes: number): { st: fs.Stats; bytes: Buffer; fd: number } | null {
  let fd: number;
  try {
    fd = fs.openSync(target, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return null;
    if (code === "ELOOP") throw new UnsafeFileError(target, "became a symlink; refusing to write through it");
    if (code === "EISDIR") throw new UnsafeFileError(target, "is not a regular file");
    throw e;
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new UnsafeFileError(target, "is not a regular file");
    if (st.size > maxBytes) throw new UnsafeFileError(target, `is larger than ${maxBytes} bytes`);
    const bytes = readAll(fd, maxBytes);
    if (bytes === null) throw new UnsafeFileError(target, `is larger than ${maxBytes} bytes`);
    return { st, bytes, fd };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** Read an open regular file to its end; null when it holds more than `max` bytes. */
export function readAll(fd: number, max: number): Buffer | null {
  const chunks: Buffer[] = [];
  let total = 0;
  for (;;) {
    const buf = Buffer.alloc(Math.min(64 * 1024, max + 1 - total));
    const n = fs.readSync(fd, buf, 0, buf.length, null);
    if (n === 0) break;
    total += n;
    chunks.push(buf.subarray(0, n));
    if (total > max) return null;
  }
  return Buffer.concat(chunks);
}

function writeLocked(
  target: string,
  dir: string,
  base: string,
  data: Buffer,
  old: { st: fs.Stats; bytes: Buffer; fd: number } | null,
  opts: AtomicWriteOptions,
): AtomicWriteResult {
  // As a user: the file is theirs (it cannot be anyone else's), and never set-id.
  const uid = opts.as ? opts.as.uid : (opts.uid ?? old?.st.uid ?? process.getuid?.() ?? 0);
  const gid = opts.gid ?? old?.st.gid ?? (opts.as ? opts.as.gid : (process.getgid?.() ?? 0));
  const mode = (opts.mode ?? (old ? old.st.mode & 0o7777 : 0o644)) & (opts.as ? 0o777 : 0o7777);

  if (old?.bytes.equals(data)) {
    let metadataFixed = false;
    if (old.st.uid !== uid || old.st.gid !== gid)
      metadataFixed = chownFd(old.fd, uid, gid, opts) || metadataFixed;
    if ((old.st.mode & 0o7777) !== mode) {
      fs.fchmodSync(old.fd, mode);
      metadataFixed = true;
    }
    if (opts.mtimeMs !== undefined && Math.abs(old.st.mtimeMs - opts.mtimeMs) >= 0.001) {
      fs.futimesSync(old.fd, old.st.atime, opts.mtimeMs / 1000);
      metadataFixed = true;
    }
    return { status: "unchanged", path: target, metadataFixed } as const;
  }

  const backup =
    old && opts.backup !== false
      ? makeBackup(target, old.st, old.bytes, (opts.now ?? (() => new Date()))())
      : null;

  const tmp = path.join(dir, `.${base}${TMP_INFIX}${process.pid}.${randomBytes(4).toString("hex")}`);
  const fd = fs.openSync(tmp, "wx", 0o600);
  try {
    let off = 0;
    while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
    chownFd(fd, uid, gid, opts);
    fs.fchmodSync(fd, mode); // after chown: chown may clear setuid/setgid bits
    if (opts.mtimeMs !== undefined) fs.futimesSync(fd, new Date(), opts.mtimeMs / 1000);
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  try {
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDir(dir);
  return { status: "written", path: target, created: old === null, backup } as const;
}

/**
 * fchown; as a user (`opts.as`) only the group can change, and only to one of the user's groups: when the
 * kernel says no, the file keeps the user's primary group (returns false).
 */
function chownFd(fd: number, uid: number, gid: number, opts: AtomicWriteOptions): boolean {
  if (!opts.as) {
    fs.fchownSync(fd, uid, gid);
    return true;
  }
  const st = fs.fstatSync(fd);
  if (st.gid === gid) return false;
  try {
    fs.fchownSync(fd, -1, gid);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EPERM") return false;
    throw e;
  }
}

/**
 * Move `file` aside to a fresh `<file>.nix-builders.<ISO time>.bak` (a rename: atomic, the bytes, owner and
 * mode stay as they were), under the directory's lock. Returns the backup path, or null when there is no
 * file. Refuses a symlink or anything but a regular file. With `remove`, the file is unlinked instead (the
 * caller knows its bytes are kept elsewhere) and the file's own path is returned.
 */
export async function moveAside(
  file: string,
  opts: Pick<AtomicWriteOptions, "as" | "lockTimeoutMs" | "now" | "unlocked"> & { remove?: boolean } = {},
): Promise<string | null> {
  const dir = path.dirname(file);
  const locked = <T>(fn: () => T): Promise<T> =>
    opts.unlocked ? Promise.resolve().then(fn) : withLock(dir, fn, opts.lockTimeoutMs, opts.as);
  return locked(() =>
    creds(opts.as, () => {
      let st: fs.Stats;
      try {
        st = fs.lstatSync(file);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
        throw e;
      }
      if (st.isSymbolicLink()) throw new UnsafeFileError(file, "is a symbolic link; refusing to move it");
      if (!st.isFile()) throw new UnsafeFileError(file, "is not a regular file");
      if (opts.as && st.uid !== opts.as.uid)
        throw new UnsafeFileError(
          file,
          `owned by uid ${st.uid}, not by ${opts.as.name}; refusing to move it`,
        );
      if (opts.remove) {
        fs.unlinkSync(file);
        fsyncDir(dir);
        return file;
      }
      const dest = uniqueBackupPath(file, (opts.now ?? (() => new Date()))());
      fs.renameSync(file, dest);
      fsyncDir(dir);
      return dest;
    }),
  );
}
