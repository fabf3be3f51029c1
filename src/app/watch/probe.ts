/**
 * watch's prober and view source: the doctor's checks, run the way Nix connects (Nix's exact ssh argv, as
 * the identity that runs ssh for Nix, the serve or worker handshake and one store query), round after
 * round. This machine's checks run first each round; a local fault (Nix missing, the daemon unreachable,
 * ssh missing, the user refused) is reported instead of blaming the builders. The builder's remote
 * configuration (trust, systems, features) is read on every Nth probe only.
 */

import { statSync } from "node:fs";
import { join } from "node:path";
import { findDaemonProcess } from "../../host/daemon-proc.js";
import type { RunAsIdentity } from "../../host/run-as.js";
import { parseBuilders } from "../../nix/machines.js";
import type { AgentSelection } from "../agent-select.js";
import { type BuilderCtx, builderChecks } from "../doctor/builder.js";
import { type LocalCtx, localChecks, sshEnvironment } from "../doctor/local.js";
import { mapLimit, runChecks } from "../doctor/runner.js";
import type { CheckDef, CheckOutcome, CheckResult } from "../doctor/types.js";
import { type UserView, userView } from "../view.js";
import type { Prober, RoundProbe, Source, SourceMachine, SourceProvider } from "./engine.js";
import type { ProbeRecord } from "./model.js";
import { LOCAL_CAUSES } from "./policy.js";
import { fileSource, parseSourceText, SourceError } from "./source.js";
import { sameFile } from "./writer.js";

export interface ViewInput {
  /** The agent instance whose view is used (its user, environment and nixSettings). */
  agent?: AgentSelection;
  env: NodeJS.ProcessEnv;
  nixVersion?: string;
}

export function viewOf(input: ViewInput): Promise<UserView> {
  const sel = input.agent;
  return userView({
    ...(sel ? { user: sel.user, userEnv: sel.userEnv, clientOverrides: sel.overrides } : {}),
    ...(input.nixVersion !== undefined ? { nixVersion: input.nixVersion } : {}),
    env: input.env,
  });
}

/**
 * The builders a user's Nix uses, as `show` computes them. A `builders` that is one `@FILE` is that file
 * (lines copied byte for byte); anything else (inline rows, several files) is the rows Nix parsed.
 */
export function viewSource(input: ViewInput, output: string): SourceProvider {
  return {
    async read(): Promise<Source> {
      const v = await viewOf(input);
      const spec = v.builders.value.trim();
      const one = /^@(\S+)$/.exec(spec);
      if (one) {
        const inc = v.machines.includes[0];
        const file = inc?.resolved ?? one[1]!;
        if (sameFile(file, output))
          throw new SourceError(
            file,
            `is the output (${output}): Nix already reads watch's output; name the real source with --source FILE`,
          );
        return fileSource(file, output, v.version, v.hookSystem).read();
      }
      if (v.machines.error)
        throw new SourceError(
          v.machines.error.file ?? "builders",
          `Nix would refuse it: ${v.machines.error.message}`,
        );
      const text = v.machines.machines.map((m) => m.row.trim()).join("\n");
      const p = parseSourceText(text === "" ? "" : `${text}\n`, v.version, v.hookSystem, null);
      const where = v.builders.origin[v.builders.origin.length - 1];
      return { path: where && where.kind === "file" ? `${where.file}:${where.line}` : "builders", ...p };
    },
  };
}

export interface ProberOptions extends ViewInput {
  timeoutMs: number;
  /** Builders probed at once (default 16). */
  concurrency?: number;
  /** Each probe starts after U[0, jitterMs) (default 0). */
  jitterMs?: number;
  slowMs?: number;
  random?: () => number;
}

const REMOTE_CONFIG_CHECKS = new Set([
  "builder.remote-config",
  "builder.trust",
  "builder.systems",
  "builder.features",
  "builder.signatures",
]);
/** This machine's checks a probe needs; a failure of one is a local fault. */
const LOCAL_IDS = ["nix", "user-trust", "daemon", "ssh-path", "ssh-identity"];

function identityOf(u: UserView["user"]): RunAsIdentity {
  return { name: u.name, uid: u.uid, gid: u.gid, home: u.home, shell: u.shell };
}

