/**
 * What a nix-daemon does with a connecting user and with the settings that user's client sends.
 *
 * Pure functions only: callers pass in the user (from src/host/users.ts), the daemon's settings and the
 * client's overridden settings. Behaviour is described in docs/trust.md and was read from
 * the Nix sources: 2.8 `src/nix/daemon.cc` (matchUser, the accept loop), `src/libstore/daemon.cc`
 * (ClientSettings::apply), `src/libstore/remote-store.cc` (setOptions), `src/libstore/store-api.cc`
 * (openFromNonUri, the `auto` store); HEAD `src/nix/unix/daemon.cc`, `src/libstore/daemon.cc`,
 * `src/libstore/store-registration.cc`. Version thresholds for the intermediate releases were found with
 * `git tag --contains` on the commits that changed those lines (see docs/trust.md).
 */

import type { Origin } from "./origin.js";
import { atLeast, type NixVersion } from "./version.js";
import { NIX, since } from "./versions.js";

// ---------------------------------------------------------------------------------------------------------
// Matching trusted-users / allowed-users

/** The parts of a user that the daemon looks at. `lookupUser()` in src/host/users.ts returns a superset. */
export interface TrustSubject {
  /** passwd name of the peer's uid, or the decimal uid when there is no passwd entry. */
  readonly name: string;
  /**
   * Group name of the peer's gid (the gid of the *connecting process*, which for a service is the passwd gid
   * unless the supervisor sets another group), or the decimal gid when the gid has no group entry.
   */
  readonly primaryGroup: string;
  /** Names of the groups whose /etc/group member list names this user (first entry per group name). */
  readonly supplementaryGroups: readonly string[];
}

export type MatchRule = "*" | "name" | "@group (primary gid)" | "@group (member)";

export interface UserListMatch {
  readonly matched: boolean;
  readonly by: MatchRule | null;
  /** The list entry that matched, exactly as written (`*`, `alice`, `@wheel`). */
  readonly entry: string | null;
}

const NO_MATCH: UserListMatch = { matched: false, by: null, entry: null };

/**
 * Nix's matchUser, in Nix's order: `*` anywhere wins first, then the exact user name anywhere, then each
 * `@G` entry in list order, where G matches either the peer's primary group name or a group whose member
 * list contains the user name. An `@G` entry never matches through a primary gid taken from /etc/passwd
 * unless that is also the connecting process's gid (the daemon only sees the process's gid).
 */
export function matchUserList(list: readonly string[], user: TrustSubject): UserListMatch {
  if (list.includes("*")) return { matched: true, by: "*", entry: "*" };
  if (list.includes(user.name)) return { matched: true, by: "name", entry: user.name };
  for (const entry of list) {
    if (!entry.startsWith("@")) continue;
    const g = entry.slice(1);
    if (g === user.primaryGroup) return { matched: true, by: "@group (primary gid)", entry };
    if (user.supplementaryGroups.includes(g)) return { matched: true, by: "@group (member)", entry };
  }
  return NO_MATCH;
}

// ---------------------------------------------------------------------------------------------------------
// Accept / refuse / trust

export const DEFAULT_TRUSTED_USERS: readonly string[] = ["root"];
export const DEFAULT_ALLOWED_USERS: readonly string[] = ["*"];

/**
 * Default of `build-users-group` as the daemon sees it: `nixbld` when the process runs as root, empty
 * otherwise (2.8 globals.cc constructor; HEAD uses the same rule).
 */
export function defaultBuildUsersGroup(daemonUid: number): string {
  return daemonUid === 0 ? "nixbld" : "";
}

export interface DaemonVerdictInput {
  readonly version: NixVersion;
  readonly user: TrustSubject;
  /** The daemon's trusted-users; null/undefined = not set (default `root`). */
  readonly trustedUsers?: readonly string[] | null;
  /** The daemon's allowed-users; null/undefined = not set (default `*`). */
  readonly allowedUsers?: readonly string[] | null;
  /** The daemon's build-users-group; null/undefined = not set (default `nixbld`, the daemon runs as root). */
  readonly buildUsersGroup?: string | null;
}

