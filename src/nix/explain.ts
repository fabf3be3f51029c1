/**
 * explain: what Nix (2.8 to current) and the ssh it runs print when remote building
 * goes wrong, mapped to a cause and a fix. Pure: no I/O. Used by `explain`, and by `doctor` / `verify`
 * to classify the error text they capture (`matchMessage`). The knowledge base itself is data in
 * src/nix/explain-knowledge.ts; its vocabulary (causes, entry and range types) is src/nix/explain-vocabulary.ts.
 *
 * Messages are Nix's and OpenSSH's own wording (collected from Nix 2.8
 * and current sources, real runs and public bug reports; see docs/explain.md); the explanations are ours. Patterns are not anchored at the start of the line, so an
 * `error: ` prefix, a `cannot build on '…': ` wrapper, a journal prefix or a timestamp do not matter; ANSI
 * codes and `@nix {json}` lines are normalised away before matching (`normaliseLog`).
 *
 * Root-cause selection (`explainLog`): every line gets at most one finding (the most specific entry that
 * matches it). Entries are either *specific* (they name a cause: a host key, a key, a machines line, a
 * trust decision) or *generic* (a consequence that other causes also produce: the local fallback, "unable
 * to start any build", "unexpected end-of-file", a listing of machines that would have matched). The
 * primary finding is the specific finding with the highest priority, the earliest one on ties; only when
 * there is no specific finding does the best generic one become primary. So a `Host key verification
 * failed.` early in the log wins over the `a 'aarch64-linux' with features {} is required …` that Nix
 * prints last.
 */
import { filterAnsiEscapes } from "./display.js";
import { KNOWLEDGE } from "./explain-knowledge.js";
import {
  type Cause,
  type ExplainContext,
  type KnowledgeEntry,
  type LogLine,
  type VersionRange,
  versionInRange,
} from "./explain-vocabulary.js";
import type { Severity } from "./findings.js";
import { type NixVersion, parseNixVersion } from "./version.js";

export { KNOWLEDGE } from "./explain-knowledge.js";
export * from "./explain-vocabulary.js";

// ---------------------------------------------------------------------------------------------------------
// Log normalisation

// CSI sequences, OSC sequences (terminated by BEL or ST), and lone two-character escapes.
const ANSI = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;

export function stripAnsi(s: string): string {
  return s.replace(ANSI, "");
}

/** The human-readable text of one `@nix {json}` line, or null if it carries none. */
function internalJsonText(json: string): string | null {
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch {
    return null;
  }
  if (!v || typeof v !== "object") return null;
  const o = v as Record<string, unknown>;
  if (o["action"] === "msg" && typeof o["msg"] === "string") return o["msg"];
  if (o["action"] === "start" && typeof o["text"] === "string" && o["text"] !== "") return o["text"];
  // Build log lines (resBuildLogLine = 101) and post-build log lines (107).
  if (o["action"] === "result" && (o["type"] === 101 || o["type"] === 107) && Array.isArray(o["fields"])) {
    const f = o["fields"][0];
    return typeof f === "string" ? f : null;
  }
  return null;
}

function logLine(line: number, text: string, shown = filterAnsiEscapes(text)): LogLine {
  return shown === text ? { line, text } : { line, text, displayed: shown };
}

/**
 * Split a log into logical lines: ANSI codes removed, `@nix {json}` lines replaced by their message
 * (a multi-line message becomes several logical lines with the same line number), carriage-return
 * progress redraws reduced to their final text.
 */
