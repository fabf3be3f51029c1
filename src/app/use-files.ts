/**
 * The file work of `use` and `reset`: what use would write (the dry run), use's write, the check that its
 * `builders` line is the one in force, and reset's restore. The record and the checks live in
 * ./use-state.ts; the commands only choose, render and print.
 *
 * Both commands run under the lock of the user's record (one directory per user, root's or the user's
 * own), which serialises every use and reset for that user. So the writes in the user's directory take
 * no lock of their own (no lock file is left there), and make no backup when the file holds the
 * original or bytes use wrote (the record keeps the original): a use/reset cycle leaves nothing behind.
 * A file someone else changed since is still backed up (`<file>.nix-builders.<time>.bak`) before it is
 * replaced. Reset removes the record, then the record's lock file (see `HeldLock.releaseAndRemove`).
 */
import { acquireLock, atomicWrite, managedTarget, moveAside } from "../host/atomic.js";
import { withUserCreds } from "../host/user-creds.js";
import { type ConfEdit, fromBytes, unifiedDiff } from "../nix/conf-edit.js";
import { formatOrigin } from "../nix/origin.js";
import { Refusal } from "./io.js";
import {
  checkConfigChain,
  checkStateLocation,
  checkStateMatches,
  ensureChainDirs,
  ensureStateDir,
  type FileRecord,
  type FileSnapshot,
  isOurs,
  newState,
  readManaged,
  readState,
  sha256,
  stateLocation,
  type Target,
  writeState,
} from "./use-state.js";
import { settingText } from "./view.js";

export interface UseFile {
  path: string;
  status: "written" | "unchanged" | "managed" | "would-write";
  created: boolean;
  backup: string | null;
  diff: string;
}

/** nix.conf's new text from its old one (null: no file). */
export type ConfPlan = (old: string | null) => ConfEdit;

const latin1 = (b: Buffer | null): string | null => (b === null ? null : b.toString("latin1"));

function diffOf(file: string, old: string | null, next: string | null, newName = file): string {
  return fromBytes(unifiedDiff(old, next, { old: file, new: newName }));
}

/** What use would write, reading the files as they are now; nothing is written. */
export function previewUse(
  t: Target,
  machinesText: string,
  plan: ConfPlan,
): { files: UseFile[]; edit: ConfEdit } {
  const mOld = latin1(readManaged(t, t.machinesFile).bytes);
  const cOld = latin1(readManaged(t, t.confFile).bytes);
  const edit = plan(cOld);
  const files = (
    [
      [t.machinesFile, mOld, machinesText],
      [t.confFile, cOld, edit.text],
    ] as const
  ).map(([f, o, n]): UseFile => {
    const diff = diffOf(f, o, n);
    return { path: f, status: diff ? "would-write" : "unchanged", created: o === null, backup: null, diff };
  });
  return { files, edit };
}

/**
 * Use's write, under the record's lock: the record first (the originals, and the hashes of what is about
 * to be written, so reset knows those bytes are ours), then the machines file, then nix.conf.
 */
export async function applyUse(
  t: Target,
  env: NodeJS.ProcessEnv,
  machinesText: string,
  plan: ConfPlan,
): Promise<{ files: UseFile[]; edit: ConfEdit }> {
  const loc = stateLocation(t, env);
  ensureStateDir(loc);
  const lock = await acquireLock(loc.dir);
  try {
    let state = readState(loc);
    if (state) checkStateMatches(state, t, loc);
    // Again under the lock: what we record and write is what is there now.
    checkConfigChain(t);
    const snaps: FileSnapshot[] = [readManaged(t, t.machinesFile), readManaged(t, t.confFile)];
    const edit = plan(latin1(snaps[1]!.bytes));
    const want = [Buffer.from(machinesText, "latin1"), Buffer.from(edit.text, "latin1")];
    state ??= newState(t, snaps[0]!, snaps[1]!);
    const recs = [state.files.machines, state.files.conf];
    // Bytes nobody but use (or the original) put there need no backup: the record has the original.
    const known = snaps.map((s, i) => s.bytes === null || isOurs(recs[i]!, s.bytes));
    recs.forEach((rec, i) => {
      const h = sha256(want[i]!);
      if (!rec.written.includes(h)) rec.written.push(h);
    });
    writeState(loc, state);
    ensureChainDirs(t);
    const files: UseFile[] = [];
    for (const [i, f] of [t.machinesFile, t.confFile].entries()) {
      const snap = snaps[i]!;
      const r = await atomicWrite(f, want[i]!, {
        as: t.creds,
        noFollow: true,
        unlocked: true,
        backup: !known[i],
        mode: snap.mode ?? 0o644,
        ...(snap.gid !== null ? { gid: snap.gid } : {}),
      });
      if (r.status === "written") {
        const diff = diffOf(f, latin1(snap.bytes), want[i]!.toString("latin1"));
        files.push({ path: f, status: "written", created: r.created, backup: r.backup, diff });
      } else files.push({ path: f, status: r.status, created: false, backup: null, diff: "" });
    }
    return { files, edit };
  } finally {
    lock.release();
  }
}

/**
 * After writing: is `builders = @<machines file>` from the user's nix.conf the value Nix uses? A later
 * include, NIX_CONFIG or the agent's nixSettings can set it again. Null when it is; else the reason.
 */
