/**
 * A facts-only scanner for `.drv` files, for `plan`: it walks the bytes of the ATerm once and keeps
 * only what routing and the closure walk need (outputs, input derivations, system and the facts of
 * `parseDerivation`), without decoding the file to a string, building the env Map or the args.
 *
 * Contract: for every input, `scanDerivation(bytes)` agrees with `parseDerivation(bytes as UTF-8)`:
 * the same outputs (first of duplicate names kept), input derivations (order of first appearance,
 * outputs of the last), system and facts, or a NixError with the same message (checked by
 * test/unit/drv-scan.test.ts on generated closures, real drvs and fast-check mutations).
 *
 * Why bytes give the same answer as the decoded text: every delimiter of the format is ASCII, and a
 * UTF-8 decoder never swallows an ASCII byte into a multi-byte sequence, so the structure seen on
 * bytes is the structure seen on the text, and a string decoded on its own equals the same string
 * cut out of the decoded file. Strings are decoded only when needed (latin1 when all bytes are
 * ASCII, UTF-8 otherwise), which also makes them independent of the file buffer.
 */
import {
  byCodeUnit,
  type DerivationFacts,
  type DerivationType,
  type OutputKind,
  tokenize,
} from "./derivation.js";
import { NixError } from "./errors.js";

/** What plan needs from one derivation. Arrays are parallel; shared ones are frozen. */
export interface DrvScan {
  /** Output names in file order, first of duplicates kept. */
  readonly outputNames: readonly string[];
  /** Output paths, parallel to outputNames; "" when not known in advance. */
  readonly outputPaths: readonly string[];
  readonly outputHashAlgos: readonly string[];
  readonly outputHashes: readonly string[];
  /** Input derivation paths, in order of first appearance. */
  readonly inputDrvs: readonly string[];
  /** Parallel to inputDrvs: the wanted outputs (of the last occurrence, as a Map would keep). */
  readonly inputOutputs: readonly (readonly string[])[];
  readonly system: string;
  readonly facts: DerivationFacts;
}

const QUOTE = 34; // "
const COMMA = 44; // ,
const LBRACKET = 91; // [
const RBRACKET = 93; // ]
const LPAREN = 40; // (
const RPAREN = 41; // )
const BACKSLASH = 92;
const SLASH = 47;

const DERIVE = Buffer.from("Derive([", "latin1");
const WITH_VERSION = Buffer.from("DrvWithVersion(", "latin1");
const BUILTIN = Buffer.from("builtin:", "latin1");
const K_FEATURES = Buffer.from("requiredSystemFeatures", "latin1");
const K_PREFER = Buffer.from("preferLocalBuild", "latin1");
const K_JSON = Buffer.from("__json", "latin1");

const OUT = "out";
const OUT_LIST: readonly string[] = Object.freeze([OUT]);
const NO_STRINGS: readonly string[] = Object.freeze([]);
const NO_LISTS: readonly (readonly string[])[] = Object.freeze([]);
const NO_FEATURES: readonly string[] = Object.freeze([]);
const CA_ONLY: readonly string[] = Object.freeze(["ca-derivations"]);

const EMPTY = Buffer.alloc(0);
/** The common case of one output that is not fixed: no hash algorithm, no hash. */
const ONE_EMPTY: readonly string[] = Object.freeze([""]);

class FormatFailure {
  constructor(readonly message: string) {}
}

/** Systems repeat across a closure: decode each distinct byte string once. */
const systemCache: { bytes: Buffer; str: string }[] = [];

/** A raw string: bytes [s0, s1) of the file, with escapes and/or non-ASCII bytes or not. */
interface Raw {
  s0: number;
  s1: number;
  esc: boolean;
  high: boolean;
}

class ByteScanner {
  b: Buffer = EMPTY;
  pos = 0;
  end = 0;
  // The last string read by str().
  s0 = 0;
  s1 = 0;
  esc = false;
  high = false;

