/**
 * Issue 18 point 6: can a hercules-ci-agent build for its own (native) system go to a remote builder?
 *
 * The agent's worker sends the daemon either an in-memory derivation (`BuildDerivation`) or, when it
 * "materialises" the derivation, `BuildPaths` on the `.drv` (hercules-ci-agent 0.10.8
 * `hercules-ci-agent-worker/Hercules/Agent/Worker/Build.hs:34-52`, `…/Build/Prefetched.hs:161-195`).
 * It materialises when the agent is not trusted (`nixUserIsTrusted = false`), when the platform is in
 * `remotePlatformsWithSameFeatures`, or when its `max-jobs` is 0 (0.10.6 and later).
 *
 * The daemon offers a `BuildPaths` build to the build hook as usual. A `BuildDerivation` goal:
 * * up to Nix 2.29 never asks the hook (`2.8.0:src/libstore/build/derivation-goal.cc`, `tryBuildHook`:
 *   `!useDerivation`): it builds locally, and with `max-jobs = 0` fails with `unable to start any build`;
 * * from Nix 2.30 asks the hook when the `.drv` is valid in the daemon's store
 *   (`2.30.5:src/libstore/build/derivation-building-goal.cc`, `tryBuildHook`: `!isValidPath(drvPath)`),
 *   whatever max-jobs is; otherwise it behaves as before.
 *
 * Checked on real Nix 2.8 and 2.30 (`test/unit/agent-native-offload.test.ts`: throwaway daemons, a
 * chroot store as the builder, the worker protocol's BuildDerivation and BuildPaths). The thresholds
 * 2.29/2.30 come from the sources at those tags (modelled).
 */
import { formatNixVersion, type NixVersion } from "../nix/version.js";
import { NIX, since } from "../nix/versions.js";
import { type AgentFinding, finding } from "./findings.js";

export type OffloadOutcome = "remote" | "local" | "fails";

export interface NativeOffloadInput {
  readonly version: NixVersion;
  /** The worker sends BuildPaths on the `.drv` (true) or an in-memory BuildDerivation (false). */
  readonly materialised: boolean;
  /** The max-jobs the daemon applies (the client's: it is a fixed field of SetOptions). */
  readonly maxJobs: number;
  /** The `.drv` is valid in the daemon's store (it is when the agent evaluated through that daemon). */
  readonly drvInDaemonStore: boolean;
}

/** Where a native build that a builder could take ends up (builders that fit, idle). */
export function agentNativeOffload(input: NativeOffloadInput): { outcome: OffloadOutcome; why: string } {
  if (input.materialised)
    return { outcome: "remote", why: "BuildPaths on the .drv: the daemon offers it to the build hook" };
  const hookAsked = since(input.version, NIX.hookInMemoryDrv) && input.drvInDaemonStore;
  if (hookAsked)
    return {
      outcome: "remote",
      why: `Nix ${formatNixVersion(input.version)} offers an in-memory derivation to the build hook when its .drv is in the store`,
    };
  const why = since(input.version, NIX.hookInMemoryDrv)
    ? "the .drv is not in the daemon's store, so the daemon does not ask the build hook"
    : `Nix ${formatNixVersion(input.version)} never offers an in-memory derivation (BuildDerivation) to the build hook`;
  if (input.maxJobs === 0)
    return { outcome: "fails", why: `${why}, and max-jobs = 0: "unable to start any build"` };
  return { outcome: "local", why: `${why}: it builds on this machine` };
}

export interface NativeOffloadReport {
  readonly system: string;
  /** How the worker hands native builds to the daemon. */
  readonly op: "BuildPaths" | "BuildDerivation";
  readonly outcome: OffloadOutcome;
  readonly why: string;
  /** Builders (store URIs) that accept the native system without mandatory features. */
  readonly builders: readonly string[];
}

export interface NativeOffloadCheckInput {
  readonly version: NixVersion;
  readonly system: string;
  /** `nixUserIsTrusted` of the agent's config: the agent acts on its claim. */
  readonly nixUserIsTrusted: boolean;
  /** max-jobs in the agent's view, null when unknown ("auto" counts as non-zero). */
  readonly maxJobs: number | null;
  readonly remotePlatforms: readonly string[] | null;
  readonly machines: readonly {
    readonly storeUri: string;
    readonly systemTypes: readonly string[];
    readonly mandatoryFeatures: readonly string[];
  }[];
  /** The agent's version when known; below 0.10.6 max-jobs = 0 does not make it materialise. */
  readonly agentVersion?: string | null;
}

function before0106(v: string | null | undefined): boolean {
  if (!v) return false;
  const m = /^(\d+)\.(\d+)\.(\d+)/.exec(v);
  if (!m) return false;
  const [a, b, c] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return a === 0 && (b < 10 || (b === 10 && c < 6));
}

/**
 * The report for `show --agent` and the doctor, plus a finding: a warning when builders for the native
 * system exist but the agent's native builds cannot reach them, info otherwise. Nothing without such builders.
 */
export function checkNativeOffload(input: NativeOffloadCheckInput): {
  report: NativeOffloadReport | null;
  findings: AgentFinding[];
} {
  const builders = input.machines
    .filter((m) => m.systemTypes.includes(input.system) && m.mandatoryFeatures.length === 0)
    .map((m) => m.storeUri);
  if (builders.length === 0) return { report: null, findings: [] };
  const maxJobs = input.maxJobs ?? 1;
  const inRemote = (input.remotePlatforms ?? []).includes(input.system);
  const materialised =
    !input.nixUserIsTrusted || inRemote || (maxJobs === 0 && !before0106(input.agentVersion));
  // The agent evaluates through the daemon, which writes the .drv into its store (inferred from the
  // agent's use of the daemon store; not observed on a running agent).
  const r = agentNativeOffload({ version: input.version, materialised, maxJobs, drvInDaemonStore: true });
  const op = materialised ? "BuildPaths" : "BuildDerivation";
  const report: NativeOffloadReport = { system: input.system, op, outcome: r.outcome, why: r.why, builders };
  const list = builders.join(", ");
  const reason = !input.nixUserIsTrusted
    ? "the agent is not trusted, so it hands the daemon the .drv (BuildPaths)"
    : inRemote
      ? `${input.system} is in remotePlatformsWithSameFeatures, so the agent hands the daemon the .drv (BuildPaths)`
      : materialised
        ? "max-jobs = 0, so the agent hands the daemon the .drv (BuildPaths)"
        : "the trusted agent hands the daemon in-memory derivations (BuildDerivation)";
  const v = formatNixVersion(input.version);
  if (r.outcome === "remote")
    return {
      report,
      findings: [
        finding(
          "agent-native-offload",
          "info",
          `Builds for ${input.system} (the native system) can go to ${list}: ${reason}; ${r.why} (Nix ${v}).`,
          null,
        ),
      ],
    };
  return {
    report,
    findings: [
      finding(
        "agent-native-offload",
        "warning",
        `Builds for ${input.system} (the native system) never go to ${list}: ${reason}, and ${r.why}.`,
        r.outcome === "fails"
          ? "Upgrade hercules-ci-agent to 0.10.6 or newer (it then materialises with max-jobs = 0)."
          : `To let them use the builders: add ${input.system} to remotePlatformsWithSameFeatures, or set max-jobs = 0 for the agent (agent ≥ 0.10.6; then nothing builds locally), or use Nix 2.30 or newer on this machine.`,
      ),
    ],
  };
}
