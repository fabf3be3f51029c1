/**
 * The host snapshot: everything the user view (show, lint, route, config) reads from a machine, as plain
 * data that survives `JSON.stringify`/`JSON.parse` exactly. src/app/snapshot.ts reads it (the one place
 * that reads the machine for the user view); {@link resolveUserView} (src/nix/user-view.ts) turns it into
 * the view without any I/O; `nix-builders report` writes it as a support bundle and `--from FILE` reads
 * one back (docs/report.md).
 *
 * Files are kept as the identity that read them saw them (by uid): the text, or the reason it could not
 * be read (ENOENT, EISDIR, EACCES, EFBIG …), and stat facts. Nothing is ever read for the snapshot that
 * the reading identity could not read itself, and key material is never kept (see {@link redactText}).
 */
import type { ExistsResult, FileReader, MachineFacts, ReadResult } from "./conf.js";
import type { KeyFileFacts } from "./lint.js";
import type { Origin } from "./origin.js";
import { looksLikePrivateKey } from "./redact.js";
import type { NixVersion } from "./version.js";

/** The `format` field of a bundle. */
export const SNAPSHOT_FORMAT = "nix-builders-report";
/** The `formatVersion` this tool writes and reads. */
export const SNAPSHOT_VERSION = 1;

/** Facts about a key or machines file, as one identity sees them (stat and access as that identity). */
export interface PathFacts {
  /** stat(2) (following links) worked. */
  exists: boolean;
  /** errno name when stat failed (ENOENT, EACCES, ENOTDIR, ELOOP…). */
  statError?: string;
  isFile: boolean | null;
  mode: number | null;
  ownerUid: number | null;
  /** realpath, when it could be computed. */
  real: string | null;
  /** open(O_RDONLY) as that identity worked (a FIFO or device is never opened: null). */
  readable: boolean | null;
}

/** A {@link FileReader} that can also answer stat/readability questions as its identity. */
export interface IdentityReader extends FileReader {
  /** Facts about `path` as this reader's identity. */
  facts(path: string): PathFacts;
  /** The identity's name, for messages ("unreadable for NAME"). */
  readonly who: string;
}

/** A user as the view needs it (passwd entry plus group names). */
export interface SnapshotUser {
  /** passwd name, or the decimal uid when there is no passwd entry (what Nix uses then). */
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  /** passwd home ("" when there is no passwd entry). */
  readonly home: string;
  /** passwd shell ("" when there is no passwd entry). */
  readonly shell: string;
  /** Group name of `gid`, or the decimal gid when no group has that id. */
  readonly primaryGroup: string;
  /** Names of the groups whose member list names this user, in file order (first entry per group name). */
  readonly supplementaryGroups: readonly string[];
  /** Where the passwd entry came from. */
  readonly source: "files" | "getent";
}

/** What one identity saw of each file it was asked about. */
export interface SnapshotFiles {
  /** The identity's name ("this process", or the user name). */
  who: string;
  read: Record<string, ReadResult>;
  exists: Record<string, ExistsResult>;
  facts: Record<string, PathFacts>;
}

/** The installed Nix, as found on the machine. */
export interface SnapshotNix {
  install: { nixPath: string; binDir: string; version: NixVersion; versionText: string } | null;
  /** Why the version of a `nix` that was found could not be read. */
  problem: string | null;
}

