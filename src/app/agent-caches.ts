/**
 * Reading the agent's binary-caches.json as the agent user: the agent edge (src/agent/caches.ts) decodes
 * it, the host edge (src/host/run-as.ts) reads it with that user's credentials.
 */
import { type BinaryCachesResult, parseBinaryCaches } from "../agent/caches.js";
import { finding } from "../agent/findings.js";
import { runAs } from "../host/run-as.js";

/** Largest binary-caches.json we read. */
export const BINARY_CACHES_MAX_BYTES = 1 << 20;

/**
 * Read binary-caches.json as the agent user (it lives in the agent's secrets directory, which that
 * user controls), bounded in size and time, and decode it. Never returns the file's text.
 */
export async function readBinaryCaches(
  path: string,
  user: string,
  timeoutMs = 5000,
): Promise<BinaryCachesResult> {
  const unreadable = (why: string, severity: "error" | "info"): BinaryCachesResult => ({
    caches: null,
    findings: [
      finding(
        severity === "error" ? "agent-binary-caches-missing" : "agent-binary-caches-unreadable",
        severity,
        severity === "error"
          ? `${path} does not exist; the agent refuses to start without binary-caches.json (an empty object {} is enough).`
          : `${path} could not be read as ${user} (${why}), so the caches every task adds are not known here.`,
        severity === "error" ? `Create ${path}, owned by ${user}, mode 0600.` : null,
        { file: path },
      ),
    ],
  });
  let r: Awaited<ReturnType<typeof runAs>>;
  try {
    r = await runAs(user, ["head", "-c", String(BINARY_CACHES_MAX_BYTES + 1), "--", path], { timeoutMs });
  } catch (e) {
    return unreadable(e instanceof Error ? e.message : String(e), "info");
  }
  if (r.timedOut) return unreadable(`no answer within ${timeoutMs} ms; not a regular file?`, "info");
  if (r.code !== 0) {
    if (/No such file/.test(r.stderr)) return unreadable("no such file", "error");
    return unreadable(/Permission denied/.test(r.stderr) ? "permission denied" : "read failed", "info");
  }
  if (Buffer.byteLength(r.stdout) > BINARY_CACHES_MAX_BYTES)
    return unreadable(`larger than ${BINARY_CACHES_MAX_BYTES} bytes`, "info");
  return parseBinaryCaches(r.stdout, path);
}
