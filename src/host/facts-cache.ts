import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { join } from "node:path";
import * as v8 from "node:v8";
import { type CacheScope, cacheDir, writePrivateFile } from "./cache.js";

/** What plan keeps per derivation (the parts of a DrvScan it uses). */
export interface DrvFacts {
  readonly system: string;
  readonly requiredFeatures: readonly string[];
  readonly preferLocalBuild: boolean;
  readonly isBuiltin: boolean;
  readonly outputNames: readonly string[];
  /** Parallel to outputNames; "" when not known in advance. */
  readonly outputPaths: readonly string[];
  readonly inputDrvs: readonly string[];
  /** Parallel to inputDrvs. */
  readonly inputOutputs: readonly (readonly string[])[];
}

/** Bumped whenever the file format or the meaning of a fact changes: older files are then a miss. */
export const FACTS_FORMAT = 3;
/** First field of the serialised document: says what the file is. */
const MAGIC = "nix-builders plan facts";
/** A larger file is not ours (20,000 derivations take about 4 MB). */
export const MAX_FACTS_BYTES = 256 * 1024 * 1024;
/** At most this many derivations are kept; over it, only those of the last run stay. */
export const MAX_FACTS_ENTRIES = 1_000_000;

export interface FactsCacheStats {
  /** Derivations in the file when it was loaded. */
  loaded: number;
  /** Derivations answered from the file. */
  hits: number;
  /** Derivations read from the store (roots included). */
  misses: number;
  /** Why the file was not used, when it was not (missing, not ours, damaged, other format). */
  unusable: string | null;
  /** Whether save() wrote the file. */
  written: boolean;
  loadMs: number;
}

/** The decoded file: string and list tables plus, per derivation path, where its record starts. */
export interface Table {
  strings: string[];
  ints: Int32Array;
  /** Start of each list in ints. */
  listAt: Int32Array;
  /** Where the list table ends and the node table starts in ints. */
  listEnd: number;
  /** Path → offset of its node record in ints. */
  nodes: Map<string, number>;
  /** Decoded lists, materialised on first use (frozen, shared). */
  lists: (readonly string[] | undefined)[];
}

const NO_STRINGS: readonly string[] = Object.freeze([]);

function readOwnFile(file: string, uid: number): Buffer | string {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ENOENT" ? "missing" : "unreadable";
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return "not a regular file";
    if (st.uid !== uid || (st.mode & 0o022) !== 0) return "not owned by this user, or writable by others";
    if (st.size > MAX_FACTS_BYTES) return "too large";
    // A buffer of its own (never a slice of Node's pool): Node 20's v8.deserialize misreads a view
    // that does not start at offset 0 of its ArrayBuffer.
    const buf = Buffer.allocUnsafeSlow(st.size);
    let n = 0;
    while (n < buf.length) {
      const r = readSync(fd, buf, n, buf.length - n, null);
      if (r === 0) break;
      n += r;
    }
    return n === buf.length ? buf : "changed while read";
  } catch {
    return "unreadable";
  } finally {
    closeSync(fd);
  }
}

/** The header of a facts file. */
export interface FactsHeader {
  format: number;
  storeDir: string;
  strings: number;
  lists: number;
  ints: number;
  nodes: number;
}

function isHeader(h: unknown): h is FactsHeader {
  if (!h || typeof h !== "object") return false;
  const o = h as Record<string, unknown>;
  const nat = (x: unknown) => typeof x === "number" && Number.isInteger(x) && x >= 0;
  return (
    nat(o["format"]) &&
    typeof o["storeDir"] === "string" &&
    nat(o["strings"]) &&
    nat(o["lists"]) &&
    nat(o["ints"]) &&
    nat(o["nodes"])
  );
}

/** Decode a facts file; a string saying why when it is not one this code wrote. */
export function decodeFacts(buf: Buffer, storeDir: string): Table | string {
  let doc: unknown;
  try {
    doc = v8.deserialize(buf);
  } catch {
    return "not a facts file";
  }
  if (!doc || typeof doc !== "object" || (doc as { magic?: unknown }).magic !== MAGIC)
    return "not a facts file";
  const { header, strings, ints } = doc as { header?: unknown; strings?: unknown; ints?: unknown };
  if (!isHeader(header)) return "damaged";
  if (header.format !== FACTS_FORMAT) return "another format";
  if (header.storeDir !== storeDir) return "another store";
  if (!Array.isArray(strings) || !(ints instanceof Int32Array)) return "damaged";
  for (const x of strings) if (typeof x !== "string") return "damaged";
  return indexFacts(header, strings as string[], ints);
}

