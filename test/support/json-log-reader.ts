/**
 * A reader for Nix's `json-log-path` (2.30+) on a unix socket, for tests: it listens at `path` and
 * either reads every connection's lines ("read"), closes each connection at once ("close"), or accepts
 * and never reads ("stall", so the writer's socket buffer fills). `lines` holds the parsed JSON
 * records of all connections in arrival order, `connections` the count.
 */
import { createServer, type Server, type Socket } from "node:net";

export type ReaderMode = "read" | "close" | "stall";

export interface JsonLogReader {
  readonly path: string;
  readonly lines: Record<string, unknown>[];
  connections: number;
  close(): Promise<void>;
}

export async function startJsonLogReader(path: string, mode: ReaderMode): Promise<JsonLogReader> {
  const held: Socket[] = [];
  const reader: JsonLogReader = {
    path,
    lines: [],
    connections: 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of held) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server: Server = createServer((sock) => {
    reader.connections++;
    held.push(sock);
    if (mode === "close") return void sock.destroy();
    if (mode === "stall") return void sock.pause();
    let buf = "";
    sock.on("data", (b: Buffer) => {
      buf += b.toString("utf8");
      let i = buf.indexOf("\n");
      while (i >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        i = buf.indexOf("\n");
        try {
          reader.lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          reader.lines.push({ unparsed: line });
        }
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => resolve());
  });
  return reader;
}
