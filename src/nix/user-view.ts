/**
 * The view of Nix that one user's builds really get, resolved from a {@link HostSnapshot} without any
 * I/O: the user's own configuration, the daemon's (as root, under a daemon), the daemon's trust verdict,
 * which of the user's settings the daemon honours, where `builders` comes from, who runs the build hook
 * (root under a daemon, the user otherwise) and the machines the hook parses.
 *
 * Files are read through the snapshot's readers (one per identity); the caller may pass live readers
 * instead (src/app/snapshot.ts), which read the machine lazily and record what they saw.
 */
import { type ConfigFlag, type ConfigView, type EffectiveSetting, loadConfig } from "./conf.js";
import { type BuildersResult, parseBuilders } from "./machines.js";
import type { Origin } from "./origin.js";
import { type HostSnapshot, type IdentityReader, type SnapshotUser, snapshotReader } from "./snapshot.js";
import {
  type AppliedSetting,
  applyClientSettings,
  type DaemonVerdict,
  daemonVerdict,
  type IgnoredSetting,
  type OverriddenSetting,
  type StoreMode,
  storeMode,
} from "./trust.js";
import type { NixVersion } from "./version.js";
import { NIX, since } from "./versions.js";

export interface ResolvedView {
  version: NixVersion;
  user: SnapshotUser;
  /** True when the view is computed for a named user with a service's clean environment. */
  serviceEnv: boolean;
  env: Record<string, string | undefined>;
  client: ConfigView;
  /** The daemon's own configuration (as root), or null when the user's builds do not go through a daemon. */
  daemon: ConfigView | null;
  storeMode: StoreMode;
  /**
   * No daemon, and the user cannot write the local store's state directory: every Nix command that opens
   * the store fails with `nixMessage` (the text depends on the version). Null otherwise.
   */
  storeUnusable: { stateDir: string; nixMessage: string } | null;
  verdict: DaemonVerdict | null;
  trusted: boolean;
  trustReason: string;
  ignored: IgnoredSetting[];
  applied: AppliedSetting[];
  /** The `builders` value the build hook sees, and where it came from. */
  builders: { value: string; origin: Origin[]; from: "daemon" | "user" };
  /** Who runs the build hook, and so ssh: root under a daemon, the user otherwise. */
  hookUser: SnapshotUser;
  /** The hook's `system` (the default of the systems column). */
  hookSystem: string;
  machines: BuildersResult;
  /** Reads files as the user (their config files and includes): what Nix running as them can read. */
  reader: IdentityReader;
  /** Reads files as the daemon (root), for the daemon's configuration. */
  daemonReader: IdentityReader | null;
  /** Reads files as the build hook's user (the machines files, as `builders = @FILE` is read). */
  hookReader: IdentityReader;
}

/** The text form of a setting's value, as a client would send it to the daemon. */
export function settingText(value: unknown): string {
  if (Array.isArray(value)) {
    return value.map((x) => (Array.isArray(x) ? `${x[0]}=${x[1]}` : String(x))).join(" ");
  }
  if (value && typeof value === "object") {
    return Object.entries(value as Record<string, unknown>)
      .map(([k, v]) => `${k}=${String(v)}`)
      .join(" ");
  }
  return String(value);
}

function lastOrigin(s: EffectiveSetting): Origin {
  return s.origin[s.origin.length - 1] ?? { kind: "default" };
}

/**
 * What Nix prints when a user without write access opens the local store at `stateDir` (no daemon):
 * 2.8 fails fixing the mode of `profiles/per-user`; 2.30 fails taking the big lock.
 */
export function localStoreDeniedMessage(version: NixVersion, stateDir: string): string {
  return since(version, NIX.localStoreBigLockText)
    ? `opening lock file '${stateDir}/db/big-lock': Permission denied`
    : `could not set permissions on '${stateDir}/profiles/per-user' to 755: Operation not permitted`;
}

