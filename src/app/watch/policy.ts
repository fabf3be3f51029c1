/**
 * watch's policy: pure functions (no I/O, no clock, no randomness of their own) that move one builder
 * between states after a probe, compute the backoff, and apply the round-level guards. See docs/watch.md
 * for the reasons behind each rule. The engine (engine.ts) owns time, randomness and the file.
 */
import type { Disposition, GuardName, WatchState } from "./model.js";

export interface PolicyConfig {
  /** Consecutive builder-side failures before quarantine (K). */
  failureThreshold: number;
  /** Consecutive passes in probation before `up` (R). */
  successThreshold: number;
  /** Backoff: delay(n) = min(base · factor^(n−1), max) + U[0, jitter) seconds, n capped at maxLevel. */
  backoffBaseSec: number;
  backoffFactor: number;
  backoffMaxSec: number;
  backoffMaxLevel: number;
  backoffJitterSec: number;
  /** A failure within this many seconds of the last counted one does not raise the backoff level. */
  countWindowSec: number;
  /** The backoff level decays to 0 only after this long continuously `up`. */
  stableAfterSec: number;
  /** At most this share of the builders is held or removed by the policy (drains not counted). */
  maxQuarantinedShare: number;
  /** What the output does with a quarantined builder's line. */
  mode: "hold" | "remove";
}

/** Hydra's queue-runner constants (base 60 s, factor 3, 4 levels, 30 s jitter and window), K=2, R=2. */
export const DEFAULT_POLICY: PolicyConfig = {
  failureThreshold: 2,
  successThreshold: 2,
  backoffBaseSec: 60,
  backoffFactor: 3,
  backoffMaxSec: 1620,
  backoffMaxLevel: 4,
  backoffJitterSec: 30,
  countWindowSec: 30,
  stableAfterSec: 600,
  maxQuarantinedShare: 0.5,
  mode: "hold",
};

/** Causes that fail every build after Nix accepted the builder: one is enough. */
export const DETERMINISTIC_CAUSES: readonly string[] = [
  "remote-untrusted",
  "system-mismatch",
  "feature-mismatch",
];
/** Causes on this machine: the probes say nothing about the builders, so the file is frozen. */
export const LOCAL_CAUSES: readonly string[] = [
  "local-config",
  "daemon-unreachable",
  "ssh-missing",
  "local-untrusted",
];

export type CauseKind = "pass" | "deterministic" | "local" | "builder";

/** `slow` is a pass with a warning; a failure without a cause counts as a builder-side fault. */
export function causeKind(ok: boolean, cause: string | null | undefined): CauseKind {
  if (ok || cause === "slow") return "pass";
  if (cause && DETERMINISTIC_CAUSES.includes(cause)) return "deterministic";
  if (cause && LOCAL_CAUSES.includes(cause)) return "local";
  return "builder";
}

/** What the policy remembers of one builder between probes (persisted in the state file). */
export interface BuilderMemory {
  state: WatchState;
  since: number;
  consecutiveFailures: number;
  /** Passes in a row while in probation. */
  passes: number;
  backoffLevel: number;
  /** When the backoff level was last raised (ms). */
  lastCountedFailureAt: number | null;
  quarantinedUntil: number | null;
  /** Start of the current continuous `up` stretch (ms), for the decay. */
  upSince: number | null;
  lastSuccessAt: number | null;
}

export function freshMemory(now: number): BuilderMemory {
  return {
    state: "unknown",
    since: now,
    consecutiveFailures: 0,
    passes: 0,
    backoffLevel: 0,
    lastCountedFailureAt: null,
    quarantinedUntil: null,
    upSince: null,
    lastSuccessAt: null,
  };
}

/** The seconds a builder stays out at backoff level n (n ≥ 1), `rand` in [0, 1). */
export function backoffDelaySec(level: number, cfg: PolicyConfig, rand: number): number {
  const n = Math.max(1, Math.min(level, cfg.backoffMaxLevel));
  const base = Math.min(cfg.backoffBaseSec * cfg.backoffFactor ** (n - 1), cfg.backoffMaxSec);
  return base + Math.floor(Math.max(0, Math.min(rand, 0.999999)) * cfg.backoffJitterSec);
}

/** States whose line is out of the file (held or removed); `kept` is a refused quarantine: listed. */
export function isOut(state: WatchState): boolean {
  return state === "quarantined" || state === "misconfigured" || state === "probation" || state === "drained";
}

export function disposition(state: WatchState, cfg: Pick<PolicyConfig, "mode">): Disposition {
  if (state === "drained") return "removed";
  if (state === "quarantined" || state === "misconfigured" || state === "probation")
    return cfg.mode === "hold" ? "held" : "removed";
  return "listed";
}

/** Is this builder probed in a round at `now`? A quarantined one waits for its backoff to run out. */
export function isDue(m: BuilderMemory, now: number): boolean {
  if (m.state === "quarantined" || m.state === "misconfigured")
    return m.quarantinedUntil === null || m.quarantinedUntil <= now;
  return true;
}

export interface Step {
  memory: BuilderMemory;
  /** Set when the state changed: the reason (the cause, or `probe-ok`). */
  reason: string | null;
}

