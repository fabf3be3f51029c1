/**
 * Nix's base64 decoder (the same algorithm in 2.8 and current Nix): standard alphabet only
 * (`-` and `_` are invalid), decoding stops at the first `=`, `\n` is skipped, and neither length nor
 * padding is checked. Trailing bits that do not make a full byte are dropped.
 */

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const DECODE: Int16Array = (() => {
  const t = new Int16Array(256).fill(-1);
  for (let i = 0; i < ALPHABET.length; i++) t[ALPHABET.charCodeAt(i)] = i;
  return t;
})();

export type NixBase64Result = { ok: true; bytes: Buffer } | { ok: false; badChar: string; index: number };

/**
 * Decode like Nix. The input is treated as bytes (UTF-8), as Nix sees it; `badChar` is the first
 * offending character (a whole code point when it is not ASCII) and `index` its UTF-16 index in `s`.
 */
export function nixBase64Decode(s: string): NixBase64Result {
  const out: number[] = [];
  let d = 0;
  let bits = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x3d /* = */) break;
    if (c === 0x0a /* \n */) continue;
    const digit = c < 256 ? DECODE[c]! : -1;
    if (digit < 0) {
      const cp = s.codePointAt(i)!;
      return { ok: false, badChar: String.fromCodePoint(cp), index: i };
    }
    bits += 6;
    d = ((d << 6) | digit) & 0xffffff;
    if (bits >= 8) {
      out.push((d >> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return { ok: true, bytes: Buffer.from(out) };
}

/** Base64 with the standard alphabet and padding (what `base64 -w0` prints). */
export function base64Encode(data: string | Uint8Array): string {
  return Buffer.from(typeof data === "string" ? Buffer.from(data, "utf8") : data).toString("base64");
}

/** Key types OpenSSH writes in known_hosts / `*.pub` lines. */
export const SSH_KEY_TYPES: readonly string[] = [
  "ssh-ed25519",
  "ssh-rsa",
  "ssh-dss",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "sk-ssh-ed25519@openssh.com",
  "sk-ecdsa-sha2-nistp256@openssh.com",
  "ssh-ed448",
];

/**
 * Is `text` one public-key line, `<type> <base64>[ comment]`, optionally followed by one newline?
 * This is our check, not Nix's: Nix writes whatever the column decodes to into a known_hosts file,
 * and ssh then ignores a line it cannot parse (so the pin silently fails).
 */
export function isPublicKeyLine(text: string): boolean {
  const body = text.endsWith("\r\n") ? text.slice(0, -2) : text.endsWith("\n") ? text.slice(0, -1) : text;
  if (body.includes("\n") || body.includes("\r")) return false;
  const m = /^(\S+)[ \t]+([A-Za-z0-9+/]+={0,2})(?:[ \t]+.*)?$/.exec(body);
  if (!m) return false;
  const [, type, blob] = m;
  if (!SSH_KEY_TYPES.includes(type!)) return false;
  if (blob!.length % 4 !== 0) return false;
  // The key blob starts with the key type as an SSH string (u32 big-endian length, then the name).
  const raw = Buffer.from(blob!, "base64");
  if (raw.length < 4) return false;
  const n = raw.readUInt32BE(0);
  return raw.subarray(4, 4 + n).toString("latin1") === type;
}
