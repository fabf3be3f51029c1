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
import { type RouteContext, routeContext } from "../app/route-context.js";
import { openValidity, type ValidityMethod } from "../app/store-validity.js";
import { userView } from "../app/view.js";
import { pathOwnedBy } from "../host/cache.js";
import { followLinksToStorePath, type ReadMode, readClosure } from "../host/closure.js";
import { FactsCache } from "../host/facts-cache.js";
import { type RunAsIdentity, runAs } from "../host/run-as.js";
import { pathsOnDisk } from "../host/store.js";
import { nixErrorDisplay } from "../nix/display.js";
import { NixError } from "../nix/errors.js";
import { excerpt, isKeyMaterialLine } from "../nix/redact.js";
import { type RouteResult, route } from "../nix/route.js";
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

export interface BuilderSummary {
  /** A machine's store URI, or "local". */
  readonly builder: string;
  count: number;
  readonly systems: Map<string, number>;
  readonly features: Map<string, number>;
}

export interface Unbuildable {
  readonly drvPath: string;
  readonly system: string;
  readonly requiredFeatures: readonly string[];
  /** "none": Nix fails; "postponed-forever": Nix waits for a machine that never takes it. */
  readonly kind: "none" | "postponed-forever";
  /** Plain words: why no machine and not the local machine. */
  readonly reason: string;
  /** What Nix prints (the error, or the waiting line). */
  readonly message: string;
}

export interface PlanResult {
  readonly roots: readonly string[];
  /** Derivations in the closure of the roots. */
  readonly closure: number;
  /** Derivations reached whose wanted outputs are all valid (not built, inputs not needed). */
  readonly valid: number;
  /** Derivations Nix has to build. */
  readonly toBuild: number;
  readonly builders: BuilderSummary[];
  readonly unbuildable: Unbuildable[];
  /** Derivations that could be built but depend (transitively) on an unbuildable one. */
  readonly blocked: number;
  readonly ms: { read: number; validity: number; route: number };
  /** The facts cache, when one was used: derivations answered from it and read from the store. */
  readonly cache: { hits: number; misses: number } | null;
}

export interface PlanInput {
  readonly roots: readonly string[];
  readonly ctx: RouteContext;
  /** Which of these paths are valid. */
  readonly valid: (paths: readonly string[]) => Promise<Set<string>>;
  readonly readMode?: ReadMode;
  /** plan's facts cache (src/host/facts-cache.ts), when not disabled. */
  readonly facts?: FactsCache;
  readonly onProgress?: (stage: string, done: number, total: number | null) => void;
}

interface Decided {
  /** The builder's store URI, "local", or null when nothing can build it. */
  readonly builder: string | null;
  readonly kind: Unbuildable["kind"];
  readonly reason: string;
  /** Nix's message with '<unknown>' where the derivation's path or name goes. */
  readonly message: string;
}

/**
 * Put the derivation into a message computed without it: the waiting line and the local-fallback
 * error quote the full path ('<unknown>'); the "Failed to find a machine" text names the base name.
 */
function nameIn(message: string, drvPath: string): string {
  if (!message.includes("<unknown>")) return message;
  const base = drvPath.slice(drvPath.lastIndexOf("/") + 1);
  return message
    .replaceAll("'<unknown>'", `'${drvPath}'`)
    .replaceAll("derivation: <unknown>", `derivation: ${base}`);
}

function reasonText(r: RouteResult, kind: Unbuildable["kind"]): string {
  const parts: string[] = [];
  if (r.machines.length === 0) parts.push("no remote builders are configured");
  for (const m of r.machines) parts.push(`${m.storeUri}: ${m.reasons.join(", ") || "eligible"}`);
  parts.push(`local: ${r.local.reasons.join(", ") || "capable"}`);
  if (kind === "postponed-forever") {
    const waiting = r.machines.filter((m) => m.rightType).map((m) => m.storeUri);
    return `postponed forever: only ${waiting.join(", ")} can take it and ${waiting.length === 1 ? "it has" : "they have"} maxJobs 0; ${parts.join("; ")}`;
  }
  return parts.join("; ");
}

