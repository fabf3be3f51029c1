/**
 * The facts the builder checks gather (builder-stages.ts) and judge (builder-verdicts.ts): plain data,
 * one type per check. See builder.ts for the order.
 */
import type { RunAsIdentity } from "../../host/run-as.js";
import type { Machine } from "../../nix/machines.js";
import type { StoreOpen } from "../../nix/store-open.js";
import type { NixVersion } from "../../nix/version.js";
import type { ProbeResult } from "../../remote/probe.js";
import type { NixSshArgv, NixSshArgvInput } from "../../remote/ssh-argv.js";
import type { Classification } from "./classify.js";
import type { ConnectResult, ResolveResult } from "./net.js";

/** What every builder check needs to know about this machine. */
export interface SshEnvironment {
  version: NixVersion;
  /** Who runs ssh (root under a daemon, the user without one); we run as it when we can. */
  identity: RunAsIdentity;
  /** The environment ssh gets (the daemon's, or the user's), before probe adjustments. */
  env: Record<string, string>;
  /** Absolute path of `ssh` on that PATH (null: the ssh-path check failed). */
  sshPath: string | null;
  /** Deadline for each network step and each ssh session. */
  timeoutMs: number;
  /** A handshake slower than this is reported as slow (warn). */
  slowMs: number;
  /**
   * `ssh-keygen -y` results per key file, shared by every builder of one run: builders usually share
   * one key, and the answer does not depend on the builder.
   */
  keyChecks?: Map<string, Promise<{ code: number | null; stderr: string }>>;
}

/** What a builder's checks see besides the facts: the machine and this machine's ssh environment. */
export interface BuilderScope {
  machine: Machine;
  env: SshEnvironment;
}

/** `ssh -G`'s answer, the parts the checks use. */
export interface SshG {
  hostname: string;
  port: number;
  user: string;
  identityFiles: string[];
  hostKeyAlias: string | null;
  proxy: string | null;
  strictHostKeyChecking: string;
  userKnownHostsFiles: string[];
}

/** The argv Nix runs for this store, and what it was made from. */
export interface SshPlan {
  input: Omit<NixSshArgvInput, "hostKeyFile">;
  argv: NixSshArgv;
}

/** A stat of a path on this machine: the error code, or what it is. */
export interface PathStat {
  path: string;
  error: string | null;
  isDirectory: boolean;
  isSocket: boolean;
}

/** builder.ssh-argv: what Nix does with this store URI. */
export type ArgvFact =
  | { kind: "refused"; reason: string }
  | {
      kind: "not-ssh";
      open: Exclude<StoreOpen, { kind: "ssh" } | { kind: "rejected" }>;
      stat: PathStat | null;
    }
  | { kind: "dash" }
  | { kind: "argv-error"; error: string }
  | { kind: "ssh"; plan: SshPlan; nixSshOpts: string | undefined; localhost: boolean };

/** Where ssh goes: the plan, and `ssh -G`'s answer (null: Nix runs no ssh for this store). */
export interface Reach {
  plan: SshPlan;
  g: SshG | null;
}

/** builder.ssh-config. */
export type ConfigFact =
  | { kind: "not-ssh" }
  | { kind: "fake"; reach: Reach }
  | { kind: "ran"; reach: Reach; argv: string[]; code: number | null; stdout: string; stderr: string };

/** Where ssh's own TCP connection goes (`via`: how, for messages; "" for the builder itself). */
export interface ConnectTarget {
  host: string;
  port: number;
  via: string;
}

/** builder.dns: the target (null: not tested, a proxy) and its resolution. */
export interface DnsFact {
  reach: Reach;
  target: ConnectTarget | null;
  resolved: ResolveResult | null;
}

/** builder.tcp: each address tried, in order, up to the first that accepted. */
export interface TcpFact {
  reach: Reach;
  target: ConnectTarget | null;
  attempts: { address: string; result: ConnectResult }[];
}

/** One `ssh-keygen -y` of a key file. */
export interface KeyRun {
  file: string;
  argv: string[];
  code: number | null;
  stderr: string;
}

/** builder.key: the key files ssh would use and how `ssh-keygen -y` read each. */
export interface KeyFact {
  reach: Reach;
  explicit: string | null;
  candidates: string[];
  runs: KeyRun[];
}

/** One run of the fixed remote-config command. */
export interface RemoteRun {
  argv: string[];
  /** "mux": over the main probe's ssh connection; "session": its own ssh session (or bash for localhost). */
  via: "mux" | "session";
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  expectStartedLine: boolean;
}

/** The main probe (host-key … remote-daemon all judge this one session). */
export interface ProbeFact {
  reach: Reach;
  result: ProbeResult;
  cls: Classification;
  argv: string[];
  /** The remote-config command, when it ran over the probe's connection. */
  remoteRun: RemoteRun | null;
}

export interface RemoteConfig {
  nixVersion: string | null;
  user: string | null;
  groups: string[];
  settings: Record<string, unknown> | null;
  raw: { stdout: string; stderr: string; code: number | null };
}

/** builder.remote-config (and trust, which passes it on). */
export interface RemoteConfigFact {
  probe: ProbeFact;
  run: RemoteRun;
  rc: RemoteConfig;
}

/** Check id → the fact its stage returns. The local checks' facts are not read by builder checks. */
export interface BuilderFacts {
  "ssh-path": undefined;
  "ssh-identity": undefined;
  "builder.ssh-argv": ArgvFact;
  "builder.ssh-config": ConfigFact;
  "builder.dns": DnsFact;
  "builder.tcp": TcpFact;
  "builder.key": KeyFact;
  "builder.host-key": ProbeFact;
  "builder.auth": ProbeFact;
  "builder.remote-command": ProbeFact;
  "builder.handshake": ProbeFact;
  "builder.remote-daemon": ProbeFact;
  "builder.latency": ProbeFact;
  "builder.remote-config": RemoteConfigFact;
  "builder.trust": RemoteConfigFact;
  "builder.systems": RemoteConfigFact;
  "builder.features": RemoteConfigFact;
  "builder.signatures": RemoteConfigFact;
}
