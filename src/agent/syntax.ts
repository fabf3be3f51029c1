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
  const keyLines = new Map<string, number>();
  let i = 0;
  let line = 1;
  const ws = (): void => {
    while (i < text.length) {
      const c = text[i];
      if (c === "\n") line++;
      else if (c !== " " && c !== "\t" && c !== "\r") break;
      i++;
    }
  };
  const fail = (msg: string): never => {
    throw new JsonScanError(i, msg);
  };
  const str = (): string => {
    // at opening quote
    i++;
    let out = "";
    while (true) {
      if (i >= text.length) fail("unterminated string");
      const c = text[i]!;
      if (c === '"') {
        i++;
        return out;
      }
      if (c === "\n" || c.charCodeAt(0) < 0x20) fail("control character in string");
      if (c === "\\") {
        const e = text[i + 1];
        if (e === undefined) fail("unterminated string");
        if (e === "u") {
          const hex = text.slice(i + 2, i + 6);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail("invalid \\u escape");
          out += String.fromCharCode(Number.parseInt(hex, 16));
          i += 6;
          continue;
        }
        const map: Record<string, string> = {
          '"': '"',
          "\\": "\\",
          "/": "/",
          b: "\b",
          f: "\f",
          n: "\n",
          r: "\r",
          t: "\t",
        };
        const m = map[e!];
        if (m === undefined) fail(`invalid escape \\${e}`);
        out += m;
        i += 2;
        continue;
      }
      out += c;
      i++;
    }
  };
  const value = (path: string, depth: number): void => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      ws();
      if (text[i] === "}") {
        i++;
        return;
      }
      while (true) {
        ws();
        if (text[i] !== '"') fail("expected a double-quoted property name");
        const keyLine = line;
        const k = str();
        const p = path === "" ? k : `${path}.${k}`;
        if (depth < maxDepth && !keyLines.has(p)) keyLines.set(p, keyLine);
        ws();
        if (text[i] !== ":") fail("expected ':' after property name");
        i++;
        value(p, depth + 1);
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return;
        }
        fail("expected ',' or '}' after property value");
      }
    }
    if (c === "[") {
      i++;
      ws();
      if (text[i] === "]") {
        i++;
        return;
      }
      while (true) {
        value(path, depth + 1);
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          return;
        }
        fail("expected ',' or ']' after array element");
      }
    }
    if (c === '"') {
      str();
      return;
    }
    const rest = text.slice(i);
    const num = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(rest);
    if (num && num[0] !== "" && num[0] !== "-") {
      i += num[0].length;
      return;
    }
    for (const lit of ["true", "false", "null"]) {
      if (rest.startsWith(lit)) {
        i += lit.length;
        return;
      }
    }
    if (c === undefined) fail("unexpected end of input");
    fail(`unexpected character ${JSON.stringify(c)}`);
  };
  try {
    value("", 0);
    ws();
    if (i < text.length) fail("unexpected text after the JSON value");
    return { ok: true, keyLines };
  } catch (e) {
    if (e instanceof JsonScanError) return { ok: false, offset: e.offset, message: e.message };
    throw e;
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
  const out: TomlStatement[] = [];
  let i = 0;
  let line = 1;
  const n = text.length;
  const advance = (k = 1): void => {
    for (let j = 0; j < k && i < n; j++) {
      if (text[i] === "\n") line++;
      i++;
    }
  };
  const skipComment = (): void => {
    while (i < n && text[i] !== "\n") i++;
  };
  const skipBlank = (newlines: boolean): void => {
    while (i < n) {
      const c = text[i];
      if (c === " " || c === "\t" || c === "\r" || (newlines && c === "\n")) advance();
      else if (c === "#") skipComment();
      else break;
    }
  };
  const skipString = (): string => {
    // returns the decoded-ish content (used for quoted keys)
    if (text.startsWith('"""', i) || text.startsWith("'''", i)) {
      const q = text.slice(i, i + 3);
      advance(3);
      const start = i;
      while (i < n) {
        if (q === '"""' && text[i] === "\\") {
          advance(2);
          continue;
        }
        if (text.startsWith(q, i)) {
          // a closing delimiter may be followed by up to two more quotes belonging to the content
          let k = 3;
          while (text[i + k] === q[0] && k < 5) k++;
          const content = text.slice(start, i + k - 3);
          advance(k);
          return content;
        }
        advance();
      }
      return text.slice(start);
    }
    const q = text[i]!;
    advance();
    let s = "";
    while (i < n && text[i] !== q && text[i] !== "\n") {
      if (q === '"' && text[i] === "\\") {
        const e = text[i + 1];
        const simple: Record<string, string> = {
          n: "\n",
          t: "\t",
          '"': '"',
          "\\": "\\",
          r: "\r",
          b: "\b",
          f: "\f",
        };
        if (e !== undefined && simple[e] !== undefined) {
          s += simple[e];
          advance(2);
          continue;
        }
        if (e === "u" || e === "U") {
          const len = e === "u" ? 4 : 8;
          const hex = text.slice(i + 2, i + 2 + len);
          const cp = Number.parseInt(hex, 16);
          if (!Number.isNaN(cp)) s += String.fromCodePoint(cp);
          advance(2 + len);
          continue;
        }
        s += text[i + 1] ?? "";
        advance(2);
        continue;
      }
      s += text[i];
      advance();
    }
    advance(); // closing quote
    return s;
  };
  const parseKey = (stop: (c: string) => boolean): string[] => {
    const keys: string[] = [];
    while (i < n) {
      skipBlank(false);
      const c = text[i]!;
      if (c === '"' || c === "'") keys.push(skipString());
      else {
        let s = "";
        while (i < n && /[A-Za-z0-9_-]/.test(text[i]!)) {
          s += text[i];
          advance();
        }
        if (s === "") break;
        keys.push(s);
      }
      skipBlank(false);
      if (text[i] === ".") {
        advance();
        continue;
      }
      if (i >= n || stop(text[i]!)) break;
      break;
    }
    return keys;
  };
  /** Skip a value; true when it nests an inline table where tomland cannot parse one. */
  const skipValue = (): boolean => {
    skipBlank(false);
    const c = text[i];
    if (c === '"' || c === "'") {
      skipString();
      return false;
    }
    if (c === "[" || c === "{") {
      const stack: string[] = [];
      let nested = false;
      while (i < n) {
        const d = text[i]!;
        if (d === '"' || d === "'") {
          skipString();
          continue;
        }
        if (d === "#") {
          skipComment();
          continue;
        }
        if (d === "{" && !(stack.length === 0 || (stack.length === 1 && stack[0] === "["))) nested = true;
        if (d === "[" || d === "{") stack.push(d);
        else if (d === "]" || d === "}") {
          stack.pop();
          if (stack.length === 0) {
            advance();
            return nested;
          }
        }
        advance();
      }
      return nested;
    }
    while (i < n && text[i] !== "\n" && text[i] !== "#") advance();
    return false;
  };
  while (true) {
    skipBlank(true);
    if (i >= n) break;
    const startLine = line;
    if (text[i] === "[") {
      const array = text[i + 1] === "[";
      advance(array ? 2 : 1);
      const keys = parseKey((c) => c === "]");
      while (i < n && text[i] !== "]" && text[i] !== "\n") advance();
      advance(array ? 2 : 1);
      out.push({ kind: array ? "array-table" : "table", keys, line: startLine });
      skipBlank(false);
      continue;
    }
    const keys = parseKey((c) => c === "=");
    if (keys.length === 0) {
      // not something we understand: skip the line
      while (i < n && text[i] !== "\n") advance();
      continue;
    }
    skipBlank(false);
    if (text[i] === "=") advance();
    if (skipValue()) out.push({ kind: "kv", keys, line: startLine, nestedInlineTable: true });
    else out.push({ kind: "kv", keys, line: startLine });
  }
  return out;
}
