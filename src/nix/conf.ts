/**
 * The nix.conf engine: which files Nix reads, how it splits lines, resolves includes, parses values and
 * layers the results. Pure: all file access goes through a {@link FileReader}, all machine facts and
 * environment variables come in as data. Checked against real Nix 2.8 and 2.30 by a differential test;
 * other versions follow the thresholds in docs/nix-versions.md (after 2.30: source reading only).
 *
 * Nothing in here throws: a configuration error is returned in {@link ConfigView.error} as a
 * {@link NixError} carrying Nix's exact message.
 */

import { NixError, strerror } from "./errors.js";
import type { Origin } from "./origin.js";
import { quotableLine } from "./redact.js";
import {
  compareCodePoints,
  EXPERIMENTAL_FEATURES_2_8,
  experimentalFeatureNames,
  type IntKind,
  type MachineFacts,
  type SettingDef,
  SettingRegistry,
  type SettingValue,
  toStringSet,
} from "./settings.js";
import type { NixVersion } from "./version.js";
import { NIX, since } from "./versions.js";

export type { MachineFacts } from "./settings.js";

// ---------------------------------------------------------------------------------------------------------
// Public types

/**
 * A failed read carries an errno name. Two names are not errno values from open/read: `ENOTREG` (the path
 * is a FIFO, a device or a socket, which a bounded reader never reads; `detail` says which) and `EFBIG`
 * (larger than the reader's size limit); `ETIMEDOUT` means the reader gave up at its deadline.
 */
export type ReadResult = { ok: true; text: string } | { ok: false; code: string; detail?: string };
export type ExistsResult = { ok: true; exists: boolean } | { ok: false; code: string };

/** File access as Nix does it. */
export interface FileReader {
  /** Read a whole file. `code` is an errno name: ENOENT, EACCES, EISDIR, ENOTDIR, ELOOP, ... */
  read(path: string): ReadResult;
  /**
   * Nix's `pathExists`: an lstat, so a dangling symlink exists. ENOENT and ENOTDIR mean "does not exist";
   * any other failure is returned as `{ ok: false, code }`.
   */
  exists(path: string): ExistsResult;
}

export interface ConfigFlag {
  /**
   * For `via: "flag"`: the long flag without dashes, e.g. `max-jobs`, `extra-substituters`, `keep-going`,
   * `no-keep-going`, `relaxed-sandbox`. For `via: "option"`: the setting name given to `--option`.
   */
  name: string;
  /** The flag's argument; omitted for the boolean/sandbox switches. */
  value?: string;
  /** `flag` (default) = `--NAME VALUE`; `option` = `--option NAME VALUE`. */
  via?: "flag" | "option";
  /** Where the override really comes from (e.g. hercules-ci-agent's nixSettings); default: the flag itself. */
  origin?: Origin;
}

export interface LoadConfigInput {
  version: NixVersion;
  env: Record<string, string | undefined>;
  /** Home directory from the passwd entry; used when HOME is unset. */
  passwdHome: string;
  /** Compile-time configuration directory. Default: /etc/nix. */
  defaultConfDir?: string;
  fs: FileReader;
  machine: MachineFacts;
  /** Command-line settings, applied after NIX_CONFIG, in order. */
  flags?: ConfigFlag[];
}

export interface ConfigFile {
  path: string;
  role: "system" | "user" | "include" | "env";
  exists: boolean;
  /** Why it was skipped or cut short (errno text), when Nix silently ignored a failure. */
  skipped?: string;
  includedFrom?: Origin;
}

export type Layer = "system" | "user" | "env" | "flag";

export interface Assignment {
  /** The name as written (possibly an alias or `extra-NAME`). */
  name: string;
  /** Canonical setting name, or null when Nix does not know the name (it then only warns). */
  setting: string | null;
  op: "set" | "append";
  value: string;
  origin: Origin;
  layer: Layer;
}

export interface EffectiveSetting {
  name: string;
  /** Exactly the JSON form `nix show-config --json` prints as `value` (big integers as bigint). */
  value: unknown;
  /** Who set the value: one origin for a plain assignment; every contributor for appended values. */
  origin: Origin[];
  layer: "default" | Layer;
  /** Set outside the system file: a client sends these to the daemon. */
  overridden: boolean;
}

export interface ConfigWarning {
  /** Nix's text after `warning: `. */
  message: string;
  origin?: Origin;
}

