/**
 * Read the derivation closure of some roots straight from the store directory, keeping only what
 * `plan` needs per derivation (the parsed environment and arguments are dropped at once).
 *
 * Two readers, measured in bench/RESULTS.md:
 *   - "sync": readFileSync-style loop with one shared buffer (readDerivation), no promise per file;
 *   - "pool": fs.promises.readFile with a pool of `concurrency` reads in flight.
 */
import { readFile } from "node:fs/promises";
import {
  type ParsedDerivation,
  parseDerivation,
  readDerivation,
  realPathOf,
  type StoreLocation,
} from "../nix/derivation.js";
import { NixError } from "../nix/errors.js";

export interface DrvNode {
  readonly path: string;
  readonly system: string;
  /** Required features as Nix computes them (incl. ca-derivations). Shared arrays: do not mutate. */
  readonly requiredFeatures: readonly string[];
  readonly preferLocalBuild: boolean;
  readonly isBuiltin: boolean;
  /** Output names, in file order. */
  readonly outputNames: readonly string[];
  /** Output paths, parallel to outputNames; "" when not known in advance (CA, deferred, impure). */
  readonly outputPaths: readonly string[];
  /** The input derivations, as indices into the closure's `nodes`. */
  readonly inputIds: Int32Array;
  /** Parallel to inputIds: the outputs wanted from each input. */
  readonly inputOutputs: readonly (readonly string[])[];
}

/** A closure with every derivation numbered, so that graph walks need no string lookups. */
export interface DrvClosure {
  /** Node i is the derivation with id i. */
  readonly nodes: DrvNode[];
  readonly index: Map<string, number>;
  readonly size: number;
  get(path: string): DrvNode | undefined;
}

const NO_IDS = new Int32Array(0);

export type ReadMode = "sync" | "pool";

export interface ReadClosureOptions {
  readonly loc?: StoreLocation;
  readonly mode?: ReadMode;
  /** Reads in flight for the pool reader (default 64). */
  readonly concurrency?: number;
  /** Called every `progressEvery` derivations with the count read so far. */
  readonly onProgress?: (read: number) => void;
  readonly progressEvery?: number;
  /**
   * Sync reader only: called with each batch of `batchSize` new derivations, after which the reader
   * yields to the event loop once (so that work started on a batch, e.g. a validity query to a
   * daemon, proceeds while the next batch is read).
   */
  readonly onBatch?: (nodes: DrvNode[]) => void;
  readonly batchSize?: number;
}

/**
 * A copy of `s` that does not keep its parent alive. Substrings of 13+ characters are V8 "sliced
 * strings" pointing into the whole .drv text; keeping one would keep every file's text in memory
 * (and make every young-generation GC copy it).
 */
function flat(s: string): string {
  return ` ${s}`.slice(1);
}

/** Systems and feature lists repeat: share one copy of each. */
class Interner {
  private readonly strings = new Map<string, string>();
  private readonly lists = new Map<string, readonly string[]>();
  str(s: string): string {
    let v = this.strings.get(s);
    if (v === undefined) {
      v = flat(s);
      this.strings.set(v, v);
    }
    return v;
  }
  list(xs: readonly string[]): readonly string[] {
    if (xs.length === 0 || Object.isFrozen(xs)) return xs;
    const key = xs.join("\u0000");
    let v = this.lists.get(key);
    if (v === undefined) {
      v = Object.freeze(xs.map((x) => this.str(x)));
      this.lists.set(flat(key), v);
    }
    return v;
  }
}

