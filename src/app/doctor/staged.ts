/**
 * Typed stages. A check is a stage (I/O: it returns a typed fact) and a verdict (pure: the fact, and the
 * facts of the checks it needs, to an outcome). A check names the checks it needs in `deps`, and its
 * stage and verdict see exactly their facts, typed: a check that reads a fact it did not ask for does
 * not compile. The runner (runner.ts) still runs the checks in order and skips one whose dependency
 * failed or was skipped, so a stage only ever sees facts of dependencies that passed or warned.
 */
import type { CheckDef, CheckOutcome } from "./types.js";

/** The context the runner passes: the scope (plain data) and the facts gathered so far (made on first use). */
export type StagedCtx<S> = S & { facts?: Map<string, unknown> };

export type DepFacts<F, D extends readonly (keyof F)[]> = { readonly [K in D[number]]: F[K] };

/**
 * One check of a fact table F (check id → the fact its stage returns). `deps` are checked by the
 * compiler against F; the one cast from the runner's map to typed facts is here.
 */
export function stagesOf<F, S>() {
  return <const I extends keyof F & string, const D extends readonly (keyof F & string)[]>(
    id: I,
    deps: D,
    stage: (dep: DepFacts<F, D>, scope: S) => F[I] | Promise<F[I]>,
    verdict: (fact: F[I], dep: DepFacts<F, D>, scope: S) => CheckOutcome,
  ): CheckDef<StagedCtx<S>> => ({
    id,
    deps: [...deps],
    async run(ctx) {
      ctx.facts ??= new Map();
      const facts = ctx.facts;
      const dep = Object.fromEntries(deps.map((d) => [d, facts.get(d)])) as DepFacts<F, D>;
      const fact = await stage(dep, ctx);
      facts.set(id, fact);
      return verdict(fact, dep, ctx);
    },
  });
}
