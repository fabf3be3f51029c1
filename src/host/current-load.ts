/**
 * The live load of remote builders as the build hook sees it, read without touching any lock.
 *
 * The hook keeps one lock file per machine slot, `<stateDir>/current-load/<uri with / as _>-<slot>`,
 * where the URI is the one the hook renders: the text as written up to 2.22, `StoreReference::render()`
 * from 2.23 (`/tmp/m` → `local:___tmp_m-0`; see `renderStoreUri`), and holds an exclusive flock on it while a build runs there. We never open those files for locking:
 * we stat them (device + inode) and look the pair up in /proc/locks, which lists every lock held on
 * the system. Taking or testing the lock ourselves could make a concurrent hook skip a free slot.
 */

import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { slotStem } from "../nix/store-uri.js";
import type { NixVersion } from "../nix/version.js";

export interface ProcLock {
  /** FLOCK, POSIX, OFDLCK, LEASE, … */
  readonly type: string;
  /** ADVISORY / MANDATORY / ACTIVE / … */
  readonly mode: string;
  /** READ / WRITE / … */
  readonly access: string;
  /** The pid in /proc/locks (the locker; for flock, the process that took it, or -1 / 0 if unknown). */
  readonly pid: number;
  readonly major: number;
  readonly minor: number;
  readonly inode: bigint;
}

/**
 * Parse /proc/locks. Lines of waiters (`-> ...`) are skipped: they do not hold the lock.
 * Device numbers are printed in hex (`%02x:%02x`), the inode in decimal.
 */
export function parseProcLocks(text: string): ProcLock[] {
  const res: ProcLock[] = [];
  for (const line of text.split("\n")) {
    if (line.length === 0) continue;
    const f = line.trim().split(/\s+/);
    // f[0] = "N:", then optionally "->".
    if (f[1] === "->") continue;
    if (f.length < 6) continue;
    const [, type, mode, access, pidS, devS] = f as [string, string, string, string, string, string];
    const dm = /^([0-9a-fA-F]+):([0-9a-fA-F]+):(\d+)$/.exec(devS);
    if (!dm) continue;
    res.push({
      type,
      mode,
      access,
      pid: Number(pidS),
      major: Number.parseInt(dm[1]!, 16),
      minor: Number.parseInt(dm[2]!, 16),
      inode: BigInt(dm[3]!),
    });
  }
  return res;
}

/** Split a Linux dev_t (as stat returns it) into major and minor, like the kernel's MAJOR()/MINOR() for userspace. */
export function splitDev(dev: bigint): { major: number; minor: number } {
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  return { major, minor };
}

/** The hook's file-name escaping of a store URI: every `/` becomes `_`. */
export function escapeUri(storeUri: string): string {
  return storeUri.replaceAll("/", "_");
}

/** `NIX_STATE_DIR`, else /nix/var/nix. For a chroot store use `<root>/nix/var/nix`. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  const v = env.NIX_STATE_DIR;
  return v !== undefined && v !== "" ? v : "/nix/var/nix";
}

export function currentLoadDir(stateDir: string): string {
  return join(stateDir, "current-load");
}

/**
 * The slot file of a machine. With `version`, the URI is rendered as that version's hook does (null when
 * that version cannot parse it); without, the text as written (2.8).
 */
export function slotFile(stateDir: string, storeUri: string, slot: number): string;
export function slotFile(
  stateDir: string,
  storeUri: string,
  slot: number,
  version?: NixVersion,
): string | null;
export function slotFile(
  stateDir: string,
  storeUri: string,
  slot: number,
  version?: NixVersion,
): string | null {
  const stem = version === undefined ? escapeUri(storeUri) : slotStem(storeUri, version);
  return stem === null ? null : join(currentLoadDir(stateDir), `${stem}-${slot}`);
}

export interface SlotState {
  readonly slot: number;
  /** Empty when the version's hook cannot parse the URI (it never gets to choose the machine). */
  readonly file: string;
  readonly exists: boolean;
  /** Locked (exclusive flock held by some process). */
  readonly busy: boolean;
  /** Pids holding a lock on the file, as /proc/locks reports them. */
  readonly holders: readonly number[];
}

export interface MachineLoad {
  readonly storeUri: string;
  /** Busy slots among 0…maxJobs-1: exactly the count the hook computes. */
  readonly busy: number;
  readonly maxJobs: number;
  readonly slots: readonly SlotState[];
}

export interface CurrentLoad {
  readonly stateDir: string;
  /** False when /proc/locks could not be read (then every slot reads as free). */
  readonly locksReadable: boolean;
  readonly machines: readonly MachineLoad[];
}

export interface ReadLoadOptions {
  /** Default: defaultStateDir(). */
  readonly stateDir?: string;
  /** Text of /proc/locks; read from the system when omitted (tests can inject it). */
  readonly procLocks?: string;
  /** The Nix version whose hook names the slot files (default: the text as written, as 2.8 does). */
  readonly version?: NixVersion;
}

function lockKey(major: number, minor: number, inode: bigint): string {
  return `${major}:${minor}:${inode}`;
}

/**
 * Read the load of each machine. A slot is busy when its file exists and /proc/locks lists a
 * flock (shared or exclusive: either makes the hook's non-blocking exclusive attempt fail) on the same
 * device and inode. Files are only stat'ed; nothing is created, opened or locked.
 */
export function readCurrentLoad(
  machines: readonly { readonly storeUri: string; readonly maxJobs: number }[],
  opts: ReadLoadOptions = {},
): CurrentLoad {
  const stateDir = opts.stateDir ?? defaultStateDir();
  let text = opts.procLocks;
  let locksReadable = true;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/locks", "utf8");
    } catch {
      text = "";
      locksReadable = false;
    }
  }
  const held = new Map<string, number[]>();
  for (const l of parseProcLocks(text)) {
    // Nix uses flock(2); POSIX (fcntl) locks do not conflict with it on local file systems.
    if (l.type !== "FLOCK") continue;
    const k = lockKey(l.major, l.minor, l.inode);
    const pids = held.get(k);
    if (pids) pids.push(l.pid);
    else held.set(k, [l.pid]);
  }
  const out: MachineLoad[] = [];
  for (const m of machines) {
    const slots: SlotState[] = [];
    let busy = 0;
    const n = Math.max(0, Math.trunc(m.maxJobs));
    for (let slot = 0; slot < n; slot++) {
      const file = slotFile(stateDir, m.storeUri, slot, opts.version);
      let exists = false;
      let holders: number[] = [];
      try {
        if (file === null) throw new Error("unparseable");
        const st = statSync(file, { bigint: true });
        exists = true;
        const { major, minor } = splitDev(st.dev);
        holders = held.get(lockKey(major, minor, st.ino)) ?? [];
      } catch {
        // No file: nobody ever used (or currently uses) this slot.
      }
      const isBusy = holders.length > 0;
      if (isBusy) busy++;
      slots.push({ slot, file: file ?? "", exists, busy: isBusy, holders });
    }
    out.push({ storeUri: m.storeUri, busy, maxJobs: n, slots });
  }
  return { stateDir, locksReadable, machines: out };
}

/** The load map `route()` takes: store URI → busy slots. */
export function loadMap(load: CurrentLoad): Map<string, number> {
  const m = new Map<string, number>();
  for (const x of load.machines) m.set(x.storeUri, x.busy);
  return m;
}
