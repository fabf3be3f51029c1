/**
 * Nix wire encoding (Nix 2.8.0 src/libutil/serialise.cc; docs/protocols.md), shared by the serve protocol (ssh://) and the worker protocol
 * (ssh-ng://, unix socket):
 *
 *  - u64: 8 bytes little-endian (booleans and enums too);
 *  - string: u64 length, the bytes, zero padding up to a multiple of 8;
 *  - string list/set: u64 count, then that many strings.
 *
 * `WireReader` reads incrementally from a Node stream. Every read is bounded twice: by a byte budget
 * (a garbage length can never make us wait for or buffer gigabytes) and by a deadline (a peer that
 * goes silent can never hang us). The only thing it ever throws is `WireError`.
 */
import type { Readable, Writable } from "node:stream";

export type WireErrorKind =
  /** The stream ended before the value was complete (Nix: `unexpected end-of-file`). */
  | "eof"
  /** No byte arrived before the deadline. */
  | "timeout"
  /** The read would exceed the byte budget, or a length field is larger than the budget allows. */
  | "budget"
  /** A number did not fit the expected type (Nix: `serialised integer N is too large for type 'j'`). */
  | "too-large"
  /** The caller's AbortSignal fired. */
  | "aborted"
  /** The stream emitted an error (EPIPE, ECONNRESET...). */
  | "stream";

export class WireError extends Error {
  readonly kind: WireErrorKind;
  /** Total bytes consumed from the stream when the error happened. */
  readonly offset: number;
  constructor(kind: WireErrorKind, message: string, offset: number) {
    super(message);
    this.name = "WireError";
    this.kind = kind;
    this.offset = offset;
  }
}

const MAX_U32 = 0xffff_ffffn;

// ---------------------------------------------------------------------------------------------
// Encoding (pure)

export function encodeU64(n: number | bigint): Buffer {
  const v = typeof n === "bigint" ? n : BigInt(n);
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new RangeError(`u64 out of range: ${v}`);
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}

function paddingFor(len: number): number {
  return (8 - (len % 8)) % 8;
}

export function encodeString(s: string | Uint8Array): Buffer {
  const bytes = typeof s === "string" ? Buffer.from(s, "utf8") : Buffer.from(s);
  const out = Buffer.alloc(8 + bytes.length + paddingFor(bytes.length));
  out.writeBigUInt64LE(BigInt(bytes.length), 0);
  bytes.copy(out, 8);
  return out;
}

export function encodeStrings(list: Iterable<string | Uint8Array>): Buffer {
  const parts: Buffer[] = [];
  let n = 0;
  for (const s of list) {
    parts.push(encodeString(s));
    n++;
  }
  return Buffer.concat([encodeU64(n), ...parts]);
}

/** Accumulates encoded values; `flushTo` writes them in one `write` call. */
export class WireWriter {
  private parts: Buffer[] = [];
  private size = 0;

  u64(n: number | bigint): this {
    return this.raw(encodeU64(n));
  }
  bool(b: boolean): this {
    return this.u64(b ? 1 : 0);
  }
  string(s: string | Uint8Array): this {
    return this.raw(encodeString(s));
  }
  strings(list: Iterable<string | Uint8Array>): this {
    return this.raw(encodeStrings(list));
  }
  raw(b: Buffer): this {
    this.parts.push(b);
    this.size += b.length;
    return this;
  }
  get length(): number {
    return this.size;
  }
  /** The bytes accumulated so far; resets the writer. */
  take(): Buffer {
    const b = Buffer.concat(this.parts, this.size);
    this.parts = [];
    this.size = 0;
    return b;
  }
  /** Write everything accumulated to `stream` and resolve once it has been handed to the OS. */
  flushTo(stream: Writable, timeoutMs = 30_000): Promise<void> {
    return writeAll(stream, this.take(), timeoutMs);
  }
}

