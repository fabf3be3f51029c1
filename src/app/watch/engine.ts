/**
 * watch's engine: probes the source's builders round after round, moves each through the policy's states
 * (policy.ts), writes the managed machines file (writer.ts) and persists counters (state.ts). Its edges
 * (the HTTP server in http.ts, metrics, the status page, `watch status`) only call the methods below and
 * read `snapshot()` (model.ts). See docs/watch.md.
 *
 * API for the HTTP server and the command:
 *   const w = new Watch(options);
 *   await w.start();              // first round done, file written: ready (the command then signals readiness)
 *   w.snapshot(): WatchSnapshot   // a fresh, plain copy: safe to serialise or keep
 *   w.drain(name) / w.undrain(name): Promise<BuilderStatus>  // name = store URI, user@host or host;
 *                                 // throws UnknownBuilderError; the file is rewritten before it resolves
 *   w.onUpdate(fn): () => void    // fn() after each round or operator action; returns an unsubscribe
 *   await w.round()               // one round now (--once, tests)
 *   await w.stop({ restore })     // clean stop: restore = write the source's full list to the output
 */
import type {
  BuilderStatus,
  GuardName,
  ProbeRecord,
  Transition,
  WatchSnapshot,
  WatchState,
} from "./model.js";
import {
  applyGuards,
  type BuilderMemory,
  causeKind,
  DEFAULT_POLICY,
  disposition,
  freshMemory,
  isDue,
  keep,
  type PolicyConfig,
  step,
} from "./policy.js";
import { takeSignals } from "./signals.js";
import { loadState, type PersistedBuilder, type PersistedState, saveState } from "./state.js";
import { render, type SourceText, sha256, writeOutput } from "./writer.js";

export class UnknownBuilderError extends Error {
  constructor(readonly builderName: string) {
    super(`no builder named '${builderName}' in the source`);
    this.name = "UnknownBuilderError";
  }
}

/** One builder of the source, as the engine needs it. */
export interface SourceMachine {
  storeUri: string;
  /** The machines line (or segment) byte for byte. */
  line: string;
  index: number;
  systems: string[];
  supportedFeatures: string[];
  mandatoryFeatures: string[];
  maxJobs: number;
  /** Host and user@host, for matching operator names. */
  aliases: string[];
}

export interface Source {
  path: string;
  text: SourceText;
  machines: SourceMachine[];
}

export interface SourceProvider {
  /** Read the source now; throws a one-line Error when it cannot be read (the file is then left alone). */
  read(): Promise<Source>;
}

export interface RoundProbe {
  /** A fault on this machine: the probes say nothing about the builders, so the round changes nothing. */
  local: { cause: string; message: string } | null;
  results: Map<string, ProbeRecord>;
}

export interface Prober {
  /** Probe these builders (bounded concurrency and jitter are the prober's); `full` also reads remote config. */
  round(machines: readonly SourceMachine[], full: ReadonlySet<string>): Promise<RoundProbe>;
}

export interface WatchOptions {
  source: SourceProvider;
  prober: Prober;
  outputPath: string;
  stateDir: string;
  intervalMs: number;
  policy?: Partial<PolicyConfig>;
  /** Read the remote configuration every Nth probe of a builder (default 10). */
  fullEvery?: number;
  /** At most one write per this many ms (default 10 000); a change waits for the next round. */
  minWriteIntervalMs?: number;
  /** Transitions kept per builder (default 20). */
  keepTransitions?: number;
  now?: () => number;
  random?: () => number;
  /** One-line notes (state ignored, write failed…), for the journal. */
  log?: (line: string) => void;
  /**
   * Where the build hook leaves `cannot build on` signals (src/app/watch/signals.ts): a signal for a
   * builder in the file starts a round at once (at most one such round per `signalGapMs`, default
   * 5 000). Null: no signals.
   */
  signalsDir?: string | null;
  signalGapMs?: number;
  /** The recent remote builds for the snapshot (the build-hook wrapper's records), if any. */
  recentBuilds?: () => NonNullable<WatchSnapshot["recentBuilds"]>;
}

