/**
 * A parser for Nix `.drv` files (the ATerm `Derive(...)` form) and the routing facts Nix derives
 * from them: required system features, preferLocalBuild, fixed-output, builtin.
 *
 * Performance: the scanner walks the text once with indexOf/charCodeAt; strings without escapes are
 * taken with a single slice. The position of the next backslash is cached, so a file with no escapes
 * costs one indexOf for backslashes in total.
 *
 * Errors: every failure is a NixError (kind "format"); nothing else is thrown.
 */

import { NixError } from "./errors.js";

export interface DerivationOutput {
  /** Output path; "" for floating CA, deferred and impure outputs. */
  readonly path: string;
  /** "", or e.g. "sha256" / "r:sha256" / "text:sha256". */
  readonly hashAlgo: string;
  /** "", a base-16 hash (fixed output), or "impure". */
  readonly hash: string;
}

export type OutputKind = "inputAddressed" | "deferred" | "fixed" | "floating" | "impure";

export type DerivationType =
  | "inputAddressed"
  | "deferred"
  | "fixed"
  | "floating"
  | "impure"
  /** Outputs of different kinds; Nix refuses such a derivation when it looks at its type. */
  | "invalid";

export interface Derivation {
  /** Output name → output, in file order (Nix writes them sorted). */
  readonly outputs: ReadonlyMap<string, DerivationOutput>;
  /** Input derivation path → wanted output names. */
  readonly inputDrvs: ReadonlyMap<string, readonly string[]>;
  readonly inputSrcs: readonly string[];
  /** `platform` in Nix's terms: the derivation's system. */
  readonly system: string;
  readonly builder: string;
  readonly args: readonly string[];
  readonly env: ReadonlyMap<string, string>;
  /** The parsed `__json` attribute, when the derivation uses structured attrs. */
  readonly structuredAttrs: Record<string, unknown> | null;
}

/** What routing needs to know about a derivation. */
export interface DerivationFacts {
  readonly type: DerivationType;
  /** requiredSystemFeatures (sorted, unique), plus `ca-derivations` when the output paths are not known. */
  readonly requiredSystemFeatures: readonly string[];
  readonly preferLocalBuild: boolean;
  readonly isFixedOutput: boolean;
  /** The builder starts with `builtin:` (e.g. builtin:fetchurl). */
  readonly isBuiltin: boolean;
  /** False for floating CA, deferred and impure derivations. */
  readonly hasKnownOutputPaths: boolean;
}

export interface ParsedDerivation extends Derivation {
  readonly facts: DerivationFacts;
}

// Character codes.
const QUOTE = 34; // "
const COMMA = 44; // ,
const LBRACKET = 91; // [
const RBRACKET = 93; // ]
const LPAREN = 40; // (
const RPAREN = 41; // )

class FormatFailure {
  constructor(readonly message: string) {}
}

/** One-pass scanner over the text. Throws FormatFailure (converted to NixError at the boundary). */
class Scanner {
  pos = 0;
  /** Position of the next backslash at or after some earlier position; -1 when none remain. */
  private nextBackslash = -2;

  constructor(private readonly s: string) {}

  private eof(): never {
    throw new FormatFailure("unexpected EOF");
  }

  peek(): number {
    if (this.pos >= this.s.length) this.eof();
    return this.s.charCodeAt(this.pos);
  }

  expectChar(c: number): void {
    if (this.pos >= this.s.length) this.eof();
    if (this.s.charCodeAt(this.pos) !== c) {
      throw new FormatFailure(`expected char '${String.fromCharCode(c)}'`);
    }
    this.pos++;
  }

  expectString(t: string): void {
    if (!this.s.startsWith(t, this.pos)) throw new FormatFailure(`expected string '${t}'`);
    this.pos += t.length;
  }

  /** Nix's endOfList: consumes ',' (false) or ']' (true); anything else is left for the element parser. */
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

