/**
 * `nix-builders use NAME... (--user U | --agent) [--append] [--dry-run] [--force] [--json]`: the guide's
 * "non-default set of builders", done right. Writes `<home>/.config/nix/machines` with the chosen lines of
 * the system's builders (copied byte for byte from where they stand, e.g. /etc/nix/machines) and sets
 * `builders = @<that file>` in the user's nix.conf, keeping every other line.
 *
 * Writes are atomic (temp file, fsync, rename), backed up, locked, and recorded (the record is written
 * before anything else changes) so that `reset` can put the original bytes and mode back. A kill at any
 * point leaves every file old or new, and a rerun finishes the job.
 *
 * Run by root for user U, every file operation in U's home runs with U's credentials, the config chain must
 * be U's own (no symlinks, no other owner), and the record is root's, under /var/lib/nix-builders: see
 * src/app/use-state.ts. A refusal is one line naming the file and the reason, exit 2 (and in --json).
 */
import * as fs from "node:fs";
import type { Command } from "commander";
import { agentRestartCommand } from "../agent/index.js";
import { systemBuilders } from "../app/system-builders.js";
import { applyUse, buildersInForce, type ConfPlan, previewUse, type UseFile } from "../app/use-files.js";
import {
  asRefusal,
  checkConfigChain,
  legacyMessage,
  legacyStateFile,
  printRefusal,
  resolveTarget,
  type Target,
  type TargetOptions,
} from "../app/use-state.js";
import type { UserView } from "../app/view.js";
import { managedTarget } from "../host/atomic.js";
import { withUserCreds } from "../host/user-creds.js";
import {
  buildersEntries,
  fromBytes,
  machineSourceText,
  machinesFileText,
  nixosSnippet,
  selectMachines,
  setConfSetting,
  toBytes,
} from "../nix/conf-edit.js";
import { type Machine, parseMachineRow } from "../nix/machines.js";
import { formatOrigin } from "../nix/origin.js";
import { EXIT, type Io, json, UsageError } from "./io.js";

// ---------------------------------------------------------------------------------------------------------
// The command

export interface UseOptions extends TargetOptions {
  append?: boolean;
  dryRun?: boolean;
  force?: boolean;
  json?: boolean;
}

