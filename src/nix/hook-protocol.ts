/**
 * The build-hook protocol, as the Nix worker and its build hook speak it (2.8.0
 * `src/libstore/build/derivation-goal.cc` `tryBuildHook`, `src/libstore/build/hook-instance.cc`,
 * `src/build-remote/build-remote.cc`; 2.30.5 `src/libstore/build/derivation-building-goal.cc`,
 * `src/libstore/unix/build/hook-instance.cc`). Pure decoders, no I/O: the recorder feeds them bytes.
 *
 * To the hook (stdin), in Nix's wire encoding (u64 little-endian; strings as length, bytes, zero padding
 * to 8): the settings as `1 name value` triples ended by `0`; then per derivation `"try"`, whether the
 * worker would build locally (u64), the system, the `.drv` path, the required features (a string list);
 * after the hook accepted: the input paths and the wanted outputs (two string lists), then end of file.
 *
 * From the hook (stderr, one message per line): `# accept` followed by the machine's store URI on the
 * next line, `# decline`, `# postpone`, `# decline-permanently`; log messages as `@nix {json}` lines.
 */

export type HookReply = "accept" | "decline" | "postpone" | "decline-permanently";

export interface HookTry {
  /** The worker has a free local slot (it would build locally on a decline). */
  amWilling: boolean;
  system: string;
  drv: string;
  features: string[];
}

export type RequestEvent =
  | { kind: "settings"; settings: Record<string, string> }
  | ({ kind: "try" } & HookTry)
  | { kind: "accepted"; inputs: string[]; wantedOutputs: string[] };

/** Limits that stop decoding (the stream is then not recorded any further). */
export const LIMITS = { maxString: 1 << 20, maxList: 1 << 20, maxBuffer: 64 << 20 };

class NeedMore extends Error {}

/**
 * An incremental decoder of the worker → hook byte stream. `push` returns the events completed by the
 * bytes so far; a malformed or oversized stream sets `failed` and yields nothing more.
 */
export class RequestDecoder {
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;
  private phase: "settings" | "commands" | "done" = "settings";
  private settings: Record<string, string> = {};
  failed: string | null = null;

  push(chunk: Buffer): RequestEvent[] {
    if (this.failed !== null || this.phase === "done") return [];
    this.buf =
      this.pos === 0 ? Buffer.concat([this.buf, chunk]) : Buffer.concat([this.buf.subarray(this.pos), chunk]);
    this.pos = 0;
    if (this.buf.length > LIMITS.maxBuffer) {
      this.failed = "request too large";
      return [];
    }
    const out: RequestEvent[] = [];
    try {
      for (;;) {
        const start = this.pos;
        try {
          const e = this.step();
          if (e === null) {
            if ((this.phase as string) === "done") break;
            continue;
          }
          out.push(e);
        } catch (err) {
          if (err instanceof NeedMore) {
            this.pos = start;
            break;
          }
          throw err;
        }
      }
    } catch (err) {
      this.failed = (err as Error).message;
    }
    return out;
  }

  private step(): RequestEvent | null {
    if (this.phase === "settings") {
      const tag = this.u64();
      if (tag === 0) {
        this.phase = "commands";
        return { kind: "settings", settings: this.settings };
      }
      if (tag !== 1) throw new Error(`bad settings tag ${tag}`);
      const k = this.str();
      const v = this.str();
      this.settings[k] = v;
      return null;
    }
    if (this.phase === "commands") {
      // A command is a string; "try" is the only one. After `# accept` the worker sends a string list
      // instead, whose first word is a count, whose next word (a path length) never reads as "try".
      this.need(16);
      const isTry =
        this.buf.readBigUInt64LE(this.pos) === 3n &&
        this.buf.toString("latin1", this.pos + 8, this.pos + 16) === "try\0\0\0\0\0";
      if (isTry) {
        this.pos += 16;
        const amWilling = this.u64() !== 0;
        const system = this.str();
        const drv = this.str();
        const features = this.strs();
        return { kind: "try", amWilling, system, drv, features };
      }
      const inputs = this.strs();
      const wantedOutputs = this.strs();
      this.phase = "done";
      return { kind: "accepted", inputs, wantedOutputs };
    }
    return null;
  }

  private need(n: number): void {
    if (this.buf.length - this.pos < n) throw new NeedMore();
  }

  private u64(): number {
    this.need(8);
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error("number too large");
    return Number(v);
  }

