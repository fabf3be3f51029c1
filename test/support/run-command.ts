/**
 * Test entry for `use`, `reset` and `verify` until they are wired into src/cli.ts:
 *   node --import tsx test/support/run-command.ts [--etc-nix DIR] use|reset|verify ARGS...
 * `--etc-nix DIR` bind-mounts DIR over /etc/nix first; the caller must have put this process in a private
 * mount namespace (`unshare --mount --propagation private`), so the host's /etc/nix is never touched.
 * Where the host has no /etc/nix, /etc becomes an overlay in that namespace first, to hold the mount point.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { EXIT, processIo, reportFailure } from "../../src/commands/io.js";
import { register as registerReset } from "../../src/commands/reset.js";
import { register as registerUse } from "../../src/commands/use.js";
import { register as registerVerify } from "../../src/commands/verify.js";

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

let exitCode: number = EXIT.ok;
const program = new Command().name("nix-builders").exitOverride();
registerUse(program, processIo, (c) => {
  exitCode = c;
});
registerReset(program, processIo, (c) => {
  exitCode = c;
});
registerVerify(program, processIo, (c) => {
  exitCode = c;
});
try {
  await program.parseAsync(argv, { from: "user" });
  process.exitCode = exitCode;
} catch (e) {
  if (e instanceof CommanderError) process.exitCode = e.exitCode === 0 ? 0 : EXIT.usage;
  // The same mapping as src/cli.ts (refusal 2, usage 64, internal 70; one line, trace with --debug).
  else
    process.exitCode = reportFailure(e, processIo, {
      json: argv.includes("--json"),
      debug: argv.includes("--debug"),
    });
}
