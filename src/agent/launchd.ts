/**
 * launchd property lists (XML form only) and the shell wrappers nix-darwin puts around the agent.
 *
 * nix-darwin's launchd module turns `script = "exec …/hercules-ci-agent --config FILE"` into a
 * store script and runs it as ProgramArguments = ["/bin/sh", "-c", "/bin/wait4path /nix/store && exec
 * <script>"]. We follow that: from ProgramArguments, through `sh -c` strings, into script files
 * (up to a small depth), looking for a command whose program is `hercules-ci-agent` and reading
 * its `--config`. What we do not do: run the shell, follow `source`/`.`, functions, conditionals,
 * or variables other than plain `$NAME`/`${NAME}` from the plist's EnvironmentVariables and simple
 * `NAME=value` lines earlier in the script. Binary plists are not parsed (`plutil -convert xml1`).
 */

export type PlistValue =
  | string
  | number
  | boolean
  | Date
  | PlistValue[]
  | { [k: string]: PlistValue }
  | Uint8Array;

export class PlistError extends Error {}

function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|amp|lt|gt|quot|apos);/g, (_all, e: string) => {
    if (e === "amp") return "&";
    if (e === "lt") return "<";
    if (e === "gt") return ">";
    if (e === "quot") return '"';
    if (e === "apos") return "'";
    if (e.startsWith("#x")) return String.fromCodePoint(Number.parseInt(e.slice(2), 16));
    return String.fromCodePoint(Number.parseInt(e.slice(1), 10));
  });
}

type PlistToken = { kind: "open" | "close" | "empty"; name: string } | { kind: "text"; text: string };

/** Parse an XML property list. Throws PlistError on binary plists and malformed XML. */
export function parsePlist(text: string): PlistValue {
  if (text.startsWith("bplist"))
    throw new PlistError("binary property list (convert with: plutil -convert xml1)");
  const parser = new PlistParser(plistTokens(text));
  const v = parser.value();
  parser.skipWs();
  return v;
}

function plistTokens(text: string): PlistToken[] {
  // drop prolog, doctype, comments
  const body = text
    .replace(/<\?xml[\s\S]*?\?>/g, "")
    .replace(/<!DOCTYPE[\s\S]*?>/g, "")
    .replace(/<!--[\s\S]*?-->/g, "");
  const tokens: PlistToken[] = [];
  const re = /<(\/?)([A-Za-z][\w.-]*)([^>]*?)(\/?)>|([^<]+)/g;
  let m: RegExpExecArray | null;
  // biome-ignore lint/suspicious/noAssignInExpressions: tokenizer loop
  while ((m = re.exec(body)) !== null) {
    if (m[5] !== undefined) {
      tokens.push({ kind: "text", text: m[5] });
    } else if (m[1] === "/") tokens.push({ kind: "close", name: m[2]! });
    else if (m[4] === "/") tokens.push({ kind: "empty", name: m[2]! });
    else tokens.push({ kind: "open", name: m[2]! });
  }
  return tokens;
}

const EMPTY_PLIST_ELEMENTS: Readonly<Record<string, () => PlistValue>> = {
  true: () => true,
  false: () => false,
  string: () => "",
  array: () => [],
  dict: () => ({}),
};

class PlistParser {
  private i = 0;
  constructor(private readonly tokens: readonly PlistToken[]) {}

  skipWs(): void {
    while (this.i < this.tokens.length) {
      const t = this.tokens[this.i]!;
      if (t.kind === "text" && t.text.trim() === "") this.i++;
      else break;
    }
  }

  private textUntilClose(name: string): string {
    let s = "";
    while (this.i < this.tokens.length) {
      const t = this.tokens[this.i]!;
      if (t.kind === "close" && t.name === name) {
        this.i++;
        return decodeEntities(s);
      }
      if (t.kind !== "text") throw new PlistError(`unexpected <${t.name}> inside <${name}>`);
      s += t.text;
      this.i++;
    }
    throw new PlistError(`unclosed <${name}>`);
  }

