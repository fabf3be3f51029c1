/** An Io that records what a command prints, for tests of command modules. */
import type { Io } from "../../src/commands/io.js";

export interface CapturedIo extends Io {
  stdout: string;
  stderr: string;
}

export function captureIo(env: NodeJS.ProcessEnv = {}): CapturedIo {
  const io = {
    stdout: "",
    stderr: "",
    env,
    isTTY: false,
    out(t: string) {
      io.stdout += t;
    },
    err(t: string) {
      io.stderr += t;
    },
  };
  return io;
}
