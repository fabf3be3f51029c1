/** The doctor: local checks, then every builder's checks, builders in parallel (bounded). */
import { discoverAgents } from "../agent/discover.js";
import { type UserView, userView } from "../commands/view.js";
import { daemonEnvironment, findDaemonProcess } from "../host/daemon-proc.js";
import type { RunAsIdentity } from "../host/run-as.js";
import type { Machine } from "../nix/machines.js";
import { sshAuthority } from "../nix/store-uri.js";
import { type BuilderCtx, builderChecks } from "./builder.js";
import { type LocalCtx, localChecks } from "./local.js";
import { mapLimit, runChecks } from "./runner.js";
import type { CheckResult, CheckStatus } from "./types.js";

export const AGENT_FALLBACK_USER = "hercules-ci-agent";

export interface DoctorOptions {
  user?: string;
  /** Check as the hercules-ci-agent service user (discovered from its unit; else `hercules-ci-agent`). */
  agent?: boolean;
  /** Only these builders: a store URI, `user@host`, or host. */
  builders?: string[];
  timeoutSec?: number;
  /** Builders probed at once (default 16). */
  concurrency?: number;
  /** A handshake slower than this (ms) is a `slow` warning (default 5000). */
  slowMs?: number;
  nixVersion?: string;
  env: NodeJS.ProcessEnv;
  onProgress?: (done: number, total: number, builder: string) => void;
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

export function exitCodeFor(checks: readonly { status: CheckStatus }[]): number {
  if (checks.some((c) => c.status === "fail")) return 2;
  if (checks.some((c) => c.status === "warn")) return 1;
  return 0;
}

function matchesBuilder(m: Machine, name: string, v: UserView): boolean {
  if (m.storeUri === name || m.storeUri.split("?")[0] === name) return true;
  const a = sshAuthority(m.storeUri, v.version);
  return a.host === name || a.sshTarget === name || (a.user !== null && `${a.user}@${a.host}` === name);
}

function agentUser(): { user: string; env: Record<string, string>; source: string } {
  try {
    const agents = discoverAgents();
    const a = agents.find((x) => x.user);
    if (a?.user) {
      const env: Record<string, string> = {};
      for (const [k, e] of Object.entries(a.environment)) env[k] = e.value;
      return { user: a.user, env, source: `${a.kind} ${a.name} (${a.definitionFile ?? "?"})` };
    }
  } catch {
    // fall through
  }
  return {
    user: AGENT_FALLBACK_USER,
    env: {},
    source: `no agent service found; assuming user ${AGENT_FALLBACK_USER}`,
  };
}

export async function doctor(opts: DoctorOptions): Promise<DoctorReport> {
  const t0 = performance.now();
  let user = opts.user;
  let userEnv: Record<string, string> | undefined;
  let userSource = user ? "--user" : "the current user";
  if (!user && opts.agent) {
    const a = agentUser();
    user = a.user;
    userEnv = a.env;
    userSource = a.source;
  }
  const view = await userView({
    ...(user !== undefined ? { user } : {}),
    ...(opts.nixVersion !== undefined ? { nixVersion: opts.nixVersion } : {}),
    ...(userEnv !== undefined ? { userEnv } : {}),
    env: opts.env,
  });
  const timeoutMs = Math.max(1, opts.timeoutSec ?? 10) * 1000;
  const daemon = findDaemonProcess();
  let sshEnv: LocalCtx["sshEnv"];
  if (view.storeMode === "daemon") sshEnv = daemonEnvironment(daemon);
  else {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(view.env)) if (v !== undefined) env[k] = v;
    sshEnv = {
      env,
      source: `${view.user.name}'s environment${view.serviceEnv ? " (a service's clean environment)" : ""}`,
    };
  }
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

  const lctx: LocalCtx = { view, daemon, sshEnv, hookIdentity, probeIdentity, timeoutMs, sshPath: null };
  const local = await runChecks(localChecks(), lctx, null);
  const prior = new Map(local.map((c) => [c.id, c]));

  let machines = view.machines.machines;
  if (opts.builders?.length)
    machines = machines.filter((m) => opts.builders!.some((n) => matchesBuilder(m, n, view)));
  const durations: Record<string, number> = {};
  let done = 0;
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
    const r = await runChecks(defs, ctx, m.storeUri, prior);
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
