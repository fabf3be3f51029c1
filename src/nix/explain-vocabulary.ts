import { atLeast, type NixVersion, parseNixVersion } from "./version.js";

// ---------------------------------------------------------------------------------------------------------
// Vocabulary

/**
 * Causes. The first group is the doctor's vocabulary (shared with `doctor` / `verify`); the second group
 * names cases none of those describes.
 */
/** Why a remote-build link fails: the contract of `doctor --json` causes, shared by doctor and verify. */
export const FAILURE_CAUSES = [
  "unreachable",
  "timeout",
  "host-key",
  "auth",
  "remote-nix-missing",
  "remote-shell",
  "protocol",
  "remote-untrusted",
  "remote-daemon-down",
  "system-mismatch",
  "feature-mismatch",
  "signature",
  "local-config",
  "local-untrusted",
  "daemon-unreachable",
  "ssh-missing",
] as const;

export const CAUSES = [
  ...FAILURE_CAUSES,
  // explain-only
  "machines-syntax",
  "no-builders",
  "max-jobs-zero",
  "builders-busy",
  "upload-lock",
  "unknown-setting",
  "build-failed",
] as const;
export type Cause = (typeof CAUSES)[number];

export type { Severity } from "./findings.js";

import type { Severity } from "./findings.js";

/**
 * The Nix versions whose wording an entry matches: `"all"`, one version `"2.8"`, a closed range
 * `"2.8-2.23"`, or an open one `">=2.24"` / `"<=2.7"`. (ssh's own messages are `"all"`.)
 */
export type VersionRange =
  | "all"
  | `${number}.${number}`
  | `${number}.${number}-${number}.${number}`
  | `>=${number}.${number}`
  | `<=${number}.${number}`;

export function versionInRange(range: VersionRange, v: NixVersion): boolean {
  if (range === "all") return true;
  if (range.startsWith(">=")) {
    const lo = parseNixVersion(range.slice(2));
    return lo === null || atLeast(v, lo.major, lo.minor);
  }
  if (range.startsWith("<=")) {
    const hi = parseNixVersion(range.slice(2));
    return hi === null || v.major < hi.major || (v.major === hi.major && v.minor <= hi.minor);
  }
  const [a, b] = range.split("-");
  const lo = parseNixVersion(a ?? "");
  const hi = parseNixVersion(b ?? a ?? "");
  if (!lo || !hi) return true;
  const aboveLo = atLeast(v, lo.major, lo.minor);
  const belowHi = v.major < hi.major || (v.major === hi.major && v.minor <= hi.minor);
  return aboveLo && belowHi;
}

/** One logical line of a log, after ANSI stripping and `@nix {json}` decoding. */
export interface LogLine {
  /** 1-based line number in the original text (several logical lines can share one JSON line). */
  readonly line: number;
  readonly text: string;
  /** The line as Nix's logger shows it (tabs expanded, see nix/display.ts); absent when it equals text. */
  readonly displayed?: string;
}

export interface ExplainContext {
  readonly lines: readonly LogLine[];
  /** Index of the current line in `lines`. */
  readonly index: number;
  /** The log shows remote-build activity (a `building … on`, `cannot build on`, or an ssh store). */
  readonly remote: boolean;
  /** The Nix version the user says produced the log, if any. */
  readonly version: NixVersion | null;
}

export interface Explanation {
  summary: string;
  detail: string;
  fix: string[];
  /** Overrides the entry's cause when the matched text tells more (e.g. which column of a listing fails). */
  cause?: Cause;
  /** Overrides the entry's generic flag (e.g. a machine listing where some machine would have matched). */
  generic?: boolean;
}

