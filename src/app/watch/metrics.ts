// Prometheus metrics for `nix-builders watch`, computed from the engine's snapshot at scrape time.
//
// Conventions (docs/watch-service.md lists every series): prefix `nix_builders_`, base units (seconds,
// Unix timestamps in seconds), counters end in `_total`, the `builder` label is the store URI from the
// machines line, and no label is per derivation. Every series is rebuilt from the snapshot on each
// scrape, so a builder that leaves the source leaves the output too. Counters that the engine persists
// (probes, transitions, writes) are monotonic across restarts of watch; the attribution counters are
// counted here and start at 0 with the process, which Prometheus' rate() handles.

import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { GuardName, ProbePhase, WatchSnapshot, WatchState } from "./model.js";

export const METRIC_PREFIX = "nix_builders_";

export const WATCH_STATES: readonly WatchState[] = [
  "unknown",
  "up",
  "suspect",
  "quarantined",
  "misconfigured",
  "probation",
  "kept",
  "drained",
];
export const GUARD_NAMES: readonly GuardName[] = [
  "max-quarantined-share",
  "all-failed",
  "never-empty",
  "local-fault",
];
const PHASES: readonly ProbePhase[] = ["dns", "tcp", "auth", "handshake", "query", "total"];
const DISPOSITIONS = ["listed", "held", "removed"] as const;

/** Longest label value taken from the snapshot; longer ones are cut (a machine line can be long). */
const MAX_LABEL = 512;

/**
 * A result or cause word as a label value: the engine's words are short kebab-case ("ok", "timeout",
 * "remote-untrusted"); anything else becomes "other", so a label's values stay a small set.
 */
export function resultLabel(word: string): string {
  return /^[a-z][a-z0-9-]{0,39}$/.test(word) ? word : "other";
}

function labelText(text: string): string {
  return text.length > MAX_LABEL ? text.slice(0, MAX_LABEL) : text;
}

const seconds = (ms: number): number => ms / 1000;

export interface WatchMetricsOptions {
  /** The engine's current snapshot; called once per scrape. */
  snapshot: () => WatchSnapshot;
  /** A registry to fill; a private one by default (never prom-client's global one). */
  registry?: Registry;
  /** Add prom-client's default process_* and nodejs_* metrics (default true). */
  defaultMetrics?: boolean;
}

export interface WatchMetrics {
  readonly registry: Registry;
  /** The exposition format's content type, for the HTTP response. */
  readonly contentType: string;
  /** The metrics in the Prometheus text format. */
  render(): Promise<string>;
}

/** Registers every watch metric on a (private) registry; values come from `snapshot()` at scrape. */
export function createWatchMetrics(options: WatchMetricsOptions): WatchMetrics {
  const registry = options.registry ?? new Registry();
  const registers = [registry];
  const p = METRIC_PREFIX;

  // The snapshot is taken once per scrape: the first collect() of a scrape takes it, the others reuse it.
  let current: WatchSnapshot | null = null;
  const snap = (): WatchSnapshot => {
    if (current === null) current = options.snapshot();
    return current;
  };

  registerProbeMetrics(registers, snap, p);
  registerBuilderStateMetrics(registers, snap, p);
  registerGlobalMetrics(registers, snap, p);

  // --- attribution (registered when the engine first has build records) --------------------------
  let attribution: Attribution | null = null;

  if (options.defaultMetrics !== false) {
    collectDefaultMetrics({ register: registry });
    // prom-client also exports these three sums as gauges named `_total`, which the Prometheus naming
    // rules reserve for counters (`promtool check metrics` flags them). The per-type gauges
    // (nodejs_active_handles{type}…) carry the same numbers, so the sums are left out.
    for (const name of [
      "nodejs_active_handles_total",
      "nodejs_active_requests_total",
      "nodejs_active_resources_total",
    ]) {
      registry.removeSingleMetric(name);
    }
  }

  return {
    registry,
    contentType: registry.contentType,
    async render() {
      current = null;
      try {
        const recent = snap().recentBuilds;
        if (recent) {
          attribution ??= registerAttribution(registry);
          attribution.update(recent);
        }
        return await registry.metrics();
      } finally {
        current = null;
      }
    },
  };
}