export function normaliseLog(text: string): LogLine[] {
  const out: LogLine[] = [];
  const raw = text.split("\n");
  for (let i = 0; i < raw.length; i++) {
    let t = raw[i]!;
    if (t.endsWith("\r")) t = t.slice(0, -1);
    const cr = t.lastIndexOf("\r");
    if (cr >= 0) t = t.slice(cr + 1);
    const at = t.indexOf("@nix {");
    if (at >= 0) {
      const msg = internalJsonText(t.slice(at + 5));
      if (msg === null) continue;
      // internal-json carries the raw message; Nix's logger would have shown the whole of it filtered.
      const shown = filterAnsiEscapes(msg).split("\n");
      const parts = msg.split("\n");
      for (let k = 0; k < parts.length; k++) out.push(logLine(i + 1, stripAnsi(parts[k]!), shown[k]));
      continue;
    }
    out.push(logLine(i + 1, stripAnsi(t)));
  }
  while (out.length > 0 && out[out.length - 1]!.text === "") out.pop();
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Matching

export interface Finding {
  entryId: string;
  cause: Cause;
  title: string;
  severity: Severity;
  generic: boolean;
  priority: number;
  /** 1-based line in the input. */
  line: number;
  /** The matched line (normalised). */
  text: string;
  /** The matched line as Nix shows it (tabs expanded as Nix's logger does): what to print. */
  displayed: string;
  summary: string;
  detail: string;
  fix: string[];
  source: string;
  versions: VersionRange;
  /** Set when a --nix-version was given and this wording is not that version's. */
  versionNote?: string;
  primary: boolean;
}

export interface ExplainResult {
  findings: Finding[];
  primary: Finding | null;
}

export interface ExplainOptions {
  /** The Nix version that produced the log ("2.8", "2.24.3", …), if known. */
  version?: NixVersion | string | null;
}

/** By priority, highest first (stable for equal priorities: catalogue order). */
const BY_PRIORITY: readonly KnowledgeEntry[] = [...KNOWLEDGE].sort((a, b) => b.priority - a.priority);

const REMOTE_ACTIVITY =
  /cannot build on '|building '[^']*' on '|connecting to '(?:ssh|ssh-ng):\/\/|remote store '(?:ssh|ssh-ng):\/\/|copying dependencies to '/;

function toVersion(v: ExplainOptions["version"]): NixVersion | null {
  if (v === undefined || v === null) return null;
  if (typeof v === "string") return parseNixVersion(v);
  return v;
}

/**
 * The first entry matching the current line in either form: as Nix displays it (tabs expanded; so
 * what a finding quotes is what the user saw), else as given (a raw message, e.g. from internal-json
 * or this tool's JSON, may hold tabs). The finding keeps both.
 */
function matchAt(ctx: ExplainContext): Finding | null {
  const here = ctx.lines[ctx.index]!;
  if (here.displayed === undefined) return matchForm(ctx, here);
  const shown = ctx.lines.map((l) => ({ line: l.line, text: l.displayed ?? l.text }));
  return matchForm({ ...ctx, lines: shown }, here) ?? matchForm(ctx, here);
}

function matchForm(ctx: ExplainContext, here: LogLine): Finding | null {
  const t = ctx.lines[ctx.index]!.text;
  for (const e of BY_PRIORITY) {
    if (e.when && !e.when(ctx)) continue;
    for (const p of e.patterns) {
      const m = p.exec(t);
      if (!m) continue;
      const x = e.explain(m, ctx);
      if (!x) continue;
      const f: Finding = {
        entryId: e.id,
        cause: x.cause ?? e.cause,
        title: e.title,
        severity: e.severity,
        generic: x.generic ?? e.generic,
        priority: e.priority,
        line: here.line,
        text: here.text,
        displayed: here.displayed ?? here.text,
        summary: x.summary,
        detail: x.detail,
        fix: x.fix,
        source: e.source,
        versions: e.versions,
        primary: false,
      };
      if (ctx.version && !versionInRange(e.versions, ctx.version)) {
        f.versionNote = `This wording is from Nix ${e.versions}, not ${ctx.version.major}.${ctx.version.minor}: the log may come from another Nix (e.g. the daemon's or the builder's).`;
      }
      return f;
    }
  }
  return null;
}

/** Classify one message (e.g. captured ssh stderr or a Nix error) without a surrounding log. */
export function explainMessage(
  text: string,
  opts: ExplainOptions & { remote?: boolean } = {},
): Finding | null {
  const lines = normaliseLog(text);
  const version = toVersion(opts.version);
  const remote = opts.remote ?? lines.some((l) => REMOTE_ACTIVITY.test(l.text));
  let best: Finding | null = null;
  for (let i = 0; i < lines.length; i++) {
    const f = matchAt({ lines, index: i, remote, version });
    if (f && (best === null || rank(f) > rank(best))) best = f;
  }
  if (best) best.primary = true;
  return best;
}

function rank(f: Finding): number {
  return (f.generic ? 0 : 1000) + f.priority;
}

/**
 * Explain a whole log. Findings are in log order; `primary` is the root cause: the highest-priority
 * specific finding (earliest on ties), or, when every finding is generic, the highest-priority generic one.
 */
export function explainLog(text: string, opts: ExplainOptions = {}): ExplainResult {
  const lines = normaliseLog(text);
  const version = toVersion(opts.version);
  const remote = lines.some((l) => REMOTE_ACTIVITY.test(l.text));
  const findings: Finding[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < lines.length; i++) {
    const f = matchAt({ lines, index: i, remote, version });
    if (!f) continue;
    // Nix 2.8 repeats some lines (waiting for a machine, unknown-setting warnings); keep the first.
    const key = `${f.entryId}\0${f.text}`;
    if (seen.has(key)) continue;
    seen.add(key);
    findings.push(f);
  }
  let primary: Finding | null = null;
  for (const f of findings) if (primary === null || rank(f) > rank(primary)) primary = f;
  if (primary) primary.primary = true;
  return { findings, primary };
}

export function entryById(id: string): KnowledgeEntry | undefined {
  return KNOWLEDGE.find((e) => e.id === id);
}
