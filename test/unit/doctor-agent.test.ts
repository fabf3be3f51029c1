/** The doctor's `agent` check (src/app/doctor/local.ts): agent findings → status, cause and fix. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { AgentFinding } from "../../src/agent/index.js";
import type { AgentReport } from "../../src/app/agent-checks.js";
import type { AgentSelection } from "../../src/app/agent-select.js";
import { agentCheck, type LocalCtx } from "../../src/app/doctor/local.js";

function ctx(findings: AgentFinding[]): LocalCtx {
  const sel = {
    agent: { name: "hercules-ci-agent.service", configFile: "/etc/hercules-ci-agent/agent.json" },
    user: "hercules-ci-agent",
  } as unknown as AgentSelection;
  const report: AgentReport = {
    advertisement: {
      platforms: ["x86_64-linux"],
      systemFeatures: ["kvm"],
      localPlatforms: ["x86_64-linux"],
      remotePlatforms: [],
    },
    findings,
  } as unknown as AgentReport;
  return { agent: { sel, report } } as unknown as LocalCtx;
}

const f = (id: string, severity: AgentFinding["severity"], fix: string | null = null): AgentFinding => ({
  id,
  severity,
  message: `${id} happened`,
  fix,
});

describe("doctor agent check", () => {
  it("no findings: pass, naming the unit, its configuration and user", async () => {
    const r = await agentCheck().run(ctx([]));
    assert.equal(r.status, "pass");
    assert.match(
      r.message,
      /hercules-ci-agent\.service \(config \/etc\/hercules-ci-agent\/agent\.json, user hercules-ci-agent\)/,
    );
  });

  it("info findings only: pass, and they are in the evidence", async () => {
    const r = await agentCheck().run(ctx([f("agent-builder-unadvertised", "info")]));
    assert.equal(r.status, "pass");
    assert.match(r.message, /1 note/);
    assert.equal(r.evidence?.[0]?.what, "info agent-builder-unadvertised");
  });

  it("a trust error is local-untrusted, with the finding's fix", async () => {
    const r = await agentCheck().run(
      ctx([
        f("agent-builder-unadvertised", "info"),
        f("agent-trust-claim-false", "error", "Trust the agent."),
      ]),
    );
    assert.deepEqual([r.status, r.cause, r.fix], ["fail", "local-untrusted", "Trust the agent."]);
  });

  it("any other error is local-config; the first error leads, the count follows", async () => {
    const r = await agentCheck().run(
      ctx([f("agent-narinfo-negative-ttl", "error", "Set it to 0."), f("agent-config-unknown-key", "error")]),
    );
    assert.deepEqual([r.status, r.cause], ["fail", "local-config"]);
    assert.match(r.message, /agent-narinfo-negative-ttl happened \(and 1 more/);
  });

  it("warnings warn; a finding without a fix gets the cause's generic fix", async () => {
    const r = await agentCheck().run(ctx([f("agent-builders-ignored-untrusted", "warning")]));
    assert.deepEqual([r.status, r.cause], ["warn", "local-untrusted"]);
    assert.ok(r.fix && r.fix.length > 10);
  });
});
