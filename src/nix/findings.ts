/**
 * The one result vocabulary: a severity, the count of findings per severity, and the exit code they
 * give. Lint findings (src/nix/lint.ts), agent findings (src/agent/findings.ts) and explain findings
 * (src/nix/explain.ts) all use this `Severity`; `lint` and `show --agent` exit by `exitCodeFor`.
 * The doctor's checks keep their own status words in `doctor --json` (`pass`, `warn`, `fail`, `skip`),
 * but judge them by this severity and exit by this rule (`severityOfStatus`).
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

/** A doctor check's status (the words of `doctor --json`). */
export type CheckStatus = "pass" | "warn" | "fail" | "skip";

/** A check's status as a severity: a failure is an error, a warning a warning, a pass or skip an info. */
export function severityOfStatus(s: CheckStatus): Severity {
  return s === "fail" ? "error" : s === "warn" ? "warning" : "info";
}

/** A finding's severity as a check's status: an error fails, a warning warns, an info passes. */
export function statusOfSeverity(s: Severity): CheckStatus {
  return s === "error" ? "fail" : s === "warning" ? "warn" : "pass";
}
