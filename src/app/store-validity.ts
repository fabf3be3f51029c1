/**
 * Which store paths are valid, for `plan`: over the daemon socket or `nix-daemon --stdio` (both speak
 * the worker protocol, src/remote/worker.ts), or with `nix-store --check-validity`. The store's location
 * comes from src/host/store.ts. See docs/plan.md.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { isStorePath, type StoreTarget } from "../host/store.js";
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

/** Deadlines: the `nix-daemon --stdio` handshake, and one `nix-store --check-validity` chunk. */
const HANDSHAKE_DEADLINE_MS = 30_000;
const CHECK_DEADLINE_MS = 300_000;

/** The worker protocol over `nix-daemon --stdio`, which opens the local (or chroot) store itself. */
export async function stdioValidity(
  target: StoreTarget,
  nixDaemon = "nix-daemon",
  deadlineMs = HANDSHAKE_DEADLINE_MS,
): Promise<ValidityChecker> {
  const args = ["--stdio", ...(target.root !== null ? ["--store", target.root] : [])];
  let stderr = "";
  const child: ChildProcess = spawn(nixDaemon, args, { stdio: ["pipe", "pipe", "pipe"] });
  child.stderr!.on("data", (d: Buffer) => {
    if (stderr.length < 4096) stderr += d.toString();
  });
  const spawnError = new Promise<Error>((res) => child.once("error", res));
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
    child.kill("SIGKILL");
    throw new StoreAccessError(`cannot run ${nixDaemon} --stdio: ${first.message}`);
  }
  const { result, connection } = first;
  if (!result.ok || !connection) {
    child.kill();
    const why = stderr.trim() || (result.ok ? "no connection" : result.nixMessage);
    throw new StoreAccessError(`${nixDaemon} --stdio: ${why}`);
  }
  const exited = new Promise<void>((res) => {
    if (child.exitCode !== null || child.signalCode !== null) res();
    else child.once("exit", () => res());
  });
  return protocolChecker("stdio", connection, target.storeDir, async () => {
    // The daemon exits on EOF; make sure it does not linger if it does not. Waiting for it means
    // nothing touches the store after the command returns (a caller may remove a scratch store).
    const timer = setTimeout(() => child.kill("SIGKILL"), 2000);
    await exited;
    clearTimeout(timer);
  });
}

/** `nix-store --check-validity --print-invalid`, in argv chunks of at most ~1 MB. */
export function nixStoreValidity(target: StoreTarget, nixStore = "nix-store"): ValidityChecker {
  const run = (chunk: string[]): Promise<string> =>
    new Promise((res, rej) => {
      execFile(
        nixStore,
        [...target.nixArgs, "--check-validity", "--print-invalid", ...chunk],
        { maxBuffer: 1 << 28, timeout: CHECK_DEADLINE_MS },
        (err, stdout, stderr) =>
          err
            ? rej(
                new StoreAccessError(
                  (err as { killed?: boolean }).killed
                    ? `nix-store --check-validity did not finish within ${CHECK_DEADLINE_MS / 1000} s`
                    : `nix-store --check-validity: ${stderr.trim() || err.message}`,
                ),
              )
            : res(stdout),
      );
    });
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
