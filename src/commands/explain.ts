/**
 * `nix-builders explain [FILE|-] [--json] [--nix-version X.Y]`: read a Nix log (plain, coloured, or
 * `--log-format internal-json`) and say what went wrong, root cause first.
 *
 * Exit status: 0 when a cause was recognised and explained, 1 when nothing in the log was recognised,
 * 64 for usage errors (unreadable file, bad --nix-version).
 */
import type { Command } from "commander";
import { readBundle } from "../app/snapshot.js";
import { readBounded } from "../host/fs-reader.js";
import { readProblemText } from "../nix/conf.js";
import { type ExplainResult, explainLog, type Finding } from "../nix/explain.js";
import { parseNixVersion } from "../nix/version.js";
import { EXIT, errnoText, type Io, json, Refusal, UsageError } from "./io.js";

export interface ExplainCommandOptions {
  json?: boolean;
  nixVersion?: string;
  /** --from FILE: the log comes from the machine of this report (docs/report.md): its Nix version. */
  from?: string;
}

/** How the command reads its input; injected for tests. */
export interface ExplainInput {
  readFile(path: string): Promise<string>;
  readStdin(): Promise<string>;
}

/** The most of a log file we read (a build log of a few hundred MiB is already extreme). */
const LOG_LIMIT = 256 * 1024 * 1024;

const processInput: ExplainInput = {
  // bounded: a regular file of at most LOG_LIMIT (a FIFO or /dev/zero would block or never end)
  readFile: async (p) => {
    const r = readBounded(p, LOG_LIMIT);
    if (r.ok) return r.text;
    throw new Error(r.code === "EFBIG" ? "larger than 256 MiB" : readProblemText(r));
  },
  readStdin: async () => {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(typeof c === "string" ? Buffer.from(c) : (c as Buffer));
    return Buffer.concat(chunks).toString("utf8");
  },
};

function indent(text: string, prefix: string): string {
  return text
    .split("\n")
    .map((l) => prefix + l)
    .join("\n");
}

function renderFinding(f: Finding, verbose: boolean): string {
  const out: string[] = [];
  out.push(`line ${f.line}: ${f.summary}  [${f.cause}]`);
  out.push(indent(f.displayed.trim(), "    > "));
  if (verbose) {
    out.push(indent(f.detail, "    "));
    if (f.fix.length > 0) {
      out.push("    Fix:");
      for (const x of f.fix) out.push(`      - ${x}`);
    }
    if (f.versionNote) out.push(`    Note: ${f.versionNote}`);
    out.push(`    (${f.entryId}; ${f.source})`);
  }
  return out.join("\n");
}

export function renderText(result: ExplainResult): string {
  const { primary, findings } = result;
  if (!primary) {
    return "No known Nix remote-build problem was recognised in this log.\n";
  }
  const parts: string[] = [];
  parts.push(`Cause: ${primary.cause} — ${primary.title}`);
  parts.push(renderFinding(primary, true));
  const others = findings.filter((f) => !f.primary);
  if (others.length > 0) {
    parts.push("");
    parts.push(
      primary.generic
        ? "Other findings:"
        : "Other findings (later lines are usually consequences of the cause above):",
    );
    for (const f of others) parts.push(renderFinding(f, false));
  }
  return `${parts.join("\n")}\n`;
}

/** The command's logic, separated from commander for tests. Returns the exit status. */
export async function runExplain(
  file: string | undefined,
  opts: ExplainCommandOptions,
  io: Io,
  input: ExplainInput = processInput,
): Promise<number> {
  let version = null;
  if (opts.nixVersion !== undefined) {
    version = parseNixVersion(opts.nixVersion);
    if (!version)
      throw new UsageError(`--nix-version: not a version: '${opts.nixVersion}' (expected X.Y, e.g. 2.8)`);
  } else if (opts.from !== undefined) {
    version = readBundle(opts.from).nix.install?.version ?? null;
  }
  let text: string;
  if (file === undefined || file === "-") {
    text = await input.readStdin();
  } else {
    try {
      text = await input.readFile(file);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new Refusal(`${file}: ${code ? errnoText(code) : e instanceof Error ? e.message : String(e)}`, {
        path: file,
      });
    }
  }
  const result = explainLog(text, { version });
  if (opts.json) {
    io.out(json({ primary: result.primary, findings: result.findings }));
  } else {
    io.out(renderText(result));
  }
  return result.primary ? EXIT.ok : EXIT.warnings;
}

export function register(program: Command, io: Io): void {
  program
    .command("explain")
    .description(
      "Explain a Nix build log (any Nix from 2.8; plain, coloured or internal-json): the root cause of a remote-build failure and how to fix it.",
    )
    .argument("[file]", "the log file; '-' or nothing reads stdin")
    .option("--json", "print {primary, findings} as JSON")
    .option(
      "--from <file>",
      "the log is from the machine of this report: follow its Nix version (docs/report.md)",
    )
    .option(
      "--nix-version <x.y>",
      "the Nix version that produced the log (notes wording from other versions; texts checked against real Nix 2.8 and 2.30, others modelled)",
    )
    .addHelpText(
      "after",
      "\nExit status: 0 a cause was found and explained, 1 nothing recognised, 2 the file cannot be read, 64 usage error.\n\nExample:\n  nix-build … 2>&1 | nix-builders explain\n",
    )
    .action(async (file: string | undefined, opts: ExplainCommandOptions) => {
      try {
        process.exitCode = await runExplain(file, opts, io);
      } catch (e) {
        if (e instanceof UsageError) {
          io.err(`nix-builders explain: ${e.message}\n`);
          process.exitCode = EXIT.usage;
          return;
        }
        throw e;
      }
    });
}
