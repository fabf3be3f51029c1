/**
 * Reading the machine for the user view: {@link readHostSnapshot} is the one function that does it (the
 * installed Nix and its machine facts, the passwd and group entries, our uid, the state directory and the
 * daemon socket, and the files as each identity reads them). The result is a plain
 * {@link HostSnapshot}; src/nix/user-view.ts resolves it without I/O.
 *
 * Files are read lazily: the snapshot's readers read a file the first time the resolution (or lint, or
 * route) asks for it, as the identity Nix would read it with, and, when recording (`report`), keep what
 * they saw in the snapshot, after {@link redactText}. A snapshot read back from a bundle
 * ({@link snapshotFromBundle}) answers from what it holds and nothing else.
 */
import { accessSync, constants, existsSync, statSync } from "node:fs";
import { readerFor } from "../host/fs-reader.js";
import { keyFileFacts, type ProbeOptions } from "../host/keyfile.js";
import { serviceEnv } from "../host/run-as.js";
import { resolveUser, type UserDb, type UserInfo } from "../host/users.js";
import type { KeyFileFacts } from "../nix/lint.js";
import type { Origin } from "../nix/origin.js";
import {
  type HostSnapshot,
  type IdentityReader,
  redactText,
  SNAPSHOT_FORMAT,
  SNAPSHOT_VERSION,
  type SnapshotFiles,
  snapshotProblem,
  snapshotReader,
} from "../nix/snapshot.js";
import type { ReaderSource } from "../nix/user-view.js";
import { readBounded } from "../os/read.js";
import { Refusal, UsageError } from "./io.js";
import type { NixContext } from "./view.js";

export interface SnapshotRequest {
  /** --user NAME: that user's passwd home and a clean environment, as a service for that user has. */
  user?: string;
  /** --builders SPEC: like Nix's flag, a client-side setting (subject to the daemon's trust). */
  builders?: string;
  /** Extra client settings (e.g. hercules-ci-agent's nixSettings), applied like command-line options. */
  clientOverrides?: { name: string; value: string; origin?: Origin }[];
  /** Extra environment for the user (e.g. a service's Environment= lines). */
  userEnv?: Record<string, string>;
  /** The environment of this process (used when no --user is given). */
  env: NodeJS.ProcessEnv;
}

/** How a key file's facts are found: probed on the machine (as the hook user), or from a bundle. */
export type KeyFactsSource = (
  path: string,
  hook: { name: string; uid: number; gid: number; home: string; shell: string },
  probe: ProbeOptions,
) => Promise<KeyFileFacts>;

/** A snapshot with the readers that answer its file questions, and its key facts. */
export interface Snapshot {
  readonly data: HostSnapshot;
  readonly readers: ReaderSource;
  readonly keyFacts: KeyFactsSource;
  /** The uid the lint's "can we see this" rules use: ours, or the one the bundle was taken with. */
  readonly myUid: number;
  /** True when the snapshot is a bundle read back (no file of this machine is read). */
  readonly replay: boolean;
}

/** The variables Nix (and the view) reads: the only ones a recorded snapshot keeps (others may be secrets). */
const NIX_ENV = /^(NIX_|XDG_)|^(HOME|USER|LOGNAME|PATH|SHELL|TMPDIR)$/;

function currentUser(db: UserDb): UserInfo {
  const uid = process.getuid?.() ?? 0;
  const u = resolveUser(db, uid);
  if (u) return u;
  return {
    name: String(uid),
    uid,
    gid: process.getgid?.() ?? uid,
    home: process.env["HOME"] ?? "/",
    shell: "/bin/sh",
    primaryGroup: String(process.getgid?.() ?? uid),
    supplementaryGroups: [],
    source: "files",
  };
}

export function lookupUserOrThrow(db: UserDb, name: string): UserInfo {
  const u = resolveUser(db, /^\d+$/.test(name) ? Number(name) : name);
  if (!u) throw new UsageError(`no such user: '${name}' (not in /etc/passwd)`);
  return u;
}

/** The reader for the files Nix reads as `user`: with that user's credentials (see host/fs-reader). */
export function readerForUser(user: UserInfo): IdentityReader {
  return readerFor({ name: user.name, uid: user.uid, gid: user.gid, home: user.home, shell: user.shell });
}

/** Can `user` write `path`, judged from its mode bits (what access(2) would say for that user). */
export function writableBy(path: string, user: UserInfo, db: UserDb): boolean {
  if (user.uid === process.getuid?.()) {
    try {
      accessSync(path, constants.W_OK | constants.R_OK);
      return true;
    } catch {
      return false;
    }
  }
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch {
    return false;
  }
  if (user.uid === 0) return true;
  const gids = new Set<number>([user.gid]);
  for (const g of db.groups) if (user.supplementaryGroups.includes(g.name)) gids.add(g.gid);
  const mode = Number(st.mode);
  if (st.uid === user.uid) return (mode & 0o600) === 0o600;
  if (gids.has(Number(st.gid))) return (mode & 0o060) === 0o060;
  return (mode & 0o006) === 0o006;
}

/** A reader that keeps what `real` answers in `into` (texts after redaction), and answers that. */
function recording(real: IdentityReader, into: SnapshotFiles, note: (line: string) => void): IdentityReader {
  return {
    who: real.who,
    read: (p) => {
      const had = into.read[p];
      if (had) return had;
      const r = real.read(p);
      const kept = r.ok ? { ok: true as const, text: redactText(p, r.text, note) } : r;
      into.read[p] = kept;
      return kept;
    },
    exists: (p) => {
      const r = into.exists[p] ?? real.exists(p);
      into.exists[p] = r;
      return r;
    },
    facts: (p) => {
      const r = into.facts[p] ?? real.facts(p);
      into.facts[p] = r;
      return r;
    },
  };
}

