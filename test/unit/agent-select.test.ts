/** selectAgent (src/app/agent-select.ts): which hercules-ci-agent instance --agent names. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
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
