// The HTTP edge of `nix-builders watch`: the status page, its JSON, the Prometheus metrics and a
// health check, rendered from the engine's snapshot. It only reads: GET (and HEAD) of four paths.
//
//   GET /             the status page (HTML, no JavaScript)
//   GET /status.json  the snapshot
//   GET /metrics      Prometheus text format
//   GET /healthz      200 "ok" once the first round has finished, 503 "starting" before
//
// Bounded: small headers, short timeouts, a cap on connections, no request body accepted. It binds
// 127.0.0.1 by default; on a loopback address it also refuses a Host header that is not a loopback
// name, so a web page cannot read it through DNS rebinding.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { isIP } from "node:net";
import type { Registry } from "prom-client";
import { createWatchMetrics, type WatchMetrics } from "./metrics.js";
import type { WatchSnapshot } from "./model.js";
import { renderStatusJson, renderStatusPage } from "./page.js";

/** The port watch listens on unless told otherwise. */
export const DEFAULT_WATCH_PORT = 9478;
export const DEFAULT_WATCH_LISTEN = `127.0.0.1:${DEFAULT_WATCH_PORT}`;

/**
 * `--listen` is not usable: a malformed address, or one that cannot be bound (in use, not on this
 * machine, a privileged port). One line, naming the address; the command shows it as a usage error.
 */
export class WatchListenError extends Error {
  override name = "WatchListenError";
  /** The errno code of a bind failure (EADDRINUSE, EADDRNOTAVAIL, EACCES), when there was one. */
  readonly code: string | undefined;
  constructor(message: string, code?: string) {
    super(message);
    this.code = code;
  }
}

export interface ListenAddress {
  host: string;
  port: number;
}

/**
 * Parses `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (127.0.0.1). The host must be an IP address or
 * `localhost`; port 0 picks a free port. Throws a WatchListenError that says what is wrong.
 */
export function parseListen(text: string): ListenAddress {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  if (!m)
    throw new WatchListenError(`--listen ${JSON.stringify(text)}: expected HOST:PORT, [IPv6]:PORT or :PORT`);
  const host = m[1] ?? (m[2] === "" ? "127.0.0.1" : (m[2] as string));
  const port = Number(m[3]);
  if (port > 65535)
    throw new WatchListenError(`--listen ${JSON.stringify(text)}: port ${port} is out of range`);
  if (m[1] !== undefined ? isIP(host) !== 6 : isIP(host) !== 4 && host !== "localhost") {
    throw new WatchListenError(
      `--listen ${JSON.stringify(text)}: the host must be an IP address or localhost`,
    );
  }
  return { host, port };
}

export interface WatchServerOptions {
  /** Where to listen: "HOST:PORT" or an address; default 127.0.0.1:9478. Port 0 picks a free one. */
  listen?: string | ListenAddress;
  /** The engine's current snapshot; called for every request that needs it. */
  snapshot: () => WatchSnapshot;
  /** A registry for the metrics (a private one by default). */
  registry?: Registry;
  /** Add prom-client's default process metrics (default true). */
  defaultMetrics?: boolean;
  /** The clock for the page's "3 min ago" (default Date.now). */
  now?: () => number;
}

export interface WatchServer {
  /** The address actually bound (the port is the real one when 0 was asked). */
  readonly address: ListenAddress;
  /** e.g. "http://127.0.0.1:9478" */
  readonly url: string;
  readonly metrics: WatchMetrics;
  /** Stops accepting, ends open connections, resolves when the socket is closed. */
  close(): Promise<void>;
}

const LIMITS = {
  maxConnections: 64,
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
  maxHeaderSize: 8 * 1024,
  checkEveryMs: 1_000,
};