/**
 * Check the tables (every id in range, every record within bounds) and index the derivations by
 * path. Shared by the file format and the alternatives the benchmark compares it with.
 */
export function indexFacts(header: FactsHeader, strings: string[], ints: Int32Array): Table | string {
  if (strings.length !== header.strings || ints.length !== header.ints) return "damaged";
  const S = strings.length;
  const okString = (x: number | undefined) => x !== undefined && x >= 0 && x < S;
  const listAt = new Int32Array(header.lists);
  let p = 0;
  for (let l = 0; l < header.lists; l++) {
    listAt[l] = p;
    const len = ints[p];
    if (len === undefined || len < 0 || p + 1 + len > ints.length) return "damaged";
    for (let k = 1; k <= len; k++) if (!okString(ints[p + k])) return "damaged";
    p += 1 + len;
  }
  const listEnd = p;
  const L = listAt.length;
  const okList = (x: number | undefined) => x !== undefined && x >= 0 && x < L;
  const nodes = new Map<string, number>();
  for (let k = 0; k < header.nodes; k++) {
    const at = p;
    if (p + 6 > ints.length) return "damaged";
    if (!okString(ints[p]) || !okString(ints[p + 1]) || !okList(ints[p + 3]) || !okList(ints[p + 4]))
      return "damaged";
    const nOut = ints[p + 5]!;
    p += 6;
    if (nOut < 0 || p + nOut + 1 > ints.length) return "damaged";
    for (let j = 0; j < nOut; j++) if (ints[p + j] !== -1 && !okString(ints[p + j])) return "damaged";
    p += nOut;
    const nIn = ints[p]!;
    p += 1;
    if (nIn < 0 || p + 2 * nIn > ints.length) return "damaged";
    for (let j = 0; j < nIn; j++)
      if (!okString(ints[p + 2 * j]) || !okList(ints[p + 2 * j + 1])) return "damaged";
    p += 2 * nIn;
    nodes.set(strings[ints[at]!]!, at);
  }
  if (p !== ints.length) return "damaged";
  return { strings, ints, listAt, listEnd, nodes, lists: new Array(L) };
}

/** The parts of a facts file: header, strings and ints (for the format comparison in bench/). */
export function factsParts(buf: Buffer): { header: FactsHeader; strings: string[]; ints: Int32Array } | null {
  try {
    return v8.deserialize(buf) as {
      header: FactsHeader;
      strings: string[];
      ints: Int32Array;
    };
  } catch {
    return null;
  }
}

/**
 * Encode derivation facts as the file format above. With `base` (a table loaded from the file), the
 * result holds every derivation of `base` and then `entries` (which must not repeat one of base's
 * paths): base's tables are copied as they are and the new strings, lists and nodes appended, so a
 * run that read a few derivations pays for those, not for re-encoding the whole file.
 */
export function encodeFacts(entries: Iterable<[string, DrvFacts]>, storeDir: string, base?: Table): Buffer {
  const strings: string[] = base ? base.strings.slice() : [];
  const stringIds = new Map<string, number>();
  const str = (s: string) => {
    let id = stringIds.get(s);
    if (id === undefined) {
      id = strings.length;
      strings.push(s);
      stringIds.set(s, id);
    }
    return id;
  };
  const listIds = new Map<string, number>();
  const listInts: number[] = [];
  let nLists = base ? base.listAt.length : 0;
  const list = (xs: readonly string[]) => {
    const ids = xs.map(str);
    const key = ids.join(",");
    let id = listIds.get(key);
    if (id === undefined) {
      id = nLists++;
      listIds.set(key, id);
      listInts.push(ids.length, ...ids);
    }
    return id;
  };
  const nodeInts: number[] = [];
  let nNodes = base ? base.nodes.size : 0;
  for (const [path, f] of entries) {
    nNodes++;
    nodeInts.push(
      str(path),
      str(f.system),
      (f.preferLocalBuild ? 1 : 0) | (f.isBuiltin ? 2 : 0),
      list(f.requiredFeatures),
      list(f.outputNames),
      f.outputPaths.length,
    );
    for (const o of f.outputPaths) nodeInts.push(o === "" ? -1 : str(o));
    nodeInts.push(f.inputDrvs.length);
    for (let j = 0; j < f.inputDrvs.length; j++)
      nodeInts.push(str(f.inputDrvs[j]!), list(f.inputOutputs[j]!));
  }
  const baseLists = base ? base.ints.subarray(0, base.listEnd) : new Int32Array(0);
  const baseNodes = base ? base.ints.subarray(base.listEnd) : new Int32Array(0);
  const ints = new Int32Array(baseLists.length + listInts.length + baseNodes.length + nodeInts.length);
  ints.set(baseLists, 0);
  ints.set(listInts, baseLists.length);
  ints.set(baseNodes, baseLists.length + listInts.length);
  ints.set(nodeInts, baseLists.length + listInts.length + baseNodes.length);
  const header: FactsHeader = {
    format: FACTS_FORMAT,
    storeDir,
    strings: strings.length,
    lists: nLists,
    ints: ints.length,
    nodes: nNodes,
  };
  return v8.serialize({ magic: MAGIC, header, strings, ints });
}