export interface ConfigView {
  nixVersion: NixVersion;
  /** The system configuration directory in force (canonical). */
  confDir: string;
  /** The user configuration files in the order Nix lists them (first = highest priority). */
  userFiles: string[];
  files: ConfigFile[];
  /** Every assignment in application order, after include expansion. */
  assignments: Assignment[];
  /** Every known setting with its effective value (the state reached, even when `error` is set). */
  settings: Map<string, EffectiveSetting>;
  /** In the order Nix prints them (unknown-setting warnings last, sorted). */
  warnings: ConfigWarning[];
  /** The error Nix stops with (it prints `error: <nixMessage>` and exits 1), or null. */
  error: NixError | null;
}

// ---------------------------------------------------------------------------------------------------------
// Line parsing

/** One meaningful line of a configuration text. */
export type ConfLine =
  | { kind: "set"; line: number; name: string; value: string; text: string }
  | {
      kind: "include";
      line: number;
      /** `!include`: a missing target is ignored. */
      optional: boolean;
      /** The target as written. */
      target: string;
      /** The absolute target (relative to the including file's directory), or null if unresolvable. */
      resolved: string | null;
      /** Why it could not be resolved (Nix's error), e.g. `not an absolute path: './x'` inside NIX_CONFIG. */
      resolveError: NixError | null;
      text: string;
    };

export interface ParsedConf {
  lines: ConfLine[];
  /** The first syntax error; lines after it are not parsed. */
  error: NixError | null;
}

/** Nix's whitespace set for tokenising: space, tab, newline, carriage return. */
function tokenize(s: string): string[] {
  // a scan, not a split on /[ \t\n\r]+/: on a 10 MB value of short words the regex split is several times slower
  const out: string[] = [];
  let start = -1;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 32 || c === 9 || c === 10 || c === 13) {
      if (start >= 0) {
        out.push(s.slice(start, i));
        start = -1;
      }
    } else if (start < 0) start = i;
  }
  if (start >= 0) out.push(s.slice(start));
  return out;
}

/** Split into `\n`-terminated lines like Nix (a final `\n` does not open another line). */
function splitLines(text: string): string[] {
  const lines = text.split("\n");
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  return lines;
}

function quotePath(path: string, version: NixVersion): string {
  // 2.34+ formats paths with PathFmt (double quotes); before that '...'.
  return since(version, NIX.pathFmtQuotes) ? `"${path}"` : `'${path}'`;
}

function syntaxError(
  rawLine: string,
  path: string,
  version: NixVersion,
  lineNo: number,
  text: string,
): NixError {
  // Nix quotes the line up to its `\n`, so a CRLF file's line keeps its `\r` here; the logger drops it
  // when printing (2.8 and 2.30 alike): display.ts gives that printed form. We quote a bounded excerpt,
  // and nothing of a private key.
  const line = quotableLine(rawLine, text);
  const msg = since(version, NIX.confSyntaxErrorText)
    ? `syntax error in configuration line '${line}' in ${quotePath(path, version)}`
    : `illegal configuration line '${line}' in '${path}'`;
  return new NixError("usage", msg, { file: path, line: lineNo });
}

/**
 * Parse one configuration text (a file, or NIX_CONFIG with `path` = "NIX_CONFIG") without following
 * includes. Comments start at the first `#` anywhere; tokens are separated by runs of space/tab/CR/LF;
 * the value is tokens 2.. joined by single spaces.
 */
export function parseConfText(text: string, path: string, version: NixVersion): ParsedConf {
  const out: ConfLine[] = [];
  const lines = splitLines(text);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    let line = lines[i]!;
    const hash = line.indexOf("#");
    if (hash >= 0) line = line.slice(0, hash);
    const tokens = tokenize(line);
    if (tokens.length === 0) continue;
    if (tokens.length < 2) return { lines: out, error: syntaxError(line, path, version, lineNo, text) };
    const t0 = tokens[0]!;
    if (t0 === "include" || t0 === "!include") {
      if (tokens.length !== 2) return { lines: out, error: syntaxError(line, path, version, lineNo, text) };
      const target = tokens[1]!;
      const r = resolveInclude(target, path, lineNo);
      out.push({
        kind: "include",
        line: lineNo,
        optional: t0 === "!include",
        target,
        resolved: r.ok ? r.path : null,
        resolveError: r.ok ? null : r.error,
        text: line,
      });
      continue;
    }
    if (tokens[1] !== "=") return { lines: out, error: syntaxError(line, path, version, lineNo, text) };
    out.push({ kind: "set", line: lineNo, name: t0, value: tokens.slice(2).join(" "), text: line });
  }
  return { lines: out, error: null };
}

