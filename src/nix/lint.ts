/**
 * The linter's rules: everything that will break or silently disable remote builds, found before Nix raises
 * it. Pure functions over plain data: configuration views (conf.ts), builders results (machines.ts), the
 * daemon's ignored settings (trust.ts), and facts about key files and machines files that the command gathers
 * on the host (src/host/keyfile.ts). Nothing here touches the file system or runs a program.
 *
 * Severities: `error` = Nix stops (every build fails) or a configured builder can never be used; `warning` =
 * something is silently ignored or disabled, or breaks with another Nix version; `info` = worth knowing.
 * The catalogue of ids is docs/lint.md.
 */
import { type Assignment, type ConfigView, parseConfText } from "./conf.js";
import type { Severity, Summary } from "./findings.js";
import type { BuildersError, BuildersResult, BuildersWarning, IncludeRecord, Machine } from "./machines.js";
import { formatOrigin, type Origin } from "./origin.js";
import { looksLikePrivateKey } from "./redact.js";
import { routeRules, stallMessage, waitingMessage } from "./route.js";
import { isAppendable, SettingRegistry } from "./settings.js";
import { nearestWord } from "./spelling.js";
import { isFakeSsh, lockFileName, renderStoreUri, slotStem, sshAuthority } from "./store-uri.js";
import { isKnownSystem, suggestSystem } from "./systems.js";
import type { IgnoredSetting } from "./trust.js";
import { NIX_LATEST, type NixVersion } from "./version.js";
import { NIX, since } from "./versions.js";

export { exitCodeFor, type Severity, summarise } from "./findings.js";

export interface Finding {
  id: string;
  severity: Severity;
  file: string | null;
  line: number | null;
  message: string;
  fix: string;
  /** What Nix itself prints (without `error: ` / `warning: `), when it says anything. */
  nixMessage?: string;
  /** This finding only follows from another one on the same line (see `groupConsequences`). */
  causedBy?: { id: string; file: string | null; line: number | null };
  /** How many findings follow from this one (they come right after it). */
  consequences?: number;
  /** Internal, never printed: the machine row the finding is about. */
  row?: string;
  /** Internal, never printed: the rows this finding makes into machines that the user did not mean. */
  bogusRows?: readonly string[];
}

export type LintSummary = Summary;

function finding(
  id: string,
  severity: Severity,
  where: { file: string | null; line: number | null },
  message: string,
  fix: string,
  nixMessage?: string,
): Finding {
  const f: Finding = { id, severity, file: where.file, line: where.line, message, fix };
  if (nixMessage !== undefined) f.nixMessage = nixMessage;
  return f;
}

function whereOf(o: Origin | undefined): { file: string | null; line: number | null } {
  return o && o.kind === "file" ? { file: o.file, line: o.line } : { file: null, line: null };
}

function describeOrigin(o: Origin): string {
  return o.kind === "default" ? "the default" : formatOrigin(o);
}

/** Values longer than this are shown cut (a 10 MB line is never echoed in a finding). */
const SHOWN_MAX = 200;

/** A configuration value as our own messages quote it: whole when short, else its start and its length. */
export function shownValue(v: string): string {
  if (v.length <= SHOWN_MAX) return v;
  return `${v.slice(0, SHOWN_MAX - 40)}… (${v.length} characters)`;
}

function vtext(v: NixVersion): string {
  return `${v.major}.${v.minor}`;
}

// ---------------------------------------------------------------------------------------------------------
// Configuration files

/**
 * Every syntax error of one nix.conf text, each with Nix's exact text. Nix stops at the first one; we
 * keep going by blanking the lines up to each error and parsing again (line numbers are preserved).
 */
/** At most this many syntax findings per file (each one re-parses the file). */
const MAX_SYNTAX_FINDINGS = 20;

export function lintConfSyntax(text: string, path: string, version: NixVersion): Finding[] {
  const out: Finding[] = [];
  if (looksLikePrivateKey(text)) {
    // one finding, and nothing of the key (Nix would quote its first line)
    const e = parseConfText(text, path, version).error;
    return [
      finding(
        "conf-syntax",
        "error",
        { file: path, line: e?.line ?? null },
        "this file is a private key, not a nix.conf: Nix stops loading its configuration at its first line, so every Nix command fails (its lines are not shown)",
        "remove the `include` of this key (or point `NIX_USER_CONF_FILES` / `NIX_CONF_DIR` elsewhere); an ssh key belongs in column 3 of a machines line",
        e?.nixMessage,
      ),
    ];
  }
  const lines = text.split("\n");
  let first = true;
  for (let guard = 0; guard <= lines.length && out.length < MAX_SYNTAX_FINDINGS; guard++) {
    const parsed = parseConfText(lines.join("\n"), path, version);
    const e = parsed.error;
    if (!e || e.line === null) break;
    out.push(
      finding(
        "conf-syntax",
        "error",
        { file: path, line: e.line },
        first
          ? "not a valid nix.conf line: Nix stops loading its configuration here, so every Nix command fails"
          : "not a valid nix.conf line (Nix reports it once the lines above are fixed)",
        "write `name = value` with spaces around `=` (`key=value` is one word to Nix), or `include PATH` / `!include PATH`",
        e.nixMessage,
      ),
    );
    first = false;
    for (let i = 0; i < e.line && i < lines.length; i++) lines[i] = "";
  }
  return out;
}

const SYNTAX_MESSAGE = /^(illegal configuration line|syntax error in configuration line) /;

/** The error that stops a configuration from loading (other than syntax errors, see lintConfSyntax). */
export function lintConfError(view: ConfigView, who: string): Finding[] {
  const e = view.error;
  if (!e) return [];
  if (/^include nesting deeper than \d+/.test(e.nixMessage)) {
    // Nix follows an include cycle until its stack overflows: a segmentation fault (exit 139), no message
    const edges: string[] = [];
    for (const f of view.files) {
      const from = f.includedFrom;
      if (from?.kind !== "file") continue;
      const edge = `${from.file}:${from.line} includes ${f.path}`;
      if (!edges.includes(edge)) edges.push(edge);
      if (edges.length >= 6) break;
    }
    const where = view.files.find((f) => f.includedFrom?.kind === "file")?.includedFrom;
    return [
      finding(
        "conf-include-cycle",
        "error",
        where && where.kind === "file"
          ? { file: where.file, line: where.line }
          : { file: e.file, line: e.line },
        `the \`include\` lines form a cycle${edges.length ? ` (${edges.join("; ")})` : ` (through ${e.file})`}: Nix follows it until it crashes with a segmentation fault (exit 139, no error message) while loading ${who}, so every Nix command fails`,
        "remove the `include` that leads back to a file already being read (each file may be included once)",
      ),
    ];
  }
  const syntax = SYNTAX_MESSAGE.test(e.nixMessage);
  return [
    finding(
      syntax ? "conf-syntax" : "conf-error",
      "error",
      { file: e.file, line: e.line },
      syntax
        ? "not a valid nix.conf line: Nix stops loading its configuration here, so every Nix command fails"
        : `Nix cannot load ${who}: every Nix command${who.includes("daemon") ? " the daemon runs" : ""} fails with this error`,
      syntax
        ? "write `name = value` with spaces around `=`, or `include PATH` / `!include PATH`"
        : e.nixMessage.includes("included from")
          ? "create the included file, fix its path, or use `!include` for an optional file"
          : /is not a regular file|is larger than 16 MiB|^reading '/.test(e.nixMessage)
            ? "make it a regular nix.conf file, or remove the `include` (or the NIX_CONF_DIR / NIX_USER_CONF_FILES entry) that names it"
            : "fix the value (see `man nix.conf` for the setting's type)",
      e.nixMessage,
    ),
  ];
}

