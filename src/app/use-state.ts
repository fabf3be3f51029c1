/**
 * Whose configuration `use` and `reset` act on, the checks of that user's config chain, and the record
 * `use` keeps for `reset`. Shared by the use and reset commands (target resolution also by verify).
 *
 * Trust, in short (docs/guide.md, "use and reset: who may write what"):
 *  - Root acting for user U does every file operation in U's home with U's credentials
 *    (host/user-creds.ts): the kernel checks each step against U, and nothing made there is root's.
 *  - U's config chain (the directories from U's passwd home down to the nix.conf directory, nix.conf and the
 *    machines file) must be real directories and regular files owned by U: a symbolic link, another owner or
 *    another file type is refused with one line naming the file (exit 2), and `use` never changes an owner.
 *  - The record for `reset` is root's when root runs: `/var/lib/nix-builders/use/<uid>-<name>/state.json`,
 *    directories 0700, file 0600, every path component root's. U cannot write it. `reset` only touches the two
 *    paths derived again from U's passwd home (never paths from the record), puts back content and mode (never
 *    set-id bits), and the owner is U (the file is written as U).
 *  - The record also holds U's home directory identity (device, inode, birth time): an account deleted and
 *    made again with the same name and uid does not get the old account's files back.
 *  - A user running `use` for themselves (not root) keeps the record in their own
 *    `$XDG_STATE_HOME/nix-builders/use/` (default `~/.local/state`): it acts with their rights only.
 *  - The record of older versions, `<conf dir>/.nix-builders/state.json`, is U's: never read.
 */
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { LockTimeoutError, MAX_FILE_BYTES, readAll, UnsafeFileError } from "../host/atomic.js";
import { type Creds, withUserCreds } from "../host/user-creds.js";
import { type UserInfo, userNameOf } from "../host/users.js";
import { type AgentOptions, type AgentSelection, selectAgent } from "./agent-select.js";
import { EXIT, errnoText, type Io, isPathErrno, json, oneLine, Refusal, UsageError } from "./io.js";
import { type UserView, userView } from "./view.js";

// ---------------------------------------------------------------------------------------------------------
// Whose configuration

export interface TargetOptions extends AgentOptions {
  user?: string;
  nixVersion?: string;
}

export interface Target {
  sel: AgentSelection | null;
  view: UserView;
  user: UserInfo;
  creds: Creds;
  /** The user nix.conf Nix gives priority to (where `builders` goes). */
  confFile: string;
  confDir: string;
  machinesFile: string;
  /** Root acting for another user (file operations then run with that user's credentials). */
  forOther: boolean;
  /** The directories from below the home down to confDir, in order: each must be a real directory of U's. */
  chainDirs: string[];
  /** The user's view computed again (after writing: is our `builders` line the one in force?). */
  reloadView(): Promise<UserView>;
}