export interface DaemonVerdict {
  readonly allowed: boolean;
  readonly trusted: boolean;
  /** Plain English, one line. */
  readonly reason: string;
  /** Only when refused: the daemon's error text, e.g. `user 'alice' is not allowed to connect to the Nix daemon`. */
  readonly refusalMessage?: string;
  /** Only when refused: the full line the daemon logs (`error: ` prefix included). */
  readonly refusalLogLine?: string;
  /** Only when accepted: the daemon's log line with the pid left as `<pid>`. */
  readonly acceptLogLine?: string;
  readonly trustedMatch: UserListMatch;
  /** null when the allowed-users list was not consulted (trusted users are always allowed). */
  readonly allowedMatch: UserListMatch | null;
}

function describeMatch(listName: string, m: UserListMatch, user: TrustSubject): string {
  switch (m.by) {
    case "*":
      return `${listName} contains * (every user)`;
    case "name":
      return `listed in ${listName} as ${user.name}`;
    case "@group (primary gid)":
      return `listed in ${listName} as ${m.entry} (${user.primaryGroup} is the primary group of the connecting process)`;
    case "@group (member)": {
      const g = (m.entry ?? "").slice(1);
      return `listed in ${listName} as ${m.entry} (member of ${g} in /etc/group)`;
    }
    default:
      return `not in ${listName}`;
  }
}

function showList(list: readonly string[]): string {
  return list.length === 0 ? "(empty)" : list.join(" ");
}

/**
 * Decide like the daemon's accept loop: trusted if trusted-users matches; refused if neither trusted nor
 * allowed, or if the peer's primary group is build-users-group (even for trusted users and root).
 * Same logic in 2.8 and HEAD; `version` is accepted so callers need not special-case, and for the log text.
 */
