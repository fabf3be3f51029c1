/**
 * The machines engine: the `builders` setting and machines files, parsed exactly as Nix 2.8 and current
 * Nix ("HEAD") parse them (`src/libstore/machines.cc`), as pure functions over an injected file reader.
 *
 * Nix first expands the whole spec (including `@file` includes) into machine rows, then parses the rows;
 * the first exception kills the build hook. We keep going past errors so that a linter can report every bad
 * row with its file and line, but `error` is exactly what Nix raises.
 */

import { isPublicKeyLine, nixBase64Decode } from "./base64.js";
import { encodeBytes } from "./bytes.js";
import { readProblemText, unboundedReadError } from "./conf.js";
import { strerror } from "./errors.js";
import { excerpt, looksLikePrivateKey } from "./redact.js";
import { normaliseStoreUri, sshAuthority } from "./store-uri.js";
import { isKnownSystem, suggestSystem } from "./systems.js";
import type { NixVersion } from "./version.js";
import { NIX, since } from "./versions.js";

/** A minimal file reader (same shape as the one in conf.ts). `code` is an errno name: ENOENT, EISDIR, EACCES… */
export interface Reader {
  read(path: string): { ok: true; text: string } | { ok: false; code: string; detail?: string };
}

export interface Where {
  file: string | null;
  line: number | null;
}

export interface Machine {
  /** Column 1 after normalisation (`nix@host` → `ssh://nix@host`); what 2.8 prints and locks on. */
  storeUri: string;
  /** 2.8: file order, duplicates kept; HEAD: sorted set. */
  systemTypes: string[];
  sshKey: string | null;
  maxJobs: number;
  /** 2.8: an unsigned integer, 0 → 1; HEAD: a float, 0 → 1. */
  speedFactor: number;
  /** Sorted, de-duplicated. */
  supportedFeatures: string[];
  /** Sorted, de-duplicated. */
  mandatoryFeatures: string[];
  /** Still base64-encoded, as Nix keeps it; null when unset. */
  sshPublicHostKey: string | null;
  origin: Where;
  /** The row as Nix sees it (2.8: untrimmed, comment cut; HEAD: trimmed). */
  row: string;
}

export interface BuildersError {
  /** Nix's exact text, without `error: ` (ANSI colour codes removed). Ours when `nix` is false. */
  message: string;
  file: string | null;
  line: number | null;
  /** The machine row (or the `@…` entry for read errors). */
  row: string;
  /** Trace lines Nix prints under the message with --show-trace (HEAD only). */
  trace?: string[];
  /** Nix's exception class. */
  kind: "FormatError" | "UsageError" | "SysError" | "ours";
  /** False when Nix has no message for this (e.g. an include cycle, where Nix recurses until it crashes). */
  nix: boolean;
}

/** Our own findings: legal for Nix, but almost certainly not what the user meant. */
export interface BuildersWarning {
  code:
    | "host-key-not-public-key"
    | "unknown-system"
    | "extra-fields"
    | "max-jobs-zero"
    | "invalid-ssh-host"
    | "port-unsupported"
    | "not-an-include"
    | "semicolon-in-comment"
    | "relative-ssh-key"
    | "speed-factor-fraction";
  message: string;
  file: string | null;
  line: number | null;
  row: string;
  suggestion?: string;
  /**
   * `semicolon-in-comment` (2.8 splitting): the rows after the `;` on that line, still comment to the
   * reader but machines to Nix. Their own findings follow from this one.
   */
  tails?: string[];
}

export interface ParseBuildersInput {
  spec: string;
  version: NixVersion;
  /** `settings.thisSystem`: the default of the systems column. */
  defaultSystem: string;
  fs: Reader;
  /** The directory relative `@` paths are resolved from; the build hook runs in `/`. */
  cwd?: string;
  /** Where the `builders` value came from (a nix.conf file and line), for inline rows. */
  origin?: Where;
}

