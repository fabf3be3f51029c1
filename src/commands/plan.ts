/**
 * `nix-builders plan [--user U] DRV|INSTALLABLE... [--builders SPEC] [--nix-version X.Y] [--store DIR] [--json]`:
 * the pre-flight check a CI job runs. It takes the closure of derivations whose outputs are not valid
 * yet, routes each one, and prints a summary per builder (count, systems, features) and the list of
 * derivations that no builder and not the local machine can build, each with the reason.
 *
 * Routing ignores load: plan is about capability, so every derivation is routed as if every slot
 * were free. A derivation Nix would postpone even then (the only machines of the right type have
 * maxJobs 0, and the local machine cannot build it) waits forever: it is reported as unbuildable.
 *
 * Exit codes: 0 everything can be built; 2 some derivation cannot (or a configuration error).
 * See docs/plan.md.
 */
import { realpathSync, statSync } from "node:fs";
import type { Command } from "commander";
import { type PlanResult, planClosure } from "../app/plan.js";
import { type RouteContext, routeContext } from "../app/route-context.js";
import { openValidity, type ValidityChecker, type ValidityMethod } from "../app/store-validity.js";
import { userView } from "../app/view.js";
import { pathOwnedBy } from "../host/cache.js";
import { followLinksToStorePath, type ReadMode } from "../host/closure.js";
import { FactsCache } from "../host/facts-cache.js";
import { type RunAsIdentity, runAs } from "../host/run-as.js";
import { isOnDisk } from "../host/store.js";
import { nixErrorDisplay } from "../nix/display.js";
import { NixError } from "../nix/errors.js";
import { excerpt, isKeyMaterialLine } from "../nix/redact.js";
import { formatNixVersion } from "../nix/version.js";
import { failureText, runProc } from "../os/proc.js";
import { EXIT, type Io, json, Refusal, UsageError } from "./io.js";
import { plural, table } from "./render.js";

export interface PlanOptions {
  user?: string;
  builders?: string;
  nixVersion?: string;
  store?: string;
  json?: boolean;
  /** How to read the .drv files (default sync; see bench/RESULTS.md). */
  read?: ReadMode;
  /** How to ask the store which outputs are valid (default: daemon socket, else nix-daemon --stdio). */
  validity?: ValidityMethod;
  /** false with --no-cache: read every .drv and leave the facts cache alone. */
  cache?: boolean;
  /** --cache-dir: keep the facts cache there instead of the user's cache directory. */
  cacheDir?: string;
}

export type { BuilderSummary, PlanInput, PlanResult, Unbuildable } from "../app/plan.js";
export { planClosure };

/* ---------- installables ---------- */

/** Evaluation can be slow, but never unbounded: a deadline for nix-instantiate / nix eval. */
const EVAL_DEADLINE_MS = 10 * 60_000;

/**
 * What Nix printed, fit to show: at most 20 lines, each a bounded excerpt, and never a line of key
 * material (a parse error quotes the source line, and the file may be a private key).
 */
function scrubNixOutput(text: string): string {
  return text
    .trim()
    .split("\n")
    .slice(0, 20)
    .map((l) => (isKeyMaterialLine(l) ? "<a line of a private key: not shown>" : excerpt(l)))
    .join("\n");
}

/**
 * Run an evaluator (nix-instantiate, nix eval). With `as` (root acting for `--user`), it runs as that
 * user, so Nix reads the file with the user's rights, as the user's own evaluation would.
 */
async function run(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  as: RunAsIdentity | null,
): Promise<string> {
  if (as !== null) {
    const r = await runAs(as, [cmd, ...args], {
      env: { NIX_PATH: env["NIX_PATH"] },
      cwd: process.cwd(),
      timeoutMs: EVAL_DEADLINE_MS,
    });
    if (r.code === 0) return r.stdout;
    const why = r.timedOut ? `no answer within ${EVAL_DEADLINE_MS / 1000} s` : scrubNixOutput(r.stderr);
    // the command line was fine: the evaluation failed (an error, exit 2), not a usage error
    throw new Refusal(`${cmd} ${args.join(" ")} (as ${as.name}) failed: ${why}`);
  }
  const r = await runProc([cmd, ...args], {
    env,
    cwd: process.cwd(),
    deadlineMs: EVAL_DEADLINE_MS,
    maxOutputBytes: 1 << 26,
  });
  if (r.code === 0 && r.truncated.stdout === 0) return r.stdout;
  const why = r.timedOut
    ? `no answer within ${EVAL_DEADLINE_MS / 1000} s`
    : scrubNixOutput(r.stderr) || (failureText(r) ?? "output too large");
  // the command line was fine: the evaluation failed (an error, exit 2), not a usage error
  throw new Refusal(`${cmd} ${args.join(" ")} failed: ${why}`);
}

