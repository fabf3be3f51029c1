/**
 * `nix-builders show [--user NAME] [--builders SPEC] [--nix-version X.Y] [--json]`: the builders a
 * user's builds really get, where they come from, whether the daemon trusts the user and why, and
 * which of the user's settings the daemon ignores.
 */
import type { Command } from "commander";
import { type AgentReport, agentCaches, agentReport, renderTaskSettings } from "../app/agent-checks.js";
import { type AgentOptions, type AgentSelection, selectAgent } from "../app/agent-select.js";
import { fromBundle } from "../app/report.js";
import { type UserView, userView, viewErrors } from "../app/view.js";
import { closeReaders } from "../host/fs-reader.js";
import { filterAnsiEscapes, indentLines, nixErrorDisplay } from "../nix/display.js";
import type { Machine } from "../nix/machines.js";
import { formatOrigin } from "../nix/origin.js";
import { formatNixVersion } from "../nix/version.js";
import { EXIT, type Io, json, UsageError } from "./io.js";
import { originJson, originsText, plural, table } from "./render.js";

export interface ShowOptions extends AgentOptions {
  user?: string;
  /** --from FILE: answer from a report (docs/report.md) instead of this machine. */
  from?: string;
  builders?: string;
  nixVersion?: string;
  json?: boolean;
}

export function machineJson(m: Machine): Record<string, unknown> {
  return {
    storeUri: m.storeUri,
    systemTypes: m.systemTypes,
    sshKey: m.sshKey,
    maxJobs: m.maxJobs,
    speedFactor: m.speedFactor,
    supportedFeatures: m.supportedFeatures,
    mandatoryFeatures: m.mandatoryFeatures,
    sshPublicHostKey: m.sshPublicHostKey,
    origin: { file: m.origin.file, line: m.origin.line },
  };
}

export function showJson(v: UserView): Record<string, unknown> {
  return {
    nixVersion: formatNixVersion(v.version),
    user: v.user.name,
    storeMode: v.storeMode,
    trusted: v.trusted,
    trustReason: v.trustReason,
    allowed: v.verdict ? v.verdict.allowed : true,
    hookUser: v.hookUser.name,
    builders: { value: v.builders.value, from: v.builders.from, origin: v.builders.origin.map(originJson) },
    ignored: v.ignored.map((i) => ({
      setting: i.setting,
      value: i.value,
      origin: originJson(i.origin),
      why: i.why,
      nixMessage: i.nixMessage,
      shownByDefault: i.shownByDefault,
    })),
    includes: v.machines.includes.map((i) => ({
      path: i.resolved,
      found: i.found,
      from: i.from,
      ...(i.problem === undefined ? {} : { problem: i.problem }),
    })),
    machines: v.machines.machines.map(machineJson),
    errors: viewErrors(v).map(({ message, file, line }) => ({
      message,
      file,
      line,
      displayed: nixErrorDisplay(message),
    })),
    ...(v.versionNote ? { nixVersionNote: v.versionNote } : {}),
  };
}

function renderShow(v: UserView): string {
  let out = `Nix ${formatNixVersion(v.version)} rules (${v.versionSource}) · user ${v.user.name} (uid ${v.user.uid})\n`;
  if (v.versionNote) out += `  note: ${v.versionNote}\n`;
  if (v.storeMode === "daemon") {
    const verdict = v.verdict!;
    out += `Daemon: ${verdict.allowed ? (v.trusted ? "trusted" : "allowed, not trusted") : "REFUSED"} — ${v.trustReason}\n`;
    if (verdict.refusalMessage) out += `  the daemon says: ${verdict.refusalMessage}\n`;
  } else {
    out += `Store: ${v.trustReason}\n`;
  }
  out += `Builds are sent out by the build hook running as ${v.hookUser.name}; ssh uses ${v.hookUser.name}'s keys and known_hosts.\n`;
  out += `\nbuilders = ${v.builders.value === "" ? '""' : v.builders.value}\n`;
  out += `  from the ${v.builders.from === "daemon" ? "daemon's configuration" : "user's configuration"}: ${originsText(v.builders.origin)}\n`;
  for (const inc of v.machines.includes) {
    const state = inc.problem
      ? `${inc.found ? "" : `unreadable for ${v.hookUser.name}: `}${inc.problem}`
      : inc.found
        ? "read"
        : "not found (Nix skips it silently)";
    out += `  @${inc.resolved}: ${state}\n`;
  }
  if (v.ignored.length) {
    out += `\nIgnored by the daemon for ${v.user.name}:\n`;
    for (const i of v.ignored) {
      out += `  ${i.setting} = ${i.value}  (${formatOrigin(i.origin)})\n    ${i.why}\n`;
      if (i.nixMessage)
        out += `    Nix says${i.shownByDefault ? "" : " (only with -vvvv)"}: ${filterAnsiEscapes(i.nixMessage)}\n`;
      else out += "    Nix says nothing about it.\n";
    }
  }
  const ms = v.machines.machines;
  out += `\n${plural(ms.length, "machine")}:\n`;
  out += table(
    ms.map((m) => [
      m.storeUri,
      m.systemTypes.join(",") || "-",
      `jobs ${m.maxJobs}`,
      `speed ${m.speedFactor}`,
      `features ${m.supportedFeatures.join(",") || "-"}`,
      `mandatory ${m.mandatoryFeatures.join(",") || "-"}`,
      m.sshKey ? `key ${m.sshKey}` : "no key",
      m.sshPublicHostKey ? "host key pinned" : "host key from known_hosts",
      m.origin.file ? `${m.origin.file}:${m.origin.line}` : "",
    ]),
  );
  const errors = viewErrors(v);
  if (errors.length) {
    out += "\nNix stops every build with:\n";
    for (const e of errors)
      out += `${indentLines(nixErrorDisplay(e.message), "  ")}${e.file ? `  (${e.file}${e.line ? `:${e.line}` : ""})` : ""}\n`;
  }
  return out;
}

