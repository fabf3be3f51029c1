/**
 * The one result vocabulary: a severity, the count of findings per severity, and the exit code they
 * give. Lint findings (src/nix/lint.ts), agent findings (src/agent/findings.ts) and explain findings
 * (src/nix/explain.ts) all use this `Severity`; `lint` and `show --agent` exit by `exitCodeFor`.
 */

export type Severity = "error" | "warning" | "info";

export interface Summary {
  errors: number;
  warnings: number;
  infos: number;
}

/** How many findings of each severity. */
export function summarise(findings: readonly { readonly severity: Severity }[]): Summary {
  return {
    errors: findings.filter((f) => f.severity === "error").length,
    warnings: findings.filter((f) => f.severity === "warning").length,
    infos: findings.filter((f) => f.severity === "info").length,
  };
}

/** 2 with errors, 1 with warnings, 0 otherwise (infos do not count). */
export function exitCodeFor(s: Summary): 0 | 1 | 2 {
  return s.errors > 0 ? 2 : s.warnings > 0 ? 1 : 0;
}
