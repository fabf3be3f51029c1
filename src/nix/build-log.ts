/**
 * Read a `nix-build --log-format internal-json` log (Nix 2.8 and later) as it streamed in, each line with
 * the time it arrived: which machine built the derivation and how long each phase took.
 *
 * What Nix logs for a remote build (Nix 2.8.0 src/build-remote/build-remote.cc, docs/routing.md; verified on 2.8, see test/fixtures/verify/):
 *   `connecting to '<uri>'`                      activity (type 0, level talkative), start → stop
 *   `building '<drv>' on '<uri>'`                activity type 105 (actBuild), fields [drv, uri, round, rounds]
 *   `waiting for the upload lock to '<uri>'`     activity, start → stop
 *   `copying dependencies to '<uri>'`            activity, start → stop (the upload)
 *   (the remote build runs here; its output arrives as result type 101 lines of the 105 activity)
 *   `copying outputs from '<uri>'`               activity, start → stop (the download)
 * The plain log format shows only `building '<drv>' on '<uri>'...` and `copying N paths...`; it is read for
 * the machine but has no phase boundaries.
 */
import { stripAnsi } from "./explain.js";

export interface TimedLine {
  /** Milliseconds since the build started. */
  t: number;
  /** One line of stderr, as Nix wrote it. */
  text: string;
}

export type PhaseName = "connect" | "upload-lock" | "upload" | "build" | "download";

export interface Phase {
  name: PhaseName;
  machine: string;
  startMs: number;
  endMs: number;
  ms: number;
}

export interface BuildLogSummary {
  /** The derivation built remotely (or, failing that, the one Nix said it would build). */
  drvPath: string | null;
  /** The machine the (last) remote build ran on, as Nix names it: the store URI of its machines line. */
  builtOn: string | null;
  /** Every remote build start seen: derivation and machine. */
  builds: { drv: string; machine: string }[];
  /** Phases of the build on `builtOn`, in order. */
  phases: Phase[];
  /** Machines Nix tried and could not use (`cannot build on '<uri>': …`). */
  failedMachines: { machine: string; message: string }[];
  /** The log as a person reads it (JSON decoded, ANSI removed), one entry per logical line. */
  text: string[];
}

interface Activity {
  id: number;
  type: number;
  text: string;
  fields: unknown[];
  level: number;
  start: number;
}

type JsonEvent =
  | { action: "start"; id: number; type: number; text: string; fields: unknown[]; level: number }
  | { action: "stop"; id: number }
  | { action: "msg"; level: number; msg: string }
  | { action: "result"; id: number; type: number; fields: unknown[] };

export function parseJsonLine(line: string): JsonEvent | null {
  const at = line.indexOf("@nix {");
  if (at < 0) return null;
  let v: unknown;
  try {
    v = JSON.parse(line.slice(at + 5));
  } catch {
    return null;
  }
  if (!v || typeof v !== "object") return null;
  const o = v as Record<string, unknown>;
  const num = (x: unknown): number => (typeof x === "number" ? x : 0);
  switch (o["action"]) {
    case "start":
      return {
        action: "start",
        id: num(o["id"]),
        type: num(o["type"]),
        text: typeof o["text"] === "string" ? o["text"] : "",
        fields: Array.isArray(o["fields"]) ? o["fields"] : [],
        level: num(o["level"]),
      };
    case "stop":
      return { action: "stop", id: num(o["id"]) };
    case "msg":
      return { action: "msg", level: num(o["level"]), msg: typeof o["msg"] === "string" ? o["msg"] : "" };
    case "result":
      return {
        action: "result",
        id: num(o["id"]),
        type: num(o["type"]),
        fields: Array.isArray(o["fields"]) ? o["fields"] : [],
      };
    default:
      return null;
  }
}

/** What a person should see of one line (null: nothing worth showing). */
export function humanLine(line: string): string | null {
  const e = parseJsonLine(line);
  if (e === null) return line.includes("@nix {") ? null : stripAnsi(line);
  switch (e.action) {
    case "msg":
      return stripAnsi(e.msg);
    case "start":
      // Levels: 0 error … 3 info, 4 talkative. The phases we report are talkative; show them too.
      return e.text !== "" && e.level <= 4 ? `${stripAnsi(e.text)}...` : null;
    case "result":
      if ((e.type === 101 || e.type === 107) && typeof e.fields[0] === "string")
        return `  | ${stripAnsi(e.fields[0])}`;
      return null;
    default:
      return null;
  }
}

const PATTERNS: { name: Exclude<PhaseName, "build">; re: RegExp }[] = [
  { name: "connect", re: /^connecting to '(.*)'$/ },
  { name: "upload-lock", re: /^waiting for the upload lock to '(.*)'$/ },
  { name: "upload", re: /^copying dependencies to '(.*)'$/ },
  { name: "download", re: /^copying outputs from '(.*)'$/ },
];

