/**
 * `nix-builders use NAME... (--user U | --agent) [--append] [--dry-run] [--force] [--json]`: the guide's
 * "non-default set of builders", done right. Writes `<home>/.config/nix/machines` with the chosen lines of
 * the system's builders (copied byte for byte from where they stand, e.g. /etc/nix/machines) and sets
 * `builders = @<that file>` in the user's nix.conf, keeping every other line.
 *
 * Writes are atomic (temp file, fsync, rename), backed up, locked, and recorded in a state file
 * (`<conf dir>/.nix-builders/state.json`, written before anything else changes) so that `reset` can put the
 * original bytes, owner and mode back. A kill at any point leaves every file old or new, and a rerun
 * finishes the job.
 */
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { Command } from "commander";
import { agentRestartCommand } from "../agent/index.js";
import { type AtomicWriteResult, acquireLock, atomicWrite, fsyncDir, managedTarget } from "../host/atomic.js";
import { nodeFileReader } from "../host/fs-reader.js";
import type { UserInfo } from "../host/users.js";
import {
  buildersEntries,
  fromBytes,
  machineSourceText,
  machinesFileText,
  nixosSnippet,
  selectMachines,
  setConfSetting,
  toBytes,
  unifiedDiff,
} from "../nix/conf-edit.js";
import { type BuildersResult, type Machine, parseBuilders, parseMachineRow } from "../nix/machines.js";
import { formatOrigin, type Origin } from "../nix/origin.js";
import { type AgentOptions, type AgentSelection, selectAgent } from "./agent-select.js";
import { EXIT, type Io, json, UsageError } from "./io.js";
import { loadUserConfig, settingText, type UserView, userView } from "./view.js";

// ---------------------------------------------------------------------------------------------------------
// Whose configuration: shared by use, reset and verify

export interface TargetOptions extends AgentOptions {
  user?: string;
  nixVersion?: string;
}

export interface Target {
  sel: AgentSelection | null;
  view: UserView;
  user: UserInfo;
  /** The user nix.conf Nix gives priority to (where `builders` goes). */
  confFile: string;
  confDir: string;
  machinesFile: string;
  stateDir: string;
  stateFile: string;
}

export async function resolveTarget(opts: TargetOptions, io: Io, command: string): Promise<Target> {
  const sel = selectAgent(opts);
  if (sel && opts.user && opts.user !== sel.user)
    throw new UsageError(`--user ${opts.user} and --agent (user ${sel.user}) name different users`);
  const name = sel ? sel.user : opts.user;
  if (name === undefined) throw new UsageError(`${command}: say whose configuration: --user NAME or --agent`);
  const view = await userView({
    user: name,
    nixVersion: opts.nixVersion,
    env: io.env,
    ...(sel ? { userEnv: sel.userEnv, clientOverrides: sel.overrides } : {}),
  });
  const confFile = view.client.userFiles[0];
  if (confFile === undefined)
    throw new UsageError(`${command}: ${name} has no user nix.conf (NIX_USER_CONF_FILES is empty)`);
  const confDir = path.dirname(confFile);
  const stateDir = path.join(confDir, ".nix-builders");
  return {
    sel,
    view,
    user: view.user,
    confFile,
    confDir,
    machinesFile: path.join(confDir, "machines"),
    stateDir,
    stateFile: path.join(stateDir, "state.json"),
  };
}

/** The builders the system gives every user: the daemon's own view, or (no daemon) the system nix.conf. */
export function systemBuilders(v: UserView): {
  value: string;
  origin: Origin[];
  result: BuildersResult;
  where: string;
} {
  let setting = v.daemon?.settings.get("builders");
  let where = "the nix-daemon's configuration";
  if (v.storeMode !== "daemon") {
    const sys = loadUserConfig(v, v.user, { ...v.env, NIX_USER_CONF_FILES: "", NIX_CONFIG: undefined });
    setting = sys.settings.get("builders");
    where = "the system nix.conf";
  }
  const value = settingText(setting?.value ?? "");
  const origin = setting?.origin ?? [{ kind: "default" as const }];
  const last = origin[origin.length - 1];
  const result = parseBuilders({
    spec: value,
    version: v.version,
    defaultSystem: v.hookSystem,
    fs: nodeFileReader,
    cwd: "/",
    origin: last && last.kind === "file" ? { file: last.file, line: last.line } : { file: null, line: null },
  });
  return { value, origin, result, where };
}