export interface KnowledgeEntry {
  readonly id: string;
  readonly cause: Cause;
  readonly title: string;
  /** Nix's (or ssh's) stable wording. The first pattern that matches a line is used. */
  readonly patterns: readonly RegExp[];
  readonly versions: VersionRange;
  /** Where the message and its meaning are documented: spec sections, issues. */
  readonly source: string;
  readonly severity: Severity;
  /** A consequence several causes produce; it only becomes primary when nothing specific is found. */
  readonly generic: boolean;
  /** Higher = more telling. Picks the entry for a line, then the primary among specific findings. */
  readonly priority: number;
  /** Extra condition on the context (e.g. only in a remote build). */
  readonly when?: (ctx: ExplainContext) => boolean;
  /** Returns null to decline the match (then lower-priority entries get the line). */
  explain(match: RegExpExecArray, ctx: ExplainContext): Explanation | null;
}

// ---------------------------------------------------------------------------------------------------------
// Shared fix texts

export const FIX_TEST_AS_ROOT =
  "Reproduce exactly what the daemon does: `sudo -H ssh -o BatchMode=yes -o IdentityAgent=none [-i KEY] USER@HOST nix-store --version` (use the key and user of the machines line).";
export const FIX_BYPASS = "To build now without the builders: `--builders ''` (allowed for every user).";
export const FIX_FIND_EARLIER =
  "This line is a consequence: look above it for a `cannot build on '…'` line or ssh's own message, which names the real cause.";

export function quoteOr(s: string | undefined, dflt: string): string {
  return s !== undefined && s !== "" ? `'${s}'` : dflt;
}

/** ssh prints `user@host: Permission denied …`; the builder named in a `cannot build on '…'` prefix. */
export function builderOf(ctx: ExplainContext): string | undefined {
  const t = ctx.lines[ctx.index]?.text ?? "";
  const m =
    /cannot build on '([^']*)'/.exec(t) ??
    /remote store '([^']*)'/.exec(t) ??
    /cannot connect to '([^']*)'/.exec(t);
  if (m) return m[1];
  // ssh-ng: ssh's stderr comes on its own line just before Nix's `cannot build on`.
  for (let i = ctx.index + 1; i < Math.min(ctx.lines.length, ctx.index + 4); i++) {
    const n = /cannot build on '([^']*)'/.exec(ctx.lines[i]?.text ?? "");
    if (n) return n[1];
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------
// "Failed to find a machine" listing (docs/routing.md)

export interface ListedMachine {
  systems: string[];
  maxJobs: number;
  /** Candidate (supported, mandatory) splits: 2.8 joins both lists with ", " so a split can be ambiguous. */
  featureSplits: { supported: string[]; mandatory: string[] }[];
  /** The machine's row as printed. */
  row: string;
}

export interface MachineVerdict {
  machine: ListedMachine;
  systemOk: boolean;
  featuresOk: boolean;
  mandatoryOk: boolean;
  slotsOk: boolean;
  /** Which column rules the machine out: "system", "features", "mandatory", "max-jobs", or null (it matches). */
  failing: "system" | "features" | "mandatory" | "max-jobs" | null;
}

export interface NoMachineListing {
  derivation: string | null;
  system: string;
  features: string[];
  machines: ListedMachine[];
  verdicts: MachineVerdict[];
  /** Number of log lines the listing spans after the "Failed to find a machine" line. */
  span: number;
}

export function splitList(s: string): string[] {
  return s
    .split(",")
    .map((x) => x.trim())
    .filter((x) => x !== "");
}

