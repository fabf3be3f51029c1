/**
 * Client side of the `nix-store --serve` protocol (ssh:// stores, Nix 2.8.0 src/libstore/legacy-ssh-store.cc and serve-protocol.hh; docs/protocols.md), over any pair of
 * streams (usually a child's stdio). Failures are classified and worded exactly as Nix's
 * legacy-ssh-store does:
 *
 *  - fewer than 8 bytes, then EOF (anywhere in the greeting)      → `cannot connect to '<host>'`
 *  - first u64 does not fit 32 bits (text, a banner...)          → `'nix-store --serve' protocol mismatch from '<host>', got '<bytes>'`
 *  - first u64 fits but is not SERVE_MAGIC_2                     → `'nix-store --serve' protocol mismatch from '<host>'`
 *  - server major version ≠ 2                                    → `unsupported 'nix-store --serve' protocol version on '<host>'`
 *
 * Nix has no deadline here (it waits forever); we add one and call that `timeout`.
 */
import type { Readable, Writable } from "node:stream";
import { chomp, printableBytes, readMagic, WireError, WireReader, WireWriter } from "./wire.js";

export const SERVE_MAGIC_1 = 0x390c9deb;
export const SERVE_MAGIC_2 = 0x5452eecb;
/** The version the 2.8 client sends (2.7); current Nix sends 2.8 (0x208) and requires ≥ 2.5 from servers. */
export const SERVE_PROTOCOL_2_8 = 0x207;

export const ServeCommand = {
  QueryValidPaths: 1,
  QueryPathInfos: 2,
  DumpStorePath: 3,
  ImportPaths: 4,
  ExportPaths: 5,
  BuildPaths: 6,
  QueryClosure: 7,
  BuildDerivation: 8,
  AddToStoreNar: 9,
} as const;

export type ServeFailureKind = "eof" | "garbage" | "bad-magic" | "bad-version" | "timeout" | "io";

export interface ServeFailure {
  ok: false;
  kind: ServeFailureKind;
  /** Nix's message (without `error: `). For `timeout`/`io` it is ours, Nix has no equivalent. */
  nixMessage: string;
  /** Everything the server sent during the greeting (bounded), for evidence. */
  bytesSeen: Buffer;
  /** `bytesSeen` rendered printable. */
  textSeen: string;
}

export interface ServeHandshakeOk {
  ok: true;
  /** "2.7" for a 2.8 server. */
  serverVersion: string;
  serverVersionNumber: number;
  /** min(client, server), what later steps gate on. */
  negotiated: number;
}

export type ServeHandshakeResult = ServeHandshakeOk | ServeFailure;

export interface ServeIo {
  /** The server's output (child stdout). */
  input: Readable;
  /** The server's input (child stdin). */
  output: Writable;
}

export interface ServeHandshakeOptions {
  /** The host as Nix names it in messages (2.8: everything between `ssh://` and `?`). */
  host: string;
  /** Version to announce; default 2.7 as the 2.8 client does. */
  clientVersion?: number;
  /** Overall deadline for the greeting in ms (default 15 s). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** An existing reader on `io.input` (e.g. after reading the `started` line); otherwise one is made. */
  reader?: WireReader;
  /** Max bytes to drain after garbage, for the `got '…'` text (default 4096). */
  drainBytes?: number;
}

export function formatProtoVersion(v: number): string {
  return `${v >> 8}.${v & 0xff}`;
}

function fail(kind: ServeFailureKind, nixMessage: string, bytesSeen: Buffer): ServeFailure {
  return { ok: false, kind, nixMessage, bytesSeen, textSeen: printableBytes(bytesSeen) };
}

/** A connection after a successful greeting. */
export class ServeConnection {
  constructor(
    readonly io: ServeIo,
    readonly reader: WireReader,
    readonly handshake: ServeHandshakeOk,
    readonly host: string,
  ) {}

  /**
   * `QueryValidPaths` (command 1): which of `paths` are valid on the server. One round trip.
   * The 2.8 server fails the whole command (and exits) on a path outside its store directory.
   */
  async queryValidPaths(paths: Iterable<string>, opts: { lock?: boolean; substitute?: boolean } = {}) {
    const w = new WireWriter()
      .u64(ServeCommand.QueryValidPaths)
      .bool(opts.lock ?? false)
      .bool(opts.substitute ?? false)
      .strings(paths);
    await w.flushTo(this.io.output);
    return this.reader.strings();
  }

  /** Close the server's stdin; a 2.8 server then exits 0. */
  close(): void {
    this.io.output.end();
  }
}

/**
 * Run the greeting. On success the returned connection can run commands; on failure the result says
 * what Nix would have printed. Never throws, never waits longer than `timeoutMs`.
 */
export async function serveHandshake(
  io: ServeIo,
  opts: ServeHandshakeOptions,
): Promise<{ result: ServeHandshakeResult; connection?: ServeConnection }> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const deadline = Date.now() + timeoutMs;
  io.output.on("error", () => {});
  const reader = opts.reader ?? new WireReader(io.input, { deadline, timeoutMs, signal: opts.signal });
  const savedDeadline = reader.deadline;
  reader.deadline = Math.min(deadline, savedDeadline ?? deadline);
  const start = reader.offset;
  const seen = () => reader.seen().subarray(start);
  const clientVersion = opts.clientVersion ?? SERVE_PROTOCOL_2_8;
  const host = opts.host;

  try {
    await new WireWriter().u64(SERVE_MAGIC_1).u64(clientVersion).flushTo(io.output, timeoutMs);
  } catch {
    // EPIPE: the other side is gone; what it printed (if anything) decides the message below.
  }

  try {
    const first = await readMagic(reader, io.output, start, opts.drainBytes);
    if ("text" in first)
      return {
        result: fail(
          "garbage",
          `'nix-store --serve' protocol mismatch from '${host}', got '${chomp(first.text.toString("utf8"))}'`,
          first.text,
        ),
      };
    if (first.magic !== SERVE_MAGIC_2)
      return { result: fail("bad-magic", `'nix-store --serve' protocol mismatch from '${host}'`, seen()) };
    let version: number;
    try {
      version = await reader.u32();
    } catch (e) {
      if (e instanceof WireError && e.kind === "too-large")
        return { result: fail("bad-version", e.message, seen()) };
      throw e;
    }
    if ((version & 0xff00) !== 0x200)
      return {
        result: fail("bad-version", `unsupported 'nix-store --serve' protocol version on '${host}'`, seen()),
      };
    const ok: ServeHandshakeOk = {
      ok: true,
      serverVersion: formatProtoVersion(version),
      serverVersionNumber: version,
      negotiated: Math.min(version, clientVersion),
    };
    reader.deadline = savedDeadline;
    return { result: ok, connection: new ServeConnection(io, reader, ok, host) };
  } catch (e) {
    if (e instanceof WireError) {
      if (e.kind === "eof") return { result: fail("eof", `cannot connect to '${host}'`, seen()) };
      if (e.kind === "timeout" || e.kind === "aborted")
        return {
          result: fail(
            "timeout",
            `no 'nix-store --serve' greeting from '${host}' within ${timeoutMs} ms (${seen().length} bytes received)`,
            seen(),
          ),
        };
      return { result: fail("io", `${e.message} (talking to '${host}')`, seen()) };
    }
    return { result: fail("io", `${String(e)} (talking to '${host}')`, seen()) };
  }
}