/** The user's configuration as Nix running as `user` with `env` loads it (read through `fs`). */
export function loadConfigAs(
  s: Pick<HostSnapshot, "facts">,
  version: NixVersion,
  user: SnapshotUser,
  env: Record<string, string | undefined>,
  fs: IdentityReader,
  flags: ConfigFlag[] = [],
): ConfigView {
  return loadConfig({
    version,
    env,
    passwdHome: user.home,
    fs,
    machine: { ...s.facts, isRoot: user.uid === 0 },
    flags,
  });
}

/** The readers of a resolution: the snapshot's own, or live ones (they must answer as that uid). */
export type ReaderSource = (uid: number) => IdentityReader;

interface DaemonSide {
  daemon: ConfigView;
  verdict: DaemonVerdict;
  ignored: IgnoredSetting[];
  applied: AppliedSetting[];
  builders: ResolvedView["builders"];
  hookSystem: string;
}

/** Under a daemon: its configuration (as root), its verdict on the user, and which client settings apply. */
function daemonSide(
  s: HostSnapshot,
  version: NixVersion,
  user: SnapshotUser,
  root: SnapshotUser,
  client: ConfigView,
  readers: ReaderSource,
): DaemonSide {
  // The daemon is started by the service manager as root, with no HOME: Nix then uses root's passwd home.
  const daemon = loadConfigAs(s, version, root, {}, readers(0));
  const list = (name: string): string[] | null => {
    const v = daemon.settings.get(name);
    return v ? (v.value as string[]) : null;
  };
  const verdict = daemonVerdict({
    version,
    user,
    trustedUsers: list("trusted-users"),
    allowedUsers: list("allowed-users"),
    buildUsersGroup: settingText(daemon.settings.get("build-users-group")?.value ?? "nixbld"),
  });
  const overridden: OverriddenSetting[] = [];
  for (const c of client.settings.values())
    if (c.overridden) overridden.push({ name: c.name, value: settingText(c.value), origin: lastOrigin(c) });
  const result = applyClientSettings({
    version,
    trusted: verdict.trusted,
    overridden,
    daemonSettings: {
      substituters: list("substituters") ?? [],
      trustedSubstituters: list("trusted-substituters") ?? [],
    },
  });
  const fromUser = result.applied.find((a) => a.setting === "builders");
  const daemonBuilders = daemon.settings.get("builders");
  const builders: ResolvedView["builders"] = fromUser
    ? {
        value: fromUser.value,
        origin: client.settings.get("builders")?.origin ?? [fromUser.origin],
        from: "user",
      }
    : {
        value: settingText(daemonBuilders?.value ?? ""),
        origin: daemonBuilders?.origin ?? [{ kind: "default" }],
        from: "daemon",
      };
  const hookSystem = settingText(daemon.settings.get("system")?.value ?? s.facts.system);
  return { daemon, verdict, ignored: result.ignored, applied: result.applied, builders, hookSystem };
}

/** Why settings apply as they do without a daemon (or with another store). */
function noDaemonReason(
  user: SnapshotUser,
  mode: StoreMode,
  storeSetting: string,
  unusable: ResolvedView["storeUnusable"],
): string {
  if (unusable)
    return `no daemon, and ${user.name} cannot write ${unusable.stateDir}: every Nix command that opens the store fails (start the nix-daemon, or use a store ${user.name} can write)`;
  return mode === "local"
    ? `no daemon: ${user.name} uses the store directly, so every setting applies and the build hook runs as ${user.name}`
    : `the store is '${storeSetting}', not the local daemon: settings apply on the client side`;
}

/**
 * The whole view of the snapshot's user, following `version`'s rules. Pure: every file comes from
 * `readers` (by default the snapshot's own).
 */
