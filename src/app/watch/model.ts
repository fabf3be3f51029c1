// The data that watch's engine publishes and that its edges (metrics, status page, `watch status`)
// render. The engine (src/app/watch/engine.ts) owns and fills it; renderers only read it.
// Plain, serialisable data: `/status.json` is this object, and the state file persists part of it.

/** A builder's state. See docs/watch.md for the policy that moves a builder between states. */
export type WatchState =
  | "unknown"
  | "up"
  | "suspect"
  | "quarantined"
  | "misconfigured"
  | "probation"
  | "kept"
  | "drained";

/** What the output machines file does with a builder's line. */
export type Disposition = "listed" | "held" | "removed";

/** Probe phases whose durations are measured, in seconds. */
export type ProbePhase = "dns" | "tcp" | "auth" | "handshake" | "query" | "total";

export interface Transition {
  /** Unix time in milliseconds. */
  at: number;
  from: WatchState;
  to: WatchState;
  /** The doctor cause or operator action that moved it, e.g. "unreachable", "probe-ok", "drain". */
  reason: string;
}

export interface ProbeRecord {
  at: number;
  ok: boolean;
  /** The doctor cause when !ok (e.g. "timeout", "auth", "remote-untrusted"), "slow" for a slow pass. */
  cause?: string;
  /** One line, as the doctor words it (no key material). */
  message?: string;
  /** The doctor's fix for that cause. */
  fix?: string;
  /** Per-phase durations in seconds, for the phases that ran. */
  phases: Partial<Record<ProbePhase, number>>;
  remoteNixVersion?: string;
  /** Remote protocol version, e.g. "2.7" for serve or "1.35" for the worker protocol. */
  protocol?: string;
  remoteTrusted?: boolean;
}

export interface BuilderStatus {
  /** The store URI as the machines line gives it: the metrics label and the key of the state file. */
  builder: string;
  /** The source line, byte for byte (without the newline). */
  line: string;
  /** 0-based index of the line in the source. */
  index: number;
  systems: string[];
  supportedFeatures: string[];
  mandatoryFeatures: string[];
  maxJobs: number;
  state: WatchState;
  since: number;
  disposition: Disposition;
  consecutiveFailures: number;
  /** Quarantine episodes plus failed re-probes (the backoff exponent), capped by policy. */
  backoffLevel: number;
  /** When a quarantined builder is probed again (ms), or null. */
  quarantinedUntil: number | null;
  nextProbeAt: number | null;
  lastProbe: ProbeRecord | null;
  lastSuccessAt: number | null;
  /** The last failed probe, kept while later probes pass. */
  lastFailure: ProbeRecord | null;
  /** The most recent transitions, oldest first (bounded, e.g. 20). */
  transitions: Transition[];
  /** Counters since the state file was created: transitions per "from>to" and probes per result. */
  transitionCounts: Record<string, number>;
  probeCounts: Record<string, number>;
  /** From Nix's current-load directory, when readable. */
  slots: number | null;
  slotsBusy: number | null;
}

export type GuardName = "max-quarantined-share" | "all-failed" | "never-empty" | "local-fault";

export interface WatchSnapshot {
  /** Schema version of this object. */
  version: 1;
  startedAt: number;
  /** When the last probe round finished, or null before the first. */
  lastRoundAt: number | null;
  source: { path: string; lines: number; readAt: number | null; error: string | null };
  output: {
    path: string;
    lastWriteAt: number | null;
    writes: number;
    /** sha256 hex of the content written last. */
    hash: string | null;
    /** Lines of the output, as written. */
    content: string[];
  };
  /** Source vs output, one entry per source line that is not listed as is. */
  diff: { builder: string; disposition: Exclude<Disposition, "listed">; state: WatchState }[];
  guards: GuardName[];
  /** A fault on this machine (daemon down, ssh missing…), which freezes the file; null when none. */
  localFault: { cause: string; message: string; since: number } | null;
  /** Where each system's builds go now: the builders that would accept them, in Nix's order. */
  routing: { system: string; builders: string[] }[];
  builders: BuilderStatus[];
  /** Recent remote builds, newest first, when attribution records exist (the build-hook wrapper). */
  recentBuilds?: {
    drv: string;
    system: string;
    machine: string | null;
    startedAt: number;
    endedAt: number | null;
    result: string;
  }[];
}