/** A system machines file (root's, e.g. /etc/nix/machines), for copying its lines byte for byte. */
function readLatin1(file: string): string | null {
  try {
    return fs.readFileSync(file).toString("latin1");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

/** Where a machine line given whole on the command line comes from. */
const COMMAND_LINE = "command line";

interface Chosen {
  lines: string[];
  machines: Machine[];
  /** Per line: `file:line` of the system's builders, or COMMAND_LINE. */
  from: string[];
  unmatched: string[];
  notes: string[];
}

/** Choose the machine lines: NAMEs from the system's builders, or whole machine lines given literally. */
function chooseLines(names: readonly string[], sys: ReturnType<typeof systemBuilders>, v: UserView): Chosen {
  const literal = names.filter((n) => /[ \t]/.test(n.trim()));
  const byName = names.filter((n) => !/[ \t]/.test(n.trim()));
  const sel = selectMachines(sys.result.machines, byName);
  const notes: string[] = [];
  for (const a of sel.ambiguous) notes.push(`'${a.name}' matches ${a.count} machines; all of them are used`);
  const machinesFiles = new Set(sys.result.includes.filter((i) => i.found).map((i) => i.resolved));
  const texts = new Map<string, string | null>();
  const lines: string[] = [];
  const from: string[] = [];
  const machines: Machine[] = [];
  for (const m of sel.chosen) {
    let fileText: string | null = null;
    if (m.origin.file !== null && machinesFiles.has(m.origin.file)) {
      if (!texts.has(m.origin.file)) texts.set(m.origin.file, readLatin1(m.origin.file));
      fileText = texts.get(m.origin.file) ?? null;
    }
    const same = sys.result.machines.filter(
      (o) => o.origin.file === m.origin.file && o.origin.line === m.origin.line,
    ).length;
    lines.push(machineSourceText({ ...m, row: toBytes(m.row) }, fileText, same));
    from.push(m.origin.file ? `${m.origin.file}${m.origin.line ? `:${m.origin.line}` : ""}` : "builders");
    machines.push(m);
  }
  const unmatched = [...sel.unmatched];
  for (const l of literal) {
    const r = parseMachineRow({ row: l.trim(), file: null, line: null }, v.version, v.hookSystem);
    if (!r.ok) {
      unmatched.push(`${l} (${r.error.message})`);
      continue;
    }
    lines.push(toBytes(l.trim()));
    from.push(COMMAND_LINE);
    machines.push(r.machine);
  }
  return { lines, machines, from, unmatched, notes };
}

function trustFix(v: UserView): string {
  return (
    `the nix-daemon does not trust ${v.user.name} (${v.trustReason}), so it ignores builders set in ` +
    `${v.user.name}'s nix.conf (only 'builders = ""' passes). Fix: add ${v.user.name} to trusted-users in ` +
    "/etc/nix/nix.conf (one trusted-users line; NixOS: nix.settings.trusted-users; the hercules-ci-agent " +
    "modules do this for the agent user) and restart nix-daemon. Or put the builders where the daemon reads " +
    "them (/etc/nix/machines). --force writes the files anyway."
  );
}

export async function runUse(names: string[], opts: UseOptions, io: Io): Promise<number> {
  if (names.length === 0) throw new UsageError("use: name at least one builder (host, URI or machine line)");
  const t = await resolveTarget(opts, io, "use").catch((e: unknown) => {
    const r = asRefusal(e);
    if (r) return r;
    throw e;
  });
  if (!("view" in t)) return printRefusal(t, opts, io, opts.user ?? null, "use");
  try {
    return await useFor(t, names, opts, io);
  } catch (e) {
    const r = asRefusal(e, t.forOther ? t.user.name : undefined);
    if (r) return printRefusal(r, opts, io, t.user.name, "use");
    throw e;
  }
}

/** The reply when a NAME matches none of the system's builders. */
function noMatch(
  t: Target,
  sys: ReturnType<typeof systemBuilders>,
  unmatched: string[],
  opts: UseOptions,
  io: Io,
): number {
  if (opts.json) {
    io.out(json({ ok: false, user: t.user.name, error: "no-match", unmatched }));
    return EXIT.errors;
  }
  const avail = sys.result.machines.map(
    (m) =>
      `  ${m.storeUri}  (${formatOrigin({ kind: "file", file: m.origin.file ?? "builders", line: m.origin.line ?? 0 })})`,
  );
  io.err(
    `nix-builders use: no builder matches: ${unmatched.join(", ")}\n` +
      `The system's builders (${sys.where}: builders = ${sys.value || '""'}):\n` +
      (avail.length ? avail.join("\n") : "  (none)") +
      "\n",
  );
  return EXIT.errors;
}

/** Settings applied after nix.conf that would override what use writes. */
function overrideWarnings(t: Target): string[] {
  const out: string[] = [];
  for (const o of t.sel?.overrides ?? []) {
    if (o.name === "builders" || o.name === "extra-builders")
      out.push(
        `the agent configuration sets nixSettings.${o.name} (${formatOrigin(o.origin)}), which Nix applies after nix.conf: remove it, or the agent keeps using those builders`,
      );
  }
  if (t.view.env["NIX_CONFIG"]?.match(/(^|\n)\s*(extra-)?builders\s*=/))
    out.push("NIX_CONFIG in the environment sets builders, which Nix applies after nix.conf");
  if (t.view.env["NIX_USER_CONF_FILES"] !== undefined)
    out.push(`NIX_USER_CONF_FILES is set; writing its first file, ${t.confFile}`);
  return out;
}

/** The files are store-managed (NixOS, nix-darwin, home-manager): what to configure instead, or null. */
function managedReply(
  t: Target,
  chosen: Chosen,
  append: boolean,
): { extra: Record<string, unknown>; text: string } | null {
  const managed = withUserCreds(t.creds, () =>
    [t.confFile, t.machinesFile]
      .map((f) => ({ f, target: managedTarget(f) }))
      .filter((x) => x.target !== null),
  );
  if (managed.length === 0) return null;
  const snippet = nixosSnippet({
    machines: chosen.machines,
    lines: chosen.lines.map(fromBytes),
    agent: t.sel !== null || t.user.name.includes("hercules"),
    append,
  });
  const text =
    managed.map((m) => `${m.f} is managed by Nix (a link to ${m.target}); nothing was written.\n`).join("") +
    "Set this in the system configuration instead (NixOS, or nix-darwin), then rebuild:\n\n" +
    snippet;
  return { extra: { managed: managed.map((m) => ({ path: m.f, target: m.target })), nixos: snippet }, text };
}

function renderUse(
  t: Target,
  chosen: Chosen,
  files: UseFile[],
  opts: UseOptions,
  restart: string | null,
): string {
  let text = `${t.user.name}'s builds ${opts.dryRun ? "would use" : "use"}${opts.append ? " the system's builders and" : ""}:\n`;
  chosen.machines.forEach((m, i) => {
    text += `  ${m.storeUri}  (${m.systemTypes.join(",")}; from ${chosen.from[i]})\n`;
  });
  for (const r of files) {
    text += `\n${r.path}: ${r.status === "written" ? (r.created ? "created" : "written") : r.status}`;
    text += r.backup ? ` (backup: ${r.backup})\n` : "\n";
    if (r.diff) text += r.diff;
  }
  if (!files.some((r) => r.status === "written" || r.status === "would-write"))
    text += "\nNothing to change: the files already say this.\n";
  if (restart && !opts.dryRun)
    text += `\nThe agent reads nix.conf only when it starts: restart it (${restart}).\n`;
  return `${text}Check it: nix-builders verify ${t.sel ? "--agent" : `--user ${t.user.name}`}\n`;
}

async function useFor(t: Target, names: string[], opts: UseOptions, io: Io): Promise<number> {
  const v = t.view;
  const warnings: string[] = [];
  const report = (code: number, extra: Record<string, unknown>, text: string): number => {
    if (opts.json) io.out(json({ ok: code === EXIT.ok, user: t.user.name, warnings, ...extra }));
    else {
      io.out(text);
      for (const w of warnings) io.err(`warning: ${w}\n`);
    }
    return code;
  };

  const sys = systemBuilders(v);
  const chosen = chooseLines(names, sys, v);
  if (chosen.unmatched.length > 0) return noMatch(t, sys, chosen.unmatched, opts, io);
  warnings.push(...chosen.notes);

  // Not trusted: refused, but a dry run still shows what would be written, with the refusal.
  const untrusted = v.storeMode === "daemon" && !v.trusted;
  const refusal = untrusted && !opts.force ? `refusing: ${trustFix(v)}` : null;
  if (refusal && !opts.dryRun)
    return report(
      EXIT.errors,
      { refused: "local-untrusted", message: refusal },
      `nix-builders use: ${refusal}\n`,
    );
  if (untrusted && opts.force)
    warnings.push(`written with --force, but ${trustFix(v).replace(/ --force writes.*$/, "")}`);
  warnings.push(...overrideWarnings(t));

  const keep = opts.append ? buildersEntries(sys.value).map(toBytes) : [];
  const given = chosen.lines.filter((_l, i) => chosen.from[i] === COMMAND_LINE);
  // With --append the system's machines are already in through `keep`; only given lines are added.
  const copied = opts.append ? [] : chosen.lines.filter((_l, i) => chosen.from[i] !== COMMAND_LINE);
  if (opts.append && given.length < chosen.lines.length)
    warnings.push(
      "--append: the chosen builders are already among the system's builders; the file only includes the system's list",
    );
  const machinesText = machinesFileText({ user: t.user.name, keep, lines: copied, given });
  const plan: ConfPlan = (confOld) =>
    setConfSetting(confOld ?? "", "builders", `@${toBytes(t.machinesFile)}`, {
      disable: ["extra-builders"],
      comment: "set by nix-builders use (nix-builders reset puts back what was here before)",
    });

  const managed = managedReply(t, chosen, Boolean(opts.append));
  if (managed) return report(EXIT.errors, managed.extra, managed.text);

  // The user's config chain: real directories and files of the user's own, or a one-line refusal.
  checkConfigChain(t);
  const legacy = legacyStateFile(t);
  if (legacy) warnings.push(legacyMessage(legacy, t));
  const { files, edit } = opts.dryRun
    ? previewUse(t, machinesText, plan)
    : await applyUse(t, io.env, machinesText, plan);

  for (const c of edit.changes)
    if (c.includes("extra-builders"))
      warnings.push(
        `${t.confFile} ${c}: it would add builders to the chosen ones (and Nix 2.8 does not know 'extra-builders' at all)`,
      );
  if (edit.laterIncludes.length)
    warnings.push(
      `${t.confFile} has include lines after 'builders' (lines ${edit.laterIncludes.join(", ")}); a builders line in them would win`,
    );
  // Written: is our line the one Nix uses now? (A later include can set builders again.)
  const overridden = opts.dryRun ? null : await buildersInForce(t);

  const changed = files.some((r) => r.status === "written" || r.status === "would-write");
  const restart = t.sel && changed ? (agentRestartCommand(t.sel.agent) ?? "restart the agent") : null;
  let text = renderUse(t, chosen, files, opts, restart);
  if (refusal) text += `\nnix-builders use: ${refusal}\n`;
  if (overridden) text += `\nnix-builders use: ${overridden}\n`;
  const failed = refusal ?? overridden;
  const machines = chosen.machines.map((m, i) => ({
    storeUri: m.storeUri,
    systems: m.systemTypes,
    from: chosen.from[i],
  }));
  return report(
    failed ? EXIT.errors : untrusted || warnings.length > 0 ? EXIT.warnings : EXIT.ok,
    {
      dryRun: Boolean(opts.dryRun),
      ...(refusal ? { refused: "local-untrusted", message: refusal } : {}),
      ...(overridden ? { overridden: overridden } : {}),
      machines,
      files,
      restart,
    },
    text,
  );
}

export function register(program: Command, io: Io, exit: (code: number) => void): void {
  program
    .command("use")
    .description("make a user (or the agent) use only the named builders, through its own nix.conf")
    .argument("<name...>", "builders by host, user@host, store URI, or a whole machines line")
    .option("--user <name>", "the user whose nix.conf to change")
    .option("--agent [name]", "the hercules-ci-agent service's user")
    .option("--agent-config <file>", "the hercules-ci-agent configuration file, when no service names it")
    .option("--append", "keep the system's builders as well (through an @ line)")
    .option("--dry-run", "print the diff, write nothing")
    .option("--force", "write even when the daemon does not trust the user (it will ignore the builders)")
    .option(
      "--nix-version <X.Y>",
      "follow this Nix version's rules instead of the installed Nix's (checked against real Nix 2.8 and 2.30; other versions modelled from the Nix sources, see docs/nix-versions.md)",
    )
    .option("--json", "print one JSON document")
    .action(async (names: string[], opts: UseOptions) => exit(await runUse(names, opts, io)));
}
