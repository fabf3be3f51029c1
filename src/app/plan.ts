/**
 * plan's core, composed (docs/plan.md): read the closure (src/host/closure.ts, with the facts cache),
 * ask the store about the output paths the top-down decision needs (src/nix/plan-graph.ts), route
 * each derivation to build.
 */
import { type ReadMode, readClosure } from "../host/closure.js";
import type { FactsCache } from "../host/facts-cache.js";
import {
  type BuilderSummary,
  decideBuilds,
  type PlanRouting,
  postOrder,
  routeBuilds,
  type Unbuildable,
} from "../nix/plan-graph.js";
import type { RouteContext } from "./route-context.js";

export type { BuilderSummary, Unbuildable };

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

/**
 * Rounds of questions to the store before asking about every output path of the closure at once.
 * A round is needed per level of paths that are on disk but not valid (an interrupted build's
 * leftovers), usually none: the first answers decide.
 */
const MAX_ROUNDS = 4;

/** The core of plan: closure → validity, top-down → route each derivation to build (ignoring load). */
export async function planClosure(input: PlanInput): Promise<PlanResult> {
  const { ctx, onDisk } = input;
  const progress = input.onProgress;
  const t0 = performance.now();
  const closure = await readClosure(input.roots, {
    loc: { storeDir: ctx.store.storeDir, realStoreDir: ctx.store.realStoreDir },
    mode: input.readMode ?? "sync",
    ...(input.facts ? { facts: input.facts } : {}),
    ...(progress ? { onProgress: (n: number) => progress("reading derivations", n, null) } : {}),
  });
  const t1 = performance.now();
  const rootIds = input.roots.map((r) => closure.index.get(r)!);
  const order = postOrder(closure, rootIds);
  // Validity is asked only where the top-down walk needs it, never cached across runs.
  const known = new Map<string, boolean>();
  // absent[id] bit j: output j of derivation id is not on disk (a bit is cheaper than a Map entry).
  const absent = new Int32Array(closure.size);
  const isValid = (p: string, id: number, j: number): boolean | undefined => {
    if (j < 31 && (absent[id]! & (1 << j)) !== 0) return false;
    const v = known.get(p);
    if (v !== undefined || onDisk === undefined) return v;
    if (onDisk(p)) return undefined;
    if (j < 31) absent[id]! |= 1 << j;
    else known.set(p, false);
    return false;
  };
  let waited = 0;
  let d = decideBuilds(closure, order, rootIds, isValid);
  for (let round = 1; d.unknown.length > 0; round++) {
    let ask = d.unknown;
    if (round >= MAX_ROUNDS) {
      ask = [];
      for (let id = 0; id < closure.size; id++) {
        const ps = closure.nodes[id]!.outputPaths;
        for (let j = 0; j < ps.length; j++)
          if (ps[j] !== "" && isValid(ps[j]!, id, j) === undefined) ask.push(ps[j]!);
      }
    }
    progress?.("checking validity", 0, ask.length);
    const tw = performance.now();
    const v = await input.valid(ask);
    waited += performance.now() - tw;
    for (const p of ask) known.set(p, v.has(p));
    d = decideBuilds(closure, order, rootIds, isValid);
  }
  const t2 = performance.now();
  const routed = routeBuilds(
    closure,
    order,
    d.build,
    ctx,
    progress ? (n) => progress("routing", n, d.toBuild) : undefined,
  );
  const t3 = performance.now();
  return {
    roots: input.roots,
    closure: closure.size,
    valid: d.valid,
    toBuild: d.toBuild,
    ...routed,
    ms: { read: t1 - t0, validity: waited, route: t3 - t2 + (t2 - t1 - waited) },
    cache: input.facts ? { hits: input.facts.stats.hits, misses: input.facts.stats.misses } : null,
  };
}
