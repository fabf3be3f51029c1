/**
 * Checks of this machine: Nix, the daemon as the user reaches it, trust, where the builders come from,
 * configuration errors, `ssh` on the daemon's PATH, and the identity that runs ssh.
 */
import { accessSync, constants, statSync } from "node:fs";
import { type DaemonProcess, daemonEnvironment, findOnPath } from "../../host/daemon-proc.js";
import { type RunAsIdentity, runAs } from "../../host/run-as.js";
import { statusOfSeverity } from "../../nix/findings.js";
import type { Finding } from "../../nix/lint.js";
import { formatOrigin } from "../../nix/origin.js";
import { matchUserList } from "../../nix/trust.js";
import { formatNixVersion } from "../../nix/version.js";
import type { AgentReport } from "../agent-checks.js";
import type { AgentSelection } from "../agent-select.js";
import { lint } from "../lint.js";
import type { UserView } from "../view.js";
import { FIXES } from "./classify.js";
import { type CheckDef, type CheckOutcome, type Evidence, truncate } from "./types.js";

export interface LocalCtx {
  view: UserView;
  daemon: DaemonProcess | null;
  /** The environment ssh gets (the daemon's, or the user's), and where it was read. */
  sshEnv: { env: Record<string, string>; source: string };
  /** Who runs ssh for Nix. */
  hookIdentity: RunAsIdentity;
  /** Who the doctor's probes really run as (the hook identity, unless we cannot switch to it). */
  probeIdentity: RunAsIdentity;
  timeoutMs: number;
  /** `ssh` on the PATH ssh runs with: the ssh-path check's fact (null before it ran, or when it failed). */
  sshPath: string | null;
  /** With `--agent`: the hercules-ci-agent instance and what the agent checks found. */
  agent?: { sel: AgentSelection; report: AgentReport };
}

/** Agent findings about trust are `local-untrusted`; every other agent finding is `local-config`. */
function agentCause(id: string): "local-untrusted" | "local-config" {
  return id.startsWith("agent-trust-") || id === "agent-builders-ignored-untrusted"
    ? "local-untrusted"
    : "local-config";
}

/**
 * The hercules-ci-agent instance (only with `--agent`): the same findings as `show --agent`
 * (src/app/agent-checks.ts): its configuration, its user, trust against `nixUserIsTrusted`,
 * advertised platforms without a builder, the narinfo TTL it refuses to start without, and so on.
 */
/**
 * The environment ssh runs with for Nix: the daemon's (read from the running daemon) under a daemon,
 * else the user's own (a service's clean environment for a service user).
 */
export function sshEnvironment(view: LocalCtx["view"], daemon: DaemonProcess | null): LocalCtx["sshEnv"] {
  if (view.storeMode === "daemon") return daemonEnvironment(daemon);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(view.env)) if (v !== undefined) env[k] = v;
  return {
    env,
    source: `${view.user.name}'s environment${view.serviceEnv ? " (a service's clean environment)" : ""}`,
  };
}

export function agentCheck(): CheckDef<LocalCtx> {
  return {
    id: "agent",
    deps: ["nix"],
    async run({ agent }) {
      if (!agent) return { status: "pass", message: "no hercules-ci-agent instance selected" };
      const { sel, report } = agent;
      const name = `${sel.agent.name} (config ${sel.agent.configFile ?? "not found"}, user ${sel.user})`;
      const fs = report.findings;
      const ev: Evidence[] = fs.map((f) => ({
        what: `${f.severity} ${f.id}${f.file ? ` (${f.file}${f.line ? `:${f.line}` : ""})` : ""}`,
        result: f.message,
      }));
      ev.push({
        what: "advertised to hercules-ci.com",
        result: `platforms ${report.advertisement.platforms.join(" ") || "-"}; features ${report.advertisement.systemFeatures.join(" ") || "-"}`,
      });
      // The first error (else the first warning) leads; the others are counted and in the evidence.
      for (const severity of ["error", "warning"] as const) {
        const status = statusOfSeverity(severity);
        const hits = fs.filter((f) => f.severity === severity);
        const first = hits[0];
        if (!first) continue;
        const more = hits.length > 1 ? ` (and ${hits.length - 1} more; see nix-builders show --agent)` : "";
        const cause = agentCause(first.id);
        return {
          status,
          cause,
          message: `${name}: ${first.message}${more}`,
          evidence: ev,
          fix: first.fix ?? FIXES[cause],
        };
      }
      const notes = fs.length ? `; ${fs.length} note${fs.length > 1 ? "s" : ""} (see --verbose)` : "";
      return {
        status: "pass",
        message: `${name}: configuration, user, trust and advertised platforms agree${notes}`,
        evidence: ev,
      };
    },
  };
}

