/**
 * hercules-ci-agent's config file: parse it the way the agent does, apply the agent's defaults,
 * and explain what the agent would silently ignore.
 *
 * Agent behaviour modelled here (hercules-ci-agent 0.10.x, `Hercules/Agent/Config.hs`,
 * `Config/Json.hs`, `Config/Combined.hs`; TOML via the `tomland` library). See docs/agent.md.
 *
 * - The path decides the format: a path ending in `.json` (case-sensitive) is JSON, anything else TOML.
 * - Every key is optional at decode time, and a key whose value has the wrong type is treated as
 *   absent, with no message: the decoders wrap each field in an "optional" combinator that turns
 *   any decode failure into "not set". So `"nixUserIsTrusted": "true"` means false, and
 *   `concurrentTasks = "4"` means "auto".
 * - Map-valued keys (`nixSettings`, `effectMountables`) are decoded as a whole: one bad entry (for
 *   example a non-string `nixSettings` value such as `max-jobs = 0`) makes the whole map empty.
 * - Unknown keys are never read, so misspelt keys are silently dropped.
 * - JSON `null` counts as absent.
 * - TOML: tomland only sees a sub-table `[a.b]` when the table `[a]` was written explicitly and the
 *   sub-table follows it; top-level dotted keys (`nixSettings.builders = "…"`) are not tables to it.
 *   Both are silently ignored by the agent.
 * - After decoding: `baseDirectory` is required; derived paths default relative to it;
 *   `concurrentTasks` "auto" (or absent) is max(2, number of CPUs); less than 1 is fatal.
 */

import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { parse as parseToml, TomlDate, TomlError } from "smol-toml";
import { readProblemText } from "../nix/conf.js";
import { readBounded } from "../os/read.js";
import { type AgentFinding, didYouMean, finding } from "./findings.js";
import { agentNixSettingsFindings } from "./nix-settings.js";
import { lineColAt, scanJson, scanToml } from "./syntax.js";

export type AgentConfigFormat = "json" | "toml";

/** The agent's rule (`readConfig`): `.json` suffix means JSON, everything else is TOML. */
export function agentConfigFormat(file: string): AgentConfigFormat {
  return file.endsWith(".json") ? "json" : "toml";
}

/** A config file the agent itself could not parse. Names the file, and the line when known. */
export class AgentConfigError extends Error {
  readonly file: string;
  readonly line: number | null;
  readonly column: number | null;
  readonly detail: string;

  constructor(file: string, detail: string, where: { line?: number | null; column?: number | null } = {}) {
    const line = where.line ?? null;
    const column = where.column ?? null;
    const loc = line === null ? file : column === null ? `${file}:${line}` : `${file}:${line}:${column}`;
    super(`${loc}: ${detail}`);
    this.name = "AgentConfigError";
    this.file = file;
    this.line = line;
    this.column = column;
    this.detail = detail;
  }

  toJSON(): { message: string; file: string; line: number | null; column: number | null } {
    return { message: this.detail, file: this.file, line: this.line, column: this.column };
  }
}

export const AGENT_LOG_LEVELS = [
  "DebugS",
  "InfoS",
  "NoticeS",
  "WarningS",
  "ErrorS",
  "CriticalS",
  "AlertS",
  "EmergencyS",
] as const;
export const AGENT_NIX_VERBOSITIES = [
  "Error",
  "Warn",
  "Notice",
  "Info",
  "Talkative",
  "Chatty",
  "Debug",
  "Vomit",
] as const;

/** Every key the agent reads (0.10.8). */
export const AGENT_CONFIG_KEYS = [
  "apiBaseUrl",
  "nixUserIsTrusted",
  "concurrentTasks",
  "baseDirectory",
  "staticSecretsDirectory",
  "workDirectory",
  "clusterJoinTokenPath",
  "binaryCachesPath",
  "secretsJsonPath",
  "logLevel",
  "nixVerbosity",
  "labels",
  "allowInsecureBuiltinFetchers",
  "remotePlatformsWithSameFeatures",
  "effectMountables",
  "nixSettings",
] as const;
export type AgentConfigKey = (typeof AGENT_CONFIG_KEYS)[number];

/** Nix setting names people put at the top level by mistake; they belong in `nixSettings`. */
const COMMON_NIX_SETTINGS = new Set([
  "builders",
  "builders-use-substitutes",
  "cores",
  "extra-builders",
  "extra-platforms",
  "extra-substituters",
  "extra-system-features",
  "extra-trusted-public-keys",
  "max-jobs",
  "narinfo-cache-negative-ttl",
  "netrc-file",
  "sandbox",
  "substituters",
  "system",
  "system-features",
  "trusted-public-keys",
]);

export interface AgentMountable {
  readonly source: string;
  readonly readOnly: boolean;
  readonly condition: unknown;
}

