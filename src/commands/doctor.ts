/**
 * `nix-builders doctor [--user U | --agent] [--builder NAME]... [--json] [--timeout S]`: test every link
 * from a user to each builder the way Nix really connects, and explain every failure. See docs/doctor.md.
 * Exit 0 when every check passes, 1 on warnings, 2 on failures.
 */
import type { Command } from "commander";
import { selectAgent } from "../app/agent-select.js";
import { doctor } from "../app/doctor/doctor.js";
import { onInterrupt } from "../app/doctor/interrupt.js";
import { reportJson, reportText } from "../app/doctor/report.js";
import { EXIT, type Io, json, UsageError } from "./io.js";

export interface DoctorCommandOptions {
  user?: string;
  agent?: boolean | string;
  agentConfig?: string;
  /** Root for agent discovery (tests); default "/". */
  agentRoot?: string;
  builder?: string[];
  json?: boolean;
  timeout?: string;
  jobs?: string;
  slowMs?: string;
  nixVersion?: string;
  verbose?: boolean;
  /** The global --debug: keep the stack trace of a check that threw. */
  debug?: boolean;
}

function positive(name: string, v: string | undefined, dflt: number, max: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${name}: not a positive number: '${v}'`);
  // Node's timers take at most 2^31-1 ms and fire at once beyond it.
  if (n > max) throw new UsageError(`${name}: at most ${max}: '${v}'`);
  return n;
}

export async function runDoctor(opts: DoctorCommandOptions, io: Io): Promise<number> {
  if (opts.user !== undefined && (opts.agent || opts.agentConfig))
    throw new UsageError("--user and --agent exclude each other");
  // The same instance `show --agent` and `verify --agent` pick. With a bare --agent and no service
  // definition anywhere, the doctor still runs, as user hercules-ci-agent, and says so.
  const agent = selectAgent(opts, { orNone: true });
  const agentFallback = opts.agent === true && agent === null;
  const timeoutSec = positive("--timeout", opts.timeout, 10, 3600);
  const concurrency = Math.floor(positive("--jobs", opts.jobs, 16, 1024));
  const slowMs = positive("--slow-ms", opts.slowMs, 5000, 3_600_000);
  const progress = io.isTTY && !opts.json;
  // Belt and braces for "never hangs": every step has its own deadline, so this only fires on a bug.
  const watchdogMs = (timeoutSec * 6 + 30) * 1000;
  const watchdog = setTimeout(() => {
    const message = `doctor gave up after ${watchdogMs / 1000} s (internal deadline; this is a bug)`;
    io.err(`nix-builders: internal error: ${message}\n`);
    if (opts.json) io.out(json({ error: { kind: "internal", message, exitCode: EXIT.internal } }));
    process.exit(EXIT.internal);
  }, watchdogMs);
  watchdog.unref();
  // Ctrl-C or a CI timeout: the ssh sessions run in their own process groups and would outlive us.
  const offInterrupt = onInterrupt(
    (line) => io.err(`${progress ? "\r\x1b[K" : ""}${line}`),
    (code) => process.exit(code),
  );
  if (progress) io.err("doctor: local checks…");
  let report: Awaited<ReturnType<typeof doctor>>;
  try {
    report = await doctor({
      ...(opts.user !== undefined ? { user: opts.user } : {}),
      ...(agent ? { agent } : {}),
      ...(agentFallback ? { agentFallback } : {}),
      ...(opts.builder?.length ? { builders: opts.builder } : {}),
      ...(opts.nixVersion !== undefined ? { nixVersion: opts.nixVersion } : {}),
      ...(opts.debug ? { debug: true } : {}),
      timeoutSec,
      concurrency,
      slowMs,
      env: io.env,
      ...(progress
        ? {
            onProgress: (d: number, t: number, b: string | null) =>
              io.err(`\r\x1b[Kdoctor: ${d}/${t} builders checked${b === null ? "" : ` (last: ${b})`}`),
          }
        : {}),
    });
  } finally {
    offInterrupt();
  }
  clearTimeout(watchdog);
  if (progress) io.err("\r\x1b[K");
  io.out(opts.json ? json(reportJson(report)) : reportText(report, { verbose: opts.verbose ?? false }));
  return report.summary.exitCode;
}

export function register(program: Command, io: Io, exit: (code: number) => void): void {
  program
    .command("doctor")
    .description("test every link from a user to each builder, the way Nix connects, and explain failures")
    .option("--user <name>", "check as this user (a service's clean environment)")
    .option(
      "--agent [name]",
      "check as the hercules-ci-agent service (its user, environment and nixSettings), and check the agent",
    )
    .option(
      "--agent-config <file>",
      "the hercules-ci-agent configuration file, when no service definition names it",
    )
    .option(
      "--builder <name>",
      "only this builder (store URI, user@host or host); repeatable",
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option("--json", "print one JSON document")
    .option("--timeout <seconds>", "deadline for each network step and each ssh session (default 10)")
    .option("--jobs <n>", "builders checked at once (default 16)")
    .option("--slow-ms <ms>", "warn when ssh + handshake take longer (default 5000)")
    .option(
      "--nix-version <X.Y>",
      "follow this Nix version's rules instead of the installed Nix's (checked against real Nix 2.8 and 2.30; other versions modelled from the Nix sources, see docs/nix-versions.md)",
    )
    .option("--verbose", "show evidence for passing checks too")
    .action(async (opts: DoctorCommandOptions) =>
      exit(await runDoctor({ ...opts, debug: program.opts()["debug"] === true }, io)),
    );
}
