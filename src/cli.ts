#!/usr/bin/env node
/** The nix-builders command line: one module per command, wired here. */
import { Command, CommanderError } from "commander";
import { register as registerConfig } from "./commands/config.js";
import { register as registerDoctor } from "./commands/doctor.js";
import { register as registerExplain } from "./commands/explain.js";
import { EXIT, processIo, UsageError } from "./commands/io.js";
import { register as registerLint } from "./commands/lint.js";
import { register as registerPlan } from "./commands/plan.js";
import { register as registerReset } from "./commands/reset.js";
import { register as registerRoute } from "./commands/route.js";
import { register as registerShow } from "./commands/show.js";
import { register as registerUse } from "./commands/use.js";
import { register as registerVerify } from "./commands/verify.js";

const io = processIo;
let exitCode: number | undefined;
const exit = (code: number): void => {
  exitCode = code;
};

const program = new Command();
program
  .name("nix-builders")
  .description("Make this machine a correct, verified client of Nix remote builders.")
  .version("0.1.0")
  .exitOverride()
  .showHelpAfterError();

registerConfig(program, io, exit);
registerShow(program, io, exit);
registerLint(program, io, exit);
registerRoute(program, io, exit);
registerPlan(program, io, exit);
registerDoctor(program, io, exit);
registerVerify(program, io, exit);
registerUse(program, io, exit);
registerReset(program, io, exit);
registerExplain(program, io);

try {
  await program.parseAsync(process.argv);
  if (exitCode !== undefined) process.exitCode = exitCode;
} catch (e) {
  if (e instanceof CommanderError) {
    process.exitCode = e.exitCode === 0 ? 0 : EXIT.usage;
  } else if (e instanceof UsageError) {
    io.err(`nix-builders: ${e.message}\n`);
    process.exitCode = EXIT.usage;
  } else {
    io.err(`nix-builders: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = EXIT.internal;
  }
}