/** What the agent's decoder keeps from the file: keys it read successfully, nothing else. */
export interface AgentConfigInput {
  readonly apiBaseUrl?: string;
  readonly nixUserIsTrusted?: boolean;
  readonly concurrentTasks?: number | "auto";
  readonly baseDirectory?: string;
  readonly staticSecretsDirectory?: string;
  readonly workDirectory?: string;
  readonly clusterJoinTokenPath?: string;
  readonly binaryCachesPath?: string;
  readonly secretsJsonPath?: string;
  readonly logLevel?: string;
  readonly nixVerbosity?: string;
  readonly labels?: Readonly<Record<string, unknown>>;
  readonly allowInsecureBuiltinFetchers?: boolean;
  readonly remotePlatformsWithSameFeatures?: readonly string[];
  readonly effectMountables: Readonly<Record<string, AgentMountable>>;
  readonly nixSettings: Readonly<Record<string, string>>;
}

/** The config after the agent's defaults (`finalizeConfig`). */
export interface AgentConfig {
  readonly file: string;
  readonly format: AgentConfigFormat;
  readonly apiBaseUrl: string;
  /** "config", or the environment variable the default came from, or "default". */
  readonly apiBaseUrlSource: "config" | "HERCULES_CI_API_BASE_URL" | "HERCULES_API_BASE_URL" | "default";
  readonly nixUserIsTrusted: boolean;
  readonly concurrentTasks: number;
  readonly concurrentTasksAuto: boolean;
  readonly baseDirectory: string;
  readonly staticSecretsDirectory: string;
  readonly workDirectory: string;
  readonly clusterJoinTokenPath: string;
  readonly binaryCachesPath: string;
  readonly secretsJsonPath: string;
  readonly logLevel: string;
  readonly nixVerbosity: string;
  readonly labels: Readonly<Record<string, unknown>>;
  readonly allowInsecureBuiltinFetchers: boolean;
  /** null when not set (the agent distinguishes absent from empty, but treats them alike). */
  readonly remotePlatformsWithSameFeatures: readonly string[] | null;
  readonly effectMountables: Readonly<Record<string, AgentMountable>>;
  readonly nixSettings: Readonly<Record<string, string>>;
  /** Keys the agent read from the file (after dropping mistyped ones). */
  readonly explicitKeys: readonly AgentConfigKey[];
}

export interface AgentConfigResult {
  readonly file: string;
  readonly format: AgentConfigFormat;
  /** null when the agent would refuse to start (missing `baseDirectory`, `concurrentTasks` < 1). */
  readonly config: AgentConfig | null;
  readonly input: AgentConfigInput;
  readonly findings: readonly AgentFinding[];
  /** Line of each key in the file, by dotted path (`nixSettings.builders`), where known. */
  readonly keyLines: ReadonlyMap<string, number>;
}

export interface AgentConfigOptions {
  /** CPU count for `concurrentTasks = "auto"`; defaults to affinityCpuCount() (this process's affinity). */
  readonly cpus?: number;
  /** The agent process environment, for the `apiBaseUrl` default. Defaults to an empty environment. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** If given, `nixSettings` names (without `extra-`) not in this set are flagged. */
  readonly knownNixSettings?: ReadonlySet<string>;
}

/**
 * Number of CPUs in a Linux `/proc/<pid>/status` `Cpus_allowed_list` line ("0-3,8,10-11" → 7);
 * null when the line is missing or malformed.
 */
export function cpusAllowedCount(statusText: string): number | null {
  const m = /^Cpus_allowed_list:[ \t]*(\S*)[ \t]*$/m.exec(statusText);
  if (!m) return null;
  let n = 0;
  for (const part of m[1]!.split(",")) {
    const r = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!r) return null;
    const a = Number(r[1]);
    const b = r[2] === undefined ? a : Number(r[2]);
    if (b < a) return null;
    n += b - a + 1;
  }
  return n > 0 ? n : null;
}

/**
 * The CPU count the agent's "auto" uses: GHC's `getNumProcessors`, which on Linux counts the
 * process's CPU affinity mask (`sched_getaffinity`, GHC `rts/posix/OSThreads.c`
 * `getNumberOfProcessors`), not every CPU of the machine and not a cgroup CPU quota. We read the same
 * mask from `/proc/<pid>/status` (the agent's pid when known, else our own, which is the machine's
 * default affinity unless the tool itself was pinned). Elsewhere (macOS: GHC asks sysctl for the
 * logical CPUs) we use Node's availableParallelism(); on Node 20 (libuv 1.46) that is also the
 * affinity count, but newer libuv also applies cgroup quotas, which GHC does not, hence /proc first.
 */
export function affinityCpuCount(pid: number | "self" = "self"): number {
  try {
    const n = cpusAllowedCount(readFileSync(`/proc/${pid}/status`, "utf8"));
    if (n !== null) return n;
  } catch {
    // no /proc (macOS) or the process is gone
  }
  return availableParallelism();
}