/** Write `data` and wait for the write callback, with a deadline. Rejects with WireError("stream"|"timeout"). */
export function writeAll(stream: Writable, data: Buffer, timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (stream.destroyed || stream.writableEnded) {
      reject(new WireError("stream", "cannot write: the stream is closed", 0));
      return;
    }
    let done = false;
    const finish = (err?: Error | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stream.off("error", onError);
      if (err) reject(new WireError("stream", `writing: ${err.message}`, 0));
      else resolve();
    };
    const onError = (err: Error) => finish(err);
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      stream.off("error", onError);
      reject(new WireError("timeout", `writing ${data.length} bytes timed out after ${timeoutMs} ms`, 0));
    }, timeoutMs);
    stream.on("error", onError);
    stream.write(data, (err) => finish(err));
  });
}

// ---------------------------------------------------------------------------------------------
// Decoding

export interface WireReaderOptions {
  /** Maximum number of bytes this reader will ever consume (default 64 MiB). */
  budget?: number;
  /** Deadline for each individual read that has to wait for data (default 30 s). */
  timeoutMs?: number;
  /** Absolute deadline (`Date.now()` based) for all reads; combined with `timeoutMs` (earliest wins). */
  deadline?: number;
  /** Aborting rejects the pending read with WireError("aborted"). */
  signal?: AbortSignal;
  /** How many of the first bytes to keep as evidence (`seen()`), default 4096. */
  keepBytes?: number;
}

/**
 * Incremental reader over a Readable. It attaches a `data` listener right away (flowing mode), so
 * construct it before the peer can write and do not attach other `data` listeners.
 */
