/** The doctor's vocabulary: checks, their outcomes and causes. See docs/doctor.md. */
import { FAILURE_CAUSES } from "../../nix/explain.js";
import type { CheckStatus } from "../../nix/findings.js";

/**
 * Why a check failed. The first group is the contract of `doctor --json` (shared with src/nix/explain.ts);
 * `slow` is ours (a warning: a builder that answers, but slowly).
 */
export const DOCTOR_CAUSES = [...FAILURE_CAUSES, "slow"] as const;
export type DoctorCause = (typeof DOCTOR_CAUSES)[number];

/** The shared vocabulary's status words (src/nix/findings.ts). */
export type { CheckStatus } from "../../nix/findings.js";

/** One thing that was run or read, and what came back. Never contains key material. */
export interface Evidence {
  /** What was done: an argv (joined for reading), a file read, a connect. */
  what: string;
  /** What came back (bounded). */
  result: string;
}

export interface CheckOutcome {
  status: CheckStatus;
  message: string;
  cause?: DoctorCause | null;
  evidence?: Evidence[];
  fix?: string | null;
}

export interface CheckResult {
  id: string;
  /** The builder's store URI, or null for a check of this machine. */
  builder: string | null;
  status: CheckStatus;
  cause: DoctorCause | null;
  message: string;
  evidence: Evidence[];
  fix: string | null;
  /** The checks this one needed. */
  deps: string[];
  durationMs: number;
  /** The check threw: a bug in nix-builders (the doctor then exits 70). */
  internal?: true;
}

export interface CheckDef<C> {
  id: string;
  /** Ids this check needs (same builder, or local ids). A dependency that failed or was skipped skips this. */
  deps: string[];
  run(ctx: C): Promise<CheckOutcome>;
}

export function truncate(s: string, max = 2000): string {
  return s.length <= max ? s : `${s.slice(0, max)}… (${s.length - max} more characters)`;
}