/** A file argument must be a regular file or a directory (default.nix): never a FIFO or a device. */
function checkFileArgument(a: string): void {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(a);
  } catch (e) {
    // a path that does not exist is a wrong command line (64); unreachable ones: Nix says so in its words
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new UsageError(`${a}: no such file`);
    return;
  }
  if (st.isFile() || st.isDirectory()) return;
  const kind = st.isFIFO()
    ? "a FIFO"
    : st.isCharacterDevice()
      ? "a character device"
      : st.isBlockDevice()
        ? "a block device"
        : st.isSocket()
          ? "a socket"
          : "not a file";
  throw new Refusal(`${a}: not a regular file (${kind})`, { path: a });
}

/**
 * Turn the arguments into .drv paths. A store path ending in `.drv` is taken as is. An installable
 * with `#` (a flake reference) goes through `nix eval --raw <it>.drvPath`; anything else (a file, a
 * directory with default.nix) through `nix-instantiate <it>`. Both run as children with argv, no shell,
 * pointed at the same store.
 */
export async function resolveInstallables(
  args: readonly string[],
  ctx: RouteContext,
  env: NodeJS.ProcessEnv,
  as: RunAsIdentity | null = null,
): Promise<string[]> {
  const out: string[] = [];
  const storeArgs = [...ctx.store.nixArgs];
  for (const a of args) {
    const bare = a.split("!")[0]!;
    // Like Nix: an argument with a `/` that leads (through symlinks: a GC root, a link) into the
    // store names that store path; a .drv there is the derivation itself, not a Nix expression.
    const storePath = bare.includes("/") ? followLinksToStorePath(bare, ctx.store.storeDir) : null;
    if (storePath?.endsWith(".drv")) {
      out.push(storePath);
      continue;
    }
    let text: string;
    if (a.includes("#")) {
      text = await run(
        "nix",
        [
          ...storeArgs,
          "--extra-experimental-features",
          "nix-command flakes",
          "eval",
          "--raw",
          `${a}.drvPath`,
        ],
        env,
        as,
      );
    } else {
      checkFileArgument(bare);
      text = await run("nix-instantiate", [...storeArgs, a], env, as);
    }
    for (const line of text.split("\n")) {
      const p = line.trim().split("!")[0]!;
      if (p === "") continue;
      if (!p.endsWith(".drv") || !p.startsWith(`${ctx.store.storeDir}/`))
        throw new UsageError(`'${a}' did not give a derivation path (got '${p}')`);
      out.push(p);
    }
  }
  return [...new Set(out)];
}

/* ---------- output ---------- */

function counts(m: ReadonlyMap<string, number>): Record<string, number> {
  return Object.fromEntries([...m].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)));
}

function countsText(m: ReadonlyMap<string, number>): string {
  if (m.size === 0) return "-";
  return Object.entries(counts(m))
    .map(([k, n]) => `${k} ${n}`)
    .join(", ");
}

export function planJson(p: PlanResult, ctx: RouteContext): Record<string, unknown> {
  return {
    nixVersion: formatNixVersion(ctx.version),
    user: ctx.user,
    store: ctx.store.description,
    roots: p.roots,
    routingIgnoresLoad: true,
    closure: p.closure,
    valid: p.valid,
    toBuild: p.toBuild,
    builders: p.builders.map((b) => ({
      builder: b.builder,
      count: b.count,
      systems: counts(b.systems),
      features: counts(b.features),
    })),
    unbuildable: p.unbuildable.map((u) => ({
      drvPath: u.drvPath,
      system: u.system,
      requiredFeatures: u.requiredFeatures,
      kind: u.kind,
      reason: u.reason,
      message: u.message,
    })),
    blocked: p.blocked,
    ms: {
      read: Math.round(p.ms.read),
      validity: Math.round(p.ms.validity),
      route: Math.round(p.ms.route),
    },
    cache: p.cache,
  };
}

