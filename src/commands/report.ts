/**
 * `nix-builders report [--user U] [--agent [NAME]] [--output FILE]`: one JSON support bundle with
 * everything show, lint, route and the agent part of `doctor --agent` read from this machine, without
 * private keys or files the user cannot read (docs/report.md). `show`, `lint`, `route`, `explain` and
 * `config` answer from it with `--from FILE`.
 */
import type { Command } from "commander";
import type { AgentOptions } from "../app/agent-select.js";
import { takeReport, writeReport } from "../app/report.js";
import { closeReaders } from "../host/fs-reader.js";
import { EXIT, type Io, json } from "./io.js";

export interface ReportCommandOptions extends AgentOptions {
  user?: string;
  output?: string;
  json?: boolean;
}

/** The command; the user's reader helpers stop when it ends (no process of the user outlives it). */
export async function runReport(opts: ReportCommandOptions, io: Io): Promise<number> {
  try {
    const text = json(await takeReport(opts, io.env));
    if (opts.output === undefined) io.out(text);
    else {
      writeReport(opts.output, text);
      io.err(`nix-builders: report written to ${opts.output} (mode 0600)\n`);
    }
    return EXIT.ok;
  } finally {
    closeReaders();
  }
}

export function register(program: Command, io: Io, exit: (code: number) => void): void {
  program
    .command("report")
    .description(
      "one JSON support bundle of a user's view (what show, lint and route read), without private keys; replay it with --from",
    )
    .option("--user <name>", "the view of this user, with a service's clean environment")
    .option("--agent [name]", "the view of the hercules-ci-agent service, and what its checks read")
    .option(
      "--agent-config <file>",
      "the hercules-ci-agent configuration file, when no service definition names it",
    )
    .option(
      "--output <file>",
      "write the bundle to FILE (mode 0600; a link there is replaced, never followed)",
    )
    .option("--json", "the bundle is JSON already; with it, a failure is one JSON document too")
    .action(async (opts: ReportCommandOptions) => exit(await runReport(opts, io)));
}
