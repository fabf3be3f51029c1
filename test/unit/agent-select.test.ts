/** selectAgent (src/app/agent-select.ts): which hercules-ci-agent instance --agent names. */
import assert from "node:assert/strict";
import { cpSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { restartFindings } from "../../src/app/agent-checks.js";
import { selectAgent } from "../../src/app/agent-select.js";
import { UsageError } from "../../src/commands/io.js";

const fixtures = join(import.meta.dirname, "..", "fixtures", "agent");

describe("selectAgent", () => {
  it("no --agent and no --agent-config: no agent", () => {
    assert.equal(selectAgent({ agentRoot: join(fixtures, "plain") }), null);
  });

  it("--agent finds the unit under the root, with its user", () => {
    const sel = selectAgent({ agent: true, agentRoot: join(fixtures, "plain") });
    assert.ok(sel);
    assert.equal(sel.agent.kind, "systemd");
    assert.ok(sel.user.length > 0);
  });

  it("a bare --agent with no service anywhere: an error for show/verify, null for the doctor (orNone)", () => {
    const empty = mkdtempSync(join(tmpdir(), "nb-noagent-"));
    try {
      assert.throws(() => selectAgent({ agent: true, agentRoot: empty }), UsageError);
      assert.equal(selectAgent({ agent: true, agentRoot: empty }, { orNone: true }), null);
      // A named instance that does not exist stays an error, even for the doctor.
      assert.throws(() => selectAgent({ agent: "ci", agentRoot: empty }, { orNone: true }), UsageError);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});

describe("the running agent: restart needed (show --agent, doctor --agent)", () => {
  it("reads the running agent at selection, and reports files changed since it started", () => {
    const dir = mkdtempSync(join(tmpdir(), "nb-agent-rt-"));
    try {
      cpSync(join(fixtures, "runtime"), dir, { recursive: true });
      const sel = selectAgent({ agent: true, agentRoot: dir });
      assert.ok(sel);
      // the fixture's agent started at btime 1700000000 + 150000 ticks / 100
      assert.equal(sel.runtime?.pid, 4243);
      assert.equal(sel.runtime?.startedAt?.getTime(), (1_700_000_000 + 1500) * 1000);
      const conf = "/etc/nix/nix.conf";
      mkdirSync(join(dir, "etc", "nix"), { recursive: true });
      writeFileSync(join(dir, conf), "max-jobs = 1\n");
      const files = [{ path: conf, exists: true, role: "system" as const }];
      // both files are newer than the agent: a restart is needed, and the fix names the unit
      const f = restartFindings(sel, files);
      assert.deepEqual(
        f.map((x) => x.id),
        ["agent-restart-needed"],
      );
      assert.match(f[0]!.message, /\/etc\/hercules-ci-agent\/agent\.toml, \/etc\/nix\/nix\.conf/);
      assert.match(f[0]!.fix ?? "", /systemctl restart hercules-ci-agent\.service/);
      // files older than the agent's start: nothing to restart for
      const old = new Date((1_700_000_000 - 60) * 1000);
      utimesSync(join(dir, conf), old, old);
      utimesSync(join(dir, "etc", "hercules-ci-agent", "agent.toml"), old, old);
      assert.deepEqual(restartFindings(sel, files), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("an agent that is not running gives no restart finding", () => {
    const sel = selectAgent({ agent: true, agentRoot: join(fixtures, "plain") });
    assert.ok(sel);
    assert.equal(sel.runtime?.startedAt, null);
    assert.deepEqual(restartFindings(sel, []), []);
  });
});
