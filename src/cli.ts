#!/usr/bin/env node
/**
 * The nix-builders command line: one module per command, wired here. A command's module (and all it
 * imports) is loaded only when that command runs, so every command starts faster; help, the version
 * and anything that is not a command name load them all, in the same order as before.
 */
import { Command, CommanderError } from "commander";
import { EXIT, type Io, processIo, UsageError } from "./commands/io.js";

type Register = (program: Command, io: Io, exit: (code: number) => void) => void;

/** The commands, in the order help lists them. */
const COMMANDS: [string, () => Promise<Register>][] = [
  ["config", async () => (await import("./commands/config.js")).register],
  ["show", async () => (await import("./commands/show.js")).register],
  ["lint", async () => (await import("./commands/lint.js")).register],
  ["route", async () => (await import("./commands/route.js")).register],
  ["plan", async () => (await import("./commands/plan.js")).register],
  ["doctor", async () => (await import("./commands/doctor.js")).register],
  ["verify", async () => (await import("./commands/verify.js")).register],
  ["use", async () => (await import("./commands/use.js")).register],
  ["reset", async () => (await import("./commands/reset.js")).register],
  ["explain", async () => (await import("./commands/explain.js")).register],
];

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

try {
  const one = COMMANDS.find(([name]) => name === process.argv[2]);
  for (const [, load] of one ? [one] : COMMANDS) (await load())(program, io, exit);
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
