/**
 * `nix-builders watch`: keep builds off dead builders, continuously. Probes the builders a user's Nix uses
 * (or `--source FILE`'s) with the doctor's probe, and writes a managed machines file (`--output`) in which a
 * failing builder is held (maxJobs 0) or removed, with Hydra's backoff. See docs/watch.md.
 *
 *   watch [flags]               run (until SIGTERM/SIGINT, which restore the source's full list)
 *   watch --once                one round: probe, write, print, exit
 *   watch --wait-ready          wait until the running watch has written the file (systemd ExecStartPost)
 *   watch --restore             write the source's full list to the output (systemd ExecStopPost)
 *   watch status [--json]       the running watch's snapshot
 *   watch drain NAME / undrain NAME
 */
import { dirname, join } from "node:path";
import type { Command } from "commander";
import type { AgentOptions } from "../app/agent-select.js";
import { readRecentBuilds } from "../app/builds-store.js";
import { readSpoolEvents, spoolDir, spoolSignals } from "../app/hook-spool.js";
import { controlRequest } from "../app/watch/control.js";
import type { BuilderStatus, WatchSnapshot } from "../app/watch/model.js";
import { DEFAULT_POLICY, type PolicyConfig } from "../app/watch/policy.js";
import { ensureStateDir } from "../app/watch/state.js";
import { EXIT, type Io, json, Refusal, UsageError } from "./io.js";
import { table } from "./render.js";

export const DEFAULT_OUTPUT = "/run/nix-builders/machines";
export const DEFAULT_STATE_DIR = "/var/lib/nix-builders/watch";

export interface WatchCommandOptions extends AgentOptions {
  source?: string;
  output?: string;
  stateDir?: string;
  interval?: string;
  timeout?: string;
  listen?: string;
  once?: boolean;
  json?: boolean;
  mode?: string;
  failureThreshold?: string;
  successThreshold?: string;
  backoffBase?: string;
  backoffFactor?: string;
  backoffMax?: string;
  backoffJitter?: string;
  countWindow?: string;
  stableAfter?: string;
  maxQuarantinedPercent?: string;
  jobs?: string;
  fullEvery?: string;
  minWriteInterval?: string;
  waitReady?: boolean;
  waitTimeout?: string;
  restore?: boolean;
  nixVersion?: string;
}

function num(
  name: string,
  v: string | undefined,
  dflt: number,
  o: { min?: number; max?: number; integer?: boolean } = {},
): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n)) throw new UsageError(`${name}: not a number: '${v}'`);
  if (o.integer && !Number.isInteger(n)) throw new UsageError(`${name}: not a whole number: '${v}'`);
  if (o.min !== undefined && n < o.min) throw new UsageError(`${name}: at least ${o.min}: '${v}'`);
  if (o.max !== undefined && n > o.max) throw new UsageError(`${name}: at most ${o.max}: '${v}'`);
  return n;
}

/** The policy from the flags (Hydra's constants by default). */
export function policyFromFlags(o: WatchCommandOptions): PolicyConfig {
  const mode = o.mode ?? DEFAULT_POLICY.mode;
  if (mode !== "hold" && mode !== "remove") throw new UsageError(`--mode: 'hold' or 'remove', not '${mode}'`);
  const d = DEFAULT_POLICY;
  const p: PolicyConfig = {
    mode,
    failureThreshold: num("--failure-threshold", o.failureThreshold, d.failureThreshold, {
      min: 1,
      max: 1000,
      integer: true,
    }),
    successThreshold: num("--success-threshold", o.successThreshold, d.successThreshold, {
      min: 1,
      max: 1000,
      integer: true,
    }),
    backoffBaseSec: num("--backoff-base", o.backoffBase, d.backoffBaseSec, { min: 0, max: 86_400 }),
    backoffFactor: num("--backoff-factor", o.backoffFactor, d.backoffFactor, { min: 1, max: 100 }),
    backoffMaxSec: num("--backoff-max", o.backoffMax, d.backoffMaxSec, { min: 0, max: 7 * 86_400 }),
    backoffMaxLevel: d.backoffMaxLevel,
    backoffJitterSec: num("--backoff-jitter", o.backoffJitter, d.backoffJitterSec, { min: 0, max: 86_400 }),
    countWindowSec: num("--count-window", o.countWindow, d.countWindowSec, { min: 0, max: 86_400 }),
    stableAfterSec: num("--stable-after", o.stableAfter, d.stableAfterSec, { min: 0, max: 30 * 86_400 }),
    maxQuarantinedShare:
      num("--max-quarantined-percent", o.maxQuarantinedPercent, d.maxQuarantinedShare * 100, {
        min: 0,
        max: 100,
      }) / 100,
  };
  // The level cap follows the max delay: the first level whose delay reaches it (Hydra: 4).
  let level = 1;
  while (level < 64 && p.backoffBaseSec * p.backoffFactor ** (level - 1) < p.backoffMaxSec) level++;
  p.backoffMaxLevel = p.backoffFactor === 1 ? 1 : level;
  return p;
}

