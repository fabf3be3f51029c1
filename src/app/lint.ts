/**
 * The lint service: everything that will break or silently disable remote builds, before Nix raises it.
 * Without files it lints the user's real view (config files, the daemon's config, builders and the
 * machines files they include, key files as the build hook's user sees them); with files it lints those
 * files. Used by the `lint` command (src/commands/lint.ts) and the doctor's `lint` check.
 *
 * The rules are pure (src/nix/lint.ts); this module gathers the host facts (src/host/keyfile.ts).
 */
import { basename, dirname, resolve } from "node:path";
import { type IdentityReader, nodeFileReader } from "../host/fs-reader.js";
import { machinesFileFacts } from "../host/keyfile.js";
import { type ConfigView, type FileReader, loadConfig, unboundedReadError } from "../nix/conf.js";
import { displayedMessage, filterAnsiEscapes } from "../nix/display.js";
import { strerror } from "../nix/errors.js";
import {
  type Finding,
  groupConsequences,
  type KeyFileFacts,
  lintBuildersSource,
  lintBuildUsersGroup,
  lintConfError,
  lintConfSyntax,
  lintKeyFiles,
  lintLocalJobs,
  lintMachines,
  lintMachinesFileAccess,
  lintOverrides,
  lintPlatformNames,
  lintReplacedDefaults,
  lintSkippedFiles,
  lintStoreAccess,
  lintUnknownSettings,
  normaliseFindings,
  summarise,
  usesSshKey,
} from "../nix/lint.js";
import { type BuildersResult, parseBuilders } from "../nix/machines.js";
import type { Origin } from "../nix/origin.js";
import { NIX_2_8, type NixVersion } from "../nix/version.js";
import { NIX, since } from "../nix/versions.js";
import { Refusal, UsageError } from "./io.js";
import { settingText, type UserView, userView } from "./view.js";

export interface LintOptions {
  user?: string;
  nixVersion?: string;
  json?: boolean;
  /** Files forced to be read as nix.conf. */
  conf?: string[];
  /** Files forced to be read as machines files. */
  machines?: string[];
  /** Files classified by name and content. */
  files?: string[];
}

export type FileKind = "conf" | "machines";

/**
 * How a FILE argument is read: a name ending in `.conf` is a nix.conf; otherwise the first meaningful line
 * (not blank, not a comment) decides: `include`/`!include PATH`, or a second word that is `=`, or a first
 * word shaped like `name=value` (a bare setting name, no `/` or `://`), makes it a nix.conf; anything else
 * (including an empty file) is a machines file. `--conf` / `--machines` force the kind.
 */
export function classifyFile(path: string, text: string): FileKind {
  if (path.endsWith(".conf")) return "conf";
  for (const raw of text.split("\n")) {
    const hash = raw.indexOf("#");
    const line = (hash >= 0 ? raw.slice(0, hash) : raw).trim();
    if (line === "") continue;
    const toks = line.split(/[ \t\r]+/);
    if (toks[0] === "include" || toks[0] === "!include") return "conf";
    if (toks[1] === "=") return "conf";
    if (/^[A-Za-z][A-Za-z0-9_-]*=/.test(toks[0]!)) return "conf";
    return "machines";
  }
  return "machines";
}

interface Ctx {
  version: NixVersion;
  view: UserView;
  myUid: number;
  findings: Finding[];
  /**
   * Reads machines files. The user's view: as the build hook's user. FILE arguments: as the user the
   * lint is for (`--user`), else as ourselves, so that a lint never shows what that user cannot read.
   */
  machinesReader: IdentityReader;
  /**
   * Builders values already parsed (by the view, or for the default machines file), by reader, version and
   * spec: a 10,000-line machines file is parsed once, not three times.
   */
  parsed?: Map<string, Map<string, Map<string, BuildersResult>>>;
}

