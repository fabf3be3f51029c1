/**
 * Nix keeps configuration text as bytes (std::string): a feature, a store URI or a path with bytes that
 * are not UTF-8 stays exactly those bytes, and two that differ in one such byte are different. The tool
 * works on JavaScript strings, so files are decoded losslessly: valid UTF-8 as usual, and every byte
 * that is not part of a valid UTF-8 sequence as the lone surrogate U+DC00 + byte (Python's
 * "surrogateescape"). Valid UTF-8 never decodes to a lone surrogate, so the decoding is one to one:
 * distinct bytes stay distinct strings, equality and sets behave as Nix's, and `encodeBytes` gives the
 * exact bytes back (for byte order, for writing a file). Printing such a string shows U+FFFD for each
 * escaped byte (display only); `--json` keeps it as `\udcXX`.
 */

import { isUtf8 } from "node:buffer";

const ESCAPE_BASE = 0xdc00;

/** Decode bytes as UTF-8, escaping every byte that is not part of a valid sequence (see the module comment). */
export function decodeBytes(b: Uint8Array): string {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (isUtf8(buf)) return buf.toString("utf8"); // native: the usual case costs nothing more
  const parts: string[] = [];
  const escaped = new Uint16Array(8192);
  let nEsc = 0;
  const flushEscaped = (): void => {
    if (nEsc > 0) parts.push(String.fromCharCode.apply(null, Array.from(escaped.subarray(0, nEsc))));
    nEsc = 0;
  };
  let i = 0;
  let run = 0; // start of the current run of valid sequences
  const len = buf.length;
  while (i < len) {
    const n = validSequenceLength(buf, i, len);
    if (n > 0) {
      i += n;
      continue;
    }
    if (run < i) {
      flushEscaped();
      parts.push(buf.toString("utf8", run, i));
    }
    escaped[nEsc++] = ESCAPE_BASE + buf[i]!;
    if (nEsc === escaped.length) flushEscaped();
    i++;
    run = i;
  }
  flushEscaped();
  if (run < len) parts.push(buf.toString("utf8", run, len));
  return parts.join("");
}

/** The bytes a decoded string stands for: escaped bytes back as themselves, the rest as UTF-8. */
export function encodeBytes(s: string): Buffer {
  if (!/[\udc80-\udcff]/.test(s)) return Buffer.from(s, "utf8");
  const parts: Buffer[] = [];
  let run = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // a lone low surrogate (not the second half of a pair) in the escape range
    const paired = i > 0 && s.charCodeAt(i - 1) >= 0xd800 && s.charCodeAt(i - 1) <= 0xdbff;
    if (c >= 0xdc80 && c <= 0xdcff && !paired) {
      if (run < i) parts.push(Buffer.from(s.slice(run, i), "utf8"));
      parts.push(Buffer.from([c - ESCAPE_BASE]));
      run = i + 1;
    }
  }
  if (run < s.length) parts.push(Buffer.from(s.slice(run), "utf8"));
  return Buffer.concat(parts);
}

/** True when `s` holds escaped bytes (text that was not UTF-8). */
export function hasEscapedBytes(s: string): boolean {
  return /[\udc80-\udcff]/.test(s);
}

/** Length of the valid UTF-8 sequence at `i` (Unicode's well-formed byte sequences), or 0. */
function validSequenceLength(buf: Buffer, i: number, len: number): number {
  const b0 = buf[i]!;
  if (b0 < 0x80) return 1;
  const b1 = i + 1 < len ? buf[i + 1]! : -1;
  if (b0 >= 0xc2 && b0 <= 0xdf) return b1 >= 0x80 && b1 <= 0xbf ? 2 : 0;
  const lo = b0 === 0xe0 ? 0xa0 : b0 === 0xf0 ? 0x90 : 0x80;
  const hi = b0 === 0xed ? 0x9f : b0 === 0xf4 ? 0x8f : 0xbf;
  if (b1 < lo || b1 > hi) return 0;
  const b2 = i + 2 < len ? buf[i + 2]! : -1;
  if (b2 < 0x80 || b2 > 0xbf) return 0;
  if (b0 >= 0xe0 && b0 <= 0xef) return 3;
  if (b0 < 0xf0 || b0 > 0xf4) return 0;
  const b3 = i + 3 < len ? buf[i + 3]! : -1;
  return b3 >= 0x80 && b3 <= 0xbf ? 4 : 0;
}
