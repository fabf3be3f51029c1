/**
 * The foundation's "tried as a new user would": on the lab's agent machine, configured like the guide
 * (the hercules-ci-agent user's own nix.conf says `builders = @…`), `nix-builders show --user
 * hercules-ci-agent` must tell the truth whether or not the daemon trusts the user. The truth is what
 * real Nix 2.8 does with a new derivation built as that user, read from Nix's own log.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

  test("report: a bundle taken on the agent machine replays on the host to byte-identical show and lint --json, with no private key in it", () => {
    lab(["agent-conf", "--trusted", "yes", "--system-builders", "yes"]);
    // plant private keys: one in the agent user's ~/.ssh, one named by root's ssh config
    const tmp = mkdtempSync(join(tmpdir(), "nb-report-lab-"));
    const key = join(tmp, "id_ed25519");
    spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", key], { timeout: 10_000 });
    const keyText = readFileSync(key, "utf8");
    const rootConfig = labExec(["cat", "/root/.ssh/config"]);
    const plantedConfig = `${rootConfig.code === 0 ? rootConfig.stdout : ""}\nHost nb-report-plant\n  IdentityFile /root/.ssh/nb-report-plant\n`;
    try {
      labExec(["mkdir", "-p", "-m", "700", `${s.agent.home}/.ssh`]);
      for (const f of [`${s.agent.home}/.ssh/id_ed25519`, "/root/.ssh/nb-report-plant"])
        labExec(["sh", "-c", 'umask 077 && cat > "$1"', "sh", f], { input: keyText });
      labExec(["chown", "-R", `${s.agent.user}:`, `${s.agent.home}/.ssh`]);
      labExec(["sh", "-c", 'cat > "$1"', "sh", "/root/.ssh/config"], { input: plantedConfig });
      const cli = (args: string[]) =>
        labExec([process.execPath, "--import", "tsx", "src/cli.ts", ...args], {
          cwd: REPO,
          timeoutMs: 120_000,
        });
      const host = (args: string[]) =>
        spawnSync(process.execPath, ["--import", "tsx", "src/cli.ts", ...args], {
          cwd: REPO,
          encoding: "utf8",
          timeout: 120_000,
          env: { PATH: process.env["PATH"], HOME: tmp },
        });
      for (const [who, liveShow, liveLint] of [
        [
          ["--user", s.agent.user],
          ["show", "--json", "--user", s.agent.user],
          ["lint", "--json", "--user", s.agent.user],
        ],
        [["--agent"], ["show", "--json", "--agent"], null],
      ] as [string[], string[], string[] | null][]) {
        const taken = cli(["report", ...who]);
        assert.equal(taken.code, 0, taken.stderr);
        for (const line of keyText.split("\n").filter((l) => l !== "" && !l.startsWith("-----")))
          assert.ok(!taken.stdout.includes(line), "a line of a private key is in the bundle");
        assert.ok(!taken.stdout.includes("PRIVATE KEY"));
        const bundle = join(tmp, `bundle-${who[0]!.slice(2)}.json`);
        writeFileSync(bundle, taken.stdout);
        for (const live of liveLint ? [liveShow, liveLint] : [liveShow]) {
          const there = cli(live);
          const here = host([
            ...live.filter((w, i) => w !== "--user" && live[i - 1] !== "--user"),
            "--from",
            bundle,
          ]);
          assert.equal(here.stderr, "");
          assert.equal(here.stdout, there.stdout, `${live.join(" ")}: the replay differs`);
          assert.equal(here.status, there.code);
        }
      }
    } finally {
      labExec(["rm", "-rf", `${s.agent.home}/.ssh`, "/root/.ssh/nb-report-plant"]);
      if (rootConfig.code === 0)
        labExec(["sh", "-c", 'cat > "$1"', "sh", "/root/.ssh/config"], { input: rootConfig.stdout });
      else labExec(["rm", "-f", "/root/.ssh/config"]);
      rmSync(tmp, { recursive: true, force: true });
    }
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