function isExecutable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** `ssh` on the PATH of the environment ssh runs with, or null. */
export function findSsh(sshEnv: LocalCtx["sshEnv"]): string | null {
  return findOnPath("ssh", sshEnv.env["PATH"] ?? "", isExecutable);
}

function canRunAs(id: RunAsIdentity): boolean {
  const me = process.getuid?.() ?? -1;
  return me === 0 || me === id.uid;
}

function modeText(path: string): string {
  try {
    const st = statSync(path);
    return `${(st.mode & 0o7777).toString(8).padStart(4, "0")} uid ${st.uid} gid ${st.gid}`;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? "error";
  }
}

/** nix: the installed Nix, and whose rules are followed. */
export function nixVerdict(view: UserView): CheckOutcome {
  if (!view.nix)
    return {
      status: "fail",
      cause: "local-config",
      message:
        view.versionNote ??
        `Nix is not installed (no \`nix\` on PATH or in the usual places); following Nix ${formatNixVersion(view.version)}'s rules`,
      fix: "Install Nix.",
    };
  return {
    status: "pass",
    message: `${view.nix.versionText} at ${view.nix.nixPath}; following Nix ${formatNixVersion(view.version)}'s rules (${view.versionSource})`,
  };
}

/** user-trust: whether the daemon lets the user in and trusts them, and which line decides. */
export function userTrustVerdict(view: UserView): CheckOutcome {
  if (view.storeMode !== "daemon" || !view.verdict || !view.daemon)
    return { status: "pass", message: view.trustReason };
  const v = view.verdict;
  const sets = view.daemon.assignments.filter((a) => a.setting === "trusted-users");
  const ev: Evidence[] = sets.map((a) => ({
    what: `${formatOrigin(a.origin)}: ${a.name} ${a.op === "append" ? "+=" : "="}`,
    result: a.value,
  }));
  // A later `trusted-users =` line replaces an earlier one that named the user.
  let overridden = "";
  if (!v.trusted) {
    for (const a of sets) {
      if (a.op !== "set" || a === sets[sets.length - 1]) continue;
      const m = matchUserList(a.value.split(/\s+/).filter(Boolean), view.user);
      const last = [...sets].reverse().find((x) => x.op === "set");
      if (m.matched && last)
        overridden = ` ${formatOrigin(a.origin)} lists ${view.user.name}, but the later ${formatOrigin(last.origin)} replaces that line.`;
    }
  }
  const where = sets.length
    ? `trusted-users is set at ${sets.map((a) => formatOrigin(a.origin)).join(", ")}${sets.filter((a) => a.op === "set").length > 1 ? " (the last `trusted-users =` wins)" : ""}`
    : "trusted-users is not set (default: root)";
  if (!v.allowed)
    return {
      status: "fail",
      cause: "local-untrusted",
      message: `the daemon refuses ${view.user.name}: ${v.reason} (it logs: ${v.refusalLogLine ?? ""}).${overridden}`,
      evidence: ev,
      fix: FIXES["local-untrusted"],
    };
  if (!v.trusted)
    return {
      status: "warn",
      cause: "local-untrusted",
      message: `${view.user.name} is ${v.reason}; ${where}.${overridden} The daemon ignores restricted settings (builders, builders-use-substitutes, …) from ${view.user.name}.`,
      evidence: ev,
      fix: FIXES["local-untrusted"],
    };
  return { status: "pass", message: `${view.user.name} is trusted: ${v.reason}; ${where}`, evidence: ev };
}

/** What the daemon check gathered: the socket, its stats, and the `nix store ping` run as the user. */
export interface DaemonFact {
  socket: string;
  evidence: Evidence[];
  /** Null: the doctor cannot run as the user (not root). */
  ping: { argv: string[]; code: number | null; timedOut: boolean; output: string } | null;
}