  reset(b: Buffer, start: number, end: number): void {
    this.b = b;
    this.pos = start;
    this.end = end;
  }

  eof(): never {
    throw new FormatFailure("unexpected EOF");
  }

  peek(): number {
    if (this.pos >= this.end) this.eof();
    return this.b[this.pos]!;
  }

  expectChar(c: number): void {
    if (this.pos >= this.end) this.eof();
    if (this.b[this.pos] !== c) throw new FormatFailure(`expected char '${String.fromCharCode(c)}'`);
    this.pos++;
  }

  startsWith(t: Buffer): boolean {
    const p = this.pos;
    if (this.end - p < t.length) return false;
    for (let i = 0; i < t.length; i++) if (this.b[p + i] !== t[i]) return false;
    return true;
  }

  endOfList(): boolean {
    const c = this.peek();
    if (c === COMMA) {
      this.pos++;
      return false;
    }
    if (c === RBRACKET) {
      this.pos++;
      return true;
    }
    return false;
  }

  /** Read one quoted string: sets s0/s1 (raw bytes between the quotes), esc and high. */
  str(): void {
    this.expectChar(QUOTE);
    const b = this.b;
    const end = this.end;
    let i = this.pos;
    let esc = false;
    let high = 0;
    for (;;) {
      if (i >= end) {
        this.pos = end;
        this.eof();
      }
      const c = b[i]!;
      if (c === QUOTE) break;
      if (c === BACKSLASH) {
        esc = true;
        if (i + 1 < end) high |= b[i + 1]!;
        i += 2;
        continue;
      }
      high |= c;
      i++;
    }
    this.s0 = this.pos;
    this.s1 = i;
    this.esc = esc;
    this.high = high >= 0x80;
    this.pos = i + 1;
  }

  /** The last string, decoded and unescaped like parseDerivation does. */
  text(): string {
    return this.decode(this.s0, this.s1, this.esc, this.high);
  }

  decode(s0: number, s1: number, esc: boolean, high: boolean): string {
    const b = this.b;
    const enc = high ? "utf8" : "latin1";
    if (!esc) return s0 === s1 ? "" : b.toString(enc, s0, s1);
    let out = "";
    let chunk = s0;
    let i = s0;
    while (i < s1) {
      if (b[i] !== BACKSLASH) {
        i++;
        continue;
      }
      if (i > chunk) out += b.toString(enc, chunk, i);
      const e = b[i + 1]!;
      if (e === 110) out += "\n";
      else if (e === 114) out += "\r";
      else if (e === 116) out += "\t";
      else {
        // Any other escaped character stands for itself: start the next chunk at it.
        chunk = i + 1;
        i += 2;
        continue;
      }
      chunk = i + 2;
      i += 2;
    }
    if (s1 > chunk) out += b.toString(enc, chunk, s1);
    return out;
  }

  /** The last string equals `t` (bytes, no escapes) or decodes to it. */
  is(t: Buffer): boolean {
    if (this.esc) return this.text() === t.toString("latin1");
    const n = this.s1 - this.s0;
    if (n !== t.length) return false;
    const b = this.b;
    const s0 = this.s0;
    for (let i = 0; i < n; i++) if (b[s0 + i] !== t[i]) return false;
    return true;
  }

  /** The last string's first decoded character is '/'. */
  startsWithSlash(): boolean {
    const b = this.b;
    const s0 = this.s0;
    if (this.s1 === s0) return false;
    const c = b[s0]!;
    return c === SLASH || (c === BACKSLASH && b[s0 + 1] === SLASH);
  }

  /** The last string is exactly `out` (no escapes). */
  isOut(): boolean {
    const b = this.b;
    const s0 = this.s0;
    return this.s1 - s0 === 3 && b[s0] === 111 && b[s0 + 1] === 117 && b[s0 + 2] === 116 && !this.esc;
  }

  /** A path: decoded, must start with '/'. */
  path(): string {
    this.str();
    if (!this.startsWithSlash()) throw new FormatFailure(`bad path '${this.text()}' in derivation`);
    return this.text();
  }

