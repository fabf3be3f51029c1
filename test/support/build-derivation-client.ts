/**
 * Build one derivation through the local daemon the way hercules-ci-agent's worker does, as its own
 * process (so a test can run it on the lab's agent machine as the agent user):
 * `node --import tsx test/support/build-derivation-client.ts '<json>'` with
 * {drvPath, op: "buildDerivation" | "buildPaths", maxJobs, overrides?, socket?}.
 * buildDerivation sends the derivation read from the store as an in-memory BasicDerivation; buildPaths
 * sends `<drv>!out`. Prints one JSON line: {machine (first `building` activity's machine, "" = local,
 * null = none), status, error, trusted}.
 */
import { readDerivation } from "../../src/host/derivation-read.js";
import { connectDaemon, DaemonError, stripAnsi } from "../../src/remote/worker.js";

const a = JSON.parse(process.argv[2] ?? "{}") as {
  drvPath: string;
  op: "buildDerivation" | "buildPaths";
  maxJobs: number;
  overrides?: Record<string, string>;
  socket?: string;
};
const { result, connection } = await connectDaemon({
  ...(a.socket ? { socketPath: a.socket } : {}),
  clientVersion: 0x126,
  timeoutMs: 15_000,
});
if (!connection) {
  process.stdout.write(`${JSON.stringify({ machine: null, status: null, error: JSON.stringify(result) })}\n`);
  process.exit(0);
}
let status: number | null = null;
let error: string | null = null;
try {
  await connection.setOptions({ maxBuildJobs: a.maxJobs, verbosity: 3, overrides: a.overrides ?? {} });
  if (a.op === "buildDerivation") {
    const r = await connection.buildDerivation(a.drvPath, readDerivation(a.drvPath), 120_000);
    status = r.status;
    if (r.status >= 3) error = stripAnsi(r.errorMsg);
  } else {
    await connection.buildPaths([`${a.drvPath}!out`], 120_000);
    status = 0;
  }
} catch (e) {
  error = e instanceof DaemonError ? stripAnsi(e.info.message) : String(e);
}
const first = connection.lastMessages.find((m) => m.type === "start-activity" && m.activityType === 105);
connection.close();
const trusted = result.ok ? result.trusted : null;
process.stdout.write(
  `${JSON.stringify({ machine: first ? String(first.fields?.[1] ?? "") : null, status, error, trusted })}\n`,
);
process.exit(0);