type Snap = () => WatchSnapshot;

/** Per builder: its probes, its state and what the file does with it. */
function registerProbeMetrics(registers: Registry[], snap: Snap, p: string): void {
  // --- per builder -------------------------------------------------------------------------------
  new Gauge({
    name: `${p}probe_success`,
    help: "Whether the builder's last probe passed (1) or failed (0); absent before its first probe.",
    labelNames: ["builder"],
    registers,
    collect() {
      this.reset();
      for (const b of snap().builders) {
        if (b.lastProbe) this.set({ builder: labelText(b.builder) }, b.lastProbe.ok ? 1 : 0);
      }
    },
  });
  new Gauge({
    name: `${p}probe_duration_seconds`,
    help: "Duration of each phase of the builder's last probe, in seconds.",
    labelNames: ["builder", "phase"],
    registers,
    collect() {
      this.reset();
      for (const b of snap().builders) {
        const phases = b.lastProbe?.phases ?? {};
        for (const phase of PHASES) {
          const v = phases[phase];
          if (typeof v === "number" && Number.isFinite(v))
            this.set({ builder: labelText(b.builder), phase }, v);
        }
      }
    },
  });
  new Counter({
    name: `${p}probes_total`,
    help: "Probes of the builder by result: ok, or the doctor's cause of the failure.",
    labelNames: ["builder", "result"],
    registers,
    collect() {
      this.reset();
      for (const b of snap().builders) {
        const byResult = new Map<string, number>();
        for (const [result, n] of Object.entries(b.probeCounts)) {
          const r = resultLabel(result);
          byResult.set(r, (byResult.get(r) ?? 0) + n);
        }
        for (const [result, n] of byResult) {
          if (n >= 0) this.inc({ builder: labelText(b.builder), result }, n);
        }
      }
    },
  });
  new Gauge({
    name: `${p}builder_state`,
    help: "The builder's state in watch: 1 for the current state, 0 for the others.",
    labelNames: ["builder", "state"],
    registers,
    collect() {
      this.reset();
      for (const b of snap().builders) {
        for (const state of WATCH_STATES)
          this.set({ builder: labelText(b.builder), state }, b.state === state ? 1 : 0);
      }
    },
  });
  new Gauge({
    name: `${p}builder_state_since_timestamp_seconds`,
    help: "When the builder entered its current state, as a Unix timestamp.",
    labelNames: ["builder"],
    registers,
    collect() {
      this.reset();
      for (const b of snap().builders) this.set({ builder: labelText(b.builder) }, seconds(b.since));
    },
  });
  new Gauge({
    name: `${p}builder_disposition`,
    help: "What the output machines file does with the builder's line: 1 for the current disposition.",
    labelNames: ["builder", "disposition"],
    registers,
    collect() {
      this.reset();
      for (const b of snap().builders) {
        for (const d of DISPOSITIONS)
          this.set({ builder: labelText(b.builder), disposition: d }, b.disposition === d ? 1 : 0);
      }
    },
  });
  new Gauge({
    name: `${p}consecutive_failures`,
    help: "The builder's consecutive failed probes.",
    labelNames: ["builder"],
    registers,
    collect() {
      this.reset();
      for (const b of snap().builders) this.set({ builder: labelText(b.builder) }, b.consecutiveFailures);
    },
  });
}

