/**
 * The real {@link FileReader} over node:fs, with Nix's semantics: `read` follows symlinks like open(2);
 * `exists` is an lstat (a dangling symlink exists; ENOENT and ENOTDIR mean "absent").
 */

import { lstatSync, readFileSync } from "node:fs";
import type { ExistsResult, FileReader, ReadResult } from "../nix/conf.js";

function errCode(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : "EIO";
}

export const nodeFileReader: FileReader = {
  read(path: string): ReadResult {
    try {
      return { ok: true, text: readFileSync(path, "utf8") };
    } catch (e) {
      return { ok: false, code: errCode(e) };
    }
  },
  exists(path: string): ExistsResult {
    try {
      lstatSync(path);
      return { ok: true, exists: true };
    } catch (e) {
      const code = errCode(e);
      if (code === "ENOENT" || code === "ENOTDIR") return { ok: true, exists: false };
      return { ok: false, code };
    }
  },
};
