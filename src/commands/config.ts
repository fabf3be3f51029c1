/**
 * `nix-builders config [--user NAME] [--json]`: every setting the configuration files set, plus the
 * defaults of the settings that matter for remote builds, each with its origin; and Nix's warnings
 * and errors, before Nix raises them.
 */
import type { Command } from "commander";
import { fromBundle } from "../app/report.js";
import { lookupUserOrThrow, nixContext, settingText, type UserView, userView } from "../app/view.js";
import { closeReaders } from "../host/fs-reader.js";
import type { ConfigFile, ConfigView } from "../nix/conf.js";
import { indentLines, nixErrorDisplay, nixWarningDisplay } from "../nix/display.js";
import { formatOrigin } from "../nix/origin.js";
import { formatNixVersion } from "../nix/version.js";
import { EXIT, type Io, json } from "./io.js";
import { originJson, originsText, table } from "./render.js";

/** The settings shown even when no file sets them. */
export const MODELLED_SETTINGS = [
  "builders",
  "builders-use-substitutes",
  "trusted-users",
  "allowed-users",
  "build-users-group",
  "max-jobs",
  "cores",
  "system",
  "extra-platforms",
  "system-features",
  "substituters",
  "trusted-substituters",
  "trusted-public-keys",
  "require-sigs",
  "sandbox",
  "store",
  "keep-going",
  "max-silent-time",
  "connect-timeout",
  "narinfo-cache-negative-ttl",
  "experimental-features",
] as const;

export interface ConfigOptions {
  user?: string;
  /** --from FILE: answer from a report (docs/report.md) instead of this machine. */
  from?: string;
  nixVersion?: string;
  json?: boolean;
  all?: boolean;
}

export function configJson(view: ConfigView, user: string, all = false): Record<string, unknown> {
  const settings: Record<string, unknown> = {};
  const names = [...view.settings.keys()].sort();
  for (const name of names) {
    const s = view.settings.get(name)!;
    if (!all && s.layer === "default" && !(MODELLED_SETTINGS as readonly string[]).includes(name)) continue;
    settings[name] = {
      value: s.value,
      origin: s.origin.map(originJson),
      layer: s.layer,
      overridden: s.overridden,
    };
  }
  return {
    nixVersion: formatNixVersion(view.nixVersion),
    user,
    confDir: view.confDir,
    userFiles: view.userFiles,
    files: view.files.map((f) => ({
      path: f.path,
      role: f.role,
      exists: f.exists,
      ...(f.skipped ? { skipped: f.skipped } : {}),
      ...(f.includedFrom ? { includedFrom: originJson(f.includedFrom) } : {}),
    })),
    settings,
    warnings: view.warnings.map((w) => ({
      message: w.message,
      text: `warning: ${w.message}`,
      displayed: nixWarningDisplay(w.message),
      origin: w.origin ? originJson(w.origin) : null,
    })),
    error: view.error
      ? {
          message: view.error.nixMessage,
          text: `error: ${view.error.nixMessage}`,
          displayed: nixErrorDisplay(view.error.nixMessage),
          file: view.error.file,
          line: view.error.line,
        }
      : null,
  };
}

/** How a file was read, as `name` (the user the configuration is for) reads it. */
function fileState(f: ConfigFile, name: string, stoppedHere: boolean): string {
  if (f.exists) return f.skipped ? `skipped: ${f.skipped}` : "read";
  if (!f.skipped || f.skipped === "No such file or directory") return "missing";
  if (stoppedHere) return `${f.skipped}: not read`;
  return `unreadable for ${name}: ${f.skipped} (Nix skips it)`;
}

/** The command; the user's reader helpers stop when it ends (no process of the user outlives it). */
export async function runConfig(opts: ConfigOptions, io: Io): Promise<number> {
  try {
    return await runConfigInner(opts, io);
  } finally {
    closeReaders();
  }
}

async function runConfigInner(opts: ConfigOptions, io: Io): Promise<number> {
  let uv: UserView;
  if (opts.from !== undefined) uv = fromBundle(opts.from, opts).view;
  else {
    const ctx = await nixContext(opts.nixVersion);
    if (opts.user === undefined) lookupUserOrThrow(ctx.db, String(process.getuid?.() ?? 0));
    uv = await userView({ user: opts.user, env: io.env }, ctx);
  }
  // snapshot → resolve → render: the user's own configuration, as the view resolved it
  const ctx = uv;
  const me = uv.user;
  const user = uv.serviceEnv ? me : null;
  const view = uv.client;
  const code = view.error ? EXIT.errors : EXIT.ok;
  if (opts.json) {
    const doc = configJson(view, me.name, opts.all);
    io.out(json(ctx.versionNote ? { ...doc, nixVersionNote: ctx.versionNote } : doc));
    return code;
  }
  let out = `Nix ${formatNixVersion(view.nixVersion)} rules (${ctx.versionSource}) for user ${me.name}`;
  out += user ? " (service environment: passwd home, clean environment)\n" : "\n";
  if (ctx.versionNote) out += `  note: ${ctx.versionNote}\n`;
  out += "\nFiles, in the order Nix applies them:\n";
  out += table(
    view.files.map((f) => [
      f.role,
      f.path,
      fileState(f, me.name, view.error?.file === f.path),
      f.includedFrom ? `included from ${formatOrigin(f.includedFrom)}` : "",
    ]),
  );
  out += "\nSettings:\n";
  const rows: string[][] = [];
  for (const name of [...view.settings.keys()].sort()) {
    const s = view.settings.get(name)!;
    if (!opts.all && s.layer === "default" && !(MODELLED_SETTINGS as readonly string[]).includes(name))
      continue;
    rows.push([name, "=", settingText(s.value), s.layer === "default" ? "(default)" : originsText(s.origin)]);
  }
  out += table(rows);
  if (view.warnings.length) {
    out += "\nWarnings Nix prints:\n";
    for (const w of view.warnings)
      out += `${indentLines(nixWarningDisplay(w.message), "  ")}${w.origin ? `  (${formatOrigin(w.origin)})` : ""}\n`;
  }
  if (view.error) {
    out += `\nNix stops with:\n${indentLines(nixErrorDisplay(view.error.nixMessage), "  ")}\n`;
    if (view.error.file) out += `  at ${view.error.file}${view.error.line ? `:${view.error.line}` : ""}\n`;
  }
  io.out(out);
  return code;
}

export function register(program: Command, io: Io, exit: (code: number) => void): void {
  program
    .command("config")
    .description("the settings a user really gets from nix.conf files, each with its origin")
    .option("--user <name>", "compute the view of this user, with a service's clean environment")
    .option(
      "--nix-version <X.Y>",
      "follow this Nix version's rules instead of the installed Nix's (checked against real Nix 2.8 and 2.30; other versions modelled from the Nix sources, see docs/nix-versions.md)",
    )
    .option(
      "--all",
      "list every setting, not only those set in files and those that matter for remote builds",
    )
    .option("--from <file>", "answer from a report taken with `nix-builders report` (docs/report.md)")
    .option("--json", "print one JSON document")
    .action(async (opts: ConfigOptions) => exit(await runConfig(opts, io)));
}
