/**
 * Runs the CLI (dist/cli.js or src/cli.ts, as test/support/cli.ts chooses) in a private /etc/nix, for the
 * tests of commands that write or read it:
 *   node --import tsx test/support/run-command.ts [--etc-nix DIR] COMMAND ARGS...
 * `--etc-nix DIR` bind-mounts DIR over /etc/nix first; the caller must have put this process in a private
 * mount namespace (`unshare --mount --propagation private`), so the host's /etc/nix is never touched.
 * Where the host has no /etc/nix, /etc becomes an overlay in that namespace first, to hold the mount point.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { DIST_CLI, SRC_CLI, USES_DIST } from "./cli.js";

const argv = process.argv.slice(2);
if (argv[0] === "--etc-nix") {
  const dir = argv[1]!;
  argv.splice(0, 2);
  if (!existsSync("/etc/nix")) {
    // A fresh machine has no /etc/nix to mount on: give this namespace a copy-on-write /etc (an overlay
    // with its upper layer beside DIR, in the caller's temp directory) and make the mount point there.
    // One overlay per run (concurrent runs cannot share a work dir), removed when this process exits.
    const ov = mkdtempSync(`${dir}.etc-overlay-`);
    process.on("exit", () => rmSync(ov, { recursive: true, force: true }));
    mkdirSync(`${ov}/upper`);
    mkdirSync(`${ov}/work`);
    const opts = `lowerdir=/etc,upperdir=${ov}/upper,workdir=${ov}/work`;
    execFileSync("mount", ["-t", "overlay", "nb-etc", "-o", opts, "/etc"], { stdio: "inherit" });
    mkdirSync("/etc/nix");
  }
  execFileSync("mount", ["--bind", dir, "/etc/nix"], { stdio: "inherit" });
}

// The command line itself, with the remaining words as its arguments. The literal import keeps this file
// bundleable (test/e2e/use-crash.test.ts bundles it with the sources).
process.argv = [process.argv[0]!, USES_DIST ? DIST_CLI : SRC_CLI, ...argv];
if (USES_DIST) await import(pathToFileURL(DIST_CLI).href);
else await import("../../src/cli.js");
