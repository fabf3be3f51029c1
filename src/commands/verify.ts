import { randomBytes } from "node:crypto";
import { accessSync, constants } from "node:fs";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import type { Command } from "commander";
import { type AgentSelection, selectAgent } from "../app/agent-select.js";
import { systemBuilders } from "../app/system-builders.js";
import type { TargetOptions } from "../app/use-state.js";
import { type UserView, userView } from "../app/view.js";
import { readBounded } from "../host/fs-reader.js";
import { startAs } from "../host/run-as.js";
import { type BuildLogSummary, humanLine, parseBuildLog, type TimedLine } from "../nix/build-log.js";
import { selectMachines } from "../nix/conf-edit.js";
import { explainLog } from "../nix/explain.js";
import type { Machine } from "../nix/machines.js";
import { machinesForPrintedUri, printsAs } from "../nix/store-uri.js";
import { formatNixVersion } from "../nix/version.js";
import { type Proc, startProc } from "../os/proc.js";
import { EXIT, type Io, json, UsageError } from "./io.js";

export interface VerifyOptions extends TargetOptions {
  system?: string;
  builder?: string;
  builderProgram?: string;
  nixpkgs?: boolean;
  timeout?: string;
  json?: boolean;
  quiet?: boolean;
}

export interface VerifyResult {
  ok: boolean;
  user: string;
  system: string;
  drvPath: string | null;
  builtOn: string | null;
  /** The machines-file URI(s) Nix means by `builtOn` (2.23+ prints `/tmp/m` as `local:///tmp/m`). */
  builtOnMachines: string[];
  phases: { name: string; ms: number }[];
  cause: string | null;
  message: string | null;
  fix: string[];
  pinned: string | null;
  program: string;
  exitCode: number | null;
  outPath: string | null;
  totalMs: number;
  log: string;
}

/** ` (machines line: /tmp/m)` when Nix printed the machine otherwise than the machines file writes it. */
function asWritten(r: VerifyResult): string {
  const other = r.builtOnMachines.filter((u) => u !== r.builtOn);
  return other.length > 0 && other.length === r.builtOnMachines.length
    ? ` (machines line: ${other.join(", ")})`
    : "";
}

/** A Nix string literal. */
export function nixStr(s: string): string {
  return `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\$\{/g, "\\${")}"`;
}

const SYSTEM_RE = /^[A-Za-z0-9_.+-]+-[A-Za-z0-9_.+-]+$/;

/**
 * The Nix expression verify builds. A store path as the program becomes a real input (via
 * builtins.storePath), so Nix copies it to the builder; a busybox binary is called as `busybox sh`.
 */
export function verifyExpr(i: { system: string; nonce: string; program: string; nixpkgs: boolean }): string {
  if (!SYSTEM_RE.test(i.system)) throw new UsageError(`not a Nix system: '${i.system}'`);
  if (i.nixpkgs) {
    return `with import <nixpkgs> { system = ${nixStr(i.system)}; }; hello.overrideAttrs (o: { n = ${nixStr(i.nonce)}; })`;
  }
  if (!i.program.startsWith("/"))
    throw new UsageError(`--builder-program must be an absolute path: '${i.program}'`);
  const store = /^(\/nix\/store\/[0-9a-z]{32}-[^/]+)(\/.*)?$/.exec(i.program);
  const builder = store
    ? `"\${builtins.storePath ${nixStr(store[1]!)}}${(store[2] ?? "").replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\$\{/g, "\\${")}"`
    : nixStr(i.program);
  const script = `echo nix-builders-verify ${i.nonce} > $out`;
  const args = path.basename(i.program) === "busybox" ? ["sh", "-c", script] : ["-c", script];
  return (
    `derivation { name = ${nixStr(`nix-builders-verify-${i.nonce}`)}; system = ${nixStr(i.system)};` +
    ` builder = ${builder}; args = [ ${args.map(nixStr).join(" ")} ]; nonce = ${nixStr(i.nonce)}; }`
  );
}

