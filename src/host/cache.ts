/**
 * A tiny per-user cache for facts that are slow to ask for (the Nix version, Nix's machine
 * defaults). Entries are keyed by what they depend on (for example a binary's device, inode, size,
 * mtime and ctime), so a stale entry is never used. Failing to read or write the cache only costs
 * time: every problem below means "no cache", never an error.
 *
 * Where it lives, and why that is safe:
 * - root: `/var/cache/nix-builders` (created 0700), whatever HOME or XDG_CACHE_HOME say, so that
 *   `sudo` with a user's environment never makes root read that user's cache;
 * - any other user: `$XDG_CACHE_HOME/nix-builders` or `~/.cache/nix-builders`;
 * - never a shared /tmp: the directory is used only when every directory on its real path belongs
 *   to the running user or to root and none is writable by group or others. Nobody else can then
 *   plant, swap or replace anything in it, and a value read from it was written by this same user.
 * Reads are bounded (regular files owned by the running user, O_NOFOLLOW, at most 64 KiB); writes
 * go to a new file with a random name (O_EXCL, O_NOFOLLOW, 0600) that is then renamed into place.
 * Callers validate the value's shape, so a damaged entry is a miss.
 */
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readSync,
  realpathSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { dirname, isAbsolute, join } from "node:path";
import { crypto } from "../os/lazy.js";
import { untrustedChain } from "../os/owner.js";

/** Root's cache directory. */
export const ROOT_CACHE_DIR = "/var/cache/nix-builders";
/** A cache file larger than this is not ours (entries are a few hundred bytes). */
export const MAX_CACHE_BYTES = 64 * 1024;

export interface CacheScope {
  /** The running uid (defaults to this process's). */
  uid?: number;
  /** The environment that names the user's cache home (defaults to this process's). */
  env?: NodeJS.ProcessEnv;
  /** Root's cache directory (tests use a private one). */
  rootDir?: string;
}

/**
 * Is every directory from / down to `real` (a path without symlinks) owned by `uid` or root and
 * not writable by group or others? Then only `uid` and root can change what the path names.
 * One exception, for the directories above `real` only: a root-owned directory with the sticky bit
 * (like /tmp, mode 1777), where nobody but an entry's owner and root can rename or remove it.
 */
export function pathOwnedBy(real: string, uid: number): boolean {
  return untrustedChain(real, uid) === null;
}

/** Make `dir` (one level) if it is missing, mode 0700; true when it now exists. */
function mkdirOne(dir: string): boolean {
  try {
    mkdirSync(dir, { mode: 0o700 });
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EEXIST";
  }
}

/**
 * The cache directory for this process, created if needed, or null when there is no safe one.
 * The returned path has no symlinks and passes pathOwnedBy(…, uid); its last component is owned by uid.
 */
export function cacheDir(scope: CacheScope = {}): string | null {
  const uid = scope.uid ?? process.getuid?.() ?? -1;
  if (uid < 0) return null;
  let dir: string;
  if (uid === 0) {
    dir = scope.rootDir ?? ROOT_CACHE_DIR;
  } else {
    const env = scope.env ?? process.env;
    const xdg = env["XDG_CACHE_HOME"];
    const home = env["HOME"];
    let base: string;
    if (xdg && isAbsolute(xdg)) base = xdg;
    else if (home && isAbsolute(home)) {
      base = join(home, ".cache");
      // ~/.cache may not exist yet: make it only inside a home that is safely the user's.
      try {
        const realHome = realpathSync(home);
        if (!pathOwnedBy(realHome, uid)) return null;
        if (!mkdirOne(join(realHome, ".cache"))) return null;
        base = join(realHome, ".cache");
      } catch {
        return null;
      }
    } else return null;
    dir = join(base, "nix-builders");
  }
  try {
    const parent = realpathSync(dirname(dir));
    if (!pathOwnedBy(parent, uid)) return null;
    const real = join(parent, dir.slice(dir.lastIndexOf("/") + 1));
    if (!mkdirOne(real)) return null;
    const st = lstatSync(real);
    if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o022) !== 0) return null;
    return real;
  } catch {
    return null;
  }
}

/** Read a cache file: a regular file owned by `uid`, not a symlink, not writable by others, bounded. */
function readBounded(file: string, uid: number): string | undefined {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.uid !== uid || (st.mode & 0o022) !== 0 || st.size > MAX_CACHE_BYTES)
      return undefined;
    const buf = Buffer.alloc(Number(st.size) + 1);
    let n = 0;
    for (;;) {
      const r = readSync(fd, buf, n, buf.length - n, null);
      if (r === 0) break;
      n += r;
      if (n > st.size) return undefined; // grew while we read: not ours
    }
    return buf.subarray(0, n).toString("utf8");
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

const NAME = /^[a-z0-9-]+$/;

/**
 * The cached value for `key`, if there is one and `validate` accepts it (returns it, possibly
 * narrowed); otherwise undefined.
 */
export function readCache<T>(
  name: string,
  key: string,
  validate: (value: unknown) => T | undefined,
  scope: CacheScope = {},
): T | undefined {
  if (!NAME.test(name)) return undefined;
  const dir = cacheDir(scope);
  if (!dir) return undefined;
  const text = readBounded(join(dir, `${name}.json`), scope.uid ?? process.getuid?.() ?? -1);
  if (text === undefined) return undefined;
  try {
    const entry = JSON.parse(text) as unknown;
    if (!entry || typeof entry !== "object") return undefined;
    const e = entry as { key?: unknown; value?: unknown };
    if (e.key !== key) return undefined;
    return validate(e.value);
  } catch {
    return undefined;
  }
}

export function writeCache<T>(name: string, key: string, value: T, scope: CacheScope = {}): void {
  if (!NAME.test(name)) return;
  const dir = cacheDir(scope);
  if (!dir) return;
  writePrivateFile(join(dir, `${name}.json`), JSON.stringify({ key, value }));
}

/**
 * Replace `file` (in a directory only this user and root can change) with `data`: written to a new
 * file with a random name beside it (O_EXCL, O_NOFOLLOW, 0600), then renamed into place, so a reader
 * sees the old file or the new one. False when it could not be written (a cache is then only slower).
 */
export function writePrivateFile(file: string, data: string | Buffer): boolean {
  const tmp = join(
    dirname(file),
    `.${file.slice(file.lastIndexOf("/") + 1)}.${crypto().randomBytes(8).toString("hex")}`,
  );
  let fd: number | undefined;
  try {
    fd = openSync(
      tmp,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
    const buf = typeof data === "string" ? Buffer.from(data, "utf8") : data;
    let n = 0;
    while (n < buf.length) n += writeSync(fd, buf, n, buf.length - n);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, file);
    return true;
  } catch {
    if (fd !== undefined) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // already gone
    }
    return false;
  }
}

/**
 * A key that changes whenever the file at `path` could say something else: its real path, device,
 * inode, size, mtime and ctime (ctime cannot be set back by anyone). Null when it cannot be read.
 */
export function fileIdentity(path: string): string | null {
  try {
    const real = realpathSync(path);
    const st = statSync(real, { bigint: true });
    return `${real}:${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  } catch {
    return null;
  }
}