/** Results of one builder's checks → the model's probe record. */
export function probeRecord(checks: readonly CheckResult[], at: number, totalMs: number): ProbeRecord {
  const failed = checks.find((c) => c.status === "fail");
  const slow = checks.find((c) => c.status === "warn" && c.cause === "slow");
  const byId = new Map(checks.map((c) => [c.id, c]));
  const phases: ProbeRecord["phases"] = { total: totalMs / 1000 };
  const dns = byId.get("builder.dns");
  if (dns && dns.status !== "skip") phases.dns = dns.durationMs / 1000;
  const tcp = byId.get("builder.tcp");
  if (tcp && tcp.status !== "skip") phases.tcp = tcp.durationMs / 1000;
  const rec: ProbeRecord = { at, ok: failed === undefined, phases };
  if (failed) {
    rec.cause = failed.cause ?? "failed";
    rec.message = `${failed.id}: ${failed.message}`.split("\n")[0]!.slice(0, 500);
    if (failed.fix) rec.fix = failed.fix.split("\n")[0]!.slice(0, 500);
  } else if (slow) {
    rec.cause = "slow";
    rec.message = slow.message.split("\n")[0]!.slice(0, 500);
  }
  return rec;
}

async function fillFromCtx(rec: ProbeRecord, ctx: BuilderCtx): Promise<void> {
  if (!ctx.probe) return;
  try {
    const p = await ctx.probe;
    const t = p.result.timings;
    if (t.handshakeMs !== null) rec.phases.handshake = t.handshakeMs / 1000;
    if (t.queryMs !== null && t.handshakeMs !== null) rec.phases.query = (t.queryMs - t.handshakeMs) / 1000;
    if (p.result.serve?.ok) rec.protocol = p.result.serve.serverVersion;
    if (p.result.worker?.ok) {
      rec.protocol = p.result.worker.protocolVersion;
      if (p.result.worker.daemonNixVersion) rec.remoteNixVersion = p.result.worker.daemonNixVersion;
      if (p.result.worker.trusted === "trusted") rec.remoteTrusted = true;
      else if (p.result.worker.trusted === "not-trusted") rec.remoteTrusted = false;
    }
  } catch {
    // the check that awaited it reported the failure
  }
  if (ctx.remote?.nixVersion) rec.remoteNixVersion = ctx.remote.nixVersion;
}

/**
 * What `ssh -G` reads besides its argv: the system ssh_config (and its drop-in directory) and the
 * identity's own ~/.ssh/config. A change to any of them (inode, size, mtime, ctime) changes the stamp.
 */
