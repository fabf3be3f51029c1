/**
 * Run a program as another user, the way a service manager would start it for that user.
 *
 * Node's `spawn` can set uid and gid but not the supplementary groups, and a process that keeps root's
 * supplementary groups is not what the service sees. So when we are root we exec through util-linux's
 * `setpriv --reuid U --regid G --init-groups` (initgroups(3) with the passwd name: the same group list
 * systemd's `User=` gives a unit, NSS groups included). setpriv execs the target directly (same pid, no
 * shell, no PAM, no login session). `util-linux` is Essential on Debian, so setpriv is always there.
 * A user with no passwd entry (a bare uid) gets `--clear-groups` instead (initgroups needs a name).
 * Dropping root via setuid also clears the capability sets, as for a service without AmbientCapabilities.
 *
 * The environment is built from scratch: HOME (passwd home), USER, LOGNAME, SHELL (passwd shell), and
 * PATH = systemd's default service PATH; `opts.env` is layered on top (a value of undefined removes a name).
 * The working directory defaults to `/`, as for a system service.
 *
 * When we are not root, only running as ourselves is possible; then the program is spawned directly.
 */

import { accessSync, constants } from "node:fs";
import { killGroup, type Proc, type ProcOptions, startProc } from "../os/proc.js";
import { lookupUser } from "./users.js";

/** systemd's default PATH for services (same on Debian 12). */
export const SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export interface RunAsIdentity {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly home: string;
  readonly shell: string;
  /** False for a bare uid with no passwd entry: no initgroups, no supplementary groups. Default true. */
  readonly hasPasswdEntry?: boolean;
}

/** A user name, a uid (resolved through passwd), or an already resolved identity. */
export type RunAsUser = string | number | RunAsIdentity;

export interface RunAsOptions {
  /** Added to (or, with undefined, removed from) the clean environment. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Working directory; default `/`. */
  readonly cwd?: string;
  /**
   * Kill the process group (SIGTERM, then SIGKILL after 2 s) after this many milliseconds; default
   * {@link RUN_AS_DEFAULT_DEADLINE_MS}.
   */
  readonly timeoutMs?: number;
  /** Written to stdin, which is then closed. Without it stdin is /dev/null. */
  readonly input?: string | Buffer;
}

export interface RunAsResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

export function resolveIdentity(user: RunAsUser): RunAsIdentity {
  if (typeof user === "object") return user;
  const u = lookupUser(user);
  if (u) return { name: u.name, uid: u.uid, gid: u.gid, home: u.home, shell: u.shell, hasPasswdEntry: true };
  if (typeof user === "number" || /^\d+$/.test(user)) {
    const uid = Number(user);
    return { name: String(uid), uid, gid: uid, home: "/", shell: "/bin/sh", hasPasswdEntry: false };
  }
  throw new Error(`no such user: ${user}`);
}

/** The environment a service for this user starts with, plus `extra`. */
export function serviceEnv(
  id: RunAsIdentity,
  extra: Readonly<Record<string, string | undefined>> = {},
): Record<string, string> {
  const env: Record<string, string | undefined> = {
    HOME: id.home === "" ? "/" : id.home,
    USER: id.name,
    LOGNAME: id.name,
    SHELL: id.shell === "" ? "/bin/sh" : id.shell,
    PATH: SERVICE_PATH,
    ...extra,
  };
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v;
  return out;
}

let setprivPath: string | null = null;
function findSetpriv(): string {
  if (setprivPath !== null) return setprivPath;
  for (const p of ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv", "/sbin/setpriv"]) {
    try {
      accessSync(p, constants.X_OK);
      setprivPath = p;
      return p;
    } catch {
      // try the next one
    }
  }
  throw new Error("setpriv (util-linux) is needed to run a program as another user, and it was not found");
}

/** The argv actually executed (exported for tests and for `--explain` style output). */
export function runAsArgv(id: RunAsIdentity, argv: readonly string[]): string[] {
  if (argv.length === 0) throw new Error("runAs: empty argv");
  const myUid = process.getuid?.() ?? -1;
  if (myUid !== 0) {
    if (myUid === id.uid) return [...argv];
    throw new Error(`running as ${id.name} (uid ${id.uid}) needs root; we are uid ${myUid}`);
  }
  const groups = id.hasPasswdEntry === false ? ["--clear-groups"] : ["--init-groups"];
  return [findSetpriv(), `--reuid=${id.uid}`, `--regid=${id.gid}`, ...groups, "--", ...argv];
}

/** Default deadline of a program run as another user without one (ms). */
export const RUN_AS_DEFAULT_DEADLINE_MS = 60_000;

export type StartAsOptions = Omit<ProcOptions, "env" | "cwd" | "deadlineMs"> &
  Omit<RunAsOptions, "timeoutMs"> & { readonly deadlineMs?: number };

/**
 * Start the program as `user` through the one subprocess helper (src/os/proc.ts): its own process group,
 * a deadline (default {@link RUN_AS_DEFAULT_DEADLINE_MS}), output bounded or streamed. stdin is a pipe
 * when `input` is given or `stdin: "pipe"` is asked for, else /dev/null.
 */
export function startAs(user: RunAsUser, argv: readonly string[], opts: StartAsOptions = {}): Proc {
  const id = resolveIdentity(user);
  const full = runAsArgv(id, argv);
  return startProc(full, {
    ...opts,
    env: serviceEnv(id, opts.env),
    cwd: opts.cwd ?? "/",
    deadlineMs: opts.deadlineMs ?? RUN_AS_DEFAULT_DEADLINE_MS,
  });
}

export { killGroup };

/**
 * Run `argv` as `user` and collect its output. Never uses a shell. Rejects when the program cannot be
 * started (no such user, no setpriv, no such program).
 */
export async function runAs(
  user: RunAsUser,
  argv: readonly string[],
  opts: RunAsOptions = {},
): Promise<RunAsResult> {
  const { timeoutMs, ...rest } = opts;
  const r = await startAs(user, argv, { ...rest, deadlineMs: timeoutMs ?? RUN_AS_DEFAULT_DEADLINE_MS }).done;
  if (r.spawnError) throw r.spawnError;
  return { code: r.code, signal: r.signal, stdout: r.stdout, stderr: r.stderr, timedOut: r.timedOut };
}
