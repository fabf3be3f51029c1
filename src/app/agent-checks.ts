/**
 * The hercules-ci-agent checks that only need the per-user view: trust against the
 * `nixUserIsTrusted` claim, per-user builders the daemon ignores, remote platforms without a
 * capable builder, builders nobody dispatches to, the narinfo TTL, `max-jobs = 0`, kvm, restarts.
 */

import { statSync } from "node:fs";
import { join } from "node:path";
import {
  type AgentAdvertisement,
  type AgentFinding,
  agentAdvertisement,
  agentNixOverrides,
  agentRestartCommand,
  type BinaryCachesResult,
  type BuildersSetting,
  checkAgentTrust,
  checkAgentUser,
  checkAgentUserBuilders,
  checkKvm,
  checkMaxJobsZero,
  checkNarinfoNegativeTtl,
  checkNativeOffload,
  checkRemotePlatforms,
  checkRestartNeeded,
  checkUnadvertisedBuilders,
  type NativeOffloadReport,
  redactUri,
  type TaskNixSettings,
  taskNixSettings,
} from "../agent/index.js";
import type { ConfigFile } from "../nix/conf.js";
import type { OverriddenSetting } from "../nix/trust.js";
import { readBinaryCaches } from "./agent-caches.js";
import type { AgentSelection } from "./agent-select.js";
import { settingText, type UserView } from "./view.js";

export interface AgentReport {
  advertisement: AgentAdvertisement;
  findings: AgentFinding[];
  /** What every task runs with (nixSettings + caches) and what the store keeps; null without a config. */
  taskNixSettings?: TaskNixSettings | null;
  /** Whether builds for the native system can reach the builders (issue 18 point 6); null without such builders. */
  nativeOffload?: NativeOffloadReport | null;
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.map(String) : [];
}

/**
 * `caches`: binary-caches.json as read for the agent (readBinaryCaches); undefined when the caller did
 * not read it (then taskNixSettings shows only the part that does not depend on it).
 */
export function agentReport(
  view: UserView,
  sel: AgentSelection,
  caches?: BinaryCachesResult,
  mtime: MtimeOf = (path) => mtimeUnder(sel.root ?? "/", path),
): AgentReport {
  const c = view.client.settings;
  const nixView = {
    system: settingText(c.get("system")?.value ?? view.facts.system),
    extraPlatforms: strings(c.get("extra-platforms")?.value),
    systemFeatures: strings(c.get("system-features")?.value),
  };
  const remote = sel.config?.config?.remotePlatformsWithSameFeatures ?? null;
  const advertisement = agentAdvertisement(nixView, remote);
  const machines = view.machines.machines;
  const localStore = view.storeMode !== "daemon";
  const builders: BuildersSetting[] = view.client.assignments
    .filter((a) => a.setting === "builders" || a.name === "extra-builders")
    .map((a) => ({
      name: a.name === "extra-builders" ? "extra-builders" : "builders",
      value: a.value,
      origin: a.origin,
      scope: a.origin.kind === "agent" ? "agent" : a.layer,
    }));
  const ttl = c.get("narinfo-cache-negative-ttl");
  const d = view.daemon?.settings;
  const daemonTtl = d?.get("narinfo-cache-negative-ttl");
  const store = localStore ? "local" : view.trusted ? "trusted" : "untrusted";
  const cfg = sel.config?.config ?? null;
  let task: TaskNixSettings | null = null;
  if (cfg) {
    const overridden: OverriddenSetting[] = [];
    for (const st of c.values())
      if (st.overridden)
        overridden.push({
          name: st.name,
          value: settingText(st.value),
          origin: st.origin[st.origin.length - 1]!,
        });
    const netrc = c.get("netrc-file");
    task = taskNixSettings({
      version: view.version,
      nixSettings: agentNixOverrides(cfg),
      agent: {
        substituters: strings(c.get("substituters")?.value),
        trustedPublicKeys: strings(c.get("trusted-public-keys")?.value),
        netrcFile: netrc ? settingText(netrc.value) || null : null,
      },
      caches: caches?.caches ?? null,
      workDirectory: cfg.workDirectory,
      store,
      daemon: {
        substituters: strings(d?.get("substituters")?.value),
        trustedSubstituters: strings(d?.get("trusted-substituters")?.value),
        trustedPublicKeys: strings(d?.get("trusted-public-keys")?.value),
        netrcFile: settingText(d?.get("netrc-file")?.value ?? "/etc/nix/netrc"),
      },
      overridden,
    });
  }
  const maxJobs = c.get("max-jobs");
  const maxJobsN = maxJobs ? Number(maxJobs.value) : null;
  const offload = checkNativeOffload({
    version: view.version,
    system: nixView.system,
    nixUserIsTrusted: sel.config?.config?.nixUserIsTrusted ?? false,
    maxJobs: maxJobsN !== null && Number.isFinite(maxJobsN) ? maxJobsN : null,
    remotePlatforms: remote,
    machines,
    agentVersion: sel.agent.agentVersionHint,
  });
  const findings: AgentFinding[] = [
    ...sel.findings,
    ...checkAgentUser({ user: view.user.name, uid: view.user.uid }),
    ...checkAgentTrust({
      trust: { trusted: view.trusted, reason: view.trustReason },
      nixUserIsTrusted: sel.config?.config?.nixUserIsTrusted ?? false,
      user: view.user.name,
      localStore,
    }),
    ...checkAgentUserBuilders({
      trusted: view.trusted,
      localStore,
      user: view.user.name,
      settings: builders,
    }),
    ...checkRemotePlatforms({ view: nixView, remotePlatforms: remote, machines }),
    ...checkUnadvertisedBuilders({ advertisement, system: nixView.system, machines }),
    ...checkNarinfoNegativeTtl({
      value: ttl && ttl.layer !== "default" ? settingText(ttl.value) : null,
      origin: ttl?.origin[ttl.origin.length - 1] ?? null,
      store,
      daemonValue: daemonTtl && daemonTtl.layer !== "default" ? settingText(daemonTtl.value) : null,
      daemonOrigin: daemonTtl?.origin[daemonTtl.origin.length - 1] ?? null,
    }),
    ...checkMaxJobsZero({
      maxJobs: maxJobs ? Number(maxJobs.value) : null,
      view: nixView,
      machines,
      agentVersion: sel.agent.agentVersionHint,
    }),
    ...checkKvm({
      systemFeaturesExplicit: (c.get("system-features")?.layer ?? "default") !== "default",
      privateDevices: sel.agent.privateDevices,
      systemFeatures: nixView.systemFeatures,
    }),
    ...restartFindings(sel, view.client.files, mtime),
    ...offload.findings,
    ...(caches?.findings ?? []),
    ...(task?.findings ?? []),
  ];
  return { advertisement, findings, taskNixSettings: task, nativeOffload: offload.report };
}

