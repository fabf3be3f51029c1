/**
 * A tiny per-user cache for facts that are slow to ask for (the Nix version, Nix's machine
 * defaults). Entries are keyed by what they depend on (for example a binary's inode and mtime),
 * so a stale entry is never used. Failing to read or write the cache only costs time.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

function cacheFile(name: string): string {
  const env = process.env;
  const base = env["XDG_CACHE_HOME"] || (env["HOME"] ? join(env["HOME"], ".cache") : tmpdir());
  return join(base, "nix-builders", `${name}.json`);
}

export function readCache<T>(name: string, key: string): T | undefined {
  try {
    const entry = JSON.parse(readFileSync(cacheFile(name), "utf8")) as { key: string; value: T };
    return entry.key === key ? entry.value : undefined;
  } catch {
    return undefined;
  }
}

export function writeCache<T>(name: string, key: string, value: T): void {
  const file = cacheFile(name);
  try {
    mkdirSync(join(file, ".."), { recursive: true });
    const tmp = `${file}.${process.pid}`;
    writeFileSync(tmp, JSON.stringify({ key, value }));
    renameSync(tmp, file);
  } catch {
    // an unwritable cache is only slower
  }
}