// ---------------------------------------------------------------------------------------------------------
// Paths (Nix's dirOf / absPath / canonPath, without symlink resolution)

/** Everything before the last `/`; "." when there is none; "/" for a top-level entry. */
export function dirOf(path: string): string {
  const pos = path.lastIndexOf("/");
  if (pos < 0) return ".";
  return pos === 0 ? "/" : path.slice(0, pos);
}

/** Remove `.`, `..` and repeated slashes. Returns null for a relative path (Nix: "not an absolute path"). */
export function canonPath(path: string): string | null {
  if (!path.startsWith("/")) return null;
  const parts: string[] = [];
  for (const c of path.split("/")) {
    if (c === "" || c === ".") continue;
    if (c === "..") parts.pop();
    else parts.push(c);
  }
  return `/${parts.join("/")}`;
}

function notAbsolute(p: string, file: string | null, line: number | null): NixError {
  return new NixError("format", `not an absolute path: '${p}'`, { file, line });
}

function resolveInclude(
  target: string,
  including: string,
  lineNo: number,
): { ok: true; path: string } | { ok: false; error: NixError } {
  const joined = target.startsWith("/") ? target : `${dirOf(including)}/${target}`;
  const c = canonPath(joined);
  return c === null ? { ok: false, error: notAbsolute(joined, including, lineNo) } : { ok: true, path: c };
}

// ---------------------------------------------------------------------------------------------------------
// Value parsing

const INT_RANGE: Record<IntKind, { min: bigint; max: bigint }> = {
  u32: { min: 0n, max: 4294967295n },
  u64: { min: 0n, max: 18446744073709551615n },
  i64: { min: -9223372036854775808n, max: 9223372036854775807n },
};

/** `string2Int`: boost::lexical_cast semantics: optional sign, decimal digits only, in range. */
function string2Int(s: string, kind: IntKind): bigint | null {
  if (kind !== "i64" && s.startsWith("-")) return null;
  if (!/^[+-]?[0-9]+$/.test(s)) return null;
  // BigInt of a 10 MB number takes seconds; past 20 significant digits every kind is out of range
  if (s.replace(/^[+-]?0*/, "").length > 20) return null;
  const n = BigInt(s);
  const r = INT_RANGE[kind];
  return n < r.min || n > r.max ? null : n;
}

/** 2.23+: an optional final K/M/G/T (any case) multiplies by 2^10..2^40, wrapping like C++. */
function string2IntWithUnit(s: string, kind: IntKind): bigint | null {
  let mult = 1n;
  let body = s;
  const last = s.at(-1);
  if (last !== undefined && /[A-Za-z]/.test(last)) {
    const u = last.toUpperCase();
    const shift = u === "K" ? 10n : u === "M" ? 20n : u === "G" ? 30n : u === "T" ? 40n : null;
    if (shift === null) return null;
    mult = 1n << shift;
    body = s.slice(0, -1);
  }
  const n = string2Int(body, kind);
  if (n === null) return null;
  const wrapped = BigInt.asUintN(64, n * mult);
  return kind === "i64" ? BigInt.asIntN(64, wrapped) : kind === "u32" ? BigInt.asUintN(32, wrapped) : wrapped;
}

interface ParseCtx {
  version: NixVersion;
  hardwareThreads: number;
  warn: (message: string) => void;
}