/** Haskell `System.FilePath.</>` on POSIX: an absolute right side wins. */
function joinPath(a: string, b: string): string {
  if (b.startsWith("/") || a === "") return b;
  return a.endsWith("/") ? a + b : `${a}/${b}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function describeType(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (v instanceof Date) return "a date";
  if (typeof v === "bigint") return "an integer";
  if (typeof v === "number") return Number.isInteger(v) ? "a number" : "a float";
  if (typeof v === "object") return "a table/object";
  return `a ${typeof v}`;
}

function showValue(v: unknown): string {
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "string") return JSON.stringify(v);
  try {
    return JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x)) ?? String(v);
  } catch {
    return String(v);
  }
}

/** Read and parse an agent config file. `root` prefixes the path for reading (fixture trees). */
export function loadAgentConfig(
  file: string,
  opts: AgentConfigOptions & { readonly root?: string } = {},
): AgentConfigResult {
  const root = (opts.root ?? "").replace(/\/+$/, "");
  const readPath = root ? joinPath(root, file.replace(/^\/+/, "")) : file;
  // bounded: the agent's config may sit where the agent user can write (a FIFO, /dev/zero, 2 GB)
  const r = readBounded(readPath);
  if (!r.ok) {
    const code = r.code;
    throw new AgentConfigError(
      file,
      code === "ENOENT" ? "no such file" : code === "EACCES" ? "permission denied" : readProblemText(r),
    );
  }
  const text = r.text;
  return parseAgentConfig(text, file, opts);
}

/**
 * Parse config text as the agent would parse the file `file`. Throws AgentConfigError on syntax
 * errors (as the agent does); everything else is reported as findings.
 */
export function parseAgentConfig(
  text: string,
  file: string,
  opts: AgentConfigOptions = {},
): AgentConfigResult {
  const format = agentConfigFormat(file);
  const findings: AgentFinding[] = [];
  let root: Record<string, unknown>;
  let keyLines: Map<string, number>;
  if (format === "json") {
    const scan = scanJson(text);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      if (!scan.ok) {
        const at = lineColAt(text, scan.offset);
        throw new AgentConfigError(file, `JSON syntax error: ${scan.message}`, at);
      }
      throw new AgentConfigError(file, `JSON syntax error: ${(e as Error).message}`);
    }
    keyLines = scan.ok ? new Map(scan.keyLines) : new Map();
    if (!isPlainObject(value)) {
      findings.push(
        finding(
          "agent-config-not-object",
          "error",
          `${file} holds ${describeType(value)}, not a JSON object; the agent reads no settings from it.`,
          'Write the settings as a JSON object: { "baseDirectory": "/var/lib/hercules-ci-agent" }.',
          { file },
        ),
      );
      root = {};
    } else root = value;
  } else {
    let value: Record<string, unknown>;
    try {
      value = parseToml(text, { integersAsBigInt: true }) as Record<string, unknown>;
    } catch (e) {
      if (e instanceof TomlError) {
        const detail = e.message.split("\n")[0]!.replace(/^Invalid TOML document: /, "");
        throw new AgentConfigError(file, `TOML syntax error: ${detail}`, { line: e.line, column: e.column });
      }
      throw new AgentConfigError(file, `TOML syntax error: ${(e as Error).message}`);
    }
    const pitfalls = tomlPitfalls(text, file);
    const rejected = tomlandRejects(value, pitfalls.keyLines, text);
    if (rejected) {
      throw new AgentConfigError(
        file,
        `TOML the agent cannot parse: ${rejected.reason}. TOML 1.0 allows it, but the agent's TOML library (tomland) does not, so the agent stops with a parse error`,
        { line: rejected.line },
      );
    }
    keyLines = pitfalls.keyLines;
    findings.push(...pitfalls.findings);
    root = plainify(pruneLost(value, pitfalls.lost), false) as Record<string, unknown>;
  }
  const lineOf = (path: string): number | null => keyLines.get(path) ?? null;
  const { input, explicitKeys } = decode(root, format, file, lineOf, findings, opts);
  const config = finalize(input, explicitKeys, file, format, lineOf, findings, opts);
  return { file, format, config, input, findings, keyLines };
}

// ---------------------------------------------------------------------------------------------
// TOML pitfalls

interface TomlPitfalls {
  readonly findings: AgentFinding[];
  /** Paths the agent's TOML library does not see. */
  readonly lost: string[][];
  readonly keyLines: Map<string, number>;
}

const TABLE_KEYS = new Set(["labels", "effectMountables", "nixSettings"]);

/**
 * Replay tomland's grouping of table headers: a header belongs to the nearest preceding open
 * header that is a prefix of it; if its name relative to that parent has more than one piece, it is
 * stored under a dotted key that the agent's table lookups never find.
 */
