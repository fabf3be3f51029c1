/**
 * Checks for one builder, run as the identity that runs ssh for Nix (root under a daemon), with Nix's
 * exact ssh argv for the version in force (plus BatchMode, ConnectTimeout and -v), in dependency order:
 *
 *   ssh-argv → ssh-config → dns → tcp ─┐
 *                         └──── key ───┴→ host-key → auth → remote-command → handshake ─┬→ remote-config → trust → signatures
 *                                                                       └→ remote-daemon ─┘              ├→ systems
 *                                                                                                          └→ features
 *                                                   handshake → latency
 *
 * Each check is a stage (builder-stages.ts: it runs or reads something and returns a typed fact,
 * builder-facts.ts) and a verdict (builder-verdicts.ts: pure). The dependencies below are checked by
 * the compiler: a stage or verdict sees exactly the facts of the checks it names (staged.ts).
 *
 * One ssh session (the "main probe": Nix's argv, the handshake of the store's protocol, one
 * QueryValidPaths so that the remote store is really opened) answers host-key … remote-daemon: the stage
 * it reached decides which of them fails (classify.ts). The probe's ssh is a connection master
 * (ControlMaster, a socket in a private temp dir): once the handshake passed, a fixed command reads the
 * builder's configuration over that same connection (remote-config), without a second key exchange.
 * See docs/doctor.md.
 */
import type { BuilderFacts, BuilderScope, ProbeFact, RemoteConfig } from "./builder-facts.js";
import {
  dnsStage,
  keyStage,
  planStage,
  probeStage,
  reachOf,
  remoteConfigRun,
  sshConfigStage,
  tcpStage,
} from "./builder-stages.js";
import * as V from "./builder-verdicts.js";
import { type StagedCtx, stagesOf } from "./staged.js";
import type { CheckDef } from "./types.js";

export type { RemoteConfig, SshEnvironment } from "./builder-facts.js";
export { firstJumpHop } from "./builder-verdicts.js";

/**
 * What the runner passes each builder check: the machine, the ssh environment, the facts so far, and,
 * for watch's probe records (src/app/watch/probe.ts), the main probe and the builder's configuration
 * once they are known.
 */
export type BuilderCtx = StagedCtx<BuilderScope> & {
  probe?: Promise<ProbeFact>;
  remote?: RemoteConfig;
};

const check = stagesOf<BuilderFacts, BuilderCtx>();

export function builderChecks(): CheckDef<BuilderCtx>[] {
  return [
    check(
      "builder.ssh-argv",
      ["ssh-path"],
      (_, s) => planStage(s),
      (f, _, s) => V.sshArgvVerdict(f, s),
    ),
    check(
      "builder.ssh-config",
      ["builder.ssh-argv", "ssh-identity"],
      (d, s) => sshConfigStage(d["builder.ssh-argv"], s),
      (f, _, s) => V.sshConfigVerdict(f, s),
    ),
    check(
      "builder.dns",
      ["builder.ssh-config"],
      (d, s) => dnsStage(reachOf(d["builder.ssh-config"]), s),
      (f, _, s) => V.dnsVerdict(f, s),
    ),
    check(
      "builder.tcp",
      ["builder.dns"],
      (d, s) => tcpStage(d["builder.dns"], s),
      (f, _, s) => V.tcpVerdict(f, s),
    ),
    check(
      "builder.key",
      ["builder.ssh-config"],
      (d, s) => keyStage(reachOf(d["builder.ssh-config"]), s),
      (f, _, s) => V.keyVerdict(f, s),
    ),
    check(
      "builder.host-key",
      ["builder.tcp", "builder.key"],
      (d, s) => {
        s.probe = probeStage(d["builder.tcp"].reach, s);
        return s.probe;
      },
      (f, _, s) => V.hostKeyVerdict(f, s),
    ),
    check(
      "builder.auth",
      ["builder.host-key"],
      (d) => d["builder.host-key"],
      (f, _, s) => V.authVerdict(f, s),
    ),
    check("builder.remote-command", ["builder.auth"], (d) => d["builder.auth"], V.remoteCommandVerdict),
    check(
      "builder.handshake",
      ["builder.remote-command"],
      (d) => d["builder.remote-command"],
      V.handshakeVerdict,
    ),
    check(
      "builder.remote-daemon",
      ["builder.remote-command"],
      (d) => d["builder.remote-command"],
      V.remoteDaemonVerdict,
    ),
    check(
      "builder.latency",
      ["builder.handshake"],
      (d) => d["builder.handshake"],
      (f, _, s) => V.latencyVerdict(f, s),
    ),
    check(
      "builder.remote-config",
      ["builder.handshake", "builder.remote-daemon"],
      async (d, s) => {
        const probe = d["builder.handshake"];
        const run = await remoteConfigRun(probe, s);
        s.remote = V.parseRemoteConfig(run);
        return { probe, run, rc: s.remote };
      },
      V.remoteConfigVerdict,
    ),
    check("builder.trust", ["builder.remote-config"], (d) => d["builder.remote-config"], V.trustVerdict),
    check(
      "builder.systems",
      ["builder.remote-config"],
      (d) => d["builder.remote-config"],
      (f, _, s) => V.systemsVerdict(f, s),
    ),
    check(
      "builder.features",
      ["builder.remote-config"],
      (d) => d["builder.remote-config"],
      (f, _, s) => V.featuresVerdict(f, s),
    ),
    check("builder.signatures", ["builder.trust"], (d) => d["builder.trust"], V.signaturesVerdict),
  ];
}