/** Parse a raw value for `def`. Throws NixError (usage/format) with Nix's text. */
function parseValue(def: SettingDef, raw: string, ctx: ParseCtx): SettingValue {
  const t = def.type;
  switch (t.kind) {
    case "bool":
      if (raw === "true" || raw === "yes" || raw === "1") return true;
      if (raw === "false" || raw === "no" || raw === "0") return false;
      throw new NixError("usage", `Boolean setting '${def.name}' has invalid value '${raw}'`);
    case "int": {
      const n = since(ctx.version, NIX.intUnitSuffix)
        ? string2IntWithUnit(raw, t.int)
        : string2Int(raw, t.int);
      if (n === null) throw new NixError("usage", `setting '${def.name}' has invalid value '${raw}'`);
      return n;
    }
    case "maxJobs": {
      if (raw === "auto") return BigInt(Math.max(1, ctx.hardwareThreads));
      const n = string2Int(raw, "u32");
      if (n === null)
        throw new NixError("usage", `configuration setting '${def.name}' should be 'auto' or an integer`);
      return n;
    }
    case "string":
      return raw;
    case "path": {
      if (raw === "") {
        if (t.allowEmpty) return "";
        throw new NixError("usage", `setting '${def.name}' cannot be empty`);
      }
      const c = canonPath(raw);
      if (c === null) throw notAbsolute(raw, null, null);
      return c;
    }
    case "strings":
      return tokenize(raw);
    case "stringSet":
      return toStringSet(tokenize(raw));
    case "stringMap": {
      const m = new Map<string, string>();
      for (const tok of tokenize(raw)) {
        const eq = tok.indexOf("=");
        if (eq < 0) continue;
        const k = tok.slice(0, eq);
        if (!m.has(k)) m.set(k, tok.slice(eq + 1));
      }
      return [...m.entries()].sort((a, b) => compareCodePoints(a[0], b[0]));
    }
    case "sandbox":
      if (raw === "true") return true;
      if (raw === "false") return false;
      if (raw === "relaxed") return "relaxed";
      throw new NixError("usage", `option '${def.name}' has invalid value '${raw}'`);
    case "experimentalFeatures": {
      const known = experimentalFeatureNames(ctx.version);
      const res = new Set<string>();
      for (const f of toStringSet(tokenize(raw))) {
        if (known.includes(f)) {
          res.add(f);
          if (f === "flakes" && known.includes("fetch-tree")) res.add("fetch-tree");
        } else if (f === "no-url-literals" && since(ctx.version, NIX.noUrlLiteralsWarning)) {
          ctx.warn(
            `experimental feature '${f}' has been stabilized and renamed; use 'lint-url-literals = fatal' setting instead`,
          );
        } else ctx.warn(`unknown experimental feature '${f}'`);
      }
      return orderFeatures([...res], ctx.version);
    }
    case "optionalPath": {
      if (raw === "") return null;
      const c = canonPath(raw);
      if (c === null) throw notAbsolute(raw, null, null);
      return c;
    }
    case "optionalString":
      return raw === "" ? null : raw;
    case "enum":
      if (t.values.includes(raw)) return raw;
      throw new NixError("usage", `option '${def.name}' has invalid value '${raw}'`);
  }
}

function orderFeatures(names: string[], version: NixVersion): string[] {
  const order = experimentalFeatureNames(version);
  return [...new Set(names)].sort((a, b) => order.indexOf(a) - order.indexOf(b));
}

/** Combine an old value with a newly parsed one (`extra-NAME`). */
function appendValue(
  def: SettingDef,
  old: SettingValue,
  add: SettingValue,
  version: NixVersion,
): SettingValue {
  const t = def.type.kind;
  const a = old as readonly string[];
  const b = add as readonly string[];
  if (t === "strings") return [...a, ...b];
  if (t === "stringSet") return toStringSet([...a, ...b]);
  if (t === "experimentalFeatures") return orderFeatures([...a, ...b], version);
  if (t === "stringMap") {
    const m = new Map(old as readonly (readonly [string, string])[]);
    for (const [k, v] of add as readonly (readonly [string, string])[]) if (!m.has(k)) m.set(k, v);
    return [...m.entries()].sort((x, y) => compareCodePoints(x[0], y[0]));
  }
  return add;
}