/** Unknown settings (Nix only warns) and `extra-builders`, which Nix ignores. */
/** Settings that make or break remote builds: a typo of one silently turns remote building off. */
const REMOTE_BUILD_SETTINGS = new Set([
  "builders",
  "builders-use-substitutes",
  "trusted-users",
  "extra-trusted-users",
  "max-jobs",
  "system-features",
  "extra-system-features",
  "extra-platforms",
  "extra-extra-platforms",
  "substituters",
  "trusted-public-keys",
]);

export function lintUnknownSettings(
  view: ConfigView,
  currentBuilders?: string,
  version: NixVersion = NIX_LATEST,
): Finding[] {
  const out: Finding[] = [];
  const seen = new Set<string>();
  const names: string[] = [];
  for (const d of new SettingRegistry(version).settings) {
    names.push(d.name, ...d.aliases);
    if (isAppendable(d.type)) names.push(`extra-${d.name}`);
  }
  for (const a of view.assignments) {
    if (a.setting !== null) continue;
    const where = whereOf(a.origin);
    if (a.name === "extra-builders") {
      const base =
        currentBuilders && currentBuilders.trim() !== "" ? currentBuilders.trim() : "@/etc/nix/machines";
      const includeLines = base
        .split(/[;\n]/)
        .map((s) => s.trim())
        .filter((s) => s !== "");
      out.push(
        finding(
          "extra-builders",
          "warning",
          where,
          `\`extra-builders\` does nothing: \`builders\` is a plain string, not a list, so Nix treats \`extra-builders\` as an unknown setting and these machines are never used${a.value ? ` (${a.value})` : ""}`,
          `Nix reads one \`builders\` value. Put the extra machines in a machines file that also includes the existing ones, e.g. /etc/nix/machines.all containing the line${includeLines.length > 1 ? "s" : ""} ${includeLines.map((l) => `\`${l}\``).join(", ")} followed by one line per extra machine${a.value ? ` (\`${a.value.split(";")[0]!.trim()}\`…)` : ""}, and set \`builders = @/etc/nix/machines.all\``,
          `unknown setting 'extra-builders'`,
        ),
      );
      continue;
    }
    if (seen.has(a.name)) continue;
    seen.add(a.name);
    const near = nearestWord(a.name, names);
    const remote = near !== null && REMOTE_BUILD_SETTINGS.has(near);
    out.push(
      finding(
        "unknown-setting",
        remote ? "warning" : "info",
        where,
        `'${shownValue(a.name)}' is not a setting of this Nix: it is ignored (with a warning)${near ? `; did you mean '${near}'?` : ""}${remote ? ` As written, ${near} keeps its default, which can turn remote builds off` : ""}`,
        near
          ? `rename it: \`${near} = ${shownValue(a.value)}\``
          : "check the spelling against `nix show-config` (2.8) / `nix config show`",
        `unknown setting '${a.name}'`,
      ),
    );
  }
  return out;
}

/**
 * A configuration file that exists but that Nix skips without a word: an included directory, a nix.conf
 * the user cannot read (EACCES), … Its settings silently do not apply. (A file that does not exist is
 * normal for the default files and an error for a plain `include`, reported by lintConfError.)
 */
export function lintSkippedFiles(view: ConfigView, who: string): Finding[] {
  const out: Finding[] = [];
  for (const f of view.files) {
    if (!f.skipped || f.role === "env" || /No such file or directory|Not a directory/.test(f.skipped))
      continue;
    const from = f.includedFrom;
    const where = from?.kind === "file" ? { file: from.file, line: from.line } : { file: f.path, line: null };
    out.push(
      finding(
        "conf-file-skipped",
        "warning",
        where,
        `${f.role === "include" ? "the included file" : "the configuration file"} ${f.path} cannot be read (${f.skipped}): Nix skips it without a word while loading ${who}, so none of its settings apply`,
        /Is a directory/.test(f.skipped)
          ? "include a file, not a directory (Nix has no directory includes)"
          : `make it readable by the user whose configuration it is (e.g. \`chmod 644 ${f.path}\`), or remove it`,
      ),
    );
  }
  return out;
}

/**
 * `extra-platforms` (and `system`) entries that are not system doubles (`aarch64` for `aarch64-linux`):
 * Nix accepts any word, and no derivation ever has that system, so the platform is silently not there.
 */
export function lintPlatformNames(view: ConfigView): Finding[] {
  const out: Finding[] = [];
  for (const setting of ["extra-platforms", "system"] as const) {
    const eff = view.settings.get(setting);
    if (!eff || eff.layer === "default") continue;
    const words = Array.isArray(eff.value) ? (eff.value as string[]) : [String(eff.value)];
    const last = eff.origin[eff.origin.length - 1];
    let n = 0;
    for (const w of words) {
      if (w === "" || isKnownSystem(w) || n++ >= 10) continue;
      const sug = suggestSystem(w);
      out.push(
        finding(
          "platform-not-a-system",
          "warning",
          whereOf(last),
          `'${shownValue(w)}' in \`${setting}\` is not a Nix system double (CPU-kernel, like aarch64-linux): no derivation has that system, so it adds nothing${sug ? `; did you mean '${sug}'?` : ""}`,
          sug ? `write \`${sug}\`` : "write a system double such as `aarch64-linux` or `i686-linux`",
        ),
      );
    }
  }
  return out;
}

/**
 * `extra-platforms = …` and `system-features = …` replace machine-detected defaults instead of adding to
 * them. Flags the assignment that wins when it drops a default.
 */
export function lintReplacedDefaults(
  view: ConfigView,
  defaults: { extraPlatforms: readonly string[]; systemFeatures: readonly string[] },
): Finding[] {
  const out: Finding[] = [];
  const check = (setting: "extra-platforms" | "system-features", def: readonly string[]) => {
    const sets = view.assignments.filter((a) => a.setting === setting && a.op === "set");
    const last = sets[sets.length - 1];
    if (!last) return;
    const eff = view.settings.get(setting)?.value;
    const value = Array.isArray(eff) ? (eff as string[]) : last.value.split(/\s+/).filter((s) => s !== "");
    const lost = def.filter((d) => !value.includes(d));
    if (lost.length === 0) return;
    if (setting === "extra-platforms") {
      out.push(
        finding(
          "extra-platforms-replaces",
          "warning",
          whereOf(last.origin),
          `\`${last.name} = ${shownValue(last.value)}\` replaces the detected default instead of adding to it: this machine no longer builds ${shownValue(lost.join(", "))} locally (the setting's own name starts with \`extra-\`, so \`extra-\` does not append here)`,
          `to add platforms, write \`extra-extra-platforms = ${shownValue(last.value)}\` (the \`extra-\` prefix applied to the setting \`extra-platforms\`)`,
        ),
      );
    } else {
      out.push(
        finding(
          "system-features-replaces",
          "info",
          whereOf(last.origin),
          `\`${last.name} = ${shownValue(last.value)}\` replaces the detected features: ${shownValue(lost.join(", "))} ${lost.length === 1 ? "is" : "are"} no longer available locally, so derivations that require ${lost.length === 1 ? "it" : "them"} must go to a builder`,
          `to add features, write \`extra-system-features = ${shownValue(last.value)}\``,
        ),
      );
    }
  };
  check("extra-platforms", defaults.extraPlatforms);
  check("system-features", defaults.systemFeatures);
  return out;
}

