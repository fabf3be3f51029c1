/**
 * `nix-builders builds [--since T] [--builder NAME] [--system S] [--failed] [--all] [--json]` and
 * `nix-builders who-built DRV|OUTPUT-PATH`: the remote builds the build-hook wrapper recorded
 * (docs/attribution.md).
 */
import type { Command } from "commander";
import {
  type BuildRecord,
  builderCounters,
  isFailed,
  joinEvents,
  readEvents,
  remoteBuilds,
  StoreRefusal,
  stateDir,
} from "../app/builds-store.js";
import { collectSpool, readSpoolEvents, spoolDir } from "../app/hook-spool.js";
import { buildingOnLine } from "../nix/hook-protocol.js";
import { runProc } from "../os/proc.js";
import { EXIT, type Io, json, Refusal, UsageError } from "./io.js";
import { table } from "./render.js";

export interface BuildsOptions {
  since?: string;
  builder?: string;
  system?: string;
  failed?: boolean;
  all?: boolean;
  json?: boolean;
}

/** `--since`: an ISO time, or a duration back from now (`90s`, `15m`, `2h`, `3d`). */
export function parseSince(s: string, now: number): number {
  const m = /^(\d+)([smhd])$/.exec(s);
  if (m)
    return now - Number(m[1]) * { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[m[2] as "s" | "m" | "h" | "d"];
  const t = Date.parse(s);
  if (Number.isNaN(t))
    throw new UsageError(
      `--since: '${s}' is neither a time (2026-12-07T21:00Z) nor a duration (15m, 2h, 3d)`,
    );
  return t;
}

function load(io: Io): BuildRecord[] {
  const state = stateDir(io.env);
  const spool = spoolDir(io.env);
  try {
    // The spool first: the records of ended hooks move into builds.jsonl (root only: the spool is root's),
    // then what still waits there (running hooks, or a state directory that cannot be written) is read
    // before builds.jsonl, so a concurrent collector can only make a record appear twice (joined by id).
    collectSpool(spool, state);
    const waiting = readSpoolEvents(spool);
    return joinEvents([...waiting, ...readEvents(state)]);
  } catch (e) {
    if (e instanceof StoreRefusal) throw new Refusal(e.message, { path: e.path });
    throw e;
  }
}

/** The builder a record names: the accepting machine, else the last one that could not be reached. */
function builderOf(r: BuildRecord): string | null {
  return r.machine ?? r.cannotBuild[r.cannotBuild.length - 1]?.machine ?? null;
}

function resultOf(r: BuildRecord): string {
  if (r.reply === "accept") return r.result;
  return r.cannotBuild.length > 0
    ? `${r.reply ?? "no reply"} (cannot build on ${r.cannotBuild.map((c) => c.machine).join(", ")})`
    : (r.reply ?? "no reply");
}

function publicRecord(r: BuildRecord) {
  return {
    drv: r.drv,
    system: r.system,
    features: r.features,
    reply: r.reply,
    builder: builderOf(r),
    machine: r.machine,
    startedAt: new Date(r.startedAt).toISOString(),
    endedAt: r.endedAt === null ? null : new Date(r.endedAt).toISOString(),
    result: r.reply === "accept" ? r.result : "failure",
    error:
      r.error ??
      (r.reply !== "accept" && r.cannotBuild.length > 0
        ? r.cannotBuild[r.cannotBuild.length - 1]!.error
        : null),
    cannotBuild: r.cannotBuild,
  };
}

export function runBuilds(opts: BuildsOptions, io: Io, now = Date.now()): number {
  const since = opts.since !== undefined ? parseSince(opts.since, now) : 0;
  const all = load(io);
  const records = (opts.all ? all : remoteBuilds(all)).filter(
    (r) =>
      r.startedAt >= since &&
      (opts.builder === undefined ||
        builderOf(r) === opts.builder ||
        r.cannotBuild.some((c) => c.machine === opts.builder)) &&
      (opts.system === undefined || r.system === opts.system) &&
      (!opts.failed || isFailed(r)),
  );
  if (opts.json) {
    io.out(json({ builds: records.map(publicRecord), builders: builderCounters(records) }));
    return EXIT.ok;
  }
  if (records.length === 0) {
    io.out("No remote builds recorded (the build-hook wrapper records them: nix-builders hook install).\n");
    return EXIT.ok;
  }
  const rows = records.map((r) => [
    new Date(r.startedAt).toISOString().replace(/\.\d+Z$/, "Z"),
    r.system,
    builderOf(r) ?? "-",
    resultOf(r),
    r.drv,
  ]);
  io.out(table([["started", "system", "builder", "result", "derivation"], ...rows]));
  return EXIT.ok;
}

/** An output path's derivation is not in the records: match `/nix/store/<hash>-<name>` by name suffix. */
function matches(r: BuildRecord, path: string): boolean {
  if (r.drv === path) return true;
  if (path.endsWith(".drv")) return false;
  // An output path: its name is the derivation's name (plus `-<output>` for other outputs).
  const name = path.replace(/^.*\/[a-z0-9]{32}-/, "");
  const drvName = r.drv.replace(/^.*\/[a-z0-9]{32}-/, "").replace(/\.drv$/, "");
  return name === drvName || name.startsWith(`${drvName}-`);
}

/** The deriver Nix records for an output path (`nix-store --query --deriver`), or null. */
async function deriverOf(path: string, store: string | undefined): Promise<string | null> {
  const args = store ? ["--store", store, "--query", "--deriver", path] : ["--query", "--deriver", path];
  const r = await runProc(["nix-store", ...args], { deadlineMs: 10_000, maxOutputBytes: 64 * 1024 });
  const out = r.stdout.trim();
  return r.code === 0 && out.endsWith(".drv") ? out : null;
}

export async function runWhoBuilt(
  path: string,
  opts: { json?: boolean; store?: string },
  io: Io,
): Promise<number> {
  if (!path.startsWith("/") || path.startsWith("-"))
    throw new UsageError(`who-built: '${path}' is not a store path`);
  const deriver = path.endsWith(".drv") ? null : await deriverOf(path, opts.store);
  const target = deriver ?? path;
  const hits = remoteBuilds(load(io)).filter((r) => matches(r, target));
  const exact = hits.filter((r) => r.drv === target);
  const found = exact.length > 0 ? exact : hits;
  if (opts.json) {
    io.out(json({ path, builds: found.map((r) => ({ ...publicRecord(r), nixLog: nixLines(r) })) }));
    return found.length > 0 ? EXIT.ok : EXIT.warnings;
  }
  if (found.length === 0) {
    io.out(
      `${path}: no remote build recorded (built locally, substituted, or before the wrapper was installed)\n`,
    );
    return EXIT.warnings;
  }
  if (exact.length === 0)
    io.out(`${path}: its deriver is unknown; these are builds of derivations with its name\n`);
  for (const r of found) {
    io.out(
      `${r.drv}\n  builder  ${builderOf(r) ?? "-"}\n  started  ${new Date(r.startedAt).toISOString()}\n`,
    );
    io.out(
      `  ended    ${r.endedAt === null ? "-" : new Date(r.endedAt).toISOString()}\n  result   ${resultOf(r)}\n`,
    );
    io.out("  Nix's log:\n");
    for (const l of nixLines(r)) io.out(`    ${l}\n`);
  }
  return EXIT.ok;
}

/** The log lines Nix showed for this build: its `building … on …` and the hook's own messages. */
function nixLines(r: BuildRecord): string[] {
  const out = r.cannotBuild.map((c) => `cannot build on '${c.machine}': ${c.error}`);
  if (r.reply === "accept" && r.machine !== null) out.push(buildingOnLine(r.drv, r.machine));
  return [...out, ...r.lines];
}

export function register(program: Command, io: Io, exit: (code: number) => void): void {
  // Loaded for both `builds` and `who-built`: register once.
  if (program.commands.some((c) => c.name() === "builds")) return;
  program
    .command("builds")
    .description("the remote builds the build-hook wrapper recorded: where each ran and how it ended")
    .option("--since <time>", "only builds started since then (an ISO time, or 15m, 2h, 3d)")
    .option("--builder <uri>", "only builds on (or that could not reach) this builder")
    .option("--system <system>", "only derivations of this system")
    .option("--failed", "only failed builds")
    .option("--all", "also the derivations the hook declined or postponed (built locally or later)")
    .option("--json", "print one JSON document")
    .action((opts: BuildsOptions) => exit(runBuilds(opts, io)));
  program
    .command("who-built")
    .description("the builder, time and result of a derivation's remote build, with Nix's log lines")
    .argument("<path>", "a .drv or an output store path")
    .option("--store <dir>", "a chroot store, to find an output path's deriver")
    .option("--json", "print one JSON document")
    .action(async (path: string, opts: { json?: boolean; store?: string }) =>
      exit(await runWhoBuilt(path, opts, io)),
    );
}
