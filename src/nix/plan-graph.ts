/**
 * plan's closure algorithm, pure (docs/plan.md): the order of a derivation closure, which derivations
 * Nix builds (top-down: a derivation whose wanted outputs are all valid is not built, and its inputs
 * are not looked at), and where each one to build goes (routing ignores load). The reading of the
 * closure and the questions to the store are the caller's (src/app/plan.ts).
 */
import { type RouteLocal, type RouteMachine, type RouteResult, route } from "./route.js";
import type { NixVersion } from "./version.js";

/** One derivation of the closure, as plan keeps it. */
export interface PlanNode {
  readonly path: string;
  readonly system: string;
  /** Interned (the same array for the same list), so that routing can be memoised by identity. */
  readonly requiredFeatures: readonly string[];
  readonly preferLocalBuild: boolean;
  readonly isBuiltin: boolean;
  readonly outputNames: readonly string[];
  /** Parallel to outputNames; "" when not known in advance (floating CA, deferred, impure). */
  readonly outputPaths: readonly string[];
  /** Its input derivations are `edges[inputStart .. inputEnd)` of the graph. */
  readonly inputStart: number;
  readonly inputEnd: number;
}

/** A closure with every derivation numbered (node i has id i). */
export interface PlanGraph {
  readonly nodes: readonly PlanNode[];
  /** All input edges, node after node: the input's id. */
  readonly edges: readonly number[];
  /** Parallel to edges: the outputs wanted from that input. */
  readonly edgeOutputs: readonly (readonly string[])[];
}

/**
 * Post-order (inputs first) of the closure of `rootIds`, iteratively. With `only`, the walk enters
 * only derivations with only[id] = 1 (e.g. those to build: their inputs are read).
 */
export function postOrder(g: PlanGraph, rootIds: readonly number[], only?: Uint8Array): Int32Array {
  const { nodes, edges } = g;
  const N = nodes.length;
  const post = new Int32Array(N);
  let len = 0;
  const seen = new Uint8Array(N);
  const stackNode = new Int32Array(N);
  const stackPos = new Int32Array(N);
  for (const rid of rootIds) {
    if (seen[rid] || (only !== undefined && !only[rid])) continue;
    seen[rid] = 1;
    let sp = 0;
    stackNode[0] = rid;
    stackPos[0] = nodes[rid]!.inputStart;
    while (sp >= 0) {
      const i = stackPos[sp]!;
      if (i < nodes[stackNode[sp]!]!.inputEnd) {
        stackPos[sp] = i + 1;
        const dep = edges[i]!;
        if (!seen[dep] && (only === undefined || only[dep])) {
          seen[dep] = 1;
          sp++;
          stackNode[sp] = dep;
          stackPos[sp] = nodes[dep]!.inputStart;
        }
      } else {
        post[len++] = stackNode[sp]!;
        sp--;
      }
    }
  }
  return post.subarray(0, len);
}

/**
 * What is known of output `output` (path `path`) of derivation `id`: true valid, false not valid,
 * undefined not known yet (the caller asks the store about those and calls BuildWalk.step again).
 */
export type PathValidity = (path: string, id: number, output: number) => boolean | undefined;

/** A closure read as the walk goes: nodes[id] is undefined until read(id). */
export interface GrowingGraph {
  readonly nodes: readonly (PlanNode | undefined)[];
  readonly edges: readonly number[];
  readonly edgeOutputs: readonly (readonly string[])[];
}

/**
 * Which derivations Nix builds, top-down, reading the closure only as far as Nix would look.
 * Wanted outputs flow from the roots (all outputs) to the inputs (the outputs listed in inputDrvs), as
 * a bit mask per derivation (-1: all). A derivation is built when one of its wanted outputs is not
 * valid (an output whose path is not known in advance counts as not valid); then its inputs are
 * wanted. When all are valid its inputs are never looked at. A worklist: a derivation is read when
 * an output of it is first wanted; masks only grow and "built" is never undone, so the result does
 * not depend on the order (the least fixpoint: a derivation is built iff an output wanted by a root
 * or by a built derivation is not valid). step() walks as far as what is known allows and returns the output paths whose
 * validity it needs (empty: done); the caller asks and calls step() again.
 */
export class BuildWalk {
  private readonly mask: number[] = [];
  private readonly built: number[] = [];
  private queue: number[] = [];
  private pending: number[] = [];
  toBuild = 0;

  constructor(rootIds: readonly number[]) {
    for (const r of rootIds) {
      this.mask[r] = -1;
      this.queue.push(r);
    }
  }

