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

const ESCAPE_BASE = 0xdc00;

/** Decode bytes as UTF-8, escaping every byte that is not part of a valid sequence (see the module comment). */
export function decodeBytes(b: Uint8Array): string {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (isValidUtf8(buf)) return buf.toString("utf8");
  let out = "";
  let i = 0;
  let run = 0; // start of the current run of valid sequences
  while (i < buf.length) {
    const n = validSequenceLength(buf, i);
    if (n > 0) {
      i += n;
      continue;
    }
    if (run < i) out += buf.toString("utf8", run, i);
    out += String.fromCharCode(ESCAPE_BASE + buf[i]!);
    i++;
    run = i;
  }
  if (run < buf.length) out += buf.toString("utf8", run, buf.length);
  return out;
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

function isValidUtf8(buf: Buffer): boolean {
  // Node 20 has buffer.isUtf8; a quick check for plain ASCII first
  let ascii = true;
  for (let i = 0; i < buf.length; i++)
    if (buf[i]! >= 0x80) {
      ascii = false;
      break;
    }
  if (ascii) return true;
  let i = 0;
  while (i < buf.length) {
    const n = validSequenceLength(buf, i);
    if (n === 0) return false;
    i += n;
  }
  return true;
}

/** Length of the valid UTF-8 sequence at `i` (Unicode's well-formed table), or 0. */
function validSequenceLength(buf: Buffer, i: number): number {
  const b0 = buf[i]!;
  if (b0 < 0x80) return 1;
  const cont = (k: number, lo = 0x80, hi = 0xbf): boolean => {
    const b = buf[i + k];
    return b !== undefined && b >= lo && b <= hi;
  };
  if (b0 >= 0xc2 && b0 <= 0xdf) return cont(1) ? 2 : 0;
  if (b0 === 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if ((b0 >= 0xe1 && b0 <= 0xec) || b0 === 0xee || b0 === 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (b0 === 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0; // no surrogates
  if (b0 === 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (b0 >= 0xf1 && b0 <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (b0 === 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}