function tomlPitfalls(text: string, file: string): TomlPitfalls {
  const findings: AgentFinding[] = [];
  const lost: string[][] = [];
  const keyLines = new Map<string, number>();
  const stack: string[][] = [];
  let current: string[] = [];
  let inHeader = false;
  const isPrefix = (p: readonly string[], k: readonly string[]): boolean =>
    p.length < k.length && p.every((x, j) => x === k[j]);
  for (const st of scanToml(text)) {
    if (st.kind === "kv") {
      const path = [...current, ...st.keys];
      const dotted = path.join(".");
      if (!keyLines.has(dotted)) keyLines.set(dotted, st.line);
      if (st.keys.length > 1 && TABLE_KEYS.has(path[0]!)) {
        if (!inHeader) {
          lost.push(path);
          findings.push(
            finding(
              "agent-config-toml-dotted-key",
              "warning",
              `${st.keys.join(".")} is a dotted key at the top level; the agent's TOML library does not treat it as part of the table [${st.keys[0]}], so the agent ignores it without warning.`,
              `Write a table instead: [${st.keys[0]}] on its own line, then ${st.keys.slice(1).join(".")} = … below it (or use JSON).`,
              { file, line: st.line },
            ),
          );
        } else {
          findings.push(
            finding(
              "agent-config-toml-dotted-key",
              "warning",
              `${st.keys.join(".")} inside [${current.join(".")}] is a dotted key; the agent's TOML library keeps it as the single key "${st.keys.join(".")}", not as a nested table.`,
              "Write the nested table as its own header, directly after its parent table (or use JSON).",
              { file, line: st.line },
            ),
          );
        }
      }
      continue;
    }
    inHeader = true;
    const keys = [...st.keys];
    if (!keyLines.has(keys.join("."))) keyLines.set(keys.join("."), st.line);
    while (stack.length > 0 && !isPrefix(stack[stack.length - 1]!, keys)) stack.pop();
    const parent = stack.length > 0 ? stack[stack.length - 1]! : [];
    const relative = keys.slice(parent.length);
    stack.push(keys);
    current = keys;
    if (relative.length > 1 && st.kind === "table") {
      const missing = [...parent, relative[0]!].join(".");
      if (TABLE_KEYS.has(keys[0]!)) lost.push(keys);
      findings.push(
        finding(
          "agent-config-toml-intermediate-table",
          TABLE_KEYS.has(keys[0]!) ? "warning" : "info",
          `[${keys.join(".")}] is written without an explicit [${missing}] table before it; the agent's TOML library ignores such sub-tables without warning.`,
          `Add a line [${missing}] directly before [${keys.join(".")}] (or switch to JSON, which the agent recommends).`,
          { file, line: st.line },
        ),
      );
    }
  }
  return { findings, lost, keyLines };
}

/** smol-toml tables have a null prototype; make ordinary objects. Optionally turn bigints into numbers. */
function plainify(v: unknown, bigints: boolean): unknown {
  if (bigints && typeof v === "bigint") return Number(v);
  if (Array.isArray(v)) return v.map((x) => plainify(x, bigints));
  if (typeof v === "object" && v !== null && !(v instanceof Date)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = plainify(x, bigints);
    return out;
  }
  return v;
}

function pruneLost(value: Record<string, unknown>, lost: readonly string[][]): Record<string, unknown> {
  if (lost.length === 0) return value;
  const clone = structuredClone(value) as Record<string, unknown>;
  for (const path of lost) {
    let obj: unknown = clone;
    for (let j = 0; j < path.length - 1; j++) {
      obj = isPlainObject(obj) ? obj[path[j]!] : undefined;
    }
    if (isPlainObject(obj)) delete obj[path[path.length - 1]!];
  }
  return clone;
}

// ---------------------------------------------------------------------------------------------
// Decoding

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** What every key decoder shares: the result being built, the findings, and where a key is written. */
interface Decoder {
  readonly input: Mutable<AgentConfigInput>;
  readonly explicitKeys: AgentConfigKey[];
  readonly findings: AgentFinding[];
  readonly format: AgentConfigFormat;
  readonly file: string;
  readonly lineOf: (path: string) => number | null;
  readonly opts: AgentConfigOptions;
}

type StringKey =
  | "apiBaseUrl"
  | "baseDirectory"
  | "staticSecretsDirectory"
  | "workDirectory"
  | "clusterJoinTokenPath"
  | "binaryCachesPath"
  | "secretsJsonPath";

function decode(
  root: Record<string, unknown>,
  format: AgentConfigFormat,
  file: string,
  lineOf: (path: string) => number | null,
  findings: AgentFinding[],
  opts: AgentConfigOptions,
): { input: AgentConfigInput; explicitKeys: AgentConfigKey[] } {
  const d: Decoder = {
    input: { effectMountables: {}, nixSettings: {} },
    explicitKeys: [],
    findings,
    format,
    file,
    lineOf,
    opts,
  };
  const known = new Set<string>(AGENT_CONFIG_KEYS);
  for (const [key, v] of Object.entries(root)) {
    if (!known.has(key)) {
      unknownKey(d, key);
      continue;
    }
    if (v === null) continue; // JSON null: absent, as the agent treats it
    decodeKey(d, key as AgentConfigKey, v);
  }
  return { input: d.input, explicitKeys: d.explicitKeys };
}

