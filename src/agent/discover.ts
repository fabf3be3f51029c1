/**
 * Find hercules-ci-agent instances from their service definitions, without needing the service
 * manager: systemd unit files (with drop-ins) and launchd plists, read under an injectable root.
 * Optionally enrich a systemd instance with its running process (/proc, cgroup files).
 */

import { type AgentFinding, finding } from "./findings.js";
import { FsRoot, lookupPasswd, type PasswdEntry } from "./fsroot.js";
import { type AgentInstallMethod, guessInstallMethod } from "./install.js";
import { basename, isShell, type PlistValue, parsePlist, splitShellCommands } from "./launchd.js";
import {
  mergeServiceSettings,
  parseEnvironmentFile,
  parseExecCommand,
  parseUnitText,
  type ServiceSettings,
  type UnitEntry,
} from "./systemd.js";

/** systemd's system unit search path, highest priority first (systemd.unit(5)). */
export const SYSTEMD_UNIT_DIRS: readonly string[] = [
  "/etc/systemd/system",
  "/run/systemd/system",
  "/usr/local/lib/systemd/system",
  "/lib/systemd/system",
  "/usr/lib/systemd/system",
];

export const LAUNCHD_DAEMON_DIRS: readonly string[] = ["/Library/LaunchDaemons"];

export interface EnvEntry {
  readonly value: string;
  /** "file:line", "EnvironmentVariables (plist)", "systemd User= (passwd)", "/proc/<pid>/environ". */
  readonly source: string;
}

export interface DiscoveredAgent {
  readonly kind: "systemd" | "launchd" | "manual";
  /** Unit name, launchd Label, or "manual". */
  readonly name: string;
  /** systemd: "" for hercules-ci-agent.service, "foo" for hercules-ci-agent-foo.service; else null. */
  readonly instance: string | null;
  /** Host path of the unit file or plist. */
  readonly definitionFile: string | null;
  readonly dropIns: readonly string[];
  readonly user: string | null;
  readonly group: string | null;
  /** The user's /etc/passwd entry under the root, when found (not on macOS). */
  readonly passwd: PasswdEntry | null;
  readonly configFile: string | null;
  readonly agentExecutable: string | null;
  /** Version from the package path (/nix/store/…-hercules-ci-agent-0.10.8/…), when visible. */
  readonly agentVersionHint: string | null;
  readonly argv: readonly string[] | null;
  /** The environment the service definition gives the agent (not the full process environment). */
  readonly environment: Readonly<Record<string, EnvEntry>>;
  readonly environmentFiles: ReadonlyArray<{ path: string; optional: boolean; found: boolean }>;
  readonly workingDirectory: string | null;
  /** systemd PrivateDevices= (hides /dev/kvm); null when not set or not systemd. */
  readonly privateDevices: boolean | null;
  readonly installMethod: AgentInstallMethod;
  readonly findings: readonly AgentFinding[];
}

/** Environment variables that change what Nix or the agent reads. */
export function isNixRelevantEnv(name: string): boolean {
  return /^(HOME|USER|XDG_[A-Z_]+|NIX_[A-Z_]+|HERCULES_CI_API_BASE_URL|HERCULES_API_BASE_URL)$/.test(name);
}

export function nixRelevantEnvironment(env: Readonly<Record<string, EnvEntry>>): Record<string, EnvEntry> {
  return Object.fromEntries(Object.entries(env).filter(([k]) => isNixRelevantEnv(k)));
}

export interface DiscoverOptions {
  /** Root directory prefix for every file read ("/" by default). */
  readonly root?: string;
  /** Which service managers to look for; default: both (definitions are just files). */
  readonly managers?: ReadonlyArray<"systemd" | "launchd">;
  readonly unitDirs?: readonly string[];
  readonly launchdDirs?: readonly string[];
}

const VERSION_IN_PATH = /hercules-ci-agent-(\d+\.\d+(?:\.\d+)*)(?:[/-]|$)/;

// ---------------------------------------------------------------------------------------------
// Following a command line to the agent

interface Invocation {
  readonly executable: string;
  readonly argv: readonly string[];
  readonly configFile: string | null;
  readonly configUnresolved: boolean;
  /** Files we read on the way (wrapper scripts). */
  readonly via: readonly string[];
}

