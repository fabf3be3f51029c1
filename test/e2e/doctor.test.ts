/**
 * `doctor` on the lab (docs/lab.md): run on the agent machine as root, `--user hercules-ci-agent`, the
 * way an operator would. Every lab fault, alone and two at once on different builders, must fail exactly
 * the check that names it, with the documented cause, and nothing else; a healthy lab passes everything.
 * Times are printed (for bench/DOCTOR.md), never asserted.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { CLI_NODE_ARGS } from "../support/cli.js";
import { ensureLab, type LabStatus, lab, labExec, labSkipReason, REPO } from "./support/lab.js";

const skip = labSkipReason();
const TIMEOUT_S = 5;

/** fault → the one check it must fail (or warn, for `slow`), and the cause. */
const EXPECT: Record<string, { check: string; cause: string; status?: "fail" | "warn" }> = {
  down: { check: "builder.tcp", cause: "unreachable" },
  "wrong-host-key": { check: "builder.host-key", cause: "host-key" },
  unauthorized: { check: "builder.auth", cause: "auth" },
  "no-nix-on-path": { check: "builder.remote-command", cause: "remote-nix-missing" },
  nologin: { check: "builder.remote-command", cause: "remote-shell" },
  untrusted: { check: "builder.trust", cause: "remote-untrusted" },
  blackhole: { check: "builder.tcp", cause: "timeout" },
  "daemon-down": { check: "builder.remote-daemon", cause: "remote-daemon-down" },
  "wrong-system": { check: "builder.systems", cause: "system-mismatch" },
  "missing-feature": { check: "builder.features", cause: "feature-mismatch" },
  banner: { check: "builder.remote-command", cause: "remote-shell" },
  slow: { check: "builder.latency", cause: "slow", status: "warn" },
};

interface Check {
  id: string;
  builder: string | null;
  status: string;
  cause: string | null;
  message: string;
  fix: string | null;
}
interface Report {
  checks: Check[];
  summary: {
    exitCode: number;
    durationMs: number;
    builderDurationsMs: Record<string, number>;
    userSource: string;
  };
}

let s: LabStatus;

/** The lab may have more builders (it is shared); the tests use b1..b3, so the load is the same. */
const USE = 3;