/** mtime (ms) of a file the agent read at start-up, or null when it cannot be stat'ed. */
export type MtimeOf = (path: string) => number | null;

/** mtime of `path` under `root`, or null when it cannot be stat'ed. */
function mtimeUnder(root: string, path: string): number | null {
  try {
    return statSync(join(root, path)).mtimeMs;
  } catch {
    return null;
  }
}

/**
 * `agent-restart-needed`: the agent reads its configuration and the Nix configuration only at start-up,
 * so a file among them changed after the running agent started is not in effect yet. Needs the running
 * agent's start time (src/agent/discover.ts readAgentRuntime, at selection); nothing without it.
 */
export function restartFindings(
  sel: AgentSelection,
  configFiles: readonly Pick<ConfigFile, "path" | "exists" | "role">[],
  mtime: MtimeOf = (path) => mtimeUnder(sel.root ?? "/", path),
): AgentFinding[] {
  const startedAt = sel.runtime?.startedAt ?? null;
  if (startedAt === null) return [];
  const paths = [
    ...(sel.agent.configFile ? [sel.agent.configFile] : []),
    ...configFiles.filter((f) => f.exists && f.role !== "env").map((f) => f.path),
  ];
  return checkRestartNeeded({
    serviceStartedAt: startedAt,
    files: [...new Set(paths)].map((path) => ({ path, mtime: mtime(path) })),
    restartCommand: agentRestartCommand(sel.agent),
  });
}

/** binary-caches.json of the selected agent, read as the agent user (undefined without a config). */
export async function agentCaches(sel: AgentSelection): Promise<BinaryCachesResult | undefined> {
  const cfg = sel.config?.config;
  if (!cfg) return undefined;
  return readBinaryCaches(cfg.binaryCachesPath, sel.user);
}

/** Two or three lines for `show --agent`: the substituters a task gets, and what the store keeps. */
export function renderTaskSettings(r: AgentReport): string {
  const t = r.taskNixSettings;
  if (!t) return "";
  const list = (xs: readonly string[]): string => xs.map(redactUri).join(" ") || "(none)";
  let out = `  tasks run with substituters: ${list(t.task.substituters)}${t.cachesKnown ? "" : "  (binary-caches.json not read)"}\n`;
  if (t.daemon.store === "untrusted") {
    out += `  the nix-daemon keeps for them: ${list(t.daemon.substituters)}; its own trusted-public-keys and netrc-file\n`;
  }
  return out;
}
