/**
 * `nix-builders route [--user U] [--system S] [--feature F]... [--prefer-local] [DRV] [--builders SPEC]
 * [--nix-version X.Y] [--store DIR] [--json]`: where Nix would build one derivation right now, with one
 * row per machine (eligible or not, every reason, live load, free slots, score) and a row for the
 * local machine.
 *
 * The settings that matter are those of the process that runs the build: the daemon's under a daemon
 * (system, extra-platforms, system-features, experimental-features), except `max-jobs`, which the
 * client always sends as a fixed field. Load is read live from the current-load lock files (stat +
 * /proc/locks; no lock is ever taken).
 *
 * Exit codes: 0 when Nix builds it now (remote or local), 1 postpone, 2 none (or a configuration error).
 */
import type { Command } from "commander";
import { type CurrentLoad, loadMap, readCurrentLoad } from "../host/current-load.js";
import { readDerivation } from "../host/derivation-read.js";
import { closeReaders } from "../host/fs-reader.js";
import { indentLines, nixErrorDisplay } from "../nix/display.js";
import { NixError } from "../nix/errors.js";
import { type RouteDrv, type RouteResult, route } from "../nix/route.js";
import { formatNixVersion } from "../nix/version.js";
import { EXIT, type Io, json, UsageError } from "./io.js";

export type { RouteContext } from "../app/route-context.js";

import { fromBundle } from "../app/report.js";
import { type RouteContext, routeContext } from "../app/route-context.js";
import { userView } from "../app/view.js";
import { table } from "./render.js";

export interface RouteOptions {
  user?: string;
  system?: string;
  feature?: string[];
  preferLocal?: boolean;
  builders?: string;
  nixVersion?: string;
  store?: string;
  /** --from FILE: answer from a report (docs/report.md) instead of this machine. */
  from?: string;
  json?: boolean;
}

export interface RouteReport {
  readonly drvPath: string | null;
  readonly drv: RouteDrv;
  readonly result: RouteResult;
  readonly load: CurrentLoad;
  readonly ctx: RouteContext;
}

/** Route one derivation with the live load. Pure apart from reading the lock files' state. */
export function routeNow(ctx: RouteContext, drv: RouteDrv, procLocks?: string): RouteReport {
  const load = readCurrentLoad(
    ctx.machines,
    procLocks === undefined
      ? { stateDir: ctx.store.stateDir, version: ctx.version }
      : { stateDir: ctx.store.stateDir, procLocks, version: ctx.version },
  );
  return routeWithLoad(ctx, drv, load);
}

/** Route one derivation with a given load (a report's). */
export function routeWithLoad(ctx: RouteContext, drv: RouteDrv, load: CurrentLoad): RouteReport {
  const result = route({
    version: ctx.version,
    drv,
    machines: ctx.machines,
    load: loadMap(load),
    local: ctx.local,
    stateDir: ctx.store.stateDir,
  });
  return { drvPath: drv.path ?? null, drv, result, load, ctx };
}

/** The exit code for a decision: 0 built now (remote or local), 1 postponed, 2 not at all. */
export function decisionExit(kind: RouteResult["decision"]["kind"], fatal: boolean): number {
  if (fatal) return EXIT.errors;
  return kind === "postpone" ? 1 : kind === "none" ? 2 : 0;
}

