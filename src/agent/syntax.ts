/**
 * Light lexical scanners for the agent config file. They do not produce values (JSON.parse and
 * smol-toml do that); they find what the value parsers do not tell us:
 *
 * - JSON: the line of each key (for findings) and the line/column of a syntax error, because
 *   Node 20's JSON.parse messages often carry no position.
 * - TOML: the sequence of table headers and key/value statements, with lines, so that we can
 *   replay how the agent's TOML library (tomland) groups sub-tables (see toml pitfalls in config.ts).
 */

export interface LineCol {
  readonly line: number;
  readonly column: number;
}

export function lineColAt(text: string, offset: number): LineCol {
  let line = 1;
  let col = 1;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text[i] === "\n") {
      line++;
      col = 1;
    } else col++;
  }
  return { line, column: col };
}

// ---------------------------------------------------------------------------------------------
// JSON

export type JsonScan =
  | { readonly ok: true; readonly keyLines: ReadonlyMap<string, number> }
  | { readonly ok: false; readonly offset: number; readonly message: string };

class JsonScanError extends Error {
  constructor(
    readonly offset: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Validate JSON text and record the line of every object key, by dotted path
 * (`nixSettings.builders`). Keys deeper than `maxDepth` objects are not recorded.
 */
export function scanJson(text: string, maxDepth = 3): JsonScan {
  const scanner = new JsonScanner(text, maxDepth);
  try {
    scanner.value("", 0);
    scanner.ws();
    if (scanner.i < text.length) scanner.fail("unexpected text after the JSON value");
    return { ok: true, keyLines: scanner.keyLines };
  } catch (e) {
    if (e instanceof JsonScanError) return { ok: false, offset: e.offset, message: e.message };
    throw e;
  }
}

const JSON_ESCAPES: Readonly<Record<string, string>> = {
  '"': '"',
  "\\": "\\",
  "/": "/",
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
};
const JSON_NUMBER = /-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;

/** The cursor of scanJson: a position, its line, and the key lines found so far. */
class JsonScanner {
  i = 0;
  private line = 1;
  readonly keyLines = new Map<string, number>();
  constructor(
    private readonly text: string,
    private readonly maxDepth: number,
  ) {}

  ws(): void {
    const { text } = this;
    while (this.i < text.length) {
      const c = text[this.i];
      if (c === "\n") this.line++;
      else if (c !== " " && c !== "\t" && c !== "\r") break;
      this.i++;
    }
  }

  fail(msg: string): never {
    throw new JsonScanError(this.i, msg);
  }

  /** A string, at its opening quote. */
  private str(): string {
    const { text } = this;
    this.i++;
    let out = "";
    while (true) {
      if (this.i >= text.length) this.fail("unterminated string");
      const c = text[this.i]!;
      if (c === '"') {
        this.i++;
        return out;
      }
      if (c === "\n" || c.charCodeAt(0) < 0x20) this.fail("control character in string");
      if (c === "\\") {
        out += this.escape();
        continue;
      }
      out += c;
      this.i++;
    }
  }

  private escape(): string {
    const { text } = this;
    const e = text[this.i + 1];
    if (e === undefined) this.fail("unterminated string");
    if (e === "u") {
      const hex = text.slice(this.i + 2, this.i + 6);
      if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail("invalid \\u escape");
      this.i += 6;
      return String.fromCharCode(Number.parseInt(hex, 16));
    }
    const m = JSON_ESCAPES[e!];
    if (m === undefined) this.fail(`invalid escape \\${e}`);
    this.i += 2;
    return m!;
  }

  value(path: string, depth: number): void {
    this.ws();
    const c = this.text[this.i];
    if (c === "{") this.object(path, depth);
    else if (c === "[") this.array(path, depth);
    else if (c === '"') this.str();
    else this.scalar(c);
  }

  private object(path: string, depth: number): void {
    const { text } = this;
    this.i++;
    this.ws();
    if (text[this.i] === "}") {
      this.i++;
      return;
    }
    while (true) {
      this.ws();
      if (text[this.i] !== '"') this.fail("expected a double-quoted property name");
      const keyLine = this.line;
      const k = this.str();
      const p = path === "" ? k : `${path}.${k}`;
      if (depth < this.maxDepth && !this.keyLines.has(p)) this.keyLines.set(p, keyLine);
      this.ws();
      if (text[this.i] !== ":") this.fail("expected ':' after property name");
      this.i++;
      this.value(p, depth + 1);
      this.ws();
      if (text[this.i] === ",") {
        this.i++;
        continue;
      }
      if (text[this.i] === "}") {
        this.i++;
        return;
      }
      this.fail("expected ',' or '}' after property value");
    }
  }

  private array(path: string, depth: number): void {
    const { text } = this;
    this.i++;
    this.ws();
    if (text[this.i] === "]") {
      this.i++;
      return;
    }
    while (true) {
      this.value(path, depth + 1);
      this.ws();
      if (text[this.i] === ",") {
        this.i++;
        continue;
      }
      if (text[this.i] === "]") {
        this.i++;
        return;
      }
      this.fail("expected ',' or ']' after array element");
    }
  }

  private scalar(c: string | undefined): void {
    const { text } = this;
    JSON_NUMBER.lastIndex = this.i;
    const num = JSON_NUMBER.exec(text);
    if (num && num[0] !== "" && num[0] !== "-") {
      this.i += num[0].length;
      return;
    }
    for (const lit of ["true", "false", "null"]) {
      if (text.startsWith(lit, this.i)) {
        this.i += lit.length;
        return;
      }
    }
    if (c === undefined) this.fail("unexpected end of input");
    this.fail(`unexpected character ${JSON.stringify(c)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// TOML

export interface TomlStatement {
  readonly kind: "table" | "array-table" | "kv";
  /** Key pieces: for headers the full table name, for key/values the (possibly dotted) key. */
  readonly keys: readonly string[];
  readonly line: number;
  /**
   * Key/values only: the value has an inline table nested in an inline table, or in an array that
   * is itself nested (`a = {b = {c = 1}}`, `a = [[{b = 1}]]`). TOML 1.0 allows this; the agent's TOML
   * library does not (tomland `Parser/Item.hs`: inline-table values and array elements go through
   * its plain value parser, which has no inline tables), so the agent stops with a parse error.
   */
  readonly nestedInlineTable?: boolean;
}

/**
 * List the table headers and key/value statements of a TOML document, in order, with lines.
 * Assumes the document is valid TOML (call it after smol-toml accepted the text); it is lenient
 * otherwise. Values are skipped, including multi-line strings, arrays and inline tables.
 */
export function scanToml(text: string): TomlStatement[] {
  return new TomlScanner(text).statements();
}

const TOML_ESCAPES: Readonly<Record<string, string>> = {
  n: "\n",
  t: "\t",
  '"': '"',
  "\\": "\\",
  r: "\r",
  b: "\b",
  f: "\f",
};

/** The cursor of scanToml: a position in the text and its line number. */
class TomlScanner {
  private i = 0;
  private line = 1;
  private readonly n: number;
  constructor(private readonly text: string) {
    this.n = text.length;
  }

  statements(): TomlStatement[] {
    const out: TomlStatement[] = [];
    const { text } = this;
    while (true) {
      this.skipBlank(true);
      if (this.i >= this.n) break;
      const startLine = this.line;
      if (text[this.i] === "[") {
        const array = text[this.i + 1] === "[";
        this.advance(array ? 2 : 1);
        const keys = this.parseKey((c) => c === "]");
        while (this.i < this.n && text[this.i] !== "]" && text[this.i] !== "\n") this.advance();
        this.advance(array ? 2 : 1);
        out.push({ kind: array ? "array-table" : "table", keys, line: startLine });
        this.skipBlank(false);
        continue;
      }
      const keys = this.parseKey((c) => c === "=");
      if (keys.length === 0) {
        // not something we understand: skip the line
        while (this.i < this.n && text[this.i] !== "\n") this.advance();
        continue;
      }
      this.skipBlank(false);
      if (text[this.i] === "=") this.advance();
      if (this.skipValue()) out.push({ kind: "kv", keys, line: startLine, nestedInlineTable: true });
      else out.push({ kind: "kv", keys, line: startLine });
    }
    return out;
  }

  private advance(k = 1): void {
    for (let j = 0; j < k && this.i < this.n; j++) {
      if (this.text[this.i] === "\n") this.line++;
      this.i++;
    }
  }

  private skipComment(): void {
    while (this.i < this.n && this.text[this.i] !== "\n") this.i++;
  }

  private skipBlank(newlines: boolean): void {
    while (this.i < this.n) {
      const c = this.text[this.i];
      if (c === " " || c === "\t" || c === "\r" || (newlines && c === "\n")) this.advance();
      else if (c === "#") this.skipComment();
      else break;
    }
  }

  /** Skips a string and returns its decoded-ish content (used for quoted keys). */
  private skipString(): string {
    const { text } = this;
    if (text.startsWith('"""', this.i) || text.startsWith("'''", this.i)) return this.skipMultiline();
    const q = text[this.i]!;
    this.advance();
    let s = "";
    while (this.i < this.n && text[this.i] !== q && text[this.i] !== "\n") {
      if (q === '"' && text[this.i] === "\\") {
        s += this.escape();
        continue;
      }
      s += text[this.i];
      this.advance();
    }
    this.advance(); // closing quote
    return s;
  }

  private skipMultiline(): string {
    const { text } = this;
    const q = text.slice(this.i, this.i + 3);
    this.advance(3);
    const start = this.i;
    while (this.i < this.n) {
      if (q === '"""' && text[this.i] === "\\") {
        this.advance(2);
        continue;
      }
      if (text.startsWith(q, this.i)) {
        // a closing delimiter may be followed by up to two more quotes belonging to the content
        let k = 3;
        while (text[this.i + k] === q[0] && k < 5) k++;
        const content = text.slice(start, this.i + k - 3);
        this.advance(k);
        return content;
      }
      this.advance();
    }
    return text.slice(start);
  }

  /** Decodes the escape at the cursor (a backslash) and moves past it. */
  private escape(): string {
    const { text } = this;
    const e = text[this.i + 1];
    if (e !== undefined && TOML_ESCAPES[e] !== undefined) {
      this.advance(2);
      return TOML_ESCAPES[e];
    }
    if (e === "u" || e === "U") {
      const len = e === "u" ? 4 : 8;
      const cp = Number.parseInt(text.slice(this.i + 2, this.i + 2 + len), 16);
      this.advance(2 + len);
      return Number.isNaN(cp) ? "" : String.fromCodePoint(cp);
    }
    this.advance(2);
    return e ?? "";
  }

  private parseKey(stop: (c: string) => boolean): string[] {
    const keys: string[] = [];
    const { text } = this;
    while (this.i < this.n) {
      this.skipBlank(false);
      const c = text[this.i]!;
      if (c === '"' || c === "'") keys.push(this.skipString());
      else {
        let s = "";
        while (this.i < this.n && /[A-Za-z0-9_-]/.test(text[this.i]!)) {
          s += text[this.i];
          this.advance();
        }
        if (s === "") break;
        keys.push(s);
      }
      this.skipBlank(false);
      if (text[this.i] === ".") {
        this.advance();
        continue;
      }
      if (this.i >= this.n || stop(text[this.i]!)) break;
      break;
    }
    return keys;
  }

  /** Skips a value; true when it nests an inline table where tomland cannot parse one. */
  private skipValue(): boolean {
    this.skipBlank(false);
    const { text } = this;
    const c = text[this.i];
    if (c === '"' || c === "'") {
      this.skipString();
      return false;
    }
    if (c === "[" || c === "{") return this.skipNested();
    while (this.i < this.n && text[this.i] !== "\n" && text[this.i] !== "#") this.advance();
    return false;
  }

  private skipNested(): boolean {
    const { text } = this;
    const stack: string[] = [];
    let nested = false;
    while (this.i < this.n) {
      const d = text[this.i]!;
      if (d === '"' || d === "'") {
        this.skipString();
        continue;
      }
      if (d === "#") {
        this.skipComment();
        continue;
      }
      if (d === "{" && !(stack.length === 0 || (stack.length === 1 && stack[0] === "["))) nested = true;
      if (d === "[" || d === "{") stack.push(d);
      else if (d === "]" || d === "}") {
        stack.pop();
        if (stack.length === 0) {
          this.advance();
          return nested;
        }
      }
      this.advance();
    }
    return nested;
  }
}