/**
 * A `builders` or `trusted-users` assignment that a later one replaces (docs/agent.md; a NixOS
 * `nix.extraOptions`, an include or a second file). `filter` selects which overridden assignments to report.
 */
export function lintOverrides(
  assignments: readonly Assignment[],
  settings: readonly string[] = ["builders", "trusted-users"],
  filter: (overridden: Assignment, by: Assignment) => boolean = () => true,
): Finding[] {
  const out: Finding[] = [];
  for (const setting of settings) {
    const list = assignments.filter((a) => a.setting === setting);
    for (let i = 0; i < list.length; i++) {
      const a = list[i]!;
      // the next plain assignment replaces everything before it (appends do not)
      const by = list.slice(i + 1).find((b) => b.op === "set");
      if (!by || !filter(a, by)) continue;
      const where = whereOf(a.origin);
      const byText = describeOrigin(by.origin);
      if (setting === "trusted-users") {
        const toks = (s: string) => s.split(/\s+/).filter((t) => t !== "");
        const kept = new Set(toks(by.value));
        const lost = toks(a.value).filter((u) => !kept.has(u));
        const intermediate = list.slice(i + 1, list.indexOf(by)).some((b) => b.op === "append");
        out.push(
          finding(
            "trusted-users-overridden",
            lost.length > 0 ? "warning" : "info",
            where,
            lost.length > 0
              ? `\`${a.name} = ${shownValue(a.value)}\` is replaced by \`${by.name} = ${shownValue(by.value)}\` at ${byText}: ${shownValue(lost.join(", "))} ${lost.length === 1 ? "is" : "are"} not trusted${intermediate ? " (an `extra-trusted-users` in between is dropped too)" : ""}`
              : `\`${a.name}\` is set again at ${byText}; only the last line counts`,
            "keep a single `trusted-users` line listing every trusted user (or add users with `extra-trusted-users`), then restart the daemon",
          ),
        );
      } else {
        const same = a.value.trim() === by.value.trim();
        out.push(
          finding(
            `${setting}-overridden`,
            same ? "info" : "warning",
            where,
            same
              ? `\`${a.name}\` is set again to the same value at ${byText}; only the last line counts`
              : `\`${a.name} = ${a.value === "" ? '""' : shownValue(a.value)}\` never takes effect: \`${by.name} = ${by.value === "" ? '""' : shownValue(by.value)}\` at ${byText} replaces it`,
            `keep one \`${setting}\` line (${setting} is a single string: a later line replaces it, nothing is merged); to combine machine lists, use one machines file that includes the others with \`@/path\` lines`,
          ),
        );
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Where `builders` comes from

export interface BuildersSource {
  value: string;
  origin: readonly Origin[];
  from: "daemon" | "user";
}

export interface BuildersSourceInput {
  version: NixVersion;
  builders: BuildersSource;
  /** The daemon's ignored client settings (UserView.ignored); empty without a daemon. */
  ignored: readonly IgnoredSetting[];
  /** The user whose view this is (for messages). */
  user?: string;
  /** `<confDir>/machines`: the file the default `builders` reads, and how many machines it defines. */
  defaultMachines?: { path: string; exists: boolean; machineCount: number } | null;
}

/** Per-user `builders` the daemon ignores, an empty `builders` hiding a machines file, NIX_REMOTE_SYSTEMS. */
export function lintBuildersSource(input: BuildersSourceInput): Finding[] {
  const out: Finding[] = [];
  const { builders, version } = input;
  for (const ig of input.ignored) {
    if (ig.setting !== "builders" && ig.setting !== "builders-use-substitutes") continue;
    const said =
      ig.nixMessage === null
        ? "Nix says nothing about it"
        : ig.shownByDefault
          ? "Nix prints a warning"
          : "Nix mentions it only at debug level (-vvvv)";
    out.push(
      finding(
        ig.setting === "builders" ? "builders-ignored-untrusted" : "builders-use-substitutes-ignored",
        "warning",
        whereOf(ig.origin),
        `${input.user ?? "this user"} is not a trusted user of the daemon, so the daemon ignores \`${ig.setting} = ${ig.value}\` and uses its own${ig.setting === "builders" ? ` builders (${builders.value === "" ? '""' : builders.value})` : " value"}; ${said}`,
        ig.setting === "builders"
          ? "put the machines in the daemon's configuration (/etc/nix/machines or `builders` in /etc/nix/nix.conf) and restart the daemon, or add the user to `trusted-users` in the daemon's nix.conf"
          : "set it in the daemon's nix.conf, or add the user to `trusted-users` there",
        ig.nixMessage ?? undefined,
      ),
    );
  }
  const last = builders.origin[builders.origin.length - 1];
  const dm = input.defaultMachines;
  if (builders.value.trim() === "" && last && last.kind !== "default") {
    if (dm?.exists && dm.machineCount > 0) {
      out.push(
        finding(
          "builders-empty",
          "warning",
          whereOf(last),
          `\`builders\` is empty (${describeOrigin(last)}), so ${dm.path} with ${dm.machineCount} machine${dm.machineCount === 1 ? "" : "s"} is never read: remote building is off (this is what NixOS writes for \`nix.distributedBuilds = false\`)`,
          `remove the empty \`builders =\` line, or set \`builders = @${dm.path}\` (NixOS: \`nix.distributedBuilds = true;\`), then restart the daemon`,
        ),
      );
    } else if (last.kind !== "flag") {
      out.push(
        finding(
          "builders-empty",
          "info",
          whereOf(last),
          `\`builders\` is empty (${describeOrigin(last)}): remote building is off`,
          "set `builders = @/etc/nix/machines` and list the machines there to build remotely",
        ),
      );
    }
  } else if (dm?.exists && dm.machineCount > 0 && last && last.kind !== "default") {
    const reads = /(^|[\s;])@\s*(\S+)/g;
    const paths = [...builders.value.matchAll(reads)].map((m) => m[2]);
    if (!paths.includes(dm.path)) {
      out.push(
        finding(
          "machines-file-unused",
          "info",
          whereOf(last),
          `\`builders\` (${describeOrigin(last)}) does not include ${dm.path}, so its ${dm.machineCount} machine${dm.machineCount === 1 ? "" : "s"} are not used`,
          `add \`@${dm.path}\` to the builders file if those machines should be used`,
        ),
      );
    }
  }
  if (
    last?.kind === "env" &&
    last.name === "NIX_REMOTE_SYSTEMS" &&
    !since(version, NIX.remoteSystemsNewline)
  ) {
    const files = builders.value.split(/\s+/).filter((s) => s.startsWith("@"));
    if (files.length > 1) {
      out.push(
        finding(
          "nix-remote-systems-split",
          "warning",
          { file: null, line: null },
          `NIX_REMOTE_SYSTEMS lists ${files.length} files; Nix ${vtext(version)} joins them with a space into one path ('${builders.value.slice(1)}'), which does not exist, so no machine is read`,
          "use a single machines file that includes the others (`@/path` lines), or `builders` in nix.conf",
        ),
      );
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Local builds off

export interface LocalJobsInput {
  version: NixVersion;
  /** The client's effective `max-jobs` (a fixed field of the daemon protocol: it always applies). */
  maxJobs: { value: unknown; origin: readonly Origin[] } | null;
  /** The machines the build hook reads (after parsing; none when `builders` is empty or broken). */
  machines: readonly Machine[];
}

/**
 * `max-jobs = 0` turns local builds off: then the builders are the only way to build. With no machine at
 * all, Nix stops at once ("unable to start any build"); when every machine has max jobs 0, the hook never
 * takes a build and Nix waits for a machine forever. Both are errors: no build can complete.
 */
export function lintLocalJobs(input: LocalJobsInput): Finding[] {
  const mj = input.maxJobs;
  if (!mj || Number(mj.value) !== 0) return [];
  const last = mj.origin[mj.origin.length - 1];
  const where = whereOf(last);
  const said = last ? describeOrigin(last) : "the default";
  const rules = routeRules(input.version);
  if (input.machines.length === 0) {
    return [
      finding(
        "max-jobs-zero-no-builders",
        "error",
        where,
        `\`max-jobs = 0\` (${said}) turns local builds off, and there are no builders: every build fails at once`,
        "set `max-jobs` to at least 1 (or `auto`), or configure builders (`builders = @/etc/nix/machines`)",
        stallMessage(rules, false),
      ),
    ];
  }
  if (input.machines.every((m) => m.maxJobs === 0)) {
    return [
      finding(
        "max-jobs-zero-no-slots",
        "error",
        where,
        `\`max-jobs = 0\` (${said}) turns local builds off, and every builder has max jobs 0 (column 4): no machine ever takes a build, so every build waits for a machine forever`,
        "give a builder at least 1 job in column 4, or set `max-jobs` to at least 1",
        waitingMessage(undefined).replace("'<unknown>'", "'…'"),
      ),
    ];
  }
  return [];
}

/** No daemon, and the user cannot write the local store (see app/view.ts storeUnusable). */
export function lintStoreAccess(
  user: string,
  unusable: { stateDir: string; nixMessage: string } | null,
): Finding[] {
  if (!unusable) return [];
  return [
    finding(
      "store-not-writable",
      "error",
      { file: null, line: null },
      `no nix-daemon is running, so ${user}'s Nix opens the store directly, but ${user} cannot write ${unusable.stateDir}: every build (and every Nix command that opens the store) fails`,
      "start the nix-daemon (`systemctl enable --now nix-daemon.socket`), which builds for every user; or run Nix as the store's owner",
      unusable.nixMessage,
    ),
  ];
}

export interface BuildUsersGroupInput {
  /** The effective `build-users-group` of the process that builds, and where it came from. */
  value: string;
  origin: readonly Origin[];
  /** Whether that process runs as root (the daemon; root without a daemon): only then is the group used. */
  builderIsRoot: boolean;
  /** Whether the group exists on this machine (null: not known). */
  groupExists: boolean | null;
}

/**
 * `build-users-group` naming a group that does not exist: root's Nix refuses every local build with
 * `the group '…' specified in 'build-users-group' does not exist` (2.8 and 2.30 alike; it also warns at
 * start-up). Only builds that go to a builder still work.
 */
export function lintBuildUsersGroup(input: BuildUsersGroupInput): Finding[] {
  if (!input.builderIsRoot || input.value === "" || input.groupExists !== false) return [];
  const last = input.origin[input.origin.length - 1];
  const isDefault = !last || last.kind === "default";
  return [
    finding(
      "build-users-group-missing",
      "error",
      whereOf(last),
      `build-users-group is '${shownValue(input.value)}'${isDefault ? " (the default when Nix runs as root)" : ""}, and there is no such group: every local build fails (only builds a builder takes still work)`,
      isDefault
        ? `create the build users (the Nix installer's \`nixbld\` group and its members), or set \`build-users-group =\` (empty: builds then run as root, without build users)`
        : `create the group \`${input.value}\` with its build users, fix the name, or set \`build-users-group =\` (empty)`,
      `the group '${input.value}' specified in 'build-users-group' does not exist`,
    ),
  ];
}

// ---------------------------------------------------------------------------------------------------------
// Machines

export interface MachinesLintInput {
  version: NixVersion;
  machines: BuildersResult;
  /** The same spec parsed with Nix 2.8's splitting; used on Nix ≥ 2.29 to warn about what breaks older Nix. */
  machines28?: BuildersResult | null;
  /** The builders value's own origin is the default (`@<confDir>/machines`): a missing file is normal. */
  defaultIncludePath?: string | null;
  /** Nix's state directory (where `current-load/` is); default /nix/var/nix. */
  stateDir?: string;
}

const WS_ONLY = /^[ \t\r\n]*$/;

/** Features Nix or nixpkgs add on top of whatever else a derivation requires. */
function isAddOnFeature(f: string): boolean {
  return f === "ca-derivations" || f.startsWith("gccarch-");
}

/** The feature names Nix and nixpkgs request (requiredSystemFeatures). */
export const KNOWN_FEATURES: readonly string[] = [
  "benchmark",
  "big-parallel",
  "kvm",
  "nixos-test",
  "uid-range",
  "apple-virt",
  "ca-derivations",
  "recursive-nix",
];

/** Feature sets nixpkgs requests together (NixOS VM tests: `nixos-test` plus `kvm` or `apple-virt`). */
export const KNOWN_COMBINATIONS: readonly (readonly string[])[] = [
  ["kvm", "nixos-test"],
  ["apple-virt", "nixos-test"],
];

function legacyFinding(
  id: "blank-entry" | "semicolon-in-comment" | "space-before-at",
  version: NixVersion,
  where: { file: string | null; line: number | null },
  row: string,
  nixMessage?: string,
): Finding {
  const broken = !since(version, NIX.machinesSplitFix);
  const sev: Severity = broken ? "error" : "warning";
  const suffix = broken ? "" : " — this breaks on Nix < 2.29 (e.g. Debian 12's 2.8)";
  switch (id) {
    case "blank-entry": {
      const what =
        row === "\r" || /^\r+$/.test(row)
          ? "a blank line of a CRLF file (a lone carriage return)"
          : row.includes("\r")
            ? "an entry of only spaces and a carriage return"
            : "an entry of only whitespace (a blank-looking line, an indented comment, or spaces between `;`s)";
      return finding(
        id,
        sev,
        where,
        `${what}: Nix < 2.29 does not trim machine entries, so it reads this as a machine with no store URI and fails every build${suffix}`,
        "delete the whitespace (`sed -i 's/\\r$//; s/^[ \\t]*//' FILE` converts CRLF and removes indentation; do not indent comments; no `; ;`)",
        broken ? nixMessage : undefined,
      );
    }
    case "semicolon-in-comment":
      return finding(
        id,
        sev,
        where,
        `a \`;\` inside a comment: Nix < 2.29 splits on \`;\` before removing comments, so the text after it is read as another machine${suffix}`,
        "remove the `;` from the comment (or put the comment on its own line without `;`)",
      );
    case "space-before-at":
      return finding(
        id,
        sev,
        where,
        `whitespace before \`@\`: Nix < 2.29 does not trim, so \`${row.trim()}\` is not an include but a machine whose store is the local path '${row.trim()}' (relative to /), which "builds" into a local directory${suffix}`,
        `remove the whitespace: \`${row.trim()}\` must start the entry (\`builders = @/a;@/b\` in nix.conf, or one \`@/path\` per line)`,
      );
  }
}

/** The cause of machines nobody meant: a comment's tails (2.8 splits on `;` first), or a row read as a path store. */
function withBogusRows(f: Finding, w: BuildersWarning): Finding {
  const rows = w.code === "semicolon-in-comment" ? (w.tails ?? []) : [w.row];
  return rows.length > 0 ? { ...f, bogusRows: rows } : f;
}

/**
 * One bad line, its follow-on findings grouped: a finding about a row that another finding on the same
 * line says Nix reads as a machine nobody meant (the text after a `;` in a comment, a row with space
 * before `@`) follows from that one. It gets `causedBy` and moves right after its cause, which counts
 * them in `consequences`. The rest keep their order.
 */
export function groupConsequences(findings: readonly Finding[]): Finding[] {
  const causes = findings.filter((f) => f.bogusRows !== undefined && f.bogusRows.length > 0);
  if (causes.length === 0) return findings.map(withoutTags);
  const under = new Map<Finding, Finding[]>();
  const followers = new Set<Finding>();
  for (const f of findings) {
    if (f.row === undefined || f.bogusRows !== undefined) continue;
    const cause = causes.find((c) => c.file === f.file && c.line === f.line && c.bogusRows!.includes(f.row!));
    if (cause === undefined) continue;
    followers.add(f);
    under.set(cause, [...(under.get(cause) ?? []), f]);
  }
  const out: Finding[] = [];
  for (const f of findings) {
    if (followers.has(f)) continue;
    const list = under.get(f);
    if (list === undefined) {
      out.push(f);
      continue;
    }
    out.push({ ...f, consequences: list.length });
    for (const c of list) out.push({ ...c, causedBy: { id: f.id, file: f.file, line: f.line } });
  }
  return out.map(withoutTags);
}

/** The finding without the internal `row` / `bogusRows` tags. */
function withoutTags(f: Finding): Finding {
  if (f.row === undefined && f.bogusRows === undefined) return f;
  const { row: _row, bogusRows: _rows, ...rest } = f;
  return rest;
}

function isLegacyWarning(w: BuildersWarning): "semicolon-in-comment" | "space-before-at" | null {
  if (w.code === "semicolon-in-comment") return "semicolon-in-comment";
  if (w.code === "not-an-include") return "space-before-at";
  return null;
}

function machineWarningFinding(w: BuildersWarning, version: NixVersion): Finding | null {
  const where = { file: w.file, line: w.line };
  switch (w.code) {
    case "unknown-system":
      return finding(
        "unknown-system",
        "warning",
        where,
        `${w.message}: no derivation has this system, so the machine is never chosen for it`,
        w.suggestion
          ? `write '${w.suggestion}' (systems are <cpu>-<kernel> doubles, comma-separated in column 2)`
          : "write a Nix system double such as x86_64-linux or aarch64-darwin (column 2, comma-separated)",
      );
    case "host-key-not-public-key":
      return finding(
        "host-key-not-public-key",
        "error",
        where,
        "column 8 decodes, but not to a public key line `<type> <base64>[ comment]`: Nix writes it as the only known_hosts entry for this host, ssh cannot verify the host, and every connection fails",
        "use the base64 of the whole host public key line: `base64 -w0 /etc/ssh/ssh_host_ed25519_key.pub` run on the builder (or `-` to use known_hosts)",
      );
    case "extra-fields":
      return finding(
        "extra-fields",
        "warning",
        where,
        `${w.message} (a key comment or a space inside a field shifts the columns)`,
        "keep exactly 8 whitespace-separated columns; use `-` for an empty column and commas inside the systems/features columns",
      );
    case "max-jobs-zero":
      return finding(
        "max-jobs-zero",
        "warning",
        where,
        "max jobs (column 4) is 0: Nix never chooses this machine, and builds that only it could take wait forever (postponed) when local builds are off",
        "set column 4 to the number of parallel jobs the builder should take (at least 1), or remove the line",
      );
    case "invalid-ssh-host":
      return finding(
        "invalid-ssh-host",
        "error",
        where,
        w.message,
        "fix the host part of the store URI (column 1)",
      );
    case "port-unsupported":
      return finding(
        "port-unsupported",
        "error",
        where,
        `${w.message}; every connection to this machine fails`,
        "add `Host <alias>` with `HostName` and `Port` to the hook user's ~/.ssh/config (root's under a daemon) and use `ssh://user@<alias>`, or upgrade to Nix ≥ 2.31",
      );
    case "relative-ssh-key":
      return finding(
        "relative-ssh-key",
        "error",
        where,
        w.message,
        "write the key's absolute path in column 3 (e.g. /root/.ssh/builder_ed25519)",
      );
    case "speed-factor-fraction":
      return finding("speed-factor-fraction", "warning", where, w.message, "use a whole number in column 5");
    case "semicolon-in-comment":
    case "not-an-include":
      return null; // handled with the 2.8 parse
  }
  void version;
  return null;
}

function problemFinding(p: BuildersError, isFirst: boolean): Finding {
  const where = { file: p.file, line: p.line };
  const first = isFirst ? " Nix stops at this one." : " (Nix reports the first error only.)";
  if (p.kind === "SysError" && !p.nix) {
    // a FIFO, a device, a huge file: Nix has no error for it, it blocks or reads until memory runs out
    return finding(
      "machines-not-regular",
      "error",
      where,
      `${p.message}: the build hook never gets past it, and with it every build.${first}`,
      "point `@` at a regular machines file (for the daemon: readable by root), or remove the `@` line",
    );
  }
  if (p.kind === "FormatError" && !p.nix) {
    return finding(
      "machines-private-key",
      "error",
      where,
      `${p.message}.${first}`,
      "point `@` at a machines file; the key belongs in column 3 of a machine line (`ssh://host x86_64-linux /root/.ssh/id_builder`)",
    );
  }
  if (p.kind === "SysError") {
    return finding(
      "machines-unreadable",
      "error",
      where,
      `the machines file in \`${p.row.trim()}\` exists but cannot be read: the build hook fails, and with it every build.${first}`,
      "make it a readable regular file (for the daemon: readable by root), or remove the `@` line",
      p.message,
    );
  }
  if (p.kind === "ours") {
    return finding(
      "include-cycle",
      "error",
      where,
      p.message,
      "remove the `@` line that includes a file from itself (directly or through other files)",
    );
  }
  const base =
    p.message.includes("store URL was not found") && p.row.trim() === "-"
      ? "column 1 (the store URI) is missing"
      : "this machine line does not parse";
  return finding(
    "machine-spec-error",
    "error",
    where,
    `${base}: the build hook dies before looking at any derivation, so every build fails (local ones too).${first}`,
    p.message.includes("column #3")
      ? "column 4 (max jobs) must be a whole number; use `-` for columns you leave empty (ssh key, …)"
      : p.message.includes("column #4") || p.message.includes("speed factor")
        ? "column 5 (speed factor) must be a non-negative number (a whole number before Nix 2.20)"
        : p.message.includes("column #7") || p.message.includes("Base64")
          ? "column 8 must be the base64 of the host's public key line: `base64 -w0 /etc/ssh/ssh_host_ed25519_key.pub` (or `-`)"
          : "columns: URI systems ssh-key max-jobs speed supported-features mandatory-features host-key, `-` for empty ones; bypass with `--builders ''` meanwhile",
    p.nix ? p.message : undefined,
  );
}

/** Every bad row and read error (Nix stops at the first), the pre-2.29 splitting traps, per-row findings. */
export function lintMachines(input: MachinesLintInput): Finding[] {
  const { version, machines } = input;
  const out: Finding[] = [];
  const head = since(version, NIX.machinesSplitFix);
  const firstErr = machines.error;
  for (const p of machines.problems) {
    const isFirst =
      firstErr !== null && p.file === firstErr.file && p.line === firstErr.line && p.row === firstErr.row;
    if (!head && p.kind === "FormatError" && WS_ONLY.test(p.row)) {
      out.push(legacyFinding("blank-entry", version, { file: p.file, line: p.line }, p.row, p.message));
      continue;
    }
    out.push({ ...problemFinding(p, isFirst), row: p.row });
  }
  for (const w of machines.warnings) {
    const legacy = isLegacyWarning(w);
    if (legacy) {
      if (!head)
        out.push(withBogusRows(legacyFinding(legacy, version, { file: w.file, line: w.line }, w.row), w));
      continue;
    }
    const f = machineWarningFinding(w, version);
    if (f) out.push({ ...f, row: w.row });
  }
  if (head && input.machines28) {
    const m28 = input.machines28;
    for (const p of m28.problems) {
      if (p.kind === "FormatError" && WS_ONLY.test(p.row))
        out.push(legacyFinding("blank-entry", version, { file: p.file, line: p.line }, p.row));
    }
    for (const w of m28.warnings) {
      const legacy = isLegacyWarning(w);
      if (legacy) out.push(legacyFinding(legacy, version, { file: w.file, line: w.line }, w.row));
    }
  }
  // an include that failed with another error than ENOENT is a read error (reported above), not a missing file
  const readErrors = machines.problems.filter((p) => p.kind === "SysError");
  const missing = machines.includes.filter(
    (inc) =>
      !readErrors.some(
        (p) =>
          p.file === inc.from.file && p.line === inc.from.line && p.row.trim().slice(1).trim() === inc.path,
      ),
  );
  // one at a time: a spread of a few hundred thousand findings overflows the stack
  for (const list of [
    lintIncludes(missing, input.defaultIncludePath ?? null),
    lintDuplicates(machines.machines, version),
    lintMandatoryFeatures(machines.machines),
    lintLockFileNames(machines.machines, version, input.stateDir ?? "/nix/var/nix"),
  ])
    for (const f of list) out.push(f);
  return out;
}

/** Longest file name (bytes) Linux file systems take (NAME_MAX); a longer one fails with ENAMETOOLONG. */
const NAME_MAX = 255;

/**
 * A store URI too long for a file name: the hook takes a job slot by locking
 * `<state>/current-load/<URI with / as _>-<slot>`, and a name over 255 bytes cannot be opened, so the hook
 * dies on every build that could go to this machine (Nix 2.8 and 2.30 alike). Long URIs come from
 * `?ssh-key=…&base64-ssh-public-host-key=…` parameters: put those in columns 3 and 8 instead.
 */
export function lintLockFileNames(
  machines: readonly Machine[],
  version: NixVersion,
  stateDir: string,
): Finding[] {
  const out: Finding[] = [];
  const seen = new Set<string>();
  for (const m of machines) {
    if (m.maxJobs === 0 || seen.has(m.storeUri)) continue;
    seen.add(m.storeUri);
    // The slot file's name as that version's hook makes it (2.23+: the rendered URI, parameters sorted).
    const name = `${slotStem(m.storeUri, version) ?? lockFileName(m.storeUri)}-0`;
    const bytes = new TextEncoder().encode(name).length;
    if (bytes <= NAME_MAX) continue;
    const params = m.storeUri.includes("?");
    out.push(
      finding(
        "store-uri-too-long",
        "error",
        m.origin,
        `the store URI is too long for the hook's slot lock file (its name would be ${bytes} bytes, over the 255 a file name may have): the build hook dies with "File name too long", so every build that could go to this machine fails`,
        params
          ? "move `ssh-key=` to column 3 and `base64-ssh-public-host-key=` to column 8 of the machine line, keeping column 1 short (`ssh://user@host`)"
          : "shorten column 1 (a host alias from ssh_config(5) keeps the URI short)",
        // Nix prints the whole name; past 1 KiB we show its start (a 10 MB URI is never echoed)
        `opening lock file '${stateDir}/current-load/${name.length > 1024 ? shownValue(name) : name}': File name too long`,
      ),
    );
  }
  return out;
}

/** `@file` entries whose file does not exist: Nix skips them without a word. */
export function lintIncludes(includes: readonly IncludeRecord[], defaultPath: string | null): Finding[] {
  const out: Finding[] = [];
  for (const inc of includes) {
    if (inc.found) continue;
    if (defaultPath !== null && inc.resolved === defaultPath && inc.from.file === null) continue;
    const rel = inc.path !== "" && !inc.path.startsWith("/");
    out.push(
      finding(
        "include-missing",
        "warning",
        inc.from,
        inc.path === ""
          ? "`@` with no path: Nix skips it silently"
          : `machines file ${inc.resolved} does not exist: Nix skips \`@${inc.path}\` silently, so its machines are not used${rel ? " (a relative path is relative to /, where the build hook runs)" : ""}`,
        rel ? `write the absolute path: \`@/…/${inc.path}\`` : `create ${inc.resolved} or fix the path`,
      ),
    );
  }
  return out;
}

/**
 * The same store URI twice: both rows share one set of slot locks. From 2.23 the hook names the locks by
 * the rendered URI, so two spellings of one store (`/tmp/m` and `local:///tmp/m`, `ssh://h?a=1&b=2` and
 * `ssh://h?b=2&a=1`) share them too (`renderStoreUri`).
 */
export function lintDuplicates(machines: readonly Machine[], version?: NixVersion): Finding[] {
  const out: Finding[] = [];
  const firstSeen = new Map<string, Machine>();
  for (const m of machines) {
    const key = version === undefined ? m.storeUri : (renderStoreUri(m.storeUri, version) ?? m.storeUri);
    const prev = firstSeen.get(key);
    if (!prev) {
      firstSeen.set(key, m);
      continue;
    }
    const same = prev.storeUri === m.storeUri ? "" : ` (Nix ${vtext(version!)} reads both as ${key})`;
    const at = prev.origin.file ? `${prev.origin.file}:${prev.origin.line}` : "the builders value";
    out.push(
      finding(
        "duplicate-machine",
        "warning",
        m.origin,
        `${m.storeUri} is already defined at ${at}${same}: Nix keeps both rows, but they share the same job-slot locks (current-load/${key.replaceAll("/", "_")}-N), so max jobs do not add up and this row is only chosen when the first does not fit`,
        "merge the two lines into one (union of the systems and features, one max-jobs value)",
      ),
    );
  }
  return out;
}

/**
 * Mandatory features (column 7). A machine takes a derivation only if every mandatory feature is among the
 * derivation's requiredSystemFeatures (and every required feature is supported or mandatory). So a
 * mandatory set is met only by derivations that request all of it at once. Our rule, precisely:
 *  - `mandatory-features-combined` (warning): two or more mandatory features (ignoring `ca-derivations` and
 *    `gccarch-*`, which Nix/nixpkgs add on top of any other features) that are not a subset of a combination
 *    nixpkgs requests (`nixos-test`+`kvm`, `nixos-test`+`apple-virt`): no ordinary derivation asks for them
 *    together, so the machine stays idle. Usually the features belong in column 6 (supported).
 *  - `mandatory-feature-unknown` (info): a mandatory feature outside the standard vocabulary and not
 *    supported by any other machine: only derivations that name it explicitly will go there (check spelling).
 * Local `system-features` play no role: derivations request features whether or not this machine has them.
 */
export function lintMandatoryFeatures(machines: readonly Machine[]): Finding[] {
  const out: Finding[] = [];
  // How many machines offer each feature (supported or mandatory), counted once per machine: a mandatory
  // feature of m is offered by another machine iff its count is at least 2. One pass, not one set per machine.
  const offeredBy = new Map<string, number>();
  for (const x of machines) {
    for (const f of new Set([...x.supportedFeatures, ...x.mandatoryFeatures]))
      offeredBy.set(f, (offeredBy.get(f) ?? 0) + 1);
  }
  for (const m of machines) {
    const core = m.mandatoryFeatures.filter((f) => !isAddOnFeature(f));
    if (core.length >= 2 && !KNOWN_COMBINATIONS.some((c) => core.every((f) => c.includes(f)))) {
      out.push(
        finding(
          "mandatory-features-combined",
          "warning",
          m.origin,
          `mandatory features ${core.join(", ")}: this machine only takes derivations that require all of them at once, and no nixpkgs derivation requests that combination, so it will sit idle`,
          `move the features to column 6 (supported) and keep in column 7 only a feature that every derivation meant for this machine requires (e.g. \`${m.storeUri} ${m.systemTypes.join(",") || "-"} … ${[...new Set([...m.supportedFeatures, ...m.mandatoryFeatures])].join(",")} -\`)`,
        ),
      );
    }
    for (const f of m.mandatoryFeatures) {
      if (KNOWN_FEATURES.includes(f) || isAddOnFeature(f) || (offeredBy.get(f) ?? 0) >= 2) continue;
      out.push(
        finding(
          "mandatory-feature-unknown",
          "info",
          m.origin,
          `mandatory feature '${f}' is not a feature Nix or nixpkgs requests: only derivations with requiredSystemFeatures containing '${f}' will use this machine`,
          `check the spelling; standard features are ${KNOWN_FEATURES.join(", ")}`,
        ),
      );
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Key files and machines files on the host

export interface KeyFileFacts {
  /** The path as written in column 3. */
  path: string;
  /** The path ssh opens (`~` expanded for the hook user, relative paths against `/`). */
  resolved?: string;
  exists: boolean;
  /** False for a directory or another non-regular file. */
  isFile?: boolean | null;
  /** null when it could not be checked (we are not root and the hook user is someone else). */
  readableByHookUser: boolean | null;
  /** Permission bits (mode & 0o7777), null when unknown. */
  mode: number | null;
  /** Owner uid; ssh refuses a group/world-accessible key only when its owner is the user running ssh. */
  ownerUid?: number | null;
  /** `ssh-keygen -y -P '' -f KEY` failed with "incorrect passphrase": true; succeeded: false; unknown: null. */
  passphrase: boolean | null;
  /** ssh-keygen's reason when the file is not a private key it can load (`invalid format`, …). */
  loadError?: string | null;
  /** The path (or its real path) is inside the Nix store. */
  inStore: boolean;
}

export interface KeyLintInput {
  version: NixVersion;
  machines: readonly Machine[];
  facts: readonly KeyFileFacts[];
  hookUser: { name: string; uid: number };
}

function fmtMode(m: number): string {
  return `0${(m & 0o777).toString(8).padStart(3, "0")}`;
}

/** Does this machine connect with ssh (so column 3 is used)? */
export function usesSshKey(m: Machine, version: NixVersion): boolean {
  const a = sshAuthority(m.storeUri, version);
  return (
    a.valid &&
    a.scheme !== null &&
    (a.scheme === "ssh" || a.scheme === "ssh-ng") &&
    !isFakeSsh(m.storeUri, version)
  );
}

/** Key files that are missing, unreadable, too open, passphrase-protected, not keys, or in the store. */
export function lintKeyFiles(input: KeyLintInput): Finding[] {
  const out: Finding[] = [];
  const byPath = new Map(input.facts.map((f) => [f.path, f]));
  // one set of findings per key path, at the first machine that names it; the others are counted
  const users = new Map<string, { first: Machine; count: number }>();
  for (const m of input.machines) {
    if (m.sshKey === null || !byPath.has(m.sshKey) || !usesSshKey(m, input.version)) continue;
    const u = users.get(m.sshKey);
    if (u) u.count++;
    else users.set(m.sshKey, { first: m, count: 1 });
  }
  for (const [path, { first: m, count }] of users) {
    const f = byPath.get(path)!;
    const also = count > 1 ? ` (${count} machines use this key; the first is shown)` : "";
    const k: KeyCheck = {
      f,
      where: m.origin,
      shown: `${f.resolved && f.resolved !== f.path ? `${f.path} (${f.resolved})` : f.path}${also}`,
      // ssh expands `~` before it opens the key, and its messages name the expanded path
      sshName: f.path.startsWith("~") && f.resolved ? f.resolved : f.path,
      hookUser: input.hookUser,
    };
    // the findings of this key are about the first machine that names it
    for (const x of keyFileFindings(k)) out.push({ ...x, row: m.row });
  }
  return out;
}

/** One key file, and how the findings about it name it. */
interface KeyCheck {
  f: KeyFileFacts;
  where: { file: string | null; line: number | null };
  /** The path as the findings show it (with its resolved path and how many machines use it). */
  shown: string;
  /** The path as ssh's messages name it. */
  sshName: string;
  hookUser: { name: string; uid: number };
}

function keyFileFindings(k: KeyCheck): Finding[] {
  const out: Finding[] = [];
  if (k.f.inStore) out.push(keyInStore(k));
  const absent = keyAbsent(k);
  if (absent) return [...out, absent];
  const readable = keyReadability(k);
  if (readable) out.push(readable);
  const invalid = keyInvalid(k);
  if (invalid) return [...out, invalid];
  const open = keyPermissions(k);
  if (open) out.push(open);
  if (k.f.passphrase === true) {
    out.push(
      finding(
        "key-passphrase",
        "error",
        k.where,
        `ssh key ${k.shown} is protected by a passphrase: the build hook runs ssh without a terminal or agent, so it cannot unlock it and authentication fails`,
        `use a key without a passphrase for the builder (\`ssh-keygen -p -N '' -f ${k.f.resolved ?? k.f.path}\` removes it), readable only by ${k.hookUser.name}`,
        `Load key "${k.sshName}": incorrect passphrase supplied to decrypt private key`,
      ),
    );
  }
  return out;
}

function keyInStore(k: KeyCheck): Finding {
  return finding(
    "key-in-store",
    "error",
    k.where,
    `ssh key ${k.shown} is in the Nix store: it is world-readable there (so leaked to every user and every cache it is copied to), and ssh run by the store's owner refuses it as an unprotected private key`,
    'keep the key outside the store (e.g. /etc/nix/builder_ed25519, mode 0600, owned by root) and write that path in column 3; NixOS: `sshKey = "/etc/nix/..."` as a string, not a path literal',
  );
}

/** Missing, or not a regular file: nothing else about it can be said. */
function keyAbsent(k: KeyCheck): Finding | null {
  const { f, hookUser } = k;
  if (!f.exists)
    return finding(
      "key-missing",
      "error",
      k.where,
      `ssh key ${k.shown} does not exist: ssh warns and tries ${hookUser.name}'s default keys instead, which the builder usually does not accept`,
      `create the key (\`ssh-keygen -t ed25519 -N '' -f ${f.resolved ?? f.path}\`) and authorise its .pub on the builder, or fix the path`,
      `Warning: Identity file ${k.sshName} not accessible: No such file or directory.`,
    );
  if (f.isFile === false)
    return finding(
      "key-not-a-file",
      "error",
      k.where,
      `ssh key ${k.shown} is not a regular file`,
      "point column 3 at the private key file",
    );
  return null;
}

function keyReadability(k: KeyCheck): Finding | null {
  const { f, hookUser } = k;
  const runs = `ssh runs as ${hookUser.name}${hookUser.uid === 0 ? " (the build hook runs as root under the daemon)" : ""}`;
  if (f.readableByHookUser === false)
    return finding(
      "key-unreadable",
      "error",
      k.where,
      `ssh key ${k.shown} is not readable by ${hookUser.name}; ${runs}, so this key is never offered`,
      hookUser.uid === 0
        ? `make the key readable by root (it normally is; check ACLs and the file system)`
        : `give ${hookUser.name} read access: \`chown ${hookUser.name} ${f.resolved ?? f.path} && chmod 600 ${f.resolved ?? f.path}\``,
      `Load key "${k.sshName}": Permission denied`,
    );
  if (f.readableByHookUser === null)
    return finding(
      "key-unchecked",
      "info",
      k.where,
      `could not check whether ${hookUser.name} can read ssh key ${k.shown} (run the lint as root to check)`,
      `run \`sudo nix-builders lint\``,
    );
  return null;
}

function tooOpenText(mode: number, sshName: string): string {
  return `Permissions ${fmtMode(mode)} for '${sshName}' are too open.\nIt is required that your private key files are NOT accessible by others.\nThis private key will be ignored.`;
}

/** Not a private key at all (a .pub, a certificate, …): that is the fix; its mode does not matter. */
function keyInvalid(k: KeyCheck): Finding | null {
  const { f, hookUser } = k;
  const pub = f.path.endsWith(".pub");
  if (!f.loadError && !pub) return null;
  // ssh-keygen refuses a 0644 .pub on its mode before parsing it, so loadError may be unknown here
  const tooOpen = f.mode !== null && (f.mode & 0o077) !== 0;
  const ownedByHook = f.ownerUid === undefined || f.ownerUid === null || f.ownerUid === hookUser.uid;
  return finding(
    "key-invalid",
    "error",
    k.where,
    pub
      ? `ssh key ${k.shown} is a public key (.pub): ssh needs the private half, so authentication fails${f.loadError ? ` (${f.loadError})` : ""}`
      : `ssh key ${k.shown} is not a private key ssh can load (${f.loadError})`,
    pub
      ? `write the private key's path in column 3: ${f.path.slice(0, -4)}`
      : "point column 3 at the private key (the file without .pub)",
    f.loadError
      ? `Load key "${k.sshName}": ${f.loadError}`
      : tooOpen && ownedByHook
        ? tooOpenText(f.mode!, k.sshName)
        : undefined,
  );
}

function keyPermissions(k: KeyCheck): Finding | null {
  const { f, hookUser } = k;
  if (f.mode === null || (f.mode & 0o077) === 0 || f.inStore) return null;
  const ownedByHook = f.ownerUid === undefined || f.ownerUid === null || f.ownerUid === hookUser.uid;
  return finding(
    "key-permissions",
    ownedByHook ? "error" : "warning",
    k.where,
    ownedByHook
      ? `ssh key ${k.shown} has mode ${fmtMode(f.mode)}: it is accessible by group or others, and ssh (run by its owner ${hookUser.name}) ignores such a key`
      : `ssh key ${k.shown} has mode ${fmtMode(f.mode)}: other users can read this private key (ssh still uses it, because ${hookUser.name} does not own it)`,
    `chmod 600 ${f.resolved ?? f.path}`,
    ownedByHook ? tooOpenText(f.mode, k.sshName) : undefined,
  );
}

/** Facts about a machines file named by `@path`, from the hook user's point of view. */
export interface MachinesFileFacts {
  path: string;
  readableByHookUser: boolean | null;
}

/** A found machines file the hook user cannot read (we could, as another user): Nix's read fails. */
export function lintMachinesFileAccess(
  includes: readonly IncludeRecord[],
  facts: readonly MachinesFileFacts[],
  hookUser: { name: string },
  version: NixVersion,
): Finding[] {
  const out: Finding[] = [];
  for (const inc of includes) {
    if (!inc.found) continue;
    const f = facts.find((x) => x.path === inc.resolved);
    if (f?.readableByHookUser !== false) continue;
    const q = since(version, NIX.pathFmtQuotes) ? `"${inc.path}"` : `'${inc.path}'`;
    out.push(
      finding(
        "machines-unreadable",
        "error",
        inc.from,
        `machines file ${inc.resolved} is not readable by ${hookUser.name}, who runs the build hook: the hook fails, and with it every build`,
        `make it readable by ${hookUser.name} (e.g. \`chmod 644 ${inc.resolved}\`; it holds no secrets)`,
        `opening file ${q}: Permission denied`,
      ),
    );
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Putting it together

const SEVERITY_ORDER: Record<Severity, number> = { error: 0, warning: 1, info: 2 };

/** Drop repeats (same id, place and message) and sort by file (no file last), line, severity, id. */
export function normaliseFindings(findings: readonly Finding[]): Finding[] {
  const seen = new Set<string>();
  const out: Finding[] = [];
  for (const f of findings) {
    const k = `${f.id}\0${f.file}\0${f.line}\0${f.message}`;
    if (seen.has(k)) continue;
    seen.add(k);
    out.push(f);
  }
  // a syntax error found in a file's text and the same error from the view: keep the first
  const syntaxSeen = new Set<string>();
  const deduped = out.filter((f) => {
    if (f.id !== "conf-syntax") return true;
    const k = `${f.file}\0${f.line}`;
    if (syntaxSeen.has(k)) return false;
    syntaxSeen.add(k);
    return true;
  });
  return deduped.sort((a, b) => {
    if (a.file !== b.file) {
      if (a.file === null) return 1;
      if (b.file === null) return -1;
      return a.file < b.file ? -1 : 1;
    }
    const la = a.line ?? 0;
    const lb = b.line ?? 0;
    if (la !== lb) return la - lb;
    if (a.severity !== b.severity) return SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity];
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  });
}