/** A string that cannot be kept (the format separates strings by NUL). */
function storable(f: DrvFacts, path: string): boolean {
  const ok = (s: string) => !s.includes("\0");
  return (
    ok(path) &&
    ok(f.system) &&
    f.requiredFeatures.every(ok) &&
    f.outputNames.every(ok) &&
    f.outputPaths.every(ok) &&
    f.inputDrvs.every(ok) &&
    f.inputOutputs.every((l) => l.every(ok))
  );
}

export interface FactsCacheOptions extends CacheScope {
  /** The logical store directory the derivation paths are under (part of the file's key). */
  storeDir: string;
  /** The directory to use instead of the user's cache directory (tests). */
  dir?: string;
  /** At most this many derivations in the file (default MAX_FACTS_ENTRIES). */
  maxEntries?: number;
}

/**
 * The facts cache of one plan run: `get` answers from the file, `put` records what was read from the
 * store, and `save` writes the file when this run learnt something. The file is loaded at the first
 * look-up (or when `stats` is read): a plan that reads only its roots (a built closure) never loads it.
 */
export class FactsCache {
  private readonly counters: FactsCacheStats = {
    loaded: 0,
    hits: 0,
    misses: 0,
    unusable: null,
    written: false,
    loadMs: 0,
  };
  /** undefined until loaded. */
  private loadedTable: Table | null | undefined = undefined;
  private readonly fresh = new Map<string, DrvFacts>();
  /** used[at] = 1: the record at `at` of the table was used by this run (kept over the cap). */
  private used: Uint8Array | null = null;
  private readonly file: string | null;

  constructor(private readonly opts: FactsCacheOptions) {
    const dir = opts.dir ?? cacheDir(opts);
    this.file = dir === null ? null : join(dir, `plan-facts-${storeKey(opts.storeDir)}.bin`);
  }

  /** The counters, once the file is loaded (reading them loads it). */
  get stats(): FactsCacheStats {
    void this.table;
    return this.counters;
  }

  /** Hits and misses so far, without loading the file. */
  counts(): { hits: number; misses: number } {
    return { hits: this.counters.hits, misses: this.counters.misses };
  }

  private get table(): Table | null {
    if (this.loadedTable !== undefined) return this.loadedTable;
    const t0 = performance.now();
    let table: Table | null = null;
    if (this.file === null) this.counters.unusable = "no safe cache directory";
    else {
      const buf = readOwnFile(this.file, this.opts.uid ?? process.getuid?.() ?? -1);
      const t = typeof buf === "string" ? buf : decodeFacts(buf, this.opts.storeDir);
      if (typeof t === "string") this.counters.unusable = t;
      else {
        table = t;
        this.counters.loaded = t.nodes.size;
      }
    }
    this.loadedTable = table;
    this.counters.loadMs = performance.now() - t0;
    return table;
  }

  /** The cache file's path, or null when there is no safe cache directory. */
  get path(): string | null {
    return this.file;
  }

  private markUsed(at: number): void {
    this.used ??= new Uint8Array(this.table!.ints.length);
    this.used[at] = 1;
  }

  /** The loaded table (for walking it without materialising a derivation: src/host/closure.ts). */
  get loaded(): Table | null {
    return this.table;
  }

  /**
   * Where the record of `path` starts in the loaded table's ints (a hit), or undefined (a miss).
   * The record: path, system, flags (1 preferLocalBuild, 2 builtin), features list, output names
   * list, output count, output paths (-1: not known in advance), input count, (input, outputs list)
   * pairs; strings and lists are ids (list(id) gives a list).
   */
  find(path: string): number | undefined {
    const at = this.table?.nodes.get(path);
    if (at === undefined) return undefined;
    this.counters.hits++;
    this.markUsed(at);
    return at;
  }

