/**
 * `nix-builders verify [--user U | --agent] [--system S | --builder NAME] [--builder-program PATH]
 *   [--nixpkgs] [--timeout SECONDS] [--json]`: the guide's check, automated.
 *
 * As the user (its uid, groups, passwd home and a service's clean environment, the agent's own environment
 * when known; never a login shell), build a derivation nobody has built before (a nonce) for the target
 * system, with the agent's nixSettings as `--option`s and `--max-jobs 0`, so that only a remote builder
 * can build it. The log streams as it comes; then we say which machine built it (Nix's own
 * `building '<drv>' on '<machine>'`, internal-json activity 105), how long connect, upload, build and
 * download took, and on failure why (src/nix/explain.ts).
 *
 * The builder program defaults to `/bin/sh -c 'echo … > $out'`: no nixpkgs needed, and it is there on
 * macOS builders and on Linux builders without a sandbox. A Linux builder with `sandbox = true` has
 * `/bin/sh` inside the sandbox only when its Nix was built with a sandbox shell (NixOS and the official
 * installer's Nix are; some distribution packages are not): there, pass `--builder-program` with a shell
 * from the store (e.g. a static busybox), which Nix then uploads with the build.
 */
import type { ChildProcess } from "node:child_process";
import { spawn } from "node:child_process";
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
import { killGroup, spawnAs } from "../host/run-as.js";
import { type BuildLogSummary, humanLine, parseBuildLog, type TimedLine } from "../nix/build-log.js";
import { selectMachines } from "../nix/conf-edit.js";
import { explainLog } from "../nix/explain.js";
import type { Machine } from "../nix/machines.js";
import { formatNixVersion } from "../nix/version.js";
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

function runStreaming(
  child: ChildProcess,
  timeoutMs: number,
  onLine: (l: TimedLine) => void,
): Promise<RunOutcome> {
  const t0 = performance.now();
  const lines: TimedLine[] = [];
  let partial = "";
  let stdout = "";
  let timedOut = false;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child, "SIGTERM");
      setTimeout(() => killGroup(child, "SIGKILL"), 2000).unref();
    }, timeoutMs);
    child.stdout?.on("data", (b: Buffer) => {
      stdout += b.toString("utf8");
    });
    child.stderr?.on("data", (b: Buffer) => {
      const t = performance.now() - t0;
      partial += b.toString("utf8");
      let nl = partial.indexOf("\n");
      while (nl >= 0) {
        const l = { t, text: partial.slice(0, nl) };
        lines.push(l);
        onLine(l);
        partial = partial.slice(nl + 1);
        nl = partial.indexOf("\n");
      }
    });
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      const t = performance.now() - t0;
      if (partial !== "") {
        const l = { t, text: partial };
        lines.push(l);
        onLine(l);
      }
      resolve({ lines, stdout, code, timedOut, totalMs: t });
    });
  });
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

  // What the daemon will ignore of this user's builders (decided before the build: Nix 2.8 says it only at -vvvv).
  const daemonUntrusted = v.storeMode === "daemon" && !v.trusted;
  const ignoredBuilders = v.ignored.find((i) => i.setting === "builders");
  let pre: { cause: string; message: string; fix: string[] } | null = null;
  if (daemonUntrusted && (pinned || ignoredBuilders)) {
    pre = {
      cause: "local-untrusted",
      message:
        `the nix-daemon does not trust ${v.user.name} (${v.trustReason}), so it ignores the builders ` +
        `${pinned ? "--builder passes" : `${v.user.name} sets (${ignoredBuilders!.value})`} and uses its own ` +
        `(${v.builders.value || "none"}) instead.`,
      fix: [
        `Add ${v.user.name} to trusted-users in /etc/nix/nix.conf (NixOS: nix.settings.trusted-users) and restart nix-daemon.`,
        "Or configure the builders where the daemon reads them: /etc/nix/machines (NixOS: nix.buildMachines).",
      ],
    };
  }

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
  let child: ChildProcess;
  if (userName !== undefined) {
    const id = {
      name: v.user.name,
      uid: v.user.uid,
      gid: v.user.gid,
      home: v.user.home,
      shell: v.user.shell,
    };
    child = spawnAs(id, argv, { env: sel?.userEnv ?? {} });
  } else {
    child = spawn(argv[0]!, argv.slice(1), {
      env: io.env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
      shell: false,
    });
  }
  const outcome = await runStreaming(child, timeoutMs, (l) => {
    if (opts.json || opts.quiet) return;
    const h = humanLine(l.text);
    if (h !== null) io.err(`  ${h}\n`);
  });
  const summary: BuildLogSummary = parseBuildLog(outcome.lines);
  const log = summary.text.join("\n");
  const outPath = outcome.stdout.trim().split("\n").pop() || null;

  let outputOk = false;
  if (outcome.code === 0 && outPath && !opts.nixpkgs) {
    try {
      const r = readBounded(outPath); // a builder made this output: bounded, a regular file only
      outputOk = r.ok && r.text.includes(nonce);
    } catch {
      outputOk = false;
    }
  } else if (outcome.code === 0) outputOk = true;

  let verdict: { cause: string; message: string; fix: string[] } | null = pre;
  if (verdict === null && outcome.timedOut)
    verdict = {
      cause: "timeout",
      message: `no result after ${timeoutMs / 1000}s`,
      fix: ["Look at the log above for the step that hangs; --timeout gives it longer."],
    };
  if (verdict === null && outcome.code !== 0)
    verdict = classify(log, v) ?? {
      cause: "build-failed",
      message: `nix-build exited with ${outcome.code}`,
      fix: [],
    };
  if (verdict === null && summary.builtOn === null)
    verdict = {
      cause: "not-remote",
      message: "the build finished, but Nix's log names no remote machine",
      fix: [],
    };
  if (verdict === null && pinned && summary.builtOn !== pinned.storeUri)
    verdict = {
      cause: "wrong-builder",
      message: `built on ${summary.builtOn}, not on the pinned ${pinned.storeUri}`,
      fix: [],
    };
  if (verdict === null && !outputOk)
    verdict = { cause: "build-failed", message: `the output ${outPath} does not hold the nonce`, fix: [] };

  const result: VerifyResult = {
    ok: verdict === null,
    user: v.user.name,
    system,
    drvPath: summary.drvPath,
    builtOn: summary.builtOn,
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
  else {
    let t = result.ok
      ? `\nOK: ${result.drvPath} was built on ${result.builtOn} for ${v.user.name}.\n`
      : `\nFAILED (${result.cause}): ${result.message}\n`;
    if (!result.ok && result.builtOn) t += `  Nix built it on ${result.builtOn}.\n`;
    if (result.phases.length)
      t += `  ${result.phases.map((p) => `${p.name} ${(p.ms / 1000).toFixed(2)}s`).join(", ")}; total ${(result.totalMs / 1000).toFixed(2)}s\n`;
    for (const f of result.fix) t += `  fix: ${f}\n`;
    io.out(t);
  }
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
    .option("--nix-version <X.Y>", "follow this Nix version's rules instead of the installed Nix's")
    .option("--quiet", "do not stream the log")
    .option("--json", "print one JSON document")
    .action(async (opts: VerifyOptions) => exit(await runVerify(opts, io)));
}