function decodeKey(d: Decoder, k: AgentConfigKey, v: unknown): void {
  switch (k) {
    case "apiBaseUrl":
    case "baseDirectory":
    case "staticSecretsDirectory":
    case "workDirectory":
    case "clusterJoinTokenPath":
    case "binaryCachesPath":
    case "secretsJsonPath":
      decodeString(d, k, v);
      break;
    case "nixUserIsTrusted":
    case "allowInsecureBuiltinFetchers":
      if (typeof v === "boolean") accept(d, k, v);
      else ignored(d, k, v, "a boolean (true or false, unquoted)", "uses the default (false)");
      break;
    case "concurrentTasks":
      decodeConcurrentTasks(d, v);
      break;
    case "logLevel":
    case "nixVerbosity":
      decodeEnum(d, k, v);
      break;
    case "labels":
      decodeLabels(d, v);
      break;
    case "remotePlatformsWithSameFeatures":
      decodePlatforms(d, v);
      break;
    case "effectMountables":
      decodeMountables(d, v);
      break;
    case "nixSettings":
      decodeNixSettings(d, v);
      break;
  }
}

/** Records a decoded value for key k. */
function accept<K extends AgentConfigKey>(d: Decoder, k: K, v: AgentConfigInput[K]): void {
  d.input[k] = v;
  d.explicitKeys.push(k);
}

/** A value of the wrong type: the agent ignores it without warning. */
function ignored(d: Decoder, key: string, v: unknown, expected: string, consequence: string): void {
  d.findings.push(
    finding(
      "agent-config-type",
      "warning",
      `${key} is ${describeType(v)} (${showValue(v)}), but the agent expects ${expected}; it ignores the value without warning and ${consequence}.`,
      `Write ${key} as ${expected}.`,
      { file: d.file, line: d.lineOf(key) },
    ),
  );
}

function unknownKey(d: Decoder, key: string): void {
  const suggestion = didYouMean(key, AGENT_CONFIG_KEYS);
  const nixLike = COMMON_NIX_SETTINGS.has(key) || d.opts.knownNixSettings?.has(key.replace(/^extra-/, ""));
  d.findings.push(
    finding(
      "agent-config-unknown-key",
      "warning",
      `Unknown key ${key}: the agent does not read it and ignores it without warning.` +
        (suggestion ? ` Did you mean ${suggestion}?` : "") +
        (nixLike && !suggestion ? ` ${key} is a Nix setting.` : ""),
      suggestion
        ? `Rename ${key} to ${suggestion}.`
        : nixLike
          ? `Move it into nixSettings: "nixSettings": { "${key}": "…" } (values are strings).`
          : `Remove ${key}, or check the key list at https://docs.hercules-ci.com/hercules-ci-agent/agent-config.`,
      { file: d.file, line: d.lineOf(key) },
    ),
  );
}

function decodeString(d: Decoder, k: StringKey, v: unknown): void {
  if (typeof v === "string") accept(d, k, v);
  else ignored(d, k, v, "a string", k === "baseDirectory" ? "treats it as missing" : "uses the default");
}

function decodeConcurrentTasks(d: Decoder, v: unknown): void {
  const k = "concurrentTasks";
  const isInt =
    typeof v === "bigint" || (d.format === "json" && typeof v === "number" && Number.isInteger(v));
  if (d.format === "json" && typeof v === "number") {
    // The JSON codec reads an Int through lens-aeson's _Integer (floor of any number) and then
    // Numeric.Lens.integral (fails outside Int): 4.5 means 4, 0.5 means 0 (fatal), and a number
    // beyond a 64-bit Int fails, which the optional combinator turns into "auto".
    const n = jsonConcurrentTasks(v);
    if (n === null) {
      ignored(d, k, v, 'an integer that fits a 64-bit Int, or the string "auto"', 'uses "auto"');
      return;
    }
    accept(d, k, n);
    if (!Number.isInteger(v)) {
      d.findings.push(
        finding(
          "agent-config-concurrent-tasks-float",
          "warning",
          `concurrentTasks = ${v} is not a whole number; the agent's JSON decoder rounds it down to ${n}${n < 1 ? ", which is below 1, so the agent refuses to start" : ""}.`,
          `Write concurrentTasks as a whole number (at least 2) or "auto".`,
          { file: d.file, line: d.lineOf(k) },
        ),
      );
    }
  } else if (typeof v === "bigint" && (v >= 2n ** 63n || v < -(2n ** 63n))) {
    // tomland `_Int = _BoundedInteger >>> _Integer` (Toml/Codec/BiMap/Conversion.hs:261-299)
    ignored(d, k, v, 'an integer that fits a 64-bit Int, or the string "auto"', 'uses "auto"');
  } else if (isInt) {
    accept(d, k, typeof v === "bigint" ? Number(v) : (v as number));
  } else if (v === "auto") {
    accept(d, k, "auto");
  } else ignored(d, k, v, 'an integer or the string "auto"', 'uses "auto"');
}

function decodeEnum(d: Decoder, k: "logLevel" | "nixVerbosity", v: unknown): void {
  const allowed: readonly string[] = k === "logLevel" ? AGENT_LOG_LEVELS : AGENT_NIX_VERBOSITIES;
  if (typeof v === "string" && allowed.includes(v)) {
    accept(d, k, v as AgentConfigInput[typeof k]);
    return;
  }
  const sug = typeof v === "string" ? didYouMean(v, allowed) : null;
  d.findings.push(
    finding(
      "agent-config-enum",
      "warning",
      `${k} = ${showValue(v)} is not one of ${allowed.join(", ")} (case-sensitive); the agent ignores it without warning and uses ${k === "logLevel" ? "InfoS" : "Talkative"}.` +
        (sug ? ` Did you mean ${sug}?` : ""),
      `Set ${k} to one of ${allowed.join(", ")}.`,
      { file: d.file, line: d.lineOf(k) },
    ),
  );
}