  private str(): string {
    const n = this.u64();
    if (n > LIMITS.maxString) throw new Error("string too long");
    const padded = n + ((8 - (n % 8)) % 8);
    this.need(padded);
    const s = this.buf.toString("utf8", this.pos, this.pos + n);
    this.pos += padded;
    return s;
  }

  private strs(): string[] {
    const n = this.u64();
    if (n > LIMITS.maxList) throw new Error("list too long");
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(this.str());
    return out;
  }
}

export type ReplyEvent =
  | { kind: "reply"; reply: HookReply }
  | { kind: "machine"; machine: string }
  /** A log message (`@nix {"action":"msg"}`), ANSI codes removed; `level` 0 is an error. */
  | { kind: "msg"; level: number; text: string }
  /** `cannot build on '<uri>': <error>` (2.8.0 and 2.30.5 `build-remote.cc`). */
  | { kind: "cannot-build"; machine: string; error: string }
  /** The text of a started activity (e.g. `connecting to '…'`). */
  | { kind: "activity"; text: string }
  /** A line that is neither (Nix passes it to its stderr as is). */
  | { kind: "other"; text: string };

/** Remove ANSI escape sequences (Nix colours every interpolated argument). */
export function stripAnsi(s: string): string {
  return s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");
}

const REPLIES = new Set<string>(["accept", "decline", "postpone", "decline-permanently"]);

/** Parse `cannot build on '<uri>': <error>`; the URI is the text up to the last `': ` before the error. */
export function parseCannotBuild(text: string): { machine: string; error: string } | null {
  const prefix = "cannot build on '";
  if (!text.startsWith(prefix)) return null;
  const rest = text.slice(prefix.length);
  const end = rest.indexOf("': ");
  if (end < 0) return null;
  return { machine: rest.slice(0, end), error: rest.slice(end + 3) };
}

/** Incremental decoder of the hook → worker lines. */
export class ReplyDecoder {
  private partial = "";
  private wantMachine = false;
  /** Lines longer than this are cut (the rest of the line is skipped). */
  static readonly MAX_LINE = 1 << 16;
  private skipping = false;

  push(chunk: Buffer | string): ReplyEvent[] {
    const text = typeof chunk === "string" ? chunk : chunk.toString("utf8");
    const out: ReplyEvent[] = [];
    let s = this.partial + text;
    let nl = s.indexOf("\n");
    while (nl >= 0) {
      const line = s.slice(0, nl);
      s = s.slice(nl + 1);
      if (this.skipping) this.skipping = false;
      else this.line(line, out);
      nl = s.indexOf("\n");
    }
    if (s.length > ReplyDecoder.MAX_LINE) {
      if (!this.skipping) this.line(s.slice(0, ReplyDecoder.MAX_LINE), out);
      this.skipping = true;
      s = "";
    }
    this.partial = s;
    return out;
  }

  /** The last line when the stream ends without a newline. */
  end(): ReplyEvent[] {
    const out: ReplyEvent[] = [];
    if (this.partial !== "" && !this.skipping) this.line(this.partial, out);
    this.partial = "";
    return out;
  }

  private line(line: string, out: ReplyEvent[]): void {
    if (this.wantMachine) {
      this.wantMachine = false;
      out.push({ kind: "machine", machine: line });
      return;
    }
    if (line.startsWith("# ") && REPLIES.has(line.slice(2))) {
      const reply = line.slice(2) as HookReply;
      out.push({ kind: "reply", reply });
      if (reply === "accept") this.wantMachine = true;
      return;
    }
    if (line.startsWith("@nix ")) {
      let j: unknown;
      try {
        j = JSON.parse(line.slice(5));
      } catch {
        out.push({ kind: "other", text: line });
        return;
      }
      const o = j as { action?: unknown; msg?: unknown; level?: unknown; text?: unknown };
      if (o.action === "msg" && typeof o.msg === "string") {
        const text = stripAnsi(o.msg);
        const cb = parseCannotBuild(text);
        if (cb) out.push({ kind: "cannot-build", ...cb });
        else out.push({ kind: "msg", level: typeof o.level === "number" ? o.level : 0, text });
      } else if (o.action === "start" && typeof o.text === "string" && o.text !== "") {
        out.push({ kind: "activity", text: stripAnsi(o.text) });
      }
      return;
    }
    out.push({ kind: "other", text: line });
  }
}

/** The line Nix's worker logs when a hook accepted (actBuild, 2.8.0 `derivation-goal.cc:570`). */
export function buildingOnLine(drv: string, machine: string): string {
  return `building '${drv}' on '${machine}'`;
}
