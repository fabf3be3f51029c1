/**
 * Read the derivation closure of some roots straight from the store directory, keeping only what
 * `plan` needs per derivation. Files are scanned as bytes by src/nix/drv-scan.ts (the facts-only
 * scanner that agrees with parseDerivation): no text, env Map or args are built.
 *
 * Two readers, measured in bench/RESULTS.md:
 *   - "sync": open/read/close into one shared buffer, usually one read per file, no promise per file;
 *   - "pool": fs.promises.readFile with a pool of `concurrency` reads in flight.
 */
import { closeSync, lstatSync, openSync, readlinkSync, readSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { posix } from "node:path";
import { realPathOf, type StoreLocation } from "../nix/derivation.js";
import { type DrvScan, scanDerivation } from "../nix/drv-scan.js";
import { NixError } from "../nix/errors.js";
import type { PlanNode } from "../nix/plan-graph.js";
import type { DrvFacts, FactsCache } from "./facts-cache.js";

/** One derivation of the closure: the core's plan node (src/nix/plan-graph.ts). */
export type DrvNode = PlanNode;

/** A closure with every derivation numbered, so that graph walks need no string lookups. */
export interface DrvClosure {
  /** Node i is the derivation with id i. */
  readonly nodes: DrvNode[];
  readonly index: Map<string, number>;
  readonly size: number;
  /** All input edges, node after node: the input's id. */
  readonly edges: readonly number[];
  /** Parallel to edges: the outputs wanted from that input (interned, shared: do not mutate). */
  readonly edgeOutputs: readonly (readonly string[])[];
  get(path: string): DrvNode | undefined;
  /** The ids of a node's inputs, in file order. */
  inputsOf(node: DrvNode): number[];
  /** The outputs wanted from each of a node's inputs. */
  inputOutputsOf(node: DrvNode): (readonly string[])[];
}

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
  /**
   * plan's facts cache (src/host/facts-cache.ts): derivations it holds are not read, and those read
   * are recorded in it. The roots are always read from the store, so a root that is gone is an
   * error as without the cache (and a valid root's closure is valid).
   */
  readonly facts?: FactsCache;
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
  /** One-element lists (most input edges want ["out"]), keyed without a join. */
  private readonly singles = new Map<string, readonly string[]>();
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
    if (xs.length === 1) {
      let one = this.singles.get(xs[0]!);
      if (one === undefined) {
        one = Object.freeze([this.str(xs[0]!)]);
        this.singles.set(one[0]!, one);
      }
      return one;
    }
    const key = xs.join("\u0000");
    let v = this.lists.get(key);
    if (v === undefined) {
      v = Object.freeze(xs.map((x) => this.str(x)));
      this.lists.set(flat(key), v);
    }
    return v;
  }
}

/** The growing graph: ids by path, paths in discovery order, edges. */
interface Builder {
  readonly index: Map<string, number>;
  readonly pending: string[];
  readonly edges: number[];
  readonly edgeOutputs: (readonly string[])[];
  readonly intern: Interner;
}

/** The facts plan keeps of a scan. */
function scanFacts(d: DrvScan): DrvFacts {
  return {
    system: d.system,
    requiredFeatures: d.facts.requiredSystemFeatures,
    preferLocalBuild: d.facts.preferLocalBuild,
    isBuiltin: d.facts.isBuiltin,
    outputNames: d.outputNames,
    outputPaths: d.outputPaths,
    inputDrvs: d.inputDrvs,
    inputOutputs: d.inputOutputs,
  };
}

/**
 * One derivation as a node: from the facts cache when it holds it (and it is not a root), walking its
 * record in the table without building its facts; else read from the store (and recorded).
 */
function nodeOf(path: string, isRoot: boolean, o: ReadClosureOptions, g: Builder): DrvNode {
  const facts = o.facts;
  const at = isRoot || facts === undefined ? undefined : facts.find(path);
  if (at === undefined) {
    const f = scanFacts(readScan(path, o.loc));
    facts?.put(path, f);
    return toNode(path, f, g);
  }
  const { ints, strings } = facts!.loaded!;
  const { index, pending, edges, edgeOutputs } = g;
  const nOut = ints[at + 5]!;
  const outputPaths: string[] = new Array(nOut);
  for (let j = 0; j < nOut; j++) {
    const s = ints[at + 6 + j]!;
    outputPaths[j] = s === -1 ? "" : strings[s]!;
  }
  let p = at + 6 + nOut;
  const nIn = ints[p++]!;
  const inputStart = edges.length;
  for (let j = 0; j < nIn; j++, p += 2) {
    const dep = strings[ints[p]!]!;
    let id = index.get(dep);
    if (id === undefined) {
      id = index.size;
      index.set(dep, id);
      pending.push(dep);
    }
    edges.push(id);
    edgeOutputs.push(facts!.list(ints[p + 1]!));
  }
  const flags = ints[at + 2]!;
  return {
    path,
    system: g.intern.str(strings[ints[at + 1]!]!),
    requiredFeatures: facts!.list(ints[at + 3]!),
    preferLocalBuild: (flags & 1) !== 0,
    isBuiltin: (flags & 2) !== 0,
    outputNames: facts!.list(ints[at + 4]!),
    outputPaths,
    inputStart,
    inputEnd: edges.length,
  };
}