// ---------------------------------------------------------------------------------------------------------
// State record

export interface FileRecord {
  existed: boolean;
  /** The original bytes, base64; null when the file did not exist. */
  content: string | null;
  uid: number | null;
  gid: number | null;
  mode: number | null;
  /** sha256 of every content `use` has written (or meant to write) there. */
  written: string[];
}

export interface UseState {
  version: 1;
  user: string;
  uid: number;
  created: string;
  files: Record<string, FileRecord>;
  /** Directories `use` made (reset leaves them: the lock file lives in one of them). */
  createdDirs: string[];
}

export function sha256(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

export function readState(file: string): UseState | null {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  const s = JSON.parse(text) as UseState;
  if (s.version !== 1 || typeof s.files !== "object")
    throw new Error(`${file}: not a nix-builders state record`);
  return s;
}

/** Atomic write of the state record (the caller holds the state directory's lock). */
export function writeState(file: string, state: UseState | null, owner: { uid: number; gid: number }): void {
  const dir = path.dirname(file);
  if (state === null) {
    fs.rmSync(file, { force: true });
    fsyncDir(dir);
    return;
  }
  for (const n of fs.readdirSync(dir))
    if (n.startsWith(".state.json.tmp.")) fs.rmSync(path.join(dir, n), { force: true });
  const tmp = path.join(dir, `.state.json.tmp.${process.pid}.${randomBytes(4).toString("hex")}`);
  const fd = fs.openSync(tmp, "wx", 0o600);
  try {
    fs.writeFileSync(fd, `${JSON.stringify(state, null, 2)}\n`);
    fs.fchownSync(fd, owner.uid, owner.gid);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  fsyncDir(dir);
}

export function readBytes(file: string): Buffer | null {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

function snapshot(file: string): FileRecord {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT")
      return { existed: false, content: null, uid: null, gid: null, mode: null, written: [] };
    throw e;
  }
  if (!st.isFile()) throw new Error(`${file} is not a regular file`);
  return {
    existed: true,
    content: fs.readFileSync(file).toString("base64"),
    uid: st.uid,
    gid: st.gid,
    mode: st.mode & 0o7777,
    written: [],
  };
}

/**
 * Refuse to write through a directory symlink the user (or anyone but root) controls: we run as root and
 * write into the user's home, so `~/.config` → `/etc` must not make us write /etc/nix/nix.conf.
 */
export function checkDirChain(dir: string, home: string): void {
  const rel = path.relative(home, dir);
  const parts = rel.startsWith("..") || path.isAbsolute(rel) ? [] : rel.split(path.sep).filter(Boolean);
  let cur = home;
  for (const p of ["", ...parts]) {
    cur = p === "" ? cur : path.join(cur, p);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(cur);
    } catch {
      return; // does not exist yet: we create it
    }
    if (st.isSymbolicLink() && st.uid !== 0)
      throw new Error(`${cur} is a symlink owned by uid ${st.uid}; refusing to write through it`);
  }
}

/** mkdir -p, each new directory owned by the user (made under a temp name, chowned, then renamed). */
export function ensureDirs(dir: string, owner: { uid: number; gid: number }): string[] {
  const created: string[] = [];
  const missing: string[] = [];
  let cur = dir;
  while (!fs.existsSync(cur)) {
    missing.unshift(cur);
    const up = path.dirname(cur);
    if (up === cur) break;
    cur = up;
  }
  for (const d of missing) {
    const parent = path.dirname(d);
    const base = path.basename(d);
    for (const n of fs.readdirSync(parent)) {
      if (n.startsWith(`.${base}.nix-builders-mkdir.`))
        fs.rmSync(path.join(parent, n), { recursive: true, force: true });
    }
    const tmp = path.join(
      parent,
      `.${base}.nix-builders-mkdir.${process.pid}.${randomBytes(4).toString("hex")}`,
    );
    fs.mkdirSync(tmp, { mode: 0o755 });
    fs.chownSync(tmp, owner.uid, owner.gid);
    fs.chmodSync(tmp, 0o755);
    try {
      fs.renameSync(tmp, d);
      created.push(d);
    } catch (e) {
      fs.rmSync(tmp, { recursive: true, force: true });
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "EEXIST" && code !== "ENOTEMPTY") throw e;
    }
    fsyncDir(parent);
  }
  return created;
}

// ---------------------------------------------------------------------------------------------------------
// The command

