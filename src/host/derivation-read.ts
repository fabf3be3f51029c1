/**
 * Reading `.drv` files straight from the store directory (no daemon, no Nix process), bounded: never a
 * FIFO or a device, never more than 64 MiB. The parser is pure (src/nix/derivation.ts).
 */
import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { type ParsedDerivation, parseDerivation, realPathOf, type StoreLocation } from "../nix/derivation.js";
import { NixError } from "../nix/errors.js";

/** One reusable buffer: .drv files are small, and a shared buffer saves an fstat and an allocation per file. */
const readBuf = Buffer.allocUnsafe(1 << 20);

/** The rest of a big .drv, from the same descriptor (never re-opened by name), bounded. */
function readRest(fd: number, head: Buffer): string {
  const chunks = [head];
  let total = head.length;
  for (;;) {
    const b = Buffer.alloc(1 << 20);
    const k = readSync(fd, b, 0, b.length, null);
    if (k === 0) return Buffer.concat(chunks).toString("utf8");
    chunks.push(b.subarray(0, k));
    total += k;
    if (total > DRV_LIMIT) throw Object.assign(new Error("larger than 64 MiB"), { code: "EFBIG" });
  }
}

/** The most we read of one .drv (real ones are KiBs; a few MiB for huge env vars). */
const DRV_LIMIT = 64 * 1024 * 1024;

function readText(file: string): string {
  // bounded: never open a FIFO or device (a FIFO blocks, /dev/zero never ends), never read past DRV_LIMIT
  const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  try {
    const st = fstatSync(fd);
    if (!st.isFile())
      throw Object.assign(new Error(st.isDirectory() ? "Is a directory" : "not a regular file"), {
        code: "ENOTREG",
      });
    if (st.size > DRV_LIMIT) throw Object.assign(new Error("larger than 64 MiB"), { code: "EFBIG" });
    let n = 0;
    for (;;) {
      const k = readSync(fd, readBuf, n, readBuf.length - n, null);
      if (k === 0) return readBuf.toString("utf8", 0, n);
      n += k;
      if (n === readBuf.length) return readRest(fd, Buffer.from(readBuf)); // larger than the buffer
    }
  } finally {
    closeSync(fd);
  }
}

/** Read and parse a .drv straight from the store directory (no daemon, no Nix process). */
export function readDerivation(drvPath: string, loc: StoreLocation = {}): ParsedDerivation {
  const file = realPathOf(drvPath, loc);
  let text: string;
  try {
    text = readText(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new NixError("system", `getting status of '${file}': ${err.message}`, { file });
  }
  return parseDerivation(text, drvPath);
}

/**
 * The derivation closure of `roots` (roots included), each parsed once. Missing or unparsable
 * drvs throw NixError. Iterative, so deep closures do not overflow the stack.
 */
export function readDerivationClosure(
  roots: readonly string[],
  loc: StoreLocation = {},
): Map<string, ParsedDerivation> {
  const seen = new Map<string, ParsedDerivation>();
  const stack = [...roots];
  while (stack.length > 0) {
    const p = stack.pop()!;
    if (seen.has(p)) continue;
    const d = readDerivation(p, loc);
    seen.set(p, d);
    for (const dep of d.inputDrvs.keys()) if (!seen.has(dep)) stack.push(dep);
  }
  return seen;
}
