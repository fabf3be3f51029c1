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
