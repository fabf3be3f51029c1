/**
 * Agent-specific checks (docs/agent.md), as pure functions over plain data.
 * Each returns findings for problems and notable facts; an empty list means "nothing to say".
 * The doctor and `show --agent` gather the inputs (daemon trust, effective Nix view, machines) and
 * call these.
 */

import { formatOrigin, type Origin } from "../nix/origin.js";
import type { AgentAdvertisement, AgentNixView } from "./advertise.js";
import { type AgentFinding, finding } from "./findings.js";

/** A remote builder as the daemon will see it (one machines-file line, parsed). */
export interface BuilderMachine {
  readonly storeUri: string;
  readonly systemTypes: readonly string[];
  readonly supportedFeatures: readonly string[];
  readonly mandatoryFeatures: readonly string[];
}

export interface DaemonTrust {
  readonly trusted: boolean;
  /** How we know, e.g. "trusted-users = root hercules-ci-agent (/etc/nix/nix.conf:12)". */
  readonly reason: string;
}

// ---------------------------------------------------------------------------------------------
// Versions

export type AgentVersion = readonly number[];

/** Parse "0.10.6", "hercules-ci-agent 0.10.8" or a store path "…-hercules-ci-agent-0.10.8". */
export function parseAgentVersion(text: string): AgentVersion | null {
  const m = /(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(text);
  if (!m) return null;
  return m.slice(1).flatMap((x) => (x === undefined ? [] : [Number(x)]));
}

export function compareAgentVersions(a: AgentVersion, b: AgentVersion): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function versionBefore(v: string | null | undefined, min: string): boolean | null {
  if (!v) return null;
  const pv = parseAgentVersion(v);
  const pm = parseAgentVersion(min);
  if (!pv || !pm) return null;
  return compareAgentVersions(pv, pm) < 0;
}

// ---------------------------------------------------------------------------------------------
// Trust

export interface TrustCheckInput {
  readonly trust: DaemonTrust;
  /** The config's `nixUserIsTrusted` (a claim the agent never verifies). */
  readonly nixUserIsTrusted: boolean;
  readonly user?: string | null;
  /** The agent uses a local store (single-user install, or runs as root): daemon trust does not apply. */
  readonly localStore?: boolean;
}

export function checkAgentTrust(input: TrustCheckInput): AgentFinding[] {
  const who = input.user ? `user ${input.user}` : "the agent user";
  if (input.localStore) {
    return [
      finding(
        "agent-trust-local-store",
        "info",
        `The agent uses a local store (no nix-daemon), so daemon trust does not apply; the agent's "add the user to trusted-users" warning can be ignored.`,
        null,
      ),
    ];
  }
  if (input.nixUserIsTrusted && !input.trust.trusted) {
    return [
      finding(
        "agent-trust-claim-false",
        "error",
        `nixUserIsTrusted is true, but the nix-daemon does not trust ${who} (${input.trust.reason}). The agent will hand in-memory derivations to the daemon, which only trusted users may do, so builds fail with "you are not privileged to build input-addressed derivations".`,
        `Add ${input.user ?? "the agent user"} to trusted-users in /etc/nix/nix.conf (a single trusted-users line; NixOS: nix.settings.trusted-users, not a trusted-users line in nix.extraOptions, which the agent module rejects) and restart nix-daemon, or set nixUserIsTrusted = false.`,
      ),
    ];
  }
  if (!input.nixUserIsTrusted && input.trust.trusted) {
    return [
      finding(
        "agent-trust-unclaimed",
        "info",
        `The nix-daemon trusts ${who} (${input.trust.reason}), but nixUserIsTrusted is false: builds work, but every derivation is fetched and materialised first (slower), and the agent logs a warning at start-up.`,
        "Set nixUserIsTrusted = true in the agent config and restart the agent.",
      ),
    ];
  }
  if (!input.nixUserIsTrusted && !input.trust.trusted) {
    return [
      finding(
        "agent-trust-untrusted",
        "info",
        `The agent runs untrusted (${input.trust.reason}), and says so (nixUserIsTrusted = false). Builds work but materialise derivations; builders and most other settings from the agent user's nix.conf and nixSettings do not reach the daemon.`,
        `To use per-agent builders, add ${input.user ?? "the agent user"} to trusted-users and set nixUserIsTrusted = true.`,
      ),
    ];
  }
  return [];
}

// ---------------------------------------------------------------------------------------------
// Per-user builders

export type SettingScope = "system" | "user" | "env" | "flag" | "agent";

export interface BuildersSetting {
  /** `builders` or `extra-builders`. */
  readonly name: string;
  readonly value: string;
  readonly origin: Origin;
  /** system: the daemon's own nix.conf; user: the agent user's nix.conf; env: NIX_CONFIG; agent: nixSettings. */
  readonly scope: SettingScope;
}

export interface UserBuildersCheckInput {
  readonly trusted: boolean;
  readonly localStore?: boolean;
  readonly user?: string | null;
  readonly settings: readonly BuildersSetting[];
}

/**
 * `builders` set on the client side (user nix.conf, NIX_CONFIG, nixSettings) reaches the daemon only
 * when the agent user is trusted; the one exception is an empty `builders`, accepted from anyone.
 */
export function checkAgentUserBuilders(input: UserBuildersCheckInput): AgentFinding[] {
  if (input.localStore) return [];
  const out: AgentFinding[] = [];
  for (const s of input.settings) {
    if (s.scope === "system") continue;
    if (s.name !== "builders" && s.name !== "extra-builders") continue;
    const where = formatOrigin(s.origin);
    if (s.name === "extra-builders") {
      // not a trust matter: `builders` is a plain string, so no Nix knows `extra-builders`, trusted or not,
      // and Nix warns `unknown setting 'extra-builders'` at normal verbosity
      out.push(
        finding(
          "agent-extra-builders-unknown",
          "warning",
          `extra-builders = ${s.value} at ${where} is not a Nix setting (builders is a single string, so it has no extra- form): every Nix ignores it with "warning: unknown setting 'extra-builders'", trusted user or not, and these machines are never used.`,
          "Put every machine in one machines file (it may include others with `@/path` lines) and set `builders = @/that/file`.",
        ),
      );
      continue;
    }
    const empty = s.value.trim() === "";
    if (empty && s.name === "builders") {
      out.push(
        finding(
          "agent-builders-reset",
          "info",
          `builders is set to empty at ${where}: the daemon accepts this even from untrusted users, so remote building is off for the agent's builds.`,
          null,
        ),
      );
      continue;
    }
    if (!input.trusted) {
      out.push(
        finding(
          "agent-builders-ignored-untrusted",
          "warning",
          `${s.name} = ${s.value} at ${where} is a client-side setting, and the nix-daemon ignores it because ${input.user ?? "the agent user"} is not a trusted user (Nix logs this only at a low verbosity).`,
          `Add ${input.user ?? "the agent user"} to trusted-users in /etc/nix/nix.conf, or move the builders into the system configuration (/etc/nix/machines).`,
        ),
      );
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// remotePlatformsWithSameFeatures vs builders

function machineAccepts(m: BuilderMachine, platform: string, required: readonly string[]): boolean {
  if (!m.systemTypes.includes(platform)) return false;
  const can = new Set([...m.supportedFeatures, ...m.mandatoryFeatures]);
  return required.every((f) => can.has(f)) && m.mandatoryFeatures.every((f) => required.includes(f));
}

export interface RemotePlatformsCheckInput {
  readonly view: AgentNixView;
  readonly remotePlatforms: readonly string[] | null;
  readonly machines: readonly BuilderMachine[];
}

export function checkRemotePlatforms(input: RemotePlatformsCheckInput): AgentFinding[] {
  const out: AgentFinding[] = [];
  const features = [...new Set(input.view.systemFeatures)].sort();
  const local = new Set([input.view.system, ...input.view.extraPlatforms]);
  const seen = new Set<string>();
  for (const p of input.remotePlatforms ?? []) {
    if (seen.has(p)) {
      out.push(
        finding(
          "agent-remote-platform-duplicate",
          "warning",
          `${p} is listed twice in remotePlatformsWithSameFeatures; the agent advertises it twice.`,
          "Remove the duplicate entry.",
        ),
      );
      continue;
    }
    seen.add(p);
    if (local.has(p)) {
      out.push(
        finding(
          "agent-remote-platform-duplicate",
          "warning",
          `${p} is in remotePlatformsWithSameFeatures but is already the local system or in extra-platforms; it is advertised twice, and its builds are materialised for remote building although they may run locally.`,
          `Remove ${p} from remotePlatformsWithSameFeatures.`,
        ),
      );
    }
    if (p.endsWith("-linux")) {
      out.push(
        finding(
          "agent-remote-platform-linux",
          "info",
          `${p} is a Linux platform: if hercules-ci.com dispatches effects by platform (not verified), ${p} effects would be sent here and run locally, not on the remote builder.`,
          null,
        ),
      );
    }
    const candidates = input.machines.filter((m) => m.systemTypes.includes(p));
    if (candidates.length === 0) {
      out.push(
        finding(
          "agent-remote-platform-no-builder",
          "error",
          `The agent advertises ${p} (remotePlatformsWithSameFeatures), but no remote builder supports ${p}: hercules-ci.com will send ${p} builds here and they will fail ("Failed to find a machine for remote build").`,
          `Add a builder for ${p} to the daemon's builders (/etc/nix/machines), or remove ${p} from remotePlatformsWithSameFeatures.`,
        ),
      );
      continue;
    }
    if (!candidates.some((m) => machineAccepts(m, p, []))) {
      out.push(
        finding(
          "agent-remote-platform-mandatory",
          "error",
          `Every builder for ${p} has mandatory features (${candidates.map((m) => `${m.storeUri}: ${m.mandatoryFeatures.join(",")}`).join("; ")}), so ordinary ${p} derivations, which require no features, cannot be built anywhere.`,
          `Add a builder for ${p} without mandatory features, or remove the mandatory features.`,
        ),
      );
    }
    const uncovered = features.filter((f) => !candidates.some((m) => machineAccepts(m, p, [f])));
    if (uncovered.length > 0) {
      out.push(
        finding(
          "agent-remote-platform-features",
          "warning",
          `The agent advertises ${p} with the local system-features, but no builder for ${p} supports ${uncovered.join(", ")}: jobs for ${p} that require ${uncovered.length === 1 ? "it" : "any of them"} are sent here and fail.`,
          `Add ${uncovered.join(",")} to the supported features of a ${p} builder (if it really has them), or remove those features from this machine's system-features.`,
        ),
      );
    } else if (features.length > 1 && !candidates.some((m) => machineAccepts(m, p, features))) {
      out.push(
        finding(
          "agent-remote-platform-features-split",
          "info",
          `Each local system feature is supported by some ${p} builder, but no single builder supports all of ${features.join(", ")}; jobs requiring several of them at once cannot be built.`,
          null,
        ),
      );
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Builders for platforms the agent does not advertise

export interface UnadvertisedBuildersCheckInput {
  readonly advertisement: Pick<AgentAdvertisement, "platforms">;
  /** The local system; effects run only on Linux agents. */
  readonly system: string;
  readonly machines: readonly BuilderMachine[];
}

export function checkUnadvertisedBuilders(input: UnadvertisedBuildersCheckInput): AgentFinding[] {
  const advertised = new Set(input.advertisement.platforms);
  const byPlatform = new Map<string, string[]>();
  for (const m of input.machines) {
    for (const s of m.systemTypes) {
      if (advertised.has(s)) continue;
      const list = byPlatform.get(s) ?? [];
      list.push(m.storeUri);
      byPlatform.set(s, list);
    }
  }
  const linux = input.system.endsWith("-linux");
  return [...byPlatform.entries()].map(([p, uris]) =>
    finding(
      "agent-builder-unadvertised",
      "info",
      `Builders for ${p} (${uris.join(", ")}) are configured, but the agent does not advertise ${p}, so hercules-ci.com never sends it ${p} builds. ` +
        (linux
          ? `Only builds started inside effects (and similar builds the agent's Nix does itself) use these builders.`
          : `Effects run only on Linux agents, so nothing this agent runs is expected to use them.`),
      `If the agent should accept ${p} jobs and build them remotely, add ${p} to remotePlatformsWithSameFeatures; otherwise nothing to do.`,
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// narinfo-cache-negative-ttl

/** Nix's default for narinfo-cache-negative-ttl, in seconds. */
export const NIX_DEFAULT_NARINFO_NEGATIVE_TTL = 3600;

export function checkNarinfoNegativeTtl(input: {
  /** The value in the agent's view (after nixSettings); null when not set anywhere (Nix's default, 3600). */
  readonly value: string | number | null;
  readonly origin?: Origin | null;
  /**
   * How the agent's builds reach the store. The agent checks its own client value, but the lookups
   * for builds are done by the nix-daemon, which takes the client's value only from a trusted user.
   * Omitted: treated as trusted (the old behaviour of this check).
   */
  readonly store?: "trusted" | "untrusted" | "local";
  /** The daemon's own value (its nix.conf); null when not set there (3600). Used when untrusted. */
  readonly daemonValue?: string | number | null;
  readonly daemonOrigin?: Origin | null;
}): AgentFinding[] {
  const num = (raw: string | number | null): number =>
    raw === null ? NIX_DEFAULT_NARINFO_NEGATIVE_TTL : typeof raw === "number" ? raw : Number(raw.trim());
  const store = input.store ?? "trusted";
  const systemFix =
    'Add "narinfo-cache-negative-ttl = 0" to /etc/nix/nix.conf and restart nix-daemon (NixOS/nix-darwin: nix.settings.narinfo-cache-negative-ttl = 0, which the agent modules set)';
  const raw = input.value;
  if (num(raw) !== 0) {
    const where =
      raw === null ? `not set, so Nix's default ${NIX_DEFAULT_NARINFO_NEGATIVE_TTL} applies` : `${raw}`;
    return [
      finding(
        "agent-narinfo-negative-ttl",
        "error",
        `narinfo-cache-negative-ttl is ${where}${input.origin ? ` (${formatOrigin(input.origin)})` : ""}; the agent checks this at start-up and refuses to start unless it is 0.`,
        store === "untrusted"
          ? `${systemFix}. Setting it in the agent's nixSettings would only get the agent past its own check: the agent user is not trusted, so the nix-daemon, which does the lookups for builds, would keep its own value.`
          : `${systemFix}, or set it in the agent's nixSettings as "0" (the agent user is ${store === "local" ? "using the store directly" : "trusted"}, so the value reaches the store).`,
      ),
    ];
  }
  if (store !== "untrusted") return [];
  const d = input.daemonValue ?? null;
  if (num(d) === 0) return [];
  const dwhere = d === null ? `not set, so Nix's default ${NIX_DEFAULT_NARINFO_NEGATIVE_TTL}` : `${d}`;
  return [
    finding(
      "agent-narinfo-negative-ttl-daemon",
      "warning",
      `narinfo-cache-negative-ttl is 0 in the agent's own view${input.origin ? ` (${formatOrigin(input.origin)})` : ""}, so the agent starts, but the agent user is not trusted: the nix-daemon, which looks up paths in caches for the agent's builds, ignores the client's value and uses ${dwhere}${input.daemonOrigin ? ` (${formatOrigin(input.daemonOrigin)})` : ""}. A path another agent pushes is then taken as missing for up to that many seconds, which the agent's check exists to prevent.`,
      `${systemFix}.`,
    ),
  ];
}

// ---------------------------------------------------------------------------------------------
// max-jobs = 0

export function checkMaxJobsZero(input: {
  /** max-jobs in the agent's view ("auto" or a number), null when unknown. */
  readonly maxJobs: number | string | null;
  readonly view: AgentNixView;
  readonly machines: readonly BuilderMachine[];
  /** The agent's version, when known (from the package path or `hercules-ci-agent --version`). */
  readonly agentVersion?: string | null;
}): AgentFinding[] {
  if (input.maxJobs === null) return [];
  const n = typeof input.maxJobs === "number" ? input.maxJobs : Number(String(input.maxJobs).trim());
  if (n !== 0) return [];
  const out: AgentFinding[] = [];
  const localPlatforms = [...new Set([input.view.system, ...input.view.extraPlatforms])];
  for (const p of localPlatforms) {
    if (input.machines.some((m) => machineAccepts(m, p, []))) continue;
    const native = p === input.view.system;
    out.push(
      finding(
        "agent-max-jobs-zero-no-builder",
        native ? "error" : "warning",
        `max-jobs = 0 in the agent's view: nothing is built locally, but no remote builder (without mandatory features) supports ${p}${native ? ", the native system" : ", which the agent advertises through extra-platforms"}. Those builds cannot run anywhere.`,
        `Add a builder for ${p}, or set max-jobs to at least 1 for the agent (agent user's nix.conf or nixSettings).`,
      ),
    );
  }
  const before106 = versionBefore(input.agentVersion, "0.10.6");
  const before101 = versionBefore(input.agentVersion, "0.10.1");
  if (before101 === true) {
    out.push(
      finding(
        "agent-max-jobs-zero-version",
        "warning",
        `Agent ${input.agentVersion} is older than 0.10.1: its workers force max-jobs = 1, so max-jobs = 0 does not apply to the agent's builds, and it lacks the max-jobs = 0 fix of 0.10.6.`,
        "Upgrade hercules-ci-agent to 0.10.6 or newer.",
      ),
    );
  } else if (before106 === true) {
    out.push(
      finding(
        "agent-max-jobs-zero-version",
        "warning",
        `Agent ${input.agentVersion} is older than 0.10.6, which fixed max-jobs = 0 (derivations were not materialised, and builds failed with "unable to start any build; remote machines may not have all required system features").`,
        "Upgrade hercules-ci-agent to 0.10.6 or newer.",
      ),
    );
  } else if (before106 === null) {
    out.push(
      finding(
        "agent-max-jobs-zero-version-unknown",
        "info",
        "max-jobs = 0 needs hercules-ci-agent 0.10.6 or newer; the agent's version is unknown here.",
        "Check with `hercules-ci-agent --version`.",
      ),
    );
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// kvm

export function checkKvm(input: {
  /** system-features is set explicitly somewhere in the agent's view (not Nix's auto-detection). */
  readonly systemFeaturesExplicit: boolean;
  /** PrivateDevices= of the agent's systemd unit; null when unknown or not systemd. */
  readonly privateDevices: boolean | null;
  /** The effective system-features in the agent's view. */
  readonly systemFeatures: readonly string[];
  /** /dev/kvm exists on the host; null when unknown. */
  readonly hostHasKvm?: boolean | null;
  /** The agent user can read and write /dev/kvm; null when unknown. */
  readonly agentUserCanUseKvm?: boolean | null;
}): AgentFinding[] {
  if (input.systemFeaturesExplicit) return [];
  if (input.hostHasKvm === false) return [];
  if (input.privateDevices === true) {
    return [
      finding(
        "agent-kvm-private-devices",
        "warning",
        "system-features is not set explicitly, so Nix detects kvm inside the agent's process; the agent's unit has PrivateDevices=true, which hides /dev/kvm, so the agent will not advertise kvm (NixOS tests and other kvm jobs are not sent here).",
        'Set system-features explicitly in /etc/nix/nix.conf, e.g. "system-features = nixos-test benchmark big-parallel kvm" (NixOS: nix.settings.system-features), or add "extra-system-features": "kvm" to the agent\'s nixSettings.',
      ),
    ];
  }
  if (input.hostHasKvm === true && input.agentUserCanUseKvm === false) {
    return [
      finding(
        "agent-kvm-no-access",
        "warning",
        "system-features is not set explicitly and the agent user cannot read and write /dev/kvm, so Nix in the agent's process does not detect kvm and the agent will not advertise it.",
        "Give the agent user access to /dev/kvm (usually the kvm group), or set system-features explicitly.",
      ),
    ];
  }
  return [];
}

// ---------------------------------------------------------------------------------------------
// Restart needed

export interface FileTime {
  readonly path: string;
  /** Modification time; null when the file does not exist or is unreadable. */
  readonly mtime: Date | number | null;
}

export function checkRestartNeeded(input: {
  /** When the running service started; null when unknown or not running. */
  readonly serviceStartedAt: Date | number | null;
  /** The agent config, nix.conf files, machines files: everything read at start-up. */
  readonly files: readonly FileTime[];
  /** e.g. "systemctl restart hercules-ci-agent.service". */
  readonly restartCommand?: string | null;
}): AgentFinding[] {
  if (input.serviceStartedAt === null) return [];
  const started =
    typeof input.serviceStartedAt === "number" ? input.serviceStartedAt : input.serviceStartedAt.getTime();
  const changed = input.files.filter((f) => {
    if (f.mtime === null) return false;
    const t = typeof f.mtime === "number" ? f.mtime : f.mtime.getTime();
    return t > started;
  });
  if (changed.length === 0) return [];
  return [
    finding(
      "agent-restart-needed",
      "warning",
      `Changed since the agent started (${new Date(started).toISOString()}): ${changed.map((f) => f.path).join(", ")}. The agent reads its config and computes what it advertises only at start-up.`,
      input.restartCommand ? `Restart the agent: ${input.restartCommand}` : "Restart the agent service.",
    ),
  ];
}

// ---------------------------------------------------------------------------------------------
// Agent user

export function checkAgentUser(input: {
  readonly user: string | null;
  readonly uid?: number | null;
}): AgentFinding[] {
  if (input.user === "root" || input.uid === 0) {
    return [
      finding(
        "agent-user-root",
        "error",
        "The agent runs as root: it refuses to host effects as root, and it bypasses the nix-daemon (local store), so builds run in its own processes.",
        "Run the agent as a dedicated system user (NixOS: hercules-ci-agent; nix-darwin: _hercules-ci-agent).",
      ),
    ];
  }
  if (input.user === null) {
    return [
      finding(
        "agent-user-unknown",
        "warning",
        "The service definition does not name a user, so the agent runs as the service manager's default (root for system services).",
        "Set User= (systemd) or UserName (launchd) to the agent's system user.",
      ),
    ];
  }
  return [];
}

// ---------------------------------------------------------------------------------------------
// The agent's NixOS / nix-darwin modules and nix.extraOptions

/**
 * The agent's modules refuse to build a system whose `nix.extraOptions` has a `trusted-users = …`
 * line while the agent claims trust (hercules-ci-agent `internal/nix/common.nix`, the assertion in
 * `config`): such a line comes after `nix.settings` in the generated nix.conf and replaces the
 * `trusted-users` the module added. `extra-trusted-users` is allowed. The pattern is the module's:
 * a line that starts, after blanks, with `trusted-users`, then blanks and `=`.
 */
export function checkModuleExtraOptions(input: {
  /** The text of `nix.extraOptions`. */
  readonly extraOptions: string;
  /** The agent config's nixUserIsTrusted (the modules set it to true by default). */
  readonly nixUserIsTrusted: boolean;
}): AgentFinding[] {
  if (!input.nixUserIsTrusted) return [];
  if (!/(^|\n)[ \t]*trusted-users[ \t]*=/.test(input.extraOptions)) return [];
  return [
    finding(
      "agent-module-extra-options-trusted-users",
      "error",
      "nix.extraOptions sets trusted-users: the hercules-ci-agent NixOS/nix-darwin module refuses this (an assertion fails and the system does not build), because that line would replace the trusted-users the module adds through nix.settings.",
      "Use nix.settings.trusted-users (additive), or write extra-trusted-users = … in nix.extraOptions.",
    ),
  ];
}