export async function buildersInForce(t: Target): Promise<string | null> {
  const v = await t.reloadView();
  const s = v.client.settings.get("builders");
  const want = `@${t.machinesFile}`;
  const from = s?.origin.map(formatOrigin).join(", ") ?? "(default)";
  const ours = s?.origin.some((o) => o.kind === "file" && o.file === t.confFile) ?? false;
  const value = settingText(s?.value ?? "");
  if (ours && value === want) return null;
  return `after writing, ${t.user.name}'s builders setting is '${value}' from ${from}, not '${want}' from ${t.confFile}: something read later overrides it; remove that, then run use again`;
}

export interface ResetFile {
  path: string;
  status: "restored" | "removed" | "unchanged" | "modified-since" | "managed";
  backup: string | null;
  diff: string;
}

export type ResetOutcome =
  | { kind: "no-record"; dir: string }
  | { kind: "refused"; files: ResetFile[] }
  | { kind: "done"; files: ResetFile[] };

/** The files reset would lose a change in (or cannot write), with the diff of that change. */
function conflicts(
  t: Target,
  recs: [string, FileRecord][],
  managed: string[],
  current: Map<string, Buffer | null>,
  recordFile: string,
): ResetFile[] {
  const out: ResetFile[] = managed.map((f) => ({ path: f, status: "managed", backup: null, diff: "" }));
  for (const [file, rec] of recs) {
    if (managed.includes(file)) continue;
    if (rec.existed && rec.uid !== t.user.uid)
      throw new Refusal(
        `${recordFile}: records owner uid ${rec.uid} for ${file}; reset only restores files owned by ${t.user.name}`,
        { path: recordFile },
      );
    const cur = readManaged(t, file).bytes;
    current.set(file, cur);
    // gone: putting the original back loses nothing
    if (cur === null || isOurs(rec, cur)) continue;
    const original = rec.content === null ? null : Buffer.from(rec.content, "base64");
    const diff = diffOf(file, cur.toString("latin1"), latin1(original), `${file} (before nix-builders use)`);
    out.push({ path: file, status: "modified-since", backup: null, diff });
  }
  return out;
}

/** Put one file back as it was before use: its bytes, mode and mtime, or no file. */
async function restoreOne(t: Target, file: string, rec: FileRecord, cur: Buffer | null): Promise<ResetFile> {
  const keep = cur !== null && !isOurs(rec, cur); // forced over someone's change: keep it aside
  if (rec.existed) {
    const original = Buffer.from(rec.content ?? "", "base64");
    // Written as the user: the owner is the user; the mode as it was, never with set-id bits.
    const r = await atomicWrite(file, original, {
      as: t.creds,
      noFollow: true,
      unlocked: true,
      backup: keep,
      mode: (rec.mode ?? 0o644) & 0o777,
      ...(rec.gid !== null ? { gid: rec.gid } : {}),
      ...(typeof rec.mtimeMs === "number" ? { mtimeMs: rec.mtimeMs } : {}),
    });
    const restored = r.status === "written" || (r.status === "unchanged" && r.metadataFixed);
    return {
      path: file,
      status: restored ? "restored" : "unchanged",
      backup: r.status === "written" ? r.backup : null,
      diff: diffOf(file, latin1(cur), original.toString("latin1")),
    };
  }
  if (cur === null) return { path: file, status: "unchanged", backup: null, diff: "" };
  // Did not exist before use: removed (moved aside when it holds someone else's change).
  const dest = await moveAside(file, { as: t.creds, unlocked: true, remove: !keep });
  return {
    path: file,
    status: dest ? "removed" : "unchanged",
    backup: dest !== null && keep ? dest : null,
    diff: dest ? diffOf(file, cur.toString("latin1"), null) : "",
  };
}

/**
 * Reset's work under the record's lock: refuses (without writing) when a file is store-managed or was
 * changed since use (unless `force`), else puts both files back, nix.conf first (so it never points at a
 * machines file already gone), then removes the record and its lock file.
 */
export async function restoreUse(t: Target, env: NodeJS.ProcessEnv, force: boolean): Promise<ResetOutcome> {
  const loc = stateLocation(t, env);
  checkStateLocation(loc);
  if (readState(loc) === null) return { kind: "no-record", dir: loc.dir };
  const lock = await acquireLock(loc.dir);
  let done = false;
  try {
    const state = readState(loc);
    if (state === null) return { kind: "no-record", dir: loc.dir };
    checkStateMatches(state, t, loc);
    // Only the two files use manages for this user, at the paths derived from the user's home now.
    const recs: [string, FileRecord][] = [
      [t.machinesFile, state.files.machines],
      [t.confFile, state.files.conf],
    ];
    const managed = withUserCreds(t.creds, () =>
      recs.map(([f]) => f).filter((f) => managedTarget(f) !== null),
    );
    if (managed.length === 0) checkConfigChain(t);
    const current = new Map<string, Buffer | null>();
    const refused = conflicts(t, recs, managed, current, loc.file);
    if (managed.length > 0 || (refused.length > 0 && !force)) return { kind: "refused", files: refused };
    const files: ResetFile[] = [];
    for (const [file, rec] of [...recs].reverse())
      files.push(await restoreOne(t, file, rec, current.get(file) ?? null));
    writeState(loc, null);
    done = true;
    return { kind: "done", files };
  } finally {
    if (done) lock.releaseAndRemove();
    else lock.release();
  }
}
