/**
 * Runs checks in dependency order. A check whose dependency failed or was skipped is skipped and says
 * which one. A check that throws fails with its exception as evidence (never the whole doctor).
 */
import type { CheckDef, CheckResult } from "./types.js";

export async function runChecks<C>(
  defs: readonly CheckDef<C>[],
  ctx: C,
  builder: string | null,
  prior: ReadonlyMap<string, CheckResult> = new Map(),
  opts: { debug?: boolean } = {},
): Promise<CheckResult[]> {
  const done = new Map<string, CheckResult>(prior);
  const out: CheckResult[] = [];
  for (const def of defs) {
    const t0 = performance.now();
    const blocked = def.deps
      .map((d) => done.get(d))
      .find((r) => r === undefined || r.status === "fail" || r.status === "skip");
    let result: CheckResult;
    if (blocked !== undefined || def.deps.some((d) => !done.has(d))) {
      const dep = blocked ?? null;
      const missing = def.deps.find((d) => !done.has(d));
      result = {
        id: def.id,
        builder,
        status: "skip",
        cause: null,
        message: dep
          ? `skipped: ${dep.id} ${dep.status === "fail" ? "failed" : "was skipped"}`
          : `skipped: ${missing} did not run`,
        evidence: [],
        fix: null,
        deps: def.deps,
        durationMs: 0,
      };
    } else {
      try {
        const o = await def.run(ctx);
        result = {
          id: def.id,
          builder,
          status: o.status,
          cause: o.status === "pass" || o.status === "skip" ? null : (o.cause ?? null),
          message: o.message,
          evidence: o.evidence ?? [],
          fix: o.status === "pass" || o.status === "skip" ? null : (o.fix ?? null),
          deps: def.deps,
          durationMs: 0,
        };
      } catch (e) {
        // A check that throws is a bug in nix-builders: it fails (and the doctor exits 70), on one line;
        // the stack trace only with --debug.
        const text = e instanceof Error ? e.message : String(e);
        result = {
          id: def.id,
          builder,
          status: "fail",
          cause: null,
          message: `internal error in check: ${text.split("\n")[0]}${opts.debug ? "" : " (run with --debug for the trace)"}`,
          evidence:
            opts.debug && e instanceof Error && e.stack ? [{ what: "exception", result: e.stack }] : [],
          fix: null,
          deps: def.deps,
          durationMs: 0,
          internal: true,
        };
      }
    }
    result.durationMs = Math.round(performance.now() - t0);
    done.set(def.id, result);
    out.push(result);
  }
  return out;
}

/** Run `fn` over `items` with at most `limit` in flight; results in input order. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (x: T, i: number) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}
