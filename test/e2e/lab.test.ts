// The guide's scenario on the lab: the hercules-ci-agent user's own `builders = @file` reaches a
// remote builder only when the agent machine's nix-daemon trusts that user.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  builderExec,
  ensureLab,
  type LabStatus,
  lab,
  labExec,
  labSkipReason,
  nonceDrvExpr,
  remoteBuildLines,
} from "./support/lab.js";

const skip = labSkipReason();

describe("lab: agent user's builders", { skip }, () => {
  let s: LabStatus;
  let user: string;
  let home: string;

  before(() => {
    s = ensureLab();
    user = s.agent.user;
    home = s.agent.home;
    // Only the user's own builders may reach a builder in this test.
    lab(["agent-conf", "--system-builders", "no"]);
  });

  after(() => {
    if (skip) return;
    labExec(["rm", "-rf", `${home}/.config/nix`, `${home}/machines`], { user });
    lab(["agent-conf", "--trusted", "yes", "--system-builders", "yes"]);
  });

  function configureUser(b: LabStatus["builders"][number]) {
    const r = labExec(
      [
        "sh",
        "-euc",
        'mkdir -p "$HOME/.config/nix"; cat >"$HOME/machines"; echo "builders = @$HOME/machines" >"$HOME/.config/nix/nix.conf"',
      ],
      { user, input: `${b.machinesLine}\n` },
    );
    assert.equal(r.code, 0, r.stderr);
  }

  function buildAsAgentUser() {
    const { expr, nonce } = nonceDrvExpr(s, { system: "aarch64-linux" });
    const r = labExec(["nix-build", "--no-out-link", "-E", expr], { user, timeoutMs: 120_000 });
    return { ...r, nonce, log: r.stderr + r.stdout };
  }

  it("the lab looks as documented", () => {
    assert.equal(s.agent.user, "hercules-ci-agent");
    assert.ok(s.builders.length >= 2);
    const id = labExec(["id", "-un"], { user });
    assert.equal(id.stdout.trim(), user);
    const pw = labExec(["getent", "passwd", user]);
    assert.equal(pw.stdout.split(":")[5], "/var/lib/hercules-ci-agent");
    const unit = labExec(["cat", s.agent.unit]).stdout;
    assert.match(unit, /^User=hercules-ci-agent$/m);
    assert.match(unit, new RegExp(`^ExecStart=\\S+ --config ${s.agent.agentConfig}$`, "m"));
    const machines = labExec(["cat", s.agent.machinesFile]).stdout.trim().split("\n");
    assert.deepEqual(
      machines,
      s.builders.map((b) => b.machinesLine),
    );
    for (const b of s.builders) {
      assert.equal(b.machinesLine.split(" ")[0], b.storeUri);
      assert.ok(b.systems.includes("aarch64-linux"));
      assert.equal(Buffer.from(b.hostKeyBase64, "base64").toString(), b.hostKey);
    }
    // The agent machine is x86_64-linux and cannot build aarch64-linux itself.
    const conf = labExec(["nix", "show-config"]).stdout;
    assert.match(conf, /^system = x86_64-linux$/m);
    assert.doesNotMatch(conf, /^extra-platforms = .*aarch64-linux/m);
  });

  it("trusted user: a new aarch64-linux derivation is built on the lab builder", () => {
    const b = s.builders[0]!;
    configureUser(b);
    const r = buildAsAgentUser();
    assert.equal(r.code, 0, r.log);
    const lines = remoteBuildLines(r.log);
    assert.equal(lines.length, 1, r.log);
    assert.equal(lines[0]!.uri, b.storeUri);
    const out = r.stdout.trim();
    assert.match(out, /^\/nix\/store\/[a-z0-9]{32}-lab-nonce-/);
    // The output was made in the builder's own store, and copied back.
    assert.equal(builderExec(b, ["cat", out]).stdout.trim(), r.nonce);
    assert.equal(labExec(["cat", out]).stdout.trim(), r.nonce);
  });

  it("untrusted user: the same build does not reach the builder", () => {
    const b = s.builders[0]!;
    lab(["agent-conf", "--trusted", "no"]);
    try {
      configureUser(b);
      const r = buildAsAgentUser();
      assert.notEqual(r.code, 0, r.log);
      assert.deepEqual(remoteBuildLines(r.log), [], r.log);
      assert.match(r.log, /a 'aarch64-linux' with features \{\} is required to build/);
      assert.match(r.log, /but I am a 'x86_64-linux'/);
      const drvName = `lab-nonce-${r.nonce}`;
      const onBuilder = builderExec(b, ["sh", "-c", `ls /nix/store | grep -c -- '${drvName}' || true`]);
      assert.equal(onBuilder.stdout.trim(), "0");
    } finally {
      lab(["agent-conf", "--trusted", "yes"]);
    }
  });

  it("ssh-ng:// lines work as well", () => {
    const b = s.builders[1]!;
    const r0 = labExec(["sh", "-euc", 'cat >"$HOME/machines"'], { user, input: `${b.machinesLineNg}\n` });
    assert.equal(r0.code, 0, r0.stderr);
    const r = buildAsAgentUser();
    assert.equal(r.code, 0, r.log);
    assert.deepEqual(
      remoteBuildLines(r.log).map((l) => l.uri),
      [b.storeUriNg],
    );
  });
});