const LIST_LIMIT = 50;

export function renderPlan(p: PlanResult, ctx: RouteContext): string {
  let out = `Nix ${formatNixVersion(ctx.version)} rules · user ${ctx.user} · ${ctx.store.description}\n`;
  out += `${plural(p.closure, "derivation")} looked at from ${plural(p.roots.length, "root")}: ${p.valid} already built, ${p.toBuild} to build.\n`;
  out += "Routing ignores load: each derivation is routed as if every build slot were free.\n\n";
  if (p.builders.length > 0 || p.unbuildable.length > 0) {
    const rows: string[][] = [["builder", "drvs", "systems", "features"]];
    for (const b of p.builders)
      rows.push([b.builder, String(b.count), countsText(b.systems), countsText(b.features)]);
    if (p.unbuildable.length > 0) {
      const sys = new Map<string, number>();
      const feat = new Map<string, number>();
      for (const u of p.unbuildable) {
        sys.set(u.system, (sys.get(u.system) ?? 0) + 1);
        for (const f of u.requiredFeatures) feat.set(f, (feat.get(f) ?? 0) + 1);
      }
      rows.push(["(nowhere)", String(p.unbuildable.length), countsText(sys), countsText(feat)]);
    }
    out += table(rows);
  }
  if (p.unbuildable.length === 0) {
    out += "\nEvery derivation to build has a builder.\n";
    return out;
  }
  out += `\n${plural(p.unbuildable.length, "derivation")} no builder and not the local machine can build`;
  out += p.blocked > 0 ? ` (and ${p.blocked} more that depend on them):\n` : ":\n";
  for (const u of p.unbuildable.slice(0, LIST_LIMIT)) {
    const f = u.requiredFeatures.length ? ` {${u.requiredFeatures.join(", ")}}` : "";
    out += `  ${u.drvPath}  (${u.system}${f})${u.kind === "postponed-forever" ? " — Nix would wait forever" : ""}\n`;
    out += `    ${u.reason}\n`;
  }
  if (p.unbuildable.length > LIST_LIMIT)
    out += `  … and ${p.unbuildable.length - LIST_LIMIT} more (--json lists all)\n`;
  return out;
}

function progressPrinter(io: Io): ((stage: string, done: number, total: number | null) => void) | undefined {
  if (!io.isTTY) return undefined;
  let last = 0;
  return (stage, done, total) => {
    const now = Date.now();
    if (now - last < 100 && done !== 0) return;
    last = now;
    io.err(`\r\x1b[K${stage}: ${done}${total !== null ? `/${total}` : ""}`);
  };
}

/**
 * A --cache-dir given on the command line: used only when it is a directory that nobody but this
 * user and root can change (every directory on its real path), as the default cache directory is.
 */
function safeCacheDir(dir: string): string {
  let real: string;
  try {
    real = realpathSync(dir);
  } catch (e) {
    throw new Refusal(
      `--cache-dir ${dir}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such directory" : "cannot be resolved"}`,
    );
  }
  if (!pathOwnedBy(real, process.getuid?.() ?? -1))
    throw new Refusal(
      `--cache-dir ${dir}: not a directory that only this user and root can write (every directory on its path must be)`,
    );
  return real;
}