function toNode(path: string, d: DrvFacts, g: Builder): DrvNode {
  const deps = d.inputDrvs;
  const { index, pending, edges, edgeOutputs, intern } = g;
  const inputStart = edges.length;
  for (let j = 0; j < deps.length; j++) {
    // The scanner's strings are fresh copies (not slices of the file), so they can be kept as keys.
    const dep = deps[j]!;
    let id = index.get(dep);
    if (id === undefined) {
      id = index.size;
      index.set(dep, id);
      pending.push(dep);
    }
    edges.push(id);
    edgeOutputs.push(intern.list(d.inputOutputs[j]!));
  }
  return {
    path,
    system: intern.str(d.system),
    requiredFeatures: intern.list(d.requiredFeatures),
    preferLocalBuild: d.preferLocalBuild,
    isBuiltin: d.isBuiltin,
    outputNames: intern.list(d.outputNames),
    outputPaths: d.outputPaths,
    inputStart,
    inputEnd: edges.length,
  };
}

/** One shared read buffer (grown when a file does not fit). */
let readBuf = Buffer.allocUnsafe(1 << 20);

function systemError(file: string, e: unknown): NixError {
  return new NixError("system", `getting status of '${file}': ${(e as Error).message}`, { file });
}

/**
 * Read and scan one .drv: open, read, close. A regular file's first read returns all of it, and a
 * successful scan of a prefix is the scan of the whole file (the scanner stops at the closing
 * parenthesis and trailing bytes are ignored), so the read that would return 0 is only made when
 * the scan fails (then the error stands only once the end of the file is reached).
 */
export function readScan(drvPath: string, loc?: StoreLocation): DrvScan {
  const file = realPathOf(drvPath, loc);
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (e) {
    throw systemError(file, e);
  }
  try {
    let n = 0;
    for (;;) {
      let k: number;
      try {
        k = readSync(fd, readBuf, n, readBuf.length - n, null);
      } catch (e) {
        throw systemError(file, e);
      }
      if (k === 0) return scanDerivation(readBuf, 0, n, drvPath);
      n += k;
      if (n === readBuf.length) {
        const bigger = Buffer.allocUnsafe(readBuf.length * 2);
        readBuf.copy(bigger, 0, 0, n);
        readBuf = bigger;
        continue;
      }
      try {
        return scanDerivation(readBuf, 0, n, drvPath);
      } catch {
        // Maybe a short read: read on; the error is given once the end of the file is reached.
      }
    }
  } finally {
    closeSync(fd);
  }
}

function makeClosure(nodes: DrvNode[], g: Builder): DrvClosure {
  const { index, edges, edgeOutputs } = g;
  return {
    nodes,
    index,
    size: nodes.length,
    edges,
    edgeOutputs,
    get: (path) => {
      const i = index.get(path);
      return i === undefined ? undefined : nodes[i];
    },
    inputsOf: (node) => edges.slice(node.inputStart, node.inputEnd),
    inputOutputsOf: (node) => edgeOutputs.slice(node.inputStart, node.inputEnd),
  };
}

async function readSyncClosure(roots: readonly string[], o: ReadClosureOptions): Promise<DrvClosure> {
  const g = start(roots);
  const pending = g.pending;
  const nRoots = pending.length;
  // Ids are handed out in discovery order and derivations read in that order (breadth-first).
  const nodes: DrvNode[] = [];
  const every = o.progressEvery ?? 1000;
  const batchSize = o.batchSize ?? 2000;
  let batchStart = 0;
  while (nodes.length < pending.length) {
    const p = pending[nodes.length]!;
    nodes.push(nodeOf(p, nodes.length < nRoots, o, g));
    if (o.onProgress && nodes.length % every === 0) o.onProgress(nodes.length);
    if (o.onBatch && nodes.length - batchStart >= batchSize) {
      o.onBatch(nodes.slice(batchStart));
      batchStart = nodes.length;
      await new Promise<void>((r) => setImmediate(r));
    }
  }
  if (o.onBatch && nodes.length > batchStart) o.onBatch(nodes.slice(batchStart));
  return makeClosure(nodes, g);
}

function start(roots: readonly string[]): Builder {
  const index = new Map<string, number>();
  const pending: string[] = [];
  for (const r of roots) {
    if (!index.has(r)) {
      index.set(r, index.size);
      pending.push(r);
    }
  }
  return { index, pending, edges: [], edgeOutputs: [], intern: new Interner() };
}