export interface IncludeRecord {
  /** The path as written (trimmed), before resolution against cwd. */
  path: string;
  /** The path handed to the reader. */
  resolved: string;
  found: boolean;
  from: Where;
  /**
   * Why it could not be read, when it exists: an errno's text, `not a regular file (a FIFO)`, `larger than
   * 16 MiB`, or `a private key` (read, but none of it used or shown).
   */
  problem?: string;
}

export interface BuildersResult {
  /** Every row that parsed (Nix itself gets none when `error` is set: the hook dies). */
  machines: Machine[];
  /** The first fatal error, which is what Nix raises. */
  error: BuildersError | null;
  /** Every bad row or unreadable include we could find. */
  problems: BuildersError[];
  includes: IncludeRecord[];
  warnings: BuildersWarning[];
}

const WS = " \t\n\r";

/** Nix's `tokenizeString`: split on any of `seps`, dropping empty pieces. Linear (slices, no concatenation). */
export function tokenize(s: string, seps: string = WS): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i <= s.length; i++) {
    // separators are ASCII, so scanning UTF-16 units splits exactly where scanning code points would
    if (i < s.length && !seps.includes(s[i]!)) continue;
    if (i > start) out.push(s.slice(start, i));
    start = i + 1;
  }
  return out;
}

/** Nix's `trim` (space, tab, CR, LF). */
export function nixTrim(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && WS.includes(s[a]!)) a++;
  while (b > a && WS.includes(s[b - 1]!)) b--;
  return s.slice(a, b);
}

/** Byte-wise comparison of the bytes the strings stand for, the order of `std::set<std::string>`. */
export function byteCompare(a: string, b: string): number {
  return Buffer.compare(encodeBytes(a), encodeBytes(b));
}

function sortedSet(xs: string[]): string[] {
  return [...new Set(xs)].sort(byteCompare);
}

/** Errors that happen on read(2) rather than open(2). */
const READ_TIME_ERRORS = new Set(["EISDIR", "EIO"]);

/** Nix's text for a machines file that exists but cannot be read. */
export function readErrorMessage(path: string, code: string, version: NixVersion): string {
  const head = since(version, NIX.readErrorHead);
  if (READ_TIME_ERRORS.has(code)) {
    return head ? `read of 65536 bytes: ${strerror(code)}` : `reading from file: ${strerror(code)}`;
  }
  return head ? `opening file "${path}": ${strerror(code)}` : `opening file '${path}': ${strerror(code)}`;
}

/* ---------- number parsing (boost::lexical_cast) ---------- */

/** `string2Int<unsigned int>`: optional `+`, decimal digits, at most 2^32-1; a leading `-` is rejected. */
export function parseUnsigned(s: string): number | null {
  if (!/^\+?[0-9]+$/.test(s)) return null;
  const v = Number(s.startsWith("+") ? s.slice(1) : s);
  return v <= 0xffffffff ? v : null;
}

const FLT_MAX = 3.4028234663852886e38;

/** `string2Float<float>` (HEAD's speed factor), approximating boost::lexical_cast<float>. */
export function parseFloat32(s: string): number | null {
  if (/^[+-]?(?:nan|inf|infinity)$/i.test(s)) {
    const neg = s.startsWith("-");
    return /nan/i.test(s) ? Number.NaN : neg ? -Infinity : Infinity;
  }
  if (!/^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/.test(s)) return null;
  const v = Number(s);
  if (!Number.isFinite(v) || Math.abs(v) > FLT_MAX) return null;
  return Math.fround(v);
}

/* ---------- expansion ---------- */

interface Row {
  row: string;
  file: string | null;
  line: number | null;
}

interface Ctx {
  input: ParseBuildersInput;
  head: boolean;
  cwd: string;
  rows: Row[];
  readErrors: BuildersError[];
  includes: IncludeRecord[];
  warnings: BuildersWarning[];
  stack: string[];
}

/** Where one piece of text sits: a machines file (1-based line) or the inline spec. */
interface Source {
  file: string | null;
  /** Line number of the first line of `text`, or null when unknown. */
  firstLine: number | null;
  inline: boolean;
}

