/**
 * `nix-builders reset (--user U | --agent) [--force] [--json]`: put back what `use` changed, byte for byte,
 * with the original owner and mode; files that did not exist before `use` are removed (moved aside to a
 * timestamped backup, so nothing is lost). The state record goes last, so a reset that is killed half way
 * is finished by running it again.
 *
 * When a file was changed by someone else after `use` wrote it, reset refuses (that change would be lost)
 * unless --force is given.
 *
 * Run by root, reset reads only root's record (/var/lib/nix-builders/use/<uid>-<name>/state.json), acts only
 * on the two files `use` manages, at the paths derived again from the user's passwd home, and does every
 * file operation there with the user's credentials: a restored file is the user's, never set-id. A record
 * in the user's own directory (older versions) is never trusted. See src/app/use-state.ts.
 */
import * as fs from "node:fs";
import type { Command } from "commander";
import { agentRestartCommand } from "../agent/index.js";
import {
  asRefusal,
  checkConfigChain,
  checkStateLocation,
  checkStateMatches,
  type FileRecord,
  legacyMessage,
  legacyStateFile,
  printRefusal,
  readManaged,
  readState,
  resolveTarget,
  sha256,
  stateLocation,
  type Target,
  type TargetOptions,
  writeState,
} from "../app/use-state.js";
import { acquireLock, atomicWrite, managedTarget, moveAside } from "../host/atomic.js";
import { withUserCreds } from "../host/user-creds.js";
import { fromBytes, unifiedDiff } from "../nix/conf-edit.js";
import { EXIT, type Io, json, Refusal } from "./io.js";

export interface ResetOptions extends TargetOptions {
  force?: boolean;
  json?: boolean;
}

interface ResetFile {
  path: string;
  status: "restored" | "removed" | "unchanged" | "modified-since" | "managed";
  backup: string | null;
  diff: string;
}

export async function runReset(opts: ResetOptions, io: Io): Promise<number> {
  const t = await resolveTarget(opts, io, "reset").catch((e: unknown) => {
    const r = asRefusal(e);
    if (r) return r;
    throw e;
  });
  if (!("view" in t)) return printRefusal(t, opts, io, opts.user ?? null, "reset");
  try {
    return await resetFor(t, opts, io);
  } catch (e) {
    const r = asRefusal(e, t.forOther ? t.user.name : undefined);
    if (r) return printRefusal(r, opts, io, t.user.name, "reset");
    throw e;
  }
}

