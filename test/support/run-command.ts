/**
 * Test entry for `use`, `reset` and `verify` until they are wired into src/cli.ts:
 *   node --import tsx test/support/run-command.ts [--etc-nix DIR] use|reset|verify ARGS...
 * `--etc-nix DIR` bind-mounts DIR over /etc/nix first; the caller must have put this process in a private
 * mount namespace (`unshare --mount --propagation private`), so the host's /etc/nix is never touched.
 */
import { execFileSync } from "node:child_process";
import { Command, CommanderError } from "commander";
import { EXIT, processIo, UsageError } from "../../src/commands/io.js";
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
  else if (e instanceof UsageError) {
    process.stderr.write(`nix-builders: ${e.message}\n`);
    process.exitCode = EXIT.usage;
  } else {
    process.stderr.write(
      `nix-builders: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
    );
    process.exitCode = EXIT.internal;
  }
}