export class WireReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private consumed = 0;
  private ended = false;
  private streamError: Error | null = null;
  private waiter: (() => void) | null = null;
  private readonly kept: Buffer[] = [];
  private keptLen = 0;
  private readonly keepBytes: number;
  readonly budget: number;
  timeoutMs: number;
  deadline: number | undefined;
  private readonly signal: AbortSignal | undefined;
  private readonly onData = (chunk: Buffer | string) => {
    const b = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    if (b.length === 0) return;
    this.chunks.push(b);
    this.buffered += b.length;
    // Back-pressure: never hold much more than the budget allows us to read anyway.
    if (this.buffered > this.budget - this.consumed + 65536) this.stream.pause();
    this.wake();
  };
  private readonly onEnd = () => {
    this.ended = true;
    this.wake();
  };
  private readonly onError = (err: Error) => {
    this.streamError = err;
    this.ended = true;
    this.wake();
  };
  private readonly onAbort = () => this.wake();

  constructor(
    private readonly stream: Readable,
    opts: WireReaderOptions = {},
  ) {
    this.budget = opts.budget ?? 64 * 1024 * 1024;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.deadline = opts.deadline;
    this.signal = opts.signal;
    this.keepBytes = opts.keepBytes ?? 4096;
    stream.on("data", this.onData);
    stream.on("end", this.onEnd);
    stream.on("close", this.onEnd);
    stream.on("error", this.onError);
    this.signal?.addEventListener("abort", this.onAbort);
    if (stream.readableEnded) this.ended = true;
  }

  /** Stop listening to the stream (the stream itself is left alone). */
  detach(): void {
    this.stream.off("data", this.onData);
    this.stream.off("end", this.onEnd);
    this.stream.off("close", this.onEnd);
    this.stream.off("error", this.onError);
    this.signal?.removeEventListener("abort", this.onAbort);
  }

  /** Bytes consumed so far. */
  get offset(): number {
    return this.consumed;
  }

  /** The first `keepBytes` bytes consumed, as evidence of what the peer sent. */
  seen(): Buffer {
    return Buffer.concat(this.kept, this.keptLen);
  }

  /** True if there is buffered data not yet consumed. */
  get hasBuffered(): boolean {
    return this.buffered > 0;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  private fail(kind: WireErrorKind, message: string): never {
    throw new WireError(kind, message, this.consumed);
  }

  private effectiveTimeout(): number {
    let t = this.timeoutMs;
    if (this.deadline !== undefined) t = Math.min(t, this.deadline - Date.now());
    return t;
  }

  /** Wait until at least `n` bytes are buffered, or EOF/timeout/abort. */
  private async fill(n: number): Promise<void> {
    while (this.buffered < n) {
      if (this.signal?.aborted) this.fail("aborted", "aborted");
      if (this.streamError) this.fail("stream", `reading: ${this.streamError.message}`);
      if (this.ended) this.fail("eof", "unexpected end-of-file");
      const t = this.effectiveTimeout();
      if (t <= 0) this.fail("timeout", "timed out waiting for data");
      if (this.stream.isPaused()) this.stream.resume();
      let timer: NodeJS.Timeout | undefined;
      let timedOut = false;
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        timer = setTimeout(() => {
          timedOut = true;
          this.wake();
        }, t);
      });
      clearTimeout(timer);
      if (timedOut && this.buffered < n) {
        const err = this.streamError as Error | null;
        if (err) this.fail("stream", `reading: ${err.message}`);
        if (this.ended) this.fail("eof", "unexpected end-of-file");
        this.fail("timeout", `timed out after ${t} ms waiting for data`);
      }
    }
  }

  private take(n: number): Buffer {
    let out: Buffer;
    const first = this.chunks[0];
    if (first !== undefined && first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const parts: Buffer[] = [];
      let need = n;
      while (need > 0) {
        const c = this.chunks[0]!;
        if (c.length <= need) {
          parts.push(c);
          this.chunks.shift();
          need -= c.length;
        } else {
          parts.push(c.subarray(0, need));
          this.chunks[0] = c.subarray(need);
          need = 0;
        }
      }
      out = Buffer.concat(parts, n);
    }
    this.buffered -= n;
    this.consumed += n;
    if (this.keptLen < this.keepBytes) {
      const k = out.subarray(0, this.keepBytes - this.keptLen);
      this.kept.push(Buffer.from(k));
      this.keptLen += k.length;
    }
    return out;
  }

  private checkBudget(n: number): void {
    if (n > this.budget - this.consumed)
      this.fail("budget", `reading ${n} bytes would exceed the budget of ${this.budget} bytes`);
  }

  /** Read exactly `n` bytes. */
  async bytes(n: number): Promise<Buffer> {
    this.checkBudget(n);
    if (this.buffered < n) await this.fill(n);
    return this.take(n);
  }

  /** Read whatever arrives next (at least 1 byte, at most `max`); resolves null on EOF. */
  async some(max: number): Promise<Buffer | null> {
    if (this.buffered === 0) {
      try {
        await this.fill(1);
      } catch (e) {
        if (e instanceof WireError && e.kind === "eof") return null;
        throw e;
      }
    }
    const n = Math.min(max, this.buffered, this.budget - this.consumed);
    if (n <= 0) this.fail("budget", `the budget of ${this.budget} bytes is exhausted`);
    return this.take(n);
  }

  /** A u64 as bigint. */
  async u64(): Promise<bigint> {
    const b = await this.bytes(8);
    return b.readBigUInt64LE(0);
  }

  /** A u64 that must fit a JS safe integer (sizes, counts). */
  async num(): Promise<number> {
    const v = await this.u64();
    if (v > BigInt(Number.MAX_SAFE_INTEGER))
      this.fail("too-large", `serialised integer ${v} is too large for type 'm'`);
    return Number(v);
  }

  /** Nix's `readInt`: a u64 that must fit an `unsigned int` (what Nix uses for magics, versions, ops). */
  async u32(): Promise<number> {
    const v = await this.u64();
    if (v > MAX_U32) this.fail("too-large", `serialised integer ${v} is too large for type 'j'`);
    return Number(v);
  }

  async bool(): Promise<boolean> {
    return (await this.u64()) !== 0n;
  }

  /** A string as raw bytes. Length and padding are checked against the budget before waiting. */
  async stringBytes(maxLen?: number): Promise<Buffer> {
    const len = await this.u64();
    const limit = BigInt(Math.min(maxLen ?? Number.MAX_SAFE_INTEGER, this.budget - this.consumed));
    if (len > limit)
      this.fail(
        "budget",
        `string of ${len} bytes exceeds the limit of ${limit} bytes at offset ${this.consumed}`,
      );
    const n = Number(len);
    const padded = n + paddingFor(n);
    const b = await this.bytes(padded);
    return b.subarray(0, n);
  }

  async string(maxLen?: number): Promise<string> {
    return (await this.stringBytes(maxLen)).toString("utf8");
  }

  /** A string list/set. `maxCount` bounds the count before any element is read. */
  async strings(maxCount?: number): Promise<string[]> {
    const count = await this.u64();
    // Each element takes at least 8 bytes, so the budget also bounds the count.
    const limit = BigInt(
      Math.min(maxCount ?? Number.MAX_SAFE_INTEGER, Math.floor((this.budget - this.consumed) / 8)),
    );
    if (count > limit) this.fail("budget", `list of ${count} elements exceeds the limit of ${limit}`);
    const n = Number(count);
    const out: string[] = new Array(n);
    for (let i = 0; i < n; i++) out[i] = await this.string();
    return out;
  }

  /** Read a line terminated by `\n` (returned without it), at most `max` bytes. */
  async line(max = 4096): Promise<string> {
    const parts: Buffer[] = [];
    let total = 0;
    for (;;) {
      const b = await this.bytes(1);
      if (b[0] === 0x0a) break;
      parts.push(b);
      total++;
      if (total >= max) this.fail("budget", `line longer than ${max} bytes`);
    }
    return Buffer.concat(parts).toString("utf8");
  }

  /**
   * Read everything until EOF, the deadline, or `max` bytes, whichever is first; never throws.
   * Used to collect evidence after a protocol mismatch (Nix "drains" the pipe there).
   */
  async drain(max = 4096, timeoutMs = 2000): Promise<Buffer> {
    const parts: Buffer[] = [];
    let total = 0;
    const saved = { t: this.timeoutMs, d: this.deadline };
    this.timeoutMs = Math.max(0, timeoutMs);
    this.deadline = Math.min(saved.d ?? Number.POSITIVE_INFINITY, Date.now() + timeoutMs);
    try {
      while (total < max) {
        const b = await this.some(max - total);
        if (b === null) break;
        parts.push(b);
        total += b.length;
      }
    } catch {
      // timeout / budget / stream error: keep what we have
    } finally {
      this.timeoutMs = saved.t;
      this.deadline = saved.d;
    }
    return Buffer.concat(parts, total);
  }
}

