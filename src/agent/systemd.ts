/**
 * Just enough of systemd's unit file format to read a hercules-ci-agent service definition:
 * sections and assignments, `\` line continuation, comments, drop-in merging (empty assignment
 * resets list settings), ExecStart prefixes and quoting (C escapes, `%%`, `$VAR`/`${VAR}`), and
 * Environment= / EnvironmentFile= syntax.
 *
 * Reference: systemd.syntax(7), systemd.service(5) "Command lines", systemd.exec(5) "Environment".
 */

export interface UnitEntry {
  readonly section: string;
  readonly key: string;
  readonly value: string;
  readonly file: string;
  readonly line: number;
}

/** Parse unit file text into assignments. Continuation lines (ending in `\`) are joined with a space. */
export function parseUnitText(text: string, file: string): UnitEntry[] {
  const out: UnitEntry[] = [];
  const lines = text.split(/\r?\n/);
  let section = "";
  for (let i = 0; i < lines.length; i++) {
    const startLine = i + 1;
    let line = lines[i]!;
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#") || trimmed.startsWith(";")) continue;
    if (trimmed.startsWith("[") && trimmed.endsWith("]")) {
      section = trimmed.slice(1, -1);
      continue;
    }
    // continuation: a trailing backslash joins the next line; comment lines inside are skipped
    while (line.endsWith("\\") && i + 1 < lines.length) {
      line = `${line.slice(0, -1)} `;
      i++;
      const next = lines[i]!;
      const t = next.trim();
      if (t.startsWith("#") || t.startsWith(";")) {
        line += "\\"; // keep continuing past the comment
        continue;
      }
      line += next;
    }
    if (line.endsWith("\\")) line = line.slice(0, -1);
    const eq = line.indexOf("=");
    if (eq < 0) continue;
    out.push({
      section,
      key: line.slice(0, eq).trim(),
      value: line.slice(eq + 1).trim(),
      file,
      line: startLine,
    });
  }
  return out;
}

const C_ESCAPES: Record<string, string> = {
  a: "\x07",
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
  v: "\v",
  s: " ",
  "\\": "\\",
  '"': '"',
  "'": "'",
};

interface RawWord {
  readonly text: string;
  readonly quoted: boolean;
}

/** Split a command line or Environment= value into words, systemd style (quotes, C escapes). */
export function splitSystemdWords(s: string): RawWord[] {
  const words: RawWord[] = [];
  let i = 0;
  while (i < s.length) {
    while (i < s.length && /\s/.test(s[i]!)) i++;
    if (i >= s.length) break;
    let w = "";
    let quoted = false;
    let quote: string | null = null;
    while (i < s.length) {
      const c = s[i]!;
      if (quote === null && /\s/.test(c)) break;
      if (quote === null && (c === '"' || c === "'")) {
        quote = c;
        quoted = true;
        i++;
        continue;
      }
      if (quote !== null && c === quote) {
        quote = null;
        i++;
        continue;
      }
      if (c === "\\" && i + 1 < s.length) {
        const e = s[i + 1]!;
        if (C_ESCAPES[e] !== undefined) {
          w += C_ESCAPES[e];
          i += 2;
          continue;
        }
        if (e === "x" && /^[0-9a-fA-F]{2}$/.test(s.slice(i + 2, i + 4))) {
          w += String.fromCharCode(Number.parseInt(s.slice(i + 2, i + 4), 16));
          i += 4;
          continue;
        }
        if (/^[0-7]{3}$/.test(s.slice(i + 1, i + 4))) {
          w += String.fromCharCode(Number.parseInt(s.slice(i + 1, i + 4), 8));
          i += 4;
          continue;
        }
        if (e === "u" && /^[0-9a-fA-F]{4}$/.test(s.slice(i + 2, i + 6))) {
          w += String.fromCharCode(Number.parseInt(s.slice(i + 2, i + 6), 16));
          i += 6;
          continue;
        }
        w += e;
        i += 2;
        continue;
      }
      w += c;
      i++;
    }
    words.push({ text: w, quoted });
  }
  return words;
}

export interface ExecCommand {
  /** Prefix characters as written: any of `@`, `-`, `:`, `+`, `!`, `!!`. */
  readonly prefixes: string;
  /** The program run. */
  readonly executable: string;
  /** argv, including argv[0] (which differs from the executable with the `@` prefix). */
  readonly argv: readonly string[];
  /** Words that still contain an unexpanded `$VAR` or a `%` specifier. */
  readonly unresolved: readonly string[];
}

/**
 * Parse one ExecStart= value. `env` is the unit's environment for `$VAR`/`${VAR}` expansion
 * (not done with the `:` prefix); `unitName` expands `%n`.
 */
