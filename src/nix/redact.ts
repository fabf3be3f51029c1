/**
 * What may be quoted from a file in a message. Nix quotes a whole offending line; we quote at most a
 * bounded excerpt of it, and nothing at all from a file that looks like a private key (the usual way a
 * key reaches a parser is `include ~/.ssh/id_ed25519` or `builders = @/root/.ssh/id_rsa`).
 */

/** The longest excerpt of a line we quote. */
export const EXCERPT_MAX = 200;

/** At most `max` characters of `s`, with an ellipsis when cut (never splits a surrogate pair). */
export function excerpt(s: string, max = EXCERPT_MAX): string {
  if (s.length <= max) return s;
  let end = max;
  const c = s.charCodeAt(end - 1);
  if (c >= 0xd800 && c <= 0xdbff) end--;
  return `${s.slice(0, end)}…`;
}

/** PEM armour of a private key (PKCS#1/#8, OpenSSH, encrypted, EC, DSA), or a PuTTY key file. */
const KEY_HEADER = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----|^PuTTY-User-Key-File-\d+:/m;

/** Base64 characters (no padding). */
function isB64(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 43 || c === 47;
}

/**
 * `t` is nothing but base64 (with at most two `=` at the end) and at least `min` long. A loop, not a
 * regular expression: a 16 MiB line overflows the regex engine's stack.
 */
function isBase64Run(t: string, min: number): boolean {
  if (t.length < min) return false;
  let end = t.length;
  while (end > 0 && t.length - end < 2 && t.charCodeAt(end - 1) === 61) end--;
  for (let i = 0; i < end; i++) if (!isB64(t.charCodeAt(i))) return false;
  return true;
}

/** A line that is nothing but a long base64 run: the body of a key (or other secret) without its armour. */
const BLOB_MIN = 40;

/** True when `line` alone looks like key material (a PEM header/footer or a base64 blob line). */
export function isKeyMaterialLine(line: string): boolean {
  const t = line.trim();
  if (t.length < 200 && /^-----(BEGIN|END) [A-Z0-9 ]*(PRIVATE KEY|KEY BLOCK)-----$/.test(t)) return true;
  return isBase64Run(t, BLOB_MIN);
}

/**
 * True when `text` is shaped like a private key: it has a private-key PEM header (or is a PuTTY key), or
 * it is a key body without its armour: every meaningful line (not blank, not a `#` comment) is base64,
 * and at least half of them are long (a key's last line may be short).
 */
export function looksLikePrivateKey(text: string): boolean {
  if (text.includes("PRIVATE KEY-----") && KEY_HEADER.test(text)) return true;
  if (text.startsWith("PuTTY-User-Key-File-")) return true;
  let lines = 0;
  let long = 0;
  let start = 0;
  // a line-by-line scan without splitting the whole (possibly 16 MiB) text into an array
  while (start <= text.length) {
    let end = text.indexOf("\n", start);
    if (end < 0) end = text.length;
    const t = text.slice(start, end).trim();
    start = end + 1;
    if (t === "" || t.startsWith("#")) continue;
    if (!isBase64Run(t, 1)) return false;
    lines++;
    if (t.length >= BLOB_MIN) long++;
  }
  return long > 0 && long * 2 >= lines;
}

/** The text quoted instead of a line of a private key. */
export const KEY_REDACTED = "<a line of a private key: not shown>";

/** How to quote `line` of a file whose whole text is `text`. */
export function quotableLine(line: string, text: string): string {
  if (isKeyMaterialLine(line) || looksLikePrivateKey(text)) return KEY_REDACTED;
  return excerpt(line);
}
