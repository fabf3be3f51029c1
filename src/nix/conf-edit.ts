/**
 * Pure helpers for `nix-builders use` / `reset`: edit a nix.conf while keeping every other line byte for
 * byte, choose machine lines by name, build the user's machines file, render a diff, and print the
 * NixOS / nix-darwin options that do the same on a managed system.
 *
 * Texts are "byte strings": every char is one byte (read files as `latin1`, write them back with
 * `Buffer.from(text, "latin1")`). So lines we do not touch, including non-UTF-8 bytes and `\r`, come back
 * exactly as they were.
 */
import { decodeBytes, encodeBytes } from "./bytes.js";
import type { Machine } from "./machines.js";

/** A UTF-8 string (a path, a user-given name) as a byte string. */
export function toBytes(s: string): string {
  return encodeBytes(s).toString("latin1");
}

/** A byte string, decoded as every file is (bytes that are not UTF-8 kept, see src/nix/bytes.ts). */
export function fromBytes(s: string): string {
  return decodeBytes(Buffer.from(s, "latin1"));
}

/** Split into lines; each keeps nothing of its `\n`. A final `\n` does not open another line. */
function splitKeep(text: string): { lines: string[]; finalNewline: boolean } {
  if (text === "") return { lines: [], finalNewline: true };
  const lines = text.split("\n");
  const finalNewline = lines[lines.length - 1] === "";
  if (finalNewline) lines.pop();
  return { lines, finalNewline };
}

function joinKeep(lines: readonly string[], finalNewline: boolean): string {
  if (lines.length === 0) return "";
  return lines.join("\n") + (finalNewline ? "\n" : "");
}

/** The setting a nix.conf line assigns (Nix's own tokenisation: `#` starts a comment anywhere). */
export function assignedName(line: string): string | null {
  const hash = line.indexOf("#");
  const code = hash >= 0 ? line.slice(0, hash) : line;
  const tokens = code.split(/[ \t\r]+/).filter((t) => t !== "");
  if (tokens.length >= 2 && tokens[1] === "=") return tokens[0]!;
  return null;
}

export const DISABLED_PREFIX = "# disabled by nix-builders use: ";

export interface ConfEdit {
  text: string;
  /** What changed, in words (empty when nothing did). */
  changes: string[];
  /** `include` / `!include` lines after our line: they could set `builders` again. */
  laterIncludes: number[];
}

/**
 * Set `name = value` in a nix.conf text. The last line that assigns `name` (the one Nix applies) is
 * rewritten in place, keeping its indentation and trailing comment; earlier ones are left alone (they
 * have no effect). When there is none, the line is appended with a comment saying who wrote it. Lines
 * assigning any of `disable` (e.g. `extra-builders`) are commented out. Every other line is kept byte
 * for byte. Applying the same edit twice changes nothing the second time.
 */
export function setConfSetting(
  text: string,
  name: string,
  value: string,
  opts: { disable?: readonly string[]; comment?: string } = {},
): ConfEdit {
  const { lines, finalNewline } = splitKeep(text);
  const changes: string[] = [];
  const disable = new Set(opts.disable ?? []);
  let last = -1;
  for (let i = 0; i < lines.length; i++) {
    const n = assignedName(lines[i]!);
    if (n === name) last = i;
    if (n !== null && disable.has(n)) {
      lines[i] = DISABLED_PREFIX + lines[i];
      changes.push(`line ${i + 1}: commented out '${n}'`);
    }
  }
  const wanted = `${name} = ${value}`;
  let at: number;
  if (last >= 0) {
    const old = lines[last]!;
    const indent = /^[ \t]*/.exec(old)![0];
    const hash = old.indexOf("#");
    const comment = hash >= 0 ? ` ${old.slice(hash)}` : "";
    const replacement = `${indent}${wanted}${comment}`;
    if (replacement !== old) {
      lines[last] = replacement;
      changes.push(`line ${last + 1}: ${name} set`);
    }
    at = last;
  } else {
    if (opts.comment) lines.push(`# ${opts.comment}`);
    lines.push(wanted);
    at = lines.length - 1;
    changes.push(`line ${at + 1}: ${name} added`);
  }
  const laterIncludes: number[] = [];
  for (let i = at + 1; i < lines.length; i++) {
    const code = lines[i]!.replace(/#.*/, "").trim();
    if (/^!?include[ \t]/.test(code)) laterIncludes.push(i + 1);
  }
  // A file without a final newline gets one only when we append to it.
  const nl = finalNewline || last < 0;
  return { text: joinKeep(lines, nl), changes, laterIncludes };
}

// ---------------------------------------------------------------------------------------------------------
// Choosing machines

/** The names a machine answers to: its URI (with and without parameters), `user@host`, and the host. */
export function machineNames(m: Pick<Machine, "storeUri" | "row">): string[] {
  const names = new Set<string>();
  names.add(m.storeUri);
  const col0 = m.row.trim().split(/[ \t]+/)[0];
  if (col0) names.add(col0);
  const q = m.storeUri.indexOf("?");
  const noQuery = q >= 0 ? m.storeUri.slice(0, q) : m.storeUri;
  names.add(noQuery);
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//.exec(noQuery);
  if (scheme) {
    const authority = noQuery.slice(scheme[0].length).replace(/\/.*$/, "");
    if (authority !== "") {
      names.add(authority);
      const host = authority.slice(authority.lastIndexOf("@") + 1);
      if (host !== "") {
        names.add(host);
        const bracket = /^\[([^\]]+)\](?::\d+)?$/.exec(host);
        if (bracket) names.add(bracket[1]!);
        else names.add(host.replace(/:\d+$/, ""));
      }
    }
  }
  return [...names];
}