function sshConfigStamp(home: string): string {
  return ["/etc/ssh/ssh_config", "/etc/ssh/ssh_config.d", join(home, ".ssh"), join(home, ".ssh", "config")]
    .map((f) => {
      try {
        const st = statSync(f);
        return `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
      } catch {
        return "-";
      }
    })
    .join("|");
}

interface SshConfigMemo {
  key: string;
  /** The check's fact (builder-facts.ts ConfigFact), as the next checks read it. */
  fact: unknown;
  outcome: CheckOutcome;
}

/**
 * The doctor's `builder.ssh-config` check (one `ssh -G` per builder, as the identity) with its passing
 * result remembered per builder between rounds: the same argv, identity and ssh configuration files give
 * the same answer. It runs again on every full probe (every `--full-every`), whenever one of those files
 * changes, and after any outcome other than a pass. This halves the processes a light probe starts: at 200
 * builders a round is 200 ssh connections instead of 400 processes (bench/watch-scale.ts).
 */
function memoSshConfig(
  def: CheckDef<BuilderCtx>,
  memo: Map<string, SshConfigMemo>,
  fresh: () => ReadonlySet<string>,
  stamp: () => string,
): CheckDef<BuilderCtx> {
  return {
    ...def,
    async run(ctx) {
      const uri = ctx.machine.storeUri;
      const argv = ctx.facts?.get("builder.ssh-argv") ?? null;
      const key = JSON.stringify([argv, ctx.env.identity.uid, ctx.env.sshPath, stamp()]);
      const m = memo.get(uri);
      if (m && m.key === key && !fresh().has(uri)) {
        ctx.facts ??= new Map();
        ctx.facts.set(def.id, structuredClone(m.fact));
        return m.outcome;
      }
      memo.delete(uri);
      const outcome = await def.run(ctx);
      const fact = ctx.facts?.get(def.id);
      if (outcome.status === "pass" && fact !== undefined)
        memo.set(uri, { key, fact: structuredClone(fact), outcome });
      return outcome;
    },
  };
}

/** The doctor's probe, for watch: this machine's checks, then each due builder's. */
export function doctorProber(opts: ProberOptions): Prober {
  const rand = opts.random ?? Math.random;
  const memo = new Map<string, SshConfigMemo>();
  let full: ReadonlySet<string> = new Set();
  let stamp = "";
  const all = builderChecks().map((d) =>
    d.id === "builder.ssh-config"
      ? memoSshConfig(
          d,
          memo,
          () => full,
          () => stamp,
        )
      : d,
  );
  const light = all.filter((d) => !REMOTE_CONFIG_CHECKS.has(d.id));
  const locals = localChecks().filter((d) => LOCAL_IDS.includes(d.id));
  return {
    async round(machines: readonly SourceMachine[], fullNow: ReadonlySet<string>): Promise<RoundProbe> {
      full = fullNow;
      const view = await viewOf(opts);
      const daemon = findDaemonProcess();
      const sshEnv = sshEnvironment(view, daemon);
      const hookIdentity = identityOf(view.hookUser);
      stamp = sshConfigStamp(hookIdentity.home);
      const listed = new Set(machines.map((m) => m.storeUri));
      for (const k of memo.keys()) if (!listed.has(k)) memo.delete(k);
      const lctx: LocalCtx = {
        view,
        daemon,
        sshEnv,
        hookIdentity,
        probeIdentity: hookIdentity,
        timeoutMs: opts.timeoutMs,
        sshPath: null,
      };
      const local = await runChecks(locals, lctx, null);
      const fault = local.find((c) => c.status === "fail");
      if (fault)
        return {
          local: {
            cause: fault.cause && LOCAL_CAUSES.includes(fault.cause) ? fault.cause : "local-config",
            message: `${fault.id}: ${fault.message}`.split("\n")[0]!.slice(0, 500),
          },
          results: new Map(),
        };
      const prior = new Map(local.map((c) => [c.id, c]));
      const keyChecks: NonNullable<BuilderCtx["env"]["keyChecks"]> = new Map();
      const results = new Map<string, ProbeRecord>();
      // Each probe starts U[0, jitter) after the round's start. In the order of those start times, so
      // that a probe waiting for its start does not hold one of the `concurrency` slots meanwhile.
      const t00 = performance.now();
      const order = machines
        .map((sm) => ({ sm, at: Math.floor(rand() * (opts.jitterMs ?? 0)) }))
        .sort((a, b) => a.at - b.at);
      await mapLimit(order, opts.concurrency ?? 16, async ({ sm, at: startAt }) => {
        const wait = startAt - (performance.now() - t00);
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        // The machine as Nix parses it (key, host key…) from the source line.
        const parsed = parseBuilders({
          spec: sm.line,
          version: view.version,
          defaultSystem: view.hookSystem,
          fs: { read: () => ({ ok: false, code: "ENOENT" }) },
          cwd: "/",
        }).machines.find((m) => m.storeUri === sm.storeUri);
        const at = Date.now();
        if (!parsed) {
          results.set(sm.storeUri, {
            at,
            ok: false,
            cause: "local-config",
            message: "the line no longer parses",
            phases: {},
          });
          return;
        }
        const ctx: BuilderCtx = {
          machine: parsed,
          env: {
            version: view.version,
            identity: hookIdentity,
            env: sshEnv.env,
            sshPath: lctx.sshPath,
            timeoutMs: opts.timeoutMs,
            slowMs: opts.slowMs ?? 5000,
            keyChecks,
          },
        };
        const t0 = performance.now();
        const checks = await runChecks(full.has(sm.storeUri) ? all : light, ctx, sm.storeUri, prior);
        const rec = probeRecord(checks, at, Math.round(performance.now() - t0));
        await fillFromCtx(rec, ctx);
        results.set(sm.storeUri, rec);
      });
      return { local: null, results };
    },
  };
}
