/**
 * The running nix-daemon as a process: its pid, its environment (`/proc/<pid>/environ`), and so the
 * PATH in which the build hook looks up `ssh` and the NIX_SSHOPTS it passes on.
 *
 * Only daemons in our own mount namespace count (a container or a lab namespace can run other daemons
 * that share the pid namespace); of those, the oldest (the listener; connection handlers are its
 * children and also called nix-daemon).
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { SERVICE_PATH } from "./run-as.js";

export interface DaemonProcess {
  pid: number;
  /** null when /proc/<pid>/environ could not be read (not root, or a hardened /proc). */
  environ: Record<string, string> | null;
  /** Where the environment came from, in words (for evidence). */
  envSource: string;
}

function parseEnviron(buf: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of buf.toString("utf8").split("\0")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return out;
}

/** Find the nix-daemon listener in our mount namespace. */
export function findDaemonProcess(procDir = "/proc"): DaemonProcess | null {
  let ownMnt: string | null = null;
  try {
    ownMnt = readlinkSync(join(procDir, "self/ns/mnt"));
  } catch {
    // no namespace information: accept every daemon
  }
  const candidates: { pid: number; ppid: number; start: number }[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync(procDir);
  } catch {
    return null;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const comm = readFileSync(join(procDir, e, "comm"), "utf8").trim();
      if (comm !== "nix-daemon") continue;
      if (ownMnt !== null) {
        let mnt: string | null = null;
        try {
          mnt = readlinkSync(join(procDir, e, "ns/mnt"));
        } catch {
          mnt = null;
        }
        // Another namespace's daemon, or a zombie (its namespace links are gone).
        if (mnt !== ownMnt) continue;
      }
      const stat = readFileSync(join(procDir, e, "stat"), "utf8");
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (rest[0] === "Z" || rest[0] === "X") continue;
      candidates.push({ pid: Number(e), ppid: Number(rest[1]), start: Number(rest[19]) });
    } catch {
      // raced with an exiting process
    }
  }
  if (candidates.length === 0) return null;
  const pids = new Set(candidates.map((c) => c.pid));
  const roots = candidates.filter((c) => !pids.has(c.ppid));
  const pick = (roots.length ? roots : candidates).sort((a, b) => a.start - b.start)[0]!;
  let environ: Record<string, string> | null = null;
  let envSource = `/proc/${pick.pid}/environ`;
  try {
    environ = parseEnviron(readFileSync(join(procDir, String(pick.pid), "environ")));
  } catch (e) {
    envSource = `/proc/${pick.pid}/environ not readable (${(e as NodeJS.ErrnoException).code ?? "error"})`;
  }
  return { pid: pick.pid, environ, envSource };
}

/**
 * The environment the daemon's build hook (and so ssh) gets: the daemon's own when readable,
 * otherwise what a systemd service starts with (PATH = systemd's default, no NIX_SSHOPTS).
 */
export function daemonEnvironment(d: DaemonProcess | null): { env: Record<string, string>; source: string } {
  if (d?.environ) return { env: d.environ, source: d.envSource };
  const why = d ? d.envSource : "no running nix-daemon found in this mount namespace";
  return {
    env: { PATH: SERVICE_PATH, HOME: "/root", USER: "root", LOGNAME: "root" },
    source: `${why}; assuming systemd's default service environment`,
  };
}

/** `which`, over a given PATH, without a shell. */
export function findOnPath(name: string, path: string, isExecutable: (p: string) => boolean): string | null {
  for (const d of path.split(":")) {
    if (d === "") continue;
    const p = join(d, name);
    if (isExecutable(p)) return p;
  }
  return null;
}
