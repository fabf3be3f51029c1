/**
 * The view of Nix that one user's builds really get: the user's own configuration, the daemon's,
 * the daemon's trust verdict, which of the user's settings the daemon honours, and the machines
 * the build hook will parse. This is where commands read the host; everything after that is the
 * pure core in src/nix.
 */
import { accessSync, constants, existsSync, statSync } from "node:fs";
import { type IdentityReader, readerFor } from "../host/fs-reader.js";
import { type MachineFacts, machineFacts } from "../host/machine-facts.js";
import { type NixInstall, probeNix } from "../host/nix.js";
import { serviceEnv } from "../host/run-as.js";
import { readUserDb, resolveUser, type UserDb, type UserInfo } from "../host/users.js";
import { type ConfigFlag, type ConfigView, type EffectiveSetting, loadConfig } from "../nix/conf.js";
import { type BuildersResult, parseBuilders } from "../nix/machines.js";
import type { Origin } from "../nix/origin.js";
import {
  type AppliedSetting,
  applyClientSettings,
  type DaemonVerdict,
  daemonVerdict,
  type IgnoredSetting,
  type OverriddenSetting,
  type StoreMode,
  storeMode,
} from "../nix/trust.js";
import {
  atLeast,
  formatNixVersion,
  modelledVersion,
  NIX_LATEST,
  type NixVersion,
  parseNixVersion,
} from "../nix/version.js";
import { UsageError } from "./io.js";

export interface ViewOptions {
  /** --user NAME: that user's passwd home and a clean environment, as a service for that user has. */
  user?: string;
  /** --nix-version X.Y: follow that version's rules instead of the installed Nix's. */
  nixVersion?: string;
  /** --builders SPEC: like Nix's flag, a client-side setting (subject to the daemon's trust). */
  builders?: string;
  /** Extra client settings (e.g. hercules-ci-agent's nixSettings), applied like command-line options. */
  clientOverrides?: { name: string; value: string; origin?: Origin }[];
  /** Extra environment for the user (e.g. a service's Environment= lines). */
  userEnv?: Record<string, string>;
  /** The environment of this process (used when no --user is given). */
  env: NodeJS.ProcessEnv;
}

export interface NixContext {
  nix: NixInstall | null;
  version: NixVersion;
  versionSource: "installed" | "flag" | "latest";
  /** Why the rules are not the installed Nix's although a `nix` was found (its version could not be read). */
  versionNote?: string;
  facts: MachineFacts;
  db: UserDb;
}

