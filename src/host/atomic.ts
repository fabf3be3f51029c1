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
 * The lock file is left in place on purpose (deleting it would reintroduce the classic unlink race); it
 * holds the pid of the last holder for error messages.
 */

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";

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
function resolveTarget(file: string): string {
  const me = process.getuid?.() ?? 0;
  let cur = path.resolve(file);
  for (let hops = 0; ; hops++) {
    if (hops > 40) throw new Error(`${file}: too many levels of symbolic links`);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(cur);
    } catch {
      break; // does not exist (yet): a new file in that directory
    }
    if (!st.isSymbolicLink()) break;
    if (st.uid !== 0 && st.uid !== me) {
      throw new Error(`${cur} is a symlink owned by uid ${st.uid}; refusing to write through it`);
    }
    cur = path.resolve(path.dirname(cur), fs.readlinkSync(cur));
  }
  if (cur !== path.resolve(file) && !fs.existsSync(cur)) {
    throw new Error(`${file} is a dangling symlink (to ${cur}); refusing to write through it`);
  }
  return path.join(fs.realpathSync(path.dirname(cur)), path.basename(cur));
}

// ---------------------------------------------------------------------------------------------------------
// Locking

export interface HeldLock {
  readonly path: string;
  release(): void;
}

function runFlock(fd: number, timeoutMs: number): Promise<"locked" | "timeout"> {
  return new Promise((resolve, reject) => {
    const secs = Math.max(0, timeoutMs / 1000).toFixed(3);
    // fd 3 in the child is our open file description; the lock stays with it after flock exits.
    const child = spawn("flock", ["--exclusive", "--conflict-exit-code", "75", "--timeout", secs, "3"], {
      stdio: ["ignore", "ignore", "pipe", fd],
      shell: false,
    });
    let err = "";
    child.stderr?.on("data", (b: Buffer) => {
      err += b.toString();
    });
    child.on("error", (e) => reject(new Error(`cannot run flock (util-linux): ${e.message}`)));
    child.on("close", (code) => {
      if (code === 0) resolve("locked");
      else if (code === 75) resolve("timeout");
      else reject(new Error(`flock failed (exit ${code}): ${err.trim()}`));
    });
  });
}

/** Take the exclusive lock of directory `dir`. Released by `release()` or by process death. */
export async function acquireLock(dir: string, timeoutMs = 30_000): Promise<HeldLock> {
  const lockPath = path.join(dir, LOCK_NAME);
  // O_NOFOLLOW: never let a planted symlink make us truncate some other file. Read-only is enough for
  // flock(2), so a lock file created by another user (e.g. root, in the agent's home) still works.
  const flags = fs.constants.O_CREAT | fs.constants.O_NOFOLLOW;
  let fd: number;
  let writable = true;
  try {
    fd = fs.openSync(lockPath, flags | fs.constants.O_RDWR, 0o644);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EACCES") throw e;
    fd = fs.openSync(lockPath, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    writable = false;
  }
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
    if (writable) {
      fs.ftruncateSync(fd, 0);
      fs.writeSync(fd, `${process.pid}\n`, 0);
    }
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  let released = false;
  return {
    path: lockPath,
    release() {
      if (released) return;
      released = true;
      fs.closeSync(fd); // closing the last reference drops the flock
    },
  };
}

/** Run `fn` while holding the lock of `dir`. */
export async function withLock<T>(dir: string, fn: () => Promise<T> | T, timeoutMs?: number): Promise<T> {
  const lock = await acquireLock(dir, timeoutMs);
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
 * Throws LockTimeoutError when another run holds the lock for too long, and ordinary errors for I/O failures
 * (e.g. EPERM when chown is not allowed).
 */
export async function atomicWrite(
  file: string,
  content: string | Uint8Array,
  opts: AtomicWriteOptions = {},
): Promise<AtomicWriteResult> {
  const storeDir = opts.storeDir ?? "/nix/store";
  const managed = managedTarget(file, storeDir);
  if (managed !== null) return { status: "managed", path: file, target: managed };

  const target = resolveTarget(file);
  const dir = path.dirname(target);
  const base = path.basename(target);
  const data = typeof content === "string" ? Buffer.from(content, "utf8") : Buffer.from(content);

  return withLock(
    dir,
    () => {
      removeStaleTemps(dir, base);

      // O_NOFOLLOW: the file we compare, back up and fix up is the one we resolved, not a swapped-in symlink.
      let old: { st: fs.Stats; bytes: Buffer; fd: number } | null = null;
      try {
        const fd = fs.openSync(
          target,
          fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK,
        );
        const st = fs.fstatSync(fd);
        if (!st.isFile()) {
          fs.closeSync(fd);
          throw new Error(`${target} is not a regular file`);
        }
        old = { st, bytes: fs.readFileSync(fd), fd };
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "ELOOP") throw new Error(`${target} became a symlink; refusing to write through it`);
        if (code === "EISDIR") throw new Error(`${target} is not a regular file`);
        if (code !== "ENOENT") throw e;
      }
      try {
        return writeLocked(target, dir, base, data, old, opts);
      } finally {
        if (old) fs.closeSync(old.fd);
      }
    },
    opts.lockTimeoutMs,
  );
}

function writeLocked(
  target: string,
  dir: string,
  base: string,
  data: Buffer,
  old: { st: fs.Stats; bytes: Buffer; fd: number } | null,
  opts: AtomicWriteOptions,
): AtomicWriteResult {
  const uid = opts.uid ?? old?.st.uid ?? process.getuid?.() ?? 0;
  const gid = opts.gid ?? old?.st.gid ?? process.getgid?.() ?? 0;
  const mode = (opts.mode ?? (old ? old.st.mode & 0o7777 : 0o644)) & 0o7777;

  if (old?.bytes.equals(data)) {
    let metadataFixed = false;
    if (old.st.uid !== uid || old.st.gid !== gid) {
      fs.fchownSync(old.fd, uid, gid);
      metadataFixed = true;
    }
    if ((old.st.mode & 0o7777) !== mode) {
      fs.fchmodSync(old.fd, mode);
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
    fs.fchownSync(fd, uid, gid);
    fs.fchmodSync(fd, mode); // after chown: chown may clear setuid/setgid bits
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