  /** True (and consumes it) when the next token closes `name`. */
  private closes(name: string): boolean {
    this.skipWs();
    const n = this.tokens[this.i];
    if (n && n.kind === "close" && n.name === name) {
      this.i++;
      return true;
    }
    return false;
  }

  value(): PlistValue {
    this.skipWs();
    const t = this.tokens[this.i++];
    if (t === undefined) throw new PlistError("unexpected end of document");
    if (t.kind === "text")
      throw new PlistError(`unexpected text ${JSON.stringify(t.text.trim().slice(0, 20))}`);
    if (t.kind === "close") throw new PlistError(`unexpected </${t.name}>`);
    if (t.kind === "empty") {
      const make = Object.hasOwn(EMPTY_PLIST_ELEMENTS, t.name) ? EMPTY_PLIST_ELEMENTS[t.name] : undefined;
      if (!make) throw new PlistError(`unexpected <${t.name}/>`);
      return make();
    }
    return this.element(t.name);
  }

  private element(name: string): PlistValue {
    switch (name) {
      case "plist": {
        const v = this.value();
        if (!this.closes("plist")) throw new PlistError("expected </plist>");
        return v;
      }
      case "string":
        return this.textUntilClose("string");
      case "integer":
        return Number.parseInt(this.textUntilClose("integer").trim(), 10);
      case "real":
        return Number.parseFloat(this.textUntilClose("real").trim());
      case "date":
        return new Date(this.textUntilClose("date").trim());
      case "data":
        return Uint8Array.from(Buffer.from(this.textUntilClose("data").replace(/\s+/g, ""), "base64"));
      case "true":
      case "false":
        this.textUntilClose(name);
        return name === "true";
      case "array": {
        const arr: PlistValue[] = [];
        while (!this.closes("array")) arr.push(this.value());
        return arr;
      }
      case "dict":
        return this.dict();
      default:
        throw new PlistError(`unknown element <${name}>`);
    }
  }

  private dict(): PlistValue {
    const obj: { [k: string]: PlistValue } = {};
    while (!this.closes("dict")) {
      const n = this.tokens[this.i];
      if (n?.kind !== "open" || n.name !== "key") throw new PlistError("expected <key> in <dict>");
      this.i++;
      const key = this.textUntilClose("key");
      obj[key] = this.value();
    }
    return obj;
  }
}

// ---------------------------------------------------------------------------------------------
// Shell

export interface ShellWord {
  readonly text: string;
  /** Contains a `$` expansion we could not resolve, or a command substitution. */
  readonly unresolved: boolean;
}

/** A shell command: words up to an operator (`;`, `&&`, `||`, `|`, `&`, newline). */
export type ShellCommand = readonly ShellWord[];

/**
 * Split POSIX shell text into simple commands. Handles quotes, backslashes, comments and
 * `$NAME`/`${NAME}` from `env` (and from plain `NAME=value` commands earlier in the text).
 */
export function splitShellCommands(text: string, env: Readonly<Record<string, string>> = {}): ShellCommand[] {
  return new ShellSplitter(text, env).commands();
}

const BRACED_VAR = /\{([A-Za-z_][A-Za-z0-9_]*)\}/y;
const PLAIN_VAR = /([A-Za-z_][A-Za-z0-9_]*)/y;

/** The cursor of splitShellCommands, with the variables assigned so far. */
class ShellSplitter {
  private i = 0;
  private readonly vars: Record<string, string>;
  private readonly out: ShellCommand[] = [];
  private cur: ShellWord[] = [];
  constructor(
    private readonly text: string,
    env: Readonly<Record<string, string>>,
  ) {
    this.vars = { ...env };
  }