export function routeJson(r: RouteReport): Record<string, unknown> {
  const { result, ctx } = r;
  const fatal = ctx.fatal;
  const d = result.decision;
  const decision: Record<string, unknown> = { kind: fatal ? "none" : d.kind };
  if (!fatal && d.kind === "remote") {
    decision.storeUri = d.storeUri;
    // what Nix prints for it (`building '…' on '…'`): 2.23+ renders `/tmp/m` as `local:///tmp/m`
    decision.printedUri = d.printedUri ?? d.storeUri;
  }
  if (fatal) decision.message = fatal;
  else if (d.message !== undefined) {
    if (d.kind === "none" || d.kind === "postpone") decision.message = d.message;
    else decision.note = d.message;
  }
  // Nix's error as it shows it (the raw text stays in `message`).
  if (decision.kind === "none" && typeof decision.message === "string")
    decision.displayed = nixErrorDisplay(decision.message);
  const byUri = new Map(ctx.machines.map((m) => [m.storeUri, m]));
  return {
    nixVersion: formatNixVersion(ctx.version),
    user: ctx.user,
    storeMode: ctx.storeMode,
    drvPath: r.drvPath,
    system: r.drv.system,
    requiredFeatures: [...r.drv.requiredFeatures],
    preferLocalBuild: r.drv.preferLocalBuild,
    isBuiltin: r.drv.isBuiltin ?? r.drv.system === "builtin",
    decision,
    hook: {
      asked: result.hook.asked,
      why: result.hook.why,
      reply: result.hook.reply,
      noMachineMessage: result.hook.noMachineMessage,
      died: result.hook.died ?? null,
    },
    local: {
      capable: result.local.capable,
      reasons: result.local.reasons,
      system: ctx.local.system,
      extraPlatforms: ctx.local.extraPlatforms,
      systemFeatures: ctx.local.systemFeatures,
      maxJobs: ctx.local.maxJobs,
    },
    machines: result.machines.map((m) => ({
      storeUri: m.storeUri,
      eligible: m.eligible,
      rightType: m.rightType,
      reasons: m.reasons,
      load: m.load,
      maxJobs: byUri.get(m.storeUri)?.maxJobs ?? null,
      freeSlots: m.freeSlots,
      speedFactor: byUri.get(m.storeUri)?.speedFactor ?? null,
      score: m.score,
    })),
    stateDir: r.load.stateDir,
    locksReadable: r.load.locksReadable,
  };
}

function yesNo(b: boolean): string {
  return b ? "yes" : "no";
}

export function renderRoute(r: RouteReport): string {
  const { result, ctx, drv } = r;
  const d = result.decision;
  const feats = drv.requiredFeatures.length ? `{${drv.requiredFeatures.join(", ")}}` : "no features";
  let out = `Nix ${formatNixVersion(ctx.version)} rules · user ${ctx.user} · ${r.drvPath ?? "(no derivation: from flags)"}\n`;
  out += `needs ${drv.system} with ${feats}${drv.preferLocalBuild ? ", preferLocalBuild" : ""}${drv.isBuiltin ? ", builtin" : ""}\n\n`;
  if (ctx.fatal) {
    out += `Decision: none — Nix stops before routing:\n  error: ${ctx.fatal}\n`;
    return out;
  }
  switch (d.kind) {
    case "remote":
      out += `Decision: remote, on ${d.storeUri}${d.printedUri && d.printedUri !== d.storeUri ? ` (Nix ${formatNixVersion(ctx.version)} prints it as ${d.printedUri})` : ""}\n`;
      break;
    case "local":
      out += `Decision: local${d.message ? ` (${d.message})` : ""}\n`;
      break;
    case "postpone":
      out += `Decision: postpone — Nix prints: ${d.message ?? ""}\n`;
      break;
    case "none":
      out += `Decision: none — Nix fails with:\n${indentLines(nixErrorDisplay(d.message ?? ""), "  ")}\n`;
      break;
  }
  const replies = result.hook.died !== undefined ? "dies before replying" : `replies ${result.hook.reply}`;
  out += `  the hook is ${result.hook.asked ? `asked (${result.hook.why}) and ${replies}` : `not asked (${result.hook.why})`}\n`;
  if (!r.load.locksReadable) out += "  warning: /proc/locks is not readable: every slot reads as free\n";
  out += "\n";
  const rows: string[][] = [["machine", "eligible", "load", "free", "score", "why not"]];
  const byUri = new Map(ctx.machines.map((m) => [m.storeUri, m]));
  for (const m of result.machines) {
    const max = byUri.get(m.storeUri)?.maxJobs ?? 0;
    rows.push([
      m.storeUri,
      yesNo(m.eligible),
      `${m.load}/${max}`,
      String(m.freeSlots),
      m.score === null ? "-" : String(m.score),
      m.reasons.join("; "),
    ]);
  }
  rows.push([
    `local (${ctx.local.system}, max-jobs ${ctx.local.maxJobs})`,
    yesNo(result.local.capable),
    "-",
    "-",
    "-",
    result.local.reasons.join("; "),
  ]);
  out += table(rows);
  if (result.hook.noMachineMessage && d.kind !== "none") {
    const lvl = result.hook.noMachineMessage.level;
    out += `\nThe hook ${lvl === "warn" ? "warns" : "logs (at -vvvv)"}:\n${result.hook.noMachineMessage.text
      .split("\n")
      .map((l) => `  ${l}`)
      .join("\n")}\n`;
  }
  return out;
}

