/**
 * How `watch status`, `watch drain`, `watch undrain` and `watch --wait-ready` talk to the running watch: a
 * Unix stream socket `control.sock` in the state directory, which is root's and mode 0700, so only root
 * can connect. One JSON request line, one JSON answer line, then the connection closes. Bounded: a request
 * longer than 4 KiB or slower than 5 s is dropped.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { UnknownBuilderError, type Watch } from "./engine.js";

export const CONTROL_SOCKET = "control.sock";
const MAX_REQUEST = 4096;

export type ControlRequest =
  | { op: "status" }
  | { op: "drain"; name: string }
  | { op: "undrain"; name: string };

export type ControlAnswer = { ok: true; result: unknown } | { ok: false; error: string; unknown?: true };

export interface ControlServer {
  readonly path: string;
  close(): Promise<void>;
}

export async function handle(watch: Watch, req: unknown): Promise<ControlAnswer> {
  if (typeof req !== "object" || req === null) return { ok: false, error: "not a request" };
  const r = req as Record<string, unknown>;
  try {
    if (r["op"] === "status") return { ok: true, result: watch.snapshot() };
    if ((r["op"] === "drain" || r["op"] === "undrain") && typeof r["name"] === "string") {
      const name = r["name"];
      const res = r["op"] === "drain" ? await watch.drain(name) : await watch.undrain(name);
      return { ok: true, result: res };
    }
    return { ok: false, error: "unknown request" };
  } catch (e) {
    if (e instanceof UnknownBuilderError) return { ok: false, error: e.message, unknown: true };
    return { ok: false, error: e instanceof Error ? e.message : String(e) };
  }
}

/** Listen on `<stateDir>/control.sock` (a stale socket from a crash is replaced). */
export async function startControl(watch: Watch, stateDir: string): Promise<ControlServer> {
  const sock = path.join(stateDir, CONTROL_SOCKET);
  try {
    const st = fs.lstatSync(sock);
    if (st.isSocket()) fs.unlinkSync(sock);
    else throw new Error(`${sock}: exists and is not a socket; refusing to replace it`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  const server = net.createServer((c) => {
    let buf = "";
    c.setTimeout(5000, () => c.destroy());
    c.on("error", () => {});
    c.on("data", (d: Buffer) => {
      buf += d.toString("utf8");
      if (buf.length > MAX_REQUEST) return c.destroy();
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      let req: unknown;
      try {
        req = JSON.parse(buf.slice(0, nl));
      } catch {
        req = null;
      }
      c.pause();
      void handle(watch, req).then((a) => c.end(`${JSON.stringify(a)}\n`));
    });
  });
  server.maxConnections = 16;
  const old = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(sock, () => resolve());
    });
  } finally {
    process.umask(old);
  }
  fs.chmodSync(sock, 0o600);
  return {
    path: sock,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        try {
          fs.unlinkSync(sock);
        } catch {
          // gone already
        }
      }),
  };
}

/** Send one request to the running watch; throws a one-line Error when none answers. */
export function controlRequest(
  stateDir: string,
  req: ControlRequest,
  timeoutMs = 10_000,
): Promise<ControlAnswer> {
  const sock = path.join(stateDir, CONTROL_SOCKET);
  return new Promise((resolve, reject) => {
    const c = net.createConnection(sock);
    let buf = "";
    const fail = (why: string) => {
      c.destroy();
      reject(new Error(why));
    };
    const timer = setTimeout(() => fail(`${sock}: no answer within ${timeoutMs / 1000} s`), timeoutMs);
    c.on("connect", () => c.write(`${JSON.stringify(req)}\n`));
    c.on("data", (d: Buffer) => {
      buf += d.toString("utf8");
      if (buf.length > 64 * 1024 * 1024) fail(`${sock}: answer too large`);
    });
    c.on("error", (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new Error(
          e.code === "ENOENT" || e.code === "ECONNREFUSED"
            ? `${sock}: no running watch (${e.code})`
            : `${sock}: ${e.message}`,
        ),
      );
    });
    c.on("end", () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(buf) as ControlAnswer);
      } catch {
        reject(new Error(`${sock}: not a watch answer`));
      }
    });
  });
}
