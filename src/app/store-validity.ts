/**
 * Which store paths are valid, for `plan`: over the daemon socket or `nix-daemon --stdio` (both speak
 * the worker protocol, src/remote/worker.ts), or with `nix-store --check-validity`. The store's location
 * comes from src/host/store.ts. See docs/plan.md.
 */
import { isStorePath, type StoreTarget } from "../host/store.js";
import { failureText, runProc, startProc } from "../os/proc.js";
import { connectDaemon, type WorkerConnection, workerHandshake } from "../remote/worker.js";

export type ValidityMethod = "daemon" | "stdio" | "nix-store";

export interface ValidityChecker {
  readonly method: ValidityMethod;
  /** The subset of `paths` that is valid. Paths that are not store paths are never sent. */
  valid(paths: readonly string[]): Promise<Set<string>>;
  /** Close the connection; resolves once any process behind it has exited. */
  close(): Promise<void>;
}

export class StoreAccessError extends Error {
  override name = "StoreAccessError";
}

function filterStorePaths(paths: readonly string[], storeDir: string): string[] {
  const out: string[] = [];
  for (const p of paths) if (isStorePath(p, storeDir)) out.push(p);
  return out;
}

function protocolChecker(
  method: ValidityMethod,
  conn: WorkerConnection,
  storeDir: string,
  onClose: () => Promise<void> | void,
): ValidityChecker {
  return {
    method,
    async valid(paths) {
      const send = filterStorePaths(paths, storeDir);
      if (send.length === 0) return new Set();
      return new Set(await conn.queryValidPaths(send, { timeoutMs: 120_000 }));
    },
    async close() {
      conn.close();
      await onClose();
    },
  };
}

/** The worker protocol over the daemon socket. */
export async function daemonValidity(target: StoreTarget): Promise<ValidityChecker> {
  const { result, connection, socket } = await connectDaemon({ socketPath: target.socketPath });
  if (!result.ok || !connection) {
    throw new StoreAccessError(result.ok ? "no connection" : result.nixMessage);
  }
  return protocolChecker("daemon", connection, target.storeDir, () => {
    socket?.destroy();
  });
}

/**
 * Deadlines: the `nix-daemon --stdio` handshake, one `nix-store --check-validity` chunk, and the whole
 * life of a `nix-daemon --stdio` (each query has its own deadline too).
 */
const HANDSHAKE_DEADLINE_MS = 30_000;
const CHECK_DEADLINE_MS = 300_000;
const STDIO_LIFETIME_MS = 3_600_000;

/** The worker protocol over `nix-daemon --stdio`, which opens the local (or chroot) store itself. */
export async function stdioValidity(
  target: StoreTarget,
  nixDaemon = "nix-daemon",
  deadlineMs = HANDSHAKE_DEADLINE_MS,
): Promise<ValidityChecker> {
  const args = ["--stdio", ...(target.root !== null ? ["--store", target.root] : [])];
  const proc = startProc([nixDaemon, ...args], {
    env: process.env,
    cwd: process.cwd(),
    deadlineMs: STDIO_LIFETIME_MS,
    stdin: "pipe",
    rawStdout: true,
    maxOutputBytes: 4096,
  });
  const child = proc.child;
  const spawnError = proc.done.then((r) => r.spawnError ?? new Error(failureText(r) ?? "exited"));
  const hs = workerHandshake(
    { input: child.stdout!, output: child.stdin! },
    { storeUri: target.root ?? "local", closer: () => child.stdin!.end() },
  );
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<Error>((res) => {
    timer = setTimeout(() => res(new Error(`no handshake within ${deadlineMs / 1000} s`)), deadlineMs);
  });
  const first = await Promise.race([hs, spawnError, deadline]).finally(() => clearTimeout(timer));
  if (first instanceof Error) {
    proc.kill();
    throw new StoreAccessError(`cannot run ${nixDaemon} --stdio: ${first.message}`);
  }
  const { result, connection } = first;
  if (!result.ok || !connection) {
    proc.kill();
    const stderr = (await proc.done).stderr;
    const why = stderr.trim() || (result.ok ? "no connection" : result.nixMessage);
    throw new StoreAccessError(`${nixDaemon} --stdio: ${why}`);
  }
  return protocolChecker("stdio", connection, target.storeDir, async () => {
    // The daemon exits on EOF; make sure it does not linger if it does not. Waiting for it means
    // nothing touches the store after the command returns (a caller may remove a scratch store).
    const timer = setTimeout(() => proc.kill(), 2000);
    await proc.done;
    clearTimeout(timer);
  });
}

/** `nix-store --check-validity --print-invalid`, in argv chunks of at most ~1 MB. */
export function nixStoreValidity(target: StoreTarget, nixStore = "nix-store"): ValidityChecker {
  const run = async (chunk: string[]): Promise<string> => {
    const r = await runProc([nixStore, ...target.nixArgs, "--check-validity", "--print-invalid", ...chunk], {
      env: process.env,
      cwd: process.cwd(),
      deadlineMs: CHECK_DEADLINE_MS,
      maxOutputBytes: 1 << 28,
    });
    if (r.timedOut)
      throw new StoreAccessError(
        `nix-store --check-validity did not finish within ${CHECK_DEADLINE_MS / 1000} s`,
      );
    if (r.code !== 0 || r.truncated.stdout > 0)
      throw new StoreAccessError(
        `nix-store --check-validity: ${r.stderr.trim() || failureText(r) || "output too large"}`,
      );
    return r.stdout;
  };
  return {
    method: "nix-store",
    async valid(paths) {
      const send = filterStorePaths(paths, target.storeDir);
      const valid = new Set(send);
      let i = 0;
      while (i < send.length) {
        const chunk: string[] = [];
        let bytes = 0;
        while (i < send.length && bytes < 1_000_000) {
          bytes += send[i]!.length + 9;
          chunk.push(send[i++]!);
        }
        for (const line of (await run(chunk)).split("\n")) if (line !== "") valid.delete(line);
      }
      return valid;
    },
    async close() {},
  };
}

/**
 * The validity checker for a store: the daemon socket when builds go through the daemon, else
 * `nix-daemon --stdio` on the local store (see docs/plan.md for why).
 */
export async function openValidity(target: StoreTarget, method?: ValidityMethod): Promise<ValidityChecker> {
  const m = method ?? (target.viaDaemon ? "daemon" : "stdio");
  if (m === "daemon") return daemonValidity(target);
  if (m === "stdio") return stdioValidity(target);
  return nixStoreValidity(target);
}
