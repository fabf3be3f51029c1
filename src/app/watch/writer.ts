/**
 * watch's output: the source's lines, byte for byte and in order, with a held builder's maxJobs rewritten
 * to 0 and a removed builder's line left out. Rendering is pure; writing goes through src/host/atomic.ts
 * (temp file in the same directory, fsync, rename, fsync the directory), and only when the bytes change.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { atomicWrite } from "../../host/atomic.js";
import type { Disposition } from "./model.js";

const WS = /[ \t\r]/;

/** One line of the source file, with the store URIs of the machines it defines (usually one, or none). */
export interface SourceLine {
  raw: string;
  builders: string[];
}

/** The source as lines (no newline), and whether the text ended with one. */
export interface SourceText {
  lines: SourceLine[];
  trailingNewline: boolean;
}

/**
 * A machine segment with its 4th field (maxJobs) set to 0; missing fields before it become `-` (Nix's
 * "default" marker), everything else untouched.
 */
export function holdSegment(seg: string): string {
  // token spans
  const spans: [number, number][] = [];
  let i = 0;
  while (i < seg.length) {
    while (i < seg.length && WS.test(seg[i]!)) i++;
    if (i >= seg.length) break;
    const s = i;
    while (i < seg.length && !WS.test(seg[i]!)) i++;
    spans.push([s, i]);
  }
  if (spans.length === 0) return seg;
  if (spans.length >= 4) {
    const [s, e] = spans[3]!;
    return `${seg.slice(0, s)}0${seg.slice(e)}`;
  }
  const end = spans[spans.length - 1]![1];
  const fill = " -".repeat(3 - spans.length);
  return `${seg.slice(0, end)}${fill} 0${seg.slice(end)}`;
}

/** A line with the machines at `held` positions (0-based, among its `;`-separated segments) held. */
export function holdLine(raw: string, held: ReadonlySet<number>): string {
  const hash = raw.indexOf("#");
  const body = hash < 0 ? raw : raw.slice(0, hash);
  const rest = hash < 0 ? "" : raw.slice(hash);
  const segs = body.split(";");
  let k = 0;
  const out = segs.map((seg) => {
    if (seg.trim() === "") return seg;
    const idx = k++;
    return held.has(idx) ? holdSegment(seg) : seg;
  });
  return out.join(";") + rest;
}

/**
 * The output text for these dispositions (by store URI; a builder without one is listed). A line whose
 * every machine is removed is left out; otherwise held machines are rewritten in place. Lines that define
 * no machine (comments, blanks) are kept.
 */
export function render(src: SourceText, disp: ReadonlyMap<string, Disposition>): string {
  const out: string[] = [];
  for (const l of src.lines) {
    if (l.builders.length === 0) {
      out.push(l.raw);
      continue;
    }
    const ds = l.builders.map((b) => disp.get(b) ?? "listed");
    if (ds.every((d) => d === "removed")) continue;
    const held = new Set<number>();
    ds.forEach((d, i) => {
      if (d !== "listed") held.add(i); // a removed machine sharing a line with a listed one is held
    });
    out.push(held.size === 0 ? l.raw : holdLine(l.raw, held));
  }
  if (out.length === 0) return "";
  return out.join("\n") + (src.trailingNewline ? "\n" : "");
}

export function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Paths are the same file (or would be, once created), following symlinks. */
export function sameFile(a: string, b: string): boolean {
  const real = (p: string): string => {
    try {
      return fs.realpathSync(p);
    } catch {
      try {
        return path.join(fs.realpathSync(path.dirname(path.resolve(p))), path.basename(p));
      } catch {
        return path.resolve(p);
      }
    }
  };
  if (real(a) === real(b)) return true;
  try {
    const sa = fs.statSync(a);
    const sb = fs.statSync(b);
    return sa.ino === sb.ino && sa.dev === sb.dev;
  } catch {
    return false;
  }
}

/**
 * Write `text` to `file` when it differs from what is there: root-owned, mode 0644, no backup. Returns
 * whether it wrote. The directory is created (0755) when missing.
 */
export async function writeOutput(file: string, text: string): Promise<boolean> {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  const r = await atomicWrite(file, text, {
    backup: false,
    uid: process.getuid?.() ?? 0,
    gid: process.getgid?.() ?? 0,
    mode: 0o644,
    noFollow: true,
  });
  if (r.status === "managed") throw new Error(`${file}: is a link into the Nix store; refusing to write it`);
  return r.status === "written";
}