function lineOf(src: Source, idx: number): number | null {
  if (src.inline) return src.firstLine === null ? null : src.firstLine + idx;
  return idx + 1;
}

function resolvePath(p: string, cwd: string): string {
  if (p.startsWith("/")) return p;
  return cwd.endsWith("/") ? cwd + p : `${cwd}/${p}`;
}

function include(ctx: Ctx, entry: string, where: Where): void {
  const path = nixTrim(entry.slice(1));
  // open("") fails with ENOENT, so `@` alone is a missing file.
  const resolved = path === "" ? "" : resolvePath(path, ctx.cwd);
  if (ctx.stack.includes(resolved) || ctx.stack.length > 64) {
    ctx.readErrors.push({
      message: `machines file '${path}' includes itself (Nix has no cycle detection and recurses until it crashes)`,
      file: where.file,
      line: where.line,
      row: entry,
      kind: "ours",
      nix: false,
    });
    ctx.includes.push({ path, resolved, found: true, from: where });
    return;
  }
  const r = path === "" ? ({ ok: false, code: "ENOENT" } as const) : ctx.input.fs.read(resolved);
  if (!r.ok) {
    const rec: IncludeRecord = { path, resolved, found: false, from: where };
    if (r.code !== "ENOENT") rec.problem = readProblemText(r);
    ctx.includes.push(rec);
    const unbounded = unboundedReadError(resolved, r);
    if (unbounded) {
      // Nix has no error here: it blocks (a FIFO) or reads until it runs out of memory (/dev/zero).
      ctx.readErrors.push({
        message: unbounded.nixMessage,
        file: where.file,
        line: where.line,
        row: entry,
        kind: "SysError",
        nix: false,
      });
    } else if (r.code !== "ENOENT") {
      ctx.readErrors.push({
        message: readErrorMessage(excerpt(path), r.code, ctx.input.version),
        file: where.file,
        line: where.line,
        row: entry,
        kind: "SysError",
        nix: true,
      });
    }
    return;
  }
  if (looksLikePrivateKey(r.text)) {
    ctx.includes.push({
      path,
      resolved,
      found: true,
      from: where,
      problem: "a private key, not a machines file",
    });
    // Nix parses its lines as machines: it fails on an OpenSSH or PEM header, and takes the lines of a
    // PKCS#8 key for host names (and connects to them). Nothing of it is shown or used as a machine.
    ctx.readErrors.push({
      message: `bad machine specification: '${excerpt(path)}' is a private key, not a machines file (its lines are not shown; Nix fails on its first line or tries its lines as host names)`,
      file: where.file,
      line: where.line,
      row: entry,
      kind: "FormatError",
      nix: false,
    });
    return;
  }
  ctx.includes.push({ path, resolved, found: true, from: where });
  ctx.stack.push(resolved);
  expand(ctx, r.text, { file: resolved, firstLine: 1, inline: false });
  ctx.stack.pop();
}

function expand(ctx: Ctx, text: string, src: Source): void {
  if (ctx.head) expandHead(ctx, text, src);
  else expand28(ctx, text, src);
}

/** 2.8: split on `\n` and `;` first, then cut comments; pieces are not trimmed. */
function expand28(ctx: Ctx, text: string, src: Source): void {
  let lineIdx = 0;
  let start = 0;
  let startLine = 0;
  // the `semicolon-in-comment` warning of this line, once a comment has been split: later pieces are its tails
  let inComment: BuildersWarning | null = null;
  const flush = (end: number): void => {
    const raw = text.slice(start, end);
    if (raw === "") return;
    const hash = raw.indexOf("#");
    const piece = hash >= 0 ? raw.slice(0, hash) : raw;
    const where: Where = { file: src.file, line: lineOf(src, startLine) };
    if (inComment !== null && piece !== "") inComment.tails!.push(piece);
    if (hash >= 0 && end < text.length && text[end] === ";") {
      // the text after this `;` is still in the comment for the user, but 2.8 parses it as a row
      const w: BuildersWarning = {
        code: "semicolon-in-comment",
        message:
          "Nix 2.8 splits on ';' before removing comments: the text after ';' in this comment is read as a machine (fixed in Nix 2.29)",
        ...where,
        row: raw,
        tails: [],
      };
      ctx.warnings.push(w);
      inComment ??= w;
    }
    if (piece === "") return;
    if (piece[0] === "@") {
      include(ctx, piece, where);
      return;
    }
    if (/^[ \t\r]+@/.test(piece)) {
      ctx.warnings.push({
        code: "not-an-include",
        message:
          "Nix 2.8 does not trim before looking for '@': this row is a machine whose store is a local path, not an include",
        ...where,
        row: piece,
      });
    }
    ctx.rows.push({ row: piece, ...where });
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "\n" || c === ";") {
      flush(i);
      if (c === "\n") {
        lineIdx++;
        inComment = null;
      }
      start = i + 1;
      startLine = lineIdx;
    }
  }
  flush(text.length);
}