export async function runPlan(opts: PlanOptions, args: readonly string[], io: Io): Promise<number> {
  if (args.length === 0) throw new UsageError("plan: give at least one .drv path or installable");
  const v = await userView({
    user: opts.user,
    nixVersion: opts.nixVersion,
    builders: opts.builders,
    env: io.env,
  });
  const ctx = routeContext(v, opts.store === undefined ? {} : { store: opts.store });
  if (ctx.fatal !== null) {
    io.err(`${nixErrorDisplay(ctx.fatal)}\n(Nix stops every build with this error)\n`);
    return EXIT.errors;
  }
  // Before evaluating anything: a --cache-dir that is refused stops here.
  const facts =
    opts.cache === false
      ? undefined
      : new FactsCache({
          storeDir: ctx.store.storeDir,
          env: io.env,
          ...(opts.cacheDir !== undefined ? { dir: safeCacheDir(opts.cacheDir) } : {}),
        });
  // With --user, root evaluates as that user: Nix then reads the files with the user's rights.
  const u = v.user;
  const as: RunAsIdentity | null =
    opts.user !== undefined && process.getuid?.() === 0 && u.uid !== 0
      ? { name: u.name, uid: u.uid, gid: u.gid, home: u.home, shell: u.shell }
      : null;
  const roots = await resolveInstallables(args, ctx, io.env, as);
  const onProgress = progressPrinter(io);
  // The store is asked only when the top-down walk needs an answer (none when nothing is on disk).
  let checker: Promise<ValidityChecker> | null = null;
  const open = () => {
    checker ??= openValidity(ctx.store, opts.validity);
    return checker;
  };
  let result: PlanResult;
  try {
    result = await planClosure({
      roots,
      ctx,
      ...(facts ? { facts } : {}),
      // Paths not on disk are not valid: the store is asked only about the others.
      onDisk: (p) => isOnDisk(p, ctx.store),
      valid: async (paths) => (await open()).valid(paths),
      ...(opts.read ? { readMode: opts.read } : {}),
      ...(onProgress ? { onProgress } : {}),
    });
  } catch (e) {
    if (onProgress) io.err("\r\x1b[K");
    if (e instanceof NixError) {
      io.err(`${nixErrorDisplay(e.nixMessage)}\n`);
      return EXIT.errors;
    }
    if (e instanceof Error && e.name === "StoreAccessError") {
      io.err(`error: cannot ask the store which outputs are valid: ${e.message}\n`);
      return EXIT.errors;
    }
    throw e;
  } finally {
    await (checker as Promise<ValidityChecker> | null)?.then(
      (c) => c.close(),
      () => {},
    );
  }
  if (onProgress) io.err("\r\x1b[K");
  facts?.save();
  io.out(opts.json ? json(planJson(result, ctx)) : renderPlan(result, ctx));
  return result.unbuildable.length > 0 ? EXIT.errors : EXIT.ok;
}

export function register(program: Command, io: Io, exit: (code: number) => void): void {
  program
    .command("plan")
    .description("pre-flight check: route every derivation still to build; list what nothing can build")
    .argument("<drv-or-installable...>", ".drv paths, files for nix-instantiate, or flake installables")
    .option("--user <name>", "compute the view of this user, with a service's clean environment")
    .option("--builders <spec>", "use this builders value, as Nix's --builders flag would (subject to trust)")
    .option(
      "--nix-version <X.Y>",
      "follow this Nix version's rules instead of the installed Nix's (checked against real Nix 2.8 and 2.30; other versions modelled from the Nix sources, see docs/nix-versions.md)",
    )
    .option("--store <dir>", "a chroot store (its drvs, validity and state)")
    .option("--read <mode>", "how to read .drv files: sync (default) or pool")
    .option("--validity <method>", "daemon, stdio (nix-daemon --stdio) or nix-store (--check-validity)")
    .option("--no-cache", "read every .drv from the store, and neither read nor write the facts cache")
    .option(
      "--cache-dir <dir>",
      "keep the facts cache in this directory (default: the user's cache directory)",
    )
    .option("--json", "print one JSON document")
    .action(async (args: string[], opts: PlanOptions) => {
      if (opts.read !== undefined && opts.read !== "sync" && opts.read !== "pool")
        throw new UsageError(`--read: expected sync or pool, not '${opts.read}'`);
      if (opts.validity !== undefined && !["daemon", "stdio", "nix-store"].includes(opts.validity))
        throw new UsageError(`--validity: expected daemon, stdio or nix-store, not '${opts.validity}'`);
      exit(await runPlan(opts, args, io));
    });
}