/** Per builder: failures, backoff, last success, transitions, remote facts and slots. */
function registerBuilderStateMetrics(registers: Registry[], snap: Snap, p: string): void {
  new Gauge({
    name: `${p}quarantined_until_timestamp_seconds`,
    help: "When a quarantined builder is probed again, as a Unix timestamp; absent when not quarantined.",
    labelNames: ["builder"],
    registers,
    collect() {
      this.reset();
      for (const b of snap().builders) {
        if (b.quarantinedUntil !== null)
          this.set({ builder: labelText(b.builder) }, seconds(b.quarantinedUntil));
      }
    },
  });
  new Gauge({
    name: `${p}last_success_timestamp_seconds`,
    help: "When the builder last passed a probe, as a Unix timestamp; absent if it never did.",
    labelNames: ["builder"],
    registers,
    collect() {
      this.reset();
      for (const b of snap().builders) {
        if (b.lastSuccessAt !== null) this.set({ builder: labelText(b.builder) }, seconds(b.lastSuccessAt));
      }
    },
  });
  new Counter({
    name: `${p}state_transitions_total`,
    help: "The builder's state transitions, by the state it left and the state it entered.",
    labelNames: ["builder", "from", "to"],
    registers,
    collect() {
      this.reset();
      for (const b of snap().builders) {
        for (const [key, n] of Object.entries(b.transitionCounts)) {
          const [from, to] = key.split(">");
          if (!from || !to || n < 0) continue;
          this.inc({ builder: labelText(b.builder), from: resultLabel(from), to: resultLabel(to) }, n);
        }
      }
    },
  });
  // What the last probe that got that far saw of the remote Nix, kept across failed probes so that the
  // info series does not change labels each time a builder fails; forgotten with the builder.
  const remoteSeen = new Map<string, { version: string; protocol: string; trusted: string }>();
  new Gauge({
    name: `${p}builder_info`,
    help: "Facts about the builder (always 1): its systems and features, and the remote Nix its probes last saw.",
    labelNames: ["builder", "systems", "features", "nix_version", "protocol", "trusted"],
    registers,
    collect() {
      this.reset();
      const present = new Set<string>();
      for (const b of snap().builders) {
        present.add(b.builder);
        const probe = b.lastProbe;
        if (probe?.remoteNixVersion !== undefined || probe?.remoteTrusted !== undefined) {
          remoteSeen.set(b.builder, {
            version: probe.remoteNixVersion ?? "",
            protocol: probe.protocol ?? "",
            trusted: probe.remoteTrusted === undefined ? "unknown" : String(probe.remoteTrusted),
          });
        }
        const seen = remoteSeen.get(b.builder);
        this.set(
          {
            builder: labelText(b.builder),
            systems: labelText(b.systems.join(",")),
            features: labelText(b.supportedFeatures.join(",")),
            nix_version: labelText(seen?.version ?? ""),
            protocol: labelText(seen?.protocol ?? ""),
            trusted: seen?.trusted ?? "unknown",
          },
          1,
        );
      }
      for (const k of remoteSeen.keys()) if (!present.has(k)) remoteSeen.delete(k);
    },
  });
  new Gauge({
    name: `${p}slots`,
    help: "The builder's build slots (maxJobs of its source line).",
    labelNames: ["builder"],
    registers,
    collect() {
      this.reset();
      for (const b of snap().builders) this.set({ builder: labelText(b.builder) }, b.slots ?? b.maxJobs);
    },
  });
  new Gauge({
    name: `${p}slots_busy`,
    help: "The builder's slots in use now, from Nix's current-load locks; absent when unreadable.",
    labelNames: ["builder"],
    registers,
    collect() {
      this.reset();
      for (const b of snap().builders) {
        if (b.slotsBusy !== null) this.set({ builder: labelText(b.builder) }, b.slotsBusy);
      }
    },
  });
}