/** Sent with every response. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "Cache-Control": "no-store",
  "X-Content-Type-Options": "nosniff",
  "X-Frame-Options": "DENY",
  "Referrer-Policy": "no-referrer",
  // The page is one document with an inline style sheet: no script, no frame, no fetch, no form.
  "Content-Security-Policy":
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
};

const PATHS = ["/", "/status.json", "/metrics", "/healthz"] as const;

/** Starts the server; resolves once it listens (rejects when the address cannot be bound). */
export async function startWatchServer(options: WatchServerOptions): Promise<WatchServer> {
  const listen =
    options.listen === undefined
      ? parseListen(DEFAULT_WATCH_LISTEN)
      : typeof options.listen === "string"
        ? parseListen(options.listen)
        : options.listen;
  const metrics = createWatchMetrics({
    snapshot: options.snapshot,
    registry: options.registry,
    defaultMetrics: options.defaultMetrics,
  });
  const now = options.now ?? Date.now;
  const loopbackOnly = isLoopback(listen.host);

  const server: Server = createServer(
    {
      maxHeaderSize: LIMITS.maxHeaderSize,
      requestTimeout: LIMITS.requestTimeoutMs,
      headersTimeout: LIMITS.headersTimeoutMs,
      keepAliveTimeout: LIMITS.keepAliveTimeoutMs,
      // Node checks the two timeouts above only this often (30 s by default).
      connectionsCheckingInterval: LIMITS.checkEveryMs,
    },
    (req, res) => {
      handle(req, res).catch(() => {
        // A renderer threw: answer without details (nothing of the snapshot or a stack leaks).
        if (!res.headersSent) send(res, req, 500, "text/plain; charset=utf-8", "internal error\n");
        else res.destroy();
      });
    },
  );
  server.maxConnections = LIMITS.maxConnections;
  // A client error (bad request line, headers too large, timeout) gets a bare 400 and the socket closes.
  server.on("clientError", (_err, socket) => {
    if (socket.writable)
      socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    else socket.destroy();
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? "";
    if (method !== "GET" && method !== "HEAD") {
      res.setHeader("Allow", "GET, HEAD");
      return send(res, req, 405, "text/plain; charset=utf-8", "method not allowed: only GET and HEAD\n");
    }
    if (
      (req.headers["content-length"] !== undefined && req.headers["content-length"] !== "0") ||
      req.headers["transfer-encoding"] !== undefined
    ) {
      return send(res, req, 400, "text/plain; charset=utf-8", "a request body is not accepted\n");
    }
    if (loopbackOnly && !loopbackHostHeader(req.headers.host)) {
      return send(
        res,
        req,
        421,
        "text/plain; charset=utf-8",
        "this server answers only to a loopback Host (127.0.0.1, [::1], localhost)\n",
      );
    }
    const path = (req.url ?? "").split("?", 1)[0];
    switch (path as (typeof PATHS)[number]) {
      case "/":
        return send(
          res,
          req,
          200,
          "text/html; charset=utf-8",
          renderStatusPage(options.snapshot(), { now: now() }),
        );
      case "/status.json":
        return send(res, req, 200, "application/json; charset=utf-8", renderStatusJson(options.snapshot()));
      case "/metrics":
        return send(res, req, 200, metrics.contentType, await metrics.render());
      case "/healthz": {
        const s = options.snapshot();
        return s.lastRoundAt === null
          ? send(res, req, 503, "text/plain; charset=utf-8", "starting\n")
          : send(res, req, 200, "text/plain; charset=utf-8", "ok\n");
      }
      default:
        return send(res, req, 404, "text/plain; charset=utf-8", `not found; try ${PATHS.join(", ")}\n`);
    }
  }

  await listenOn(server, listen);
  const bound = server.address();
  const port = typeof bound === "object" && bound !== null ? bound.port : listen.port;
  const address = { host: listen.host, port };
  const hostPart = isIP(listen.host) === 6 ? `[${listen.host}]` : listen.host;
  return {
    address,
    url: `http://${hostPart}:${port}`,
    metrics,
    close() {
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

/** Binds the server; a bind failure becomes a WatchListenError naming the address. */
async function listenOn(server: Server, listen: ListenAddress): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const why = {
        EADDRINUSE: "the address is in use",
        EADDRNOTAVAIL: "the address is not on this machine",
        EACCES: "permission denied",
      }[err.code ?? ""];
      reject(
        new WatchListenError(
          `--listen ${listen.host}:${listen.port}: cannot listen: ${why ?? err.message} (${err.code ?? "error"})`,
          err.code,
        ),
      );
    };
    server.once("error", onError);
    server.listen({ host: listen.host, port: listen.port, exclusive: true }, () => {
      server.off("error", onError);
      resolve();
    });
  });
}

function send(res: ServerResponse, req: IncomingMessage, status: number, type: string, body: string): void {
  const bytes = Buffer.from(body, "utf8");
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    "Content-Type": type,
    "Content-Length": String(bytes.length),
  });
  res.end(req.method === "HEAD" ? undefined : bytes);
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\./.test(host);
}

/** Whether a Host header names a loopback address (with or without a port). */
function loopbackHostHeader(host: string | undefined): boolean {
  if (host === undefined) return true; // HTTP/1.0 without Host: not a browser
  const m = /^(?:\[([^\]]+)\]|([^:]+))(?::\d{1,5})?$/.exec(host.trim().toLowerCase());
  if (!m) return false;
  const name = m[1] ?? m[2] ?? "";
  return name === "localhost" || name === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
}
