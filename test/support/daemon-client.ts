/**
 * A worker-protocol client run as its own process, so that a test can connect to a throwaway daemon
 * as another user (`setpriv --reuid … node --import tsx test/support/daemon-client.ts '<json>'`).
 * Argument: {socket, clientVersion?, verbosity?, overrides?}. Prints one JSON line:
 * {handshake, messages} where messages are the log lines the daemon sent during SetOptions and one
 * IsValidPath after it (texts without colours).
 */
import { connectDaemon, stripAnsi } from "../../src/remote/worker.js";

const args = JSON.parse(process.argv[2] ?? "{}") as {
  socket: string;
  clientVersion?: number;
  verbosity?: number;
  overrides?: Record<string, string>;
};
const { result, connection } = await connectDaemon({
  socketPath: args.socket,
  ...(args.clientVersion !== undefined ? { clientVersion: args.clientVersion } : {}),
  timeoutMs: 15_000,
});
if (!connection) {
  process.stdout.write(`${JSON.stringify({ handshake: result, messages: [] })}\n`);
  process.exit(0);
}
await connection.setOptions({ verbosity: args.verbosity ?? 7, overrides: args.overrides ?? {} });
const messages = connection.lastMessages.filter((m) => m.text !== undefined).map((m) => stripAnsi(m.text!));
connection.close();
process.stdout.write(`${JSON.stringify({ handshake: result, messages })}\n`);
process.exit(0);
