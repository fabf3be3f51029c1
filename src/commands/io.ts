/**
 * What a command may touch of the outside world, injected so that commands are testable:
 * output streams, the environment, and whether stdout is a terminal.
 */
export interface Io {
  out(text: string): void;
  err(text: string): void;
  readonly env: NodeJS.ProcessEnv;
  readonly isTTY: boolean;
}

export const processIo: Io = {
  out: (t) => {
    process.stdout.write(t);
  },
  err: (t) => {
    process.stderr.write(t);
  },
  env: process.env,
  isTTY: Boolean(process.stderr.isTTY),
};

/** A problem with how the command was called; exits 64 (EX_USAGE). */
export class UsageError extends Error {
  override name = "UsageError";
}

/**
 * The tool declines to act on something it was pointed at: a file it must not or cannot use. The
 * message is one line that names the file and the reason ("/home/u/.config/nix/nix.conf: is a symbolic
 * link; refusing to follow it"); the command line prints it and exits 2, never with a stack trace.
 * `path` is the file concerned, for the JSON form.
 */
export class Refusal extends Error {
  override name = "Refusal";
  readonly path: string | undefined;
  constructor(message: string, opts?: { path?: string }) {
    super(message);
    this.path = opts?.path;
  }
}

/** Exit codes shared by every command. */
export const EXIT = {
  ok: 0,
  warnings: 1,
  errors: 2,
  usage: 64,
  internal: 70,
} as const;

/**
 * One JSON document with a trailing newline. Big integers (Nix's u64 settings) are printed as plain
 * JSON numbers, as `nix show-config --json` prints them.
 */
export function json(value: unknown): string {
  const text = JSON.stringify(
    value,
    (_k, v: unknown) => (typeof v === "bigint" ? `\u0000bigint:${v.toString()}` : v),
    2,
  );
  return `${text.replace(/"\\u0000bigint:(-?\d+)"/g, "$1")}\n`;
}