  string(): string {
    this.expectChar(QUOTE);
    const s = this.s;
    const start = this.pos;
    const q = s.indexOf('"', start);
    if (q < 0) {
      this.pos = s.length;
      this.eof();
    }
    let bs = this.nextBackslash;
    if (bs !== -1 && bs < start) {
      bs = s.indexOf("\\", start);
      this.nextBackslash = bs;
    }
    if (bs === -1 || bs > q) {
      this.pos = q + 1;
      return s.slice(start, q);
    }
    // Slow path: escapes present. Collect chunks, join once.
    const parts: string[] = [];
    let i = start;
    for (;;) {
      let j = i;
      // Find the next '"' or '\'.
      const nq = s.indexOf('"', j);
      const nb = s.indexOf("\\", j);
      if (nq < 0 && nb < 0) {
        this.pos = s.length;
        this.eof();
      }
      if (nb >= 0 && (nq < 0 || nb < nq)) {
        j = nb;
        if (j > i) parts.push(s.slice(i, j));
        if (j + 1 >= s.length) {
          this.pos = s.length;
          this.eof();
        }
        const e = s.charCodeAt(j + 1);
        if (e === 110) parts.push("\n");
        else if (e === 114) parts.push("\r");
        else if (e === 116) parts.push("\t");
        else parts.push(s[j + 1]!);
        i = j + 2;
      } else {
        if (nq > i) parts.push(s.slice(i, nq));
        this.pos = nq + 1;
        this.nextBackslash = -2;
        return parts.join("");
      }
    }
  }

  path(): string {
    const p = this.string();
    if (p.length === 0 || p.charCodeAt(0) !== 47) throw new FormatFailure(`bad path '${p}' in derivation`);
    return p;
  }

  strings(arePaths: boolean): string[] {
    const res: string[] = [];
    while (!this.endOfList()) res.push(arePaths ? this.path() : this.string());
    return res;
  }

  atEnd(): boolean {
    return this.pos >= this.s.length;
  }
}

function outputKind(o: DerivationOutput): OutputKind {
  if (o.hashAlgo !== "") {
    if (o.hash === "impure") return "impure";
    if (o.hash !== "") return "fixed";
    return "floating";
  }
  return o.path === "" ? "deferred" : "inputAddressed";
}

function parseAterm(text: string): Derivation {
  const sc = new Scanner(text);
  if (text.startsWith("DrvWithVersion(")) {
    throw new FormatFailure(
      "derivations with a version (DrvWithVersion, dynamic derivations) are not supported",
    );
  }
  sc.expectString("Derive([");
  const outputs = new Map<string, DerivationOutput>();
  while (!sc.endOfList()) {
    sc.expectChar(LPAREN);
    const id = sc.string();
    sc.expectChar(COMMA);
    const path = sc.string();
    sc.expectChar(COMMA);
    const hashAlgo = sc.string();
    sc.expectChar(COMMA);
    const hash = sc.string();
    sc.expectChar(RPAREN);
    const out: DerivationOutput = { path, hashAlgo, hash };
    const kind = outputKind(out);
    if ((kind === "inputAddressed" || kind === "fixed") && path.charCodeAt(0) !== 47) {
      throw new FormatFailure(`bad path '${path}' in derivation`);
    }
    if (!outputs.has(id)) outputs.set(id, out); // Nix keeps the first of duplicate names
  }
  sc.expectChar(COMMA);
  sc.expectChar(LBRACKET);
  const inputDrvs = new Map<string, string[]>();
  while (!sc.endOfList()) {
    sc.expectChar(LPAREN);
    const p = sc.path();
    sc.expectChar(COMMA);
    sc.expectChar(LBRACKET);
    inputDrvs.set(p, sc.strings(false));
    sc.expectChar(RPAREN);
  }
  sc.expectChar(COMMA);
  sc.expectChar(LBRACKET);
  const inputSrcs = sc.strings(true);
  sc.expectChar(COMMA);
  const system = sc.string();
  sc.expectChar(COMMA);
  const builder = sc.string();
  sc.expectChar(COMMA);
  sc.expectChar(LBRACKET);
  const args = sc.strings(false);
  sc.expectChar(COMMA);
  sc.expectChar(LBRACKET);
  const env = new Map<string, string>();
  while (!sc.endOfList()) {
    sc.expectChar(LPAREN);
    const k = sc.string();
    sc.expectChar(COMMA);
    const v = sc.string();
    sc.expectChar(RPAREN);
    env.set(k, v);
  }
  sc.expectChar(RPAREN);
  // Nix ignores trailing bytes; so do we.

  let structuredAttrs: Record<string, unknown> | null = null;
  const json = env.get("__json");
  if (json !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(json);
    } catch (e) {
      throw new FormatFailure(`cannot process __json attribute: ${(e as Error).message}`);
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new FormatFailure("cannot process __json attribute: not a JSON object");
    }
    structuredAttrs = parsed as Record<string, unknown>;
  }
  // `facts` is filled in by parseDerivation; declaring it here keeps one object shape.
  return {
    outputs,
    inputDrvs,
    inputSrcs,
    system,
    builder,
    args,
    env,
    structuredAttrs,
    facts: undefined,
  } as Derivation;
}