  /** A list of strings after its '['; `["out"]` is the shared frozen list. */
  stringList(): readonly string[] {
    const b = this.b;
    const p = this.pos;
    // Fast path: "out"]
    if (
      this.end - p >= 6 &&
      b[p] === QUOTE &&
      b[p + 1] === 111 &&
      b[p + 2] === 117 &&
      b[p + 3] === 116 &&
      b[p + 4] === QUOTE &&
      b[p + 5] === RBRACKET
    ) {
      this.pos = p + 6;
      return OUT_LIST;
    }
    const res: string[] = [];
    while (!this.endOfList()) {
      this.str();
      res.push(this.isOut() ? OUT : this.text());
    }
    return res.length === 0 ? NO_STRINGS : res;
  }

  /** Skip a list of strings after its '['; paths must start with '/'. */
  skipStrings(arePaths: boolean): void {
    while (!this.endOfList()) {
      this.str();
      if (arePaths && !this.startsWithSlash())
        throw new FormatFailure(`bad path '${this.text()}' in derivation`);
    }
  }

  system(): string {
    this.str();
    if (this.esc) return this.text();
    const b = this.b;
    const s0 = this.s0;
    const n = this.s1 - s0;
    for (const e of systemCache) {
      const eb = e.bytes;
      if (eb.length !== n) continue;
      let i = 0;
      while (i < n && b[s0 + i] === eb[i]) i++;
      if (i === n) return e.str;
    }
    const str = this.text();
    if (systemCache.length < 64) systemCache.push({ bytes: Buffer.from(b.subarray(s0, this.s1)), str });
    return str;
  }
}

function outputKind(path: string, hashAlgo: string, hash: string): OutputKind {
  if (hashAlgo !== "") {
    if (hash === "impure") return "impure";
    if (hash !== "") return "fixed";
    return "floating";
  }
  return path === "" ? "deferred" : "inputAddressed";
}

/** One scanner, reset per file (scanning is synchronous and not re-entrant). */
const shared = new ByteScanner();

function scan(b: Buffer, start: number, end: number): DrvScan {
  const sc = shared;
  sc.reset(b, start, end);
  if (sc.startsWith(WITH_VERSION)) {
    throw new FormatFailure(
      "derivations with a version (DrvWithVersion, dynamic derivations) are not supported",
    );
  }
  if (!sc.startsWith(DERIVE)) throw new FormatFailure("expected string 'Derive(['");
  sc.pos += DERIVE.length;
  const outs = scanOutputs(sc);
  sc.expectChar(COMMA);
  sc.expectChar(LBRACKET);
  const { inputDrvs, inputOutputs } = scanInputDrvs(sc);
  sc.expectChar(COMMA);
  sc.expectChar(LBRACKET);
  sc.skipStrings(true); // inputSrcs
  sc.expectChar(COMMA);
  const system = sc.system();
  sc.expectChar(COMMA);
  sc.str();
  const isBuiltin = sc.esc
    ? sc.text().startsWith("builtin:")
    : sc.s1 - sc.s0 >= BUILTIN.length && b.compare(BUILTIN, 0, BUILTIN.length, sc.s0, sc.s0 + 8) === 0;
  sc.expectChar(COMMA);
  sc.expectChar(LBRACKET);
  sc.skipStrings(false); // args
  sc.expectChar(COMMA);
  sc.expectChar(LBRACKET);
  const env = scanEnv(sc);
  sc.expectChar(RPAREN);
  // Trailing bytes are ignored, as by Nix.

  const { outputNames } = outs;
  const first = outs.first;
  const type: DerivationType =
    first === null ||
    outs.mixed ||
    (first === "fixed" && (outputNames.length !== 1 || outputNames[0] !== "out"))
      ? "invalid"
      : first;
  const hasKnownOutputPaths = type === "inputAddressed" || type === "fixed";
  const { feats, preferLocalBuild } = routingAttrs(sc, b, env);
  let required: readonly string[];
  if (feats.length === 0) required = hasKnownOutputPaths ? NO_FEATURES : CA_ONLY;
  else {
    const set = new Set(feats);
    if (!hasKnownOutputPaths) set.add("ca-derivations");
    required = [...set].sort(byCodeUnit);
  }
  return {
    outputNames,
    outputPaths: outs.outputPaths,
    outputHashAlgos: outs.outputHashAlgos,
    outputHashes: outs.outputHashes,
    inputDrvs,
    inputOutputs,
    system,
    facts: {
      type,
      requiredSystemFeatures: required,
      preferLocalBuild,
      isFixedOutput: type === "fixed",
      isBuiltin,
      hasKnownOutputPaths,
    },
  };
}

