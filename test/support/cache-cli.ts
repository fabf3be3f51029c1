/**
 * The cache as a command, so that a test can use it as a real throwaway user:
 *   node --import tsx test/support/cache-cli.ts dir | write NAME KEY VALUE | read NAME KEY
 * Prints one JSON value.
 */
import { cacheDir, readCache, writeCache } from "../../src/host/cache.js";

const [cmd, name = "", key = "", value = ""] = process.argv.slice(2);
if (cmd === "dir") process.stdout.write(`${JSON.stringify(cacheDir())}\n`);
else if (cmd === "write") {
  writeCache(name, key, value);
  process.stdout.write("null\n");
} else if (cmd === "read") {
  const v = readCache(name, key, (x) => (typeof x === "string" ? x : undefined));
  process.stdout.write(`${JSON.stringify(v ?? null)}\n`);
} else process.exitCode = 64;
