/** The doctor's plain-text report (src/app/doctor/report.ts): what a person reads on a terminal. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { firstJumpHop } from "../../src/app/doctor/builder.js";
import type { DoctorReport } from "../../src/app/doctor/doctor.js";
import { reportJson, reportText } from "../../src/app/doctor/report.js";
import type { CheckResult } from "../../src/app/doctor/types.js";

const A = "ssh://nix-builder@a";
const B = "ssh://nix-builder@b";

function check(id: string, builder: string | null, over: Partial<CheckResult> = {}): CheckResult {
  return {
    id,
    builder,
    status: "pass",
    cause: null,
    message: `${id} message`,
    evidence: [{ what: `ran ${id}`, result: "fine" }],
    fix: null,
    deps: [],
    durationMs: 1,
    ...over,
  };
}

const IDS = [
  "builder.tcp",
  "builder.host-key",
  "builder.handshake",
  "builder.remote-config",
  "builder.trust",
];

function report(): DoctorReport {
  const checks: CheckResult[] = [check("nix", null)];
  for (const id of IDS) checks.push(check(id, A));
  for (const id of IDS) {
    if (id === "builder.trust")
      checks.push(
        check(id, B, {
          status: "fail",
          cause: "remote-untrusted",
          message: "the builder does not trust nix-builder",
          fix: "Add nix-builder to trusted-users.",
        }),
      );
    else checks.push(check(id, B));
  }
  return {
    checks,
    summary: {
      pass: checks.length - 1,
      warn: 0,
      fail: 1,
      skip: 0,
      builders: 2,
      user: "hercules-ci-agent",
      sshIdentity: "root",
      nixVersion: "2.8.0",
      userSource: "--user",
      exitCode: 2,
      durationMs: 1234,
      builderDurationsMs: { [A]: 400, [B]: 500 },
    },
  } as DoctorReport;
}

describe("doctor text report", () => {
  it("a builder that passes everything is a headline plus its handshake and configuration", () => {
    const t = reportText(report());
    const a = t.slice(t.indexOf(`${A}  `), t.indexOf(`${B}  `));
    assert.equal(
      a.trim(),
      [
        `${A}  (ok, 400 ms): all 5 checks pass`,
        "  ok    builder.handshake: builder.handshake message",
        "  ok    builder.remote-config: builder.remote-config message",
      ].join("\n"),
    );
  });

  it("a failing builder lists every check; the failure carries evidence and its fix", () => {
    const t = reportText(report());
    const b = t.slice(t.indexOf(`${B}  `));
    assert.match(b, /^ssh:\/\/nix-builder@b {2}\(FAIL, 500 ms\)\n/);
    for (const id of IDS) assert.ok(b.includes(` ${id}`), id);
    assert.match(b, /FAIL {2}builder\.trust \[remote-untrusted\]: the builder does not trust nix-builder\n/);
    assert.match(b, / {8}· ran builder\.trust: fine\n/);
    assert.match(b, / {8}fix: Add nix-builder to trusted-users\.\n/);
    // Passing checks of a failing builder stay one line each.
    assert.doesNotMatch(b, /ran builder\.tcp/);
    assert.match(t, /\n\d+ ok, 0 warnings, 1 failed, 0 skipped; 2 builders in 1\.2 s\n$/);
  });

  it("--verbose lists every check of every builder, with evidence", () => {
    const t = reportText(report(), { verbose: true });
    assert.match(t, new RegExp(`${A.replaceAll("/", "\\/")} {2}\\(ok, 400 ms\\)\\n`));
    for (const id of IDS) assert.ok(t.includes(`· ran ${id}: fine`), id);
  });

  it("JSON keeps every check, whatever the text shows", () => {
    const j = reportJson(report()) as { checks: unknown[] };
    assert.equal(j.checks.length, 1 + 2 * IDS.length);
  });
});

describe("firstJumpHop (ProxyJump's first hop)", () => {
  it("parses user, host, port, the ssh:// form, IPv6 in brackets, and several hops", () => {
    assert.deepEqual(firstJumpHop("bastion"), { user: null, host: "bastion", port: null });
    assert.deepEqual(firstJumpHop("ops@bastion:2222,inner"), { user: "ops", host: "bastion", port: 2222 });
    assert.deepEqual(firstJumpHop("ssh://ops@bastion:22"), { user: "ops", host: "bastion", port: 22 });
    assert.deepEqual(firstJumpHop("[2001:db8::1]:2200"), { user: null, host: "2001:db8::1", port: 2200 });
    assert.deepEqual(firstJumpHop("a@b@host"), { user: "a@b", host: "host", port: null });
  });
  it("refuses none, empty, an option-like host, and a bad port", () => {
    for (const v of ["none", "", "-oProxyCommand=x", "host:0", "host:70000", "host:x"])
      assert.equal(firstJumpHop(v), null, v);
  });
});