/** The outputs, with the derivation type as Nix derives it: the kind shared by all outputs, else invalid. */
function scanOutputs(sc: ByteScanner): {
  outputNames: string[];
  outputPaths: string[];
  outputHashAlgos: string[];
  outputHashes: string[];
  first: OutputKind | null;
  mixed: boolean;
} {
  const outputNames: string[] = [];
  const outputPaths: string[] = [];
  let outputHashAlgos: string[] = [];
  let outputHashes: string[] = [];
  let hashed = false;
  let first: OutputKind | null = null;
  let mixed = false;
  while (!sc.endOfList()) {
    sc.expectChar(LPAREN);
    sc.str();
    const name = sc.isOut() ? OUT : sc.text();
    sc.expectChar(COMMA);
    sc.str();
    const path = sc.text();
    sc.expectChar(COMMA);
    sc.str();
    const hashAlgo = sc.text();
    sc.expectChar(COMMA);
    sc.str();
    const hash = sc.text();
    sc.expectChar(RPAREN);
    const kind = outputKind(path, hashAlgo, hash);
    if ((kind === "inputAddressed" || kind === "fixed") && path.charCodeAt(0) !== SLASH) {
      throw new FormatFailure(`bad path '${path}' in derivation`);
    }
    if (!outputNames.includes(name)) {
      // Nix keeps the first of duplicate names
      outputNames.push(name);
      outputPaths.push(path);
      outputHashAlgos.push(hashAlgo);
      outputHashes.push(hash);
      if (hashAlgo !== "" || hash !== "") hashed = true;
      if (first === null) first = kind;
      else if (kind !== first) mixed = true;
    }
  }
  if (!hashed && outputNames.length === 1) {
    outputHashAlgos = ONE_EMPTY as string[];
    outputHashes = ONE_EMPTY as string[];
  }
  return { outputNames, outputPaths, outputHashAlgos, outputHashes, first, mixed };
}

/**
 * Input derivations. Nix writes them sorted, so a path not greater than the previous one is the only
 * way to a duplicate: then fall back to a Map (first position, last value).
 */
function scanInputDrvs(sc: ByteScanner): { inputDrvs: string[]; inputOutputs: (readonly string[])[] } {
  let inputDrvs: string[] = [];
  let inputOutputs: (readonly string[])[] = [];
  let dups: Map<string, number> | null = null;
  let prev = "";
  while (!sc.endOfList()) {
    sc.expectChar(LPAREN);
    const p = sc.path();
    sc.expectChar(COMMA);
    sc.expectChar(LBRACKET);
    const outs = sc.stringList();
    sc.expectChar(RPAREN);
    if (dups === null && p <= prev && inputDrvs.length > 0) {
      dups = new Map();
      for (let i = 0; i < inputDrvs.length; i++) dups.set(inputDrvs[i]!, i);
    }
    if (dups !== null) {
      const at = dups.get(p);
      if (at !== undefined) {
        inputOutputs[at] = outs;
        continue;
      }
      dups.set(p, inputDrvs.length);
    }
    inputDrvs.push(p);
    inputOutputs.push(outs);
    prev = p;
  }
  if (inputDrvs.length === 0) {
    inputDrvs = NO_STRINGS as string[];
    inputOutputs = NO_LISTS as (readonly string[])[];
  }
  return { inputDrvs, inputOutputs };
}