/** parseBuilders, once per (reader, version, spec); `withOrigin` false when only the machines count matters. */
function parseCached(
  ctx: Ctx,
  spec: string,
  version: NixVersion,
  origin: { file: string | null; line: number | null },
  withOrigin = true,
): BuildersResult {
  if (!ctx.parsed) {
    ctx.parsed = new Map();
    if (ctx.machinesReader === ctx.view.hookReader) {
      const w = ctx.view.builders.origin[ctx.view.builders.origin.length - 1];
      const o = w && w.kind === "file" ? { file: w.file, line: w.line } : { file: null, line: null };
      bySpec(ctx, ctx.view.version, ctx.view.builders.value).set(`${o.file}\0${o.line}`, ctx.view.machines);
    }
  }
  // the spec itself is a Map key (hashed once), never concatenated into another key: it may be 15 MB
  const forSpec = bySpec(ctx, version, spec);
  const okey = `${origin.file}\0${origin.line}`;
  const hit = forSpec.get(okey) ?? (withOrigin ? undefined : forSpec.values().next().value);
  if (hit) return hit;
  const r = parseBuilders({
    spec,
    version,
    defaultSystem: ctx.view.hookSystem,
    fs: ctx.machinesReader,
    cwd: "/",
    origin,
  });
  forSpec.set(okey, r);
  return r;
}

function bySpec(ctx: Ctx, version: NixVersion, spec: string): Map<string, BuildersResult> {
  const reader = ctx.machinesReader === ctx.view.hookReader ? "hook" : "user";
  const outer = `${reader} ${version.major}.${version.minor}.${version.patch}`;
  let specs = ctx.parsed!.get(outer);
  if (!specs) {
    specs = new Map();
    ctx.parsed!.set(outer, specs);
  }
  let origins = specs.get(spec);
  if (!origins) {
    origins = new Map();
    specs.set(spec, origins);
  }
  return origins;
}

function hookIdentity(v: UserView) {
  const u = v.hookUser;
  return { name: u.name, uid: u.uid, gid: u.gid, home: u.home, shell: u.shell };
}

function lastFileOrigin(origins: readonly Origin[]): { file: string | null; line: number | null } {
  const o = origins[origins.length - 1];
  return o && o.kind === "file" ? { file: o.file, line: o.line } : { file: null, line: null };
}

/** Parse a builders value as the hook does, plus the 2.8 parse on Nix ≥ 2.29 (for the pre-2.29 traps). */
function parseBoth(
  ctx: Ctx,
  spec: string,
  origin: { file: string | null; line: number | null },
): { machines: BuildersResult; machines28: BuildersResult | null } {
  const machines = parseCached(ctx, spec, ctx.version, origin);
  const machines28 = since(ctx.version, NIX.machinesSplitFix)
    ? parseCached(ctx, spec, NIX_2_8, origin)
    : null;
  return { machines, machines28 };
}

/** Machines findings plus the host facts: key files, machines files as the hook user. */
async function lintMachinesOnHost(
  ctx: Ctx,
  parsed: { machines: BuildersResult; machines28: BuildersResult | null },
  defaultIncludePath: string | null,
): Promise<void> {
  const { machines } = parsed;
  const hook = hookIdentity(ctx.view);
  const theyAreUs = hook.uid === ctx.myUid;
  const found = lintMachines({
    version: ctx.version,
    machines,
    machines28: parsed.machines28,
    defaultIncludePath,
  });
  for (const f of found) {
    // We read the files as ourselves; a permission error means nothing for root's hook unless we are root.
    if (
      f.id === "machines-unreadable" &&
      !theyAreUs &&
      ctx.myUid !== 0 &&
      (f.nixMessage ?? "").includes("Permission denied")
    ) {
      ctx.findings.push({
        ...f,
        id: "machines-unchecked",
        severity: "info",
        message: `could not read this machines file as uid ${ctx.myUid}; the build hook runs as ${hook.name} (run the lint as root to check)`,
        fix: "run `sudo nix-builders lint`",
      });
      continue;
    }
    ctx.findings.push(f);
  }
  // stat and readability as the hook user (the identity that runs ssh), through its reader
  const probe =
    theyAreUs || ctx.myUid === 0 ? { myUid: ctx.myUid, reader: ctx.view.hookReader } : { myUid: ctx.myUid };
  if (!theyAreUs && ctx.myUid === 0) {
    const paths = machines.includes.filter((i) => i.found).map((i) => i.resolved);
    const facts = await machinesFileFacts(paths, hook, probe);
    ctx.findings.push(...lintMachinesFileAccess(machines.includes, facts, hook, ctx.version));
  }
  const keyPaths = [
    ...new Set(
      machines.machines
        .filter((m) => m.sshKey !== null && usesSshKey(m, ctx.version))
        .map((m) => m.sshKey as string),
    ),
  ];
  const facts: KeyFileFacts[] = [];
  for (const p of keyPaths) facts.push(await ctx.view.keyFacts(p, hook, probe));
  ctx.findings.push(
    ...lintKeyFiles({ version: ctx.version, machines: machines.machines, facts, hookUser: hook }),
  );
}

