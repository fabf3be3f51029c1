/**
 * Real throwaway users and a CLI runner with a hard deadline, for the tests that play an unprivileged
 * local user against root's nix-builders (they need root; they skip themselves otherwise).
 */
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { CLI_NODE_ARGS } from "./cli.js";

export const IS_ROOT = process.getuid?.() === 0;

export interface Throwaway {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/** `useradd -m` a user `nbt-<random>` (its own group, /bin/sh); remove it with {@link removeUser}. */
export function makeUser(prefix = "nbt"): Throwaway {
  const name = `${prefix}-${randomBytes(4).toString("hex")}`;
  const r = spawnSync("useradd", ["-m", "-U", "-s", "/bin/sh", name], { timeout: 20_000, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`useradd ${name}: ${r.stderr}`);
  const id = (flag: string) =>
    Number(spawnSync("id", [flag, name], { timeout: 5000, encoding: "utf8" }).stdout.trim());
  return { name, uid: id("-u"), gid: id("-g"), home: `/home/${name}` };
}

export function removeUser(u: Throwaway): void {
  spawnSync("userdel", ["-r", "-f", u.name], { timeout: 20_000, stdio: "ignore" });
}

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** We had to kill it at the deadline. */
  timedOut: boolean;
  ms: number;
}

const REPO = join(import.meta.dirname, "..", "..");

/**
 * Run `node --import tsx src/cli.ts ARGS` (as root, or as `as` through setpriv) with a clean environment
 * plus `env`, killing its process group at `deadlineMs`. Output beyond `maxOutput` bytes is dropped.
 */
export function runCli(
  args: readonly string[],
  opts: { env?: Record<string, string>; deadlineMs?: number; as?: Throwaway; maxOutput?: number } = {},
): Promise<CliRun> {
  const deadline = opts.deadlineMs ?? 20_000;
  const maxOutput = opts.maxOutput ?? 64 * 1024 * 1024;
  const node = [process.execPath, ...CLI_NODE_ARGS, ...args];
  const argv = opts.as
    ? ["setpriv", `--reuid=${opts.as.uid}`, `--regid=${opts.as.gid}`, "--init-groups", "--", ...node]
    : node;
  const env: Record<string, string> = {
    PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: opts.as ? opts.as.home : (process.env["HOME"] ?? "/root"),
    ...(opts.env ?? {}),
  };
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: REPO,
      env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    const keep = (into: Buffer[]) => (b: Buffer) => {
      if (size < maxOutput) into.push(b);
      size += b.length;
    };
    child.stdout.on("data", keep(out));
    child.stderr.on("data", keep(err));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // gone
      }
    }, deadline);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
        timedOut,
        ms: Date.now() - t0,
      });
    });
  });
}
