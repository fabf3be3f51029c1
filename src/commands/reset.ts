/**
 * `nix-builders reset (--user U | --agent) [--force] [--json]`: put back what `use` changed, byte for byte,
 * with the original owner and mode; files that did not exist before `use` are removed (moved aside to a
 * timestamped backup, so nothing is lost). The state record goes last, so a reset that is killed half way
 * is finished by running it again.
 *
 * When a file was changed by someone else after `use` wrote it, reset refuses (that change would be lost)
 * unless --force is given.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Command } from "commander";
import { agentRestartCommand } from "../agent/index.js";
import { acquireLock, atomicWrite, backupName, fsyncDir, managedTarget } from "../host/atomic.js";
import { fromBytes, unifiedDiff } from "../nix/conf-edit.js";
import { EXIT, type Io, json } from "./io.js";
import { readBytes, readState, resolveTarget, sha256, type TargetOptions, writeState } from "./use.js";

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
  const t = await resolveTarget(opts, io, "reset");
  const out = (code: number, extra: Record<string, unknown>, text: string): number => {
    if (opts.json) io.out(json({ ok: code === EXIT.ok, user: t.user.name, ...extra }));
    else io.out(text);
    return code;
  };
  if (!fs.existsSync(t.stateFile))
    return out(EXIT.ok, { files: [] }, `Nothing to reset: no nix-builders use record in ${t.stateDir}.\n`);

  const lock = await acquireLock(t.stateDir);
  const files: ResetFile[] = [];
  try {
    const state = readState(t.stateFile);
    if (state === null) return out(EXIT.ok, { files: [] }, "Nothing to reset.\n");
    // First pass: is every file still what use left there (or the original)?
    const conflicts: ResetFile[] = [];
    for (const [file, rec] of Object.entries(state.files)) {
      if (managedTarget(file) !== null) {
        conflicts.push({ path: file, status: "managed", backup: null, diff: "" });
        continue;
      }
      const cur = readBytes(file);
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
    for (const [file, rec] of Object.entries(state.files).reverse()) {
      const cur = readBytes(file);
      if (rec.existed) {
        const original = Buffer.from(rec.content ?? "", "base64");
        const r = await atomicWrite(file, original, {
          uid: rec.uid ?? undefined,
          gid: rec.gid ?? undefined,
          mode: rec.mode ?? undefined,
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
        let dest = backupName(file, new Date());
        for (let i = 1; fs.existsSync(dest); i++)
          dest = backupName(file, new Date()).replace(/\.bak$/, `-${i}.bak`);
        fs.renameSync(file, dest);
        fsyncDir(path.dirname(file));
        files.push({
          path: file,
          status: "removed",
          backup: dest,
          diff: fromBytes(unifiedDiff(cur.toString("latin1"), null, { old: file, new: file })),
        });
      } else {
        files.push({ path: file, status: "unchanged", backup: null, diff: "" });
      }
    }
    writeState(t.stateFile, null, { uid: t.user.uid, gid: t.user.gid });
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

export function register(program: Command, io: Io, exit: (code: number) => void): void {
  program
    .command("reset")
    .description("put back what `nix-builders use` changed, byte for byte")
    .option("--user <name>", "the user whose nix.conf to restore")
    .option("--agent [name]", "the hercules-ci-agent service's user")
    .option("--agent-config <file>", "the hercules-ci-agent configuration file, when no service names it")
    .option("--force", "restore even files that were changed after use wrote them")
    .option("--nix-version <X.Y>", "follow this Nix version's rules instead of the installed Nix's")
    .option("--json", "print one JSON document")
    .action(async (opts: ResetOptions) => exit(await runReset(opts, io)));
}