function raiseLevel(m: BuilderMemory, now: number, cfg: PolicyConfig): void {
  const w = cfg.countWindowSec * 1000;
  if (m.lastCountedFailureAt === null || now - m.lastCountedFailureAt >= w || m.backoffLevel === 0) {
    m.backoffLevel = Math.min(m.backoffLevel + 1, cfg.backoffMaxLevel);
    m.lastCountedFailureAt = now;
  }
}

function enter(m: BuilderMemory, state: WatchState, now: number): void {
  if (m.state !== state) {
    m.state = state;
    m.since = now;
  }
}

/**
 * One probe's outcome applied to one builder. `rand` in [0, 1) is the backoff jitter. A round whose local
 * checks fail never gets here (the engine freezes the file instead); a local cause found in one builder's
 * own checks (its key file, its line) is that builder's fault and counts like a network one. A drained
 * builder keeps its state.
 */
export function step(
  prev: BuilderMemory,
  outcome: { ok: boolean; cause?: string | null | undefined },
  now: number,
  cfg: PolicyConfig,
  rand: number,
): Step {
  const m: BuilderMemory = { ...prev };
  const from = prev.state;
  const kind = causeKind(outcome.ok, outcome.cause);
  const quarantine = (state: "quarantined" | "misconfigured") => {
    raiseLevel(m, now, cfg);
    m.quarantinedUntil = now + backoffDelaySec(m.backoffLevel, cfg, rand) * 1000;
    m.passes = 0;
    m.upSince = null;
    enter(m, state, now);
  };

  if (from === "drained") {
    if (kind === "pass") {
      m.lastSuccessAt = now;
      m.consecutiveFailures = 0;
    } else m.consecutiveFailures++;
    return { memory: m, reason: null };
  }

  if (kind === "pass") {
    m.lastSuccessAt = now;
    m.consecutiveFailures = 0;
    if (from === "quarantined" || from === "misconfigured") {
      m.passes = 1;
      m.quarantinedUntil = null;
      enter(m, "probation", now);
      if (m.passes >= cfg.successThreshold) {
        enter(m, "up", now);
        m.upSince = now;
      }
    } else if (from === "probation") {
      m.passes++;
      if (m.passes >= cfg.successThreshold) {
        m.passes = 0;
        m.upSince = now;
        enter(m, "up", now);
      }
    } else {
      if (from !== "up") m.upSince = now;
      enter(m, "up", now);
      m.upSince ??= now;
    }
    // Unlike Hydra, a success does not reset the backoff level: only a stretch of health does.
    if (m.state === "up" && m.upSince !== null && now - m.upSince >= cfg.stableAfterSec * 1000) {
      m.backoffLevel = 0;
      m.lastCountedFailureAt = null;
    }
  } else {
    m.consecutiveFailures++;
    m.upSince = null;
    if (kind === "deterministic") quarantine("misconfigured");
    else if (from === "quarantined" || from === "misconfigured" || from === "probation")
      quarantine(from === "misconfigured" ? "misconfigured" : "quarantined");
    else if (m.consecutiveFailures >= cfg.failureThreshold) quarantine("quarantined");
    else enter(m, "suspect", now);
  }
  const reason = m.state === from ? null : kind === "pass" ? "probe-ok" : (outcome.cause ?? "failed");
  return { memory: m, reason };
}

export interface GuardInput {
  builder: string;
  /** The state the policy wants after this round's probes. */
  memory: BuilderMemory;
  /** The state before this round (to tell new quarantines from old ones). */
  previous: WatchState;
  /** The latest probe failed with a builder-side cause (not deterministic). */
  failingNetwork: boolean;
}

export interface GuardResult {
  /** Builders whose quarantine the guards refused this round: their state becomes `kept`. */
  kept: string[];
  guards: GuardName[];
}

/**
 * Round-level guards (fail-open): when every builder fails at once, suspect this machine and keep them all;
 * never hold or remove more than `maxQuarantinedShare` of the builders (drains not counted; the oldest
 * quarantines stay, the newest are kept). Deterministic faults (misconfigured) count towards the share.
 */
export function applyGuards(items: readonly GuardInput[], cfg: PolicyConfig): GuardResult {
  const guards: GuardName[] = [];
  const kept = new Set<string>();
  const active = items.filter((i) => i.memory.state !== "drained");
  if (active.length >= 2 && active.every((i) => i.failingNetwork)) {
    guards.push("all-failed");
    for (const i of active) if (isOut(i.memory.state) || i.memory.state === "kept") kept.add(i.builder);
    return { kept: [...kept], guards };
  }
  const allowed = Math.floor(cfg.maxQuarantinedShare * active.length + 1e-9);
  const out = active.filter((i) => isOut(i.memory.state));
  if (out.length > allowed) {
    guards.push("max-quarantined-share");
    // Keep the ones already out before this round first (oldest `since` first), then the new ones in order.
    const ranked = [...out].sort((a, b) => {
      const ao = isOut(a.previous) ? 0 : 1;
      const bo = isOut(b.previous) ? 0 : 1;
      return ao - bo || a.memory.since - b.memory.since;
    });
    for (const i of ranked.slice(allowed)) kept.add(i.builder);
  }
  return { kept: [...kept], guards };
}

/** A builder whose quarantine a guard refused: listed, counters kept, its next failure tries again. */
export function keep(m: BuilderMemory, now: number): BuilderMemory {
  const k: BuilderMemory = { ...m, quarantinedUntil: null, passes: 0 };
  enter(k, "kept", now);
  return k;
}
