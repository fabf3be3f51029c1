/**
 * `nix-builders reset (--user U | --agent) [--force] [--json]`: put back what `use` changed, byte for byte,
 * with the original owner, mode and mtime; files that did not exist before `use` are removed (moved aside to a
 * timestamped backup only when someone changed them since, so nothing is lost). The state record goes last, so a reset that is killed half way
 * is finished by running it again.
 *
 * When a file was changed by someone else after `use` wrote it, reset refuses (that change would be lost)
 * unless --force is given.
 *
 * A clean use/reset cycle leaves no backup and no lock file behind, and the original's mtime is put back
 * (src/app/use-files.ts).
 *
 * Run by root, reset reads only root's record (/var/lib/nix-builders/use/<uid>-<name>/state.json), acts only
 * on the two files `use` manages, at the paths derived again from the user's passwd home, and does every
 * file operation there with the user's credentials: a restored file is the user's, never set-id. A record
 * in the user's own directory (older versions) is never trusted. See src/app/use-state.ts.
 */
import type { Command } from "commander";
import { agentRestartCommand } from "../agent/index.js";
import { type ResetFile, restoreUse } from "../app/use-files.js";
import {
  asRefusal,
  legacyMessage,
  legacyStateFile,
  printRefusal,
  resolveTarget,
  type Target,
  type TargetOptions,
} from "../app/use-state.js";
import { EXIT, type Io, json, Refusal } from "./io.js";

export interface ResetOptions extends TargetOptions {
  force?: boolean;
  json?: boolean;
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
  const r = await restoreUse(t, io.env, Boolean(opts.force));
  if (r.kind === "no-record") {
    const legacy = legacyStateFile(t);
    if (legacy) throw new Refusal(legacyMessage(legacy, t), { path: legacy });
    return out(EXIT.ok, { files: [] }, `Nothing to reset: no nix-builders use record in ${r.dir}.\n`);
  }
  if (r.kind === "refused") {
    let text = "";
    for (const c of r.files) {
      text +=
        c.status === "managed"
          ? `${c.path} is now managed by Nix (a link into the store); reset cannot write it.\n`
          : `${c.path} was changed after nix-builders use wrote it; reset would lose that change (--force to reset anyway):\n${c.diff}`;
    }
    return out(EXIT.errors, { refused: true, files: r.files }, text);
  }
  const files: ResetFile[] = r.files;
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
    .option(
      "--nix-version <X.Y>",
      "follow this Nix version's rules instead of the installed Nix's (checked against real Nix 2.8 and 2.30; other versions modelled from the Nix sources, see docs/nix-versions.md)",
    )
    .option("--json", "print one JSON document")
    .action(async (opts: ResetOptions) => exit(await runReset(opts, io)));
}