function age(now: number, t: number | null): string {
  if (t === null) return "-";
  const s = Math.round((now - t) / 1000);
  return s < 0 ? `in ${-s}s` : `${s}s ago`;
}

export function snapshotText(s: WatchSnapshot, now = Date.now()): string {
  const out: string[] = [];
  out.push(
    `source ${s.source.path || "(unread)"}${s.source.error ? ` — error: ${s.source.error}` : ""}; output ${s.output.path} (${s.output.writes} writes, last ${age(now, s.output.lastWriteAt)})`,
  );
  if (s.localFault)
    out.push(
      `local fault since ${age(now, s.localFault.since)}: ${s.localFault.cause}: ${s.localFault.message}${s.guards.includes("local-fault") ? " (file frozen)" : ""}`,
    );
  if (s.guards.length) out.push(`guards active: ${s.guards.join(", ")}`);
  out.push("");
  const rows = s.builders.map((b: BuilderStatus) => [
    b.builder,
    b.state,
    b.disposition,
    String(b.consecutiveFailures),
    b.quarantinedUntil === null ? "-" : age(now, b.quarantinedUntil),
    b.lastFailure ? `${b.lastFailure.cause ?? "failed"} ${age(now, b.lastFailure.at)}` : "-",
  ]);
  out.push(table([["builder", "state", "file", "failures", "re-probe", "last failure"], ...rows]));
  return `${out.join("\n")}\n`;
}

async function remote(stateDir: string, req: Parameters<typeof controlRequest>[1]): Promise<unknown> {
  let a: Awaited<ReturnType<typeof controlRequest>>;
  try {
    a = await controlRequest(stateDir, req);
  } catch (e) {
    throw new Refusal(e instanceof Error ? e.message : String(e), { path: stateDir });
  }
  if (!a.ok) {
    if (a.unknown) throw new UsageError(a.error);
    throw new Refusal(`${stateDir}: watch answered: ${a.error}`, { path: stateDir });
  }
  return a.result;
}

export async function runStatus(o: { stateDir?: string; json?: boolean }, io: Io): Promise<number> {
  const s = (await remote(o.stateDir ?? DEFAULT_STATE_DIR, { op: "status" })) as WatchSnapshot;
  io.out(o.json ? json(s) : snapshotText(s));
  const out = s.builders.some((b) => b.disposition !== "listed");
  return s.localFault || s.guards.length || out ? EXIT.warnings : EXIT.ok;
}

export async function runDrain(
  op: "drain" | "undrain",
  name: string,
  o: { stateDir?: string; json?: boolean },
  io: Io,
): Promise<number> {
  const b = (await remote(o.stateDir ?? DEFAULT_STATE_DIR, { op, name })) as BuilderStatus;
  io.out(o.json ? json(b) : `${b.builder}: ${b.state} (${b.disposition})\n`);
  return EXIT.ok;
}