interface EnvRaws {
  features: Raw | null;
  prefer: Raw | null;
  json: Raw | null;
}

/** The environment: only the three keys that matter; the last occurrence wins, as in a Map. */
function scanEnv(sc: ByteScanner): EnvRaws {
  const env: EnvRaws = { features: null, prefer: null, json: null };
  while (!sc.endOfList()) {
    sc.expectChar(LPAREN);
    sc.str();
    const n = sc.s1 - sc.s0;
    let which = 0;
    if (sc.esc) {
      const k = sc.text();
      which = k === "requiredSystemFeatures" ? 1 : k === "preferLocalBuild" ? 2 : k === "__json" ? 3 : 0;
    } else if (n === K_FEATURES.length) which = sc.is(K_FEATURES) ? 1 : 0;
    else if (n === K_PREFER.length) which = sc.is(K_PREFER) ? 2 : 0;
    else if (n === K_JSON.length) which = sc.is(K_JSON) ? 3 : 0;
    sc.expectChar(COMMA);
    sc.str();
    sc.expectChar(RPAREN);
    if (which !== 0) {
      const raw: Raw = { s0: sc.s0, s1: sc.s1, esc: sc.esc, high: sc.high };
      if (which === 1) env.features = raw;
      else if (which === 2) env.prefer = raw;
      else env.json = raw;
    }
  }
  return env;
}

/** requiredSystemFeatures and preferLocalBuild, from __json when the derivation has structured attrs. */
function routingAttrs(
  sc: ByteScanner,
  b: Buffer,
  { features, prefer, json }: EnvRaws,
): { feats: readonly string[]; preferLocalBuild: boolean } {
  if (json === null) {
    const feats =
      features === null
        ? NO_FEATURES
        : tokenize(sc.decode(features.s0, features.s1, features.esc, features.high));
    const preferLocalBuild =
      prefer !== null &&
      (prefer.esc
        ? sc.decode(prefer.s0, prefer.s1, true, prefer.high) === "1"
        : prefer.s1 - prefer.s0 === 1 && b[prefer.s0] === 49);
    return { feats, preferLocalBuild };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(sc.decode(json.s0, json.s1, json.esc, json.high));
  } catch (e) {
    throw new FormatFailure(`cannot process __json attribute: ${(e as Error).message}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new FormatFailure("cannot process __json attribute: not a JSON object");
  }
  const sa = parsed as Record<string, unknown>;
  const rsf = sa.requiredSystemFeatures;
  let feats: readonly string[];
  if (rsf === undefined) feats = NO_FEATURES;
  else if (Array.isArray(rsf) && rsf.every((x) => typeof x === "string")) feats = rsf as string[];
  else throw new FormatFailure("attribute 'requiredSystemFeatures' must be a list of strings");
  const plb = sa.preferLocalBuild;
  let preferLocalBuild: boolean;
  if (plb === undefined) preferLocalBuild = false;
  else if (typeof plb === "boolean") preferLocalBuild = plb;
  else throw new FormatFailure("attribute 'preferLocalBuild' must be a Boolean");
  return { feats, preferLocalBuild };
}

/**
 * Scan bytes [start, end) of `buf` (a .drv file). `drvPath` only goes into error messages, which
 * are parseDerivation's: `error parsing derivation '<path>': <what>`. Throws only NixError.
 */
export function scanDerivation(buf: Buffer, start = 0, end = buf.length, drvPath?: string): DrvScan {
  try {
    return scan(buf, start, end);
  } catch (e) {
    const what = e instanceof FormatFailure ? e.message : `internal parser error: ${String(e)}`;
    const msg = drvPath === undefined ? what : `error parsing derivation '${drvPath}': ${what}`;
    throw new NixError("format", msg, { file: drvPath ?? null });
  }
}