function runDoctor(
  extra: string[] = [],
  who: string[] = ["--user", "hercules-ci-agent"],
): { code: number | null; report: Report; stderr: string } {
  const only = extra.includes("--builder")
    ? []
    : s.builders.slice(0, USE).flatMap((b) => ["--builder", b.address]);
  const r = labExec(
    [
      process.execPath,
      ...CLI_NODE_ARGS,
      "doctor",
      ...who,
      "--json",
      "--timeout",
      String(TIMEOUT_S),
      // The lab's `slow` fault delays every chunk (≈2.5 s handshakes, measured); healthy ones take 0.5–1 s.
      "--slow-ms",
      "1500",
      ...only,
      ...extra,
    ],
    { cwd: REPO, timeoutMs: 120_000 },
  );
  let report: Report;
  try {
    report = JSON.parse(r.stdout) as Report;
  } catch {
    throw new Error(`doctor printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
  return { code: r.code, report, stderr: r.stderr };
}

function notPassing(rep: Report): Check[] {
  return rep.checks.filter((c) => c.status === "fail" || c.status === "warn");
}

function show(cs: Check[]): string {
  return cs.map((c) => `${c.builder ?? "local"} ${c.id} ${c.status} [${c.cause}] ${c.message}`).join("\n");
}

/** Switch faults on, run the doctor, heal them (even when the assertion fails). */
function withFaults(faults: [string, string][], fn: (rep: Report, code: number | null) => void): void {
  for (const [b, f] of faults) lab(["fault", b, f]);
  try {
    const { report, code } = runDoctor();
    fn(report, code);
  } finally {
    for (const [b, f] of faults) lab(["heal", b, f]);
  }
}

function expectOnly(rep: Report, faults: [string, string][]): void {
  const bad = notPassing(rep);
  const want = faults.map(([b, f]) => {
    const uri = s.builders.find((x) => x.name === b)!.storeUri;
    const e = EXPECT[f]!;
    return [uri, e.check, e.status ?? "fail", e.cause];
  });
  assert.deepEqual(bad.map((c) => [c.builder, c.id, c.status, c.cause]).sort(), want.sort(), show(bad));
  for (const c of bad) assert.ok(c.fix, `${c.id} has a fix`);
}

before(() => {
  if (skip) return;
  s = ensureLab({ builders: 3 });
});

after(() => {
  if (skip || !s) return;
  for (const b of s.builders) lab(["heal", b.name], { allowFail: true });
});

describe("doctor on the lab", { skip, concurrency: 1 }, () => {
  it("a healthy lab passes every check (exit 0), with one ssh login per builder", () => {
    const logins = () =>
      s.builders
        .slice(0, USE)
        .map(
          (b) =>
            readFileSync(`${s.stateDir}/${b.name}/sshd.log`, "utf8").split("Accepted publickey").length - 1,
        );
    const before = logins();
    const { report, code } = runDoctor();
    // The remote-config command rides on the main probe's connection (ControlMaster): each builder's
    // sshd sees one authentication, not two.
    const loginsAfter = logins();
    assert.deepEqual(
      loginsAfter.map((n, i) => n - before[i]!),
      s.builders.slice(0, USE).map(() => 1),
    );
    const rc = report.checks.filter((c) => c.id === "builder.remote-config");
    assert.equal(rc.length, USE);
    for (const c of rc) assert.equal(c.status, "pass", c.message);
    assert.deepEqual(show(notPassing(report)), "");
    assert.equal(report.checks.filter((c) => c.status === "skip").length, 0);
    assert.equal(code, 0);
    assert.equal(report.summary.exitCode, 0);
    const builders = new Set(report.checks.map((c) => c.builder).filter(Boolean));
    assert.equal(builders.size, USE);
    console.log(`# healthy lab, ${USE} builders: ${report.summary.durationMs} ms`);
  });

  for (const fault of Object.keys(EXPECT)) {
    it(`fault ${fault} alone fails ${EXPECT[fault]!.check} [${EXPECT[fault]!.cause}] and nothing else`, () => {
      withFaults([["b1", fault]], (rep, code) => {
        expectOnly(rep, [["b1", fault]]);
        assert.equal(code, EXPECT[fault]!.status === "warn" ? 1 : 2);
        const uri = s.builders[0]!.storeUri;
        console.log(
          `# ${fault}: b1 checked in ${rep.summary.builderDurationsMs[uri]} ms (timeout ${TIMEOUT_S} s), doctor ${rep.summary.durationMs} ms`,
        );
      });
    });
  }

  const pairs: [string, string][] = [
    ["down", "unauthorized"],
    ["banner", "wrong-system"],
    ["blackhole", "daemon-down"],
    ["untrusted", "missing-feature"],
    ["nologin", "wrong-host-key"],
    ["no-nix-on-path", "slow"],
  ];
  for (const [f1, f2] of pairs) {
    it(`faults ${f1} on b1 and ${f2} on b2 at once`, () => {
      const faults: [string, string][] = [
        ["b1", f1],
        ["b2", f2],
      ];
      withFaults(faults, (rep) => expectOnly(rep, faults));
    });
  }

  it("--agent: the agent's unit, its user, and a passing `agent` check on a healthy agent machine", () => {
    const { report, code } = runDoctor([], ["--agent"]);
    assert.equal(code, 0, show(notPassing(report)));
    assert.match(report.summary.userSource, /^systemd hercules-ci-agent\.service /);
    const agent = report.checks.find((c) => c.id === "agent");
    assert.equal(agent?.status, "pass", agent?.message);
    assert.match(agent!.message, /agent\.json, user hercules-ci-agent/);
    // --user runs have no agent check.
    assert.equal(
      runDoctor().report.checks.some((c) => c.id === "agent"),
      false,
    );
  });

  it("--agent with nixUserIsTrusted but an untrusted user: the `agent` check fails [local-untrusted]", () => {
    lab(["agent-conf", "--trusted", "no"]);
    try {
      const { report, code } = runDoctor([], ["--agent"]);
      assert.equal(code, 2);
      const bad = notPassing(report).map((c) => [c.id, c.status, c.cause]);
      // user-trust warns (system builders still work for an untrusted user); the agent, which claims
      // trust, would fail its builds: that is the failure.
      assert.deepEqual(bad, [
        ["user-trust", "warn", "local-untrusted"],
        ["agent", "fail", "local-untrusted"],
      ]);
      const agent = report.checks.find((c) => c.id === "agent")!;
      assert.ok(agent.fix);
      assert.ok(JSON.stringify(agent).includes("agent-trust-claim-false"));
    } finally {
      lab(["agent-conf", "--trusted", "yes"]);
    }
  });

  it("--builder limits the run to one builder", () => {
    const b = s.builders[1]!;
    const { report } = runDoctor(["--builder", b.address]);
    const builders = new Set(report.checks.map((c) => c.builder).filter(Boolean));
    assert.deepEqual([...builders], [b.storeUri]);
  });
});