function derivationType(outputs: ReadonlyMap<string, DerivationOutput>): DerivationType {
  let first: OutputKind | null = null;
  for (const o of outputs.values()) {
    const k = outputKind(o);
    if (first === null) first = k;
    else if (k !== first) return "invalid";
  }
  if (first === null) return "invalid";
  if (first === "fixed" && (outputs.size !== 1 || !outputs.has("out"))) return "invalid";
  return first;
}

/** Nix's whitespace tokenizer for non-structured string-list attributes (" \t\n\r"). */
export function tokenize(s: string): string[] {
  const res: string[] = [];
  let start = -1;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ws = c === 32 || c === 9 || c === 10 || c === 13;
    if (ws) {
      if (start >= 0) {
        res.push(s.slice(start, i));
        start = -1;
      }
    } else if (start < 0) start = i;
  }
  if (start >= 0) res.push(s.slice(start));
  return res;
}

export const byCodeUnit = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

// Shared (frozen) results for the common cases, so most derivations allocate nothing here.
const NO_FEATURES: string[] = Object.freeze([]) as unknown as string[];
const CA_ONLY: string[] = Object.freeze(["ca-derivations"]) as unknown as string[];

function computeFacts(d: Derivation): DerivationFacts {
  const type = derivationType(d.outputs);
  const hasKnownOutputPaths = type === "inputAddressed" || type === "fixed";
  let features: string[];
  let preferLocalBuild: boolean;
  const sa = d.structuredAttrs;
  if (sa !== null) {
    const rsf = sa.requiredSystemFeatures;
    if (rsf === undefined) features = [];
    else if (Array.isArray(rsf) && rsf.every((x) => typeof x === "string")) features = rsf as string[];
    else throw new FormatFailure("attribute 'requiredSystemFeatures' must be a list of strings");
    const plb = sa.preferLocalBuild;
    if (plb === undefined) preferLocalBuild = false;
    else if (typeof plb === "boolean") preferLocalBuild = plb;
    else throw new FormatFailure("attribute 'preferLocalBuild' must be a Boolean");
  } else {
    const rsf = d.env.get("requiredSystemFeatures");
    features = rsf === undefined ? [] : tokenize(rsf);
    preferLocalBuild = d.env.get("preferLocalBuild") === "1";
  }
  let required: string[];
  if (features.length === 0) required = hasKnownOutputPaths ? NO_FEATURES : CA_ONLY;
  else {
    const set = new Set(features);
    if (!hasKnownOutputPaths) set.add("ca-derivations");
    required = [...set].sort(byCodeUnit);
  }
  return {
    type,
    requiredSystemFeatures: required,
    preferLocalBuild,
    isFixedOutput: type === "fixed",
    isBuiltin: d.builder.startsWith("builtin:"),
    hasKnownOutputPaths,
  };
}

/**
 * Parse the text of a .drv file. `drvPath` (the store path) only goes into error messages.
 * Throws only NixError, whose message reads like Nix's: `error parsing derivation '<path>': <what>`.
 */
export function parseDerivation(text: string, drvPath?: string): ParsedDerivation {
  try {
    const d = parseAterm(text) as { -readonly [K in keyof ParsedDerivation]: ParsedDerivation[K] };
    d.facts = computeFacts(d);
    return d;
  } catch (e) {
    const what = e instanceof FormatFailure ? e.message : `internal parser error: ${String(e)}`;
    const msg = drvPath === undefined ? what : `error parsing derivation '${drvPath}': ${what}`;
    throw new NixError("format", msg, { file: drvPath ?? null });
  }
}

export type DerivationResult = { ok: true; drv: ParsedDerivation } | { ok: false; error: NixError };

/** Like parseDerivation, but returns the error instead of throwing. */
export function tryParseDerivation(text: string, drvPath?: string): DerivationResult {
  try {
    return { ok: true, drv: parseDerivation(text, drvPath) };
  } catch (e) {
    if (e instanceof NixError) return { ok: false, error: e };
    return { ok: false, error: new NixError("format", String(e), { file: drvPath ?? null }) };
  }
}

export interface StoreLocation {
  /** The logical store directory (`store-dir`, NIX_STORE_DIR). Default /nix/store. */
  readonly storeDir?: string;
  /** Where that directory really is: `<root>/nix/store` for a chroot store. Default = storeDir. */
  readonly realStoreDir?: string;
}

/** Map a logical store path to the file that holds it. */
export function realPathOf(storePath: string, loc: StoreLocation = {}): string {
  const storeDir = loc.storeDir ?? "/nix/store";
  const real = loc.realStoreDir ?? storeDir;
  if (real === storeDir) return storePath;
  if (storePath.startsWith(`${storeDir}/`)) return real + storePath.slice(storeDir.length);
  return storePath;
}
