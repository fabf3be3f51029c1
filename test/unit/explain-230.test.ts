/**
 * `explain` on real Nix 2.30.5 output (test/fixtures/logs-2.30, captured by test/support/capture-logs.sh
 * with 2.30 first on PATH): the same causes as on 2.8 (test/fixtures/logs), at 2.30's line numbers, except
 * where 2.30 itself behaves otherwise (noted per row). No finding may carry a "wording from another
 * version" note: these are 2.30's own texts.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { explainLog } from "../../src/nix/explain.js";

const FIXTURES = join(import.meta.dirname, "..", "fixtures", "logs-2.30");

/** name → [entry, cause, line] of the primary finding. */
const CAPTURED: Record<string, [string, string, number]> = {
  "bad-machine-hostkey": ["machine-spec-hostkey", "machines-syntax", 6],
  "bad-machine-maxjobs": ["machine-spec-column", "machines-syntax", 5],
  // 2.30 skips blank entries and takes a float speed factor: the line is fine, and host `h` does not resolve
  "bad-machine-no-url": ["ssh-resolve", "unreachable", 5],
  "bad-machine-speed": ["ssh-resolve", "unreachable", 5],
  // the inner error under 2.30's evaluation trace
  "daemon-socket-missing": ["daemon-socket-down", "daemon-unreachable", 12],
  "daemon-socket-refused": ["daemon-socket-down", "daemon-unreachable", 12],
  "illegal-config-line": ["config-syntax", "local-config", 1],
  "no-builders-j0": ["unable-to-start-no-builders", "max-jobs-zero", 5],
  "no-machine-features-j0": ["no-machine", "feature-mismatch", 5],
  "no-machine-local-fallback": ["no-machine", "system-mismatch", 5],
  "no-machine-mandatory": ["no-machine", "feature-mismatch", 5],
  "no-machine-system-j0": ["no-machine", "system-mismatch", 5],
  "remote-nix-daemon-missing": ["remote-nix-not-on-path", "remote-nix-missing", 5],
  "remote-nix-store-missing": ["remote-nix-not-on-path", "remote-nix-missing", 5],
  "ssh-banner": ["serve-protocol-garbage", "remote-shell", 5],
  "ssh-host-key-internal-json": ["ssh-host-key-failed", "host-key", 18],
  "ssh-host-key": ["ssh-host-key-failed", "host-key", 5],
  "ssh-invalid-host": ["ssh-invalid-host", "machines-syntax", 5],
  // 2.30's own "Could not find executable 'ssh'"
  "ssh-missing": ["ssh-missing", "ssh-missing", 5],
  "ssh-ng-banner": ["daemon-protocol-garbage", "remote-shell", 5],
  "ssh-ng-host-key": ["ssh-host-key-failed", "host-key", 5],
  // 2.30 hides the nologin text (read as the first stdout line, shown only at -vvv): only
  // `failed to start SSH connection` is left, and the listing after it
  "ssh-nologin": ["no-machine", "unreachable", 6],
  "ssh-publickey": ["ssh-auth-denied", "auth", 5],
  "ssh-refused": ["ssh-refused", "unreachable", 5],
  "ssh-unresolvable": ["ssh-resolve", "unreachable", 5],
  "unknown-extra-builders": ["unknown-setting-extra-builders", "unknown-setting", 1],
  "untrusted-builders": ["untrusted-setting-ignored", "local-untrusted", 6],
  "untrusted-substituter": ["untrusted-substituter", "local-untrusted", 2],
  "waiting-for-machine": ["waiting-for-machine", "builders-busy", 5],
};

describe("captured Nix 2.30 logs (test/fixtures/logs-2.30)", {
  skip: !existsSync(FIXTURES) && "no fixtures",
}, () => {
  test("every .log has a .cmd from Nix 2.30 and an expectation here", () => {
    const have = readdirSync(FIXTURES);
    const logs = have.filter((f) => f.endsWith(".log")).map((f) => f.slice(0, -4));
    assert.deepEqual(logs.sort(), Object.keys(CAPTURED).sort());
    for (const l of logs) assert.match(readFileSync(join(FIXTURES, `${l}.cmd`), "utf8"), /Nix\) 2\.30\./);
  });
  for (const [name, [entryId, cause, line]] of Object.entries(CAPTURED)) {
    test(name, () => {
      const r = explainLog(readFileSync(join(FIXTURES, `${name}.log`), "utf8"), { version: "2.30" });
      const all = JSON.stringify(r.findings.map((f) => [f.entryId, f.line]));
      assert.equal(r.primary?.entryId, entryId, all);
      assert.equal(r.primary?.cause, cause);
      assert.equal(r.primary?.line, line);
      for (const f of r.findings) assert.equal(f.versionNote, undefined, `${f.entryId}: 2.30's own wording`);
    });
  }
});