export function resolveUserView(
  s: HostSnapshot,
  version: NixVersion,
  readers: ReaderSource = (uid) => snapshotReader(s, uid),
): ResolvedView {
  const user = s.user;
  const env: Record<string, string | undefined> = { ...s.env };
  const flags: ConfigFlag[] = s.clientOverrides.map((o) => ({
    name: o.name,
    value: o.value,
    via: "option" as const,
    ...(o.origin ? { origin: o.origin } : {}),
  }));
  if (s.builders !== null) flags.push({ name: "builders", value: s.builders });
  // as that user: a root-only include or a nix.conf linked to /etc/shadow is unreadable, as for Nix
  const client = loadConfigAs(s, version, user, env, readers(user.uid), flags);

  const storeSetting = settingText(client.settings.get("store")?.value ?? "auto");
  const { stateDir, stateDirWritable } = s.store;
  const mode = storeMode({
    storeSetting,
    uid: user.uid,
    stateDirWritable,
    daemonSocketExists: s.store.socketExists,
  });
  const plainLocal = ["", "auto", "local"].includes(storeSetting.trim());
  const storeUnusable =
    mode === "local" && plainLocal && user.uid !== 0 && !stateDirWritable
      ? { stateDir, nixMessage: localStoreDeniedMessage(version, stateDir) }
      : null;
  const root = s.root ?? { ...user, name: "root", uid: 0, gid: 0, home: "/root" };

  const side = mode === "daemon" ? daemonSide(s, version, user, root, client, readers) : null;
  const clientBuilders = client.settings.get("builders");
  const builders: ResolvedView["builders"] = side?.builders ?? {
    value: settingText(clientBuilders?.value ?? ""),
    origin: clientBuilders?.origin ?? [{ kind: "default" }],
    from: "user",
  };
  const hookUser = side ? root : user;
  const hookSystem = side?.hookSystem ?? settingText(client.settings.get("system")?.value ?? s.facts.system);
  const hookReader = readers(hookUser.uid);
  const where = builders.origin[builders.origin.length - 1];
  const machines = parseBuilders({
    spec: builders.value,
    version,
    defaultSystem: hookSystem,
    // the hook reads `@FILE` with its own credentials (root under a daemon, the user otherwise)
    fs: hookReader,
    cwd: "/",
    origin:
      where && where.kind === "file" ? { file: where.file, line: where.line } : { file: null, line: null },
  });

  return {
    version,
    user,
    serviceEnv: s.serviceEnv,
    env,
    client,
    daemon: side?.daemon ?? null,
    storeMode: mode,
    storeUnusable,
    verdict: side?.verdict ?? null,
    trusted: side ? side.verdict.trusted : true,
    trustReason: side ? side.verdict.reason : noDaemonReason(user, mode, storeSetting, storeUnusable),
    ignored: side?.ignored ?? [],
    applied: side?.applied ?? [],
    builders,
    hookUser,
    hookSystem,
    machines,
    reader: readers(user.uid),
    daemonReader: side ? readers(0) : null,
    hookReader,
  };
}

export interface ViewError {
  message: string;
  file: string | null;
  line: number | null;
  where: string;
}

/** Every error that stops Nix for this user: config errors (client and daemon) and the machines error. */
export function viewErrors(
  v: Pick<ResolvedView, "client" | "daemon" | "machines" | "storeUnusable">,
): ViewError[] {
  const errors: ViewError[] = [];
  if (v.client.error)
    errors.push({
      message: v.client.error.nixMessage,
      file: v.client.error.file,
      line: v.client.error.line,
      where: "user config",
    });
  if (v.daemon?.error)
    errors.push({
      message: v.daemon.error.nixMessage,
      file: v.daemon.error.file,
      line: v.daemon.error.line,
      where: "daemon config",
    });
  if (v.machines.error)
    errors.push({
      message: v.machines.error.message,
      file: v.machines.error.file,
      line: v.machines.error.line,
      where: "machines",
    });
  // last: a configuration or machines error is what Nix meets first when the user runs it
  if (v.storeUnusable)
    errors.push({ message: v.storeUnusable.nixMessage, file: null, line: null, where: "store" });
  return errors;
}
