/**
 * The view of Nix that one user's builds really get: snapshot → resolve. The machine is read once, by
 * {@link readHostSnapshot} (src/app/snapshot.ts); the rules (where `builders` comes from, who runs the
 * build hook, the daemon's trust verdict, which of the user's settings the daemon honours, the machines the
 * hook parses) are the pure core's {@link resolveUserView} (src/nix/user-view.ts).
 */
import { type MachineFacts, machineFacts } from "../host/machine-facts.js";
import { type NixInstall, probeNix } from "../host/nix.js";
import { readUserDb, type UserDb, type UserInfo } from "../host/users.js";
import { type ConfigFlag, type ConfigView, loadConfig } from "../nix/conf.js";
import type { Origin } from "../nix/origin.js";
import type { HostSnapshot } from "../nix/snapshot.js";
import { type ResolvedView, resolveUserView } from "../nix/user-view.js";
import {
  formatNixVersion,
  modelledVersion,
  NIX_LATEST,
  type NixVersion,
  parseNixVersion,
} from "../nix/version.js";
import { UsageError } from "./io.js";
import {
  type KeyFactsSource,
  readerForUser,
  readHostSnapshot,
  type Snapshot,
  snapshotFromBundle,
} from "./snapshot.js";

export { localStoreDeniedMessage, settingText, viewErrors } from "../nix/user-view.js";
export { lookupUserOrThrow, readerForUser, writableBy } from "./snapshot.js";

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
  /** Why the version of a `nix` that was found could not be read. */
  nixProblem?: string;
  version: NixVersion;
  versionSource: "installed" | "flag" | "latest";
  /** Why the rules are not the installed Nix's although a `nix` was found (its version could not be read). */
  versionNote?: string;
  facts: MachineFacts;
  db: UserDb;
}

export interface UserView extends NixContext, Omit<ResolvedView, "user" | "hookUser"> {
  user: UserInfo;
  hookUser: UserInfo;
  /** Facts about an ssh key file as the hook user sees them (probed, or from the bundle). */
  keyFacts: KeyFactsSource;
  /** Our uid (or, from a bundle, the uid it was taken with). */
  myUid: number;
  /** The snapshot the view was resolved from. */
  snapshot: Snapshot;
}

/** `--nix-version X.Y`, checked: a usage error when it is not a version or not one we model. */
function checkedVersion(text: string): { version: NixVersion; note?: string } {
  const v = parseNixVersion(text);
  if (!v) throw new UsageError(`--nix-version: not a version: '${text}' (expected X.Y, e.g. 2.8)`);
  const m = modelledVersion(v);
  if (m.error) throw new UsageError(m.error);
  return { version: v, ...(m.note ? { note: m.note } : {}) };
}

export async function nixContext(nixVersion: string | undefined): Promise<NixContext> {
  const probe = await probeNix();
  const nix = probe.install;
  let version: NixVersion;
  let versionSource: NixContext["versionSource"];
  let versionNote: string | undefined;
  if (nixVersion !== undefined) {
    const v = checkedVersion(nixVersion);
    if (v.note) versionNote = v.note;
    version = v.version;
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
  return {
    nix,
    ...(probe.problem ? { nixProblem: probe.problem } : {}),
    version,
    versionSource,
    ...(versionNote ? { versionNote } : {}),
    facts,
    db: readUserDb(),
  };
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

/** The view of a snapshot, with the Nix rules of `version`. */
export function viewOf(snap: Snapshot, ctx: NixContext, version: NixVersion = ctx.version): UserView {
  const r = resolveUserView(snap.data, version, snap.readers);
  return {
    ...ctx,
    ...r,
    user: r.user as UserInfo,
    hookUser: r.hookUser as UserInfo,
    keyFacts: snap.keyFacts,
    myUid: snap.myUid,
    snapshot: snap,
  };
}

/** Compute the whole view for a user (the current one when `opts.user` is not given). */
export async function userView(opts: ViewOptions, given?: NixContext): Promise<UserView> {
  const ctx = given ?? (await nixContext(opts.nixVersion));
  return viewOf(await readHostSnapshot(opts, ctx), ctx);
}

/** The context of a bundle's machine: its Nix, facts and users; `nixVersion` chooses other rules. */
export function bundleContext(data: HostSnapshot, nixVersion: string | undefined): NixContext {
  const user = data.user as UserInfo;
  const root = data.root as UserInfo | null;
  const passwd = [user, ...(root && root.uid !== user.uid ? [root] : [])].map((u) => ({
    name: u.name,
    uid: u.uid,
    gid: u.gid,
    gecos: "",
    home: u.home,
    shell: u.shell,
  }));
  const base: NixContext = {
    nix: data.nix.install,
    ...(data.nix.problem ? { nixProblem: data.nix.problem } : {}),
    version: data.version,
    versionSource: data.versionSource,
    ...(data.versionNote ? { versionNote: data.versionNote } : {}),
    facts: data.facts,
    db: { passwd, groups: data.groups },
  };
  if (nixVersion === undefined) return base;
  const { versionNote: _, ...rest } = base;
  const v = checkedVersion(nixVersion);
  return { ...rest, version: v.version, versionSource: "flag", ...(v.note ? { versionNote: v.note } : {}) };
}

/** The view a bundle holds (`--from FILE`). */
export function bundleView(data: HostSnapshot, nixVersion: string | undefined): UserView {
  const ctx = bundleContext(data, nixVersion);
  return viewOf(snapshotFromBundle(data), ctx);
}
