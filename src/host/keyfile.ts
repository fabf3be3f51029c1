/**
 * Facts about ssh key files and machines files as the build hook's user sees them: existence, type, mode,
 * owner, readability by that user, whether the key needs a passphrase, whether it lives in the Nix store.
 *
 * Key material is never read here: readability is asked with `test -r` run as the hook user, and the
 * passphrase check runs `ssh-keygen -y -P '' -f KEY` as the hook user, discarding its stdout (the public
 * key) and keeping only the classified reason from stderr. Paths reach programs as argv words, never a shell.
 */
import { accessSync, constants, realpathSync, statSync } from "node:fs";
import type { KeyFileFacts, MachinesFileFacts } from "../nix/lint.js";
import type { IdentityReader } from "./fs-reader.js";
import { type RunAsIdentity, runAs } from "./run-as.js";

export interface HookIdentity {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly home: string;
  readonly shell: string;
}

export interface ProbeOptions {
  /** The store directory (default /nix/store). */
  storeDir?: string;
  timeoutMs?: number;
  /** Our uid (default process.getuid()); injectable for tests. */
  myUid?: number;
  /** Skip the ssh-keygen passphrase check. */
  noPassphraseCheck?: boolean;
  /**
   * A reader running as the hook user (host/fs-reader): then stat and readability are asked of it, as
   * that user (one helper for every key), instead of stat as ourselves plus `test -r` per key.
   */
  reader?: IdentityReader;
}

/** The path ssh opens for `-i PATH`: `~` and `~/…` expand to the user's home; relative is against `/` (the hook's cwd). */
export function resolveKeyPath(path: string, home: string): string {
  let p = path;
  if (p === "~" || p.startsWith("~/")) p = (home === "" ? "/" : home.replace(/\/+$/, "")) + p.slice(1);
  if (!p.startsWith("/")) p = `/${p}`;
  return p;
}

function identity(u: HookIdentity): RunAsIdentity {
  return { name: u.name, uid: u.uid, gid: u.gid, home: u.home, shell: u.shell };
}

/**
 * Can `user` read `path`? As that user: access(2) when it is us; `test -r` via setpriv when we are root;
 * null when we cannot tell (we are someone else and not root).
 */
export async function readableBy(
  path: string,
  user: HookIdentity,
  opts: ProbeOptions = {},
): Promise<boolean | null> {
  const me = opts.myUid ?? process.getuid?.() ?? -1;
  if (user.uid === me) {
    try {
      accessSync(path, constants.R_OK);
      return true;
    } catch {
      return false;
    }
  }
  if (me !== 0) return null;
  try {
    const r = await runAs(identity(user), ["test", "-r", path], { timeoutMs: opts.timeoutMs ?? 10_000 });
    if (r.timedOut) return null;
    return r.code === 0;
  } catch {
    return null;
  }
}

export type PassphraseProbe =
  | { kind: "none" }
  | { kind: "passphrase" }
  | { kind: "bad-permissions" }
  | { kind: "unreadable" }
  | { kind: "not-a-key"; reason: string }
  | { kind: "unknown"; reason: string };

/** Classify `ssh-keygen -y -P '' -f KEY` (exit code and stderr; stdout is never looked at). */
export function classifySshKeygen(code: number | null, stderr: string): PassphraseProbe {
  if (code === 0) return { kind: "none" };
  if (/incorrect passphrase/i.test(stderr)) return { kind: "passphrase" };
  if (/UNPROTECTED PRIVATE KEY FILE|bad permissions/.test(stderr)) return { kind: "bad-permissions" };
  if (/Permission denied/.test(stderr)) return { kind: "unreadable" };
  const m = /Load key "[^"\n]*": ([^\n]+)/.exec(stderr);
  if (m) {
    const reason = m[1]!.trim();
    if (/invalid format|error in libcrypto|not a key|unsupported|key_load|no such/i.test(reason))
      return { kind: "not-a-key", reason };
    return { kind: "unknown", reason };
  }
  return { kind: "unknown", reason: stderr.trim().split("\n")[0] ?? "" };
}

/** Run the passphrase probe as `user` (ssh-keygen must be on the service PATH). */
export async function probePassphrase(
  path: string,
  user: HookIdentity,
  opts: ProbeOptions = {},
): Promise<PassphraseProbe> {
  const me = opts.myUid ?? process.getuid?.() ?? -1;
  if (user.uid !== me && me !== 0) return { kind: "unknown", reason: "not root" };
  try {
    const r = await runAs(identity(user), ["ssh-keygen", "-y", "-P", "", "-f", path], {
      timeoutMs: opts.timeoutMs ?? 10_000,
      env: { SSH_ASKPASS: undefined, DISPLAY: undefined },
    });
    if (r.timedOut) return { kind: "unknown", reason: "ssh-keygen timed out" };
    // r.stdout holds the public key: deliberately ignored.
    return classifySshKeygen(r.code, r.stderr);
  } catch (e) {
    return { kind: "unknown", reason: e instanceof Error ? e.message : String(e) };
  }
}