/** Pick the system to test: the flag, the pinned builder's first system, or a builder system we are not. */
export function chooseSystem(opts: { system?: string }, pinned: Machine | null, v: UserView): string {
  if (opts.system) return opts.system;
  if (pinned) return pinned.systemTypes[0] ?? v.hookSystem;
  for (const m of v.machines.machines) for (const s of m.systemTypes) if (s !== v.hookSystem) return s;
  return v.machines.machines[0]?.systemTypes[0] ?? v.hookSystem;
}

function nixBuildPath(v: UserView): string {
  if (v.nix) {
    const p = path.join(v.nix.binDir, "nix-build");
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // fall through to PATH
    }
  }
  return "nix-build";
}

/** Classify a failure. Uses the explain knowledge base; swap here if that changes. */
export function classify(log: string, v: UserView): { cause: string; message: string; fix: string[] } | null {
  const r = explainLog(log, { version: v.version });
  if (!r.primary) return null;
  return { cause: r.primary.cause, message: r.primary.summary, fix: r.primary.fix };
}

interface RunOutcome {
  lines: TimedLine[];
  stdout: string;
  code: number | null;
  timedOut: boolean;
  totalMs: number;
}

/** Run the build through the one subprocess helper, its stderr split into timed lines as they come. */
async function runStreaming(
  start: (opts: { deadlineMs: number; onStderr: (b: Buffer) => void }) => Proc,
  timeoutMs: number,
  onLine: (l: TimedLine) => void,
): Promise<RunOutcome> {
  const t0 = performance.now();
  const lines: TimedLine[] = [];
  let partial = "";
  const emit = (text: string) => {
    const l = { t: performance.now() - t0, text };
    lines.push(l);
    onLine(l);
  };
  const r = await start({
    deadlineMs: timeoutMs,
    onStderr: (b) => {
      partial += b.toString("utf8");
      let nl = partial.indexOf("\n");
      while (nl >= 0) {
        emit(partial.slice(0, nl));
        partial = partial.slice(nl + 1);
        nl = partial.indexOf("\n");
      }
    },
  }).done;
  if (r.spawnError) throw r.spawnError;
  if (partial !== "") emit(partial);
  return { lines, stdout: r.stdout, code: r.code, timedOut: r.timedOut, totalMs: performance.now() - t0 };
}

function findPinned(name: string, v: UserView): Machine {
  const own = selectMachines(v.machines.machines, [name]).chosen;
  if (own.length > 0) return own[0]!;
  const sys = systemBuilders(v).result.machines;
  const m = selectMachines(sys, [name]).chosen;
  if (m.length > 0) return m[0]!;
  const known = [...v.machines.machines, ...sys].map((x) => x.storeUri);
  throw new UsageError(
    `--builder ${name}: no such builder (known: ${known.length ? [...new Set(known)].join(", ") : "none"})`,
  );
}

type Verdict = { cause: string; message: string; fix: string[] };

/** What the daemon will ignore of this user's builders (decided before the build: Nix 2.8 says it only at -vvvv). */
function untrustedVerdict(v: UserView, pinned: Machine | null): Verdict | null {
  const daemonUntrusted = v.storeMode === "daemon" && !v.trusted;
  const ignoredBuilders = v.ignored.find((i) => i.setting === "builders");
  if (!daemonUntrusted || !(pinned || ignoredBuilders)) return null;
  return {
    cause: "local-untrusted",
    message:
      `the nix-daemon does not trust ${v.user.name} (${v.trustReason}), so it ignores the builders ` +
      `${pinned ? "--builder passes" : `${v.user.name} sets (${ignoredBuilders?.value})`} and uses its own ` +
      `(${v.builders.value || "none"}) instead.`,
    fix: [
      `Add ${v.user.name} to trusted-users in /etc/nix/nix.conf (NixOS: nix.settings.trusted-users) and restart nix-daemon.`,
      "Or configure the builders where the daemon reads them: /etc/nix/machines (NixOS: nix.buildMachines).",
    ],
  };
}

