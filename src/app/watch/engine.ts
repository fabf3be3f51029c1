/**
 * watch's engine: probes the source's builders round after round, moves each through the policy's states
 * (policy.ts), writes the managed machines file (writer.ts) and persists counters (state.ts). Its edges
 * (the HTTP server in http.ts, metrics, the status page, `watch status`) only call the methods below and
 * read `snapshot()` (model.ts). See docs/watch.md.
 *
 * API for the HTTP server (stable; the bodies land in the following commits):
 *   const w = new Watch(options, deps);
 *   await w.start();              // first round, file written: ready (the command then signals readiness)
 *   w.snapshot(): WatchSnapshot   // a fresh, plain copy: safe to serialise or keep
 *   w.drain(name) / w.undrain(name): BuilderStatus   // name = store URI, user@host or host; throws UnknownBuilderError
 *   w.onUpdate(fn): () => void    // fn() after each round or operator action; returns an unsubscribe
 *   await w.stop({ restore })     // clean stop: restore = write the source's full list to the output
 */
import type { BuilderStatus, WatchSnapshot } from "./model.js";

export class UnknownBuilderError extends Error {
  constructor(readonly name_: string) {
    super(`no builder named '${name_}' in the source`);
    this.name = "UnknownBuilderError";
  }
}

export interface WatchApi {
  snapshot(): WatchSnapshot;
  drain(name: string): BuilderStatus;
  undrain(name: string): BuilderStatus;
  onUpdate(fn: () => void): () => void;
}
