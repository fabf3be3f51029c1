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
    const c = s[i]!;
    if (c === "\x1b") {
      i++;
      if (s[i] === "[") {
        i++;
        while (i < s.length && s[i]! >= "\x30" && s[i]! <= "\x3f") i++; // parameter bytes
        while (i < s.length && s[i]! >= "\x20" && s[i]! <= "\x2f") i++; // intermediate bytes
        if (i < s.length && s[i]! >= "\x40" && s[i]! <= "\x7e") i++; // final byte
      } else if (i < s.length && s[i]! >= "\x40" && s[i]! <= "\x5f") i++;
    } else if (c === "\t") {
      i++;
      out += " ";
      w++;
      while (w % 8 !== 0) {
        out += " ";
        w++;
      }
    } else if (c === "\r" || c === "\x07") {
      i++;
    } else {
      // One character (a UTF-8 sequence in Nix) takes one column.
      const cp = s.codePointAt(i)!;
      const len = cp > 0xffff ? 2 : 1;
      out += s.slice(i, i + len);
      i += len;
      w++;
    }
  }
  return out;
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
