/**
 * `nix-builders lint [--user NAME] [--nix-version X.Y] [--json] [--conf FILE]… [--machines FILE]… [FILE…]`:
 * flags → the lint service (src/app/lint.ts) → text or JSON.
 */
import type { Command } from "commander";
import { type LintOptions, type LintResult, lint, lintJson, lintNixDisplay } from "../app/lint.js";
import { fromBundle } from "../app/report.js";
import type { UserView } from "../app/view.js";
import { closeReaders } from "../host/fs-reader.js";
import { exitCodeFor } from "../nix/lint.js";
import { formatNixVersion } from "../nix/version.js";
import { EXIT, type Io, json, UsageError } from "./io.js";
import { plural } from "./render.js";

export { classifyFile, type LintOptions } from "../app/lint.js";

export function renderLint(r: LintResult): string {
  let out = `Nix ${formatNixVersion(r.version)} rules · user ${r.user} · the build hook (and ssh) runs as ${r.hookUser}\n`;
  let lastFile: string | null | undefined;
  for (const f of r.findings) {
    if (f.file !== lastFile) {
      out += "\n";
      lastFile = f.file;
    }
    const where = f.file === null ? "(no file)" : f.line === null ? f.file : `${f.file}:${f.line}`;
    // a consequence is shown under its cause, indented: fixing the cause removes it
    const pad = f.causedBy ? "    " : "";
    out += f.causedBy
      ? `${pad}↳ because of it, ${f.severity}: ${f.message}\n`
      : `${where}: ${f.severity}: ${f.message}\n`;
    if (!f.causedBy) out += `  fix: ${f.fix}\n`;
    if (f.nixMessage !== undefined) {
      const [first, ...rest] = lintNixDisplay(f.severity, f.nixMessage).split("\n");
      out += `${pad}  Nix says: ${first}\n`;
      for (const l of rest) out += `${pad}            ${l}\n`;
    }
    if (f.consequences)
      out += `  ${plural(f.consequences, "finding")} below follow from this one (Nix reads the rest of the line as machines):\n`;
  }
  const s = r.summary;
  out +=
    r.findings.length === 0
      ? "\nno problems found\n"
      : `\n${plural(s.errors, "error")}, ${plural(s.warnings, "warning")}, ${plural(s.infos, "info")}\n`;
  return out;
}

/** The command; the user's reader helpers stop when it ends (no process of the user outlives it). */
export async function runLint(
  opts: LintOptions & { from?: string },
  io: Io,
  given?: UserView,
): Promise<number> {
  try {
    return await runLintInner(opts, io, given);
  } finally {
    closeReaders();
  }
}

async function runLintInner(
  opts: LintOptions & { from?: string },
  io: Io,
  given?: UserView,
): Promise<number> {
  let view = given;
  if (opts.from !== undefined) {
    if ((opts.files ?? []).length + (opts.conf ?? []).length + (opts.machines ?? []).length > 0)
      throw new UsageError(
        "--from: FILE, --conf and --machines cannot be used with a report (it holds the view only)",
      );
    view = fromBundle(opts.from, opts).view;
  }
  const r = await lint(opts, io.env, view);
  io.out(opts.json ? json(lintJson(r)) : renderLint(r));
  const code = exitCodeFor(r.summary);
  return code === 2 ? EXIT.errors : code === 1 ? EXIT.warnings : EXIT.ok;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function register(program: Command, io: Io, exit: (code: number) => void): void {
  program
    .command("lint")
    .description("everything that will break or silently disable remote builds, before Nix raises it")
    .argument("[file...]", "lint these files (nix.conf-like or machines files, see docs/lint.md)")
    .option("--user <name>", "lint this user's view, with a service's clean environment")
    .option(
      "--nix-version <X.Y>",
      "follow this Nix version's rules instead of the installed Nix's (checked against real Nix 2.8 and 2.30; other versions modelled from the Nix sources, see docs/nix-versions.md)",
    )
    .option("--conf <file>", "lint this file as a nix.conf (repeatable)", collect)
    .option("--machines <file>", "lint this file as a machines file (repeatable)", collect)
    .option("--from <file>", "answer from a report taken with `nix-builders report` (docs/report.md)")
    .option("--json", "print one JSON document")
    .action(async (files: string[], opts: LintOptions) => exit(await runLint({ ...opts, files }, io)));
}
