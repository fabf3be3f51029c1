/**
 * Test entry for `use`, `reset` and `verify` until they are wired into src/cli.ts:
 *   node --import tsx test/support/run-command.ts [--etc-nix DIR] use|reset|verify ARGS...
 * `--etc-nix DIR` bind-mounts DIR over /etc/nix first; the caller must have put this process in a private
 * mount namespace (`unshare --mount --propagation private`), so the host's /etc/nix is never touched.
 */
import { execFileSync } from "node:child_process";
import { Command, CommanderError } from "commander";
import { EXIT, processIo, reportFailure } from "../../src/commands/io.js";
import { register as registerReset } from "../../src/commands/reset.js";
import { register as registerUse } from "../../src/commands/use.js";
import { register as registerVerify } from "../../src/commands/verify.js";

const argv = process.argv.slice(2);
if (argv[0] === "--etc-nix") {
  const dir = argv[1]!;
  argv.splice(0, 2);
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