function configFromArgv(argv: readonly string[]): { file: string | null; index: number } {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--config") return { file: argv[i + 1] ?? null, index: i + 1 };
    if (a.startsWith("--config=")) return { file: a.slice("--config=".length), index: i };
  }
  return { file: null, index: -1 };
}

function isAgentProgram(p: string): boolean {
  return basename(p) === "hercules-ci-agent";
}

function followArgv(
  fs: FsRoot,
  argv: readonly string[],
  env: Readonly<Record<string, string>>,
  depth: number,
  via: string[],
): Invocation | null {
  if (argv.length === 0) return null;
  const { file, index } = configFromArgv(argv);
  if (isAgentProgram(argv[0]!) || file !== null) {
    return {
      executable: argv[0]!,
      argv,
      configFile: file,
      configUnresolved: index >= 0 && file === null,
      via,
    };
  }
  if (depth > 3) return null;
  if (isShell(argv[0]!)) {
    const c = argv.indexOf("-c");
    if (c >= 0 && argv[c + 1] !== undefined) return followShell(fs, argv[c + 1]!, env, depth + 1, via);
    const script = argv.slice(1).find((a) => !a.startsWith("-"));
    if (script) {
      const text = fs.readText(script);
      if (text !== null) return followShell(fs, text, env, depth + 1, [...via, script]);
    }
    return null;
  }
  const text = argv[0]!.startsWith("/") ? fs.readText(argv[0]!) : null;
  if (text?.startsWith("#!")) return followShell(fs, text, env, depth + 1, [...via, argv[0]!]);
  return null;
}

function followShell(
  fs: FsRoot,
  text: string,
  env: Readonly<Record<string, string>>,
  depth: number,
  via: string[],
): Invocation | null {
  for (const cmd of splitShellCommands(text, env)) {
    let words = [...cmd];
    // strip `exec`, `command`, `nohup`, `env`, and leading NAME=value assignments
    while (
      words.length > 0 &&
      (["exec", "command", "nohup", "env"].includes(words[0]!.text) ||
        /^[A-Za-z_][A-Za-z0-9_]*=/.test(words[0]!.text))
    )
      words = words.slice(1);
    if (words.length === 0) continue;
    const argv = words.map((w) => w.text);
    const { file, index } = configFromArgv(argv);
    if (isAgentProgram(argv[0]!) || file !== null) {
      const unresolved = index >= 0 && (file === null || words[index]?.unresolved === true);
      return {
        executable: argv[0]!,
        argv,
        configFile: unresolved ? null : file,
        configUnresolved: unresolved,
        via,
      };
    }
    const inner = followArgv(fs, argv, env, depth, via);
    if (inner) return inner;
  }
  return null;
}