export interface UseOptions extends TargetOptions {
  append?: boolean;
  dryRun?: boolean;
  force?: boolean;
  json?: boolean;
}

interface FileResult {
  path: string;
  status: "written" | "unchanged" | "managed" | "would-write";
  created: boolean;
  backup: string | null;
  diff: string;
}

function readLatin1(file: string): string | null {
  const b = readBytes(file);
  return b === null ? null : b.toString("latin1");
}

/** Choose the machine lines: NAMEs from the system's builders, or whole machine lines given literally. */
function chooseLines(
  names: readonly string[],
  sys: ReturnType<typeof systemBuilders>,
  v: UserView,
): { lines: string[]; machines: Machine[]; from: string[]; unmatched: string[]; notes: string[] } {
  const literal = names.filter((n) => /[ \t]/.test(n.trim()));
  const byName = names.filter((n) => !/[ \t]/.test(n.trim()));
  const sel = selectMachines(sys.result.machines, byName);
  const notes: string[] = [];
  for (const a of sel.ambiguous) notes.push(`'${a.name}' matches ${a.count} machines; all of them are used`);
  const machinesFiles = new Set(sys.result.includes.filter((i) => i.found).map((i) => i.resolved));
  const texts = new Map<string, string | null>();
  const lines: string[] = [];
  const from: string[] = [];
  const machines: Machine[] = [];
  for (const m of sel.chosen) {
    let fileText: string | null = null;
    if (m.origin.file !== null && machinesFiles.has(m.origin.file)) {
      if (!texts.has(m.origin.file)) texts.set(m.origin.file, readLatin1(m.origin.file));
      fileText = texts.get(m.origin.file) ?? null;
    }
    const same = sys.result.machines.filter(
      (o) => o.origin.file === m.origin.file && o.origin.line === m.origin.line,
    ).length;
    lines.push(machineSourceText({ ...m, row: toBytes(m.row) }, fileText, same));
    from.push(m.origin.file ? `${m.origin.file}${m.origin.line ? `:${m.origin.line}` : ""}` : "builders");
    machines.push(m);
  }
  const unmatched = [...sel.unmatched];
  for (const l of literal) {
    const r = parseMachineRow({ row: l.trim(), file: null, line: null }, v.version, v.hookSystem);
    if (!r.ok) {
      unmatched.push(`${l} (${r.error.message})`);
      continue;
    }
    lines.push(toBytes(l.trim()));
    from.push("command line");
    machines.push(r.machine);
  }
  return { lines, machines, from, unmatched, notes };
}

function trustFix(v: UserView): string {
  return (
    `the nix-daemon does not trust ${v.user.name} (${v.trustReason}), so it ignores builders set in ` +
    `${v.user.name}'s nix.conf (only 'builders = ""' passes). Fix: add ${v.user.name} to trusted-users in ` +
    "/etc/nix/nix.conf (one trusted-users line; NixOS: nix.settings.trusted-users; the hercules-ci-agent " +
    "modules do this for the agent user) and restart nix-daemon. Or put the builders where the daemon reads " +
    "them (/etc/nix/machines). --force writes the files anyway."
  );
}

