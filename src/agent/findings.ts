/**
 * Findings: the common result shape of every agent check and of config validation.
 * The doctor and `show --agent` render them; `fix` is a short, actionable instruction or null.
 */
import { editDistance } from "../nix/spelling.js";

export { editDistance };

import type { Severity } from "../nix/findings.js";

export type { Severity } from "../nix/findings.js";

export interface AgentFinding {
  /** Stable identifier, e.g. `agent-config-unknown-key`. Tests and `--json` consumers key on it. */
  readonly id: string;
  readonly severity: Severity;
  readonly message: string;
  readonly fix: string | null;
  /** Where the problem is, when it is in a file. */
  readonly file?: string;
  readonly line?: number;
}

export function finding(
  id: string,
  severity: Severity,
  message: string,
  fix: string | null,
  where: { file?: string | null; line?: number | null } = {},
): AgentFinding {
  const f: { -readonly [K in keyof AgentFinding]: AgentFinding[K] } = { id, severity, message, fix };
  if (where.file) f.file = where.file;
  if (where.line !== null && where.line !== undefined) f.line = where.line;
  return f;
}

/** Lower-case and drop `-`/`_`, so `base_directory`, `base-directory` and `BaseDirectory` compare equal. */
function normaliseKey(s: string): string {
  return s.toLowerCase().replace(/[-_]/g, "");
}

/**
 * The closest candidate to `word`, or null when nothing is plausibly meant.
 * A candidate matches when it is equal after normalisation, or within an edit distance that grows
 * with the word's length (2 for short words, about a quarter of the length for long ones).
 */
export function didYouMean(word: string, candidates: Iterable<string>): string | null {
  const w = normaliseKey(word);
  let best: string | null = null;
  let bestD = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const d = editDistance(w, normaliseKey(c));
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  if (best === null) return null;
  const limit = Math.max(2, Math.floor(w.length / 4));
  return bestD <= limit ? best : null;
}