function versionHint(...paths: ReadonlyArray<string | null>): string | null {
  for (const p of paths) {
    const m = p ? VERSION_IN_PATH.exec(p) : null;
    if (m) return m[1]!;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// systemd

function dropInDirNames(unit: string): string[] {
  // service.d, then dash-prefix drop-ins (systemd ≥ 246), then the unit's own directory
  const stem = unit.replace(/\.service$/, "");
  const parts = stem.split("-");
  const names = ["service.d"];
  for (let i = 1; i < parts.length; i++) names.push(`${parts.slice(0, i).join("-")}-.service.d`);
  names.push(`${unit}.d`);
  return names;
}

/** The unit's drop-ins, by file name across all directories; for the same name the higher-priority one wins. */
function unitDropIns(fs: FsRoot, dirs: readonly string[], unit: string): string[] {
  const chosen = new Map<string, string>();
  for (const dname of dropInDirNames(unit).reverse()) {
    for (const d of dirs) {
      const dd = `${d}/${dname}`;
      for (const f of fs.list(dd)) {
        if (!f.endsWith(".conf") || chosen.has(f)) continue;
        chosen.set(f, `${dd}/${f}`);
      }
    }
  }
  return [...chosen.keys()].sort().map((k) => chosen.get(k)!);
}

/** The environment the service gets: User='s HOME and USER, Environment=, then EnvironmentFile= in order. */
function unitEnvironment(
  fs: FsRoot,
  s: ServiceSettings,
  findings: AgentFinding[],
): Pick<DiscoveredAgent, "environment" | "environmentFiles" | "passwd"> {
  const environment: Record<string, EnvEntry> = {};
  const passwd = s.user ? lookupPasswd(fs, s.user) : null;
  if (s.user && passwd) {
    environment.HOME = { value: passwd.home, source: "systemd User= (home from /etc/passwd)" };
    environment.USER = { value: s.user, source: "systemd User=" };
  }
  for (const e of s.environment) environment[e.name] = { value: e.value, source: `${e.file}:${e.line}` };
  const environmentFiles: Array<{ path: string; optional: boolean; found: boolean }> = [];
  for (const ef of s.environmentFiles) {
    const content = fs.readText(ef.path);
    environmentFiles.push({ path: ef.path, optional: ef.optional, found: content !== null });
    if (content === null) {
      findings.push(
        finding(
          ef.optional ? "agent-service-envfile-missing-optional" : "agent-service-envfile-missing",
          ef.optional ? "info" : "warning",
          `EnvironmentFile ${ef.path} (${ef.file}:${ef.line}) is missing or unreadable` +
            (ef.optional
              ? " (optional, so systemd skips it)."
              : "; systemd refuses to start the unit without it."),
          ef.optional ? null : `Create ${ef.path} or prefix the path with "-" to make it optional.`,
          { file: ef.file, line: ef.line },
        ),
      );
      continue;
    }
    for (const v of parseEnvironmentFile(content))
      environment[v.name] = { value: v.value, source: `${ef.path}:${v.line}` };
  }
  return { environment, environmentFiles, passwd };
}

/** ExecStart= followed to the agent's invocation, with what keeps us from finding its config. */
function unitInvocation(
  fs: FsRoot,
  s: ServiceSettings,
  unit: string,
  unitPath: string,
  env: Record<string, string>,
  findings: AgentFinding[],
): { inv: Invocation | null; argv: string[] | null } {
  let inv: Invocation | null = null;
  let argv: string[] | null = null;
  if (s.execStartCount > 1 && s.type !== "oneshot") {
    findings.push(
      finding(
        "agent-service-multiple-execstart",
        "error",
        `${unit} has ${s.execStartCount} ExecStart= lines after drop-ins; systemd refuses this for a non-oneshot service.`,
        'In a drop-in, reset ExecStart first with an empty "ExecStart=" line, then set the new command.',
        { file: s.execStart?.file ?? unitPath, line: s.execStart?.line ?? null },
      ),
    );
  }
  if (!s.execStart) {
    findings.push(
      finding("agent-service-no-execstart", "warning", `${unit} has no ExecStart=.`, CONFIG_BY_HAND, {
        file: unitPath,
      }),
    );
    return { inv, argv };
  }
  const at = { file: s.execStart.file, line: s.execStart.line };
  const cmd = parseExecCommand(s.execStart.value, env, unit);
  if (cmd) {
    argv = [cmd.executable, ...cmd.argv.slice(1)];
    inv = followArgv(fs, argv, env, 0, []);
    if (inv === null && cmd.unresolved.length > 0) {
      findings.push(
        finding(
          "agent-service-unresolved",
          "warning",
          `ExecStart of ${unit} uses ${cmd.unresolved.join(", ")}, which we cannot expand without the running service; the config path may be wrong.`,
          CONFIG_BY_HAND,
          at,
        ),
      );
    }
  }
  if (inv === null || (inv.configFile === null && !inv.configUnresolved)) {
    findings.push(
      finding(
        "agent-service-no-config",
        "warning",
        `Could not find "--config FILE" in the command of ${unit} (${s.execStart.value}).`,
        CONFIG_BY_HAND,
        at,
      ),
    );
  } else if (inv.configUnresolved) {
    findings.push(
      finding(
        "agent-service-unresolved",
        "warning",
        `The --config argument of ${unit} depends on a variable we cannot expand.`,
        CONFIG_BY_HAND,
        at,
      ),
    );
  }
  return { inv, argv };
}

const CONFIG_BY_HAND = "Name the config by hand with --agent-config FILE.";

function readSystemdUnit(fs: FsRoot, dirs: readonly string[], dir: string, unit: string): DiscoveredAgent {
  const findings: AgentFinding[] = [];
  const unitPath = `${dir}/${unit}`;
  const entries: UnitEntry[] = parseUnitText(fs.readText(unitPath) ?? "", unitPath);
  const dropIns = unitDropIns(fs, dirs, unit);
  for (const p of dropIns) {
    if (fs.linkTarget(p) === "/dev/null") continue;
    entries.push(...parseUnitText(fs.readText(p) ?? "", p));
  }
  const s = mergeServiceSettings(entries);
  const env = unitEnvironment(fs, s, findings);
  const plainEnv = Object.fromEntries(Object.entries(env.environment).map(([k, v]) => [k, v.value]));
  const { inv, argv } = unitInvocation(fs, s, unit, unitPath, plainEnv, findings);
  if (s.dynamicUser) {
    findings.push(
      finding(
        "agent-service-dynamic-user",
        "warning",
        `${unit} uses DynamicUser=yes: the agent's user and home exist only while it runs.`,
        null,
        { file: unitPath },
      ),
    );
  }
  const instance =
    unit === "hercules-ci-agent.service"
      ? ""
      : unit.replace(/^hercules-ci-agent-?/, "").replace(/\.service$/, "");
  const partial = {
    kind: "systemd" as const,
    name: unit,
    instance,
    configFile: inv?.configFile ?? null,
    agentExecutable: inv?.executable ?? null,
  };
  return {
    ...partial,
    definitionFile: unitPath,
    dropIns,
    user: s.user,
    group: s.group,
    passwd: env.passwd,
    agentVersionHint: versionHint(inv?.executable ?? null, ...(inv?.via ?? []), argv?.[0] ?? null),
    argv: inv?.argv ?? argv,
    environment: env.environment,
    environmentFiles: env.environmentFiles,
    workingDirectory: s.workingDirectory,
    privateDevices: s.privateDevices,
    installMethod: guessInstallMethod({ ...partial, user: s.user }),
    findings,
  };
}

export function discoverSystemdAgents(
  fs: FsRoot,
  dirs: readonly string[] = SYSTEMD_UNIT_DIRS,
): DiscoveredAgent[] {
  const seen = new Map<string, string>();
  for (const d of dirs) {
    for (const f of fs.list(d)) {
      if (!/^hercules-ci-agent[^@]*\.service$/.test(f)) continue;
      if (f.startsWith("hercules-ci-agent-restarter")) continue; // NixOS helper oneshot units
      if (!seen.has(f)) seen.set(f, d);
    }
  }
  const out: DiscoveredAgent[] = [];
  for (const [unit, dir] of [...seen.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (fs.linkTarget(`${dir}/${unit}`) === "/dev/null") continue; // masked
    out.push(readSystemdUnit(fs, dirs, dir, unit));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// launchd

function asString(v: PlistValue | undefined): string | null {
  return typeof v === "string" ? v : null;
}

function readLaunchdPlist(fs: FsRoot, path: string): DiscoveredAgent | null {
  const findings: AgentFinding[] = [];
  const bytes = fs.readBytes(path);
  if (bytes === null) return null;
  const text = bytes.toString("utf8");
  let plist: PlistValue;
  try {
    plist = parsePlist(text);
  } catch (e) {
    const label = basename(path).replace(/\.plist$/, "");
    findings.push(
      finding(
        "agent-launchd-unparsable",
        "warning",
        `Cannot read ${path}: ${(e as Error).message}.`,
        `Name the config by hand with --agent-config FILE, or convert the plist: plutil -convert xml1 ${path}`,
        { file: path },
      ),
    );
    return emptyLaunchd(path, label, findings);
  }
  if (
    typeof plist !== "object" ||
    plist === null ||
    Array.isArray(plist) ||
    plist instanceof Date ||
    plist instanceof Uint8Array
  ) {
    return emptyLaunchd(path, basename(path), [
      finding("agent-launchd-unparsable", "warning", `${path} is not a dictionary plist.`, null, {
        file: path,
      }),
    ]);
  }
  const d = plist as { [k: string]: PlistValue };
  const label = asString(d.Label) ?? basename(path).replace(/\.plist$/, "");
  const user = asString(d.UserName);
  const group = asString(d.GroupName);
  const environment: Record<string, EnvEntry> = {};
  const ev = d.EnvironmentVariables;
  if (
    ev &&
    typeof ev === "object" &&
    !Array.isArray(ev) &&
    !(ev instanceof Date) &&
    !(ev instanceof Uint8Array)
  ) {
    for (const [k, v] of Object.entries(ev)) {
      if (typeof v === "string") environment[k] = { value: v, source: `${path} (EnvironmentVariables)` };
    }
  }
  const pa = Array.isArray(d.ProgramArguments)
    ? d.ProgramArguments.filter((x): x is string => typeof x === "string")
    : null;
  const program = asString(d.Program);
  const argv = pa && pa.length > 0 ? (program ? [program, ...pa.slice(1)] : pa) : program ? [program] : null;
  const plainEnv = Object.fromEntries(Object.entries(environment).map(([k, v]) => [k, v.value]));
  const inv = argv ? followArgv(fs, argv, plainEnv, 0, []) : null;
  if (!inv || inv.configFile === null) {
    findings.push(
      finding(
        inv?.configUnresolved ? "agent-service-unresolved" : "agent-service-no-config",
        "warning",
        inv?.configUnresolved
          ? `The --config argument in ${path} depends on a variable we cannot expand.`
          : `Could not find "hercules-ci-agent --config FILE" in ${path} (ProgramArguments and the scripts it runs).`,
        "Name the config by hand with --agent-config FILE.",
        { file: path },
      ),
    );
  }
  if (user === null) {
    findings.push(
      finding(
        "agent-user-unknown",
        "warning",
        `${path} has no UserName, so launchd runs the agent as root.`,
        "Set UserName to the agent's user (_hercules-ci-agent).",
        { file: path },
      ),
    );
  }
  const partial = {
    kind: "launchd" as const,
    name: label,
    instance: null,
    configFile: inv?.configFile ?? null,
    agentExecutable: inv?.executable ?? null,
  };
  return {
    ...partial,
    definitionFile: path,
    dropIns: [],
    user,
    group,
    passwd: user ? lookupPasswd(fs, user) : null,
    agentVersionHint: versionHint(inv?.executable ?? null, ...(inv?.via ?? [])),
    argv: inv?.argv ?? argv,
    environment,
    environmentFiles: [],
    workingDirectory: asString(d.WorkingDirectory),
    privateDevices: null,
    installMethod: guessInstallMethod({ ...partial, user }),
    findings,
  };
}

function emptyLaunchd(path: string, label: string, findings: AgentFinding[]): DiscoveredAgent {
  return {
    kind: "launchd",
    name: label,
    instance: null,
    definitionFile: path,
    dropIns: [],
    user: null,
    group: null,
    passwd: null,
    configFile: null,
    agentExecutable: null,
    agentVersionHint: null,
    argv: null,
    environment: {},
    environmentFiles: [],
    workingDirectory: null,
    privateDevices: null,
    installMethod: "unknown",
    findings,
  };
}

export function discoverLaunchdAgents(
  fs: FsRoot,
  dirs: readonly string[] = LAUNCHD_DAEMON_DIRS,
): DiscoveredAgent[] {
  const out: DiscoveredAgent[] = [];
  for (const d of dirs) {
    for (const f of fs.list(d)) {
      if (!/hercules/i.test(f) || !f.endsWith(".plist")) continue;
      const a = readLaunchdPlist(fs, `${d}/${f}`);
      if (a) out.push(a);
    }
  }
  return out;
}

/** All agent service definitions under the root. */
export function discoverAgents(opts: DiscoverOptions = {}): DiscoveredAgent[] {
  const fs = new FsRoot(opts.root ?? "/");
  const managers = opts.managers ?? ["systemd", "launchd"];
  return [
    ...(managers.includes("systemd") ? discoverSystemdAgents(fs, opts.unitDirs) : []),
    ...(managers.includes("launchd") ? discoverLaunchdAgents(fs, opts.launchdDirs) : []),
  ];
}

/** An agent named by hand (`--agent-config FILE`), optionally with its user. */
export function manualAgent(
  configFile: string,
  opts: { root?: string; user?: string | null } = {},
): DiscoveredAgent {
  const fs = new FsRoot(opts.root ?? "/");
  const user = opts.user ?? null;
  const passwd = user ? lookupPasswd(fs, user) : null;
  const environment: Record<string, EnvEntry> = {};
  if (passwd) environment.HOME = { value: passwd.home, source: "/etc/passwd" };
  return {
    kind: "manual",
    name: "manual",
    instance: null,
    definitionFile: null,
    dropIns: [],
    user,
    group: null,
    passwd,
    configFile,
    agentExecutable: null,
    agentVersionHint: null,
    argv: null,
    environment,
    environmentFiles: [],
    workingDirectory: null,
    privateDevices: null,
    installMethod: "manual",
    findings: [],
  };
}

// ---------------------------------------------------------------------------------------------
// Runtime enrichment (Linux)

export interface AgentRuntime {
  readonly pid: number | null;
  /** The process environment from /proc/<pid>/environ; null when unavailable. */
  readonly environ: Readonly<Record<string, string>> | null;
  /** Process start time, from /proc/<pid>/stat and /proc/stat btime. */
  readonly startedAt: Date | null;
  readonly findings: readonly AgentFinding[];
}

export interface RuntimeOptions {
  readonly root?: string;
  /** The main PID if known (e.g. from `systemctl show -p MainPID`); otherwise read from the cgroup. */
  readonly pid?: number | null;
  /** Kernel clock ticks per second (getconf CLK_TCK); 100 on all common Linux builds. */
  readonly clockTicks?: number;
}

function cgroupPids(fs: FsRoot, unit: string): number[] {
  for (const base of [
    "/sys/fs/cgroup/system.slice",
    "/sys/fs/cgroup/systemd/system.slice",
    "/sys/fs/cgroup/unified/system.slice",
  ]) {
    const t = fs.readText(`${base}/${unit}/cgroup.procs`);
    if (t !== null)
      return t
        .split("\n")
        .map((x) => Number(x.trim()))
        .filter((n) => Number.isInteger(n) && n > 0);
  }
  return [];
}

/**
 * Best-effort look at the running agent: its PID, environment and start time. Every part is
 * optional; missing files (no systemd, not running, not root) give nulls, not errors.
 */
export function readAgentRuntime(agent: DiscoveredAgent, opts: RuntimeOptions = {}): AgentRuntime {
  const fs = new FsRoot(opts.root ?? "/");
  const findings: AgentFinding[] = [];
  let pid = opts.pid ?? null;
  if (pid === null && agent.kind === "systemd") {
    const pids = cgroupPids(fs, agent.name);
    pid =
      pids.find((p) => {
        const cmd = fs.readText(`/proc/${p}/cmdline`);
        return cmd?.split("\0").some((a) => a === "--config" || a.startsWith("--config="));
      }) ??
      pids[0] ??
      null;
  }
  if (pid === null) return { pid: null, environ: null, startedAt: null, findings };
  let environ: Record<string, string> | null = null;
  const raw = fs.readText(`/proc/${pid}/environ`);
  if (raw === null) {
    findings.push(
      finding(
        "agent-runtime-environ-unreadable",
        "info",
        `Cannot read /proc/${pid}/environ (not running, or needs root); using the environment from the service definition.`,
        null,
      ),
    );
  } else {
    environ = {};
    for (const kv of raw.split("\0")) {
      const eq = kv.indexOf("=");
      if (eq > 0) environ[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
  }
  let startedAt: Date | null = null;
  const stat = fs.readText(`/proc/${pid}/stat`);
  const pstat = fs.readText("/proc/stat");
  if (stat !== null && pstat !== null) {
    const after = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields after "(comm) " start at field 3 (state); starttime is field 22
    const ticks = Number(after[22 - 3]);
    const btime = /^btime (\d+)$/m.exec(pstat);
    if (Number.isFinite(ticks) && btime) {
      startedAt = new Date((Number(btime[1]) + ticks / (opts.clockTicks ?? 100)) * 1000);
    }
  }
  return { pid, environ, startedAt, findings };
}

/**
 * The environment to use for the agent: the running process's when known, else the service
 * definition's. Values only.
 */
export function agentEnvironment(
  agent: DiscoveredAgent,
  runtime?: AgentRuntime | null,
): Record<string, string> {
  if (runtime?.environ) return { ...runtime.environ };
  return Object.fromEntries(Object.entries(agent.environment).map(([k, v]) => [k, v.value]));
}

/** The command that restarts this agent's service, for fixes. */
export function agentRestartCommand(agent: DiscoveredAgent): string | null {
  if (agent.kind === "systemd") return `systemctl restart ${agent.name}`;
  if (agent.kind === "launchd") return `launchctl kickstart -k system/${agent.name}`;
  return null;
}