export async function runUse(names: string[], opts: UseOptions, io: Io): Promise<number> {
  if (names.length === 0) throw new UsageError("use: name at least one builder (host, URI or machine line)");
  const t = await resolveTarget(opts, io, "use");
  const v = t.view;
  const warnings: string[] = [];
  const report = (code: number, extra: Record<string, unknown>, text: string): number => {
    if (opts.json) io.out(json({ ok: code === EXIT.ok, user: t.user.name, warnings, ...extra }));
    else {
      io.out(text);
      for (const w of warnings) io.err(`warning: ${w}\n`);
    }
    return code;
  };

  const sys = systemBuilders(v);
  const chosen = chooseLines(names, sys, v);
  if (chosen.unmatched.length > 0) {
    const avail = sys.result.machines.map(
      (m) =>
        `  ${m.storeUri}  (${formatOrigin({ kind: "file", file: m.origin.file ?? "builders", line: m.origin.line ?? 0 })})`,
    );
    const msg =
      `no builder matches: ${chosen.unmatched.join(", ")}\n` +
      `The system's builders (${sys.where}: builders = ${sys.value || '""'}):\n` +
      (avail.length ? avail.join("\n") : "  (none)") +
      "\n";
    if (opts.json) {
      io.out(json({ ok: false, user: t.user.name, error: "no-match", unmatched: chosen.unmatched }));
      return EXIT.errors;
    }
    io.err(`nix-builders use: ${msg}`);
    return EXIT.errors;
  }
  warnings.push(...chosen.notes);

  const untrusted = v.storeMode === "daemon" && !v.trusted;
  if (untrusted && !opts.force) {
    const msg = `refusing: ${trustFix(v)}`;
    return report(EXIT.errors, { refused: "local-untrusted", message: msg }, `nix-builders use: ${msg}\n`);
  }
  if (untrusted) warnings.push(`written with --force, but ${trustFix(v).replace(/ --force writes.*$/, "")}`);

  // Settings that would override what we write.
  for (const o of t.sel?.overrides ?? []) {
    if (o.name === "builders" || o.name === "extra-builders")
      warnings.push(
        `the agent configuration sets nixSettings.${o.name} (${formatOrigin(o.origin)}), which Nix applies after nix.conf: remove it, or the agent keeps using those builders`,
      );
  }
  if (v.env["NIX_CONFIG"]?.match(/(^|\n)\s*(extra-)?builders\s*=/))
    warnings.push("NIX_CONFIG in the environment sets builders, which Nix applies after nix.conf");
  if (v.env["NIX_USER_CONF_FILES"] !== undefined)
    warnings.push(`NIX_USER_CONF_FILES is set; writing its first file, ${t.confFile}`);

  const keep = opts.append ? buildersEntries(sys.value).map(toBytes) : [];
  // With --append the system's machines are already in through `keep`; only literal lines are added.
  const lines = opts.append
    ? chosen.lines.filter((_l, i) => chosen.from[i] === "command line")
    : chosen.lines;
  if (opts.append && lines.length < chosen.lines.length)
    warnings.push(
      "--append: the chosen builders are already among the system's builders; the file only includes the system's list",
    );
  const machinesText = machinesFileText({ user: t.user.name, keep, lines });
  const buildersValue = `@${toBytes(t.machinesFile)}`;

  const plan = (confOld: string | null) =>
    setConfSetting(confOld ?? "", "builders", buildersValue, {
      disable: ["extra-builders"],
      comment: "set by nix-builders use (nix-builders reset puts back what was here before)",
    });

  // Managed by NixOS / nix-darwin / home-manager: write nothing, say what to configure instead.
  const managed = [t.confFile, t.machinesFile]
    .map((f) => ({ f, target: managedTarget(f) }))
    .filter((x) => x.target !== null);
  if (managed.length > 0) {
    const snippet = nixosSnippet({
      machines: chosen.machines,
      lines: chosen.lines.map(fromBytes),
      agent: t.sel !== null || t.user.name.includes("hercules"),
      append: Boolean(opts.append),
    });
    const text =
      managed
        .map((m) => `${m.f} is managed by Nix (a link to ${m.target}); nothing was written.\n`)
        .join("") +
      "Set this in the system configuration instead (NixOS, or nix-darwin), then rebuild:\n\n" +
      snippet;
    return report(
      EXIT.errors,
      { managed: managed.map((m) => ({ path: m.f, target: m.target })), nixos: snippet },
      text,
    );
  }

  checkDirChain(t.confDir, t.user.home);
  const owner = { uid: t.user.uid, gid: t.user.gid };
  const results: FileResult[] = [];
  let edit = plan(readLatin1(t.confFile));

  if (opts.dryRun) {
    const mOld = readLatin1(t.machinesFile);
    const cOld = readLatin1(t.confFile);
    for (const [f, o, n] of [
      [t.machinesFile, mOld, machinesText],
      [t.confFile, cOld, edit.text],
    ] as const) {
      const diff = fromBytes(unifiedDiff(o, n, { old: f, new: f }));
      results.push({
        path: f,
        status: diff ? "would-write" : "unchanged",
        created: o === null,
        backup: null,
        diff,
      });
    }
  } else {
    ensureDirs(t.stateDir, owner);
    const lock = await acquireLock(t.stateDir);
    try {
      const createdDirs: string[] = [];
      let state = readState(t.stateFile);
      const confOld = readLatin1(t.confFile);
      edit = plan(confOld);
      const wantMachines = Buffer.from(machinesText, "latin1");
      const wantConf = Buffer.from(edit.text, "latin1");
      if (state === null) {
        state = {
          version: 1,
          user: t.user.name,
          uid: t.user.uid,
          created: new Date().toISOString(),
          files: { [t.machinesFile]: snapshot(t.machinesFile), [t.confFile]: snapshot(t.confFile) },
          createdDirs,
        };
      }
      // Record what we are about to write before writing it: reset then knows these bytes are ours.
      for (const [f, b] of [
        [t.machinesFile, wantMachines],
        [t.confFile, wantConf],
      ] as const) {
        if (!state.files[f]) state.files[f] = snapshot(f);
        const rec = state.files[f]!;
        const h = sha256(b);
        if (!rec.written.includes(h)) rec.written.push(h);
      }
      writeState(t.stateFile, state, owner);
      for (const [f, b] of [
        [t.machinesFile, wantMachines],
        [t.confFile, wantConf],
      ] as const) {
        const before = readLatin1(f);
        const exists = before !== null;
        const mode = exists ? fs.statSync(f).mode & 0o7777 : 0o644;
        const r: AtomicWriteResult = await atomicWrite(f, b, { uid: owner.uid, gid: owner.gid, mode });
        const diff = fromBytes(unifiedDiff(before, b.toString("latin1"), { old: f, new: f }));
        if (r.status === "written")
          results.push({ path: f, status: "written", created: r.created, backup: r.backup, diff });
        else if (r.status === "unchanged")
          results.push({ path: f, status: "unchanged", created: false, backup: null, diff: "" });
        else results.push({ path: f, status: "managed", created: false, backup: null, diff: "" });
      }
    } finally {
      lock.release();
    }
  }

  for (const c of edit.changes)
    if (c.includes("extra-builders"))
      warnings.push(
        `${t.confFile} ${c}: it would add builders to the chosen ones (and Nix 2.8 does not know 'extra-builders' at all)`,
      );
  if (edit.laterIncludes.length)
    warnings.push(
      `${t.confFile} has include lines after 'builders' (lines ${edit.laterIncludes.join(", ")}); a builders line in them would win`,
    );

  const changed = results.some((r) => r.status === "written" || r.status === "would-write");
  const restart = t.sel && changed ? (agentRestartCommand(t.sel.agent) ?? "restart the agent") : null;
  let text = `${t.user.name}'s builds ${opts.dryRun ? "would use" : "use"}${opts.append ? " the system's builders and" : ""}:\n`;
  chosen.machines.forEach((m, i) => {
    text += `  ${m.storeUri}  (${m.systemTypes.join(",")}; from ${chosen.from[i]})\n`;
  });
  for (const r of results) {
    text += `\n${r.path}: ${r.status === "written" ? (r.created ? "created" : "written") : r.status}`;
    text += r.backup ? ` (backup: ${r.backup})\n` : "\n";
    if (r.diff) text += r.diff;
  }
  if (!changed) text += "\nNothing to change: the files already say this.\n";
  if (restart && !opts.dryRun)
    text += `\nThe agent reads nix.conf only when it starts: restart it (${restart}).\n`;
  text += `Check it: nix-builders verify ${t.sel ? "--agent" : `--user ${t.user.name}`}\n`;
  return report(
    untrusted || warnings.length > 0 ? EXIT.warnings : EXIT.ok,
    {
      dryRun: Boolean(opts.dryRun),
      machines: chosen.machines.map((m, i) => ({
        storeUri: m.storeUri,
        systems: m.systemTypes,
        from: chosen.from[i],
      })),
      files: results,
      restart,
    },
    text,
  );
}

export function register(program: Command, io: Io, exit: (code: number) => void): void {
  program
    .command("use")
    .description("make a user (or the agent) use only the named builders, through its own nix.conf")
    .argument("<name...>", "builders by host, user@host, store URI, or a whole machines line")
    .option("--user <name>", "the user whose nix.conf to change")
    .option("--agent [name]", "the hercules-ci-agent service's user")
    .option("--agent-config <file>", "the hercules-ci-agent configuration file, when no service names it")
    .option("--append", "keep the system's builders as well (through an @ line)")
    .option("--dry-run", "print the diff, write nothing")
    .option("--force", "write even when the daemon does not trust the user (it will ignore the builders)")
    .option("--nix-version <X.Y>", "follow this Nix version's rules instead of the installed Nix's")
    .option("--json", "print one JSON document")
    .action(async (names: string[], opts: UseOptions) => exit(await runUse(names, opts, io)));
}