/** The derivation to route, from a .drv (read from the store) and/or flags. Flags override the drv. */
export function routeDrv(opts: RouteOptions, ctx: RouteContext, drvArg: string | undefined): RouteDrv {
  let base: RouteDrv = {
    system: ctx.local.system,
    requiredFeatures: [],
    preferLocalBuild: false,
    isBuiltin: false,
  };
  if (drvArg !== undefined) {
    if (!drvArg.endsWith(".drv"))
      throw new UsageError(`not a .drv path: '${drvArg}' (use nix-instantiate, or nix-builders plan)`);
    const path = drvArg.startsWith("/") ? drvArg : `${ctx.store.storeDir}/${drvArg}`;
    const d = readDerivation(path, { storeDir: ctx.store.storeDir, realStoreDir: ctx.store.realStoreDir });
    base = {
      path,
      system: d.system,
      requiredFeatures: d.facts.requiredSystemFeatures,
      preferLocalBuild: d.facts.preferLocalBuild,
      isBuiltin: d.facts.isBuiltin,
    };
  }
  const system = opts.system ?? base.system;
  const features = [...new Set([...base.requiredFeatures, ...(opts.feature ?? [])])].sort();
  return {
    ...(base.path !== undefined ? { path: base.path } : {}),
    system,
    requiredFeatures: features,
    preferLocalBuild: base.preferLocalBuild || opts.preferLocal === true,
    isBuiltin:
      opts.system !== undefined
        ? (base.isBuiltin ?? false) || system === "builtin"
        : (base.isBuiltin ?? false),
  };
}

/** The command; the user's reader helpers stop when it ends (no process of the user outlives it). */
export async function runRoute(opts: RouteOptions, drvArg: string | undefined, io: Io): Promise<number> {
  try {
    return await runRouteInner(opts, drvArg, io);
  } finally {
    closeReaders();
  }
}

async function runRouteInner(opts: RouteOptions, drvArg: string | undefined, io: Io): Promise<number> {
  if (opts.from !== undefined) {
    if (drvArg !== undefined || opts.store !== undefined)
      throw new UsageError(
        "--from: a DRV and --store cannot be used with a report (give --system and --feature)",
      );
    const b = fromBundle(opts.from, opts);
    const ctx = routeContext(b.view);
    const held = b.data.load as CurrentLoad | null;
    const load: CurrentLoad =
      held && held.stateDir === ctx.store.stateDir
        ? held
        : { stateDir: ctx.store.stateDir, locksReadable: false, machines: [] };
    const r = routeWithLoad(ctx, routeDrv(opts, ctx, undefined), load);
    io.out(opts.json ? json(routeJson(r)) : renderRoute(r));
    return decisionExit(r.result.decision.kind, ctx.fatal !== null);
  }
  const v = await userView({
    user: opts.user,
    nixVersion: opts.nixVersion,
    builders: opts.builders,
    env: io.env,
  });
  const ctx = routeContext(v, opts.store === undefined ? {} : { store: opts.store });
  let drv: RouteDrv;
  try {
    drv = routeDrv(opts, ctx, drvArg);
  } catch (e) {
    if (e instanceof NixError) {
      io.err(`${nixErrorDisplay(e.nixMessage)}\n`);
      return EXIT.errors;
    }
    throw e;
  }
  const r = routeNow(ctx, drv);
  io.out(opts.json ? json(routeJson(r)) : renderRoute(r));
  return decisionExit(r.result.decision.kind, ctx.fatal !== null);
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

export function register(program: Command, io: Io, exit: (code: number) => void): void {
  program
    .command("route")
    .description("where Nix would build one derivation right now, and why each machine is (not) eligible")
    .argument("[drv]", "a .drv store path (its system, features and preferLocalBuild)")
    .option("--user <name>", "compute the view of this user, with a service's clean environment")
    .option("--system <system>", "the derivation's system (default: the drv's, else the local system)")
    .option("--feature <feature>", "a required system feature (repeatable; added to the drv's)", collect)
    .option("--prefer-local", "the derivation sets preferLocalBuild")
    .option("--builders <spec>", "use this builders value, as Nix's --builders flag would (subject to trust)")
    .option(
      "--nix-version <X.Y>",
      "follow this Nix version's rules instead of the installed Nix's (checked against real Nix 2.8 and 2.30; other versions modelled from the Nix sources, see docs/nix-versions.md)",
    )
    .option("--store <dir>", "a chroot store (its drvs and its current-load folder)")
    .option("--from <file>", "answer from a report taken with `nix-builders report` (docs/report.md)")
    .option("--json", "print one JSON document")
    .action(async (drv: string | undefined, opts: RouteOptions) => exit(await runRoute(opts, drv, io)));
}
