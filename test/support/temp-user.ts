/**
 * A real throwaway user for tests that must show what an unprivileged local user can (not) do to a
 * root run: `useradd -m nbt-<random>`, commands run as that user through setpriv, `userdel -r` after.
 * Needs root; callers skip when not root.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";

export interface TempUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  /** Run argv as the user (setpriv, the user's groups, HOME set); returns stdout. Throws on failure. */
  run(argv: string[], env?: NodeJS.ProcessEnv): string;
  remove(): void;
}

export const isRoot = (): boolean => process.getuid?.() === 0;

export function makeTempUser(): TempUser {
  const name = `nbt-${randomBytes(4).toString("hex")}`;
  execFileSync("useradd", ["-m", "-s", "/bin/sh", name], { stdio: "ignore", timeout: 20_000 });
  const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8" }).trim());
  const gid = Number(execFileSync("id", ["-g", name], { encoding: "utf8" }).trim());
  const home = execFileSync("getent", ["passwd", name], { encoding: "utf8" }).trim().split(":")[5]!;
  return {
    name,
    uid,
    gid,
    home,
    run(argv, env = {}) {
      const full: NodeJS.ProcessEnv = { PATH: "/usr/bin:/bin", HOME: home, ...env };
      for (const k of Object.keys(full)) if (full[k] === undefined) delete full[k];
      return execFileSync(
        "setpriv",
        ["--reuid", String(uid), "--regid", String(gid), "--init-groups", "--", ...argv],
        {
          encoding: "utf8",
          timeout: 60_000,
          env: full,
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
    },
    remove() {
      try {
        execFileSync("userdel", ["-r", name], { stdio: "ignore", timeout: 20_000 });
      } catch {
        // userdel -r complains about a missing mail spool; the user is gone all the same
      }
    },
  };
}