async function daemonStage(ctx: LocalCtx): Promise<DaemonFact> {
  const { view } = ctx;
  const stateDir = view.env["NIX_STATE_DIR"] ?? "/nix/var/nix";
  const socket = view.env["NIX_DAEMON_SOCKET_PATH"] ?? `${stateDir}/daemon-socket/socket`;
  const sockDir = socket.slice(0, socket.lastIndexOf("/"));
  const evidence: Evidence[] = [
    { what: `stat ${sockDir}`, result: modeText(sockDir) },
    { what: `stat ${socket}`, result: modeText(socket) },
    {
      what: "nix-daemon process (this mount namespace)",
      result: ctx.daemon ? `pid ${ctx.daemon.pid}` : "none found",
    },
    {
      what: `groups of ${view.user.name}`,
      result: [view.user.primaryGroup, ...view.user.supplementaryGroups].join(" "),
    },
  ];
  const userId: RunAsIdentity = {
    name: view.user.name,
    uid: view.user.uid,
    gid: view.user.gid,
    home: view.user.home,
    shell: view.user.shell,
  };
  if (!canRunAs(userId)) return { socket, evidence, ping: null };
  const nix = view.nix?.nixPath ?? "nix";
  const argv = [nix, "--extra-experimental-features", "nix-command", "store", "ping", "--store", "daemon"];
  const env: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(view.env)) env[k] = v;
  const r = await runAs(userId, argv, { env, timeoutMs: ctx.timeoutMs });
  return {
    socket,
    evidence,
    ping: { argv, code: r.code, timedOut: r.timedOut, output: `${r.stdout}${r.stderr}`.trim() },
  };
}

/** daemon: the user reaches the daemon (its `nix store ping` answers). */
export function daemonVerdict(f: DaemonFact, user: string): CheckOutcome {
  const ev = [...f.evidence];
  const p = f.ping;
  if (p === null)
    return {
      status: "warn",
      cause: "daemon-unreachable",
      message: `cannot connect as ${user} without root; not tested`,
      evidence: ev,
    };
  ev.unshift({
    what: `ran as ${user}: ${p.argv.join(" ")}`,
    result: `exit ${p.code}${p.timedOut ? " (timed out)" : ""}: ${truncate(p.output, 600)}`,
  });
  if (p.code !== 0) {
    const perm = /Permission denied/.test(p.output);
    return {
      status: "fail",
      cause: "daemon-unreachable",
      message: perm
        ? `${user} may not open the daemon socket ${f.socket} (permission denied): on Debian the socket directory is group nix-users`
        : `${user} cannot reach the daemon: ${p.output.split("\n").pop()}`,
      evidence: ev,
      fix: FIXES["daemon-unreachable"],
    };
  }
  const ver = /Version: (\S+)/.exec(p.output)?.[1];
  return {
    status: "pass",
    message: `${user} reaches the daemon at ${f.socket}${ver ? ` (Nix ${ver})` : ""}`,
    evidence: ev,
  };
}

/** builders: where the build hook's builders come from, and whether the daemon ignores the user's. */
export function buildersVerdict(view: UserView): CheckOutcome {
  const origin = view.builders.origin.map(formatOrigin).join(" + ") || "default";
  const ignored = view.ignored.find((i) => i.setting === "builders");
  const ev: Evidence[] = [
    { what: "builders", result: `${view.builders.value === "" ? '""' : view.builders.value} (${origin})` },
  ];
  for (const inc of view.machines.includes)
    ev.push({
      what: `machines file ${inc.resolved}`,
      result: inc.found ? "read" : "not found (Nix skips it silently)",
    });
  if (ignored)
    return {
      status: "fail",
      cause: "local-untrusted",
      message: `${view.user.name}'s builders = ${ignored.value} (${formatOrigin(ignored.origin)}) is ignored by the daemon: ${ignored.why}. Builds use the daemon's builders (${view.builders.value || "none"}).`,
      evidence: ev,
      fix: FIXES["local-untrusted"],
    };
  const n = view.machines.machines.length;
  if (n === 0 && !view.machines.error)
    return {
      status: "warn",
      cause: "local-config",
      message: `no builders: the build hook gets builders = ${view.builders.value === "" ? '""' : view.builders.value} from ${origin}; every build is local`,
      evidence: ev,
      fix: "Set `builders` in the daemon's nix.conf (e.g. `builders = @/etc/nix/machines`) and restart nix-daemon.",
    };
  return {
    status: "pass",
    message: `${n} builder${n === 1 ? "" : "s"} from the ${view.builders.from === "daemon" ? "daemon's" : "user's"} configuration (${origin})`,
    evidence: ev,
  };
}

