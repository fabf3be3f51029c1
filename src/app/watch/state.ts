/**
 * watch's persisted state (`<state dir>/state.json`): each builder's policy memory and counters, so a
 * restart keeps them, and the operator's drains. Written atomically (src/host/atomic.ts). Loaded only when
 * the directory and the file belong to us (root) and nobody else can write them, and only after every field
 * is validated: the state decides what root writes into Nix's machines file, so a file another user could
 * have written is ignored (with the reason) and watch starts fresh.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { atomicWrite } from "../../host/atomic.js";
import { untrustedEntry as untrustedReason } from "../../os/owner.js";
import type { Transition, WatchState } from "./model.js";
import type { BuilderMemory } from "./policy.js";

export const STATE_FILE = "state.json";
const MAX_STATE_BYTES = 8 * 1024 * 1024;
const STATES: readonly WatchState[] = [
  "unknown",
  "up",
  "suspect",
  "quarantined",
  "misconfigured",
  "probation",
  "kept",
  "drained",
];

export interface PersistedBuilder {
  memory: BuilderMemory;
  transitions: Transition[];
  transitionCounts: Record<string, number>;
  probeCounts: Record<string, number>;
  /** The state to return to on undrain is decided by the next probe; this only marks a drain. */
  drained: boolean;
}

export interface PersistedState {
  version: 1;
  savedAt: number;
  builders: Record<string, PersistedBuilder>;
}

/** Create the state directory (0700) if missing; throw a one-line error naming it when it is unsafe. */
export function ensureStateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.lstatSync(dir);
  if (st.isSymbolicLink())
    throw new Error(`${dir}: is a symbolic link; the state directory must be a directory`);
  const why = untrustedReason(st, true);
  if (why) throw new Error(`${dir}: ${why}; refusing to use it as watch's state directory`);
}

const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
const isNumOrNull = (v: unknown): boolean => v === null || isNum(v);
const isState = (v: unknown): v is WatchState => typeof v === "string" && STATES.includes(v as WatchState);

function validCounts(v: unknown): v is Record<string, number> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  return Object.entries(v).every(([k, n]) => k.length <= 200 && isNum(n) && n >= 0);
}

function validMemory(v: unknown): v is BuilderMemory {
  if (typeof v !== "object" || v === null) return false;
  const m = v as Record<string, unknown>;
  return (
    isState(m["state"]) &&
    isNum(m["since"]) &&
    isNum(m["consecutiveFailures"]) &&
    (m["consecutiveFailures"] as number) >= 0 &&
    isNum(m["passes"]) &&
    isNum(m["backoffLevel"]) &&
    (m["backoffLevel"] as number) >= 0 &&
    (m["backoffLevel"] as number) <= 64 &&
    isNumOrNull(m["lastCountedFailureAt"]) &&
    isNumOrNull(m["quarantinedUntil"]) &&
    isNumOrNull(m["upSince"]) &&
    isNumOrNull(m["lastSuccessAt"])
  );
}

function validTransition(v: unknown): v is Transition {
  if (typeof v !== "object" || v === null) return false;
  const t = v as Record<string, unknown>;
  return isNum(t["at"]) && isState(t["from"]) && isState(t["to"]) && typeof t["reason"] === "string";
}

/** Validate a parsed state document; the reason when it is not one. */
export function validateState(
  v: unknown,
): { ok: true; state: PersistedState } | { ok: false; reason: string } {
  if (typeof v !== "object" || v === null) return { ok: false, reason: "not an object" };
  const s = v as Record<string, unknown>;
  if (s["version"] !== 1) return { ok: false, reason: "unknown version" };
  if (!isNum(s["savedAt"])) return { ok: false, reason: "savedAt is not a number" };
  const b = s["builders"];
  if (typeof b !== "object" || b === null || Array.isArray(b))
    return { ok: false, reason: "no builders object" };
  for (const [uri, e] of Object.entries(b)) {
    const x = e as Record<string, unknown>;
    if (typeof x !== "object" || x === null) return { ok: false, reason: `${uri}: not an object` };
    if (!validMemory(x["memory"])) return { ok: false, reason: `${uri}: invalid memory` };
    if (!Array.isArray(x["transitions"]) || !x["transitions"].every(validTransition))
      return { ok: false, reason: `${uri}: invalid transitions` };
    if (!validCounts(x["transitionCounts"]) || !validCounts(x["probeCounts"]))
      return { ok: false, reason: `${uri}: invalid counters` };
    if (typeof x["drained"] !== "boolean") return { ok: false, reason: `${uri}: invalid drained flag` };
  }
  return { ok: true, state: v as PersistedState };
}

/**
 * Load `<dir>/state.json`: null with no reason when there is none, null with a reason when it is unsafe or
 * invalid (the caller says so and starts fresh).
 */
export function loadState(dir: string): { state: PersistedState | null; problem: string | null } {
  const file = path.join(dir, STATE_FILE);
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return { state: null, problem: null };
    return {
      state: null,
      problem: `${file}: ${code === "ELOOP" ? "is a symbolic link" : String(code)}; ignored`,
    };
  }
  try {
    const dst = fs.lstatSync(dir);
    const dwhy = untrustedReason(dst, true);
    if (dwhy) return { state: null, problem: `${dir}: ${dwhy}; state ignored` };
    const st = fs.fstatSync(fd);
    const why = untrustedReason(st, false);
    if (why) return { state: null, problem: `${file}: ${why}; ignored` };
    if (st.size > MAX_STATE_BYTES)
      return { state: null, problem: `${file}: larger than ${MAX_STATE_BYTES} bytes; ignored` };
    const text = fs.readFileSync(fd, "utf8");
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return { state: null, problem: `${file}: not valid JSON; ignored` };
    }
    const v = validateState(parsed);
    if (!v.ok) return { state: null, problem: `${file}: ${v.reason}; ignored` };
    return { state: v.state, problem: null };
  } finally {
    fs.closeSync(fd);
  }
}

export async function saveState(dir: string, state: PersistedState): Promise<void> {
  await atomicWrite(path.join(dir, STATE_FILE), `${JSON.stringify(state)}\n`, {
    backup: false,
    uid: process.geteuid?.() ?? 0,
    gid: process.getegid?.() ?? 0,
    mode: 0o600,
    noFollow: true,
  });
}
