/**
 * The build-hook wrapper's recorder (started by libexec/build-hook beside the real hook, in a session of
 * its own). stdin: a copy of the worker's requests to the hook; fd 3: a copy of the hook's stderr.
 * argv[2]: the hook's pid. It is never on the hook's byte path: whatever happens here, the hook and Nix
 * see the same bytes. It writes records with the fail-open writer of src/app/builds-store.ts and exits
 * when both copies end (at most 10 s later, even when the disk is stalled).
 *
 * Kept small on purpose: node:fs, the pure protocol decoders and the store writer, nothing else.
 */
import { createReadStream } from "node:fs";
import { type BuildEvent, RecordWriter, stateDir, type TryEvent } from "./app/builds-store.js";
import { type HookTry, ReplyDecoder, RequestDecoder, stripAnsi } from "./nix/hook-protocol.js";

const MAX_LINES = 20;

/** Turns the two decoded streams into events; pure apart from the clock and the sink. */
export class HookSession {
  private seq = 0;
  private readonly tries: (HookTry & { id: string; at: number })[] = [];
  private current: { cannotBuild: { machine: string; error: string }[]; lines: string[] } = {
    cannotBuild: [],
    lines: [],
  };
  private accepted: TryEvent | null = null;
  private awaitingMachine: TryEvent | null = null;
  private error: string | null = null;
  private readonly startedAt: number;

  constructor(
    private readonly hookPid: number,
    private readonly sink: {
      event(e: BuildEvent): void;
      signal(builder: string, at: number, reason: string, name: string): void;
    },
    private readonly now: () => number = Date.now,
  ) {
    this.startedAt = now();
  }

  /** A `try` from the worker. */
  request(t: HookTry, at: number = this.now()): void {
    this.tries.push({ ...t, id: `${this.hookPid}-${this.startedAt}-${this.seq++}`, at });
  }

  reply(reply: TryEvent["reply"]): void {
    const t = this.tries.shift();
    const e: TryEvent = {
      v: 1,
      t: "try",
      id: t?.id ?? `${this.hookPid}-${this.startedAt}-${this.seq++}`,
      hook: this.hookPid,
      at: t?.at ?? this.now(),
      drv: t?.drv ?? "",
      system: t?.system ?? "",
      features: t?.features ?? [],
      amWilling: t?.amWilling ?? false,
      reply,
      machine: null,
      cannotBuild: this.current.cannotBuild,
    };
    this.current = { cannotBuild: [], lines: [] };
    if (reply === "accept") this.awaitingMachine = e;
    else this.sink.event(e);
  }

  machine(m: string): void {
    const e = this.awaitingMachine;
    if (!e) return;
    this.awaitingMachine = null;
    e.machine = m;
    this.accepted = e;
    this.sink.event(e);
  }

  cannotBuild(machine: string, error: string): void {
    const at = this.now();
    this.current.cannotBuild.push({ machine, error });
    this.sink.signal(
      machine,
      at,
      `cannot build on '${machine}': ${error}`,
      `${at}-${this.hookPid}-${this.seq++}`,
    );
  }

  message(level: number, text: string): void {
    if (level === 0 && text.startsWith("error: ")) this.error = text.slice("error: ".length);
    this.line(text);
  }

  line(text: string): void {
    const lines = this.current.lines;
    if (lines.length < MAX_LINES) lines.push(stripAnsi(text).slice(0, 500));
  }

  /** The hook's stderr ended: the hook is gone. */
  end(): void {
    if (this.awaitingMachine) this.machine("");
    if (this.accepted) {
      this.sink.event({
        v: 1,
        t: "end",
        id: this.accepted.id,
        at: this.now(),
        result: this.error === null ? "success" : "failure",
        error: this.error,
        lines: this.current.lines,
      });
      this.accepted = null;
      return;
    }
    // A try without an answer: the hook died while deciding.
    for (const t of this.tries.splice(0)) {
      this.sink.event({
        v: 1,
        t: "try",
        id: t.id,
        hook: this.hookPid,
        at: t.at,
        drv: t.drv,
        system: t.system,
        features: t.features,
        amWilling: t.amWilling,
        reply: null,
        machine: null,
        cannotBuild: this.current.cannotBuild,
      });
      this.sink.event({
        v: 1,
        t: "end",
        id: t.id,
        at: this.now(),
        result: "unknown",
        error: this.error,
        lines: this.current.lines,
      });
    }
  }
}

function main(): void {
  // Never let an error here reach anything: the recorder just stops.
  process.on("uncaughtException", () => process.exit(0));
  process.on("unhandledRejection", () => process.exit(0));
  const hookPid = Number(process.argv[2] ?? "0");
  // The wrapper's start ($EPOCHREALTIME): the requests already waiting when the recorder has started
  // (Node starts slower than the hook) were sent then, not now.
  const hookStart = Math.round(Number(process.argv[3] ?? "NaN") * 1000);
  let firstChunk = true;
  const writer = new RecordWriter({ state: stateDir() });
  const session = new HookSession(hookPid, {
    event: (e) => writer.append(e),
    signal: (b, at, reason, name) => writer.signal(b, at, reason, name),
  });
  const req = new RequestDecoder();
  const rep = new ReplyDecoder();
  // Requests are applied before replies: a reply can only follow its request, but the two copies
  // arrive on separate pipes, so replies wait until the request stream has caught up.
  const pendingReplies: ReturnType<ReplyDecoder["push"]> = [];
  let triesSeen = 0;
  let repliesSeen = 0;
  const apply = (): void => {
    while (pendingReplies.length > 0) {
      const ev = pendingReplies[0]!;
      if (ev.kind === "reply" && repliesSeen >= triesSeen && !reqEnded) return;
      pendingReplies.shift();
      if (ev.kind === "reply") {
        repliesSeen++;
        session.reply(ev.reply);
      } else if (ev.kind === "machine") session.machine(ev.machine);
      else if (ev.kind === "cannot-build") session.cannotBuild(ev.machine, ev.error);
      else if (ev.kind === "msg") session.message(ev.level, ev.text);
      else if (ev.kind === "activity") session.line(ev.text);
      else session.line(ev.text);
    }
  };
  let reqEnded = false;
  let open = 2;
  const done = (): void => {
    if (--open > 0) return;
    apply();
    session.end();
    const t = setTimeout(() => process.exit(0), 10_000);
    t.unref();
    void writer.flush().then(() => process.exit(0));
  };
  const input = createReadStream("", { fd: 0, highWaterMark: 1 << 16 });
  input.on("data", (c) => {
    const at = firstChunk && Number.isFinite(hookStart) ? hookStart : Date.now();
    firstChunk = false;
    for (const e of req.push(c as Buffer))
      if (e.kind === "try") {
        triesSeen++;
        session.request(e, at);
      }
    apply();
  });
  input.on("error", () => undefined);
  input.on("close", () => {
    reqEnded = true;
    apply();
    done();
  });
  const replies = createReadStream("", { fd: 3, highWaterMark: 1 << 16 });
  replies.on("data", (c) => {
    pendingReplies.push(...rep.push(c as Buffer));
    apply();
  });
  replies.on("error", () => undefined);
  replies.on("close", () => {
    pendingReplies.push(...rep.end());
    apply();
    done();
  });
}

if (process.argv[1]?.endsWith("hook-recorder.js") || process.argv[1]?.endsWith("hook-recorder.ts")) main();
