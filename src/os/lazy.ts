/**
 * Node modules that are costly to load (child_process brings net, dgram and stream wrappers; crypto
 * its whole tree), loaded on first use: a command that never starts a process or makes a random
 * name does not pay for them at start-up (bench/RESULTS.md, "start-up").
 */
import { createRequire } from "node:module";

const load = createRequire(import.meta.url);

let childProcessModule: typeof import("node:child_process") | undefined;
let cryptoModule: typeof import("node:crypto") | undefined;

export function childProcess(): typeof import("node:child_process") {
  childProcessModule ??= load("node:child_process") as typeof import("node:child_process");
  return childProcessModule;
}

export function crypto(): typeof import("node:crypto") {
  cryptoModule ??= load("node:crypto") as typeof import("node:crypto");
  return cryptoModule;
}
