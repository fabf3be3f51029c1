/**
 * The bounded read of one file as this process, with Nix's semantics: only regular files are read (and
 * `/dev/null`, which reads as empty); a FIFO, a device or a socket is answered with `ENOTREG` and what it
 * is, without opening it; a directory is `EISDIR`. The file is stat'ed before it is opened, opened with
 * O_NONBLOCK|O_NOCTTY, fstat'ed again, and read up to a limit: a bigger file is `EFBIG` and is not read.
 *
 * src/os holds the process-level primitives every edge may use (this read, the subprocess helper); it
 * imports nothing of the project but src/nix's types. src/host/fs-reader.ts builds the readers on it.
 */
import { closeSync, constants, fstatSync, openSync, readSync, type Stats, statSync } from "node:fs";
import { decodeBytes } from "../nix/bytes.js";
import type { ReadResult } from "../nix/conf.js";

/** The most we read of any file Nix reads (a real nix.conf or machines file is a few KiB). */
export const READ_LIMIT = 16 * 1024 * 1024;

/** What a path is, when it is not a regular file (the `detail` of an ENOTREG answer). */
export type NotRegularKind = "a FIFO" | "a character device" | "a block device" | "a socket" | "not a file";

export function errCode(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : "EIO";
}

const DEV_NULL_RDEV = (() => {
  try {
    const st = statSync("/dev/null");
    return st.isCharacterDevice() ? st.rdev : -1;
  } catch {
    return -1;
  }
})();

function notRegularKind(st: Stats): NotRegularKind {
  if (st.isFIFO()) return "a FIFO";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  if (st.isSocket()) return "a socket";
  return "not a file";
}

/** Read `path` as this process, bounded (see the module comment). */
export function readBounded(path: string, limit = READ_LIMIT): ReadResult {
  let st: Stats;
  try {
    st = statSync(path);
  } catch (e) {
    return { ok: false, code: errCode(e) };
  }
  if (st.isDirectory()) return { ok: false, code: "EISDIR" };
  if (!st.isFile()) {
    if (st.isCharacterDevice() && st.rdev === DEV_NULL_RDEV) return { ok: true, text: "" };
    return { ok: false, code: "ENOTREG", detail: notRegularKind(st) };
  }
  if (st.size > limit) return { ok: false, code: "EFBIG" };
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    return { ok: false, code: errCode(e) };
  }
  try {
    const st2 = fstatSync(fd);
    if (st2.isDirectory()) return { ok: false, code: "EISDIR" };
    if (!st2.isFile()) return { ok: false, code: "ENOTREG", detail: notRegularKind(st2) };
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const buf = Buffer.alloc(Math.min(65536, limit + 1 - total));
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      chunks.push(buf.subarray(0, n));
      total += n;
      if (total > limit) return { ok: false, code: "EFBIG" };
    }
    // bytes kept: what is not UTF-8 is escaped, never replaced (src/nix/bytes.ts)
    return { ok: true, text: decodeBytes(Buffer.concat(chunks)) };
  } catch (e) {
    return { ok: false, code: errCode(e) };
  } finally {
    closeSync(fd);
  }
}

/**
 * A bounded read of a file this process keeps for itself (a spool or signal file): opened without
 * following a link and without blocking, then accepted only when it is a regular file and `accept` says
 * so of its stat (its owner and mode, say). At most `limit` bytes are read; null when it cannot be used.
 */
export function readOwnFile(
  path: string,
  limit: number,
  accept: (st: Stats) => boolean,
): { data: Buffer; stat: Stats } | null {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || !accept(st)) return null;
    const buf = Buffer.alloc(Math.min(st.size, limit));
    let off = 0;
    while (off < buf.length) {
      const n = readSync(fd, buf, off, buf.length - off, null);
      if (n === 0) break;
      off += n;
    }
    return { data: buf.subarray(0, off), stat: st };
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}