function decodeLabels(d: Decoder, v: unknown): void {
  const k = "labels";
  const dropped = isPlainObject(v) && d.format === "toml" ? tomlLabelsProblem(v, ["labels"]) : null;
  if (dropped) {
    d.findings.push(
      finding(
        "agent-config-labels-dropped",
        "warning",
        `${dropped.path.join(".")} is ${dropped.what}, which the agent cannot turn into a JSON label value. It decodes labels as a whole, so it ignores ALL labels, without warning.`,
        dropped.what.includes("array of tables")
          ? "Write the value as a table or a list of plain values, or use a JSON config."
          : 'Quote date and time values under labels (e.g. "2026-01-01"), or use a JSON config.',
        { file: d.file, line: d.lineOf(dropped.path.join(".")) ?? d.lineOf(k) },
      ),
    );
    return;
  }
  if (isPlainObject(v)) accept(d, k, plainify(v, true) as Record<string, unknown>);
  else ignored(d, k, v, "a table/object", "uses no labels");
}

function decodePlatforms(d: Decoder, v: unknown): void {
  const k = "remotePlatformsWithSameFeatures";
  if (!(Array.isArray(v) && v.every((x) => typeof x === "string"))) {
    ignored(d, k, v, "a list of strings", "advertises no remote platforms");
    return;
  }
  accept(d, k, v as string[]);
  for (const p of v as string[]) {
    if (!/^[A-Za-z0-9_.]+-[A-Za-z0-9_.-]+$/.test(p)) {
      d.findings.push(
        finding(
          "agent-config-platform-format",
          "warning",
          `remotePlatformsWithSameFeatures entry ${JSON.stringify(p)} does not look like a Nix system type (such as aarch64-darwin); the agent advertises it as given.`,
          "Use Nix system types: x86_64-linux, aarch64-linux, x86_64-darwin, aarch64-darwin.",
          { file: d.file, line: d.lineOf(k) },
        ),
      );
    }
  }
}

function decodeMountables(d: Decoder, v: unknown): void {
  const k = "effectMountables";
  const problem = mountablesProblem(v);
  if (problem !== null) {
    d.findings.push(
      finding(
        "agent-config-mountables-dropped",
        "error",
        `effectMountables: ${problem}. The agent decodes the map as a whole, so it ignores every mountable without warning.`,
        "Give each mountable a string source, a boolean readOnly and a condition.",
        { file: d.file, line: d.lineOf(k) },
      ),
    );
    return;
  }
  accept(d, k, plainify(v, true) as Record<string, AgentMountable>);
  for (const [name, m] of Object.entries(v as Record<string, Record<string, unknown>>)) {
    for (const mk of Object.keys(m)) {
      if (["source", "readOnly", "condition"].includes(mk)) continue;
      const sug = didYouMean(mk, ["source", "readOnly", "condition"]);
      d.findings.push(
        finding(
          "agent-config-unknown-key",
          "warning",
          `Unknown key effectMountables.${name}.${mk}: the agent ignores it.` +
            (sug ? ` Did you mean ${sug}?` : ""),
          sug ? `Rename it to ${sug}.` : "Remove it; a mountable has source, readOnly and condition.",
          {
            file: d.file,
            line: d.lineOf(`effectMountables.${name}.${mk}`) ?? d.lineOf(`effectMountables.${name}`),
          },
        ),
      );
    }
  }
}

function decodeNixSettings(d: Decoder, v: unknown): void {
  const k = "nixSettings";
  if (!isPlainObject(v)) {
    ignored(d, k, v, "a table/object of strings", "applies no nixSettings");
    return;
  }
  const bad = Object.entries(v).filter(([, x]) => typeof x !== "string");
  if (bad.length === 0) {
    accept(d, k, v as Record<string, string>);
    return;
  }
  for (const [name, x] of bad) {
    const suggested =
      typeof x === "boolean" || typeof x === "bigint" || typeof x === "number"
        ? JSON.stringify(String(x))
        : Array.isArray(x)
          ? JSON.stringify(x.map((e) => String(e)).join(" "))
          : null;
    d.findings.push(
      finding(
        "agent-config-nix-settings-non-string",
        "error",
        `nixSettings.${name} is ${describeType(x)} (${showValue(x)}); nixSettings values must be strings. Because of it the agent ignores ALL of nixSettings, without warning.`,
        suggested
          ? `Write it as a string: ${name} = ${suggested}${Array.isArray(x) ? " (lists are space-separated)" : ""}.`
          : `Write ${name} as a string value, as in nix.conf.`,
        { file: d.file, line: d.lineOf(`nixSettings.${name}`) ?? d.lineOf(k) },
      ),
    );
  }
}

