/**
 * SIGINT and SIGTERM during a doctor run (Ctrl-C, a CI timeout): every child runs in its own process
 * group (src/os/proc.ts), so the terminal's signal never reaches ssh. The handler kills those groups,
 * removes the doctor's private temp dirs (host-key files, control sockets), and exits 130 or 143.
 */
import { rmSync } from "node:fs";
import { killLiveGroups } from "../../os/proc.js";

const tempDirs = new Set<string>();

/** Remember a temp dir until the returned function is called (after it was removed). */
export function trackTempDir(dir: string): () => void {
  tempDirs.add(dir);
  return () => {
    tempDirs.delete(dir);
  };
}

/** Kill every live child's group and remove the tracked temp dirs, synchronously. */
export function cleanUpNow(): void {
  killLiveGroups("SIGKILL");
  for (const d of tempDirs) {
    try {
      rmSync(d, { recursive: true, force: true });
    } catch {
      // best effort: the process is exiting
    }
  }
  tempDirs.clear();
}

/**
 * Until the returned function is called: on SIGINT or SIGTERM, clean up, say so on stderr (`say`), and
 * exit 128 + the signal's number.
 */
export function onInterrupt(say: (line: string) => void, exit: (code: number) => never): () => void {
  const handler = (signal: NodeJS.Signals) => {
    cleanUpNow();
    say(
      `nix-builders: doctor interrupted by ${signal}; its ssh sessions were stopped and its temp files removed\n`,
    );
    exit(signal === "SIGINT" ? 130 : 143);
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  return () => {
    process.off("SIGINT", handler);
    process.off("SIGTERM", handler);
  };
}
