/**
 * The text Nix shows for a message, as opposed to the message itself. Nix's logger passes every
 * line it prints through `filterANSIEscapes(s, filterAll = !isatty, width = unlimited)`
 * (src/libutil/util.cc, 2.8): escape sequences are dropped (kept when colour is on, but they never
 * take a column), `\r` and `\a` are dropped, and a tab becomes spaces up to the next multiple of 8
 * columns, counted in characters from the start of the logged text (the `error: ` prefix included,
 * and not restarted after a newline inside the message). So a machines row `\t` shows as
 * `'       '`. Machine-readable output keeps the raw message; people see and compare this form.
 */

/** Nix's filterANSIEscapes(s, true, ∞): the text as printed to a non-terminal. */
export function filterAnsiEscapes(s: string): string {
  let out = "";
  let w = 0;
  let i = 0;
  while (i < s.length) {
    // A run of ordinary characters is copied at once: one column per character.
    SPECIAL.lastIndex = i;
    const end = SPECIAL.exec(s)?.index ?? s.length;
    if (end > i) {
      const run = s.slice(i, end);
      out += run;
      w += columns(run);
      i = end;
      continue;
    }
    const c = s[i]!;
    i++;
    if (c === "\x1b") {
      if (s[i] === "[") {
        i++;
        while (i < s.length && s[i]! >= "\x30" && s[i]! <= "\x3f") i++; // parameter bytes
        while (i < s.length && s[i]! >= "\x20" && s[i]! <= "\x2f") i++; // intermediate bytes
        if (i < s.length && s[i]! >= "\x40" && s[i]! <= "\x7e") i++; // final byte
      } else if (i < s.length && s[i]! >= "\x40" && s[i]! <= "\x5f") i++;
    } else if (c === "\t") {
      const pad = 8 - (w % 8);
      out += " ".repeat(pad);
      w += pad;
    }
    // "\r" and "\x07" are dropped
  }
  return out;
}

const SPECIAL = /[\x1b\t\r\x07]/g;

/** Columns of a run without escapes: one per character (a UTF-8 sequence in Nix), a surrogate pair is one. */
function columns(run: string): number {
  if (!/[\uD800-\uDBFF]/.test(run)) return run.length;
  return run.length - (run.match(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g)?.length ?? 0);
}

const chomp = (s: string) => s.replace(/[ \n\r\t]+$/, "");

/**
 * How Nix 2.8 prints an error (`showErrorInfo`): `error: ` before the first line, 7 spaces before
 * each further line, each line without trailing whitespace, then through the logger's filter.
 */
export function nixErrorDisplay(message: string): string {
  const lines = chomp(`${message}\n`).split("\n");
  const logged = lines.map((l, i) => chomp(`${i === 0 ? "error: " : "       "}${l}`)).join("\n");
  return filterAnsiEscapes(logged);
}

/** How Nix prints a warning (`warn()`): `warning: ` and the message, through the logger's filter. */
export function nixWarningDisplay(message: string): string {
  return filterAnsiEscapes(`warning: ${message}`);
}

/** The message part of nixErrorDisplay / nixWarningDisplay (what follows `error: ` / `warning: `). */
export function displayedMessage(message: string, level: "error" | "warning"): string {
  return level === "error"
    ? nixErrorDisplay(message).slice("error: ".length)
    : nixWarningDisplay(message).slice("warning: ".length);
}

/** Every line of `text` after `prefix` (for a tool's own indentation around Nix's text). */
export function indentLines(text: string, prefix: string): string {
  return text
    .split("\n")
    .map((l) => prefix + l)
    .join("\n");
}
