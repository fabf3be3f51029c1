/**
 * Users and groups as the Nix daemon sees them.
 *
 * Pure parsers for /etc/passwd and /etc/group text, lookups over parsed entries, and a thin reader of the
 * real files. When a user or group is not in the files (LDAP, SSSD, systemd's nss-systemd DynamicUser, ...)
 * the reader can ask `getent` (glibc's NSS front end, package libc-bin, always present on Debian) as a
 * fallback: `getent passwd KEY`, `getent group KEY`, and `getent group` (enumeration) for member lists.
 * Enumeration may not list every network group; the daemon itself uses getgrnam() per `@group` entry, which
 * does reach them. That gap is documented in docs/trust.md.
 *
 * Lookup semantics follow glibc's files backend: the first entry with a matching name or id wins, comment
 * (`#`) and blank lines are skipped, NIS compat lines (`+`/`-`) and malformed lines are skipped.
 */

import { readFileSync } from "node:fs";
import type { SnapshotUser } from "../nix/snapshot.js";
import { childProcess } from "../os/lazy.js";

export interface PasswdEntry {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly gecos: string;
  readonly home: string;
  readonly shell: string;
}

export interface GroupEntry {
  readonly name: string;
  readonly gid: number;
  readonly members: readonly string[];
}

/**
 * A user as Nix sees it: the passwd entry (or, with none, the decimal uid as the name and "" as home and
 * shell), the primary group's name (or the decimal gid), and the groups whose member lists name the user,
 * in file order. The snapshot's type, so that a snapshot holds exactly what this reads.
 */
export type UserInfo = SnapshotUser;

export interface UserDb {
  readonly passwd: readonly PasswdEntry[];
  readonly groups: readonly GroupEntry[];
}

const ID = /^\d+$/;

function dataLines(text: string): string[] {
  return text
    .split("\n")
    .map((l) => (l.endsWith("\r") ? l.slice(0, -1) : l))
    .filter((l) => {
      const t = l.trimStart();
      return t !== "" && !t.startsWith("#") && !t.startsWith("+") && !t.startsWith("-");
    });
}

/** Parse /etc/passwd text (7 colon-separated fields). Malformed lines are skipped. */
export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of dataLines(text)) {
    const f = line.split(":");
    if (f.length !== 7) continue;
    const [name, , uid, gid, gecos, home, shell] = f as [
      string,
      string,
      string,
      string,
      string,
      string,
      string,
    ];
    if (name === "" || !ID.test(uid) || !ID.test(gid)) continue;
    out.push({ name, uid: Number(uid), gid: Number(gid), gecos, home, shell });
  }
  return out;
}

/** Parse /etc/group text (4 colon-separated fields; members comma-separated). Malformed lines are skipped. */
export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of dataLines(text)) {
    const f = line.split(":");
    if (f.length !== 4) continue;
    const [name, , gid, members] = f as [string, string, string, string];
    if (name === "" || !ID.test(gid)) continue;
    out.push({
      name,
      gid: Number(gid),
      members: members
        .split(",")
        .map((m) => m.trim())
        .filter((m) => m !== ""),
    });
  }
  return out;
}

/** First passwd entry whose name (string) or uid (number, or an all-digit string with no such name) matches. */
export function findPasswd(passwd: readonly PasswdEntry[], query: string | number): PasswdEntry | null {
  if (typeof query === "string") {
    const byName = passwd.find((p) => p.name === query);
    if (byName) return byName;
    if (!ID.test(query)) return null;
  }
  const uid = Number(query);
  return passwd.find((p) => p.uid === uid) ?? null;
}

/** First group entry whose name (string) or gid (number, or an all-digit string with no such name) matches. */
export function findGroup(groups: readonly GroupEntry[], query: string | number): GroupEntry | null {
  if (typeof query === "string") {
    const byName = groups.find((g) => g.name === query);
    if (byName) return byName;
    if (!ID.test(query)) return null;
  }
  const gid = Number(query);
  return groups.find((g) => g.gid === gid) ?? null;
}

/** Group name for a gid, or the decimal gid when there is none (as the Nix daemon does). */
export function groupNameOf(groups: readonly GroupEntry[], gid: number): string {
  return findGroup(groups, gid)?.name ?? String(gid);
}

/** User name for a uid, or the decimal uid when there is none (as the Nix daemon does). */
export function userNameOf(passwd: readonly PasswdEntry[], uid: number): string {
  return findPasswd(passwd, uid)?.name ?? String(uid);
}