/** The build's output holds the nonce (a builder made it: read bounded, a regular file only). */
function outputHoldsNonce(
  code: number | null,
  outPath: string | null,
  nonce: string,
  nixpkgs: boolean,
): boolean {
  if (code !== 0) return false;
  if (!outPath || nixpkgs) return true;
  try {
    const r = readBounded(outPath);
    return r.ok && r.text.includes(nonce);
  } catch {
    return false;
  }
}

/** Why the build does not prove a remote build on the right builder, or null when it does. */
function judgeBuild(
  b: {
    outcome: { code: number | null; timedOut: boolean };
    timeoutMs: number;
    log: string;
    summary: BuildLogSummary;
    pinned: Machine | null;
    outputOk: boolean;
    outPath: string | null;
  },
  v: UserView,
): Verdict | null {
  if (b.outcome.timedOut)
    return {
      cause: "timeout",
      message: `no result after ${b.timeoutMs / 1000}s`,
      fix: ["Look at the log above for the step that hangs; --timeout gives it longer."],
    };
  if (b.outcome.code !== 0)
    return (
      classify(b.log, v) ?? {
        cause: "build-failed",
        message: `nix-build exited with ${b.outcome.code}`,
        fix: [],
      }
    );
  const builtOn = b.summary.builtOn;
  if (builtOn === null)
    return {
      cause: "not-remote",
      message: "the build finished, but Nix's log names no remote machine",
      fix: [],
    };
  if (b.pinned && !printsAs(b.pinned.storeUri, builtOn, v.version))
    return {
      cause: "wrong-builder",
      message: `built on ${builtOn}, not on the pinned ${b.pinned.storeUri}`,
      fix: [],
    };
  if (!b.outputOk)
    return { cause: "build-failed", message: `the output ${b.outPath} does not hold the nonce`, fix: [] };
  return null;
}

function verifyText(result: VerifyResult, user: string): string {
  let t = result.ok
    ? `\nOK: ${result.drvPath} was built on ${result.builtOn}${asWritten(result)} for ${user}.\n`
    : `\nFAILED (${result.cause}): ${result.message}\n`;
  if (!result.ok && result.builtOn) t += `  Nix built it on ${result.builtOn}.\n`;
  if (result.phases.length)
    t += `  ${result.phases.map((p) => `${p.name} ${(p.ms / 1000).toFixed(2)}s`).join(", ")}; total ${(result.totalMs / 1000).toFixed(2)}s\n`;
  for (const f of result.fix) t += `  fix: ${f}\n`;
  return t;
}

