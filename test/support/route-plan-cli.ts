/**
 * A CLI with just the `route` and `plan` commands, wired like src/cli.ts, so that tests and the
 * benchmark can run them before (or without) the coordinator wiring them into src/cli.ts.
 *
 *   node --import tsx test/support/route-plan-cli.ts route|plan ...
 */
import { Command } from "commander";
import { EXIT, processIo, UsageError } from "../../src/commands/io.js";
import { register as registerPlan } from "../../src/commands/plan.js";
import { register as registerRoute } from "../../src/commands/route.js";

let code: number = EXIT.ok;
const program = new Command().name("nix-builders").exitOverride();
registerRoute(program, processIo, (c) => {
  code = c;
});
registerPlan(program, processIo, (c) => {
  code = c;
});
try {
  await program.parseAsync(process.argv);
  process.exitCode = code;
} catch (e) {
  if (e instanceof UsageError) {
    processIo.err(`nix-builders: ${e.message}\n`);
    process.exitCode = EXIT.usage;
  } else if (e instanceof Error && e.name === "CommanderError") {
    process.exitCode = EXIT.usage;
  } else throw e;
}