/** Parse the lines after `Failed to find a machine for remote build!` (2.8 and bracketed HEAD form). */
export function parseNoMachineListing(lines: readonly string[]): NoMachineListing | null {
  let i = 0;
  let derivation: string | null = null;
  const d = /^derivation: (.*)$/.exec(lines[i]?.trim() ?? "");
  if (d) {
    derivation = d[1]!.trim();
    i++;
  }
  const r = /^required \(system, features\): \((.*)\)$/.exec(lines[i]?.trim() ?? "");
  if (!r) return null;
  i++;
  const req = r[1]!;
  let system: string;
  let features: string[];
  const rb = /^([^,]*), \[(.*)\]$/.exec(req);
  if (rb) {
    system = rb[1]!.trim();
    features = splitList(rb[2]!);
  } else {
    const parts = req.split(", ");
    system = (parts[0] ?? "").trim();
    features = parts.slice(1).filter((x) => x.trim() !== "");
  }
  const machines: ListedMachine[] = [];
  const n = /^(\d+) available machines:$/.exec(lines[i]?.trim() ?? "");
  if (n) {
    i++;
    if (/^\(systems, maxjobs, supportedFeatures, mandatoryFeatures\)$/.test(lines[i]?.trim() ?? "")) i++;
    const count = Number(n[1]);
    for (let k = 0; k < count && i < lines.length; k++, i++) {
      const row = (lines[i] ?? "").trim();
      const m = parseMachineRow(row);
      if (!m) break;
      machines.push(m);
    }
  }
  const verdicts = machines.map((m) => judgeMachine(m, system, features));
  return { derivation, system, features, machines, verdicts, span: i };
}

export function parseMachineRow(row: string): ListedMachine | null {
  const inner = /^\((.*)\)$/.exec(row)?.[1];
  if (inner === undefined) return null;
  const br = /^\[(.*)\], (\d+), \[(.*)\], \[(.*)\]$/.exec(inner);
  if (br) {
    return {
      systems: splitList(br[1]!),
      maxJobs: Number(br[2]),
      featureSplits: [{ supported: splitList(br[3]!), mandatory: splitList(br[4]!) }],
      row,
    };
  }
  const toks = inner.split(", ").map((t) => t.trim());
  const j = toks.findIndex((t) => /^\d+$/.test(t));
  if (j < 0) return null;
  const systems = toks.slice(0, j).filter((t) => t !== "");
  const maxJobs = Number(toks[j]);
  const rest = toks.slice(j + 1);
  // 2.8: `supported joined ", "` + ", " + `mandatory joined ", "`; an empty list prints as "".
  const splits: { supported: string[]; mandatory: string[] }[] = [];
  for (let k = 0; k <= rest.length; k++) {
    const s = rest.slice(0, k);
    const m = rest.slice(k);
    const okS = s.length === 0 || s.every((x) => x !== "") || (s.length === 1 && s[0] === "");
    const okM = m.length === 0 || m.every((x) => x !== "") || (m.length === 1 && m[0] === "");
    if (!okS || !okM) continue;
    // Both lists are always printed, so each side needs at least one token.
    if (rest.length >= 2 && (s.length === 0 || m.length === 0)) continue;
    splits.push({ supported: s.filter((x) => x !== ""), mandatory: m.filter((x) => x !== "") });
  }
  if (splits.length === 0) splits.push({ supported: rest.filter((x) => x !== ""), mandatory: [] });
  return { systems, maxJobs, featureSplits: splits, row };
}

export function judgeMachine(m: ListedMachine, system: string, required: readonly string[]): MachineVerdict {
  const systemOk = system === "builtin" || m.systems.includes(system);
  const req = new Set(required);
  // A column fails only if it fails under every reading of an ambiguous 2.8 row.
  const featuresOk = m.featureSplits.some(({ supported, mandatory }) =>
    required.every((f) => supported.includes(f) || mandatory.includes(f)),
  );
  const mandatoryOk = m.featureSplits.some(
    ({ supported, mandatory }) =>
      mandatory.every((f) => req.has(f)) &&
      required.every((f) => supported.includes(f) || mandatory.includes(f)),
  );
  const slotsOk = m.maxJobs > 0;
  const failing = !systemOk
    ? "system"
    : !featuresOk
      ? "features"
      : !mandatoryOk
        ? "mandatory"
        : !slotsOk
          ? "max-jobs"
          : null;
  return { machine: m, systemOk, featuresOk, mandatoryOk, slotsOk, failing };
}