  /** A list of the loaded table, decoded once (frozen, shared). */
  list(id: number): readonly string[] {
    const t = this.table!;
    let v = t.lists[id];
    if (v === undefined) {
      const at = t.listAt[id]!;
      const len = t.ints[at]!;
      if (len === 0) v = NO_STRINGS;
      else {
        const xs: string[] = new Array(len);
        for (let k = 0; k < len; k++) xs[k] = t.strings[t.ints[at + 1 + k]!]!;
        v = Object.freeze(xs);
      }
      t.lists[id] = v;
    }
    return v;
  }

  get(path: string): DrvFacts | undefined {
    const at = this.find(path);
    if (at === undefined) return undefined;
    const { ints, strings } = this.table!;
    let p = at;
    const system = strings[ints[p + 1]!]!;
    const flags = ints[p + 2]!;
    const requiredFeatures = this.list(ints[p + 3]!);
    const outputNames = this.list(ints[p + 4]!);
    const nOut = ints[p + 5]!;
    p += 6;
    const outputPaths: string[] = new Array(nOut);
    for (let j = 0; j < nOut; j++) {
      const s = ints[p + j]!;
      outputPaths[j] = s === -1 ? "" : strings[s]!;
    }
    p += nOut;
    const nIn = ints[p]!;
    p += 1;
    const inputDrvs: string[] = new Array(nIn);
    const inputOutputs: (readonly string[])[] = new Array(nIn);
    for (let j = 0; j < nIn; j++) {
      inputDrvs[j] = strings[ints[p + 2 * j]!]!;
      inputOutputs[j] = this.list(ints[p + 2 * j + 1]!);
    }
    return {
      system,
      requiredFeatures,
      preferLocalBuild: (flags & 1) !== 0,
      isBuiltin: (flags & 2) !== 0,
      outputNames,
      outputPaths,
      inputDrvs,
      inputOutputs,
    };
  }

  /** Record the facts of a derivation read from the store in this run. */
  put(path: string, facts: DrvFacts): void {
    this.counters.misses++;
    // A root is always read, and one the file holds teaches nothing. Roots come before any look-up:
    // then the file is not loaded, and save() drops those it holds.
    const at = this.loadedTable?.nodes.get(path);
    if (at !== undefined) {
      this.markUsed(at);
      return;
    }
    if (storable(facts, path)) this.fresh.set(path, facts);
  }

  /**
   * Write the file when this run read derivations that it did not hold (a run that changes nothing
   * writes nothing). Kept: every derivation of the old file, then the new ones; over
   * MAX_FACTS_ENTRIES, only the derivations of this run. Failing to write only costs time.
   */
  save(): void {
    // Not loaded: nothing but roots was read, and a root alone is not worth loading the file for.
    if (this.file === null || this.fresh.size === 0 || this.loadedTable === undefined) return;
    const t = this.table;
    if (t !== null)
      for (const path of [...this.fresh.keys()]) {
        const at = t.nodes.get(path);
        if (at === undefined) continue;
        this.markUsed(at);
        this.fresh.delete(path);
      }
    if (this.fresh.size === 0) return;
    const old = t === null ? 0 : t.nodes.size;
    const keepAll = old + this.fresh.size <= (this.opts.maxEntries ?? MAX_FACTS_ENTRIES);
    const self = this;
    function* entries(): Generator<[string, DrvFacts]> {
      if (t !== null)
        for (const [path, at] of t.nodes) {
          if (!keepAll && self.used?.[at] !== 1) continue;
          if (self.fresh.has(path)) continue;
          const f = self.peek(path);
          if (f !== undefined) yield [path, f];
        }
      yield* self.fresh;
    }
    // Usually: append the new derivations to the loaded tables. Over the cap: only this run's.
    const buf =
      t !== null && keepAll
        ? encodeFacts(this.fresh, this.opts.storeDir, t)
        : encodeFacts(entries(), this.opts.storeDir);
    if (buf.length > MAX_FACTS_BYTES) return;
    this.counters.written = writePrivateFile(this.file, buf);
  }

  /** get() without counting it as a hit. */
  private peek(path: string): DrvFacts | undefined {
    const hits = this.counters.hits;
    const f = this.get(path);
    this.counters.hits = hits;
    return f;
  }
}

/** A short stable name for a store directory (the default store gets a readable one). */
function storeKey(storeDir: string): string {
  if (storeDir === "/nix/store") return "nix-store";
  let h = 0x811c9dc5;
  for (let i = 0; i < storeDir.length; i++) h = Math.imul(h ^ storeDir.charCodeAt(i), 0x01000193) >>> 0;
  return `store-${h.toString(16).padStart(8, "0")}`;
}