interface Entry {
  m: SourceMachine;
  mem: BuilderMemory;
  drained: boolean;
  transitions: Transition[];
  transitionCounts: Record<string, number>;
  probeCounts: Record<string, number>;
  lastProbe: ProbeRecord | null;
  lastFailure: ProbeRecord | null;
  probes: number;
  nextProbeAt: number | null;
}

function matches(m: SourceMachine, name: string): boolean {
  return m.storeUri === name || m.storeUri.split("?")[0] === name || m.aliases.includes(name);
}

export class Watch {
  readonly policy: PolicyConfig;
  private readonly now: () => number;
  private readonly rand: () => number;
  private readonly log: (line: string) => void;
  private readonly entries = new Map<string, Entry>();
  /** Memory of builders loaded from the state file but not (yet) in the source. */
  private persisted: Record<string, PersistedBuilder> = {};
  private source: Source | null = null;
  private sourceError: string | null = null;
  private sourceReadAt: number | null = null;
  private readonly startedAt: number;
  private lastRoundAt: number | null = null;
  private guards: GuardName[] = [];
  private localFault: WatchSnapshot["localFault"] = null;
  private output = {
    lastWriteAt: null as number | null,
    writes: 0,
    hash: null as string | null,
    content: [] as string[],
  };
  private lastWriteAttemptAt = Number.NEGATIVE_INFINITY;
  private listeners = new Set<() => void>();
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  /** Serialises rounds, operator actions and the final restore. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: WatchOptions) {
    this.policy = { ...DEFAULT_POLICY, ...(opts.policy ?? {}) };
    this.now = opts.now ?? Date.now;
    this.rand = opts.random ?? Math.random;
    this.log = opts.log ?? (() => {});
    this.startedAt = this.now();
    const loaded = loadState(opts.stateDir);
    if (loaded.problem) this.log(`state: ${loaded.problem}`);
    if (loaded.state) this.persisted = { ...loaded.state.builders };
  }

  /** Run `fn` after everything queued before it. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => {});
    return p;
  }

  onUpdate(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private notify(): void {
    for (const fn of this.listeners) {
      try {
        fn();
      } catch {
        // a listener's error is its own
      }
    }
  }

  /** The first round, then one every interval until stop(). */
  async start(): Promise<void> {
    this.roundStartedAt = performance.now();
    await this.round();
    this.schedule();
    if (this.opts.signalsDir) {
      this.signalTimer = setInterval(() => this.checkSignals(), 1000);
      this.signalTimer.unref();
    }
  }

  private signalTimer: NodeJS.Timeout | null = null;
  private lastSignalRoundAt = Number.NEGATIVE_INFINITY;

  /**
   * Take the hook's signals; when one names a builder of the file that is not already out, run a
   * round now (the probes decide; a signal alone never takes a builder out).
   */
  checkSignals(): Promise<void> | null {
    if (!this.opts.signalsDir || this.stopped) return null;
    const signals = takeSignals(this.opts.signalsDir);
    if (signals.length === 0) return null;
    const named = signals.filter((sg) =>
      [...this.entries.values()].some(
        (e) => matches(e.m, sg.builder) && e.mem.state !== "quarantined" && !e.drained,
      ),
    );
    if (named.length === 0) return null;
    const now = this.now();
    if (now - this.lastSignalRoundAt < (this.opts.signalGapMs ?? 5000)) return null;
    this.lastSignalRoundAt = now;
    this.log(`signal: ${named[0]!.reason || `cannot build on '${named[0]!.builder}'`}: probing now`);
    const r = this.round().catch((e) =>
      this.log(`round failed: ${e instanceof Error ? e.message : String(e)}`),
    );
    return r;
  }

  /** When the last scheduled round started (ms, performance.now()). */
  private roundStartedAt: number | null = null;

  /**
   * The next round starts one interval after the last one started, so that each builder is probed once
   * per interval however long a round takes; after a round longer than that, a quarter of the interval.
   */
  private schedule(): void {
    if (this.stopped) return;
    const i = this.opts.intervalMs;
    const since = this.roundStartedAt === null ? 0 : performance.now() - this.roundStartedAt;
    this.timer = setTimeout(
      () => {
        this.roundStartedAt = performance.now();
        this.running = this.round()
          .catch((e) => this.log(`round failed: ${e instanceof Error ? e.message : String(e)}`))
          .finally(() => {
            this.running = null;
            this.schedule();
          });
      },
      Math.max(i / 4, i - since),
    );
  }