/** HEAD (≥2.29): split on `\n`, cut comments, split on `;`, trim, skip blanks. */
function expandHead(ctx: Ctx, text: string, src: Source): void {
  const lines = text.split("\n");
  lines.forEach((rawLine, idx) => {
    if (rawLine === "") return;
    const hash = rawLine.indexOf("#");
    const line = hash >= 0 ? rawLine.slice(0, hash) : rawLine;
    const where: Where = { file: src.file, line: lineOf(src, idx) };
    for (const e of tokenize(line, ";")) {
      const entry = nixTrim(e);
      if (entry === "") continue;
      if (entry[0] === "@") include(ctx, entry, where);
      else ctx.rows.push({ row: entry, ...where });
    }
  });
}

/* ---------- one row ---------- */

type RowResult =
  | { ok: true; machine: Machine; warnings: BuildersWarning[] }
  | { ok: false; error: BuildersError };

export function parseMachineRow(
  r: { row: string; file: string | null; line: number | null },
  version: NixVersion,
  defaultSystem: string,
): RowResult {
  const floatSpeed = since(version, NIX.machinesFloatSpeed);
  // Nix quotes the whole row in its errors; we quote a bounded excerpt.
  const row = excerpt(r.row);
  const where = { file: r.file, line: r.line, row };
  const tokens = tokenize(r.row);
  const isSet = (i: number): boolean => tokens.length > i && tokens[i] !== "" && tokens[i] !== "-";
  const fail = (
    message: string,
    kind: BuildersError["kind"] = "FormatError",
    trace?: string[],
  ): RowResult => {
    const error: BuildersError = { message, ...where, kind, nix: true };
    if (trace) error.trace = trace;
    return { ok: false, error };
  };
  if (!isSet(0)) {
    return fail(`bad machine specification: store URL was not found at the first column of a row: '${row}'`);
  }
  let maxJobs = 1;
  if (isSet(3)) {
    const v = parseUnsigned(tokens[3]!);
    if (v === null) {
      return fail(
        `bad machine specification: failed to convert column #3 in a row: '${row}' to 'unsigned int'`,
      );
    }
    maxJobs = v;
  }
  let speedFactor = 1;
  if (isSet(4)) {
    const t = tokens[4]!;
    if (floatSpeed) {
      const v = parseFloat32(t);
      if (v === null) {
        return fail(`bad machine specification: failed to convert column #4 in a row: '${row}' to 'float'`);
      }
      speedFactor = v;
    } else {
      const v = parseUnsigned(t);
      if (v === null) {
        return fail(
          `bad machine specification: failed to convert column #4 in a row: '${row}' to 'unsigned int'`,
        );
      }
      speedFactor = v;
    }
  }
  let sshPublicHostKey: string | null = null;
  const warnings: BuildersWarning[] = [];
  if (isSet(7)) {
    const key = tokens[7]!;
    const d = nixBase64Decode(key);
    if (!d.ok) {
      // Nix formats the character with '%c' around a coloured argument, so what gets printed is the
      // first byte of the colour escape sequence, not the character (verified on 2.8).
      const shown = "\x1b";
      if (since(version, NIX.base64Trace)) {
        return fail(`invalid character in Base64 string: '${shown}'`, "FormatError", [
          `while parsing machine specification at a column #7 in a row: '${row}'`,
        ]);
      }
      return fail(
        `bad machine specification: a column #7 in a row: '${row}' is not valid base64 string: error: invalid character in Base64 string: '${shown}'`,
      );
    }
    sshPublicHostKey = key;
    const text = d.bytes.toString("latin1");
    if (!isPublicKeyLine(text)) {
      warnings.push({
        code: "host-key-not-public-key",
        message:
          "column 8 decodes, but not to a public key line '<type> <base64>[ comment]' (use `base64 -w0 /etc/ssh/ssh_host_ed25519_key.pub`); ssh will not accept the pinned key",
        ...where,
      });
    }
  }
  const storeUri = normaliseStoreUri(tokens[0]!);
  if (floatSpeed && speedFactor < 0) return fail("speed factor must be >= 0", "UsageError");
  if (speedFactor === 0) speedFactor = 1;

  const systemsRaw = isSet(1) ? tokenize(tokens[1]!, ",") : [defaultSystem];
  const systemTypes = floatSpeed ? sortedSet(systemsRaw) : systemsRaw;
  const machine: Machine = {
    storeUri,
    systemTypes,
    sshKey: isSet(2) ? tokens[2]! : null,
    maxJobs,
    speedFactor,
    supportedFeatures: isSet(5) ? sortedSet(tokenize(tokens[5]!, ",")) : [],
    mandatoryFeatures: isSet(6) ? sortedSet(tokenize(tokens[6]!, ",")) : [],
    sshPublicHostKey,
    origin: { file: r.file, line: r.line },
    row: r.row,
  };
  warnings.push(...lintMachine(machine, tokens, version, where));
  return { ok: true, machine, warnings };
}

