/**
 * The hercules-ci-agent checks that only need the per-user view: trust against the
 * `nixUserIsTrusted` claim, per-user builders the daemon ignores, remote platforms without a
 * capable builder, builders nobody dispatches to, the narinfo TTL, `max-jobs = 0`, kvm, restarts.
 */
import {
  type AgentAdvertisement,
  type AgentFinding,
  agentAdvertisement,
  type BuildersSetting,
  checkAgentTrust,
  checkAgentUser,
  checkAgentUserBuilders,
  checkKvm,
  checkMaxJobsZero,
  checkNarinfoNegativeTtl,
  checkRemotePlatforms,
  checkUnadvertisedBuilders,
} from "../agent/index.js";
import type { AgentSelection } from "./agent-select.js";
import { settingText, type UserView } from "./view.js";

export interface AgentReport {
  advertisement: AgentAdvertisement;
  findings: AgentFinding[];
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.map(String) : [];
}

export function agentReport(view: UserView, sel: AgentSelection): AgentReport {
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
  const maxJobs = c.get("max-jobs");
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
  ];
  return { advertisement, findings };
}