export function agentJson(sel: AgentSelection, r: AgentReport): Record<string, unknown> {
  return {
    name: sel.agent.name,
    kind: sel.agent.kind,
    definitionFile: sel.agent.definitionFile,
    configFile: sel.agent.configFile,
    user: sel.user,
    nixUserIsTrusted: sel.config?.config?.nixUserIsTrusted ?? null,
    nixSettings: sel.config?.config?.nixSettings ?? {},
    advertisedPlatforms: r.advertisement.platforms,
    advertisedFeatures: r.advertisement.systemFeatures,
    taskNixSettings: r.taskNixSettings ?? null,
    nativeOffload: r.nativeOffload ?? null,
    findings: r.findings,
    otherInstances: sel.others,
    running:
      sel.runtime?.pid == null
        ? null
        : { pid: sel.runtime.pid, startedAt: sel.runtime.startedAt?.toISOString() ?? null },
  };
}

export function renderAgent(sel: AgentSelection, r: AgentReport): string {
  let out = `\nhercules-ci-agent ${sel.agent.name} (${sel.agent.kind}${sel.agent.definitionFile ? `: ${sel.agent.definitionFile}` : ""})\n`;
  out += `  config: ${sel.agent.configFile ?? "not found"} · user ${sel.user}`;
  out += ` · nixUserIsTrusted ${sel.config?.config?.nixUserIsTrusted ?? "?"}\n`;
  const rt = sel.runtime;
  if (rt?.pid != null)
    out += `  running: pid ${rt.pid}${rt.startedAt ? ` since ${rt.startedAt.toISOString()}` : ""}\n`;
  out += `  advertises platforms: ${r.advertisement.platforms.join(" ") || "-"}\n`;
  out += `  advertises features:  ${r.advertisement.systemFeatures.join(" ") || "-"}\n`;
  out += renderTaskSettings(r);
  if (r.nativeOffload)
    out += `  native ${r.nativeOffload.system} builds (${r.nativeOffload.op}): ${r.nativeOffload.outcome === "remote" ? "can go to the builders" : r.nativeOffload.outcome === "local" ? "build on this machine only" : "fail"}\n`;
  for (const f of r.findings) {
    out += `  ${f.severity}: ${f.message}\n`;
    if (f.fix) out += `    fix: ${f.fix}\n`;
  }
  return out;
}

/** The command; the user's reader helpers stop when it ends (no process of the user outlives it). */
export async function runShow(opts: ShowOptions, io: Io): Promise<number> {
  try {
    return await runShowInner(opts, io);
  } finally {
    closeReaders();
  }
}

async function runShowInner(opts: ShowOptions, io: Io): Promise<number> {
  if (opts.from !== undefined) {
    if (opts.agentConfig !== undefined)
      throw new UsageError("--from: --agent-config cannot be used with a report");
    const b = fromBundle(opts.from, opts);
    return printShow(opts, io, b.view, b.agent?.sel ?? null, b.agent?.report ?? null);
  }
  const sel = selectAgent(opts);
  if (sel && opts.user && opts.user !== sel.user)
    throw new UsageError(`--user ${opts.user} and --agent (user ${sel.user}) name different users`);
  const v = await userView({
    user: sel ? sel.user : opts.user,
    nixVersion: opts.nixVersion,
    builders: opts.builders,
    env: io.env,
    ...(sel ? { userEnv: sel.userEnv, clientOverrides: sel.overrides } : {}),
  });
  const caches = sel ? await agentCaches(sel) : undefined;
  const report = sel ? agentReport(v, sel, caches) : null;
  return printShow(opts, io, v, sel, report);
}

function printShow(
  opts: ShowOptions,
  io: Io,
  v: UserView,
  sel: AgentSelection | null,
  report: AgentReport | null,
): number {
  const code = viewErrors(v).length ? EXIT.errors : EXIT.ok;
  if (opts.json) {
    io.out(json({ ...showJson(v), ...(sel && report ? { agent: agentJson(sel, report) } : {}) }));
  } else {
    io.out(renderShow(v) + (sel && report ? renderAgent(sel, report) : ""));
  }
  return code;
}

export function register(program: Command, io: Io, exit: (code: number) => void): void {
  program
    .command("show")
    .description("the builders a user's builds really get, with origins and the daemon's trust verdict")
    .option("--user <name>", "compute the view of this user, with a service's clean environment")
    .option(
      "--agent [name]",
      "show the view of the hercules-ci-agent service (its user, environment and nixSettings)",
    )
    .option(
      "--agent-config <file>",
      "the hercules-ci-agent configuration file, when no service definition names it",
    )
    .option("--builders <spec>", "use this builders value, as Nix's --builders flag would (subject to trust)")
    .option(
      "--nix-version <X.Y>",
      "follow this Nix version's rules instead of the installed Nix's (checked against real Nix 2.8 and 2.30; other versions modelled from the Nix sources, see docs/nix-versions.md)",
    )
    .option("--from <file>", "answer from a report taken with `nix-builders report` (docs/report.md)")
    .option("--json", "print one JSON document")
    .action(async (opts: ShowOptions) => exit(await runShow(opts, io)));
}
