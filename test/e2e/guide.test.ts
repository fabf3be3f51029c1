/**
 * The hercules-ci guide, automated, on the lab's agent machine (docs/lab.md): `use` one builder for the
 * agent, `verify` that the agent's builds really go there (Nix's own log says so, and the output is in that
 * builder's store), `reset` puts the files back; and with an untrusted agent user, `use` refuses and
 * `verify` says the daemon ignores the user's builders.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  builderExec,
  ensureLab,
  type LabStatus,
  lab,
  labExec,
  labSkipReason,
  REPO,
  remoteBuildLines,
} from "./support/lab.js";

const ENTRY = "test/support/run-command.ts";

function nb(args: string[]): { code: number | null; stdout: string; stderr: string } {
  return labExec([process.execPath, "--import", "tsx", ENTRY, ...args], { cwd: REPO, timeoutMs: 300_000 });
}

interface VerifyJson {
  ok: boolean;
  user: string;
  system: string;
  drvPath: string | null;
  builtOn: string | null;
  phases: { name: string; ms: number }[];
  cause: string | null;
  outPath: string | null;
  totalMs: number;
  log: string;
}

const skip = labSkipReason();

describe("the guide on the lab's agent machine", { skip }, () => {
  let s: LabStatus;
  let home: string;
  const fresh = () => labExec(["rm", "-rf", `${home}/.config`]);
  const stat = (p: string) => labExec(["stat", "-c", "%u:%g %a", p]).stdout.trim();
  const cat = (p: string) => labExec(["cat", p]);

  before(() => {
    s = ensureLab({ builders: 2 });
    home = s.agent.home;
    fresh();
  });
  after(() => {
    if (!s) return;
    fresh();
    if (!s.agent.trusted) lab(["agent-conf", "--trusted", "yes", "--system-builders", "yes"]);
  });

  test("use <builder 2> --agent, then verify --agent builds on builder 2; reset removes what use made", () => {
    const b2 = s.builders[1]!;
    const u = nb(["use", b2.address, "--agent", "--json"]);
    assert.equal(u.code, 0, u.stdout + u.stderr);
    const machines = cat(`${home}/.config/nix/machines`).stdout;
    assert.ok(
      machines.includes(`${b2.machinesLine}\n`),
      "builder 2's line, byte for byte from /etc/nix/machines",
    );
    assert.ok(!machines.includes(s.builders[0]!.address));
    assert.match(
      cat(`${home}/.config/nix/nix.conf`).stdout,
      /^builders = @\/var\/lib\/hercules-ci-agent\/\.config\/nix\/machines$/m,
    );
    const uid = labExec(["id", "-u", s.agent.user]).stdout.trim();
    assert.match(stat(`${home}/.config/nix/machines`), new RegExp(`^${uid}:\\d+ 644$`));

    const v = nb(["verify", "--agent", "--json"]);
    const r = JSON.parse(v.stdout) as VerifyJson;
    assert.equal(v.code, 0, `${v.stdout}\n${v.stderr}`);
    assert.equal(r.ok, true);
    assert.equal(r.user, s.agent.user);
    assert.equal(r.builtOn, b2.storeUri);
    // Nix's own log proves it: its "building '<drv>' on '<machine>'" line names builder 2.
    assert.deepEqual(remoteBuildLines(r.log), [{ drv: r.drvPath!, uri: b2.storeUri }]);
    // And the output is valid in builder 2's store, not in builder 1's.
    assert.equal(builderExec(b2, ["nix-store", "--check-validity", r.outPath!]).code, 0);
    assert.notEqual(builderExec(s.builders[0]!, ["nix-store", "--check-validity", r.outPath!]).code, 0);
    assert.deepEqual(
      r.phases.map((p) => p.name),
      ["connect", "upload-lock", "upload", "build", "download"],
    );
    console.log(
      `# verify in the lab: ${r.phases.map((p) => `${p.name} ${p.ms} ms`).join(", ")}; total ${r.totalMs} ms`,
    );

    const z = nb(["reset", "--agent"]);
    assert.equal(z.code, 0, z.stdout + z.stderr);
    assert.notEqual(cat(`${home}/.config/nix/nix.conf`).code, 0, "nix.conf did not exist before use");
    assert.notEqual(cat(`${home}/.config/nix/machines`).code, 0, "machines did not exist before use");
  });

  test("reset gives the agent's own nix.conf back byte for byte, with its owner and mode", () => {
    fresh();
    const dir = `${home}/.config/nix`;
    const original =
      "# the agent's own settings\nnarinfo-cache-negative-ttl = 0\r\nbuilders = ssh://x aarch64-linux\n";
    labExec(["install", "-d", "-o", s.agent.user, "-g", s.agent.user, "-m", "0700", `${home}/.config`, dir]);
    labExec(["tee", `${dir}/nix.conf`], { input: original });
    labExec(["chown", `${s.agent.user}:${s.agent.user}`, `${dir}/nix.conf`]); // a root-owned one is refused (issue 11: use-security.test.ts)
    labExec(["chmod", "0640", `${dir}/nix.conf`]);
    const before = stat(`${dir}/nix.conf`);
    const u = nb(["use", s.builders[0]!.address, "--agent"]);
    assert.equal(u.code, 0, u.stdout + u.stderr);
    assert.match(
      cat(`${dir}/nix.conf`).stdout,
      /^builders = @\/var\/lib\/hercules-ci-agent\/\.config\/nix\/machines$/m,
    );
    assert.match(cat(`${dir}/nix.conf`).stdout, /^narinfo-cache-negative-ttl = 0\r$/m, "other lines kept");
    const z = nb(["reset", "--agent"]);
    assert.equal(z.code, 0, z.stdout + z.stderr);
    assert.equal(cat(`${dir}/nix.conf`).stdout, original);
    assert.equal(stat(`${dir}/nix.conf`), before);
    assert.notEqual(cat(`${dir}/machines`).code, 0);
  });

  test("agent user untrusted: use refuses (and explains), verify reports local-untrusted", () => {
    fresh();
    lab(["agent-conf", "--trusted", "no", "--system-builders", "yes"]);
    s = { ...s, agent: { ...s.agent, trusted: false } };
    const b2 = s.builders[1]!;
    const u = nb(["use", b2.address, "--agent"]);
    assert.equal(u.code, 2, u.stdout + u.stderr);
    assert.match(u.stdout, /refusing: the nix-daemon does not trust hercules-ci-agent/);
    assert.match(u.stdout, /trusted-users/);
    assert.notEqual(cat(`${home}/.config/nix/nix.conf`).code, 0, "nothing written");

    const f = nb(["use", b2.address, "--agent", "--force"]);
    assert.equal(f.code, 1, f.stdout + f.stderr);
    const v = nb(["verify", "--agent", "--json"]);
    const r = JSON.parse(v.stdout) as VerifyJson;
    assert.equal(v.code, 2);
    assert.equal(r.ok, false);
    assert.equal(r.cause, "local-untrusted");

    const p = nb(["verify", "--agent", "--builder", b2.address, "--json"]);
    const q = JSON.parse(p.stdout) as VerifyJson;
    assert.equal(q.ok, false);
    assert.equal(q.cause, "local-untrusted", "a pinned --builders from an untrusted user is ignored too");

    assert.equal(nb(["reset", "--agent"]).code, 0);
    lab(["agent-conf", "--trusted", "yes", "--system-builders", "yes"]);
    s = { ...s, agent: { ...s.agent, trusted: true } };
  });

  test("verify --builder pins one builder; a builder that is down gives its cause", () => {
    fresh();
    const b1 = s.builders[0]!;
    const ok = JSON.parse(nb(["verify", "--agent", "--builder", b1.address, "--json"]).stdout) as VerifyJson;
    assert.equal(ok.ok, true, ok.log);
    assert.equal(ok.builtOn, b1.storeUri);
    lab(["fault", b1.name, "down"]);
    try {
      const bad = JSON.parse(
        nb(["verify", "--agent", "--builder", b1.address, "--json"]).stdout,
      ) as VerifyJson;
      assert.equal(bad.ok, false);
      assert.equal(bad.builtOn, null);
      assert.equal(bad.cause, "unreachable", bad.log);
    } finally {
      lab(["heal", b1.name]);
    }
  });
});
