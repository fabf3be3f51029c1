/** The doctor: local checks, then every builder's checks, builders in parallel (bounded). */

import { findDaemonProcess } from "../../host/daemon-proc.js";
import type { RunAsIdentity } from "../../host/run-as.js";
import { severityOfStatus, exitCodeFor as sharedExitCodeFor, summarise } from "../../nix/findings.js";
import type { Machine } from "../../nix/machines.js";
import { sshAuthority } from "../../nix/store-uri.js";
import { agentCaches, agentReport } from "../agent-checks.js";
import type { AgentSelection } from "../agent-select.js";
import { type UserView, userView } from "../view.js";
import { type BuilderCtx, builderChecks } from "./builder.js";
import { agentCheck, type LocalCtx, localChecks, sshEnvironment } from "./local.js";
import { mapLimit, runChecks } from "./runner.js";
import type { CheckResult, CheckStatus } from "./types.js";

export const AGENT_FALLBACK_USER = "hercules-ci-agent";

export interface DoctorOptions {
  user?: string;
  /**
   * Check as this hercules-ci-agent instance (src/app/agent-select.ts): its user, the environment
   * its unit gives it, its nixSettings as client settings, and the agent's own findings (check `agent`).
   */
  agent?: AgentSelection;
  /** No agent instance was found: check as `hercules-ci-agent`, and say so. */
  agentFallback?: boolean;
  /** Only these builders: a store URI, `user@host`, or host. */
  builders?: string[];
  timeoutSec?: number;
  /** Builders probed at once (default 16). */
  concurrency?: number;
  /** A handshake slower than this (ms) is a `slow` warning (default 5000). */
  slowMs?: number;
  nixVersion?: string;
  env: NodeJS.ProcessEnv;
  /** Keep the stack trace of a check that threw (the global --debug). */
  debug?: boolean;
  /** After the local checks (builder null), then as each builder's checks end. */
  onProgress?: (done: number, total: number, builder: string | null) => void;
}

export interface DoctorSummary {
  pass: number;
  warn: number;
  fail: number;
  skip: number;
  builders: number;
  user: string;
  sshIdentity: string;
  nixVersion: string;
  /** How the user was chosen (for --agent). */
  userSource: string;
  exitCode: number;
  durationMs: number;
  builderDurationsMs: Record<string, number>;
}

export interface DoctorReport {
  checks: CheckResult[];
  summary: DoctorSummary;
}

function identityOf(u: UserView["user"]): RunAsIdentity {
  return { name: u.name, uid: u.uid, gid: u.gid, home: u.home, shell: u.shell };
}

/**
 * The shared rule (src/nix/findings.ts: 2 with errors, 1 with warnings, else 0) over the checks'
 * severities; 70 when a check threw (a bug in nix-builders).
 */
export function exitCodeFor(checks: readonly { status: CheckStatus; internal?: true }[]): number {
  if (checks.some((c) => c.internal)) return 70;
  return sharedExitCodeFor(summarise(checks.map((c) => ({ severity: severityOfStatus(c.status) }))));
}

function matchesBuilder(m: Machine, name: string, v: UserView): boolean {
  if (m.storeUri === name || m.storeUri.split("?")[0] === name) return true;
  const a = sshAuthority(m.storeUri, v.version);
  return a.host === name || a.sshTarget === name || (a.user !== null && `${a.user}@${a.host}` === name);
}

export async function doctor(opts: DoctorOptions): Promise<DoctorReport> {
  const t0 = performance.now();
  const sel = opts.agent;
  let user = opts.user;
  let userSource = user ? "--user" : "the current user";
  if (sel) {
    user = sel.user;
    userSource = `${sel.agent.kind} ${sel.agent.name} (${sel.agent.definitionFile ?? sel.agent.configFile ?? "?"})`;
  } else if (!user && opts.agentFallback) {
    user = AGENT_FALLBACK_USER;
    userSource = `no agent service found; assuming user ${AGENT_FALLBACK_USER}`;
  }
  const view = await userView({
    ...(user !== undefined ? { user } : {}),
    ...(opts.nixVersion !== undefined ? { nixVersion: opts.nixVersion } : {}),
    ...(sel ? { userEnv: sel.userEnv, clientOverrides: sel.overrides } : {}),
    env: opts.env,
  });
  const timeoutMs = Math.max(1, opts.timeoutSec ?? 10) * 1000;
  const daemon = findDaemonProcess();
  const sshEnv = sshEnvironment(view, daemon);
  const hookIdentity = identityOf(view.hookUser);
  const me = process.getuid?.() ?? 0;
  const probeIdentity: RunAsIdentity =
    me === 0 || me === hookIdentity.uid
      ? hookIdentity
      : (() => {
          const u = view.db.passwd.find((p) => p.uid === me);
          return {
            name: u?.name ?? String(me),
            uid: me,
            gid: process.getgid?.() ?? me,
            home: u?.home ?? opts.env["HOME"] ?? "/",
            shell: u?.shell ?? "/bin/sh",
          };
        })();

  const lctx: LocalCtx = {
    view,
    daemon,
    sshEnv,
    hookIdentity,
    probeIdentity,
    timeoutMs,
    sshPath: null,
    // With the caches' settings, as show --agent reports them (binary-caches.json, read as the agent).
    ...(sel ? { agent: { sel, report: agentReport(view, sel, await agentCaches(sel)) } } : {}),
  };
  const runOpts = { debug: opts.debug ?? false };
  const local = await runChecks(
    [...localChecks(), ...(sel ? [agentCheck()] : [])],
    lctx,
    null,
    new Map(),
    runOpts,
  );
  const prior = new Map(local.map((c) => [c.id, c]));

  let machines = view.machines.machines;
  if (opts.builders?.length)
    machines = machines.filter((m) => opts.builders!.some((n) => matchesBuilder(m, n, view)));
  const durations: Record<string, number> = {};
  let done = 0;
  opts.onProgress?.(0, machines.length, null);
  const defs = builderChecks();
  const keyChecks: NonNullable<BuilderCtx["env"]["keyChecks"]> = new Map();
  const perBuilder = await mapLimit(machines, opts.concurrency ?? 16, async (m) => {
    const b0 = performance.now();
    const ctx: BuilderCtx = {
      machine: m,
      env: {
        version: view.version,
        identity: probeIdentity,
        env: sshEnv.env,
        sshPath: lctx.sshPath,
        timeoutMs,
        slowMs: opts.slowMs ?? 5000,
        keyChecks,
      },
    };
    const r = await runChecks(defs, ctx, m.storeUri, prior, runOpts);
    durations[m.storeUri] = Math.round(performance.now() - b0);
    done++;
    opts.onProgress?.(done, machines.length, m.storeUri);
    return r;
  });
  const checks = [...local, ...perBuilder.flat()];
  const count = (s: CheckStatus) => checks.filter((c) => c.status === s).length;
  return {
    checks,
    summary: {
      pass: count("pass"),
      warn: count("warn"),
      fail: count("fail"),
      skip: count("skip"),
      builders: machines.length,
      user: view.user.name,
      sshIdentity: probeIdentity.name,
      nixVersion: `${view.version.major}.${view.version.minor}.${view.version.patch}`,
      userSource,
      exitCode: exitCodeFor(checks),
      durationMs: Math.round(performance.now() - t0),
      builderDurationsMs: durations,
    },
  };
}