export interface Selection<M> {
  chosen: M[];
  /** Names that matched no machine. */
  unmatched: string[];
  /** Names that matched more than one machine (all of them are chosen). */
  ambiguous: { name: string; count: number }[];
}

/** Pick machines by name (see {@link machineNames}); hosts compare case-insensitively. Keeps file order. */
export function selectMachines<M extends Pick<Machine, "storeUri" | "row">>(
  machines: readonly M[],
  names: readonly string[],
): Selection<M> {
  const chosen = new Set<number>();
  const unmatched: string[] = [];
  const ambiguous: { name: string; count: number }[] = [];
  for (const name of names) {
    const hits: number[] = [];
    machines.forEach((m, i) => {
      if (machineNames(m).some((n) => n === name || n.toLowerCase() === name.toLowerCase())) hits.push(i);
    });
    if (hits.length === 0) unmatched.push(name);
    if (hits.length > 1) ambiguous.push({ name, count: hits.length });
    for (const i of hits) chosen.add(i);
  }
  return { chosen: [...chosen].sort((a, b) => a - b).map((i) => machines[i]!), unmatched, ambiguous };
}

/**
 * The text of a machine as it stands in its source: the whole line of its machines file (byte for byte,
 * comment included) when that line holds this machine only; otherwise (an inline `builders` value, or
 * several machines on one line split by `;`) the machine's own row, trimmed.
 */
export function machineSourceText(
  m: Pick<Machine, "row" | "origin">,
  fileText: string | null,
  rowsOnSameLine: number,
): string {
  if (fileText !== null && m.origin.line !== null && rowsOnSameLine === 1) {
    const line = fileText.split("\n")[m.origin.line - 1];
    if (line?.includes(m.row.trim())) return line;
  }
  return m.row.trim();
}

/**
 * The top-level entries of a `builders` value, for `--append`: `@file` includes (made absolute against
 * `/`, where the build hook runs) and inline machine rows. Comments are dropped.
 */
export function buildersEntries(value: string): string[] {
  const out: string[] = [];
  for (const rawLine of value.split("\n")) {
    const line = rawLine.replace(/#.*/, "");
    for (const piece of line.split(";")) {
      const e = piece.trim();
      if (e === "") continue;
      if (e.startsWith("@")) {
        const p = e.slice(1).trim();
        out.push(`@${p.startsWith("/") ? p : `/${p}`}`);
      } else out.push(e);
    }
  }
  return out;
}

export interface MachinesFileInput {
  user: string;
  /** `--append`: the system's builders entries, kept first. */
  keep: readonly string[];
  /** The chosen machines' lines, copied from the system's builders. */
  lines: readonly string[];
  /** Whole machine lines given on the command line. */
  given?: readonly string[];
}

export function machinesFileText(i: MachinesFileInput): string {
  // No ';' in our comments: Nix before 2.29 splits a machines file on ';' before it removes comments.
  let t = `# Written by nix-builders use for ${i.user}. nix-builders reset puts back what was here before.\n`;
  if (i.keep.length > 0) {
    t += "# The system's builders (--append):\n";
    for (const k of i.keep) t += `${k}\n`;
  }
  if (i.lines.length > 0) {
    t += "# Copied from the system's builders:\n";
    for (const l of i.lines) t += `${l}\n`;
  }
  if (i.given !== undefined && i.given.length > 0) {
    t += "# Given on the command line:\n";
    for (const l of i.given) t += `${l}\n`;
  }
  return t;
}

// ---------------------------------------------------------------------------------------------------------
// Diff

type Op = { k: " " | "-" | "+"; line: string };

function diffOps(a: readonly string[], b: readonly string[]): Op[] {
  const n = a.length;
  const m = b.length;
  // LCS table; config files are small.
  const dp: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      dp[i]![j] = a[i] === b[j] ? dp[i + 1]![j + 1]! + 1 : Math.max(dp[i + 1]![j]!, dp[i]![j + 1]!);
  const ops: Op[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      ops.push({ k: " ", line: a[i]! });
      i++;
      j++;
    } else if (i < n && (j === m || dp[i + 1]![j]! >= dp[i]![j + 1]!)) {
      ops.push({ k: "-", line: a[i]! });
      i++;
    } else {
      ops.push({ k: "+", line: b[j]! });
      j++;
    }
  }
  return ops;
}