async function resetFor(t: Target, opts: ResetOptions, io: Io): Promise<number> {
  const out = (code: number, extra: Record<string, unknown>, text: string): number => {
    if (opts.json) io.out(json({ ok: code === EXIT.ok, user: t.user.name, ...extra }));
    else io.out(text);
    return code;
  };
  const loc = stateLocation(t, io.env);
  const noRecord = () => {
    const legacy = legacyStateFile(t);
    if (legacy) throw new Refusal(legacyMessage(legacy, t), { path: legacy });
    return out(EXIT.ok, { files: [] }, `Nothing to reset: no nix-builders use record in ${loc.dir}.\n`);
  };
  checkStateLocation(loc);
  if (!fs.existsSync(loc.file)) return noRecord();

  const lock = await acquireLock(loc.dir);
  const files: ResetFile[] = [];
  try {
    const state = readState(loc);
    if (state === null) return noRecord();
    checkStateMatches(state, t, loc);
    // Only the two files use manages for this user, at the paths derived from the user's home now.
    const recs: [string, FileRecord][] = [
      [t.machinesFile, state.files.machines],
      [t.confFile, state.files.conf],
    ];
    const managed = withUserCreds(t.creds, () => recs.filter(([f]) => managedTarget(f) !== null));
    checkConfigChainUnlessManaged(t, managed.length > 0);
    // First pass: is every file still what use left there (or the original)?
    const conflicts: ResetFile[] = managed.map(([f]) => ({
      path: f,
      status: "managed",
      backup: null,
      diff: "",
    }));
    const current = new Map<string, Buffer | null>();
    for (const [file, rec] of recs) {
      if (managed.some(([f]) => f === file)) continue;
      if (rec.existed && rec.uid !== t.user.uid)
        throw new Refusal(
          `${loc.file}: records owner uid ${rec.uid} for ${file}; reset only restores files owned by ${t.user.name}`,
          { path: loc.file },
        );
      const cur = readManaged(t, file).bytes;
      current.set(file, cur);
      const original = rec.content === null ? null : Buffer.from(rec.content, "base64");
      const ours =
        cur === null
          ? true // gone: putting the original back loses nothing
          : (original !== null && cur.equals(original)) || rec.written.includes(sha256(cur));
      if (!ours) {
        const diff = fromBytes(
          unifiedDiff(cur?.toString("latin1") ?? null, original?.toString("latin1") ?? null, {
            old: file,
            new: `${file} (before nix-builders use)`,
          }),
        );
        conflicts.push({ path: file, status: "modified-since", backup: null, diff });
      }
    }
    if (conflicts.some((c) => c.status === "managed") || (conflicts.length > 0 && !opts.force)) {
      let text = "";
      for (const c of conflicts) {
        text +=
          c.status === "managed"
            ? `${c.path} is now managed by Nix (a link into the store); reset cannot write it.\n`
            : `${c.path} was changed after nix-builders use wrote it; reset would lose that change (--force to reset anyway):\n${c.diff}`;
      }
      return out(EXIT.errors, { refused: true, files: conflicts }, text);
    }

    // The reverse of use's order: nix.conf first, so that it never points at a machines file we removed.
    for (const [file, rec] of [...recs].reverse()) {
      const cur = current.get(file) ?? null;
      if (rec.existed) {
        const original = Buffer.from(rec.content ?? "", "base64");
        // Written as the user: the owner is the user; the mode as it was, never with set-id bits.
        const r = await atomicWrite(file, original, {
          as: t.creds,
          noFollow: true,
          mode: (rec.mode ?? 0o644) & 0o777,
          ...(rec.gid !== null ? { gid: rec.gid } : {}),
        });
        const diff = fromBytes(
          unifiedDiff(cur?.toString("latin1") ?? null, original.toString("latin1"), { old: file, new: file }),
        );
        files.push({
          path: file,
          status:
            r.status === "written" || (r.status === "unchanged" && r.metadataFixed)
              ? "restored"
              : "unchanged",
          backup: r.status === "written" ? r.backup : null,
          diff,
        });
      } else if (cur !== null) {
        // Did not exist before use: move it aside (atomic; the bytes stay available in the backup).
        const dest = await moveAside(file, { as: t.creds });
        files.push({
          path: file,
          status: dest ? "removed" : "unchanged",
          backup: dest,
          diff: dest ? fromBytes(unifiedDiff(cur.toString("latin1"), null, { old: file, new: file })) : "",
        });
      } else {
        files.push({ path: file, status: "unchanged", backup: null, diff: "" });
      }
    }
    writeState(loc, null);
  } finally {
    lock.release();
  }

  const changed = files.some((f) => f.status !== "unchanged");
  const restart = t.sel && changed ? (agentRestartCommand(t.sel.agent) ?? "restart the agent") : null;
  let text = "";
  for (const f of files) {
    text += `${f.path}: ${f.status}${f.backup ? ` (backup: ${f.backup})` : ""}\n`;
    if (f.diff) text += f.diff;
  }
  if (restart) text += `\nThe agent reads nix.conf only when it starts: restart it (${restart}).\n`;
  return out(EXIT.ok, { files, restart }, text);
}

/** The chain check; a store-managed file is reported as such instead (reset cannot write it either way). */
function checkConfigChainUnlessManaged(t: Target, anyManaged: boolean): void {
  if (!anyManaged) checkConfigChain(t);
}

export function register(program: Command, io: Io, exit: (code: number) => void): void {
  program
    .command("reset")
    .description("put back what `nix-builders use` changed, byte for byte")
    .option("--user <name>", "the user whose nix.conf to restore")
    .option("--agent [name]", "the hercules-ci-agent service's user")
    .option("--agent-config <file>", "the hercules-ci-agent configuration file, when no service names it")
    .option("--force", "restore even files that were changed after use wrote them")
    .option(
      "--nix-version <X.Y>",
      "follow this Nix version's rules instead of the installed Nix's (checked against real Nix 2.8 and 2.30; other versions modelled from the Nix sources, see docs/nix-versions.md)",
    )
    .option("--json", "print one JSON document")
    .action(async (opts: ResetOptions) => exit(await runReset(opts, io)));
}
