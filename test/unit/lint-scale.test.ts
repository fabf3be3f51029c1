/**
 * lint on large inputs (issue 16 item 13). Speed is measured in bench/lint.ts (ratios in one run), not here;
 * these tests pin what made it slow or huge, with results that could fail:
 *
 *  - lintMandatoryFeatures counts who offers each feature once (it rebuilt a set of every other machine's
 *    features per machine: quadratic); the answers at 10,000 machines are the same as the per-machine rule;
 *  - a 10 MB value is never echoed in a finding (shownValue), a 10 MB number is not turned into a BigInt,
 *    a line of 300,000 `;`-separated machines does not overflow the stack (it was exit 70), through the
 *    real CLI with a private NIX_CONF_DIR.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { lintMandatoryFeatures, shownValue } from "../../src/nix/lint.js";
import { type Machine, parseBuilders } from "../../src/nix/machines.js";
import { NIX_2_8 } from "../../src/nix/version.js";
import { CLI_NODE_ARGS } from "../support/cli.js";

const tmp = mkdtempSync(join(tmpdir(), "nb-lint-scale-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const ms = (spec: string): Machine[] =>
  parseBuilders({
    spec,
    version: NIX_2_8,
    defaultSystem: "x86_64-linux",
    fs: { read: () => ({ ok: false, code: "ENOENT" }) },
    cwd: "/",
  }).machines;

/** The old rule, machine by machine (the reference the counted rule must agree with). */
function unknownByReference(machines: readonly Machine[]): string[] {
  const out: string[] = [];
  for (const m of machines) {
    const others = new Set(
      machines.filter((x) => x !== m).flatMap((x) => [...x.supportedFeatures, ...x.mandatoryFeatures]),
    );
    for (const f of m.mandatoryFeatures)
      if (!others.has(f) && /^(mand|gpu)/.test(f)) out.push(`${m.storeUri} ${f}`);
  }
  return out;
}

describe("lintMandatoryFeatures at scale", () => {
  it("agrees with the per-machine rule, including a feature a machine both supports and requires", () => {
    const rows: string[] = [];
    for (let i = 0; i < 300; i++) {
      // supported mand(i+7) on every 5th machine, mandatory mand(i) on every 7th: some shared, some alone
      const sup = i % 5 === 0 ? `mand${i + 7}` : "-";
      rows.push(`ssh://b${i} x86_64-linux - 1 1 ${sup} ${i % 7 === 0 ? `mand${i}` : "-"}`);
    }
    rows.push("ssh://g x86_64-linux - 1 1 gpu gpu"); // only g offers gpu: flagged
    const machines = ms(rows.join("\n"));
    const got = lintMandatoryFeatures(machines)
      .filter((f) => f.id === "mandatory-feature-unknown")
      .map((f) => `${/'([^']+)'/.exec(f.message)![1]}`);
    const want = unknownByReference(machines).map((s) => s.split(" ")[1]!);
    assert.deepEqual(got.sort(), want.sort());
    assert.ok(want.includes("gpu"));
    assert.ok(want.length > 3);
  });
  it("10,000 machines: every rare mandatory feature flagged once, none shared flagged", () => {
    const rows = Array.from(
      { length: 10_000 },
      (_, i) =>
        `ssh://b${i} x86_64-linux - 1 1 kvm${i % 2 ? ",shared" : ""} ${i % 13 === 0 ? `mand${i}` : "shared"}`,
    );
    const f = lintMandatoryFeatures(ms(rows.join("\n"))).filter((x) => x.id === "mandatory-feature-unknown");
    assert.equal(f.length, Math.ceil(10_000 / 13));
  });
});

describe("shownValue", () => {
  it("keeps short values, cuts long ones and says how long they were", () => {
    assert.equal(shownValue("aarch64-linux"), "aarch64-linux");
    const s = shownValue("q".repeat(10 * 1024 * 1024));
    assert.ok(s.length < 250);
    assert.match(s, /… \(10485760 characters\)$/);
  });
});

function lint(conf: string): { code: number | null; stdout: string; stderr: string } {
  const d = mkdtempSync(join(tmp, "conf-"));
  writeFileSync(join(d, "nix.conf"), conf);
  const r = spawnSync(process.execPath, [...CLI_NODE_ARGS, "lint", "--json"], {
    env: { ...process.env, NIX_CONF_DIR: d, NIX_USER_CONF_FILES: "", NIX_CONFIG: "" },
    encoding: "utf8",
    maxBuffer: 1 << 28,
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("10 MB lines through the CLI (private NIX_CONF_DIR)", () => {
  const MB10 = 10 * 1024 * 1024;
  it("extra-platforms = <10 MB>: the finding is there, the value is not echoed", () => {
    const r = lint(`extra-platforms = ${"q".repeat(MB10)}\n`);
    const doc = JSON.parse(r.stdout) as { findings: { id: string; message: string; fix: string }[] };
    assert.ok(doc.findings.some((f) => f.id === "extra-platforms-replaces"));
    assert.ok(r.stdout.length < 10_000, `lint printed ${r.stdout.length} bytes`);
  });
  it("system-features = 5 million words: not echoed", () => {
    const r = lint(`system-features = ${"f ".repeat(MB10 / 2)}\n`);
    assert.ok(r.stdout.length < 10_000, `lint printed ${r.stdout.length} bytes`);
    assert.ok(JSON.parse(r.stdout).findings.some((f: { id: string }) => f.id === "system-features-replaces"));
  });
  it("max-jobs = <10 MB of digits>: Nix's error, without a 10 MB BigInt", () => {
    const r = lint(`max-jobs = ${"9".repeat(MB10)}\n`);
    assert.equal(r.code, 2);
    assert.match(r.stdout, /configuration setting 'max-jobs' should be 'auto' or an integer/);
    assert.ok(r.stdout.length < 10_000);
  });
  it("builders = 300,000 machines on one line: findings, not a stack overflow (exit 70)", () => {
    const r = lint(`builders = ${"ssh://h x86_64-linux - 1 1 kvm;".repeat(MB10 / 32)}\n`);
    assert.notEqual(r.code, 70, r.stderr);
    assert.match(r.stdout, /"duplicate-machine"/);
    assert.ok(r.stdout.length < 10_000);
  });
});
