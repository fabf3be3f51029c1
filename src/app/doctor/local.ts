/**
 * Checks of this machine: Nix, the daemon as the user reaches it, trust, where the builders come from,
 * configuration errors, `ssh` on the daemon's PATH, and the identity that runs ssh.
 */
import { accessSync, constants, statSync } from "node:fs";
import { type DaemonProcess, daemonEnvironment, findOnPath } from "../../host/daemon-proc.js";
import { type RunAsIdentity, runAs } from "../../host/run-as.js";
import type { Finding } from "../../nix/lint.js";
import { formatOrigin } from "../../nix/origin.js";
import { matchUserList } from "../../nix/trust.js";
import { formatNixVersion } from "../../nix/version.js";
import type { AgentReport } from "../agent-checks.js";
import type { AgentSelection } from "../agent-select.js";
import { lint } from "../lint.js";
import type { UserView } from "../view.js";
import { FIXES } from "./classify.js";
import { type CheckDef, type Evidence, truncate } from "./types.js";

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
  /** Filled by ssh-path. */
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
      for (const [severity, status] of [
        ["error", "fail"],
        ["warning", "warn"],
      ] as const) {
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

export function localChecks(): CheckDef<LocalCtx>[] {
  return [
    {
      id: "nix",
      deps: [],
      async run({ view }) {
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
      },
    },
    {
      id: "user-trust",
      deps: ["nix"],
      async run({ view }) {
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
            if (m.matched) {
              const last = [...sets].reverse().find((x) => x.op === "set")!;
              overridden = ` ${formatOrigin(a.origin)} lists ${view.user.name}, but the later ${formatOrigin(last.origin)} replaces that line.`;
            }
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
        return {
          status: "pass",
          message: `${view.user.name} is trusted: ${v.reason}; ${where}`,
          evidence: ev,
        };
      },
    },
    {
      id: "daemon",
      deps: ["user-trust"],
      async run(ctx) {
        const { view } = ctx;
        if (view.storeMode !== "daemon") return { status: "pass", message: `not used: ${view.trustReason}` };
        const stateDir = view.env["NIX_STATE_DIR"] ?? "/nix/var/nix";
        const socket = view.env["NIX_DAEMON_SOCKET_PATH"] ?? `${stateDir}/daemon-socket/socket`;
        const sockDir = socket.slice(0, socket.lastIndexOf("/"));
        const ev: Evidence[] = [
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
        if (!canRunAs(userId))
          return {
            status: "warn",
            cause: "daemon-unreachable",
            message: `cannot connect as ${view.user.name} without root; not tested`,
            evidence: ev,
          };
        const nix = view.nix?.nixPath ?? "nix";
        const argv = [
          nix,
          "--extra-experimental-features",
          "nix-command",
          "store",
          "ping",
          "--store",
          "daemon",
        ];
        const env: Record<string, string | undefined> = {};
        for (const [k, v] of Object.entries(view.env)) env[k] = v;
        const r = await runAs(userId, argv, { env, timeoutMs: ctx.timeoutMs });
        const out = `${r.stdout}${r.stderr}`.trim();
        ev.unshift({
          what: `ran as ${view.user.name}: ${argv.join(" ")}`,
          result: `exit ${r.code}${r.timedOut ? " (timed out)" : ""}: ${truncate(out, 600)}`,
        });
        if (r.code !== 0) {
          const perm = /Permission denied/.test(out);
          return {
            status: "fail",
            cause: "daemon-unreachable",
            message: perm
              ? `${view.user.name} may not open the daemon socket ${socket} (permission denied): on Debian the socket directory is group nix-users`
              : `${view.user.name} cannot reach the daemon: ${out.split("\n").pop()}`,
            evidence: ev,
            fix: FIXES["daemon-unreachable"],
          };
        }
        const ver = /Version: (\S+)/.exec(out)?.[1];
        return {
          status: "pass",
          message: `${view.user.name} reaches the daemon at ${socket}${ver ? ` (Nix ${ver})` : ""}`,
          evidence: ev,
        };
      },
    },
    {
      id: "builders",
      deps: ["nix"],
      async run({ view }) {
        const origin = view.builders.origin.map(formatOrigin).join(" + ") || "default";
        const ignored = view.ignored.find((i) => i.setting === "builders");
        const ev: Evidence[] = [
          {
            what: "builders",
            result: `${view.builders.value === "" ? '""' : view.builders.value} (${origin})`,
          },
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
      },
    },
    {
      id: "lint",
      deps: ["nix"],
      async run({ view }) {
        const result = await lint({}, {}, view);
        const where = (f: Finding): string =>
          f.file ? `${f.file}${f.line ? `:${f.line}` : ""}` : "configuration";
        const errors = result.findings.filter((f) => f.severity === "error");
        const warnings = result.findings.filter((f) => f.severity === "warning");
        const ev = [...errors, ...warnings].map((f) => ({
          what: `${f.severity} ${f.id} (${where(f)})`,
          result: f.message,
        }));
        if (errors.length)
          return {
            status: "fail",
            cause: "local-config",
            message: `${where(errors[0]!)}: ${errors[0]!.message}${errors.length > 1 ? ` (and ${errors.length - 1} more; see nix-builders lint)` : ""}`,
            evidence: ev,
            fix:
              errors[0]!.fix ||
              "Fix the line named in the evidence; meanwhile `--builders ''` builds locally.",
          };
        if (warnings.length)
          return {
            status: "warn",
            cause: "local-config",
            message: `${where(warnings[0]!)}: ${warnings[0]!.message}${warnings.length > 1 ? ` (and ${warnings.length - 1} more; see nix-builders lint)` : ""}`,
            evidence: ev,
            fix: warnings[0]!.fix || FIXES["local-config"],
          };
        return {
          status: "pass",
          message: "nix-builders lint finds no errors or warnings in the configuration, machines and keys",
        };
      },
    },
    {
      id: "ssh-path",
      deps: ["nix"],
      async run(ctx) {
        const path = ctx.sshEnv.env["PATH"] ?? "";
        const who = ctx.view.storeMode === "daemon" ? "the daemon's" : `${ctx.view.user.name}'s`;
        const ssh = findOnPath("ssh", path, isExecutable);
        ctx.sshPath = ssh;
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
      },
    },
    {
      id: "ssh-identity",
      deps: ["ssh-path"],
      async run(ctx) {
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
      },
    },
  ];
}
