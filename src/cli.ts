#!/usr/bin/env node
/**
 * The nix-builders command line: one module per command, wired here. A command's module (and all it
 * imports) is loaded only when that command runs, so every command starts faster; help, the version
 * and anything that is not a command name load them all, in the same order as before.
 */
import { Command, CommanderError } from "commander";
import { EXIT, type Io, json, oneLine, processIo, reportFailure } from "./commands/io.js";

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
  ["report", async () => (await import("./commands/report.js")).register],
  ["watch", async () => (await import("./commands/watch.js")).register],
  ["hook", async () => (await import("./commands/hook.js")).register],
  ["builds", async () => (await import("./commands/builds.js")).register],
  ["who-built", async () => (await import("./commands/builds.js")).register],
];

const io = processIo;
let exitCode: number | undefined;
const exit = (code: number): void => {
  exitCode = code;
};

// Read before parsing, so that a failure anywhere (even while commander parses) is reported in the form
// asked for. Only words before a `--` count.
const words = process.argv.slice(2);
const flags = words.includes("--") ? words.slice(0, words.indexOf("--")) : words;
const wants = { json: flags.includes("--json"), debug: flags.includes("--debug") };

// An error thrown outside the command's promise chain (an event handler, a stray rejection) gets the
// same one-line report and exit code, never Node's default trace.
let reported = false;
const fatal = (e: unknown): void => {
  if (reported) return;
  reported = true;
  process.exitCode = reportFailure(e, io, wants);
  process.exit();
};
// Output piped into `head` and the like: stop quietly, as a C tool killed by SIGPIPE would.
process.stdout.on("error", (e: NodeJS.ErrnoException) => {
  if (e.code !== "EPIPE") return fatal(e);
  reported = true;
  process.exit(process.exitCode ?? exitCode ?? 0);
});
process.on("uncaughtException", fatal);
process.on("unhandledRejection", fatal);

const program = new Command();
program
  .name("nix-builders")
  .description("Make this machine a correct, verified client of Nix remote builders.")
  .version("0.1.0")
  .option("--debug", "on an error, also print its stack trace")
  .exitOverride()
  .showHelpAfterError();

try {
  const one = COMMANDS.find(([name]) => name === words.find((w) => !w.startsWith("-")));
  for (const [, load] of one ? [one] : COMMANDS) (await load())(program, io, exit);
  await program.parseAsync(process.argv);
  if (exitCode !== undefined) process.exitCode = exitCode;
} catch (e) {
  if (e instanceof CommanderError) {
    // commander printed its message (and help) on stderr already.
    process.exitCode = e.exitCode === 0 ? 0 : EXIT.usage;
    if (e.exitCode !== 0 && wants.json)
      io.out(json({ error: { kind: "usage", message: oneLine(e.message), exitCode: EXIT.usage } }));
  } else {
    reported = true;
    process.exitCode = reportFailure(e, io, wants);
  }
}
