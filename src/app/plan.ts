/**
 * plan's core, composed (docs/plan.md): read the closure (src/host/closure.ts, with the facts cache),
 * ask the store about the output paths the top-down decision needs (src/nix/plan-graph.ts), route
 * each derivation to build.
 */
import {
  type DrvClosure,
  type LazyClosure,
  lazyClosure,
  type ReadMode,
  readClosure,
} from "../host/closure.js";
import type { FactsCache } from "../host/facts-cache.js";
import {
  type BuilderSummary,
  BuildWalk,
  type PlanGraph,
  type PlanRouting,
  postOrder,
  routeBuilds,
  type Unbuildable,
} from "../nix/plan-graph.js";
import type { RouteContext } from "./route-context.js";

export type { BuilderSummary, Unbuildable };

export interface PlanResult {
  readonly roots: readonly string[];
  /**
   * Derivations looked at, as Nix would: the roots and the inputs of every derivation to build
   * (valid + toBuild). The inputs of a derivation whose wanted outputs are valid are not looked at.
   */
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
  readonly ctx: PlanRouting & Pick<RouteContext, "store">;
  /** Which of these paths are valid (the store's answer). */
  readonly valid: (paths: readonly string[]) => Promise<Set<string>>;
  /**
   * Whether a path is on disk; one that is not is not valid, and the store is not asked about it
   * (src/host/store.ts isOnDisk). Without it every path needed is asked.
   */
  readonly onDisk?: (path: string) => boolean;
  readonly readMode?: ReadMode;
  /** plan's facts cache (src/host/facts-cache.ts), when not disabled. */
  readonly facts?: FactsCache;
  readonly onProgress?: (stage: string, done: number, total: number | null) => void;
}

/** The core of plan: closure → validity, top-down → route each derivation to build (ignoring load). */
export async function planClosure(input: PlanInput): Promise<PlanResult> {
  const { ctx, onDisk } = input;
  const progress = input.onProgress;
  const t0 = performance.now();
  const loc = { storeDir: ctx.store.storeDir, realStoreDir: ctx.store.realStoreDir };
  const readOpts = {
    loc,
    ...(input.facts ? { facts: input.facts } : {}),
    ...(progress ? { onProgress: (n: number) => progress("reading derivations", n, null) } : {}),
  };
  // Read as the walk goes (only what Nix would look at); --read pool reads the whole closure first.
  const g =
    input.readMode === "pool"
      ? eager(await readClosure(input.roots, { ...readOpts, mode: "pool" }))
      : lazyClosure(input.roots, readOpts);
  const rootIds = input.roots.map((r) => g.index.get(r)!);
  // Validity is asked only where the walk needs it, never cached across runs.
  const known = new Map<string, boolean>();
  // absent[id] bit j: output j of derivation id is not on disk (a bit is cheaper than a Map entry).
  const absent: number[] = [];
  const isValid = (p: string, id: number, j: number): boolean | undefined => {
    if (j < 31 && ((absent[id] ?? 0) & (1 << j)) !== 0) return false;
    const v = known.get(p);
    if (v !== undefined || onDisk === undefined) return v;
    if (onDisk(p)) return undefined;
    if (j < 31) absent[id] = (absent[id] ?? 0) | (1 << j);
    else known.set(p, false);
    return false;
  };
  const walk = new BuildWalk(rootIds);
  let waited = 0;
  for (;;) {
    const ask = walk.step(g, (id) => g.load(id), isValid);
    if (ask.length === 0) break;
    progress?.("checking validity", 0, ask.length);
    const tw = performance.now();
    const v = await input.valid(ask);
    waited += performance.now() - tw;
    for (const p of ask) known.set(p, v.has(p));
  }
  const t1 = performance.now();
  const d = walk.result(g.size);
  // Every derivation to build was read (with its inputs): route them, inputs first.
  const order = postOrder(g as PlanGraph, rootIds, d.build);
  const routed = routeBuilds(
    g as PlanGraph,
    order,
    d.build,
    ctx,
    progress ? (n) => progress("routing", n, d.toBuild) : undefined,
  );
  const t2 = performance.now();
  return {
    roots: input.roots,
    closure: d.valid + d.toBuild,
    valid: d.valid,
    toBuild: d.toBuild,
    ...routed,
    ms: { read: t1 - t0 - waited, validity: waited, route: t2 - t1 },
    cache: input.facts ? input.facts.counts() : null,
  };
}

/** A closure read whole, in the shape of a lazy one. */
function eager(c: DrvClosure): LazyClosure {
  return {
    ...c,
    read: c.size,
    load: (id) => c.nodes[id]!,
  };
}
