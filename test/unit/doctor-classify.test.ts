/**
 * classifyProbe (src/app/doctor/classify.ts) on ssh's stderr as real runs printed it: the lab's captured
 * Nix 2.8 logs (test/fixtures/logs/lab-*.log), which carry ssh's own messages. The doctor's e2e tests
 * check the same causes on live faults; these pin the summaries.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { classifyProbe } from "../../src/app/doctor/classify.js";
import { NIX_2_8 } from "../../src/nix/version.js";
import type { ProbeResult } from "../../src/remote/probe.js";

const logs = join(import.meta.dirname, "..", "fixtures", "logs");

function failed(stderr: string): ProbeResult {
  return {
    ok: false,
    protocol: "serve",
    argv: [],
    failure: { kind: "eof", nixMessage: "cannot connect to 'nix-builder@10.213.1.2'" },
    stderr,
    stderrTruncated: false,
    exitCode: 255,
    signal: null,
    killed: false,
    timings: { firstByteMs: null, handshakeMs: null, queryMs: null, totalMs: 1 },
  };
}

describe("classifyProbe on captured ssh output", () => {
  it("a changed host key: the summary keeps what happened, not ssh's banner and ssh-keygen hint", () => {
    const c = classifyProbe(failed(readFileSync(join(logs, "lab-wrong-host-key.log"), "utf8")), NIX_2_8);
    assert.deepEqual([c.stage, c.cause], ["host-key", "host-key"]);
    assert.equal(
      c.summary,
      "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! / Host key for 10.213.1.2 has changed and you have requested strict checking. / Host key verification failed.",
    );
    assert.ok(c.fix);
  });

  it("an unauthorized key is auth", () => {
    const c = classifyProbe(failed(readFileSync(join(logs, "lab-unauthorized.log"), "utf8")), NIX_2_8);
    assert.deepEqual([c.stage, c.cause], ["auth", "auth"]);
  });

  it("a refused connection is unreachable", () => {
    const c = classifyProbe(
      failed("ssh: connect to host 10.213.1.2 port 22: Connection refused\r\n"),
      NIX_2_8,
    );
    assert.deepEqual([c.stage, c.cause], ["connect", "unreachable"]);
    assert.match(c.summary, /Connection refused/);
  });
});