export async function resolveTarget(opts: TargetOptions, io: Io, command: string): Promise<Target> {
  const sel = selectAgent(opts);
  if (sel && opts.user && opts.user !== sel.user)
    throw new UsageError(`--user ${opts.user} and --agent (user ${sel.user}) name different users`);
  const name = sel ? sel.user : opts.user;
  if (name === undefined) throw new UsageError(`${command}: say whose configuration: --user NAME or --agent`);
  const viewOptions = {
    user: name,
    nixVersion: opts.nixVersion,
    env: io.env,
    ...(sel ? { userEnv: sel.userEnv, clientOverrides: sel.overrides } : {}),
  };
  const view = await userView(viewOptions);
  const user = view.user;
  const first = view.client.userFiles[0];
  if (first === undefined)
    throw new UsageError(`${command}: ${name} has no user nix.conf (NIX_USER_CONF_FILES is empty)`);
  const euid = process.geteuid?.() ?? 0;
  if (euid !== 0 && euid !== user.uid)
    throw new Refusal(
      `${command} --user ${user.name}: acting for another user needs root (this process is uid ${euid})`,
    );
  const forOther = euid === 0 && user.uid !== 0;
  const home = user.home;
  if (!path.isAbsolute(home))
    throw new Refusal(`${user.name}: no home directory in passwd ('${home}'); nothing to write to`);
  const confFile = path.resolve(first);
  const confDir = path.dirname(confFile);
  const rel = path.relative(home, confDir);
  const inside = !rel.startsWith("..") && !path.isAbsolute(rel);
  let chainDirs: string[];
  if (inside) {
    chainDirs = [];
    let cur = home;
    for (const part of rel.split(path.sep).filter(Boolean)) {
      cur = path.join(cur, part);
      chainDirs.push(cur);
    }
  } else if (forOther) {
    throw new Refusal(
      `${confFile}: outside ${user.name}'s home ${home}; nix-builders writes a user's configuration only inside their home`,
      { path: confFile },
    );
  } else {
    const parent = path.dirname(confDir);
    chainDirs = parent === "/" ? [confDir] : [parent, confDir];
  }
  return {
    sel,
    view,
    user,
    creds: { name: user.name, uid: user.uid, gid: user.gid },
    confFile,
    confDir,
    machinesFile: path.join(confDir, "machines"),
    forOther,
    chainDirs,
    reloadView: () => userView(viewOptions),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Errors → refusals

/**
 * What `use`/`reset` print for a thrown error that is about a file or the machine, not a bug in our code:
 * a refusal we raised, a path we must not write, a lock held too long, or a system error on a path (EACCES,
 * EPERM from an immutable directory, EROFS, ENOSPC …: `<path>: <strerror>`). Null for anything else.
 */
export function asRefusal(e: unknown, user?: string): Refusal | null {
  if (e instanceof Refusal) return e;
  if (e instanceof UnsafeFileError) return new Refusal(e.message, { path: e.path });
  if (e instanceof LockTimeoutError) return new Refusal(e.message, { path: e.lockPath });
  const ne = e as NodeJS.ErrnoException | null;
  if (
    e instanceof Error &&
    typeof ne?.code === "string" &&
    typeof ne.path === "string" &&
    isPathErrno(ne.code)
  ) {
    const text = errnoText(ne.code);
    const as = user ? ` (as ${user})` : "";
    const hint = ne.code === "EPERM" ? "; is it immutable or append-only (lsattr)?" : "";
    return new Refusal(`${ne.path}: ${text}${as}${hint}`, { path: ne.path });
  }
  return null;
}

/** A refusal: one line on stderr naming the file and the reason, exit 2; with --json also on stdout. */
export function printRefusal(
  r: { message: string; path?: string | undefined },
  opts: { json?: boolean },
  io: Io,
  user: string | null,
  command: string,
): number {
  const message = oneLine(r.message);
  if (opts.json)
    io.out(json({ ok: false, user, refused: "file", path: r.path ?? null, message, exitCode: EXIT.errors }));
  io.err(`nix-builders ${command}: ${message}\n`);
  return EXIT.errors;
}

// ---------------------------------------------------------------------------------------------------------
// The user's config chain, checked and read as the user

function lstatOrNull(p: string): fs.Stats | null {
  try {
    return fs.lstatSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

function ownerName(t: Target, uid: number): string {
  const n = userNameOf(t.view.db.passwd, uid);
  return n === String(uid) ? `uid ${uid}` : `${n} (uid ${uid})`;
}

function notOwned(t: Target, p: string, uid: number, what: string): Refusal {
  return new Refusal(
    `${p}: owned by ${ownerName(t, uid)}, not by ${t.user.name}; nix-builders never writes a ${what} that is not ${t.user.name}'s nor changes its owner (chown it to ${t.user.name}, or remove it, then run again)`,
    { path: p },
  );
}

function symlinkRefusal(t: Target, p: string): Refusal {
  return new Refusal(
    `${p}: is a symbolic link; nix-builders does not follow links in ${t.user.name}'s configuration path (replace it with the real ${p === t.confFile || p === t.machinesFile ? "file" : "directory"})`,
    { path: p },
  );
}

/**
 * Refuse the chain unless every existing directory from below the home down to the nix.conf directory is a
 * real directory owned by U, and nix.conf and the machines file are absent or regular files owned by U.
 * Runs with U's credentials. (Links into the Nix store are "managed" and are dealt with before this.)
 */
export function checkConfigChain(t: Target): void {
  withUserCreds(t.creds, () => {
    for (const d of t.chainDirs) {
      const st = lstatOrNull(d);
      if (st === null) break; // this one and the ones below are made by use
      if (st.isSymbolicLink()) throw symlinkRefusal(t, d);
      if (!st.isDirectory()) throw new Refusal(`${d}: is not a directory`, { path: d });
      if (st.uid !== t.user.uid) throw notOwned(t, d, st.uid, "directory");
    }
    for (const f of [t.confFile, t.machinesFile]) {
      const st = lstatOrNull(f);
      if (st === null) continue;
      if (st.isSymbolicLink()) throw symlinkRefusal(t, f);
      if (!st.isFile()) throw new Refusal(`${f}: is not a regular file`, { path: f });
      if (st.uid !== t.user.uid) throw notOwned(t, f, st.uid, "file");
    }
  });
}

/** Make the missing directories of the chain, as U (so they are U's), mode 0755 less the umask. */
export function ensureChainDirs(t: Target): void {
  withUserCreds(t.creds, () => {
    const first = t.chainDirs[0];
    if (first !== undefined && !fs.existsSync(path.dirname(first))) {
      if (t.forOther) {
        throw new Refusal(`${path.dirname(first)}: ${t.user.name}'s home directory does not exist`, {
          path: path.dirname(first),
        });
      }
      fs.mkdirSync(path.dirname(first), { recursive: true, mode: 0o755 });
    }
    for (const d of t.chainDirs) {
      try {
        fs.mkdirSync(d, { mode: 0o755 });
        const parent = path.dirname(d);
        const fd = fs.openSync(parent, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
        try {
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      }
      const st = fs.lstatSync(d);
      if (st.isSymbolicLink()) throw symlinkRefusal(t, d);
      if (!st.isDirectory()) throw new Refusal(`${d}: is not a directory`, { path: d });
      if (st.uid !== t.user.uid) throw notOwned(t, d, st.uid, "directory");
    }
  });
}

export interface FileSnapshot {
  bytes: Buffer | null;
  uid: number | null;
  gid: number | null;
  mode: number | null;
  mtimeMs: number | null;
}

/**
 * Read one of the two managed files as U: O_NOFOLLOW, regular files only, owned by U, at most 16 MiB.
 * Null bytes when there is no file.
 */
export function readManaged(t: Target, file: string): FileSnapshot {
  return withUserCreds(t.creds, () => {
    let fd: number;
    try {
      fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return { bytes: null, uid: null, gid: null, mode: null, mtimeMs: null };
      if (code === "ELOOP") throw symlinkRefusal(t, file);
      throw e;
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new Refusal(`${file}: is not a regular file`, { path: file });
      if (st.uid !== t.user.uid) throw notOwned(t, file, st.uid, "file");
      const bytes = readAll(fd, MAX_FILE_BYTES);
      if (bytes === null)
        throw new Refusal(`${file}: is larger than ${MAX_FILE_BYTES} bytes`, { path: file });
      return { bytes, uid: st.uid, gid: st.gid, mode: st.mode & 0o777, mtimeMs: st.mtimeMs };
    } finally {
      fs.closeSync(fd);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// The record

export interface FileRecord {
  /** The path, as derived from the user's home when use ran (reset derives it again and compares). */
  path: string;
  existed: boolean;
  /** The original bytes, base64; null when the file did not exist. */
  content: string | null;
  uid: number | null;
  gid: number | null;
  /** Permission bits (never set-id bits). */
  mode: number | null;
  /** sha256 of every content `use` has written (or meant to write) there. */
  written: string[];
  /** The original's modification time (ms since the epoch), put back by reset; absent in older records. */
  mtimeMs?: number | null;
}

/** The home directory as it was: an account made again with the same name and uid has another one. */
export interface HomeId {
  dev: number;
  ino: number;
  birthtimeMs: number;
}

export interface UseState {
  version: 2;
  user: string;
  uid: number;
  home: string;
  homeId: HomeId | null;
  created: string;
  files: { machines: FileRecord; conf: FileRecord };
}

export function sha256(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

/** The file holds the original bytes, or bytes `use` wrote: reset (or another use) loses nothing. */
export function isOurs(rec: FileRecord, cur: Buffer): boolean {
  const original = rec.content === null ? null : Buffer.from(rec.content, "base64");
  return (original !== null && cur.equals(original)) || rec.written.includes(sha256(cur));
}

export function homeId(home: string): HomeId | null {
  try {
    const st = fs.statSync(home);
    return { dev: st.dev, ino: st.ino, birthtimeMs: st.birthtimeMs };
  } catch {
    return null;
  }
}

export function snapshotRecord(file: string, s: FileSnapshot): FileRecord {
  return {
    path: file,
    existed: s.bytes !== null,
    content: s.bytes === null ? null : s.bytes.toString("base64"),
    uid: s.uid,
    gid: s.gid,
    mode: s.mode,
    written: [],
    mtimeMs: s.mtimeMs,
  };
}

export function newState(t: Target, machines: FileSnapshot, conf: FileSnapshot): UseState {
  return {
    version: 2,
    user: t.user.name,
    uid: t.user.uid,
    home: t.user.home,
    homeId: homeId(t.user.home),
    created: new Date().toISOString(),
    files: {
      machines: snapshotRecord(t.machinesFile, machines),
      conf: snapshotRecord(t.confFile, conf),
    },
  };
}

export const ROOT_STATE_DIR = "/var/lib/nix-builders";
const MAX_STATE_BYTES = 64 * 1024 * 1024;

export interface StateLocation {
  /** `/var/lib/nix-builders` (root) or the user's own state directory. */
  base: string;
  /** The directory of this user's record, which also holds the lock. */
  dir: string;
  file: string;
  /** Root's record (every component root's, checked) or the running user's own. */
  owner: "root" | "self";
}

/**
 * Where this run keeps its record. Root: `$NIX_BUILDERS_STATE_DIR` (root's own environment; the default
 * /var/lib/nix-builders) + `/use/<uid>-<name>`. Not root: `$XDG_STATE_HOME` (default `~/.local/state`)
 * + `/nix-builders/use/<uid>-<name>`.
 */
export function stateLocation(t: Target, env: NodeJS.ProcessEnv): StateLocation {
  const key = `${t.user.uid}-${encodeURIComponent(t.user.name)}`;
  const euid = process.geteuid?.() ?? 0;
  if (euid === 0) {
    const given = env["NIX_BUILDERS_STATE_DIR"];
    const base = given && path.isAbsolute(given) ? path.resolve(given) : ROOT_STATE_DIR;
    const dir = path.join(base, "use", key);
    return { base, dir, file: path.join(dir, "state.json"), owner: "root" };
  }
  const xdg = env["XDG_STATE_HOME"];
  const stateHome = xdg && path.isAbsolute(xdg) ? xdg : path.join(t.user.home, ".local", "state");
  const base = path.join(stateHome, "nix-builders");
  const dir = path.join(base, "use", key);
  return { base, dir, file: path.join(dir, "state.json"), owner: "self" };
}

/**
 * Every component of `p` that exists must be root's and, when a directory, not writable by group or others
 * (unless sticky, like /tmp): only root can then change what the path names.
 */
function checkRootPath(p: string): void {
  const parts = path.resolve(p).split(path.sep).filter(Boolean);
  let cur = "/";
  for (const part of ["", ...parts]) {
    cur = part === "" ? cur : path.join(cur, part);
    const st = lstatOrNull(cur);
    if (st === null) return;
    if (st.uid !== 0)
      throw new Refusal(`${cur}: owned by uid ${st.uid}, not root; refusing to keep root's records there`, {
        path: cur,
      });
    if (st.isSymbolicLink()) {
      checkRootPath(fs.realpathSync(cur)); // a root-owned link: where it leads must be root's as well
      continue;
    }
    if (st.isDirectory() && (st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0)
      throw new Refusal(`${cur}: writable by group or others; refusing to keep root's records there`, {
        path: cur,
      });
  }
}

/** Check, without making anything, that root's record directory can only be changed by root. */
export function checkStateLocation(loc: StateLocation): void {
  if (loc.owner === "root") checkRootPath(loc.dir);
}

/** Make the record directory (0700) and check it is ours alone. */
export function ensureStateDir(loc: StateLocation): void {
  if (loc.owner === "self") {
    fs.mkdirSync(loc.dir, { recursive: true, mode: 0o700 });
    return;
  }
  checkRootPath(loc.base);
  const rel = path.relative(loc.base, loc.dir).split(path.sep);
  let cur = loc.base;
  for (const part of ["", ...rel]) {
    cur = part === "" ? cur : path.join(cur, part);
    try {
      fs.mkdirSync(cur, { mode: 0o700, recursive: part === "" });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    const st = fs.lstatSync(cur);
    if (!st.isDirectory() || st.isSymbolicLink() || st.uid !== 0)
      throw new Refusal(`${cur}: not a directory of root's; refusing to keep root's records there`, {
        path: cur,
      });
    if ((st.mode & 0o777) !== 0o700) fs.chmodSync(cur, 0o700);
  }
  checkRootPath(loc.dir);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function validFileRecord(v: unknown): v is FileRecord {
  if (!isRecord(v)) return false;
  const numOrNull = (x: unknown) => x === null || (typeof x === "number" && Number.isInteger(x) && x >= 0);
  return (
    typeof v["path"] === "string" &&
    typeof v["existed"] === "boolean" &&
    (v["content"] === null || typeof v["content"] === "string") &&
    v["existed"] === (v["content"] !== null) &&
    numOrNull(v["uid"]) &&
    numOrNull(v["gid"]) &&
    numOrNull(v["mode"]) &&
    (v["mtimeMs"] === undefined || v["mtimeMs"] === null || typeof v["mtimeMs"] === "number") &&
    Array.isArray(v["written"]) &&
    (v["written"] as unknown[]).every((h) => typeof h === "string")
  );
}

/** The record, or null when there is none. Root's record must be root's file, mode 0600 or stricter. */
export function readState(loc: StateLocation): UseState | null {
  let fd: number;
  try {
    fd = fs.openSync(loc.file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  let text: string;
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new Refusal(`${loc.file}: is not a regular file`, { path: loc.file });
    if (loc.owner === "root" && (st.uid !== 0 || (st.mode & 0o022) !== 0))
      throw new Refusal(
        `${loc.file}: not root's alone (uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}); refusing to trust it`,
        {
          path: loc.file,
        },
      );
    const b = readAll(fd, MAX_STATE_BYTES);
    if (b === null) throw new Refusal(`${loc.file}: too large for a nix-builders record`, { path: loc.file });
    text = b.toString("utf8");
  } finally {
    fs.closeSync(fd);
  }
  let s: unknown;
  try {
    s = JSON.parse(text);
  } catch {
    s = null;
  }
  const files = isRecord(s) ? s["files"] : null;
  if (
    !isRecord(s) ||
    s["version"] !== 2 ||
    typeof s["user"] !== "string" ||
    typeof s["uid"] !== "number" ||
    typeof s["home"] !== "string" ||
    !isRecord(files) ||
    !validFileRecord(files["machines"]) ||
    !validFileRecord(files["conf"])
  )
    throw new Refusal(`${loc.file}: not a nix-builders record (version 2); remove it to start again`, {
      path: loc.file,
    });
  return s as unknown as UseState;
}

/** Atomic write (or removal, with null) of the record; the caller holds the record directory's lock. */
export function writeState(loc: StateLocation, state: UseState | null): void {
  const dir = loc.dir;
  if (state === null) {
    fs.rmSync(loc.file, { force: true });
    fsyncDir(dir);
    return;
  }
  for (const n of fs.readdirSync(dir))
    if (n.startsWith(".state.json.tmp.")) fs.rmSync(path.join(dir, n), { force: true });
  const tmp = path.join(dir, `.state.json.tmp.${process.pid}.${randomBytes(4).toString("hex")}`);
  const fd = fs.openSync(tmp, "wx", 0o600);
  try {
    fs.writeFileSync(fd, `${JSON.stringify(state, null, 2)}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, loc.file);
  fsyncDir(dir);
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Is this record about this user, as they are now? Refuses a record made for an earlier account with the
 * same name and uid (another home directory), or for other paths than the ones derived now.
 */
export function checkStateMatches(state: UseState, t: Target, loc: StateLocation): void {
  const stale = (why: string) =>
    new Refusal(
      `${loc.file}: recorded for ${state.user} (uid ${state.uid}) ${why}; not used: check ${t.confFile} and ${t.machinesFile} by hand, then remove ${loc.file}`,
      { path: loc.file },
    );
  if (state.uid !== t.user.uid || state.user !== t.user.name) throw stale("but this is another account");
  if (state.home !== t.user.home) throw stale(`with home ${state.home}, now ${t.user.home}`);
  const now = homeId(t.user.home);
  const was = state.homeId;
  if (
    was !== null &&
    (now === null || now.dev !== was.dev || now.ino !== was.ino || now.birthtimeMs !== was.birthtimeMs)
  )
    throw stale("with another home directory (the account was made again, or its home replaced)");
  if (state.files.conf.path !== t.confFile || state.files.machines.path !== t.machinesFile)
    throw stale(
      `for ${state.files.conf.path} and ${state.files.machines.path}, but the user's files are now ${t.confFile} and ${t.machinesFile} (another environment?)`,
    );
}

/** The record of versions before 0.2, in the user's own directory: never trusted by root. */
export function legacyStateFile(t: Target): string | null {
  const f = path.join(t.confDir, ".nix-builders", "state.json");
  const st = withUserCreds(t.creds, () => {
    try {
      return fs.lstatSync(f);
    } catch {
      return null;
    }
  });
  return st ? f : null;
}

export function legacyMessage(file: string, t: Target): string {
  return `${file}: a record from an older nix-builders, in ${t.user.name}'s own directory (root must not trust it), is not used; restore ${t.confFile} and ${t.machinesFile} by hand from their .nix-builders.*.bak backups, then remove ${path.dirname(file)}`;
}