/**
 * Read the machine for `req`'s user view with the Nix rules of `ctx`. With `record`, every file the
 * resolution (and lint, route) later reads is kept in the snapshot, as is every key file's facts.
 */
export async function readHostSnapshot(
  req: SnapshotRequest,
  ctx: NixContext,
  opts: { record?: boolean } = {},
): Promise<Snapshot> {
  const db = ctx.db;
  const asService = req.user !== undefined;
  const user = asService ? lookupUserOrThrow(db, req.user!) : currentUser(db);
  const env: Record<string, string | undefined> = asService
    ? serviceEnv(
        { name: user.name, uid: user.uid, gid: user.gid, home: user.home, shell: user.shell },
        req.userEnv ?? {},
      )
    : { ...req.env, ...(req.userEnv ?? {}) };
  const keptEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(env))
    if (v !== undefined && (!opts.record || NIX_ENV.test(k))) keptEnv[k] = v;
  const stateDir = env["NIX_STATE_DIR"] ?? "/nix/var/nix";
  const socket = env["NIX_DAEMON_SOCKET_PATH"] ?? `${stateDir}/daemon-socket/socket`;
  const root = resolveUser(db, 0);
  const redactions: string[] = [];
  const data: HostSnapshot = {
    format: SNAPSHOT_FORMAT,
    formatVersion: SNAPSHOT_VERSION,
    takenAt: new Date().toISOString(),
    uid: process.getuid?.() ?? -1,
    nix: { install: ctx.nix, problem: ctx.nixProblem ?? null },
    version: ctx.version,
    versionSource: ctx.versionSource,
    ...(ctx.versionNote ? { versionNote: ctx.versionNote } : {}),
    facts: ctx.facts,
    user,
    root,
    serviceEnv: asService,
    env: keptEnv,
    groups: db.groups.map((g) => ({ name: g.name, gid: g.gid, members: [...g.members] })),
    clientOverrides: req.clientOverrides ?? [],
    builders: req.builders ?? null,
    store: {
      stateDir,
      socket,
      socketExists: existsSync(socket),
      stateDirWritable: writableBy(stateDir, user, db),
    },
    files: {},
    keys: {},
    load: null,
    redactions,
  };
  if (!opts.record)
    return {
      data,
      readers: (uid) => readerForUid(uid, user, root),
      keyFacts: keyFileFacts,
      myUid: data.uid,
      replay: false,
    };
  const note = (line: string) => {
    if (!redactions.includes(line)) redactions.push(line);
  };
  const cache = new Map<number, IdentityReader>();
  const readers: ReaderSource = (uid) => {
    let r = cache.get(uid);
    if (!r) {
      const real = readerForUid(uid, user, root);
      const files: SnapshotFiles = { who: real.who, read: {}, exists: {}, facts: {} };
      data.files[String(uid)] = files;
      r = recording(real, files, note);
      cache.set(uid, r);
    }
    return r;
  };
  const keyFacts: KeyFactsSource = async (path, hook, probe) => {
    const f = await keyFileFacts(path, hook, probe);
    const byUid = data.keys[String(hook.uid)] ?? {};
    data.keys[String(hook.uid)] = byUid;
    byUid[path] = f;
    return f;
  };
  return { data, readers, keyFacts, myUid: data.uid, replay: false };
}

function readerForUid(uid: number, user: UserInfo, root: UserInfo | null): IdentityReader {
  if (uid === user.uid) return readerForUser(user);
  if (uid === 0) return readerForUser(root ?? { ...user, name: "root", uid: 0, gid: 0, home: "/root" });
  throw new Error(`no reader for uid ${uid}`);
}

/** The largest bundle `--from` reads. */
export const BUNDLE_LIMIT = 64 * 1024 * 1024;

/** Read a bundle (`--from FILE`): bounded, a regular file, a report of this format; else a refusal. */
export function readBundle(path: string): HostSnapshot {
  const r = readBounded(path, BUNDLE_LIMIT);
  if (!r.ok) {
    const why =
      r.code === "EFBIG"
        ? `larger than ${BUNDLE_LIMIT / 1024 / 1024} MiB`
        : r.code === "ENOTREG"
          ? `is ${r.detail ?? "not a regular file"}`
          : r.code === "EISDIR"
            ? "is a directory"
            : r.code === "ENOENT"
              ? "no such file"
              : r.code === "EACCES"
                ? "permission denied"
                : r.code;
    throw new Refusal(`${path}: cannot read the report: ${why}`, { path });
  }
  let value: unknown;
  try {
    value = JSON.parse(r.text);
  } catch {
    throw new Refusal(`${path}: not a nix-builders report (not JSON)`, { path });
  }
  const problem = snapshotProblem(value);
  if (problem) throw new Refusal(`${path}: ${problem}`, { path });
  return value as HostSnapshot;
}

/** A snapshot read back from a bundle: it answers from what it holds, and reads nothing of this machine. */
export function snapshotFromBundle(data: HostSnapshot): Snapshot {
  const missingKey = (path: string): KeyFileFacts => ({
    path,
    exists: false,
    readableByHookUser: null,
    mode: null,
    passphrase: null,
    inStore: false,
  });
  return {
    data,
    readers: (uid) => snapshotReader(data, uid),
    keyFacts: async (path, hook) => data.keys[String(hook.uid)]?.[path] ?? missingKey(path),
    myUid: data.uid,
    replay: true,
  };
}
