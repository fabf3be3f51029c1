import { NixError, strerror } from "../nix/errors.js";

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

/** glibc's text for codes that src/nix/errors does not need (write-side errors). */
const MORE_STRERROR: Record<string, string> = {
  EROFS: "Read-only file system",
  EEXIST: "File exists",
  ENOSPC: "No space left on device",
  EDQUOT: "Disk quota exceeded",
  EXDEV: "Invalid cross-device link",
  ENOTEMPTY: "Directory not empty",
  EFBIG: "File too large",
  EAGAIN: "Resource temporarily unavailable",
  ETIMEDOUT: "Connection timed out",
};

/**
 * errno codes that, raised by an operation on a path, say something about that path or this machine
 * (missing, not allowed, wrong type, full, read-only …), not about our code: a refusal, not a bug.
 * EINVAL, EBADF, EFAULT and the like stay internal errors.
 */
const PATH_ERRNO = new Set([
  "ENOENT",
  "EACCES",
  "EPERM",
  "EISDIR",
  "ENOTDIR",
  "ELOOP",
  "ENAMETOOLONG",
  "EIO",
  "EMFILE",
  "ENFILE",
  "ENXIO",
  "ENODEV",
  "EBUSY",
  "ETXTBSY",
  "EOVERFLOW",
  ...Object.keys(MORE_STRERROR),
]);

/** System calls on files, whose errors say something about the file even when Node omits its path. */
const FILE_SYSCALLS = new Set([
  "open",
  "read",
  "write",
  "stat",
  "lstat",
  "fstat",
  "readlink",
  "scandir",
  "mkdir",
]);

/** Is `code` an errno that, raised on a path, says something about that path or this machine? */
export function isPathErrno(code: string): boolean {
  return PATH_ERRNO.has(code);
}

/** The C library's text for an errno code (glibc wording), or the code itself. */
export function errnoText(code: string): string {
  return MORE_STRERROR[code] ?? strerror(code);
}

/** `s` on one line: control characters (newlines, escapes from a hostile file name) shown as `\xNN`. */
export function oneLine(s: string): string {
  return s.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/** How a command ended when it threw: what to print, and the exit code. */
export interface CommandFailure {
  kind: "usage" | "refusal" | "internal";
  /** One line, without the `nix-builders: ` prefix. */
  message: string;
  /** The file concerned (refusals), when known. */
  path?: string;
  exitCode: number;
}

/**
 * The one mapping from a thrown value to an outcome. UsageError → 64; Refusal, a NixError (a
 * configuration Nix itself would reject) and a system error on a path (EACCES, ENOENT, ELOOP, EROFS …:
 * `<path>: <strerror>`) → 2; anything else is a bug → 70.
 */
export function describeFailure(e: unknown): CommandFailure {
  if (e instanceof UsageError) return { kind: "usage", message: oneLine(e.message), exitCode: EXIT.usage };
  if (e instanceof Refusal)
    return {
      kind: "refusal",
      message: oneLine(e.message),
      ...(e.path !== undefined ? { path: e.path } : {}),
      exitCode: EXIT.errors,
    };
  if (e instanceof NixError) {
    const where = e.file === null ? "" : `${e.file}${e.line === null ? "" : `:${e.line}`}: `;
    return {
      kind: "refusal",
      message: oneLine(`${where}${e.nixMessage}`),
      ...(e.file !== null ? { path: e.file } : {}),
      exitCode: EXIT.errors,
    };
  }
  const ne = e as NodeJS.ErrnoException | null;
  if (
    e instanceof Error &&
    typeof ne?.code === "string" &&
    typeof ne.path === "string" &&
    PATH_ERRNO.has(ne.code)
  ) {
    const dest = (e as { dest?: unknown }).dest;
    const what = typeof dest === "string" ? `${ne.path} -> ${dest}` : ne.path;
    return {
      kind: "refusal",
      message: oneLine(`${what}: ${errnoText(ne.code)}`),
      path: ne.path,
      exitCode: EXIT.errors,
    };
  }
  // Node leaves the path out of some (readFileSync of a directory fails in read(2): EISDIR, no path).
  if (
    e instanceof Error &&
    typeof ne?.code === "string" &&
    PATH_ERRNO.has(ne.code) &&
    typeof ne.syscall === "string" &&
    FILE_SYSCALLS.has(ne.syscall)
  )
    return { kind: "refusal", message: `cannot ${ne.syscall}: ${errnoText(ne.code)}`, exitCode: EXIT.errors };
  const text = e instanceof Error ? `${e.name === "Error" ? "" : `${e.name}: `}${e.message}` : String(e);
  const first = text.split("\n")[0] ?? "";
  return {
    kind: "internal",
    message: oneLine(first.length > 500 ? `${first.slice(0, 500)}…` : first),
    exitCode: EXIT.internal,
  };
}

/**
 * Report a failure: one line on stderr (plus the stack trace with `--debug`), and with `--json` one
 * JSON document `{"error": {kind, message, path?, exitCode}}` on stdout. Returns the exit code.
 */
export function reportFailure(e: unknown, io: Io, opts: { json: boolean; debug: boolean }): number {
  const f = describeFailure(e);
  const text =
    f.kind === "internal"
      ? `internal error: ${f.message}${opts.debug ? "" : " (run with --debug for the trace)"}`
      : f.message;
  io.err(`nix-builders: ${text}\n`);
  if (opts.debug && e instanceof Error && e.stack) io.err(`${e.stack}\n`);
  if (opts.json) io.out(json({ error: f }));
  return f.exitCode;
}
