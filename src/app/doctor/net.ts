/** DNS and TCP reachability, bounded in time. Only ever connects where the machines line points. */
import { lookup } from "node:dns/promises";
import { isIP, Socket } from "node:net";

export interface ResolveResult {
  ok: boolean;
  addresses: string[];
  error?: string;
  ms: number;
}

/** Resolve like ssh does (getaddrinfo, so /etc/hosts and nsswitch apply), with a deadline. */
export async function resolveHost(host: string, timeoutMs: number): Promise<ResolveResult> {
  const t0 = performance.now();
  if (isIP(host)) return { ok: true, addresses: [host], ms: 0 };
  let timer: NodeJS.Timeout | undefined;
  try {
    const r = await Promise.race([
      lookup(host, { all: true }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer from the resolver within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
    return { ok: true, addresses: r.map((a) => a.address), ms: Math.round(performance.now() - t0) };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return {
      ok: false,
      addresses: [],
      error: err.code ? `${err.code}: ${err.message}` : err.message,
      ms: Math.round(performance.now() - t0),
    };
  } finally {
    if (timer) clearTimeout(timer);
  }
}

export interface ConnectResult {
  ok: boolean;
  address: string;
  port: number;
  /** "refused", "unreachable", "timeout", or an errno code. */
  error?: string;
  message?: string;
  ms: number;
}

/** One TCP connect with a deadline; the socket is closed at once (sshd logs a dropped connection). */
export function tcpConnect(address: string, port: number, timeoutMs: number): Promise<ConnectResult> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const s = new Socket();
    let done = false;
    const finish = (r: Omit<ConnectResult, "address" | "port" | "ms">) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ ...r, address, port, ms: Math.round(performance.now() - t0) });
    };
    const timer = setTimeout(
      () => finish({ ok: false, error: "timeout", message: `no answer within ${timeoutMs} ms` }),
      timeoutMs,
    );
    s.once("connect", () => finish({ ok: true }));
    s.once("error", (e: NodeJS.ErrnoException) => {
      const code = e.code ?? "error";
      const error =
        code === "ECONNREFUSED"
          ? "refused"
          : code === "EHOSTUNREACH" || code === "ENETUNREACH"
            ? "unreachable"
            : code === "ETIMEDOUT"
              ? "timeout"
              : code;
      finish({ ok: false, error, message: e.message });
    });
    s.connect({ host: address, port });
  });
}