/** Render bytes seen from a peer for a message: UTF-8 where valid, escapes for control bytes. */
export function printableBytes(b: Buffer, max = 512): string {
  const s = b.subarray(0, max).toString("utf8");
  let out = "";
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === "\n" || ch === "\t") out += ch;
    else if (c < 0x20 || c === 0x7f || c === 0xfffd)
      out += `\\x${(c === 0xfffd ? 0x3f : c).toString(16).padStart(2, "0")}`;
    else out += ch;
  }
  return b.length > max ? `${out}…` : out;
}

/** Nix's `chomp`: strip trailing whitespace (space, tab, CR, LF). */
/**
 * The peer's first u32, a protocol magic. When the peer printed text instead (a shell banner, an error
 * message: the "number" is too large), do what Nix does: close our side so that a peer waiting for input
 * ends, then drain what it printed; `text` is everything it sent since offset `start`.
 */
export async function readMagic(
  reader: WireReader,
  output: Writable,
  start: number,
  drainBytes = 4096,
): Promise<{ magic: number } | { text: Buffer }> {
  try {
    return { magic: await reader.u32() };
  } catch (e) {
    if (!(e instanceof WireError && e.kind === "too-large")) throw e;
    output.end();
    const head = reader.seen().subarray(start);
    const rest = await reader.drain(drainBytes, Math.max(0, (reader.deadline ?? Date.now()) - Date.now()));
    return { text: Buffer.concat([head, rest]) };
  }
}

export function chomp(s: string): string {
  return s.replace(/[ \t\n\r]+$/, "");
}