export async function runVerify(opts: VerifyOptions, io: Io): Promise<number> {
  if (opts.system && opts.builder === undefined && !SYSTEM_RE.test(opts.system))
    throw new UsageError(`--system: not a Nix system: '${opts.system}'`);
  const sel: AgentSelection | null = selectAgent(opts);
  if (sel && opts.user && opts.user !== sel.user)
    throw new UsageError(`--user ${opts.user} and --agent (user ${sel.user}) name different users`);
  const userName = sel ? sel.user : opts.user;
  const v = await userView({
    user: userName,
    nixVersion: opts.nixVersion,
    env: io.env,
    ...(sel ? { userEnv: sel.userEnv, clientOverrides: sel.overrides } : {}),
  });
  const pinned = opts.builder !== undefined ? findPinned(opts.builder, v) : null;
  const system = chooseSystem(opts, pinned, v);
  const program = opts.builderProgram ?? "/bin/sh";
  const nonce = `${Date.now().toString(36)}-${randomBytes(6).toString("hex")}`;
  const expr = verifyExpr({ system, nonce, program, nixpkgs: Boolean(opts.nixpkgs) });
  const timeoutMs = Math.max(1, Number(opts.timeout ?? "600")) * 1000;

  const pre = untrustedVerdict(v, pinned);

  const argv = [nixBuildPath(v), "--no-out-link", "--log-format", "internal-json"];
  for (const o of sel?.overrides ?? []) argv.push("--option", o.name, o.value);
  if (pinned) argv.push("--builders", pinned.row.trim());
  argv.push("--max-jobs", "0", "-E", expr);

  if (!opts.json && !opts.quiet) {
    io.err(
      `verify: building a new ${system} derivation as ${v.user.name}${pinned ? ` on ${pinned.storeUri} only` : ""}` +
        ` (Nix ${formatNixVersion(v.version)}, ${sel ? `${sel.overrides.length} agent nixSettings as --option, ` : ""}--max-jobs 0)\n`,
    );
  }
  const id =
    userName === undefined
      ? null
      : { name: v.user.name, uid: v.user.uid, gid: v.user.gid, home: v.user.home, shell: v.user.shell };
  const start = (o: { deadlineMs: number; onStderr: (b: Buffer) => void }): Proc =>
    id !== null
      ? startAs(id, argv, { ...o, env: sel?.userEnv ?? {} })
      : startProc(argv, { ...o, env: io.env, cwd: process.cwd() });
  const outcome = await runStreaming(start, timeoutMs, (l) => {
    if (opts.json || opts.quiet) return;
    const h = humanLine(l.text);
    if (h !== null) io.err(`  ${h}\n`);
  });
  const summary: BuildLogSummary = parseBuildLog(outcome.lines);
  const log = summary.text.join("\n");
  const outPath = outcome.stdout.trim().split("\n").pop() || null;

  const outputOk = outputHoldsNonce(outcome.code, outPath, nonce, Boolean(opts.nixpkgs));
  const verdict = pre ?? judgeBuild({ outcome, timeoutMs, log, summary, pinned, outputOk, outPath }, v);

  const result: VerifyResult = {
    ok: verdict === null,
    user: v.user.name,
    system,
    drvPath: summary.drvPath,
    builtOn: summary.builtOn,
    builtOnMachines:
      summary.builtOn === null
        ? []
        : [
            ...new Set(
              machinesForPrintedUri(
                summary.builtOn,
                [...v.machines.machines, ...(pinned ? [pinned] : [])],
                v.version,
              ).map((m) => m.storeUri),
            ),
          ],
    phases: summary.phases.map((p) => ({ name: p.name, ms: Math.round(p.ms) })),
    cause: verdict?.cause ?? null,
    message: verdict?.message ?? null,
    fix: verdict?.fix ?? [],
    pinned: pinned?.storeUri ?? null,
    program: opts.nixpkgs ? "<nixpkgs> hello" : program,
    exitCode: outcome.code,
    outPath,
    totalMs: Math.round(outcome.totalMs),
    log,
  };
  if (opts.json) io.out(json(result));
  else io.out(verifyText(result, v.user.name));
  return result.ok ? EXIT.ok : EXIT.errors;
}

export function register(program: Command, io: Io, exit: (code: number) => void): void {
  program
    .command("verify")
    .description("build a new derivation as the user (or the agent) and show which builder built it")
    .option("--user <name>", "build as this user, with a service's clean environment")
    .option("--agent [name]", "build as the hercules-ci-agent service's user, with its nixSettings")
    .option("--agent-config <file>", "the hercules-ci-agent configuration file, when no service names it")
    .option(
      "--system <system>",
      "the system to build for (default: a system of the builders that is not ours)",
    )
    .option("--builder <name>", "use only this builder (host, user@host or store URI); implies --max-jobs 0")
    .option(
      "--builder-program <path>",
      "the shell the derivation runs (default /bin/sh; a busybox works too)",
    )
    .option("--nixpkgs", "build the guide's own check, <nixpkgs>' hello with a nonce (needs <nixpkgs>)")
    .option("--timeout <seconds>", "give up after this long (default 600)")
    .option(
      "--nix-version <X.Y>",
      "follow this Nix version's rules instead of the installed Nix's (checked against real Nix 2.8 and 2.30; other versions modelled from the Nix sources, see docs/nix-versions.md)",
    )
    .option("--quiet", "do not stream the log")
    .option("--json", "print one JSON document")
    .action(async (opts: VerifyOptions) => exit(await runVerify(opts, io)));
}
