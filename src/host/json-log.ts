/**
 * A reader for Nix's `json-log-path` (2.30.0 and newer) on a Unix socket: the daemon, configured with
 * `json-log-path = <socket>` (scoped to the daemon through NIX_CONFIG in its environment), connects per
 * client connection and writes every log record as one JSON object a line (the `internal-json` form
 * without the `@nix ` prefix).
 *
 * Rules (docs/attribution.md):
 *  - the socket exists before the daemon writes: bind it at start (replacing a stale socket, never
 *    another kind of file) and leave it in place on stop, so that Nix finds a socket that refuses the
 *    connection rather than nothing (it would then create a regular file and append to it forever);
 *  - never back-pressure the daemon: its writes block, so every connection is read as fast as it comes;
 *    a line over the limit and records over the budget are dropped and counted, never queued.
 */
import { chmodSync, linkSync, lstatSync, renameSync, unlinkSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { parseCannotBuild, stripAnsi } from "../nix/hook-protocol.js";

export type JsonLogEvent =
  /** actBuild (105) started: the machine is "" for a local build. */
  | { kind: "build-start"; id: number; drv: string; machine: string; at: number }
  | { kind: "build-stop"; id: number; drv: string; machine: string; startedAt: number; at: number }
  | { kind: "cannot-build"; machine: string; error: string; at: number }
  | { kind: "error"; text: string; at: number };

/** Activity 105 (actBuild): fields `[drvPath, machine, curRound, nrRounds]` in 2.8.0 and 2.30.5. */
export const ACT_BUILD = 105;

/**
 * Turns records into events. One per connection: activity ids are per process, and the daemon forks
 * per client connection. Pure apart from the clock.
 */
export class JsonLogParser {
  private readonly builds = new Map<number, { drv: string; machine: string; at: number }>();
  constructor(private readonly now: () => number = Date.now) {}

  record(line: string): JsonLogEvent[] {
    let j: unknown;
    try {
      j = JSON.parse(line.startsWith("@nix ") ? line.slice(5) : line);
    } catch {
      return [];
    }
    const o = j as {
      action?: unknown;
      type?: unknown;
      id?: unknown;
      fields?: unknown;
      msg?: unknown;
      level?: unknown;
    };
    const at = this.now();
    if (o.action === "start" && o.type === ACT_BUILD && typeof o.id === "number" && Array.isArray(o.fields)) {
      const drv = String(o.fields[0] ?? "");
      const machine = String(o.fields[1] ?? "");
      this.builds.set(o.id, { drv, machine, at });
      return [{ kind: "build-start", id: o.id, drv, machine, at }];
    }
    if (o.action === "stop" && typeof o.id === "number") {
      const b = this.builds.get(o.id);
      if (!b) return [];
      this.builds.delete(o.id);
      return [{ kind: "build-stop", id: o.id, drv: b.drv, machine: b.machine, startedAt: b.at, at }];
    }
    if (o.action === "msg" && typeof o.msg === "string") {
      const text = stripAnsi(o.msg);
      const cb = parseCannotBuild(text);
      if (cb) return [{ kind: "cannot-build", ...cb, at }];
      if (o.level === 0 && text.startsWith("error:")) return [{ kind: "error", text, at }];
    }
    return [];
  }
}

export interface JsonLogReaderOptions {
  /** Longest line kept (longer ones are dropped whole). Default 64 KiB. */
  maxLine?: number;
  /** Most connections at once (the daemon opens one per client connection). Default 256. */
  maxConnections?: number;
}

export interface JsonLogReader {
  server: Server;
  dropped(): number;
  records(): number;
  /** Stop listening; the socket file stays (see the module comment). */
  close(): Promise<void>;
}

/** Bind `path` (replacing a stale socket only) and read every connection without back-pressure. */
export async function listenJsonLog(
  path: string,
  onEvent: (e: JsonLogEvent) => void,
  opts: JsonLogReaderOptions = {},
): Promise<JsonLogReader> {
  try {
    const st = lstatSync(path);
    if (!st.isSocket()) throw new Error(`${path}: exists and is not a socket; refusing to replace it`);
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  const maxLine = opts.maxLine ?? 1 << 16;
  let dropped = 0;
  let records = 0;
  const sockets = new Set<Socket>();
  const server = createServer((sock) => {
    sockets.add(sock);
    const parser = new JsonLogParser();
    let partial = "";
    let skipping = false;
    sock.setEncoding("utf8");
    sock.on("data", (chunk: string) => {
      let s = partial + chunk;
      let nl = s.indexOf("\n");
      while (nl >= 0) {
        const line = s.slice(0, nl);
        s = s.slice(nl + 1);
        if (skipping) skipping = false;
        else if (line.length > maxLine) dropped++;
        else {
          records++;
          for (const e of parser.record(line)) {
            try {
              onEvent(e);
            } catch {
              dropped++;
            }
          }
        }
        nl = s.indexOf("\n");
      }
      if (s.length > maxLine) {
        dropped++;
        skipping = true;
        s = "";
      }
      partial = s;
    });
    sock.on("error", () => undefined);
    sock.on("close", () => sockets.delete(sock));
  });
  server.maxConnections = opts.maxConnections ?? 256;
  await new Promise<void>((res, rej) => {
    server.once("error", rej);
    server.listen(path, () => res());
  });
  chmodSync(path, 0o600);
  return {
    server,
    dropped: () => dropped,
    records: () => records,
    close: () =>
      new Promise<void>((res) => {
        for (const s of sockets) s.destroy();
        // Node unlinks the socket file when the server closes. A second name for the same inode keeps it:
        // renamed back afterwards, the path holds a socket nobody listens on (connect is refused).
        const keep = `${path}.keep-${process.pid}`;
        let kept = false;
        try {
          linkSync(path, keep);
          kept = true;
        } catch {
          // the socket stays missing; the next reader binds it again
        }
        server.close(() => {
          if (kept) {
            try {
              renameSync(keep, path);
            } catch {
              // best effort
            }
          }
          res();
        });
      }),
  };
}