export function daemonVerdict(input: DaemonVerdictInput): DaemonVerdict {
  const { user } = input;
  const trustedDefault = input.trustedUsers == null;
  const allowedDefault = input.allowedUsers == null;
  const trustedUsers = input.trustedUsers ?? DEFAULT_TRUSTED_USERS;
  const allowedUsers = input.allowedUsers ?? DEFAULT_ALLOWED_USERS;
  const buildUsersGroup = input.buildUsersGroup ?? "nixbld";

  const trustedMatch = matchUserList(trustedUsers, user);
  const trusted = trustedMatch.matched;
  const allowedMatch = trusted ? null : matchUserList(allowedUsers, user);
  const allowedByList = trusted || (allowedMatch?.matched ?? false);
  const buildGroupRefusal = buildUsersGroup !== "" && user.primaryGroup === buildUsersGroup;

  if (!allowedByList || buildGroupRefusal) {
    const refusalMessage = `user '${user.name}' is not allowed to connect to the Nix daemon`;
    let reason: string;
    if (buildGroupRefusal) {
      reason = `refused: primary group ${user.primaryGroup} is build-users-group`;
    } else {
      const t = trustedDefault
        ? "trusted-users (default: root)"
        : `trusted-users (${showList(trustedUsers)})`;
      const a = allowedDefault ? "allowed-users (default: *)" : `allowed-users (${showList(allowedUsers)})`;
      reason = `refused: ${user.name} is in neither ${t} nor ${a}`;
    }
    return {
      allowed: false,
      trusted: false,
      reason,
      refusalMessage,
      refusalLogLine: `error: error processing connection: ${refusalMessage}`,
      trustedMatch,
      allowedMatch,
    };
  }

  let reason: string;
  if (trusted) {
    reason =
      trustedDefault && trustedMatch.by === "name" && user.name === "root"
        ? "root is trusted by default"
        : describeMatch("trusted-users", trustedMatch, user);
  } else {
    const notTrusted = trustedDefault
      ? "not trusted (trusted-users is the default: root)"
      : `not trusted (not in trusted-users: ${showList(trustedUsers)})`;
    const allowedHow =
      allowedDefault && allowedMatch?.by === "*"
        ? "allowed by the default allowed-users = *"
        : `allowed: ${describeMatch("allowed-users", allowedMatch ?? NO_MATCH, user)}`;
    reason = `${notTrusted}; ${allowedHow}`;
  }
  return {
    allowed: true,
    trusted,
    reason,
    acceptLogLine: `accepted connection from pid <pid>, user ${user.name}${trusted ? " (trusted)" : ""}`,
    trustedMatch,
    allowedMatch,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Client settings sent to the daemon

/** A setting the client would send: canonical name (after `extra-` merging), final value, where it came from. */
export interface OverriddenSetting {
  readonly name: string;
  readonly value: string;
  readonly origin: Origin;
}

export interface DaemonSettingsView {
  /** The daemon's own `substituters` (its nix.conf; default `https://cache.nixos.org/`). */
  readonly substituters: readonly string[];
  /** The daemon's `trusted-substituters` (default empty). */
  readonly trustedSubstituters: readonly string[];
  /**
   * Whether the daemon knows a setting name. A trusted client's unknown setting is silently dropped.
   * Leave out to assume every name is known.
   */
  readonly isKnownSetting?: (name: string) => boolean;
}

export interface ApplyClientSettingsInput {
  readonly version: NixVersion;
  readonly trusted: boolean;
  readonly overridden: readonly OverriddenSetting[];
  readonly daemonSettings: DaemonSettingsView;
}

/** How a setting reached the daemon. */
export type AppliedVia =
  | "fixed field"
  | "trusted client"
  | "allowed for untrusted clients"
  | "substituter filter";

export interface AppliedSetting {
  readonly setting: string;
  /** The value the daemon ends up with (for substituters: the filtered list, possibly empty). */
  readonly value: string;
  /** The value the client sent. */
  readonly requested: string;
  readonly origin: Origin;
  readonly via: AppliedVia;
  /** False when the daemon accepts the value but it changes nothing (e.g. connect-timeout before 2.35). */
  readonly effective: boolean;
  readonly note?: string;
}

export type NixLogLevel = "warning" | "debug";

export interface IgnoredSetting {
  readonly setting: string;
  readonly value: string;
  readonly origin: Origin;
  /** Plain English. */
  readonly why: string;
  /** What Nix logs about it (without the `warning: ` prefix), or null when Nix says nothing. */
  readonly nixMessage: string | null;
  /** Level of nixMessage; null when Nix says nothing. */
  readonly nixLogLevel: NixLogLevel | null;
  /**
   * Whether a user sees nixMessage with default verbosity. The daemon relays these messages to the client at
   * the client's verbosity, so debug lines appear only when the client runs with -vvvv.
   */
  readonly shownByDefault: boolean;
  /** True when the client never sends it (the daemon cannot even see it). */
  readonly notSent: boolean;
}

export interface ClientSettingsResult {
  readonly applied: AppliedSetting[];
  readonly ignored: IgnoredSetting[];
}

/** Sent as fixed fields of SetOptions and applied for every client, trusted or not (2.8 and HEAD). */
export const FIXED_FIELD_SETTINGS: readonly string[] = [
  "keep-failed",
  "keep-going",
  "fallback",
  "max-jobs",
  "max-silent-time",
  "cores",
  "substitute",
];

/** Aliases of the fixed-field settings; the client sends canonical names, we accept both. */
const FIXED_ALIASES: Readonly<Record<string, string>> = {
  "build-max-jobs": "max-jobs",
  "build-max-silent-time": "max-silent-time",
  "build-cores": "cores",
  "build-use-substitutes": "substitute",
};

/** Settings held by the file-transfer settings object (2.8 names). Before 2.35 the daemon never applies them. */
export const FILE_TRANSFER_SETTINGS: readonly string[] = [
  "http2",
  "user-agent-suffix",
  "http-connections",
  "connect-timeout",
  "stalled-download-timeout",
  "download-attempts",
];

/** Names an untrusted client may set, per version (builders only with an empty value, handled separately). */
export function untrustedAllowedSettings(version: NixVersion): string[] {
  const out = ["timeout"];
  if (!since(version, NIX.repeatRemoved)) out.push("repeat");
  if (since(version, NIX.untrustedSilentTime)) out.push("max-silent-time", "build-poll-interval");
  out.push("connect-timeout");
  return out;
}

export function restrictedSettingMessage(name: string): string {
  return `ignoring the client-specified setting '${name}', because it is a restricted setting and you are not a trusted user`;
}

export function untrustedSubstituterMessage(version: NixVersion, url: string): string {
  return since(version, NIX.untrustedSubstituterText)
    ? `ignoring untrusted substituter '${url}', you are not a trusted user.\nRun \`man nix.conf\` for more information on the \`substituters\` configuration option.`
    : `ignoring untrusted substituter '${url}'`;
}

function tokens(value: string): string[] {
  return value.split(/[ \t\n\r]+/).filter((s) => s !== "");
}

/**
 * Filter a client's substituter list like the daemon: keep a URL that is in
 * trusted-substituters ∪ substituters; else, if it has no trailing `/`, keep `URL/` when that is in the set.
 * HEAD compares parsed store references rather than strings; for ordinary URLs this is the same.
 */
export function filterSubstituters(
  requested: readonly string[],
  daemon: Pick<DaemonSettingsView, "substituters" | "trustedSubstituters">,
): { kept: string[]; rejected: string[] } {
  const trustedSet = new Set([...daemon.trustedSubstituters, ...daemon.substituters]);
  const kept: string[] = [];
  const rejected: string[] = [];
  for (const s of requested) {
    if (trustedSet.has(s)) kept.push(s);
    else if (!s.endsWith("/") && trustedSet.has(`${s}/`)) kept.push(`${s}/`);
    else rejected.push(s);
  }
  return { kept, rejected };
}

/**
 * What the daemon does with the client's settings (ClientSettings::apply), for one connection.
 * `overridden` is what the client would send as overrides: user nix.conf files, NIX_CONFIG, flags, values set
 * in code. Fixed-field names in it (max-jobs, cores, ...) are reported as applied: the client sends them as
 * fixed fields regardless. Names the client never sends (show-trace, experimental-features, ...) are reported
 * as ignored with notSent = true.
 */
export function applyClientSettings(input: ApplyClientSettingsInput): ClientSettingsResult {
  const { version, trusted, daemonSettings } = input;
  const applied: AppliedSetting[] = [];
  const ignored: IgnoredSetting[] = [];
  const allowedUntrusted = new Set(untrustedAllowedSettings(version));
  const known = daemonSettings.isKnownSetting ?? (() => true);
  const fileTransferEffective = since(version, NIX.clientFileTransferSettings);
  const restrictedLevel: NixLogLevel = since(version, NIX.restrictedSettingWarning) ? "warning" : "debug";

  const ignore = (
    s: OverriddenSetting,
    why: string,
    nixMessage: string | null,
    level: NixLogLevel | null,
    notSent = false,
  ): void => {
    ignored.push({
      setting: s.name,
      value: s.value,
      origin: s.origin,
      why,
      nixMessage,
      nixLogLevel: nixMessage === null ? null : level,
      shownByDefault: nixMessage !== null && level === "warning",
      notSent,
    });
  };

  const apply = (s: OverriddenSetting, via: AppliedVia, value = s.value): void => {
    let effective = true;
    let note: string | undefined;
    if (FILE_TRANSFER_SETTINGS.includes(s.name) && !fileTransferEffective) {
      effective = false;
      note =
        "the daemon accepts it but before Nix 2.35 only sets libstore settings, so this file-transfer setting has no effect";
    } else if (s.name === "plugin-files") {
      effective = false;
      note = "plugins are loaded when the daemon starts; setting plugin-files later changes nothing";
    }
    applied.push({
      setting: s.name,
      value,
      requested: s.value,
      origin: s.origin,
      via,
      effective,
      ...(note === undefined ? {} : { note }),
    });
  };

  for (const s of input.overridden) {
    const name = s.name;
    const fixed = FIXED_ALIASES[name] ?? (FIXED_FIELD_SETTINGS.includes(name) ? name : undefined);

    // What the client never puts into the overrides map.
    if (fixed !== undefined) {
      applied.push({
        setting: name,
        value: s.value,
        requested: s.value,
        origin: s.origin,
        via: "fixed field",
        effective: true,
        note: `${fixed} is a fixed field of every connection: the daemon applies it whether or not the user is trusted`,
      });
      continue;
    }
    if (name === "show-trace") {
      ignore(s, "show-trace is client-side only; the client does not send it", null, null, true);
      continue;
    }
    if (name === "experimental-features") {
      ignore(
        s,
        "the client does not send experimental-features; the daemon keeps its own (it would also ignore them if sent)",
        null,
        null,
        true,
      );
      continue;
    }
    // Stays inline: 2.36 is past NIX_LATEST, and every NIX entry must hold for the newest modelled release.
    if (name === "use-xdg-base-directories" && atLeast(version, 2, 36)) {
      ignore(s, "client-side only; the client does not send it", null, null, true);
      continue;
    }
    if (name === "plugin-files" && since(version, NIX.clientSkipsPluginFiles)) {
      ignore(s, "the client does not send plugin-files (since Nix 2.24)", null, null, true);
      continue;
    }

    // Daemon side, in the order of ClientSettings::apply.
    if (name === "ssh-auth-sock") {
      ignore(s, "ssh-auth-sock is obsolete; the daemon ignores it", null, null);
      continue;
    }
    if (name === "plugin-files" && since(version, NIX.clientPluginFilesIgnored)) {
      ignore(
        s,
        "the daemon never loads plugins named by a client",
        "Ignoring the client-specified plugin-files.\nThe client specifying plugins to the daemon never made sense, and was removed in Nix >=2.14.",
        "warning",
      );
      continue;
    }
    const emptyBuilders = name === "builders" && s.value === "";
    if (trusted || allowedUntrusted.has(name) || emptyBuilders) {
      if (!known(name)) {
        ignore(s, "the daemon does not know this setting and silently drops it", null, null);
        continue;
      }
      const via: AppliedVia = trusted ? "trusted client" : "allowed for untrusted clients";
      apply(s, via);
      continue;
    }
    if (name === "substituters" || name === "binary-caches") {
      const { kept, rejected } = filterSubstituters(tokens(s.value), daemonSettings);
      applied.push({
        setting: "substituters",
        value: kept.join(" "),
        requested: s.value,
        origin: s.origin,
        via: "substituter filter",
        effective: true,
        note:
          kept.length === 0
            ? "no URL is in the daemon's trusted-substituters or substituters: this connection gets no substituters at all"
            : "only URLs listed in the daemon's trusted-substituters or substituters are kept",
      });
      for (const url of rejected) {
        ignored.push({
          setting: "substituters",
          value: url,
          origin: s.origin,
          why: `${url} is in neither trusted-substituters nor substituters of the daemon, and the user is not trusted`,
          nixMessage: untrustedSubstituterMessage(version, url),
          nixLogLevel: "warning",
          shownByDefault: true,
          notSent: false,
        });
      }
      continue;
    }
    const why =
      name === "builders"
        ? "builders from an untrusted user is dropped unless it is empty (the daemon uses its own builders)"
        : `${name} is a restricted setting and the user is not trusted`;
    ignore(
      s,
      restrictedLevel === "debug"
        ? `${why}; Nix ${version.major}.${version.minor} says so only at debug level (the daemon relays it to the client, which shows it only with -vvvv), so it looks silently ignored`
        : why,
      restrictedSettingMessage(name),
      restrictedLevel,
    );
  }
  return { applied, ignored };
}

// ---------------------------------------------------------------------------------------------------------
// Which store does a client use?

export type StoreMode = "daemon" | "local" | "other";

export interface StoreModeInput {
  /** The `store` setting (default `$NIX_REMOTE`, else `auto`); "" means auto. */
  readonly storeSetting: string;
  readonly uid: number;
  /**
   * access(stateDir, R_OK|W_OK) == 0, where stateDir is the store's state dir (`/nix/var/nix` by default,
   * `NIX_STATE_DIR`, or the `state` parameter). This is what Nix's `auto` rule checks, not the store dir;
   * for root it is true whenever the directory exists on a writable file system.
   */
  readonly stateDirWritable?: boolean;
  /** Deprecated name for stateDirWritable (Nix checks the state dir, see above). */
  readonly storeDirWritable?: boolean;
  /** The daemon socket path (default `/nix/var/nix/daemon-socket/socket`) exists. */
  readonly daemonSocketExists: boolean;
}

/**
 * Nix's `auto` store rule (2.8 store-api.cc openFromNonUri; HEAD store-registration.cc):
 * local when the state dir is readable and writable, else daemon when the socket exists, else local
 * (HEAD on Linux may then pick a chroot store under ~/.local/share/nix/root, still a local store).
 * `daemon` and `unix://…` are the daemon; `local` and absolute paths are local stores.
 * With a local store there is no daemon: every setting applies and the build hook (so SSH) runs as the user.
 */
export function storeMode(input: StoreModeInput): StoreMode {
  const s = input.storeSetting.trim().split("?")[0] ?? "";
  if (s === "" || s === "auto") {
    const writable = input.stateDirWritable ?? input.storeDirWritable ?? input.uid === 0;
    if (writable) return "local";
    if (input.daemonSocketExists) return "daemon";
    return "local";
  }
  if (s === "daemon" || s.startsWith("unix://")) return "daemon";
  if (s === "local" || s.startsWith("local://")) return "local";
  if (!s.includes("://") && s.includes("/")) return "local";
  return "other";
}