function lintMachine(
  m: Machine,
  tokens: string[],
  version: NixVersion,
  where: { file: string | null; line: number | null; row: string },
): BuildersWarning[] {
  const out: BuildersWarning[] = [];
  for (const s of m.systemTypes) {
    if (!isKnownSystem(s)) {
      const w: BuildersWarning = {
        code: "unknown-system",
        message: `'${s}' is not a Nix system double`,
        ...where,
      };
      const sug = suggestSystem(s);
      if (sug !== null) {
        w.suggestion = sug;
        w.message += ` (did you mean '${sug}'?)`;
      }
      out.push(w);
    }
  }
  if (tokens.length > 8) {
    out.push({
      code: "extra-fields",
      message: `${tokens.length - 8} field(s) after the 8th are ignored by Nix: ${tokens.slice(8).join(" ")}`,
      ...where,
    });
  }
  if (m.maxJobs === 0) {
    out.push({
      code: "max-jobs-zero",
      message: "max jobs is 0: Nix never chooses this machine (and postpones builds that only it could take)",
      ...where,
    });
  }
  const a = sshAuthority(m.storeUri, version);
  if (!a.valid && a.error) {
    out.push({ code: "invalid-ssh-host", message: `Nix will fail to connect: ${a.error}`, ...where });
  } else if (
    a.valid &&
    a.scheme !== null &&
    !since(version, NIX.sshPorts) &&
    a.host !== null &&
    /^[^:[\]]*:\d+$/.test(a.host)
  ) {
    out.push({
      code: "port-unsupported",
      message: `Nix ${version.major}.${version.minor} has no port support in store URIs: ssh gets the host '${a.sshTarget}' (use a Host entry in ~/.ssh/config, or Nix ≥ 2.31)`,
      ...where,
    });
  }
  if (m.sshKey !== null && !m.sshKey.startsWith("/") && since(version, NIX.sshAbsoluteKey)) {
    out.push({
      code: "relative-ssh-key",
      message: `ssh key '${m.sshKey}' is not absolute; Nix ≥ 2.34 rejects it when connecting`,
      ...where,
    });
  }
  return out;
}