/** The JSON form `nix show-config --json` uses for a value. */
export function settingValueToJson(def: SettingDef, v: SettingValue, version: NixVersion): unknown {
  switch (def.type.kind) {
    case "int":
    case "maxJobs": {
      const n = v as bigint;
      return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
    }
    case "stringMap": {
      const o: Record<string, string> = Object.create(null);
      for (const [k, val] of v as readonly (readonly [string, string])[]) o[k] = val;
      return o;
    }
    case "experimentalFeatures":
      // 2.8 has no JSON serialiser for the enum: it prints the enum indices.
      return since(version, NIX.xpFeaturesJsonNames)
        ? [...(v as string[])]
        : (v as string[]).map((f) => EXPERIMENTAL_FEATURES_2_8.indexOf(f)).sort((x, y) => x - y);
    case "strings":
    case "stringSet":
      return [...(v as string[])];
    default:
      return v;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Reads that Nix does not survive

/** A read failure in words: the errno's text, or what a bounded reader refused to read. */
export function readProblemText(r: { code: string; detail?: string }): string {
  if (r.code === "ENOTREG") return `not a regular file (${r.detail ?? "not a file"})`;
  if (r.code === "EFBIG") return "larger than 16 MiB";
  if (r.code === "ETIMEDOUT" || r.code === "ECHILD") return `reading it ${r.detail ?? "failed"}`;
  return strerror(r.code);
}

/** True for the failures of {@link readProblemText} that are ours (Nix would block or read on), not an errno. */
export function isUnboundedRead(code: string): boolean {
  return code === "ENOTREG" || code === "EFBIG" || code === "ETIMEDOUT" || code === "ECHILD";
}

/**
 * The error for a read failure that a bounded reader reports instead of reading (see {@link ReadResult}):
 * Nix has no error for these, it blocks (a FIFO) or reads until it runs out of memory (`/dev/zero`), so
 * the configuration never loads. Null for an ordinary errno, which Nix swallows while applying a file.
 */
export function unboundedReadError(path: string, r: { code: string; detail?: string }): NixError | null {
  const what = r.detail ?? "not a regular file";
  switch (r.code) {
    case "ENOTREG":
      return new NixError(
        "system",
        r.detail === "a FIFO"
          ? `'${path}' is not a regular file (a FIFO): Nix blocks reading it until something writes to it, so it never gets past its configuration`
          : `'${path}' is not a regular file (${what}): Nix reads it until it ends (from /dev/zero or /dev/urandom: until it runs out of memory); not read`,
        { file: path },
      );
    case "EFBIG":
      return new NixError(
        "system",
        `'${path}' is larger than 16 MiB: not read (no real configuration is that big)`,
        {
          file: path,
        },
      );
    case "ETIMEDOUT":
    case "ECHILD":
      return new NixError("system", `reading '${path}' ${r.detail ?? "failed"}: not read`, { file: path });
    default:
      return null;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Layering

/** Nix segfaults on an include cycle; we stop at this depth instead. */
const MAX_INCLUDE_DEPTH = 500;

/** A system error that Nix swallows when it happens while applying a file (not inside NIX_CONFIG). */
class SwallowedSysError {
  constructor(readonly message: string) {}
}

interface Slot {
  value: SettingValue;
  origins: Origin[];
  layer: "default" | Layer;
  overridden: boolean;
}

/** A pending line (HEAD parses a whole file with its includes before applying anything). */
interface Pending {
  name: string;
  value: string;
  origin: Origin;
}

class Engine {
  readonly registry: SettingRegistry;
  readonly slots = new Map<string, Slot>();
  readonly assignments: Assignment[] = [];
  readonly files: ConfigFile[] = [];
  readonly warnings: ConfigWarning[] = [];
  /** Unknown names (std::map: sorted, first value kept). */
  readonly unknown = new Map<string, string>();
  layer: Layer = "system";
  private readonly parseCtx: ParseCtx;
  private currentOrigin: Origin | undefined;

  constructor(
    readonly input: LoadConfigInput,
    readonly confDir: string,
  ) {
    this.registry = new SettingRegistry(input.version);
    this.parseCtx = {
      version: input.version,
      hardwareThreads: input.machine.hardwareThreads,
      warn: (message) => this.warnings.push({ message, origin: this.currentOrigin }),
    };
    const ctx = { version: input.version, machine: input.machine, env: input.env, confDir };
    const envOrigin = (name: string): Origin => ({ kind: "env", name });
    for (const d of this.registry.settings) {
      const value = typeof d.default === "function" ? d.default(ctx) : d.default;
      let origin: Origin = { kind: "default" };
      if (d.name === "builders" && input.env["NIX_REMOTE_SYSTEMS"] !== undefined)
        origin = envOrigin("NIX_REMOTE_SYSTEMS");
      if (d.name === "store" && input.env["NIX_REMOTE"] !== undefined) origin = envOrigin("NIX_REMOTE");
      this.slots.set(d.name, { value, origins: [origin], layer: "default", overridden: false });
    }
  }

  get version(): NixVersion {
    return this.input.version;
  }

  /** `Config::set` for one assignment. Throws NixError for a bad value. */
  set(name: string, value: string, origin: Origin, overridden = this.layer !== "system"): void {
    const r = this.registry.resolve(name);
    this.assignments.push({
      name,
      setting: r ? r.def.name : null,
      op: r?.append ? "append" : "set",
      value,
      origin,
      layer: this.layer,
    });
    if (!r) {
      if (!this.unknown.has(name)) this.unknown.set(name, value);
      return;
    }
    this.applyResolved(r.def, r.append, value, origin, overridden);
  }

  private applyResolved(def: SettingDef, append: boolean, raw: string, origin: Origin, overridden: boolean) {
    if (def.xp !== undefined && since(this.version, NIX.settingXpGate) && !this.xpEnabled(def.xp)) {
      this.warnings.push({
        message: `Ignoring setting '${def.name}' because experimental feature '${def.xp}' is not enabled`,
        origin,
      });
      return;
    }
    this.currentOrigin = origin;
    let parsed: SettingValue;
    try {
      parsed = parseValue(def, raw, this.parseCtx);
    } catch (e) {
      if (e instanceof NixError && origin.kind === "file")
        throw new NixError(e.kind, e.nixMessage, { file: origin.file, line: origin.line });
      throw e;
    } finally {
      this.currentOrigin = undefined;
    }
    const slot = this.slots.get(def.name)!;
    if (append) {
      slot.value = appendValue(def, slot.value, parsed, this.version);
      slot.origins = [...slot.origins, origin];
    } else {
      slot.value = parsed;
      slot.origins = [origin];
    }
    slot.layer = this.layer;
    if (overridden) slot.overridden = true;
  }

  /**
   * 2.25+: once the files are read, `nix` points `build-hook` at itself (`setDefault`) unless the value
   * was set outside the system file: a system-file value is replaced too.
   */
  buildHookSelfDefault(): void {
    if (!since(this.version, NIX.buildHookSelf)) return;
    const slot = this.slots.get("build-hook");
    if (!slot || slot.overridden) return;
    const binDir = this.input.env["NIX_BIN_DIR"];
    const nix = binDir ? `${binDir}/nix` : (this.input.machine.selfExe ?? "nix");
    slot.value = [nix, "__build-remote"];
    slot.origins = [{ kind: "default" }];
    slot.layer = "default";
  }

  /** Whether an experimental feature is on at this point of the loading. */
  private xpEnabled(feature: string): boolean {
    const v = this.slots.get("experimental-features")?.value;
    return Array.isArray(v) && (v as readonly unknown[]).includes(feature);
  }

  /** `applyConfigFile`: read errors and system errors while applying are silently swallowed. */
  applyFile(path: string, role: ConfigFile["role"], depth: number, includedFrom?: Origin): void {
    const entry: ConfigFile = { path, role, exists: false };
    if (includedFrom) entry.includedFrom = includedFrom;
    this.files.push(entry);
    const r = this.input.fs.read(path);
    if (!r.ok) {
      const fatal = unboundedReadError(path, r);
      entry.skipped = readProblemText(r);
      if (fatal) throw fatal;
      return;
    }
    entry.exists = true;
    try {
      this.applyText(r.text, path, depth);
    } catch (e) {
      if (e instanceof SwallowedSysError) {
        entry.skipped = e.message;
        return;
      }
      throw e;
    }
  }

  /** `applyConfig` (NIX_CONFIG or file contents). */
  applyText(text: string, path: string, depth: number): void {
    if (since(this.version, NIX.confParseThenApply)) {
      const pending: Pending[] = [];
      this.collect(text, path, depth, pending);
      const isXp = (n: string) => n === "experimental-features" || n === "extra-experimental-features";
      for (const p of pending) if (isXp(p.name)) this.set(p.name, p.value, p.origin);
      const skipNixPath = this.input.env["NIX_PATH"] !== undefined;
      for (const p of pending) {
        if (isXp(p.name)) continue;
        if (skipNixPath && (p.name === "nix-path" || p.name === "extra-nix-path")) continue;
        this.set(p.name, p.value, p.origin);
      }
      return;
    }
    this.walk(text, path, depth, (name, value, origin) => this.set(name, value, origin));
  }

  /** HEAD: parse the text and its includes into `pending` without applying anything. */
  private collect(text: string, path: string, depth: number, pending: Pending[]): void {
    this.walk(
      text,
      path,
      depth,
      (name, value, origin) => pending.push({ name, value, origin }),
      (p) => {
        const r = this.input.fs.read(p);
        if (!r.ok) {
          const fatal = unboundedReadError(p, r);
          if (fatal) throw fatal;
          return; // a read failure of an include is ignored
        }
        this.collect(r.text, p, depth + 1, pending);
      },
    );
  }

  /**
   * Walk the lines of one text: assignments go to `onSet`; includes are followed (2.8: applied
   * immediately, each as its own `applyConfigFile`).
   */
  private walk(
    text: string,
    path: string,
    depth: number,
    onSet: (name: string, value: string, origin: Origin) => void,
    onInclude?: (p: string) => void,
  ): void {
    if (depth > MAX_INCLUDE_DEPTH)
      throw new NixError("system", `include nesting deeper than ${MAX_INCLUDE_DEPTH} (Nix crashes here)`, {
        file: path,
      });
    const parsed = parseConfText(text, path, this.version);
    // 2.8 applies each line as it reads it, so lines before a syntax error take effect; HEAD parses first.
    for (const l of parsed.lines) {
      const origin: Origin =
        path === "NIX_CONFIG" ? { kind: "env", name: "NIX_CONFIG" } : fileOrigin(path, l.line);
      if (l.kind === "set") {
        onSet(l.name, l.value, origin);
        continue;
      }
      if (l.resolved === null) throw l.resolveError!;
      const ex = this.input.fs.exists(l.resolved);
      if (!ex.ok) throw new SwallowedSysError(`getting status of ${l.resolved}: ${strerror(ex.code)}`);
      if (!ex.exists) {
        if (l.optional) continue;
        const q = (p: string) => quotePath(p, this.version);
        throw new NixError("format", `file ${q(l.resolved)} included from ${q(path)} not found`, {
          file: path === "NIX_CONFIG" ? null : path,
          line: l.line,
        });
      }
      const incOrigin: Origin =
        path === "NIX_CONFIG" ? { kind: "env", name: "NIX_CONFIG" } : fileOrigin(path, l.line);
      if (onInclude) {
        this.files.push({ path: l.resolved, role: "include", exists: true, includedFrom: incOrigin });
        onInclude(l.resolved);
      } else this.applyFile(l.resolved, "include", depth + 1, incOrigin);
    }
    if (parsed.error) throw parsed.error;
  }

  /** A command-line flag (after all files). */
  applyFlag(f: ConfigFlag): void {
    const via = f.via ?? "flag";
    const origin: Origin = f.origin ?? {
      kind: "flag",
      flag:
        via === "option"
          ? `--option ${f.name} ${f.value ?? ""}`
          : `--${f.name}${f.value === undefined ? "" : ` ${f.value}`}`,
    };
    if (via === "option") {
      try {
        this.set(f.name, f.value ?? "", origin, true);
      } catch (e) {
        if (e instanceof NixError && e.kind === "usage")
          this.warnings.push({ message: e.nixMessage, origin });
        else throw e;
      }
      return;
    }
    // Long flags exist for canonical names only (not aliases); booleans and sandbox are switches.
    const name = f.name;
    const plain = this.registry.settings.find((d) => d.name === name);
    const push = (setting: string, op: "set" | "append", value: string) =>
      this.assignments.push({ name, setting, op, value, origin, layer: "flag" });
    const slotSet = (def: SettingDef, value: SettingValue) => {
      const slot = this.slots.get(def.name)!;
      slot.value = value;
      slot.origins = [origin];
      slot.layer = "flag";
      slot.overridden = true;
    };
    if (plain && (plain.type.kind === "bool" || plain.type.kind === "sandbox")) {
      push(plain.name, "set", "true");
      slotSet(plain, true);
      return;
    }
    const neg = name.startsWith("no-")
      ? this.registry.settings.find((d) => d.name === name.slice(3))
      : undefined;
    if (neg && (neg.type.kind === "bool" || neg.type.kind === "sandbox")) {
      push(neg.name, "set", "false");
      slotSet(neg, false);
      return;
    }
    const rel = name.startsWith("relaxed-") ? name.slice(8) : null;
    if (rel !== null && this.registry.settings.find((d) => d.name === rel)?.type.kind === "sandbox") {
      const d = this.registry.get(rel)!;
      push(d.name, "set", "relaxed");
      slotSet(d, "relaxed");
      return;
    }
    const extra = name.startsWith("extra-")
      ? this.registry.settings.find((d) => d.name === name.slice(6))
      : undefined;
    const target = plain ?? (extra && this.registry.resolve(name)?.append ? extra : undefined);
    if (!target || f.value === undefined) throw new NixError("usage", `unrecognised flag '--${name}'`);
    push(target.name, plain ? "set" : "append", f.value);
    this.applyResolved(target, !plain, f.value, origin, true);
  }
}

function fileOrigin(file: string, line: number): Origin {
  return { kind: "file", file, line };
}

/** Join a directory and a name the way the version does (up to 2.33: string concatenation; 2.34+: fs::path). */
function joinPath(version: NixVersion, dir: string, rest: string): string {
  if (!since(version, NIX.fsPathJoin)) return `${dir}/${rest}`;
  if (dir === "") return rest;
  return dir.endsWith("/") ? `${dir}${rest}` : `${dir}/${rest}`;
}

/** The user configuration files, highest priority first (Nix applies them in reverse). */
export function userConfigFiles(
  version: NixVersion,
  env: Record<string, string | undefined>,
  passwdHome: string,
): string[] {
  const list = env["NIX_USER_CONF_FILES"];
  if (list !== undefined) {
    const parts = list.split(":");
    // 2.34+ (ExecutablePath::parse) turns empty components into "."; up to 2.33 tokenizeString drops them.
    return since(version, NIX.userConfFilesEmptyDot)
      ? list === ""
        ? []
        : parts.map((p) => (p === "" ? "." : p))
      : parts.filter((p) => p !== "");
  }
  const home = env["HOME"] ?? passwdHome;
  const configHome = env["XDG_CONFIG_HOME"] ?? joinPath(version, home, ".config");
  const nixHome =
    since(version, NIX.nixConfigHome) && env["NIX_CONFIG_HOME"] !== undefined
      ? env["NIX_CONFIG_HOME"]
      : joinPath(version, configHome, "nix");
  const dirs = (env["XDG_CONFIG_DIRS"] ?? "/etc/xdg").split(":").filter((p) => p !== "");
  return [
    joinPath(version, nixHome, "nix.conf"),
    ...dirs.map((d) => joinPath(version, joinPath(version, d, "nix"), "nix.conf")),
  ];
}

/**
 * The configuration directory: NIX_CONF_DIR (canonicalised) or the compile-time default.
 * 2.8 aborts on an empty or relative NIX_CONF_DIR (assertion / uncaught exception at start-up); HEAD
 * treats an empty one as unset.
 */
export function configDir(
  version: NixVersion,
  env: Record<string, string | undefined>,
  defaultConfDir = "/etc/nix",
): { ok: true; dir: string } | { ok: false; error: NixError } {
  let d = env["NIX_CONF_DIR"];
  if (d === "" && since(version, NIX.emptyConfDirUnset)) d = undefined;
  d ??= defaultConfDir;
  if (d === "")
    return {
      ok: false,
      error: new NixError(
        "system",
        `canonPath: assertion 'path != ""' failed (empty NIX_CONF_DIR aborts Nix)`,
      ),
    };
  const c = canonPath(d);
  return c === null ? { ok: false, error: notAbsolute(d, null, null) } : { ok: true, dir: c };
}

/**
 * Load the configuration as Nix does at start-up: the system file, then the user files (reverse order),
 * then NIX_CONFIG, then flags. Never throws.
 */
export function loadConfig(input: LoadConfigInput): ConfigView {
  const cd = configDir(input.version, input.env, input.defaultConfDir);
  const confDir = cd.ok ? cd.dir : (input.defaultConfDir ?? "/etc/nix");
  const engine = new Engine(input, confDir);
  const userFiles = userConfigFiles(input.version, input.env, input.passwdHome);
  let error: NixError | null = cd.ok ? null : cd.error;
  if (!error) {
    try {
      engine.layer = "system";
      engine.applyFile(joinPath(input.version, confDir, "nix.conf"), "system", 0);
      engine.layer = "user";
      for (const f of [...userFiles].reverse()) engine.applyFile(f, "user", 0);
      const envConf = input.env["NIX_CONFIG"];
      if (envConf !== undefined) {
        engine.layer = "env";
        engine.files.push({ path: "NIX_CONFIG", role: "env", exists: true });
        try {
          engine.applyText(envConf, "NIX_CONFIG", 0);
        } catch (e) {
          if (e instanceof SwallowedSysError) throw new NixError("system", e.message);
          throw e;
        }
      }
      engine.buildHookSelfDefault();
      engine.layer = "flag";
      for (const f of input.flags ?? []) engine.applyFlag(f);
    } catch (e) {
      error = e instanceof NixError ? e : new NixError("system", `internal error: ${String(e)}`);
    }
  }
  const warnings = [...engine.warnings];
  if (!error) {
    const names = [...engine.unknown.keys()].sort(compareCodePoints);
    for (const n of names)
      warnings.push({ message: `unknown setting '${n}'`, origin: firstOrigin(engine, n) });
  }
  const settings = new Map<string, EffectiveSetting>();
  for (const d of engine.registry.settings) {
    const s = engine.slots.get(d.name)!;
    settings.set(d.name, {
      name: d.name,
      value: settingValueToJson(d, s.value, input.version),
      origin: s.origins,
      layer: s.layer,
      overridden: s.overridden,
    });
  }
  return {
    nixVersion: input.version,
    confDir,
    userFiles,
    files: engine.files,
    assignments: engine.assignments,
    settings,
    warnings,
    error,
  };
}

function firstOrigin(engine: Engine, name: string): Origin | undefined {
  return engine.assignments.find((a) => a.name === name && a.setting === null)?.origin;
}