function readText(reader: FileReader, path: string): string | null {
  const r = reader.read(path);
  return r.ok ? r.text : null;
}

/** The machines file the default `builders` names, and how many machines it defines. */
function defaultMachinesInfo(
  ctx: Ctx,
  confDir: string,
): { path: string; exists: boolean; machineCount: number } {
  const path = `${confDir === "/" ? "" : confDir}/machines`;
  const text = readText(ctx.machinesReader, path);
  if (text === null) return { path, exists: false, machineCount: 0 };
  const r = parseCached(ctx, `@${path}`, ctx.version, { file: null, line: null }, false);
  return { path, exists: true, machineCount: r.machines.length };
}

function lintConfFiles(ctx: Ctx, views: [ConfigView | null, FileReader | null][]): void {
  const done = new Set<string>();
  for (const [view, reader] of views) {
    if (!view || !reader) continue;
    for (const f of view.files) {
      if (!f.exists || f.role === "env" || done.has(f.path)) continue;
      done.add(f.path);
      const text = readText(reader, f.path);
      if (text !== null) ctx.findings.push(...lintConfSyntax(text, f.path, ctx.version));
    }
  }
}

/** The user's real view: config files, daemon config, builders, machines files, key files. */
async function lintView(ctx: Ctx): Promise<void> {
  const v = ctx.view;
  const { client, daemon } = v;
  lintConfFiles(ctx, [
    [client, v.reader],
    [daemon, v.daemonReader],
  ]);
  ctx.findings.push(...lintConfError(client, `${v.user.name}'s configuration`));
  if (daemon) ctx.findings.push(...lintConfError(daemon, "the daemon's configuration"));
  ctx.findings.push(...lintUnknownSettings(client, v.builders.value, ctx.version));
  if (daemon) ctx.findings.push(...lintUnknownSettings(daemon, v.builders.value, ctx.version));
  ctx.findings.push(...lintReplacedDefaults(daemon ?? client, v.facts));
  ctx.findings.push(...lintPlatformNames(daemon ?? client));
  ctx.findings.push(...lintSkippedFiles(client, `${v.user.name}'s configuration`));
  if (daemon) ctx.findings.push(...lintSkippedFiles(daemon, "the daemon's configuration"));
  if (daemon) {
    ctx.findings.push(...lintOverrides(daemon.assignments));
    // the user's own lines: only builders matters to the daemon, and only lines outside the system file
    ctx.findings.push(...lintOverrides(client.assignments, ["builders"], (a) => a.layer !== "system"));
  } else {
    ctx.findings.push(...lintOverrides(client.assignments));
  }
  const confDir = (daemon ?? client).confDir;
  const dm = defaultMachinesInfo(ctx, confDir);
  ctx.findings.push(
    ...lintBuildersSource({
      version: ctx.version,
      builders: v.builders,
      ignored: v.ignored,
      user: v.user.name,
      defaultMachines: dm,
    }),
  );
  const last = v.builders.origin[v.builders.origin.length - 1];
  const isDefault = !last || last.kind === "default";
  const parsed = parseBoth(ctx, v.builders.value, lastFileOrigin(v.builders.origin));
  await lintMachinesOnHost(ctx, parsed, isDefault ? dm.path : null);
  ctx.findings.push(...lintStoreAccess(v.user.name, v.storeUnusable));
  const builderConf = v.storeMode === "daemon" ? daemon : v.storeMode === "local" ? client : null;
  if (builderConf) {
    const bug = builderConf.settings.get("build-users-group");
    const value = settingText(bug?.value ?? (v.storeMode === "daemon" ? "nixbld" : ""));
    ctx.findings.push(
      ...lintBuildUsersGroup({
        value,
        origin: bug?.origin ?? [{ kind: "default" }],
        builderIsRoot: v.storeMode === "daemon" || v.user.uid === 0,
        groupExists: value === "" ? null : v.db.groups.some((g) => g.name === value),
      }),
    );
  }
  // a broken builders value is its own error; with it the hook dies anyway
  if (parsed.machines.error === null)
    ctx.findings.push(
      ...lintLocalJobs({
        version: ctx.version,
        maxJobs: v.client.settings.get("max-jobs") ?? null,
        machines: parsed.machines.machines,
      }),
    );
}