function inStoreDir(p: string, storeDir: string): boolean {
  const d = storeDir.replace(/\/+$/, "");
  return p.startsWith(`${d}/`);
}

/** Every fact the key rules need, for one column-3 path. */
export async function keyFileFacts(
  path: string,
  user: HookIdentity,
  opts: ProbeOptions = {},
): Promise<KeyFileFacts> {
  const storeDir = opts.storeDir ?? "/nix/store";
  const resolved = resolveKeyPath(path, user.home);
  let real = resolved;
  try {
    real = realpathSync(resolved);
  } catch {
    // dangling or missing: keep the path
  }
  if (opts.reader) return keyFactsVia(opts.reader, path, resolved, user, opts, storeDir);
  const inStore = inStoreDir(resolved, storeDir) || inStoreDir(real, storeDir);
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(resolved);
  } catch {
    return {
      path,
      resolved,
      exists: false,
      isFile: null,
      readableByHookUser: null,
      mode: null,
      ownerUid: null,
      passphrase: null,
      loadError: null,
      inStore,
    };
  }
  const isFile = st.isFile();
  const mode = Number(st.mode) & 0o7777;
  const ownerUid = Number(st.uid);
  const readable = isFile ? await readableBy(resolved, user, opts) : null;
  const { passphrase, loadError } =
    isFile && readable === true && !opts.noPassphraseCheck
      ? await passphraseFacts(resolved, user, opts)
      : { passphrase: null, loadError: null };
  return {
    path,
    resolved,
    exists: true,
    isFile,
    readableByHookUser: readable,
    mode,
    ownerUid,
    passphrase,
    loadError,
    inStore,
  };
}

/** Does the key need a passphrase (asked as the hook user), or is it not a key at all? */
async function passphraseFacts(
  resolved: string,
  user: HookIdentity,
  opts: ProbeOptions,
): Promise<{ passphrase: boolean | null; loadError: string | null }> {
  const p = await probePassphrase(resolved, user, opts);
  if (p.kind === "none") return { passphrase: false, loadError: null };
  if (p.kind === "passphrase") return { passphrase: true, loadError: null };
  if (p.kind === "not-a-key") return { passphrase: null, loadError: p.reason };
  return { passphrase: null, loadError: null };
}

/** {@link keyFileFacts} through a reader that runs as the hook user: what ssh, run as that user, finds. */
async function keyFactsVia(
  reader: IdentityReader,
  path: string,
  resolved: string,
  user: HookIdentity,
  opts: ProbeOptions,
  storeDir: string,
): Promise<KeyFileFacts> {
  const f = reader.facts(resolved);
  const inStore = inStoreDir(resolved, storeDir) || (f.real !== null && inStoreDir(f.real, storeDir));
  const unknown = { mode: null, ownerUid: null, passphrase: null, loadError: null, inStore };
  if (!f.exists) {
    // a key under a directory the hook user cannot enter exists for root, but ssh cannot open it
    if (f.statError === "EACCES")
      return { path, resolved, exists: true, isFile: null, readableByHookUser: false, ...unknown };
    return { path, resolved, exists: false, isFile: null, readableByHookUser: null, ...unknown };
  }
  const isFile = f.isFile === true;
  const readable = isFile ? f.readable : null;
  const { passphrase, loadError } =
    isFile && readable === true && !opts.noPassphraseCheck
      ? await passphraseFacts(resolved, user, opts)
      : { passphrase: null, loadError: null };
  return {
    path,
    resolved,
    exists: true,
    isFile,
    readableByHookUser: readable,
    mode: f.mode,
    ownerUid: f.ownerUid,
    passphrase,
    loadError,
    inStore,
  };
}

/** Readability of each found machines file by the hook user. */
export async function machinesFileFacts(
  paths: readonly string[],
  user: HookIdentity,
  opts: ProbeOptions = {},
): Promise<MachinesFileFacts[]> {
  const out: MachinesFileFacts[] = [];
  for (const p of [...new Set(paths)])
    out.push({
      path: p,
      readableByHookUser: opts.reader ? opts.reader.facts(p).readable : await readableBy(p, user, opts),
    });
  return out;
}