  commands(): ShellCommand[] {
    const { text } = this;
    while (this.i < text.length) {
      const c = text[this.i]!;
      if (c === " " || c === "\t") this.i++;
      else if (c === "\n" || c === ";") {
        this.endCommand();
        this.i++;
      } else if (c === "&" || c === "|") {
        this.endCommand();
        this.i += text[this.i + 1] === c ? 2 : 1;
      } else if (c === "#") {
        while (this.i < text.length && text[this.i] !== "\n") this.i++;
      } else if (c === "\\" && text[this.i + 1] === "\n") this.i += 2;
      else this.cur.push(this.word());
    }
    this.endCommand();
    return this.out;
  }

  private endCommand(): void {
    if (this.cur.length === 0) return;
    // remember plain assignments (NAME=value with nothing after)
    if (this.cur.every((w) => /^[A-Za-z_][A-Za-z0-9_]*=/.test(w.text))) {
      for (const w of this.cur) {
        const eq = w.text.indexOf("=");
        if (!w.unresolved) this.vars[w.text.slice(0, eq)] = w.text.slice(eq + 1);
      }
    }
    this.out.push(this.cur);
    this.cur = [];
  }

  /** A `$` expansion, at the `$`. */
  private expandVar(): { text: string; ok: boolean } {
    const { text } = this;
    BRACED_VAR.lastIndex = this.i + 1;
    PLAIN_VAR.lastIndex = this.i + 1;
    const m = BRACED_VAR.exec(text) ?? PLAIN_VAR.exec(text);
    if (!m) {
      if (text[this.i + 1] === "(") {
        // command substitution: skip to the matching paren
        let depth = 0;
        let j = this.i + 1;
        for (; j < text.length; j++) {
          if (text[j] === "(") depth++;
          else if (text[j] === ")" && --depth === 0) break;
        }
        const s = text.slice(this.i, j + 1);
        this.i = j + 1;
        return { text: s, ok: false };
      }
      this.i++;
      return { text: "$", ok: true };
    }
    this.i += 1 + m[0].length;
    const v = this.vars[m[1]!];
    return v === undefined
      ? { text: m[0] === m[1] ? `$${m[1]}` : `\${${m[1]}}`, ok: false }
      : { text: v, ok: true };
  }

  private word(): ShellWord {
    const { text } = this;
    let w = "";
    let unresolved = false;
    while (this.i < text.length) {
      const d = text[this.i]!;
      if (" \t\n;&|".includes(d)) break;
      if (d === "\\") {
        if (text[this.i + 1] !== "\n") w += text[this.i + 1] ?? "";
        this.i += 2;
      } else if (d === "'") {
        const end = text.indexOf("'", this.i + 1);
        const stop = end < 0 ? text.length : end;
        w += text.slice(this.i + 1, stop);
        this.i = stop + 1;
      } else if (d === '"') {
        const q = this.doubleQuoted();
        w += q.text;
        if (!q.ok) unresolved = true;
      } else if (d === "$") {
        const x = this.expandVar();
        w += x.text;
        if (!x.ok) unresolved = true;
      } else {
        if (d === "`") unresolved = true;
        w += d;
        this.i++;
      }
    }
    return { text: w, unresolved };
  }

  /** A double-quoted part of a word, at its opening quote. */
  private doubleQuoted(): { text: string; ok: boolean } {
    const { text } = this;
    let w = "";
    let ok = true;
    this.i++;
    while (this.i < text.length && text[this.i] !== '"') {
      if (text[this.i] === "\\" && '"\\$`\n'.includes(text[this.i + 1] ?? "")) {
        if (text[this.i + 1] !== "\n") w += text[this.i + 1];
        this.i += 2;
      } else if (text[this.i] === "$") {
        const x = this.expandVar();
        w += x.text;
        if (!x.ok) ok = false;
      } else {
        w += text[this.i];
        this.i++;
      }
    }
    this.i++;
    return { text: w, ok };
  }
}

const SHELLS = new Set(["sh", "bash", "zsh", "dash"]);

export function basename(p: string): string {
  const i = p.lastIndexOf("/");
  return i < 0 ? p : p.slice(i + 1);
}

export function isShell(program: string): boolean {
  return SHELLS.has(basename(program));
}