/** One nix.conf-like file, on its own (as the system file when it is called nix.conf, else as a user file). */
async function lintConfFile(ctx: Ctx, path: string, text: string): Promise<void> {
  ctx.findings.push(...lintConfSyntax(text, path, ctx.version));
  const asSystem = basename(path) === "nix.conf";
  const realConfDir = ctx.view.daemon?.confDir ?? ctx.view.client.confDir;
  const confDir = asSystem ? dirname(path) : realConfDir;
  const hidden = `${confDir === "/" ? "" : confDir}/nix.conf`;
  const reader = ctx.view.reader;
  const fs: FileReader = asSystem
    ? reader
    : {
        read: (p) => (p === hidden ? { ok: false, code: "ENOENT" } : reader.read(p)),
        exists: (p) => (p === hidden ? { ok: true, exists: false } : reader.exists(p)),
      };
  const view = loadConfig({
    version: ctx.version,
    env: { NIX_CONF_DIR: confDir, NIX_USER_CONF_FILES: asSystem ? "" : path, HOME: ctx.view.user.home },
    passwdHome: ctx.view.user.home,
    fs,
    machine: { ...ctx.view.facts, isRoot: ctx.view.hookUser.uid === 0 },
  });
  const buildersSetting = view.settings.get("builders");
  const builders = {
    value: settingText(buildersSetting?.value ?? ""),
    origin: buildersSetting?.origin ?? [{ kind: "default" as const }],
    from: "user" as const,
  };
  ctx.findings.push(...lintConfError(view, "this file"));
  ctx.findings.push(...lintUnknownSettings(view, builders.value, ctx.version));
  ctx.findings.push(...lintReplacedDefaults(view, ctx.view.facts));
  ctx.findings.push(...lintOverrides(view.assignments));
  const dm = defaultMachinesInfo(ctx, confDir);
  ctx.findings.push(
    ...lintBuildersSource({ version: ctx.version, builders, ignored: [], defaultMachines: dm }),
  );
  const last = builders.origin[builders.origin.length - 1];
  const isDefault = !last || last.kind === "default";
  if (isDefault && !asSystem) return; // the file does not say anything about builders
  const parsed = parseBoth(ctx, builders.value, lastFileOrigin(builders.origin));
  await lintMachinesOnHost(ctx, parsed, isDefault ? dm.path : null);
}

/** One machines file, read as the hook reads `@FILE`. */
async function lintMachinesFile(ctx: Ctx, path: string): Promise<void> {
  const parsed = parseBoth(ctx, `@${path}`, { file: null, line: null });
  await lintMachinesOnHost(ctx, parsed, null);
}

/**
 * Read a FILE argument (bounded, as `reader`'s identity). A name that is not a file is a usage error (64);
 * a file that exists but cannot be read (permissions, too large, not regular) is a refusal (2): the command
 * line was right, the file is the problem.
 */