export interface HostSnapshot {
  format: typeof SNAPSHOT_FORMAT;
  formatVersion: typeof SNAPSHOT_VERSION;
  /** When it was taken (ISO 8601). Informative only. */
  takenAt: string;
  /** The uid of the process that took it (root, or a user looking at their own view). */
  uid: number;
  nix: SnapshotNix;
  /** The Nix version whose rules the snapshot was read with, and why. */
  version: NixVersion;
  versionSource: "installed" | "flag" | "latest";
  versionNote?: string;
  facts: MachineFacts & { source: "nix" | "computed" };
  /** The user whose builds are viewed, and root (the daemon's identity); null when there is no root entry. */
  user: SnapshotUser;
  root: SnapshotUser | null;
  /** True when the view is for a named user with a service's clean environment (`--user`). */
  serviceEnv: boolean;
  /** The environment Nix runs with for the user (for the caller's own view: the variables Nix reads). */
  env: Record<string, string>;
  /** Group names and members (build-users-group, `@group` in trusted-users). */
  groups: { name: string; gid: number; members: string[] }[];
  /** Client overrides given with the view (`--builders`, an agent's nixSettings). */
  clientOverrides: { name: string; value: string; origin?: Origin }[];
  builders: string | null;
  /** The local store's state directory and daemon socket, as the user's Nix finds them. */
  store: { stateDir: string; socket: string; socketExists: boolean; stateDirWritable: boolean };
  /** Files by the uid of the identity that read them. */
  files: Record<string, SnapshotFiles>;
  /** ssh key facts (never the key) by the hook user's uid and the column-3 path. */
  keys: Record<string, Record<string, KeyFileFacts>>;
  /** The build slots in use when the snapshot was taken (route), by state directory. */
  load: unknown;
  /** What `--agent` selected, when given (plain data; see src/app/snapshot.ts). */
  agent?: unknown;
  /** What was left out or changed, one line each (docs/report.md). */
  redactions: string[];
}

/** An ENOENT-like answer for something the snapshot does not hold: never invented content. */
const NOT_TAKEN = "ENOTCAPTURED";

/** The reader of `uid` over a snapshot: answers exactly what that identity saw when it was taken. */
export function snapshotReader(s: HostSnapshot, uid: number): IdentityReader {
  const f = s.files[String(uid)];
  return {
    who: f?.who ?? String(uid),
    read: (p) => f?.read[p] ?? { ok: false, code: NOT_TAKEN, detail: "not in the snapshot" },
    exists: (p) => f?.exists[p] ?? { ok: false, code: NOT_TAKEN },
    facts: (p) =>
      f?.facts[p] ?? {
        exists: false,
        statError: NOT_TAKEN,
        isFile: null,
        mode: null,
        ownerUid: null,
        real: null,
        readable: null,
      },
  };
}

/** Settings whose values are secrets: kept as `host=<removed>` in a snapshot. */
const SECRET_SETTING = /^([ \t]*(?:extra-)?access-tokens[ \t]*=)(.*)$/;

/**
 * The text kept for a file: a private key (or a file that contains one) is replaced by one comment line,
 * and the values of `access-tokens` lose their tokens. `note` receives one line per change.
 */
export function redactText(path: string, text: string, note: (line: string) => void): string {
  if (looksLikePrivateKey(text)) {
    note(`${path}: looks like a private key; its text is not included`);
    return "# (a private key: removed by nix-builders report)\n";
  }
  if (!text.includes("access-tokens")) return text;
  let changed = false;
  const out = text
    .split("\n")
    .map((line) => {
      const m = SECRET_SETTING.exec(line);
      if (!m) return line;
      changed = true;
      const words = m[2]!.split(/[ \t]+/).filter(Boolean);
      return `${m[1]} ${words.map((w) => `${w.split("=")[0]}=<removed>`).join(" ")}`;
    })
    .join("\n");
  if (changed) note(`${path}: the tokens of access-tokens are replaced by <removed>`);
  return out;
}

/** Why `value` is not a snapshot this tool reads, or null when it is one. */
export function snapshotProblem(value: unknown): string | null {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return "not a JSON object";
  const v = value as Record<string, unknown>;
  if (v["format"] !== SNAPSHOT_FORMAT)
    return `not a nix-builders report (format is not '${SNAPSHOT_FORMAT}')`;
  if (v["formatVersion"] !== SNAPSHOT_VERSION)
    return `report format version ${String(v["formatVersion"])} is not supported (this tool reads version ${SNAPSHOT_VERSION})`;
  for (const k of ["user", "facts", "files", "store", "nix", "version", "env", "keys"])
    if (v[k] === null || typeof v[k] !== "object") return `'${k}' is missing or not an object`;
  if (typeof v["uid"] !== "number") return "'uid' is missing or not a number";
  return null;
}