/**
 * Groups whose member list contains `user`. Like getgrnam(), only the first entry of each group name
 * counts, because that is the entry the daemon's `@group` check sees.
 */
export function memberGroups(groups: readonly GroupEntry[], user: string): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const g of groups) {
    if (seen.has(g.name)) continue;
    seen.add(g.name);
    if (g.members.includes(user)) out.push(g.name);
  }
  return out;
}

/** Pure lookup over parsed entries: by name, or by uid (number or all-digit string). Null when absent. */
export function resolveUser(db: UserDb, query: string | number): UserInfo | null {
  const p = findPasswd(db.passwd, query);
  if (p) {
    return {
      name: p.name,
      uid: p.uid,
      gid: p.gid,
      home: p.home,
      shell: p.shell,
      primaryGroup: groupNameOf(db.groups, p.gid),
      supplementaryGroups: memberGroups(db.groups, p.name),
      source: "files",
    };
  }
  return null;
}

/**
 * The identity the daemon derives from a peer's SO_PEERCRED (uid, gid): names from passwd/group, decimal
 * ids when missing. Member lists are looked up by the derived name.
 */
export function peerIdentity(
  db: UserDb,
  uid: number,
  gid: number,
): { name: string; primaryGroup: string; supplementaryGroups: string[] } {
  const name = userNameOf(db.passwd, uid);
  return {
    name,
    primaryGroup: groupNameOf(db.groups, gid),
    supplementaryGroups: memberGroups(db.groups, name),
  };
}

// ---------------------------------------------------------------------------------------------------------
// The real system

export interface SystemLookupOptions {
  readonly passwdPath?: string;
  readonly groupPath?: string;
  /** Ask `getent` when the files have no entry (default true). */
  readonly getent?: boolean;
}

function readText(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

function getent(db: "passwd" | "group", key?: string): string | null {
  try {
    return childProcess().execFileSync("getent", key === undefined ? [db] : [db, key], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
      timeout: 5000,
    });
  } catch {
    return null; // not found (exit 2), getent missing, or timeout
  }
}

/** Read /etc/passwd and /etc/group (or the given paths). */
export function readUserDb(opts: SystemLookupOptions = {}): UserDb {
  return {
    passwd: parsePasswd(readText(opts.passwdPath ?? "/etc/passwd")),
    groups: parseGroup(readText(opts.groupPath ?? "/etc/group")),
  };
}

/**
 * Look a user up by name or uid on this machine: /etc/passwd and /etc/group first, then (optionally) getent.
 * Returns null when there is no entry; use `systemPeerIdentity` for the daemon's decimal-id fallback.
 */
export function lookupUser(query: string | number, opts: SystemLookupOptions = {}): UserInfo | null {
  const db = readUserDb(opts);
  const fromFiles = resolveUser(db, query);
  if (fromFiles) return fromFiles;
  if (opts.getent !== false) {
    const line = getent("passwd", String(query));
    const p = line === null ? undefined : parsePasswd(line)[0];
    if (p) {
      const enumerated = parseGroup(getent("group") ?? "");
      const groups = [...db.groups, ...enumerated];
      let primaryGroup = groupNameOf(groups, p.gid);
      if (primaryGroup === String(p.gid)) {
        const g = parseGroup(getent("group", String(p.gid)) ?? "")[0];
        if (g) primaryGroup = g.name;
      }
      return {
        name: p.name,
        uid: p.uid,
        gid: p.gid,
        home: p.home,
        shell: p.shell,
        primaryGroup,
        supplementaryGroups: memberGroups(groups, p.name),
        source: "getent",
      };
    }
  }
  return null;
}

/** Look a group up by name or gid: /etc/group first, then (optionally) `getent group KEY`. */
export function lookupGroup(query: string | number, opts: SystemLookupOptions = {}): GroupEntry | null {
  const db = readUserDb(opts);
  const g = findGroup(db.groups, query);
  if (g) return g;
  if (opts.getent === false) return null;
  const line = getent("group", String(query));
  return line === null ? null : (parseGroup(line)[0] ?? null);
}

/** `peerIdentity` over this machine's /etc/passwd and /etc/group (files only; NSS-only users resolve to decimal ids here). */
export function systemPeerIdentity(
  uid: number,
  gid: number,
  opts: SystemLookupOptions = {},
): { name: string; primaryGroup: string; supplementaryGroups: string[] } {
  return peerIdentity(readUserDb(opts), uid, gid);
}