  step(g: GrowingGraph, read: (id: number) => PlanNode, isValid: PathValidity): string[] {
    const { mask, built, queue } = this;
    for (const id of this.pending) queue.push(id);
    this.pending = [];
    const unknown = new Set<string>();
    while (queue.length > 0) {
      const id = queue.pop()!;
      if (built[id] === 1) continue;
      const node = g.nodes[id] ?? read(id);
      const w = mask[id]!;
      const paths = node.outputPaths;
      let needed = false;
      let pending = false;
      for (let j = 0; j < paths.length && !needed; j++) {
        if (w !== -1 && (j > 30 || (w & (1 << j)) === 0)) continue;
        const p = paths[j]!;
        const v = p === "" ? false : isValid(p, id, j);
        if (v === false) needed = true;
        else if (v === undefined) pending = true;
      }
      if (!needed) {
        if (!pending) continue;
        this.pending.push(id);
        for (let j = 0; j < paths.length; j++) {
          if (w !== -1 && (j > 30 || (w & (1 << j)) === 0)) continue;
          if (isValid(paths[j]!, id, j) === undefined) unknown.add(paths[j]!);
        }
        continue;
      }
      built[id] = 1;
      this.toBuild++;
      const { edges, edgeOutputs, nodes } = g;
      for (let j = node.inputStart; j < node.inputEnd; j++) {
        const dep = edges[j]!;
        const old = mask[dep] ?? 0;
        if (old === -1) continue;
        const outs = edgeOutputs[j]!;
        const depNode = nodes[dep] ?? read(dep);
        const names = depNode.outputNames;
        let m = old;
        for (let k = 0; k < outs.length; k++) {
          const o = outs[k]!;
          const x = names.length === 1 && names[0] === o ? 0 : names.indexOf(o);
          if (x < 0) continue;
          m = x > 30 ? -1 : m | (1 << x);
          if (m === -1) break;
        }
        if (m !== old) {
          mask[dep] = m;
          queue.push(dep);
        }
      }
    }
    return [...unknown];
  }

  /** Once step() returned nothing: which derivations are built, and how many were looked at. */
  result(size: number): { build: Uint8Array; toBuild: number; valid: number } {
    const build = new Uint8Array(size);
    let looked = 0;
    for (let id = 0; id < size; id++) {
      if (this.built[id] === 1) build[id] = 1;
      if ((this.mask[id] ?? 0) !== 0) looked++;
    }
    return { build, toBuild: this.toBuild, valid: looked - this.toBuild };
  }
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

/** What routing needs of the context. */
export interface PlanRouting {
  readonly version: NixVersion;
  readonly machines: readonly RouteMachine[];
  readonly local: RouteLocal;
}

export interface Routed {
  /** Sorted: most derivations first, "local" last. */
  readonly builders: BuilderSummary[];
  /** Sorted by path. */
  readonly unbuildable: Unbuildable[];
  /** Derivations that could be built but depend (transitively) on an unbuildable one. */
  readonly blocked: number;
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

function decide(ctx: PlanRouting, node: PlanNode): Decided {
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
  return {
    builder,
    kind: unbuildableKind,
    reason: builder === null ? reasonText(r, unbuildableKind) : "",
    message: r.decision.message ?? "",
  };
}

/**
 * Route each derivation to build as if every slot were free, and count those blocked by an
 * unbuildable input. Decisions depend only on (system, features, preferLocalBuild, builtin) apart
 * from the messages: memoised on that, with systems and feature lists keyed by identity.
 */
export function routeBuilds(
  g: PlanGraph,
  order: Int32Array,
  build: Uint8Array,
  ctx: PlanRouting,
  onRouted?: (n: number) => void,
): Routed {
  const { nodes, edges } = g;
  const memo = new Map<string, Map<readonly string[], (Decided | undefined)[]>>();
  const summaries = new Map<string, BuilderSummary>();
  const unbuildable: Unbuildable[] = [];
  const bad = new Uint8Array(nodes.length);
  let routed = 0;
  for (let k = 0; k < order.length; k++) {
    const id = order[k]!;
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
      m = decide(ctx, node);
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
    if (onRouted && routed % 5000 === 0) onRouted(routed);
  }
  // Blocked: buildable, but an input (transitively) cannot be built. Post-order sees inputs first.
  let blocked = 0;
  for (let k = 0; k < order.length; k++) {
    const id = order[k]!;
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
  const builders = [...summaries.values()].sort((a, b) =>
    a.builder === "local"
      ? 1
      : b.builder === "local"
        ? -1
        : b.count - a.count || (a.builder < b.builder ? -1 : 1),
  );
  unbuildable.sort((a, b) => (a.drvPath < b.drvPath ? -1 : a.drvPath > b.drvPath ? 1 : 0));
  return { builders, unbuildable, blocked };
}
