/**
 * `explain` on real Nix 2.8 output captured from the lab, one fault at a time (docs/lab.md).
 *
 * For each lab fault on b1, the agent machine's root builds a new nonce derivation with
 * `nix-build -j0 --builders '<b1's machines line>'` (the line the lab gives with the fault on), and
 * `explainLog` on that output must name the cause `doctor` names for the fault (test/e2e/doctor.test.ts).
 * `slow` must succeed, and explain must find no error in its log.
 *
 * Nix 2.8 has no connect timeout of its own: the build against a blackholed builder would hang in ssh,
 * so every build here runs with `NIX_SSHOPTS=-oConnectTimeout=5` (as an operator would set it).
 *
 * With NIX_BUILDERS_SAVE_FIXTURES=1 each captured log is written to test/fixtures/logs/lab-<fault>.log with
 * a .cmd note, which test/unit/explain.test.ts (CAPTURED) keeps checking without the lab.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { explainLog } from "../../src/nix/explain.js";
import {
  ensureLab,
  type LabBuilder,
  type LabStatus,
  lab,
  labExec,
  labSkipReason,
  labStatus,
  nonceDrvExpr,
  REPO,
} from "./support/lab.js";

const skip = labSkipReason();
const SAVE = process.env.NIX_BUILDERS_SAVE_FIXTURES === "1";
const SSHOPTS = "-oConnectTimeout=5";

/** fault → the cause doctor names for it (test/e2e/doctor.test.ts), or null: the build succeeds. */
const EXPECT: Record<string, { causes: string[]; note: string } | null> = {
  down: { causes: ["unreachable"], note: "the builder's sshd is not running" },
  "wrong-host-key": { causes: ["host-key"], note: "the machines line pins a decoy host key" },
  unauthorized: { causes: ["auth"], note: "the builder's authorized_keys for nix-builder is empty" },
  "no-nix-on-path": {
    causes: ["remote-nix-missing"],
    note: "nix-store is only on the PATH of login shells on the builder",
  },
  nologin: { causes: ["remote-shell"], note: "nix-builder's shell is /usr/sbin/nologin" },
  untrusted: { causes: ["remote-untrusted"], note: "nix-builder is not in the builder's trusted-users" },
  blackhole: {
    causes: ["timeout"],
    note: "replies from the builder are dropped (NIX_SSHOPTS=-oConnectTimeout=5)",
  },
  "daemon-down": {
    causes: ["remote-daemon-down"],
    note: "the builder's nix-daemon is not running (ssh-ng:// line)",
  },
  "wrong-system": { causes: ["system-mismatch"], note: "the machines line lists a system the builder lacks" },
  "missing-feature": {
    causes: ["feature-mismatch"],
    note: "the machines line lists feature kvm, which the builder lacks",
  },
  banner: { causes: ["remote-shell"], note: "nix-builder's ~/.bashrc prints a banner" },
  slow: null,
};

/** Shell-quote argv for the .cmd note. */
function sh(argv: string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(" ");
}

describe("lab: explain on real Nix 2.8 output, for each fault", { skip }, () => {
  let s: LabStatus;
  const times: string[] = [];

  before(() => {
    s = ensureLab({ builders: 2 });
  });

  after(() => {
    if (skip) return;
    lab(["heal", "b1"], { allowFail: true });
    if (times.length) process.stderr.write(`${times.join("\n")}\n`);
  });

  it("covers every fault the lab knows", () => {
    assert.deepEqual(Object.keys(EXPECT).sort(), [...s.faultsKnown].sort());
  });

  for (const [fault, want] of Object.entries(EXPECT)) {
    it(`${fault}: ${want ? `explain says ${want.causes.join(" or ")}` : "the build succeeds, explain finds no failure"}`, () => {
      lab(["fault", "b1", fault]);
      try {
        const now = labStatus();
        assert.ok(now, "the lab is up");
        const b: LabBuilder = now.builders.find((x) => x.name === "b1")!;
        assert.ok(b.faults.includes(fault));
        const line = fault === "daemon-down" ? b.machinesLineNg : b.machinesLine;
        const cols = line.split(/\s+/);
        let system = "aarch64-linux";
        let requiredSystemFeatures: string[] | undefined;
        if (fault === "wrong-system") {
          // The system the line claims and the builder does not have.
          system = cols[1]!.split(",").find((x) => !b.systems.includes(x))!;
          assert.ok(system, `the wrong-system line lists a system b1 lacks: ${cols[1]}`);
        }
        if (fault === "missing-feature") {
          const extra = cols[5]!.split(",").filter((x) => !b.features.includes(x));
          assert.deepEqual(extra, ["kvm"]);
          requiredSystemFeatures = extra;
        }
        const { expr } = nonceDrvExpr(s, {
          system,
          ...(requiredSystemFeatures ? { requiredSystemFeatures } : {}),
        });
        const argv = ["nix-build", "--no-out-link", "-j0", "--builders", line, "-E", expr];
        const t0 = Date.now();
        const r = labExec(["env", `NIX_SSHOPTS=${SSHOPTS}`, ...argv], { timeoutMs: 120_000 });
        times.push(`explain-lab ${fault}: nix-build exit ${r.code} in ${Date.now() - t0} ms`);
        const log = r.stdout + r.stderr;
        const res = explainLog(log, { version: "2.8" });
        const found = JSON.stringify(
          res.findings.map((f) => [f.entryId, f.cause, f.line, f.text]),
          null,
          1,
        );
        if (SAVE) {
          const base = join(REPO, "test/fixtures/logs", `lab-${fault}`);
          writeFileSync(`${base}.log`, log);
          writeFileSync(
            `${base}.cmd`,
            [
              `# lab fault ${fault} on b1: ${want ? want.note : "200 ms more per round trip; the build succeeds"}`,
              "# produced by test/e2e/explain-lab.test.ts with: nix-build (Nix) 2.8.0, as root on the lab's agent machine",
              `# exit status: ${r.code}`,
              `# environment: NIX_SSHOPTS=${SSHOPTS} (agent nix.conf: sandbox = false, substituters =)`,
              `${sh(argv)}`,
              "",
            ].join("\n"),
          );
        }
        if (want === null) {
          assert.equal(r.code, 0, log);
          assert.match(log, /building '[^']+' on 'ssh:\/\/nix-builder@/);
          assert.equal(res.primary, null, found);
          assert.deepEqual(
            res.findings.filter((f) => f.severity === "error"),
            [],
          );
        } else {
          assert.notEqual(r.code, 0, log);
          assert.ok(res.primary, `no finding in:\n${log}`);
          assert.ok(
            want.causes.includes(res.primary.cause),
            `primary ${res.primary.entryId} [${res.primary.cause}] at line ${res.primary.line}; want ${want.causes.join("|")}\n${found}\n${log}`,
          );
          assert.equal(res.primary.versionNote, undefined, "2.8 output matches 2.8 wording");
        }
      } finally {
        lab(["heal", "b1"]);
      }
    });
  }
});