const PLAIN_BUILD = /building '([^']+\.drv)' on '([^']+)'/;
const CANNOT_BUILD = /cannot build on '([^']+)': (.*)$/;
const WILL_BUILD = /^\s+(\/\S+\.drv)$/;

export function parseBuildLog(lines: readonly TimedLine[]): BuildLogSummary {
  const open = new Map<number, Activity>();
  const done: { name: PhaseName | "remote-build"; machine: string; start: number; end: number }[] = [];
  const builds: { drv: string; machine: string; start: number }[] = [];
  const failedMachines: { machine: string; message: string }[] = [];
  const text: string[] = [];
  let willBuild: string | null = null;
  let last = 0;

  const onText = (s: string): void => {
    for (const part of s.split("\n")) {
      text.push(part);
      const c = CANNOT_BUILD.exec(part);
      if (c) failedMachines.push({ machine: c[1]!, message: c[2]! });
      const w = WILL_BUILD.exec(part);
      if (w && willBuild === null) willBuild = w[1]!;
    }
  };

  for (const { t, text: raw } of lines) {
    last = Math.max(last, t);
    const e = parseJsonLine(raw);
    if (e === null) {
      if (raw.includes("@nix {")) continue;
      const plain = stripAnsi(raw);
      onText(plain);
      const b = PLAIN_BUILD.exec(plain);
      if (b) builds.push({ drv: b[1]!, machine: b[2]!, start: t });
      continue;
    }
    if (e.action === "start") {
      open.set(e.id, {
        id: e.id,
        type: e.type,
        text: stripAnsi(e.text),
        fields: e.fields,
        level: e.level,
        start: t,
      });
      if (e.text !== "" && e.level <= 4) onText(stripAnsi(e.text));
      if (
        e.type === 105 &&
        typeof e.fields[0] === "string" &&
        typeof e.fields[1] === "string" &&
        e.fields[1] !== ""
      )
        builds.push({ drv: e.fields[0], machine: e.fields[1], start: t });
    } else if (e.action === "stop") {
      const a = open.get(e.id);
      if (!a) continue;
      open.delete(e.id);
      for (const p of PATTERNS) {
        const m = p.re.exec(a.text);
        if (m) done.push({ name: p.name, machine: m[1]!, start: a.start, end: t });
      }
      if (a.type === 105 && typeof a.fields[1] === "string" && a.fields[1] !== "")
        done.push({ name: "remote-build", machine: a.fields[1], start: a.start, end: t });
    } else if (e.action === "msg") {
      onText(stripAnsi(e.msg));
    } else if (
      e.action === "result" &&
      (e.type === 101 || e.type === 107) &&
      typeof e.fields[0] === "string"
    ) {
      onText(`  | ${stripAnsi(e.fields[0])}`);
    }
  }
  // Activities still open when the log ended (e.g. killed by a timeout) end at the last line.
  for (const a of open.values()) {
    for (const p of PATTERNS) {
      const m = p.re.exec(a.text);
      if (m) done.push({ name: p.name, machine: m[1]!, start: a.start, end: last });
    }
  }

  const lastBuild = builds[builds.length - 1] ?? null;
  const builtOn = lastBuild?.machine ?? null;
  const phases: Phase[] = [];
  if (builtOn !== null) {
    const mine = done.filter((d) => d.machine === builtOn);
    const pick = (name: PhaseName, after: number): (typeof done)[number] | undefined =>
      mine.filter((d) => d.name === name && d.start >= after).sort((a, b) => a.start - b.start)[0];
    // The connection is made before Nix announces the build, so take the last one before it.
    const connect = mine
      .filter((d) => d.name === "connect" && d.start <= lastBuild!.start)
      .sort((a, b) => b.start - a.start)[0];
    const lock = pick("upload-lock", lastBuild!.start);
    const upload = pick("upload", lastBuild!.start);
    const download = pick("download", upload?.end ?? lastBuild!.start);
    const remote = mine.find((d) => d.name === "remote-build" && d.start === lastBuild!.start);
    const add = (name: PhaseName, start: number, end: number): void => {
      phases.push({ name, machine: builtOn, startMs: start, endMs: end, ms: Math.max(0, end - start) });
    };
    if (connect) add("connect", connect.start, connect.end);
    if (lock) add("upload-lock", lock.start, lock.end);
    if (upload) add("upload", upload.start, upload.end);
    const buildStart = upload?.end ?? lock?.end ?? lastBuild!.start;
    const buildEnd = download?.start ?? remote?.end ?? (upload ? last : null);
    if (buildEnd !== null && buildEnd !== undefined) add("build", buildStart, buildEnd);
    if (download) add("download", download.start, download.end);
  }
  return {
    drvPath: lastBuild?.drv ?? willBuild,
    builtOn,
    builds: builds.map(({ drv, machine }) => ({ drv, machine })),
    phases,
    failedMachines,
    text,
  };
}
