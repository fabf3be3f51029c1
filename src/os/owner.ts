/**
 * "Only root (or this user) may change this": the one check behind the caches, the build store, watch's
 * state and the hook's files. Each caller says which components it checks:
 *   - `untrustedStat` (`untrustedEntry`): one component already lstat'ed (watch's state dir and file);
 *   - `untrustedDir`: the path itself, lstat'ed (a link is not a directory) (the build store);
 *   - `untrustedChain`: every directory from `/` down to the path (the caches, plan's --cache-dir).
 * Each returns why the path may not be trusted, one line, or null.
 */
import { lstatSync, type Stats } from "node:fs";
import { isAbsolute } from "node:path";

export function euid(): number {
  return typeof process.geteuid === "function" ? process.geteuid() : 0;
}

export interface OwnerRule {
  /** A directory or a regular file (default: a directory). */
  kind?: "directory" | "file";
  /** The uids that may own it (default: this process's effective uid). */
  owners?: readonly number[];
  /** A root-owned sticky directory (like /tmp) may be writable by others. */
  stickyOk?: boolean;
}

/** Why one component (its lstat) may not be trusted, or null. */
export function untrustedStat(st: Stats, rule: OwnerRule = {}): string | null {
  const kind = rule.kind ?? "directory";
  const owners = rule.owners ?? [euid()];
  if (kind === "directory" ? !st.isDirectory() : !st.isFile())
    return kind === "directory" ? "not a directory" : "not a regular file";
  if (!owners.includes(st.uid)) return `owned by uid ${st.uid}, not ${[...new Set(owners)].join(" or ")}`;
  const sticky = rule.stickyOk === true && (st.mode & 0o1000) !== 0 && st.uid === 0;
  if ((st.mode & 0o022) !== 0 && !sticky)
    return `writable by group or others (mode ${(st.mode & 0o7777).toString(8)})`;
  return null;
}

/** watch's state: a directory (`dir`) or a regular file, owned by us. */
export function untrustedEntry(st: Stats, dir: boolean): string | null {
  return untrustedStat(st, { kind: dir ? "directory" : "file" });
}

/** The path itself (not followed): its errno code when it cannot be lstat'ed, else `untrustedStat`. */
export function untrustedDir(path: string, rule: OwnerRule = {}): string | null {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? "unreadable";
  }
  return untrustedStat(st, rule);
}

/**
 * Every directory from `/` down to `path` (absolute, no links): each owned by root or `uid` and not
 * writable by group or others, except a root-owned sticky directory above the last component.
 */
export function untrustedChain(path: string, uid: number): string | null {
  if (!isAbsolute(path)) return "not an absolute path";
  const parts = path.split("/").filter(Boolean);
  for (let i = 0; i <= parts.length; i++) {
    const p = `/${parts.slice(0, i).join("/")}`;
    const why = untrustedDir(p, { owners: [0, uid], stickyOk: i < parts.length });
    if (why !== null) return `${p}: ${why}`;
  }
  return null;
}
