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

/** A line that is nothing but a long base64 run: the body of a key (or other secret) without its armour. */
const BASE64_BLOB = /^[A-Za-z0-9+/]{40,}={0,2}$/;

/** True when `line` alone looks like key material (a PEM header/footer or a base64 blob line). */
export function isKeyMaterialLine(line: string): boolean {
  const t = line.trim();
  return /^-----(BEGIN|END) [A-Z0-9 ]*(PRIVATE KEY|KEY BLOCK)-----$/.test(t) || BASE64_BLOB.test(t);
}

/**
 * True when `text` is shaped like a private key: it has a private-key PEM header (or is a PuTTY key), or
 * every meaningful line (not blank, not a `#` comment) is a base64 blob.
 */
export function looksLikePrivateKey(text: string): boolean {
  if (KEY_HEADER.test(text)) return true;
  let blobs = 0;
  let start = 0;
  // a line-by-line scan without splitting the whole (possibly 16 MiB) text into an array
  while (start <= text.length) {
    let end = text.indexOf("\n", start);
    if (end < 0) end = text.length;
    const t = text.slice(start, end).trim();
    start = end + 1;
    if (t === "" || t.startsWith("#")) continue;
    if (!BASE64_BLOB.test(t)) return false;
    blobs++;
  }
  return blobs > 0;
}

/** The text quoted instead of a line of a private key. */
export const KEY_REDACTED = "<a line of a private key: not shown>";

/** How to quote `line` of a file whose whole text is `text`. */
export function quotableLine(line: string, text: string): string {
  if (isKeyMaterialLine(line) || looksLikePrivateKey(text)) return KEY_REDACTED;
  return excerpt(line);
}