/** Global: the file, the source, the rounds, the guards, the local fault and the systems. */
function registerGlobalMetrics(registers: Registry[], snap: Snap, p: string): void {
  // --- global ------------------------------------------------------------------------------------
  new Counter({
    name: `${p}machines_file_writes_total`,
    help: "Writes of the output machines file.",
    registers,
    collect() {
      this.reset();
      this.inc(Math.max(0, snap().output.writes));
    },
  });
  new Gauge({
    name: `${p}machines_file_last_write_timestamp_seconds`,
    help: "When the output machines file was last written, as a Unix timestamp; absent before the first write.",
    registers,
    collect() {
      this.reset();
      const at = snap().output.lastWriteAt;
      if (at !== null) this.set(seconds(at));
    },
  });
  new Gauge({
    name: `${p}machines`,
    help: "Source machine lines by what the output file does with them.",
    labelNames: ["disposition"],
    registers,
    collect() {
      this.reset();
      const s = snap();
      for (const d of DISPOSITIONS)
        this.set({ disposition: d }, s.builders.filter((b) => b.disposition === d).length);
    },
  });
  new Gauge({
    name: `${p}source_machines`,
    help: "Machine lines read from the source.",
    registers,
    collect() {
      this.reset();
      this.set(snap().source.lines);
    },
  });
  new Gauge({
    name: `${p}source_error`,
    help: "1 when the source could not be read at the last attempt (the output is kept as it was).",
    registers,
    collect() {
      this.reset();
      this.set(snap().source.error === null ? 0 : 1);
    },
  });
  new Gauge({
    name: `${p}last_round_timestamp_seconds`,
    help: "When the last probe round finished, as a Unix timestamp; absent before the first.",
    registers,
    collect() {
      this.reset();
      const at = snap().lastRoundAt;
      if (at !== null) this.set(seconds(at));
    },
  });
  new Gauge({
    name: `${p}guard_active`,
    help: "1 when the guard is holding back a change to the output file.",
    labelNames: ["guard"],
    registers,
    collect() {
      this.reset();
      const active = new Set(snap().guards);
      for (const g of GUARD_NAMES) this.set({ guard: g }, active.has(g) ? 1 : 0);
    },
  });
  new Gauge({
    name: `${p}local_fault`,
    help: "1 when a fault on this machine (daemon down, ssh missing…) freezes the output file.",
    registers,
    collect() {
      this.reset();
      this.set(snap().localFault === null ? 0 : 1);
    },
  });
  new Gauge({
    name: `${p}system_builders`,
    help: "Source machine lines that serve the system.",
    labelNames: ["system"],
    registers,
    collect() {
      this.reset();
      for (const [system, n] of systemCounts(snap())) this.set({ system: labelText(system) }, n);
    },
  });
  new Gauge({
    name: `${p}system_available_builders`,
    help: "Builders that would accept the system's builds now (listed in the output, not held).",
    labelNames: ["system"],
    registers,
    collect() {
      this.reset();
      const s = snap();
      const routed = new Map(s.routing.map((r) => [r.system, r.builders.length]));
      for (const system of systemCounts(s).keys())
        this.set({ system: labelText(system) }, routed.get(system) ?? 0);
    },
  });
}

type RecentBuilds = NonNullable<WatchSnapshot["recentBuilds"]>;

interface Attribution {
  update(recent: RecentBuilds): void;
}

function registerAttribution(registry: Registry): Attribution {
  const p = METRIC_PREFIX;
  const registers = [registry];
  const builds = new Counter({
    name: `${p}builds_total`,
    help: 'Finished builds seen in the attribution records, by builder ("local" for a local build) and result.',
    labelNames: ["builder", "result"],
    registers,
  });
  const duration = new Histogram({
    name: `${p}build_duration_seconds`,
    help: "Duration of the finished builds seen in the attribution records.",
    labelNames: ["builder"],
    buckets: [1, 5, 15, 60, 300, 900, 3600, 4 * 3600],
    registers,
  });
  const inProgress = new Gauge({
    name: `${p}builds_in_progress`,
    help: "Builds started and not finished, by builder, from the attribution records.",
    labelNames: ["builder"],
    registers,
  });
  // The engine's list is a bounded ring: a build that leaves it never comes back, so remembering the
  // keys of the finished builds in the current list is enough to count each build once.
  let counted = new Set<string>();
  return {
    update(recent) {
      const keys = new Set<string>();
      const running = new Map<string, number>();
      for (const r of recent) {
        const builder = labelText(r.machine ?? "local");
        if (r.endedAt === null) {
          running.set(builder, (running.get(builder) ?? 0) + 1);
          continue;
        }
        const key = `${r.drv}\u0000${r.startedAt}\u0000${r.machine ?? ""}`;
        keys.add(key);
        if (counted.has(key)) continue;
        builds.inc({ builder, result: resultLabel(r.result) });
        duration.observe({ builder }, Math.max(0, seconds(r.endedAt - r.startedAt)));
      }
      counted = keys;
      inProgress.reset();
      for (const [builder, n] of running) inProgress.set({ builder }, n);
    },
  };
}

/** Source lines per system, in order of first appearance. */
function systemCounts(s: WatchSnapshot): Map<string, number> {
  const counts = new Map<string, number>();
  for (const b of s.builders)
    for (const system of new Set(b.systems)) counts.set(system, (counts.get(system) ?? 0) + 1);
  return counts;
}