/** The type tomland gives a TOML value (`Toml/Type/UValue.hs`), plus "table" for inline tables. */
function tomlandType(x: unknown): string {
  if (typeof x === "boolean") return "a boolean";
  if (typeof x === "bigint") return "an integer";
  if (typeof x === "number") return "a float";
  if (typeof x === "string") return "a string";
  if (x instanceof TomlDate) return tomlDateKind(x);
  if (Array.isArray(x)) return "an array";
  return "a table";
}

/**
 * The first value in a parsed TOML document (smol-toml, integers as bigint) that tomland refuses to
 * parse, with a reason and the line of its key when known; null when tomland would accept the values.
 * tomland reads an array's first element and parses the rest with that element's parser, then checks
 * that all elements have one type (`Parser/Value.hs` `arrayP`, `anyValueP`; `Type/UValue.hs`
 * `typeCheck`): `[1, "a"]`, `[1, 2.0]` and a date mixed with a date-time fail. Arrays of inline tables
 * are only allowed as a key's whole value (`Parser/Item.hs` `inlineTableArrayP`), and an inline table
 * cannot hold another one (found by the statement scanner).
 */
export function tomlandRejects(
  value: Record<string, unknown>,
  keyLines: ReadonlyMap<string, number>,
  text: string,
): { reason: string; line: number | null } | null {
  const lineOf = (path: readonly string[]): number | null => {
    for (let n = path.length; n > 0; n--) {
      const l = keyLines.get(path.slice(0, n).join("."));
      if (l !== undefined) return l;
    }
    return null;
  };
  const walk = (
    v: unknown,
    path: string[],
    inArray: boolean,
  ): { reason: string; line: number | null } | null => {
    if (Array.isArray(v)) {
      const types = [...new Set(v.map(tomlandType))];
      const where = path.join(".") || "(top level)";
      if (types.length > 1)
        return { reason: `${where} is an array that mixes ${types.join(" and ")}`, line: lineOf(path) };
      if (types[0] === "a table" && inArray)
        return { reason: `${where} has an array of inline tables inside an array`, line: lineOf(path) };
      for (const x of v) {
        const r = walk(x, path, Array.isArray(x));
        if (r) return r;
      }
      return null;
    }
    if (isPlainObject(v)) {
      for (const [k, x] of Object.entries(v)) {
        const r = walk(x, [...path, k], false);
        if (r) return r;
      }
    }
    return null;
  };
  const found = walk(value, [], false);
  if (found) return found;
  const nested = scanToml(text).find((st) => st.kind === "kv" && st.nestedInlineTable);
  return nested
    ? {
        reason: `${nested.keys.join(".")} nests an inline table inside an inline table or inner array`,
        line: nested.line,
      }
    : null;
}

/** A smol-toml date/time as tomland names its kind. */
function tomlDateKind(d: TomlDate): string {
  if (d.isDate()) return "a local date";
  if (d.isTime()) return "a local time";
  return d.isLocal() ? "a local date-time" : "an offset date-time";
}

/**
 * The first value under `labels` that the agent's TOML codec cannot embed as JSON
 * (`Config/Toml.hs` `embedJson` / `anyValueToJSON`): a date or time value, or an array of tables
 * (`[[labels.x]]` or `x = [{…}]`), which is neither a value nor a table to tomland. The codec runs
 * over every key of the table (tomland `internalTableMap`), so one such value fails the whole map.
 */
export function tomlLabelsProblem(v: unknown, path: string[]): { path: string[]; what: string } | null {
  if (v instanceof TomlDate) return { path, what: tomlDateKind(v) };
  if (Array.isArray(v)) {
    if (v.some((x) => isPlainObject(x))) return { path, what: "an array of tables" };
    for (const x of v) {
      const p = tomlLabelsProblem(x, path);
      if (p) return { path: p.path, what: `an array holding ${p.what}` };
    }
    return null;
  }
  if (isPlainObject(v)) {
    for (const [k, x] of Object.entries(v)) {
      const p = tomlLabelsProblem(x, [...path, k]);
      if (p) return p;
    }
  }
  return null;
}

/**
 * What the agent's JSON codec makes of a JSON number for an Int field (`Config/Json.hs` `int`:
 * lens-aeson `_Integer`, which is `floor`, then `integral` into a 64-bit Int). null when it does not
 * fit, which the field's optional combinator turns into "absent". JavaScript numbers lose precision
 * beyond 2^53, so values within a few thousand of ±2^63 may be judged differently; nobody writes those.
 */
export function jsonConcurrentTasks(v: number): number | null {
  if (!Number.isFinite(v)) return null;
  const n = Math.floor(v);
  return n >= 2 ** 63 || n < -(2 ** 63) ? null : n;
}

function mountablesProblem(v: unknown): string | null {
  if (!isPlainObject(v)) return `expected a table/object, got ${describeType(v)}`;
  for (const [name, m] of Object.entries(v)) {
    if (!isPlainObject(m)) return `${name} is ${describeType(m)}, not a table/object`;
    if (typeof m.source !== "string") return `${name}.source is missing or not a string`;
    if (typeof m.readOnly !== "boolean") return `${name}.readOnly is missing or not a boolean`;
    if (!("condition" in m) || m.condition === undefined) return `${name}.condition is missing`;
  }
  return null;
}