async function waitReady(stateDir: string, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const a = await controlRequest(stateDir, { op: "status" }, 5000);
      if (a.ok) {
        const s = a.result as WatchSnapshot;
        if (s.lastRoundAt !== null && (s.output.hash !== null || s.source.error !== null || s.localFault))
          return true;
      }
    } catch {
      // not listening yet
    }
    if (Date.now() >= end) return false;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The source watch reads (`--source FILE`, or the builders the user's Nix uses), read once now. */
// Loaded on use, not at the top: `watch status` stays light.
async function openSource(o: WatchCommandOptions, output: string, env: NodeJS.ProcessEnv) {
  const { selectAgent } = await import("../app/agent-select.js");
  const { viewOf, viewSource } = await import("../app/watch/probe.js");
  const { fileSource, SourceError } = await import("../app/watch/source.js");
  const { sameFile } = await import("../app/watch/writer.js");
  const agent = selectAgent(o) ?? undefined;
  const vin = {
    env,
    ...(agent ? { agent } : {}),
    ...(o.nixVersion ? { nixVersion: o.nixVersion } : {}),
  };
  let source: import("../app/watch/engine.js").SourceProvider;
  if (o.source !== undefined) {
    if (sameFile(o.source, output))
      throw new Refusal(`${o.source}: is the output (${output}); watch would read its own output`, {
        path: o.source,
      });
    const v = await viewOf(vin);
    source = fileSource(o.source, output, v.version, v.hookSystem);
  } else source = viewSource(vin, output);
  // The source must be usable at start: a refusal now, rather than a service that never writes.
  let first: Awaited<ReturnType<typeof source.read>>;
  try {
    first = await source.read();
  } catch (e) {
    if (e instanceof SourceError) throw new Refusal(e.message, { path: e.path });
    throw e;
  }
  return { vin, source, first };
}

export async function runWatch(o: WatchCommandOptions, io: Io): Promise<number> {
  const stateDir = o.stateDir ?? DEFAULT_STATE_DIR;
  if (o.waitReady) {
    const t = num("--wait-timeout", o.waitTimeout, 300, { min: 1, max: 86_400 }) * 1000;
    if (await waitReady(stateDir, t)) return EXIT.ok;
    throw new Refusal(`${stateDir}: watch did not finish its first round within ${t / 1000} s`, {
      path: stateDir,
    });
  }
  const intervalSec = num("--interval", o.interval, 30, { min: 0.1, max: 86_400 });
  const timeoutSec = num("--timeout", o.timeout, 10, { min: 0.1, max: 3600 });
  const jobs = num("--jobs", o.jobs, 16, { min: 1, max: 1024, integer: true });
  const fullEvery = num("--full-every", o.fullEvery, 10, { min: 1, max: 1_000_000, integer: true });
  const minWrite = num("--min-write-interval", o.minWriteInterval, 10, { min: 0, max: 86_400 });
  const policy = policyFromFlags(o);
  const output = o.output ?? DEFAULT_OUTPUT;

  // Loaded here, not at the top: `watch status` stays light.
  const { Watch } = await import("../app/watch/engine.js");
  const { doctorProber } = await import("../app/watch/probe.js");
  const { render, writeOutput } = await import("../app/watch/writer.js");

  const { vin, source, first } = await openSource(o, output, io.env);
  if (o.restore) {
    const text = render(first.text, new Map());
    if (text.trim() === "" && first.machines.length > 0) throw new Error("restore rendered an empty file");
    await writeOutput(output, text);
    if (!o.json) io.err(`watch: ${output}: restored the source's ${first.machines.length} builders\n`);
    else io.out(json({ restored: output, builders: first.machines.length }));
    return EXIT.ok;
  }

  try {
    ensureStateDir(stateDir);
  } catch (e) {
    throw new Refusal(e instanceof Error ? e.message : String(e), { path: stateDir });
  }
  const log = (line: string) => io.err(`watch: ${line}\n`);
  const watch = new Watch({
    source,
    prober: doctorProber({
      ...vin,
      timeoutMs: timeoutSec * 1000,
      concurrency: jobs,
      jitterMs: Math.min(intervalSec * 100, 5000),
    }),
    outputPath: output,
    stateDir,
    intervalMs: intervalSec * 1000,
    policy,
    fullEvery,
    minWriteIntervalMs: minWrite * 1000,
    log,
    // The build-hook wrapper (nix-builders hook) keeps its records in the state directory above
    // watch's (/var/lib/nix-builders) and leaves `cannot build on` signals in <watch state>/signals.
    signalsDir: join(stateDir, "signals"),
    recentBuilds: () =>
      readRecentBuilds(dirname(stateDir), { limit: 20, spool: () => readSpoolEvents(spoolDir(io.env)) }),
  });

  if (o.once) {
    await watch.round();
    await watch.stop({ restore: false });
    const s = watch.snapshot();
    io.out(o.json ? json(s) : snapshotText(s));
    return s.localFault || s.guards.length || s.builders.some((b) => b.disposition !== "listed")
      ? EXIT.warnings
      : EXIT.ok;
  }

  return serve(watch, o, stateDir, output, log, spoolDir(io.env));
}

/** Runs watch until SIGTERM or SIGINT: the HTTP edge (with --listen), the control socket, the rounds. */
async function serve(
  watch: import("../app/watch/engine.js").Watch,
  o: WatchCommandOptions,
  stateDir: string,
  output: string,
  log: (line: string) => void,
  spool: string,
): Promise<number> {
  // The HTTP edge: the status page, /status.json and /metrics (src/app/watch/http.ts).
  let http: { close(): Promise<void>; url: string } | null = null;
  if (o.listen !== undefined) {
    const { startWatchServer, WatchListenError } = await import("../app/watch/http.js");
    try {
      http = await startWatchServer({ listen: o.listen, snapshot: () => watch.snapshot() });
    } catch (e) {
      if (e instanceof WatchListenError) throw new UsageError(`--listen ${o.listen}: ${e.message}`);
      throw e;
    }
    log(`listening on ${http.url}`);
  }
  // The build hook's spool (src/app/hook-spool.ts): every new `cannot build on` becomes a signal file,
  // which the engine takes within a second.
  const seenSignals = new Set<string>();
  const signalScan = setInterval(() => spoolSignals(spool, join(stateDir, "signals"), seenSignals), 1000);
  signalScan.unref();
  const { startControl } = await import("../app/watch/control.js");
  const control = await startControl(watch, stateDir);
  let stopping: Promise<number> | null = null;
  const done = new Promise<number>((resolve) => {
    const stop = (sig: string) => {
      if (stopping) return;
      log(`${sig}: stopping; restoring the source's full list in ${output}`);
      stopping = (async () => {
        clearInterval(signalScan);
        await watch.stop({ restore: true });
        await control.close();
        if (http) await http.close();
        return EXIT.ok;
      })();
      void stopping.then(resolve);
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
  await watch.start();
  log(`ready: ${output} written from ${watch.snapshot().source.path}`);
  return done;
}

export function register(program: Command, io: Io, exit: (code: number) => void): void {
  const w = program
    .command("watch")
    .description("probe the builders continuously and keep a machines file without the dead ones")
    .option("--source <file>", "the machines file to watch (default: the one the user's Nix uses, as `show`)")
    .option("--output <file>", `the managed machines file Nix reads (default ${DEFAULT_OUTPUT})`)
    .option("--state-dir <dir>", `counters, drains and the control socket (default ${DEFAULT_STATE_DIR})`)
    .option("--interval <seconds>", "between probe rounds (default 30)")
    .option("--timeout <seconds>", "deadline of each probe step (default 10)")
    .option("--listen <host:port>", "serve the status page, /status.json and /metrics here")
    .option("--agent [name]", "watch the builders of this hercules-ci-agent instance")
    .option("--agent-config <file>", "the hercules-ci-agent configuration file")
    .option("--once", "one round: probe, write the file, print, exit")
    .option("--json", "print one JSON document (with --once)")
    .option("--mode <hold|remove>", "what a quarantined builder's line becomes (default hold: maxJobs 0)")
    .option("--failure-threshold <n>", "failures in a row before quarantine (default 2)")
    .option("--success-threshold <n>", "passes in a row on probation before up (default 2)")
    .option("--backoff-base <seconds>", "first quarantine delay (default 60)")
    .option("--backoff-factor <f>", "delay factor per level (default 3)")
    .option("--backoff-max <seconds>", "longest delay (default 1620)")
    .option("--backoff-jitter <seconds>", "random delay added (default 30)")
    .option("--count-window <seconds>", "failures this close raise the backoff once (default 30)")
    .option("--stable-after <seconds>", "healthy this long before the backoff level decays (default 600)")
    .option("--max-quarantined-percent <p>", "never hold or remove more of the builders (default 50)")
    .option("--jobs <n>", "builders probed at once (default 16)")
    .option("--full-every <n>", "read the remote configuration every Nth probe (default 10)")
    .option("--min-write-interval <seconds>", "at most one write per this long (default 10)")
    .option("--wait-ready", "wait until the running watch has written the file, then exit (ExecStartPost)")
    .option("--wait-timeout <seconds>", "with --wait-ready (default 300)")
    .option("--restore", "write the source's full list to the output and exit (ExecStopPost)")
    .option("--nix-version <X.Y>", "follow this Nix version's rules instead of the installed Nix's")
    .action(async (opts: WatchCommandOptions) => exit(await runWatch(opts, io)));
  const merged = (c: Command) => ({ ...w.opts(), ...c.opts() }) as { stateDir?: string; json?: boolean };
  w.command("status")
    .description("the running watch's state")
    .option("--state-dir <dir>", `(default ${DEFAULT_STATE_DIR})`)
    .option("--json", "print one JSON document")
    .action(async (_o: unknown, c: Command) => exit(await runStatus(merged(c), io)));
  w.command("drain <name>")
    .description("take a builder out of the managed file until undrain (store URI, user@host or host)")
    .option("--state-dir <dir>", `(default ${DEFAULT_STATE_DIR})`)
    .option("--json", "print one JSON document")
    .action(async (name: string, _o: unknown, c: Command) =>
      exit(await runDrain("drain", name, merged(c), io)),
    );
  w.command("undrain <name>")
    .description("put a drained builder back (the next probe decides its state)")
    .option("--state-dir <dir>", `(default ${DEFAULT_STATE_DIR})`)
    .option("--json", "print one JSON document")
    .action(async (name: string, _o: unknown, c: Command) =>
      exit(await runDrain("undrain", name, merged(c), io)),
    );
}