export function parseExecCommand(
  value: string,
  env: Readonly<Record<string, string>> = {},
  unitName = "",
): ExecCommand | null {
  const m = /^([@\-:+!]*)/.exec(value)!;
  const prefixes = m[1]!;
  const words = splitSystemdWords(value.slice(prefixes.length));
  if (words.length === 0) return null;
  const expand = !prefixes.includes(":");
  const unresolved: string[] = [];
  const out: string[] = [];
  for (const w of words) {
    let text = w.text.replace(/%(.)/g, (all, c: string) =>
      c === "%" ? "%" : c === "n" && unitName ? unitName : all,
    );
    if (expand) {
      const whole = /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(text);
      if (whole && !w.quoted) {
        const v = env[whole[1]!];
        if (v === undefined) unresolved.push(text);
        else out.push(...v.split(/\s+/).filter(Boolean));
        continue;
      }
      text = text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (all, name: string) => {
        const v = env[name];
        return v === undefined ? all : v;
      });
      text = text.replace(/\$\$/g, "$");
    }
    if (/\$\{?[A-Za-z_]|%[a-zA-Z]/.test(text)) unresolved.push(text);
    out.push(text);
  }
  if (out.length === 0) return null;
  const at = prefixes.includes("@");
  const executable = out[0]!;
  const argv = at ? out.slice(1) : out;
  return { prefixes, executable, argv, unresolved };
}

/** `Environment=` value: space-separated, possibly quoted, `NAME=value` assignments. */
export function parseEnvironmentAssignments(value: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const w of splitSystemdWords(value)) {
    const eq = w.text.indexOf("=");
    if (eq <= 0) continue;
    out.push([w.text.slice(0, eq), w.text.slice(eq + 1)]);
  }
  return out;
}

/** An EnvironmentFile: `NAME=value` lines, `#`/`;` comments, optional quotes, `\` continuation. */
export function parseEnvironmentFile(text: string): Array<{ name: string; value: string; line: number }> {
  const out: Array<{ name: string; value: string; line: number }> = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    let line = lines[i]!;
    while (line.endsWith("\\") && i + 1 < lines.length) {
      line = line.slice(0, -1) + lines[++i]!;
    }
    const t = line.trim();
    if (t === "" || t.startsWith("#") || t.startsWith(";")) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)$/.exec(t);
    if (!m) continue;
    let v = m[2]!;
    if (
      (v.startsWith('"') && v.endsWith('"') && v.length >= 2) ||
      (v.startsWith("'") && v.endsWith("'") && v.length >= 2)
    ) {
      const q = v[0];
      v = v.slice(1, -1);
      if (q === '"') v = v.replace(/\\(["\\$`])/g, "$1");
    } else {
      v = v.replace(/\s+#.*$/, "");
    }
    out.push({ name: m[1]!, value: v, line: lineNo });
  }
  return out;
}

/** The [Service] settings that matter for the agent, after merging unit file and drop-ins. */
export interface ServiceSettings {
  readonly user: string | null;
  readonly group: string | null;
  readonly dynamicUser: boolean;
  /** The last effective ExecStart= (raw value), with where it was set. */
  readonly execStart: { readonly value: string; readonly file: string; readonly line: number } | null;
  /** More than one effective ExecStart= (systemd refuses this for Type=simple). */
  readonly execStartCount: number;
  readonly environment: ReadonlyArray<{ name: string; value: string; file: string; line: number }>;
  readonly environmentFiles: ReadonlyArray<{ path: string; optional: boolean; file: string; line: number }>;
  readonly privateDevices: boolean | null;
  readonly workingDirectory: string | null;
  readonly type: string | null;
}

export function parseBoolean(v: string): boolean | null {
  const s = v.trim().toLowerCase();
  if (["1", "yes", "y", "true", "t", "on"].includes(s)) return true;
  if (["0", "no", "n", "false", "f", "off"].includes(s)) return false;
  return null;
}

/** Merge [Service] assignments in order (unit file first, then drop-ins sorted by name). */
export function mergeServiceSettings(entries: readonly UnitEntry[]): ServiceSettings {
  let user: string | null = null;
  let group: string | null = null;
  let dynamicUser = false;
  let execStarts: Array<{ value: string; file: string; line: number }> = [];
  let environment: Array<{ name: string; value: string; file: string; line: number }> = [];
  let environmentFiles: Array<{ path: string; optional: boolean; file: string; line: number }> = [];
  let privateDevices: boolean | null = null;
  let workingDirectory: string | null = null;
  let type: string | null = null;
  for (const e of entries) {
    if (e.section !== "Service") continue;
    const v = e.value;
    switch (e.key) {
      case "User":
        user = v === "" ? null : v;
        break;
      case "Group":
        group = v === "" ? null : v;
        break;
      case "DynamicUser":
        dynamicUser = parseBoolean(v) ?? false;
        break;
      case "ExecStart":
        if (v === "") execStarts = [];
        else execStarts.push({ value: v, file: e.file, line: e.line });
        break;
      case "Environment":
        if (v === "") environment = [];
        else
          for (const [name, value] of parseEnvironmentAssignments(v))
            environment.push({ name, value, file: e.file, line: e.line });
        break;
      case "EnvironmentFile":
        if (v === "") environmentFiles = [];
        else {
          const optional = v.startsWith("-");
          environmentFiles.push({ path: optional ? v.slice(1) : v, optional, file: e.file, line: e.line });
        }
        break;
      case "PrivateDevices":
        privateDevices = v === "" ? null : parseBoolean(v);
        break;
      case "WorkingDirectory":
        workingDirectory = v === "" ? null : v;
        break;
      case "Type":
        type = v === "" ? null : v;
        break;
    }
  }
  return {
    user,
    group,
    dynamicUser,
    execStart: execStarts.length > 0 ? execStarts[execStarts.length - 1]! : null,
    execStartCount: execStarts.length,
    environment,
    environmentFiles,
    privateDevices,
    workingDirectory,
    type,
  };
}