/** Reads in waves of `concurrency` files in flight (fs.promises), parsed in discovery order. */
async function readPoolClosure(roots: readonly string[], o: ReadClosureOptions): Promise<DrvClosure> {
  const g = start(roots);
  const pending = g.pending;
  const nRoots = pending.length;
  const nodes: DrvNode[] = [];
  const width = Math.max(1, o.concurrency ?? 64);
  const every = o.progressEvery ?? 1000;
  while (nodes.length < pending.length) {
    const wave = pending.slice(nodes.length, nodes.length + width);
    const first = nodes.length;
    const cached = wave.map((p, i) => (first + i < nRoots ? undefined : o.facts?.get(p)));
    const texts = await Promise.all(
      wave.map((p, i) => {
        if (cached[i] !== undefined) return null;
        const file = realPathOf(p, o.loc);
        return readFile(file).catch((e: NodeJS.ErrnoException) => {
          throw new NixError("system", `getting status of '${file}': ${e.message}`, { file });
        });
      }),
    );
    const before = nodes.length;
    for (let i = 0; i < wave.length; i++) {
      const buf = texts[i];
      let f = cached[i];
      if (f === undefined) {
        f = scanFacts(scanDerivation(buf!, 0, buf!.length, wave[i]));
        o.facts?.put(wave[i]!, f);
      }
      nodes.push(toNode(wave[i]!, f, g));
      if (o.onProgress && nodes.length % every === 0) o.onProgress(nodes.length);
    }
    o.onBatch?.(nodes.slice(before));
  }
  return makeClosure(nodes, g);
}

/** A closure read on demand: nodes[id] is undefined until read(id) (see BuildWalk of src/nix/plan-graph.ts). */
export interface LazyClosure {
  readonly nodes: readonly (DrvNode | undefined)[];
  /** Every derivation numbered so far (read, or an input of one read) by path. */
  readonly index: Map<string, number>;
  readonly edges: readonly number[];
  readonly edgeOutputs: readonly (readonly string[])[];
  /** Derivations numbered so far. */
  readonly size: number;
  /** Derivations read so far (from the store or the facts cache). */
  readonly read: number;
  /** Read derivation `id` (numbering its inputs). */
  load(id: number): DrvNode;
}

/**
 * The closure of `roots`, read only where asked (plan's top-down walk): a derivation is read from
 * the facts cache or the store when load(id) asks for it, the roots always from the store.
 */
export function lazyClosure(roots: readonly string[], o: ReadClosureOptions = {}): LazyClosure {
  const g = start(roots);
  const nRoots = g.pending.length;
  const nodes: (DrvNode | undefined)[] = [];
  const every = o.progressEvery ?? 1000;
  let read = 0;
  return {
    nodes,
    index: g.index,
    edges: g.edges,
    edgeOutputs: g.edgeOutputs,
    get size() {
      return g.index.size;
    },
    get read() {
      return read;
    },
    load(id) {
      const n = nodeOf(g.pending[id]!, id < nRoots, o, g);
      nodes[id] = n;
      read++;
      if (o.onProgress && read % every === 0) o.onProgress(read);
      return n;
    },
  };
}

/** The closure of `roots` (roots included), every derivation read and parsed once. */
export async function readClosure(
  roots: readonly string[],
  opts: ReadClosureOptions = {},
): Promise<DrvClosure> {
  return (opts.mode ?? "sync") === "sync" ? readSyncClosure(roots, opts) : readPoolClosure(roots, opts);
}

/** Symlink hops before giving up (Nix itself would loop forever on a cycle). */
const MAX_LINK_HOPS = 40;

/**
 * Nix's `Store::followLinksToStorePath` (how `nix show-derivation` and every new-style command decide
 * that an argument containing `/` is a store path): make the argument absolute (lexically, against
 * `cwd`), and while it is not under the logical store directory and is a symlink, replace it by its
 * target (relative targets against the link's directory). A GC root (`nix-instantiate --add-root`),
 * a `result`-style link or a chain of links to a `.drv` thus names that derivation. Returns the
 * store path (the first component under the store directory), or null when the chain ends outside.
 */
export function followLinksToStorePath(arg: string, storeDir: string, cwd = process.cwd()): string | null {
  const inStore = (p: string) => p.startsWith(`${storeDir}/`) && p.length > storeDir.length + 1;
  let path = posix.resolve(cwd, arg);
  for (let hops = 0; !inStore(path); hops++) {
    if (hops > MAX_LINK_HOPS) return null;
    let target: string;
    try {
      if (!lstatSync(path).isSymbolicLink()) break;
      target = readlinkSync(path);
    } catch {
      break;
    }
    path = posix.resolve(posix.dirname(path), target);
  }
  if (!inStore(path)) return null;
  const rest = path.slice(storeDir.length + 1);
  return `${storeDir}/${rest.split("/")[0]}`;
}
