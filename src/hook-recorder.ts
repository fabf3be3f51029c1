/**
 * The build-hook spool's collector (`dist/hook-recorder.js`). libexec/build-hook starts it in the
 * background, in a session of its own and at the lowest CPU priority, once in a while (when the spool
 * holds a multiple of NIX_BUILDERS_HOOK_COLLECT_EVERY pairs, default 32): it moves the records of the
 * hooks that have ended from the spool into builds.jsonl and deletes their pairs (src/app/hook-spool.ts).
 * It is never on a hook's byte path; whatever happens here, builds go on. `builds`, `who-built` and
 * watch collect and read the spool themselves too.
 *
 * Kept small on purpose: node:fs, the pure protocol decoders and the store writer, nothing else.
 */
import { stateDir } from "./app/builds-store.js";
import { collectSpool, spoolDir } from "./app/hook-spool.js";

export { HookSession } from "./app/hook-spool.js";

function main(): void {
  // Never let an error here reach anything: the collector just stops.
  process.on("uncaughtException", () => process.exit(0));
  const t = setTimeout(() => process.exit(0), 60_000);
  t.unref();
  collectSpool(spoolDir(), stateDir());
  process.exit(0);
}

if (process.argv[1]?.endsWith("hook-recorder.js") || process.argv[1]?.endsWith("hook-recorder.ts")) main();
