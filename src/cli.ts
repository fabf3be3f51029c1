#!/usr/bin/env node
import { Command } from "commander";

const program = new Command();
program
  .name("nix-builders")
  .description("Make this machine a correct, verified client of Nix remote builders.");
program.parseAsync(process.argv).catch((e: unknown) => {
  process.stderr.write(`nix-builders: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(70);
});