function toNode(
  path: string,
  d: ParsedDerivation,
  index: Map<string, number>,
  pending: string[],
  intern: Interner,
): DrvNode {
  const outputNames: string[] = [];
  const outputPaths: string[] = [];
  for (const [name, o] of d.outputs) {
    outputNames.push(intern.str(name));
    outputPaths.push(o.path === "" ? "" : flat(o.path));
  }
  const n = d.inputDrvs.size;
  const inputIds = n === 0 ? NO_IDS : new Int32Array(n);
  const inputOutputs: (readonly string[])[] = [];
  let j = 0;
  for (const [dep, outs] of d.inputDrvs) {
    let id = index.get(dep);
    if (id === undefined) {
      const key = flat(dep);
      id = index.size;
      index.set(key, id);
      pending.push(key);
    }
    inputIds[j++] = id;
    inputOutputs.push(intern.list(outs));
  }
  return {
    path,
    system: intern.str(d.system),
    requiredFeatures: intern.list(d.facts.requiredSystemFeatures),
    preferLocalBuild: d.facts.preferLocalBuild,
    isBuiltin: d.facts.isBuiltin,
    outputNames,
    outputPaths,
    inputOutputs,
    inputIds,
  };
}

function makeClosure(nodes: DrvNode[], index: Map<string, number>): DrvClosure {
  return {
    nodes,
    index,
    size: nodes.length,
    get: (path) => {
      const i = index.get(path);
      return i === undefined ? undefined : nodes[i];
    },
  };
}

async function readSyncClosure(roots: readonly string[], o: ReadClosureOptions): Promise<DrvClosure> {
  const { index, pending } = start(roots);
  const intern = new Interner();
  // Ids are handed out in discovery order and derivations read in that order (breadth-first).
  const nodes: DrvNode[] = [];
  const every = o.progressEvery ?? 1000;
  const batchSize = o.batchSize ?? 2000;
  let batchStart = 0;
  while (nodes.length < pending.length) {
    const p = pending[nodes.length]!;
    nodes.push(toNode(p, readDerivation(p, o.loc), index, pending, intern));
    if (o.onProgress && nodes.length % every === 0) o.onProgress(nodes.length);
    if (o.onBatch && nodes.length - batchStart >= batchSize) {
      o.onBatch(nodes.slice(batchStart));
      batchStart = nodes.length;
      await new Promise<void>((r) => setImmediate(r));
    }
  }
  if (o.onBatch && nodes.length > batchStart) o.onBatch(nodes.slice(batchStart));
  return makeClosure(nodes, index);
}

function start(roots: readonly string[]): { index: Map<string, number>; pending: string[] } {
  const index = new Map<string, number>();
  const pending: string[] = [];
  for (const r of roots) {
    if (!index.has(r)) {
      index.set(r, index.size);
      pending.push(r);
    }
  }
  return { index, pending };
}

/** Reads in waves of `concurrency` files in flight (fs.promises), parsed in discovery order. */
async function readPoolClosure(roots: readonly string[], o: ReadClosureOptions): Promise<DrvClosure> {
  const { index, pending } = start(roots);
  const intern = new Interner();
  const nodes: DrvNode[] = [];
  const width = Math.max(1, o.concurrency ?? 64);
  const every = o.progressEvery ?? 1000;
  while (nodes.length < pending.length) {
    const wave = pending.slice(nodes.length, nodes.length + width);
    const texts = await Promise.all(
      wave.map((p) => {
        const file = realPathOf(p, o.loc);
        return readFile(file, "utf8").catch((e: NodeJS.ErrnoException) => {
          throw new NixError("system", `getting status of '${file}': ${e.message}`, { file });
        });
      }),
    );
    const before = nodes.length;
    for (let i = 0; i < wave.length; i++) {
      nodes.push(toNode(wave[i]!, parseDerivation(texts[i]!, wave[i]), index, pending, intern));
      if (o.onProgress && nodes.length % every === 0) o.onProgress(nodes.length);
    }
    o.onBatch?.(nodes.slice(before));
  }
  return makeClosure(nodes, index);
}

/** The closure of `roots` (roots included), every derivation read and parsed once. */
export async function readClosure(
  roots: readonly string[],
  opts: ReadClosureOptions = {},
): Promise<DrvClosure> {
  return (opts.mode ?? "sync") === "sync" ? readSyncClosure(roots, opts) : readPoolClosure(roots, opts);
}