/** lint: the first error (else warning) of `nix-builders lint` leads; all are in the evidence. */
export function lintVerdict(findings: readonly Finding[]): CheckOutcome {
  const where = (f: Finding): string => (f.file ? `${f.file}${f.line ? `:${f.line}` : ""}` : "configuration");
  const errors = findings.filter((f) => f.severity === "error");
  const warnings = findings.filter((f) => f.severity === "warning");
  const ev = [...errors, ...warnings].map((f) => ({
    what: `${f.severity} ${f.id} (${where(f)})`,
    result: f.message,
  }));
  const [first] = errors.length ? errors : warnings;
  if (!first)
    return {
      status: "pass",
      message: "nix-builders lint finds no errors or warnings in the configuration, machines and keys",
    };
  const hits = errors.length ? errors : warnings;
  const message = `${where(first)}: ${first.message}${hits.length > 1 ? ` (and ${hits.length - 1} more; see nix-builders lint)` : ""}`;
  if (errors.length)
    return {
      status: "fail",
      cause: "local-config",
      message,
      evidence: ev,
      fix: first.fix || "Fix the line named in the evidence; meanwhile `--builders ''` builds locally.",
    };
  return {
    status: "warn",
    cause: "local-config",
    message,
    evidence: ev,
    fix: first.fix || FIXES["local-config"],
  };
}

/** ssh-path: `ssh` on the PATH ssh runs with (the daemon's, or the user's). */
export function sshPathVerdict(ctx: Pick<LocalCtx, "view" | "sshEnv" | "sshPath">): CheckOutcome {
  const path = ctx.sshEnv.env["PATH"] ?? "";
  const who = ctx.view.storeMode === "daemon" ? "the daemon's" : `${ctx.view.user.name}'s`;
  const ssh = ctx.sshPath;
  const ev = [{ what: `${who} environment (${ctx.sshEnv.source})`, result: `PATH=${path}` }];
  if (!ssh)
    return {
      status: "fail",
      cause: "ssh-missing",
      message: `no \`ssh\` on ${who} PATH: Nix fails with "unable to execute 'ssh': No such file or directory"`,
      evidence: ev,
      fix: FIXES["ssh-missing"],
    };
  const nso = ctx.sshEnv.env["NIX_SSHOPTS"];
  return {
    status: "pass",
    message: `${ssh} on ${who} PATH${nso !== undefined ? `; NIX_SSHOPTS=${nso}` : ""}`,
    evidence: ev,
  };
}

/** ssh-identity: who runs ssh for Nix, and whether the doctor's probes can run as it. */
export function sshIdentityVerdict(
  ctx: Pick<LocalCtx, "view" | "hookIdentity" | "probeIdentity">,
): CheckOutcome {
  const h = ctx.hookIdentity;
  const how =
    ctx.view.storeMode === "daemon"
      ? `the daemon's build hook runs ssh as ${h.name}`
      : `without a daemon the build hook runs ssh as ${h.name}`;
  const files = `${h.home}/.ssh/config, /etc/ssh/ssh_config, ${h.home}/.ssh/known_hosts, /etc/ssh/ssh_known_hosts`;
  if (ctx.probeIdentity.uid !== h.uid)
    return {
      status: "warn",
      cause: "local-config",
      message: `${how}, but the doctor runs as ${ctx.probeIdentity.name} and cannot switch to ${h.name}: the builder checks use ${ctx.probeIdentity.name}'s keys and ssh config, not ${h.name}'s. Run the doctor as root.`,
    };
  return { status: "pass", message: `${how}; it reads ${files} (the builder checks run as ${h.name})` };
}

/** The checks of this machine, in order. */
export function localChecks(): CheckDef<LocalCtx>[] {
  return [
    { id: "nix", deps: [], run: async ({ view }) => nixVerdict(view) },
    { id: "user-trust", deps: ["nix"], run: async ({ view }) => userTrustVerdict(view) },
    {
      id: "daemon",
      deps: ["user-trust"],
      async run(ctx) {
        if (ctx.view.storeMode !== "daemon")
          return { status: "pass", message: `not used: ${ctx.view.trustReason}` };
        return daemonVerdict(await daemonStage(ctx), ctx.view.user.name);
      },
    },
    { id: "builders", deps: ["nix"], run: async ({ view }) => buildersVerdict(view) },
    { id: "lint", deps: ["nix"], run: async ({ view }) => lintVerdict((await lint({}, {}, view)).findings) },
    {
      id: "ssh-path",
      deps: ["nix"],
      async run(ctx) {
        // The builder checks run ssh from here (doctor.ts and watch read it after the local checks).
        ctx.sshPath = findSsh(ctx.sshEnv);
        return sshPathVerdict(ctx);
      },
    },
    { id: "ssh-identity", deps: ["ssh-path"], run: async (ctx) => sshIdentityVerdict(ctx) },
  ];
}