/** The core of plan: closure → validity → route each derivation to build (ignoring load). */
export async function planClosure(input: PlanInput): Promise<PlanResult> {
  const { ctx } = input;
  const progress = input.onProgress;
  const t0 = performance.now();
  const loc = { storeDir: ctx.store.storeDir, realStoreDir: ctx.store.realStoreDir };
  // Validity queries go out batch by batch while the next batch is read (one round trip each).
  const queries: Promise<Set<string>>[] = [];
  let outputs = 0;
  const closure = await readClosure(input.roots, {
    loc,
    // Small batches: the query of the last one is the only part of validity not hidden by reading.
    batchSize: 500,
    mode: input.readMode ?? "sync",
    ...(input.facts ? { facts: input.facts } : {}),
    onBatch: (nodes) => {
      const paths: string[] = [];
      for (const n of nodes) for (const p of n.outputPaths) if (p !== "") paths.push(p);
      outputs += paths.length;
      const q = input.valid(paths);
      q.catch(() => {}); // awaited below; avoid an unhandled rejection while reading
      queries.push(q);
    },
    ...(progress ? { onProgress: (n: number) => progress("reading derivations", n, null) } : {}),
  });
  const t1 = performance.now();
  progress?.("checking validity", 0, outputs);
  const validSet = new Set<string>();
  for (const q of queries) for (const p of await q) validSet.add(p);
  const t2 = performance.now();

  const nodes = closure.nodes;
  const edges = closure.edges;
  const edgeOutputs = closure.edgeOutputs;
  const N = nodes.length;
  // Post-order (inputs first) over the closure, iteratively, on ids.
  const post = new Int32Array(N);
  let postLen = 0;
  {
    const seen = new Uint8Array(N);
    const stackNode = new Int32Array(N);
    const stackPos = new Int32Array(N);
    for (const root of input.roots) {
      const rid = closure.index.get(root)!;
      if (seen[rid]) continue;
      seen[rid] = 1;
      let sp = 0;
      stackNode[0] = rid;
      stackPos[0] = nodes[rid]!.inputStart;
      while (sp >= 0) {
        const i = stackPos[sp]!;
        if (i < nodes[stackNode[sp]!]!.inputEnd) {
          stackPos[sp] = i + 1;
          const dep = edges[i]!;
          if (!seen[dep]) {
            seen[dep] = 1;
            sp++;
            stackNode[sp] = dep;
            stackPos[sp] = nodes[dep]!.inputStart;
          }
        } else {
          post[postLen++] = stackNode[sp]!;
          sp--;
        }
      }
    }
  }

  // Wanted outputs flow from the roots (all outputs) down, as a bit mask over each derivation's
  // outputs (-1: all). A derivation is built when one of its wanted outputs is not valid; an output
  // whose path is not known in advance (CA, deferred, impure) counts as not valid.
  const wanted = new Int32Array(N);
  for (const r of input.roots) wanted[closure.index.get(r)!] = -1;
  const build = new Uint8Array(N);
  let toBuild = 0;
  let valid = 0;
  for (let k = postLen - 1; k >= 0; k--) {
    const id = post[k]!;
    const w = wanted[id]!;
    if (w === 0) continue;
    const node = nodes[id]!;
    let needed = false;
    for (let j = 0; j < node.outputPaths.length && !needed; j++) {
      if (w !== -1 && (j > 30 || (w & (1 << j)) === 0)) continue;
      const p = node.outputPaths[j]!;
      if (p === "" || !validSet.has(p)) needed = true;
    }
    if (!needed) {
      valid++;
      continue;
    }
    build[id] = 1;
    toBuild++;
    for (let j = node.inputStart; j < node.inputEnd; j++) {
      const dep = edges[j]!;
      if (wanted[dep] === -1) continue;
      const names = nodes[dep]!.outputNames;
      let mask = wanted[dep]!;
      const outs = edgeOutputs[j]!;
      for (let k2 = 0; k2 < outs.length; k2++) {
        const o = outs[k2]!;
        const x = names.length === 1 && names[0] === o ? 0 : names.indexOf(o);
        if (x < 0) continue;
        mask = x > 30 ? -1 : mask | (1 << x);
        if (mask === -1) break;
      }
      wanted[dep] = mask;
    }
  }

  // Route each derivation to build, as if every slot were free. Decisions depend only on
  // (system, features, preferLocalBuild, builtin) apart from the messages: memoise on that.
  // System strings and feature lists are interned by the reader, so they key the memo by identity.
  const memo = new Map<string, Map<readonly string[], (Decided | undefined)[]>>();
  const summaries = new Map<string, BuilderSummary>();
  const unbuildable: Unbuildable[] = [];
  const bad = new Uint8Array(N);
  let routed = 0;
  for (let k = 0; k < postLen; k++) {
    const id = post[k]!;
    if (!build[id]) continue;
    const node = nodes[id]!;
    let bySystem = memo.get(node.system);
    if (bySystem === undefined) {
      bySystem = new Map();
      memo.set(node.system, bySystem);
    }
    let slots = bySystem.get(node.requiredFeatures);
    if (slots === undefined) {
      slots = [undefined, undefined, undefined, undefined];
      bySystem.set(node.requiredFeatures, slots);
    }
    const slot = (node.preferLocalBuild ? 2 : 0) + (node.isBuiltin ? 1 : 0);
    let m = slots[slot];
    if (m === undefined) {
      // Routed without a path: the messages say '<unknown>' where Nix names the derivation.
      const r = route({
        version: ctx.version,
        drv: {
          system: node.system,
          requiredFeatures: node.requiredFeatures,
          preferLocalBuild: node.preferLocalBuild,
          isBuiltin: node.isBuiltin,
        },
        machines: ctx.machines,
        local: ctx.local,
      });
      const kind = r.decision.kind;
      const builder = kind === "remote" ? r.decision.storeUri! : kind === "local" ? "local" : null;
      const unbuildableKind = kind === "postpone" ? "postponed-forever" : "none";
      m = {
        builder,
        kind: unbuildableKind,
        reason: builder === null ? reasonText(r, unbuildableKind) : "",
        message: r.decision.message ?? "",
      };
      slots[slot] = m;
    }
    if (m.builder !== null) {
      let s = summaries.get(m.builder);
      if (s === undefined) {
        s = { builder: m.builder, count: 0, systems: new Map(), features: new Map() };
        summaries.set(m.builder, s);
      }
      s.count++;
      s.systems.set(node.system, (s.systems.get(node.system) ?? 0) + 1);
      for (const f of node.requiredFeatures) s.features.set(f, (s.features.get(f) ?? 0) + 1);
    } else {
      unbuildable.push({
        drvPath: node.path,
        system: node.system,
        requiredFeatures: node.requiredFeatures,
        kind: m.kind,
        reason: m.reason,
        message: nameIn(m.message, node.path),
      });
      bad[id] = 1;
    }
    routed++;
    if (progress && routed % 5000 === 0) progress("routing", routed, toBuild);
  }

  // Blocked: buildable, but an input (transitively) cannot be built. Post-order sees inputs first.
  let blocked = 0;
  for (let k = 0; k < postLen; k++) {
    const id = post[k]!;
    if (!build[id] || bad[id]) continue;
    const node = nodes[id]!;
    for (let j = node.inputStart; j < node.inputEnd; j++) {
      if (bad[edges[j]!]) {
        bad[id] = 2;
        blocked++;
        break;
      }
    }
  }
  const t3 = performance.now();

  const builders = [...summaries.values()].sort((a, b) =>
    a.builder === "local"
      ? 1
      : b.builder === "local"
        ? -1
        : b.count - a.count || (a.builder < b.builder ? -1 : 1),
  );
  unbuildable.sort((a, b) => (a.drvPath < b.drvPath ? -1 : a.drvPath > b.drvPath ? 1 : 0));
  return {
    roots: input.roots,
    closure: closure.size,
    valid,
    toBuild,
    builders,
    unbuildable,
    blocked,
    ms: { read: t1 - t0, validity: t2 - t1, route: t3 - t2 },
    cache: input.facts ? { hits: input.facts.stats.hits, misses: input.facts.stats.misses } : null,
  };
}

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
  out += `${plural(p.closure, "derivation")} in the closure of ${plural(p.roots.length, "root")}: ${p.valid} already built, ${p.toBuild} to build.\n`;
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

function progressPrinter(io: Io): PlanInput["onProgress"] {
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
  // Start the store connection now: it comes up while the first derivations are read.
  const checker = openValidity(ctx.store, opts.validity);
  checker.catch(() => {});
  let result: PlanResult;
  try {
    result = await planClosure({
      roots,
      ctx,
      ...(facts ? { facts } : {}),
      // Paths not on disk are not valid: the store is asked only about the others.
      valid: async (paths) => (await checker).valid(pathsOnDisk(paths, ctx.store)),
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
    await checker.then(
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