export interface UserView extends NixContext {
  user: UserInfo;
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
  hookUser: UserInfo;
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

/** The reader for the files Nix reads as `user`: with that user's credentials (see host/fs-reader). */
export function readerForUser(user: UserInfo): IdentityReader {
  return readerFor({ name: user.name, uid: user.uid, gid: user.gid, home: user.home, shell: user.shell });
}

export async function nixContext(nixVersion: string | undefined): Promise<NixContext> {
  const probe = await probeNix();
  const nix = probe.install;
  let version: NixVersion;
  let versionSource: NixContext["versionSource"];
  let versionNote: string | undefined;
  if (nixVersion !== undefined) {
    const v = parseNixVersion(nixVersion);
    if (!v) throw new UsageError(`--nix-version: not a version: '${nixVersion}' (expected X.Y, e.g. 2.8)`);
    const m = modelledVersion(v);
    if (m.error) throw new UsageError(m.error);
    if (m.note) versionNote = m.note;
    version = v;
    versionSource = "flag";
  } else if (nix) {
    version = nix.version;
    versionSource = "installed";
  } else {
    version = NIX_LATEST;
    versionSource = "latest";
    if (probe.problem)
      versionNote = `cannot read the version of the installed Nix: ${probe.problem}; following Nix ${formatNixVersion(NIX_LATEST)}'s rules (the newest modelled); pass --nix-version X.Y to choose`;
  }
  const facts = await machineFacts(nix, version);
  return { nix, version, versionSource, ...(versionNote ? { versionNote } : {}), facts, db: readUserDb() };
}

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

export function loadUserConfig(
  ctx: NixContext,
  user: UserInfo,
  env: Record<string, string | undefined>,
  flags: ConfigFlag[] = [],
): ConfigView {
  return loadConfig({
    version: ctx.version,
    env,
    passwdHome: user.home,
    // as that user: a root-only include or a nix.conf linked to /etc/shadow is unreadable, as for Nix
    fs: readerForUser(user),
    machine: { ...ctx.facts, isRoot: user.uid === 0 },
    flags,
  });
}

/** Compute the whole view for a user (the current one when `opts.user` is not given). */
export async function userView(opts: ViewOptions, given?: NixContext): Promise<UserView> {
  const ctx = given ?? (await nixContext(opts.nixVersion));
  const db = ctx.db;
  const asService = opts.user !== undefined;
  const user = asService ? lookupUserOrThrow(db, opts.user!) : currentUser(db);
  const env: Record<string, string | undefined> = asService
    ? serviceEnv(
        { name: user.name, uid: user.uid, gid: user.gid, home: user.home, shell: user.shell },
        opts.userEnv ?? {},
      )
    : { ...opts.env, ...(opts.userEnv ?? {}) };

  const flags: ConfigFlag[] = [];
  for (const o of opts.clientOverrides ?? [])
    flags.push({ name: o.name, value: o.value, via: "option", ...(o.origin ? { origin: o.origin } : {}) });
  if (opts.builders !== undefined) flags.push({ name: "builders", value: opts.builders });
  const client = loadUserConfig(ctx, user, env, flags);

  const storeSetting = settingText(client.settings.get("store")?.value ?? "auto");
  const stateDir = env["NIX_STATE_DIR"] ?? "/nix/var/nix";
  const socket = env["NIX_DAEMON_SOCKET_PATH"] ?? `${stateDir}/daemon-socket/socket`;
  const mode = storeMode({
    storeSetting,
    uid: user.uid,
    stateDirWritable: writableBy(stateDir, user, db),
    daemonSocketExists: existsSync(socket),
  });

  const plainLocal = ["", "auto", "local"].includes(storeSetting.trim());
  const storeUnusable =
    mode === "local" && plainLocal && user.uid !== 0 && !writableBy(stateDir, user, db)
      ? { stateDir, nixMessage: localStoreDeniedMessage(ctx.version, stateDir) }
      : null;

  const root = resolveUser(db, 0) ?? { ...user, name: "root", uid: 0, gid: 0, home: "/root" };
  let daemon: ConfigView | null = null;
  let verdict: DaemonVerdict | null = null;
  let trusted = true;
  let trustReason: string;
  let ignored: IgnoredSetting[] = [];
  let applied: AppliedSetting[] = [];
  let builders: UserView["builders"];
  let hookUser: UserInfo;
  let hookSystem: string;

  const clientBuilders = client.settings.get("builders");
  if (mode === "daemon") {
    // The daemon is started by the service manager as root, with no HOME: Nix then uses root's passwd home.
    daemon = loadUserConfig(ctx, root, {});
    const list = (name: string): string[] | null => {
      const s = daemon!.settings.get(name);
      return s ? (s.value as string[]) : null;
    };
    verdict = daemonVerdict({
      version: ctx.version,
      user,
      trustedUsers: list("trusted-users"),
      allowedUsers: list("allowed-users"),
      buildUsersGroup: settingText(daemon.settings.get("build-users-group")?.value ?? "nixbld"),
    });
    trusted = verdict.trusted;
    trustReason = verdict.reason;
    const overridden: OverriddenSetting[] = [];
    for (const s of client.settings.values()) {
      if (s.overridden) overridden.push({ name: s.name, value: settingText(s.value), origin: lastOrigin(s) });
    }
    const result = applyClientSettings({
      version: ctx.version,
      trusted,
      overridden,
      daemonSettings: {
        substituters: (list("substituters") ?? []) as string[],
        trustedSubstituters: (list("trusted-substituters") ?? []) as string[],
      },
    });
    ignored = result.ignored;
    applied = result.applied;
    const fromUser = applied.find((a) => a.setting === "builders");
    const daemonBuilders = daemon.settings.get("builders");
    builders = fromUser
      ? { value: fromUser.value, origin: clientBuilders?.origin ?? [fromUser.origin], from: "user" }
      : {
          value: settingText(daemonBuilders?.value ?? ""),
          origin: daemonBuilders?.origin ?? [{ kind: "default" }],
          from: "daemon",
        };
    hookUser = root;
    hookSystem = settingText(daemon.settings.get("system")?.value ?? ctx.facts.system);
  } else {
    trustReason = storeUnusable
      ? `no daemon, and ${user.name} cannot write ${storeUnusable.stateDir}: every Nix command that opens the store fails (start the nix-daemon, or use a store ${user.name} can write)`
      : mode === "local"
        ? `no daemon: ${user.name} uses the store directly, so every setting applies and the build hook runs as ${user.name}`
        : `the store is '${storeSetting}', not the local daemon: settings apply on the client side`;
    builders = {
      value: settingText(clientBuilders?.value ?? ""),
      origin: clientBuilders?.origin ?? [{ kind: "default" }],
      from: "user",
    };
    hookUser = user;
    hookSystem = settingText(client.settings.get("system")?.value ?? ctx.facts.system);
  }

  const where = builders.origin[builders.origin.length - 1];
  const machines = parseBuilders({
    spec: builders.value,
    version: ctx.version,
    defaultSystem: hookSystem,
    // the hook reads `@FILE` with its own credentials (root under a daemon, the user otherwise)
    fs: readerForUser(hookUser),
    cwd: "/",
    origin:
      where && where.kind === "file" ? { file: where.file, line: where.line } : { file: null, line: null },
  });

  return {
    ...ctx,
    user,
    serviceEnv: asService,
    env,
    client,
    daemon,
    storeMode: mode,
    storeUnusable,
    verdict,
    trusted,
    trustReason,
    ignored,
    applied,
    builders,
    hookUser,
    hookSystem,
    machines,
    reader: readerForUser(user),
    daemonReader: daemon ? readerForUser(root) : null,
    hookReader: readerForUser(hookUser),
  };
}

/**
 * What Nix prints when a user without write access opens the local store at `stateDir` (no daemon):
 * 2.8 fails fixing the mode of `profiles/per-user`; 2.30 fails taking the big lock.
 */
export function localStoreDeniedMessage(version: NixVersion, stateDir: string): string {
  return atLeast(version, 2, 30)
    ? `opening lock file '${stateDir}/db/big-lock': Permission denied`
    : `could not set permissions on '${stateDir}/profiles/per-user' to 755: Operation not permitted`;
}

/** Every error that stops Nix for this user: config errors (client and daemon) and the machines error. */
export function viewErrors(
  v: UserView,
): { message: string; file: string | null; line: number | null; where: string }[] {
  const errors: { message: string; file: string | null; line: number | null; where: string }[] = [];
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
    errors.push({
      message: v.storeUnusable.nixMessage,
      file: null,
      line: null,
      where: "store",
    });
  return errors;
}