export function verdictText(v: MachineVerdict, system: string, features: readonly string[]): string {
  const m = v.machine;
  const sys = m.systems.join(",") || "(none)";
  switch (v.failing) {
    case "system":
      return `${m.row}: systems column (2nd) is ${sys}, not ${system}`;
    case "features": {
      const have = new Set(m.featureSplits.flatMap((s) => [...s.supported, ...s.mandatory]));
      const missing = features.filter((f) => !have.has(f));
      return `${m.row}: supported-features column (6th) lacks ${missing.join(", ") || "a required feature"}`;
    }
    case "mandatory": {
      const extra = m.featureSplits[0]?.mandatory.filter((f) => !features.includes(f)) ?? [];
      return `${m.row}: mandatory-features column (7th) has ${extra.join(", ") || "features"} the derivation does not ask for`;
    }
    case "max-jobs":
      return `${m.row}: max-jobs column (4th) is 0, so it is never chosen`;
    default:
      return `${m.row}: matches (so it was skipped because it was busy or disabled after a failed connection)`;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Helpers for entries

export const SHELLS_NOT_FOUND = [
  /(?:^|[\s:])(?:ba|z|k|da|fi|c|tc)?sh(?::| line)? ?\d*:? ?(nix-store|nix-daemon|nix): (?:command )?not found/,
  /command not found: (nix-store|nix-daemon|nix)\b/,
  /(?:^|[\s:])(nix-store|nix-daemon): command not found/,
  /fish: Unknown command:? '?(nix-store|nix-daemon)'?/,
  /exec: (nix-store|nix-daemon): not found/,
];

export function machinesColumnMeaning(col: number): string {
  switch (col) {
    case 0:
      return "#0 is the store URI (ssh://user@host, ssh-ng://…)";
    case 1:
      return "#1 is the systems list (comma-separated, e.g. x86_64-linux,aarch64-linux)";
    case 2:
      return "#2 is the ssh identity file";
    case 3:
      return "#3 is max-jobs, an unsigned integer";
    case 4:
      return "#4 is the speed factor (an unsigned integer in Nix < 2.20, a float ≥ 0 since)";
    case 5:
      return "#5 is the supported features (comma-separated)";
    case 6:
      return "#6 is the mandatory features (comma-separated)";
    case 7:
      return "#7 is the base64 of the builder's public host key (`base64 -w0 /etc/ssh/ssh_host_ed25519_key.pub`)";
    default:
      return `#${col} is past the 8 columns Nix reads`;
  }
}

export const MACHINE_LINE_FORMAT =
  "A machine line is `URI SYSTEMS KEY MAXJOBS SPEED SUPPORTED MANDATORY HOSTKEY` (0-based columns #0–#7, `-` = default, whitespace-separated; Nix's column numbers count from 0).";

export function rowHint(row: string, col: number): string {
  const f = row.trim().split(/\s+/);
  const bad = f[col];
  const hints: string[] = [];
  if (bad !== undefined) {
    if (/^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-\S+|sk-ssh-\S+)$/.test(bad) || /^AAAA/.test(bad))
      hints.push(
        `column #${col} holds '${bad}', which looks like part of an ssh public key: the host key column (#7) takes the base64 of the whole "TYPE KEY" line, one token, not the key pasted with spaces`,
      );
    else if (/@/.test(bad) && col >= 3)
      hints.push(
        `column #${col} holds '${bad}', which looks like a key comment or a user@host: the columns have shifted`,
      );
    else if (/^\d+\.\d+$/.test(bad) && col === 4) hints.push("a fractional speed factor needs Nix ≥ 2.20");
    else if (/^-\d/.test(bad)) hints.push("negative numbers are not accepted");
  }
  if (f.length > 8) hints.push(`the row has ${f.length} fields; Nix reads 8 and silently ignores the rest`);
  return hints.length ? ` ${hints.join("")}.` : "";
}
