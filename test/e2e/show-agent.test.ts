/**
 * The foundation's "tried as a new user would": on the lab's agent machine, configured like the guide
 * (the hercules-ci-agent user's own nix.conf says `builders = @…`), `nix-builders show --user
 * hercules-ci-agent` must tell the truth whether or not the daemon trusts the user. The truth is what
 * real Nix 2.8 does with a new derivation built as that user, read from Nix's own log.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { CLI_NODE_ARGS } from "../support/cli.js";
import {
  ensureLab,
  type LabStatus,
  lab,
  labExec,
  labSkipReason,
  nonceDrvExpr,
  REPO,
  remoteBuildLines,
} from "./support/lab.js";

interface ShowJson {
  user: string;
  trusted: boolean;
  trustReason: string;
  storeMode: string;
  builders: { value: string; from: string };
  ignored: { setting: string; value: string; origin: { file?: string; line?: number } }[];
  machines: { storeUri: string; origin: { file: string | null; line: number | null } }[];
  errors: { message: string }[];
}

function show(args: string[]): ShowJson {
  const r = labExec([process.execPath, ...CLI_NODE_ARGS, "show", "--json", ...args], {
    cwd: REPO,
    timeoutMs: 120_000,
  });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return JSON.parse(r.stdout) as ShowJson;
}

/** Build a new aarch64-linux derivation as the agent user; return Nix's log. */
function buildAsAgent(s: LabStatus): { code: number | null; log: string } {
  const { expr } = nonceDrvExpr(s);
  const r = labExec(["nix-build", "--no-out-link", "-v", "--max-jobs", "0", "-E", expr], {
    user: s.agent.user,
    timeoutMs: 120_000,
  });
  return { code: r.code, log: r.stdout + r.stderr };
}

const skip = labSkipReason();

describe("show --user hercules-ci-agent tells the truth", { skip }, () => {
  let s: LabStatus;
  let conf: string;
  let machines: string;

  before(() => {
    s = ensureLab({ builders: 2 });
    conf = `${s.agent.home}/.config/nix/nix.conf`;
    machines = `${s.agent.home}/.config/nix/machines`;
    // The guide's single-builder example, done right: the agent's own machines file holds builder 2.
    labExec(["mkdir", "-p", `${s.agent.home}/.config/nix`]);
    labExec(["sh", "-c", 'cat > "$1"', "sh", machines], { input: `${s.builders[1]!.machinesLine}\n` });
    labExec(["sh", "-c", 'cat > "$1"', "sh", conf], { input: `builders = @${machines}\n` });
    labExec(["chown", "-R", `${s.agent.user}:`, `${s.agent.home}/.config`]);
  });

  after(() => {
    if (!s) return;
    labExec(["rm", "-rf", `${s.agent.home}/.config`]);
    lab(["agent-conf", "--trusted", "yes", "--system-builders", "yes"]);
  });

  test("trusted: the user's own builders are used, and Nix builds on builder 2", () => {
    lab(["agent-conf", "--trusted", "yes", "--system-builders", "yes"]);
    const out = show(["--user", s.agent.user]);
    assert.equal(out.user, s.agent.user);
    assert.equal(out.storeMode, "daemon");
    assert.equal(out.trusted, true);
    assert.equal(out.builders.from, "user");
    assert.deepEqual(out.ignored, []);
    assert.deepEqual(
      out.machines.map((m) => m.storeUri),
      [s.builders[1]!.storeUri],
    );
    assert.deepEqual(out.machines[0]!.origin, { file: machines, line: 1 });

    const b = buildAsAgent(s);
    assert.equal(b.code, 0, b.log);
    assert.deepEqual(
      remoteBuildLines(b.log).map((l) => l.uri),
      [s.builders[1]!.storeUri],
    );

    // --agent finds the same user through the unit file, and reads its config.
    const viaAgent = show(["--agent"]);
    assert.equal(viaAgent.user, s.agent.user);
    assert.deepEqual(
      viaAgent.machines.map((m) => m.storeUri),
      [s.builders[1]!.storeUri],
    );
  });

  test("untrusted: the user's builders are ignored, and Nix uses the daemon's (here: none)", () => {
    lab(["agent-conf", "--trusted", "no", "--system-builders", "no"]);
    const out = show(["--user", s.agent.user]);
    assert.equal(out.trusted, false);
    assert.equal(out.builders.from, "daemon");
    assert.equal(out.builders.value, "");
    assert.deepEqual(out.machines, []);
    assert.equal(out.ignored.length, 1);
    assert.equal(out.ignored[0]!.setting, "builders");
    assert.equal(out.ignored[0]!.value, `@${machines}`);
    assert.equal(out.ignored[0]!.origin.file, conf);
    assert.equal(out.ignored[0]!.origin.line, 1);

    const b = buildAsAgent(s);
    assert.notEqual(b.code, 0, b.log);
    assert.deepEqual(remoteBuildLines(b.log), []);
    // With -j0 and no builders at all, Nix 2.8 says exactly this (Nix 2.8.0 src/libstore/build/; docs/routing.md).
    assert.match(b.log, /unable to start any build; either increase '--max-jobs' or enable remote builds\./);
  });

  test("untrusted with system builders: the daemon's list is what the build gets", () => {
    lab(["agent-conf", "--trusted", "no", "--system-builders", "yes"]);
    const out = show(["--user", s.agent.user]);
    assert.equal(out.trusted, false);
    assert.equal(out.builders.from, "daemon");
    assert.deepEqual(
      out.machines.map((m) => m.storeUri),
      s.builders.map((x) => x.storeUri),
    );
    const b = buildAsAgent(s);
    assert.equal(b.code, 0, b.log);
    const used = remoteBuildLines(b.log).map((l) => l.uri);
    assert.equal(used.length, 1);
    assert.ok(
      out.machines.some((m) => m.storeUri === used[0]),
      `${used[0]} is one of the machines show lists`,
    );
  });
});
