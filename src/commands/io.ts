/**
 * The command I/O layer: what a command may touch of the outside world (`Io`), the exit codes, the
 * errors that end a command (`UsageError` → 64, `Refusal` → 2) and the one JSON printer. They live in
 * src/app/io.ts, because the application layer raises the same errors; commands import them from here.
 */
export * from "../app/io.js";