function finalize(
  input: AgentConfigInput,
  explicitKeys: AgentConfigKey[],
  file: string,
  format: AgentConfigFormat,
  lineOf: (path: string) => number | null,
  findings: AgentFinding[],
  opts: AgentConfigOptions,
): AgentConfig | null {
  findings.push(...agentNixSettingsFindings(input.nixSettings, file, lineOf, opts.knownNixSettings));
  let fatal = false;
  const baseDirectory = input.baseDirectory;
  if (baseDirectory === undefined) {
    fatal = true;
    findings.push(
      finding(
        "agent-config-base-directory-missing",
        "error",
        `${file} does not set baseDirectory (as a string); the agent refuses to start without it.`,
        format === "json"
          ? 'Add "baseDirectory": "/var/lib/hercules-ci-agent".'
          : 'Add baseDirectory = "/var/lib/hercules-ci-agent" at the top of the file.',
        { file },
      ),
    );
  }
  const cpus = opts.cpus ?? affinityCpuCount();
  const auto = input.concurrentTasks === undefined || input.concurrentTasks === "auto";
  const concurrentTasks = auto ? Math.max(2, cpus) : (input.concurrentTasks as number);
  if (concurrentTasks < 1) {
    fatal = true;
    findings.push(
      finding(
        "agent-config-concurrent-tasks",
        "error",
        `concurrentTasks = ${concurrentTasks}; the agent refuses to start unless it is at least 1.`,
        'Set concurrentTasks to "auto" or a number of at least 2 (import-from-derivation needs 2).',
        { file, line: lineOf("concurrentTasks") },
      ),
    );
  } else if (concurrentTasks === 1) {
    findings.push(
      finding(
        "agent-config-concurrent-tasks-one",
        "warning",
        "concurrentTasks = 1: evaluation with import-from-derivation needs at least 2 tasks in the cluster, or it can deadlock.",
        'Set concurrentTasks to "auto" or at least 2.',
        { file, line: lineOf("concurrentTasks") },
      ),
    );
  }
  for (const key of [
    "baseDirectory",
    "staticSecretsDirectory",
    "workDirectory",
    "clusterJoinTokenPath",
    "binaryCachesPath",
    "secretsJsonPath",
  ] as const) {
    const v = input[key];
    if (v !== undefined && !v.startsWith("/")) {
      findings.push(
        finding(
          "agent-config-relative-path",
          "warning",
          `${key} = ${JSON.stringify(v)} is relative; the agent resolves it against its working directory, which depends on how the service is started.`,
          `Use an absolute path for ${key}.`,
          { file, line: lineOf(key) },
        ),
      );
    }
  }
  if (fatal || baseDirectory === undefined) return null;
  const env = opts.env ?? {};
  let apiBaseUrl: string;
  let apiBaseUrlSource: AgentConfig["apiBaseUrlSource"];
  if (input.apiBaseUrl !== undefined) {
    apiBaseUrl = input.apiBaseUrl;
    apiBaseUrlSource = "config";
  } else if (env.HERCULES_CI_API_BASE_URL !== undefined) {
    apiBaseUrl = env.HERCULES_CI_API_BASE_URL;
    apiBaseUrlSource = "HERCULES_CI_API_BASE_URL";
  } else if (env.HERCULES_API_BASE_URL !== undefined) {
    apiBaseUrl = env.HERCULES_API_BASE_URL;
    apiBaseUrlSource = "HERCULES_API_BASE_URL";
  } else {
    apiBaseUrl = "https://hercules-ci.com";
    apiBaseUrlSource = "default";
  }
  const staticSecretsDirectory = input.staticSecretsDirectory ?? joinPath(baseDirectory, "secrets");
  return {
    file,
    format,
    apiBaseUrl,
    apiBaseUrlSource,
    nixUserIsTrusted: input.nixUserIsTrusted ?? false,
    concurrentTasks,
    concurrentTasksAuto: auto,
    baseDirectory,
    staticSecretsDirectory,
    workDirectory: input.workDirectory ?? joinPath(baseDirectory, "work"),
    clusterJoinTokenPath:
      input.clusterJoinTokenPath ?? joinPath(staticSecretsDirectory, "cluster-join-token.key"),
    binaryCachesPath: input.binaryCachesPath ?? joinPath(staticSecretsDirectory, "binary-caches.json"),
    secretsJsonPath: input.secretsJsonPath ?? joinPath(staticSecretsDirectory, "secrets.json"),
    logLevel: input.logLevel ?? "InfoS",
    nixVerbosity: input.nixVerbosity ?? "Talkative",
    labels: input.labels ?? {},
    allowInsecureBuiltinFetchers: input.allowInsecureBuiltinFetchers ?? false,
    remotePlatformsWithSameFeatures: input.remotePlatformsWithSameFeatures ?? null,
    effectMountables: input.effectMountables,
    nixSettings: input.nixSettings,
    explicitKeys,
  };
}
