/**
 * The routing context of a user's builds, computed once from the user's view: the settings of the
 * process that runs the build (the daemon's under a daemon), except `max-jobs`, which the client always
 * sends as a fixed field; the machines the build hook parses; and the store. Used by `route` and `plan`.
 */
import { resolveStore, type StoreTarget } from "../host/store.js";
import type { Machine } from "../nix/machines.js";
import type { RouteLocal } from "../nix/route.js";
import type { NixVersion } from "../nix/version.js";
import { UsageError } from "./io.js";
import { settingText, type UserView, viewErrors } from "./view.js";

/** What routing needs from the host, computed once from a user's view. */
export interface RouteContext {
  readonly version: NixVersion;
  readonly user: string;
  readonly storeMode: string;
  readonly machines: readonly Machine[];
  readonly local: RouteLocal;
  readonly store: StoreTarget;
  /** The error that stops Nix for this user (config or machines), if any. */
  readonly fatal: string | null;
}

function list(v: unknown): string[] {
  if (Array.isArray(v)) return v.map(String);
  if (typeof v === "string") return v.split(/\s+/).filter(Boolean);
  return [];
}

/** The routing context of a user's builds: the parent's settings, the machines the hook parses, the store. */
export function routeContext(v: UserView, opts: { store?: string } = {}): RouteContext {
  const conf = v.daemon ?? v.client;
  const get = (name: string): unknown => conf.settings.get(name)?.value;
  // max-jobs is a fixed field of SetOptions: the client's value always applies, daemon or not.
  const maxJobsRaw = v.client.settings.get("max-jobs")?.value ?? 1;
  const maxJobs = Number(maxJobsRaw);
  const local: RouteLocal = {
    system: settingText(get("system") ?? v.facts.system),
    extraPlatforms: list(get("extra-platforms")),
    systemFeatures: list(get("system-features")),
    maxJobs: Number.isFinite(maxJobs) ? maxJobs : 1,
    experimentalFeatures: list(get("experimental-features")),
  };
  let store: StoreTarget;
  try {
    store = resolveStore({
      store: opts.store,
      storeSetting: settingText(v.client.settings.get("store")?.value ?? ""),
      storeMode: v.storeMode,
      env: v.env,
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const errors = viewErrors(v);
  return {
    version: v.version,
    user: v.user.name,
    storeMode: v.storeMode,
    machines: v.machines.error ? [] : v.machines.machines,
    local,
    store,
    fatal: errors.length > 0 ? errors[0]!.message : null,
  };
}