/**
 * A unified diff (3 lines of context) of two texts; `null` for a file that does not exist. Returns ""
 * when they are equal. A missing final newline is marked as diff(1) does.
 */
export function unifiedDiff(
  oldText: string | null,
  newText: string | null,
  labels: { old: string; new: string },
  context = 3,
): string {
  if (oldText === newText) return "";
  const a = oldText === null ? { lines: [], finalNewline: true } : splitKeep(oldText);
  const b = newText === null ? { lines: [], finalNewline: true } : splitKeep(newText);
  const al = a.lines;
  const bl = b.lines;
  const ops = diffOps(al, bl);
  let out = `--- ${oldText === null ? "/dev/null" : labels.old}\n+++ ${newText === null ? "/dev/null" : labels.new}\n`;
  const changed = ops.map((o) => o.k !== " ");
  let idx = 0;
  while (idx < ops.length) {
    if (!changed[idx]) {
      idx++;
      continue;
    }
    let start = Math.max(0, idx - context);
    let end = idx;
    // extend the hunk while changes are within 2*context of each other
    while (end < ops.length) {
      let next = end;
      while (next < ops.length && changed[next]) next++;
      let gap = next;
      while (gap < ops.length && !changed[gap]) gap++;
      if (gap < ops.length && gap - next <= 2 * context) end = gap;
      else {
        end = Math.min(ops.length, next + context);
        break;
      }
    }
    // line numbers at `start`
    let ao = 1;
    let bo = 1;
    for (let k = 0; k < start; k++) {
      if (ops[k]!.k !== "+") ao++;
      if (ops[k]!.k !== "-") bo++;
    }
    const hunk = ops.slice(start, end);
    const ac = hunk.filter((o) => o.k !== "+").length;
    const bc = hunk.filter((o) => o.k !== "-").length;
    out += `@@ -${ac === 0 ? ao - 1 : ao},${ac} +${bc === 0 ? bo - 1 : bo},${bc} @@\n`;
    for (const o of hunk) out += `${o.k}${o.line}\n`;
    if (end === ops.length && !a.finalNewline && al.length > 0) out += "\\ No newline at end of file (old)\n";
    if (end === ops.length && !b.finalNewline && bl.length > 0) out += "\\ No newline at end of file (new)\n";
    start = end;
    idx = end;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// NixOS / nix-darwin

function nixString(s: string): string {
  return `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\$\{/g, "\\${")}"`;
}

/** One `nix.buildMachines` entry for a machine (NixOS and nix-darwin use the same option). */
export function buildMachineNix(m: Machine): string {
  const uri = m.storeUri;
  const scheme = /^(ssh|ssh-ng):\/\//.exec(uri);
  const rest = scheme ? uri.slice(scheme[0].length).replace(/\?.*$/, "") : uri;
  const at = rest.lastIndexOf("@");
  const fields: string[] = [];
  fields.push(`hostName = ${nixString(at >= 0 ? rest.slice(at + 1) : rest)};`);
  if (at >= 0) fields.push(`sshUser = ${nixString(rest.slice(0, at))};`);
  if (scheme) fields.push(`protocol = ${nixString(scheme[1]!)};`);
  fields.push(`systems = [ ${m.systemTypes.map(nixString).join(" ")} ];`);
  if (m.sshKey) fields.push(`sshKey = ${nixString(m.sshKey)};`);
  fields.push(`maxJobs = ${m.maxJobs};`);
  fields.push(`speedFactor = ${m.speedFactor};`);
  if (m.supportedFeatures.length)
    fields.push(`supportedFeatures = [ ${m.supportedFeatures.map(nixString).join(" ")} ];`);
  if (m.mandatoryFeatures.length)
    fields.push(`mandatoryFeatures = [ ${m.mandatoryFeatures.map(nixString).join(" ")} ];`);
  if (m.sshPublicHostKey) fields.push(`publicHostKey = ${nixString(m.sshPublicHostKey)};`);
  return `{\n    ${fields.join("\n    ")}\n  }`;
}

/**
 * What to put in the NixOS (or nix-darwin) configuration instead of editing a managed file: the chosen
 * machines for the agent only, through its `nixSettings`; or for every user, through `nix.buildMachines`.
 */
export function nixosSnippet(i: {
  machines: readonly Machine[];
  lines: readonly string[];
  agent: boolean;
  append: boolean;
}): string {
  const value = i.lines.join(" ; ");
  let t = "";
  if (i.agent) {
    t += "# For the agent only (its nixSettings reach the daemon as the agent user's settings;\n";
    t += "# the agent user must be trusted, which the hercules-ci-agent modules arrange):\n";
    t += `services.hercules-ci-agent.settings.nixSettings.builders = ${nixString(
      i.append ? `@/etc/nix/machines ; ${value}` : value,
    )};\n\n`;
  }
  t += "# For every user of this machine's nix-daemon:\n";
  t += "nix.distributedBuilds = true;\n";
  t += `nix.buildMachines = [\n  ${i.machines.map(buildMachineNix).join("\n  ")}\n];\n`;
  return t;
}