  async stop(opts: { restore: boolean }): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.signalTimer) clearInterval(this.signalTimer);
    if (this.running) await this.running;
    await this.serial(async () => {
      if (opts.restore && this.source) {
        const text = render(this.source.text, new Map());
        if (text !== "" || this.source.machines.length === 0) await this.write(text, true);
      }
      await this.save();
    });
  }

  private transition(e: Entry, from: WatchState, to: WatchState, reason: string, at: number): void {
    if (from === to) return;
    this.log(`${e.m.storeUri}: ${from} → ${to} (${reason})`);
    e.transitions.push({ at, from, to, reason });
    const keepN = this.opts.keepTransitions ?? 20;
    if (e.transitions.length > keepN) e.transitions.splice(0, e.transitions.length - keepN);
    const k = `${from}>${to}`;
    e.transitionCounts[k] = (e.transitionCounts[k] ?? 0) + 1;
  }

  /** Align the entries with the source: new builders start `unknown` (or from the state file). */
  private sync(src: Source, now: number): void {
    const seen = new Set<string>();
    for (const m of src.machines) {
      seen.add(m.storeUri);
      const e = this.entries.get(m.storeUri);
      if (e) {
        e.m = m;
        continue;
      }
      const p = this.persisted[m.storeUri];
      this.entries.set(m.storeUri, {
        m,
        mem: p ? { ...p.memory } : freshMemory(now),
        drained: p?.drained ?? false,
        transitions: p ? [...p.transitions] : [],
        transitionCounts: p ? { ...p.transitionCounts } : {},
        probeCounts: p ? { ...p.probeCounts } : {},
        lastProbe: null,
        lastFailure: null,
        probes: 0,
        nextProbeAt: now,
      });
    }
    for (const k of [...this.entries.keys()]) {
      if (!seen.has(k)) {
        const e = this.entries.get(k)!;
        this.persisted[k] = this.persist(e);
        this.entries.delete(k);
      }
    }
  }

  private persist(e: Entry): PersistedBuilder {
    return {
      memory: { ...e.mem },
      transitions: [...e.transitions],
      transitionCounts: { ...e.transitionCounts },
      probeCounts: { ...e.probeCounts },
      drained: e.drained,
    };
  }

  /** One round: read the source, probe the builders that are due, apply the policy and guards, write. */
  round(): Promise<void> {
    return this.serial(() => this.roundNow());
  }

  private async roundNow(): Promise<void> {
    const t0 = this.now();
    let src: Source;
    try {
      src = await this.opts.source.read();
      this.source = src;
      this.sourceError = null;
      this.sourceReadAt = t0;
    } catch (e) {
      // Without a source there is nothing to compare with: the output stays as it is.
      this.sourceError = e instanceof Error ? e.message : String(e);
      this.log(`source: ${this.sourceError}`);
      this.lastRoundAt = this.now();
      this.notify();
      return;
    }
    this.sync(src, t0);
    const due = [...this.entries.values()].filter((e) => isDue(e.mem, t0));
    const full = new Set(
      due.filter((e) => e.probes % Math.max(1, this.opts.fullEvery ?? 10) === 0).map((e) => e.m.storeUri),
    );
    const probe = await this.opts.prober.round(
      due.map((e) => e.m),
      full,
    );
    const now = this.now();
    if (probe.local) {
      // A fault here (daemon down, ssh missing…) says nothing about the builders: freeze the file.
      if (!this.localFault || this.localFault.cause !== probe.local.cause)
        this.localFault = { ...probe.local, since: now };
      this.guards = ["local-fault"];
      for (const e of due) e.nextProbeAt = now + this.opts.intervalMs;
      if (this.output.hash === null) await this.apply(now); // nothing written yet: write the current view
      await this.save();
      this.lastRoundAt = now;
      this.notify();
      return;
    }
    const before = new Map([...this.entries].map(([k, e]) => [k, e.mem.state]));
    for (const e of due) {
      const r = probe.results.get(e.m.storeUri);
      if (!r) continue;
      e.probes++;
      e.lastProbe = r;
      if (!r.ok) e.lastFailure = r;
      const key = r.ok ? (r.cause === "slow" ? "slow" : "ok") : (r.cause ?? "failed");
      e.probeCounts[key] = (e.probeCounts[key] ?? 0) + 1;
      const from = e.mem.state;
      const s = step(e.mem, { ok: r.ok, cause: r.cause ?? null }, now, this.policy, this.rand());
      e.mem = s.memory;
      if (s.reason) this.transition(e, from, e.mem.state, s.reason, now);
    }
    const g = applyGuards(
      [...this.entries.entries()].map(([k, e]) => ({
        builder: k,
        memory: e.mem,
        previous: before.get(k) ?? "unknown",
        failingNetwork:
          e.lastProbe !== null && ["builder", "local"].includes(causeKind(e.lastProbe.ok, e.lastProbe.cause)),
      })),
      this.policy,
    );
    for (const k of g.kept) {
      const e = this.entries.get(k)!;
      const from = e.mem.state;
      e.mem = keep(e.mem, now);
      this.transition(e, from, "kept", g.guards[0] ?? "guard", now);
    }
    this.guards = g.guards;
    // Every builder failing at once points at this machine (its network, its keys): say so.
    this.localFault = g.guards.includes("all-failed")
      ? this.localFault?.cause === "all-builders-failed"
        ? this.localFault
        : {
            cause: "all-builders-failed",
            message: "every builder failed at once: suspecting this machine's side; all are kept in the file",
            since: now,
          }
      : null;
    // The next scheduled round (see schedule()).
    const next = Math.max(t0 + this.opts.intervalMs, now + this.opts.intervalMs / 4);
    for (const e of this.entries.values()) {
      e.nextProbeAt =
        (e.mem.state === "quarantined" || e.mem.state === "misconfigured") && e.mem.quarantinedUntil !== null
          ? Math.max(e.mem.quarantinedUntil, next)
          : next;
    }
    await this.apply(now);
    await this.save();
    // Set last: "a round finished" (readiness, --wait-ready) means its file and state are written.
    this.lastRoundAt = now;
    this.notify();
  }

  private dispositions(): Map<string, ReturnType<typeof disposition>> {
    const d = new Map<string, ReturnType<typeof disposition>>();
    for (const [k, e] of this.entries)
      d.set(k, disposition(e.drained ? "drained" : e.mem.state, this.policy));
    return d;
  }

  /** Render and write the output when it changed (subject to the write rate limit and never-empty). */
  private async apply(now: number, force = false): Promise<void> {
    if (!this.source) return;
    const disp = this.dispositions();
    let text = render(this.source.text, disp);
    const machines = this.source.machines;
    if (machines.length > 0 && machines.every((m) => disp.get(m.storeUri) === "removed")) {
      // Never an empty file while the source has lines: fall back to the full source.
      if (!this.guards.includes("never-empty")) this.guards = [...this.guards, "never-empty"];
      text = render(this.source.text, new Map());
    }
    const hash = sha256(text);
    if (hash === this.output.hash) return;
    if (!force && now - this.lastWriteAttemptAt < (this.opts.minWriteIntervalMs ?? 10_000)) return;
    await this.write(text, false);
  }

  private async write(text: string, _restore: boolean): Promise<void> {
    const now = this.now();
    this.lastWriteAttemptAt = now;
    try {
      const wrote = await writeOutput(this.opts.outputPath, text);
      if (wrote) {
        this.output.writes++;
        this.output.lastWriteAt = now;
      }
      this.output.hash = sha256(text);
      this.output.content = text === "" ? [] : text.replace(/\n$/, "").split("\n");
    } catch (e) {
      this.log(`write ${this.opts.outputPath}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  private async save(): Promise<void> {
    const builders: Record<string, PersistedBuilder> = { ...this.persisted };
    for (const [k, e] of this.entries) builders[k] = this.persist(e);
    const st: PersistedState = { version: 1, savedAt: this.now(), builders };
    try {
      await saveState(this.opts.stateDir, st);
    } catch (e) {
      this.log(`state: cannot save: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  private find(name: string): Entry {
    for (const e of this.entries.values()) if (matches(e.m, name)) return e;
    throw new UnknownBuilderError(name);
  }

  /** Take a builder out of the file until undrain (an operator's decision; never automatic). */
  drain(name: string): Promise<BuilderStatus> {
    return this.serial(async () => {
      const e = this.find(name);
      const now = this.now();
      if (!e.drained) {
        const from = e.mem.state;
        e.drained = true;
        e.mem = { ...e.mem, state: "drained", since: now };
        this.transition(e, from, "drained", "drain", now);
        await this.apply(now, true);
        await this.save();
        this.notify();
      }
      return this.status(e);
    });
  }

  /** Put a drained builder back: it starts `unknown` and the next probe decides. */
  undrain(name: string): Promise<BuilderStatus> {
    return this.serial(async () => {
      const e = this.find(name);
      const now = this.now();
      if (e.drained) {
        e.drained = false;
        e.mem = { ...e.mem, state: "unknown", since: now, consecutiveFailures: 0, quarantinedUntil: null };
        this.transition(e, "drained", "unknown", "undrain", now);
        e.nextProbeAt = now;
        await this.apply(now, true);
        await this.save();
        this.notify();
      }
      return this.status(e);
    });
  }

  private status(e: Entry): BuilderStatus {
    const state: WatchState = e.drained ? "drained" : e.mem.state;
    return {
      builder: e.m.storeUri,
      line: e.m.line,
      index: e.m.index,
      systems: [...e.m.systems],
      supportedFeatures: [...e.m.supportedFeatures],
      mandatoryFeatures: [...e.m.mandatoryFeatures],
      maxJobs: e.m.maxJobs,
      state,
      since: e.mem.since,
      disposition: disposition(state, this.policy),
      consecutiveFailures: e.mem.consecutiveFailures,
      backoffLevel: e.mem.backoffLevel,
      quarantinedUntil: state === "quarantined" || state === "misconfigured" ? e.mem.quarantinedUntil : null,
      nextProbeAt: e.nextProbeAt,
      lastProbe: e.lastProbe ? structuredClone(e.lastProbe) : null,
      lastSuccessAt: e.mem.lastSuccessAt,
      lastFailure: e.lastFailure ? structuredClone(e.lastFailure) : null,
      transitions: e.transitions.map((t) => ({ ...t })),
      transitionCounts: { ...e.transitionCounts },
      probeCounts: { ...e.probeCounts },
      slots: null,
      slotsBusy: null,
    };
  }

  snapshot(): WatchSnapshot {
    const builders = [...this.entries.values()]
      .sort((a, b) => a.m.index - b.m.index)
      .map((e) => this.status(e));
    const routing = new Map<string, string[]>();
    for (const b of builders) {
      for (const s of b.systems) {
        if (!routing.has(s)) routing.set(s, []);
        if (b.disposition === "listed" && b.maxJobs > 0) routing.get(s)!.push(b.builder);
      }
    }
    return {
      version: 1,
      startedAt: this.startedAt,
      lastRoundAt: this.lastRoundAt,
      source: {
        path: this.source?.path ?? "",
        lines: this.source?.machines.length ?? 0,
        readAt: this.sourceReadAt,
        error: this.sourceError,
      },
      output: { path: this.opts.outputPath, ...this.output, content: [...this.output.content] },
      diff: builders
        .filter((b) => b.disposition !== "listed")
        .map((b) => ({
          builder: b.builder,
          disposition: b.disposition as "held" | "removed",
          state: b.state,
        })),
      guards: [...this.guards],
      localFault: this.localFault ? { ...this.localFault } : null,
      routing: [...routing].map(([system, bs]) => ({ system, builders: bs })),
      builders,
      ...(this.opts.recentBuilds ? { recentBuilds: this.opts.recentBuilds() } : {}),
    };
  }
}
