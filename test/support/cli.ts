/**
 * How the tests run the command line. `test/run.sh` builds `dist/` first (scripts/provision), so the tests
 * run the CLI as it ships: `node dist/cli.js`, the bundle of `src/cli.ts`. When the build is missing or older
 * than a source file (a developer running one test file after an edit), they run `src/cli.ts` through tsx
 * instead. `NIX_BUILDERS_TEST_CLI=src` or `=dist` forces one. The bundle starts in about a quarter of the
 * CPU time tsx needs, and the suite starts the CLI hundreds of times.
 */
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

export const REPO = join(import.meta.dirname, "..", "..");
export const SRC_CLI = join(REPO, "src", "cli.ts");
export const DIST_CLI = join(REPO, "dist", "cli.js");

function newestSource(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestSource(p) : statSync(p).mtimeMs);
  }
  return newest;
}

function distIsFresh(): boolean {
  try {
    const built = statSync(DIST_CLI).mtimeMs;
    const inputs = ["scripts/bundle.mjs", "package.json", "tsconfig.json"]
      .map((p) => join(REPO, p))
      .map((p) => statSync(p).mtimeMs);
    return Math.max(newestSource(join(REPO, "src")), ...inputs) <= built;
  } catch {
    return false;
  }
}

const forced = process.env["NIX_BUILDERS_TEST_CLI"];
/** True when the tests run dist/cli.js. */
export const USES_DIST = forced === "dist" || (forced !== "src" && distIsFresh());

/** The node arguments that run the CLI (put `process.execPath` before them and the CLI's own after). */
export const CLI_NODE_ARGS: readonly string[] = USES_DIST ? [DIST_CLI] : ["--import", "tsx", SRC_CLI];

/** The whole command: `[node, ...CLI_NODE_ARGS]`. */
export function cliCommand(...args: string[]): string[] {
  return [process.execPath, ...CLI_NODE_ARGS, ...args];
}