/* ---------- whole spec ---------- */

export function parseBuilders(input: ParseBuildersInput): BuildersResult {
  const ctx: Ctx = {
    input,
    head: since(input.version, NIX.machinesSplitFix),
    cwd: input.cwd ?? "/",
    rows: [],
    readErrors: [],
    includes: [],
    warnings: [],
    stack: [],
  };
  const origin = input.origin ?? { file: null, line: null };
  expand(ctx, input.spec, { file: origin.file, firstLine: origin.line, inline: true });

  const machines: Machine[] = [];
  const rowErrors: BuildersError[] = [];
  for (const r of ctx.rows) {
    const res = parseMachineRow(r, input.version, input.defaultSystem);
    if (res.ok) {
      machines.push(res.machine);
      ctx.warnings.push(...res.warnings);
    } else rowErrors.push(res.error);
  }
  // Nix expands everything before parsing any row, so a read error wins over any row error.
  const error = ctx.readErrors[0] ?? rowErrors[0] ?? null;
  const problems = [...ctx.readErrors, ...rowErrors];
  return { machines, error, problems, includes: ctx.includes, warnings: ctx.warnings };
}

/** The `builders` value Nix derives from `NIX_REMOTE_SYSTEMS` (2.8–2.23 join with a space, which breaks ≥ 2 files). */
export function buildersFromNixRemoteSystems(value: string, version: NixVersion): string {
  const parts = tokenize(value, ":").map((p) => `@${p}`);
  return parts.join(since(version, NIX.remoteSystemsNewline) ? "\n" : " ");
}

/* ---------- the "Failed to find a machine" listing ---------- */

export interface NoMachineListingInput {
  version: NixVersion;
  /** Full store path or base name of the derivation; null prints `<unknown>`. */
  drvPath: string | null;
  system: string;
  requiredFeatures: readonly string[];
  machines: readonly Pick<Machine, "systemTypes" | "maxJobs" | "supportedFeatures" | "mandatoryFeatures">[];
}

/** The exact text build-remote prints when no machine fits (ANSI colour codes omitted). */
export function formatNoMachineListing(i: NoMachineListingInput): string {
  const head = since(i.version, NIX.listingBrackets);
  const sortSystems = since(i.version, NIX.machinesFloatSpeed);
  const base = i.drvPath === null ? "<unknown>" : i.drvPath.slice(i.drvPath.lastIndexOf("/") + 1);
  const req = sortedSet([...i.requiredFeatures]).join(", ");
  const wrap = (s: string): string => (head ? `[${s}]` : s);
  const lines = [
    "Failed to find a machine for remote build!",
    `derivation: ${base}`,
    `required (system, features): (${i.system}, ${wrap(req)})`,
    `${i.machines.length} available machines:`,
    "(systems, maxjobs, supportedFeatures, mandatoryFeatures)",
  ];
  for (const m of i.machines) {
    const systems = sortSystems ? sortedSet(m.systemTypes) : m.systemTypes;
    lines.push(
      `(${wrap(systems.join(", "))}, ${m.maxJobs}, ${wrap(sortedSet(m.supportedFeatures).join(", "))}, ${wrap(sortedSet(m.mandatoryFeatures).join(", "))})`,
    );
  }
  return lines.join("\n");
}

/* ---------- host keys ---------- */

/**
 * Decode column 8 the way Nix does (lenient: standard alphabet, stops at the first `=`, skips `\n`), and
 * check that the result is a public-key line `<type> <base64>[ comment]` (our check; Nix does not make it).
 * The failure message names the real offending character (Nix's own text shows an escape byte instead).
 */
export function decodeHostKey(
  b64: string,
): { ok: true; text: string; isPublicKeyLine: boolean } | { ok: false; message: string } {
  const d = nixBase64Decode(b64);
  if (!d.ok) return { ok: false, message: `invalid character in Base64 string: '${d.badChar}'` };
  const text = d.bytes.toString("latin1");
  return { ok: true, text, isPublicKeyLine: isPublicKeyLine(text) };
}
