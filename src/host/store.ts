/**
 * Where the store is, and which of a set of store paths are valid in it.
 *
 * Location: the real store (`/nix/store`, state in `/nix/var/nix`; `NIX_STORE_DIR` / `NIX_STATE_DIR`
 * override them, as they do for Nix), or a chroot store (`--store DIR`, `local?root=DIR`, or a `store`
 * setting that is an absolute path): logical paths stay `/nix/store/…`, files live under
 * `DIR/nix/store`, state under `DIR/nix/var/nix`.
 *
 * Validity, without a lock and without writing anything:
 *   - "daemon": the nix-daemon worker protocol over the daemon socket (QueryValidPaths, one round trip);
 *   - "stdio":  the same protocol over `nix-daemon --stdio [--store DIR]`, for a local store (root,
 *               no daemon, or a chroot store). One child process, one round trip;
 *   - "nix-store": `nix-store --check-validity --print-invalid` with the paths as arguments (chunked
 *               under the argv limit). Kept for the measurements in docs/plan.md.
 * A path that is not a well-formed store path is never sent (it would kill a 2.8 daemon connection):
 * it is reported invalid.
 */
import { lstatSync } from "node:fs";
import { join, resolve } from "node:path";

export interface StoreTarget {
  /** Chroot store root, or null for the store at its logical location. */
  readonly root: string | null;
  /** Logical store directory (what paths start with). */
  readonly storeDir: string;
  /** Where the store directory's files really are. */
  readonly realStoreDir: string;
  /** The state directory (db, current-load, daemon socket). */
  readonly stateDir: string;
  /** The daemon socket, when builds go through a daemon. */
  readonly socketPath: string;
  /** Builds (and validity) go through the daemon socket. */
  readonly viaDaemon: boolean;
  /** Arguments that point a Nix command at this store (`--store DIR` for a chroot store). */
  readonly nixArgs: readonly string[];
  /** How we describe it. */
  readonly description: string;
}

export interface ResolveStoreInput {
  /** `--store` as given on our command line. */
  readonly store?: string;
  /** The client's `store` setting (from the user's configuration). */
  readonly storeSetting?: string;
  /** The store mode the view computed (daemon / local / other). */
  readonly storeMode: "daemon" | "local" | "other";
  readonly env: Record<string, string | undefined>;
}

/** A chroot root from `DIR`, `local?root=DIR` or `local://?root=DIR`; null for anything else. */
export function chrootRoot(spec: string): string | null {
  const s = spec.trim();
  if (s.startsWith("/")) return resolve(s.split("?")[0]!);
  const q = s.indexOf("?");
  if ((s.startsWith("local?") || s.startsWith("local://?")) && q >= 0) {
    const params = new URLSearchParams(s.slice(q + 1));
    const root = params.get("root");
    if (root?.startsWith("/")) return resolve(root);
  }
  return null;
}

export function resolveStore(input: ResolveStoreInput): StoreTarget {
  const env = input.env;
  const storeDir = nonEmpty(env["NIX_STORE_DIR"]) ?? "/nix/store";
  const envState = nonEmpty(env["NIX_STATE_DIR"]) ?? "/nix/var/nix";
  const explicit = input.store !== undefined ? chrootRoot(input.store) : null;
  if (input.store !== undefined && explicit === null && input.store !== "daemon" && input.store !== "auto") {
    throw new Error(
      `--store: only a directory (chroot store), 'local?root=DIR', 'daemon' or 'auto' is supported, not '${input.store}'`,
    );
  }
  const fromSetting =
    explicit === null && input.store === undefined && input.storeSetting
      ? chrootRoot(input.storeSetting)
      : null;
  const root = explicit ?? fromSetting;
  if (root !== null) {
    const stateDir = join(root, "nix", "var", "nix");
    return {
      root,
      storeDir,
      realStoreDir: join(root, storeDir),
      stateDir,
      socketPath: join(stateDir, "daemon-socket", "socket"),
      viaDaemon: false,
      nixArgs: ["--store", root],
      description: `chroot store ${root}`,
    };
  }
  const viaDaemon = input.store === "daemon" || (input.store === undefined && input.storeMode === "daemon");
  // Under a daemon the daemon's own state dir counts (it runs with a clean environment).
  const stateDir = viaDaemon ? "/nix/var/nix" : envState;
  const socketPath = nonEmpty(env["NIX_DAEMON_SOCKET_PATH"]) ?? join(envState, "daemon-socket", "socket");
  return {
    root: null,
    storeDir,
    realStoreDir: storeDir,
    stateDir,
    socketPath,
    viaDaemon,
    nixArgs: viaDaemon ? ["--store", "daemon"] : [],
    description: viaDaemon ? `the daemon at ${socketPath}` : `local store ${storeDir}`,
  };
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s === "" ? undefined : s;
}

// Nix's store path name characters; the hash part is 32 characters of Nix base32.
const HASH_RE = /^[0-9abcdfghijklmnpqrsvwxyz]{32}$/;
const NAME_RE = /^[A-Za-z0-9+\-._?=]+$/;

/** A well-formed store path directly under `storeDir` (what a daemon accepts without an error). */
export function isStorePath(p: string, storeDir: string): boolean {
  if (p.length <= storeDir.length + 34 || !p.startsWith(storeDir) || p.charCodeAt(storeDir.length) !== 47)
    return false;
  const base = p.slice(storeDir.length + 1);
  if (base.charCodeAt(32) !== 45) return false; // '-'
  const name = base.slice(33);
  if (name.length === 0 || name.length > 211 || name.startsWith(".")) return false;
  return HASH_RE.test(base.slice(0, 32)) && NAME_RE.test(name);
}

/**
 * The paths of `paths` that are on disk in the store (lstat under the real store directory). A path
 * that is not on disk is not valid: Nix registers a path only once its files are in place and removes
 * an invalid path's leftovers before it builds, so plan asks the store only about paths on disk.
 * Validity itself stays the store's answer: a path on disk may still be invalid.
 */
export function pathsOnDisk(paths: readonly string[], target: StoreTarget): string[] {
  const out: string[] = [];
  for (const p of paths) if (isOnDisk(p, target)) out.push(p);
  return out;
}

/**
 * Whether a store path is on disk under the real store directory (see pathsOnDisk). True for a path
 * outside the store directory and on any error but "not there" (ENOENT, ENOTDIR): the store answers.
 */
export function isOnDisk(p: string, target: StoreTarget): boolean {
  const dir = target.storeDir;
  if (!p.startsWith(dir) || p.charCodeAt(dir.length) !== 47) return true;
  // throwIfNoEntry: "not there" is undefined, without the cost of an exception.
  try {
    return lstatSync(target.realStoreDir + p.slice(dir.length), { throwIfNoEntry: false }) !== undefined;
  } catch {
    return true;
  }
}