function readFileArg(p: string, reader: IdentityReader): { abs: string; text: string } {
  const abs = resolve(p);
  const r = reader.read(abs);
  if (r.ok) return { abs, text: r.text };
  if (r.code === "ENOENT") throw new UsageError(`${p}: no such file`);
  if (r.code === "EISDIR") throw new UsageError(`${p}: is a directory`);
  const unbounded = unboundedReadError(abs, r);
  if (unbounded) throw new Refusal(`${p}: ${unbounded.nixMessage.replace(`'${abs}' `, "")}`, { path: abs });
  const who = reader === nodeFileReader ? "" : ` for ${reader.who}`;
  throw new Refusal(`${p}: unreadable${who}: ${strerror(r.code)}`, { path: abs });
}

export interface LintResult {
  findings: Finding[];
  summary: { errors: number; warnings: number; infos: number };
  version: NixVersion;
  user: string;
  hookUser: string;
}

/**
 * Compute the findings (no output) for `given`, or else for the view of `opts.user` read with `env` (the
 * environment of the command, for the caller's own view).
 */
export async function lint(opts: LintOptions, env: NodeJS.ProcessEnv, given?: UserView): Promise<LintResult> {
  const view = given ?? (await userView({ user: opts.user, nixVersion: opts.nixVersion, env }));
  const ctx: Ctx = {
    version: view.version,
    view,
    myUid: view.myUid,
    findings: [],
    machinesReader: view.hookReader,
  };
  const files: { path: string; kind: FileKind | null }[] = [
    ...(opts.conf ?? []).map((p) => ({ path: p, kind: "conf" as const })),
    ...(opts.machines ?? []).map((p) => ({ path: p, kind: "machines" as const })),
    ...(opts.files ?? []).map((p) => ({ path: p, kind: null })),
  ];
  if (files.length === 0) {
    await lintView(ctx);
  } else {
    // FILE arguments and what they include are read as the user the lint is for (see Ctx)
    ctx.machinesReader = view.reader;
    for (const f of files) {
      const { abs, text } = readFileArg(f.path, view.reader);
      const kind = f.kind ?? classifyFile(abs, text);
      if (kind === "conf") await lintConfFile(ctx, abs, text);
      else await lintMachinesFile(ctx, abs);
    }
  }
  // one bad line: its follow-on findings are grouped under it
  const findings = groupConsequences(normaliseFindings(ctx.findings));
  return {
    findings,
    summary: summarise(findings),
    version: view.version,
    user: view.user.name,
    hookUser: view.hookUser.name,
  };
}

/**
 * One finding of `lint --json` (docs/schemas/lint.schema.json): the finding, and how Nix displays its
 * own text when it has one. Fields are only ever added.
 */
export type LintFindingJson = Finding & { nixDisplayed?: string };

/** `lint --json` (docs/schemas/lint.schema.json). */
export interface LintJson {
  findings: LintFindingJson[];
  summary: LintResult["summary"];
}

export function lintJson(r: LintResult): LintJson {
  return {
    findings: r.findings.map((f) => ({
      id: f.id,
      severity: f.severity,
      file: f.file,
      line: f.line,
      message: f.message,
      fix: f.fix,
      ...(f.nixMessage === undefined
        ? {}
        : { nixMessage: f.nixMessage, nixDisplayed: lintNixDisplay(f.severity, f.nixMessage) }),
      ...(f.causedBy === undefined ? {} : { causedBy: f.causedBy }),
      ...(f.consequences === undefined ? {} : { consequences: f.consequences }),
    })),
    summary: r.summary,
  };
}

/** Nix's displayed form of a lint finding's Nix message (the message part, tabs expanded as Nix's logger does). */
export function lintNixDisplay(severity: string, message: string): string {
  return severity === "error"
    ? displayedMessage(message, "error")
    : severity === "warning"
      ? displayedMessage(message, "warning")
      : filterAnsiEscapes(message);
}
