/**
 * The doctor agrees with Nix on what is a machine, and never hands a machine field to a shell:
 *
 *  - stores that are not reached over ssh (`local`, `daemon`, `auto`, chroot paths, `unix://`,
 *    `file://`, `https://`, `dummy://`) get a verdict from this machine alone, never an internal error;
 *  - a store URI Nix 2.8 cannot open (`local:///x`, `foo://x`, `ssh://h^st`, a bad `%` escape, a host
 *    starting with `-`) is reported with Nix's own error and never probed: no ssh, no DNS;
 *  - `ssh://nix@-oProxyCommand=…`, which 2.8 itself would run ssh for, is refused;
 *  - shell metacharacters in the user, host and key columns reach ssh and ssh-keygen verbatim, as argv
 *    words, and nothing runs them.
 *
 * `ssh` is a recording stand-in first on PATH: it writes its argv (NUL-separated) to a log and answers
 * `-G` with a config that points at 127.0.0.1 port 1 (nothing listens there), so no check leaves
 * loopback. Real Nix 2.8 rules (the version is pinned); no root needed.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type DoctorReport, doctor, exitCodeFor } from "../../src/app/doctor/doctor.js";
import { reportJson, reportText } from "../../src/app/doctor/report.js";
import { runChecks } from "../../src/app/doctor/runner.js";
import { NIX_2_8 } from "../../src/nix/version.js";
import { probeStore } from "../../src/remote/probe.js";
import { nixSshArgv, probeSshArgv } from "../../src/remote/ssh-argv.js";

const tmp = mkdtempSync(join(tmpdir(), "nb-doctor-stores-"));
const bin = join(tmp, "bin");
const log = join(tmp, "ssh.log");
let report: DoctorReport;

/** Every argv the stand-in ssh was run with. */
function sshRuns(): string[][] {
  if (!existsSync(log)) return [];
  return readFileSync(log, "utf8")
    .split("\u0001\n")
    .filter((r) => r !== "")
    .map((r) => r.split("\u0000").slice(0, -1));
}

const socketDir = join(tmp, "nosock");
// A key path a shell would run: `$(touch …)` creates the marker.
const marker = join(tmp, "pwned");
const evilKey = `${tmp}/k$(touch\${IFS}${marker})`;
// (No `;`: Nix splits machines on it, so it never reaches a URI.)
const evilUser = `u&x'y"$(touch)`;
const evilHost = `h$(id)`;
const evilUri = `ssh://${evilUser}@${evilHost}`;

/** uri → the check that must decide it, its status and cause, and whether ssh may run for it. */
const CASES: Record<string, { status: "warn" | "fail"; cause: string; text: RegExp }> = {
  local: { status: "warn", cause: "local-config", text: /this machine's system store/ },
  auto: { status: "warn", cause: "local-config", text: /this machine's own store/ },
  daemon: { status: "fail", cause: "daemon-unreachable", text: /cannot connect to socket at '/ },
  [`unix://${socketDir}/socket`]: {
    status: "fail",
    cause: "daemon-unreachable",
    text: /No such file or directory/,
  },
  [`${tmp}/chroot`]: { status: "warn", cause: "local-config", text: /a chroot store on this machine/ },
  [`file://${tmp}/cache`]: { status: "fail", cause: "local-config", text: /binary cache \(file\)/ },
  "https://cache.invalid": { status: "fail", cause: "local-config", text: /binary cache \(https\)/ },
  "dummy://": { status: "fail", cause: "local-config", text: /dummy store/ },
  "local:///tmp/x": {
    status: "fail",
    cause: "local-config",
    text: /^Nix 2\.8 cannot open this store: don't know how to open Nix store 'local:\/\/\/tmp\/x'/,
  },
  "foo://bar": {
    status: "fail",
    cause: "local-config",
    text: /don't know how to open Nix store 'foo:\/\/bar'/,
  },
  "ssh://h^st": {
    status: "fail",
    cause: "local-config",
    text: /don't know how to open Nix store 'ssh:\/\/h\^st'/,
  },
  "ssh://h?x=%zz": { status: "fail", cause: "local-config", text: /invalid URI parameter '%zz'/ },
  "ssh://-oProxyCommand=touch": {
    status: "fail",
    cause: "local-config",
    text: /invalid SSH host name '-oProxyCommand=touch'/,
  },
  "ssh://nix@-oProxyCommand=touch": { status: "fail", cause: "local-config", text: /starts with '-'/ },
  "ssh://-l@h": { status: "fail", cause: "local-config", text: /invalid SSH host name '-l@h'/ },
};

before(async () => {
  mkdirSync(bin);
  mkdirSync(join(tmp, "conf"));
  writeFileSync(
    join(bin, "ssh"),
    [
      "#!/bin/sh",
      `for a in "$@"; do printf '%s\\0' "$a"; done >> '${log}'`,
      `printf '\\001\\n' >> '${log}'`,
      'if [ "$1" = -G ]; then printf "hostname 127.0.0.1\\nport 1\\nuser nobody\\nstricthostkeychecking true\\n"; exit 0; fi',
      "exit 255",
      "",
    ].join("\n"),
  );
  chmodSync(join(bin, "ssh"), 0o755);
  const lines = [...Object.keys(CASES).map((u) => `${u} x86_64-linux`), `${evilUri} x86_64-linux ${evilKey}`];
  writeFileSync(join(tmp, "machines"), `${lines.join("\n")}\n`);
  writeFileSync(join(tmp, "conf", "nix.conf"), `build-users-group =\nbuilders = @${join(tmp, "machines")}\n`);
  report = await doctor({
    env: {
      PATH: `${bin}:/usr/bin:/bin`,
      HOME: tmp,
      NIX_CONF_DIR: join(tmp, "conf"),
      NIX_USER_CONF_FILES: join(tmp, "none"),
      NIX_STATE_DIR: join(tmp, "state"),
    },
    nixVersion: "2.8",
    timeoutSec: 3,
  });
});

after(() => rmSync(tmp, { recursive: true, force: true }));

describe("doctor: machines that are not ssh builders, or that Nix rejects", () => {
  for (const [uri, want] of Object.entries(CASES)) {
    it(`${uri}: one verdict from builder.ssh-argv, nothing run, no internal error`, () => {
      const mine = report.checks.filter((c) => c.builder === uri);
      const show = reportText({ ...report, checks: mine }, { verbose: true });
      assert.ok(mine.length > 10, show);
      assert.ok(!mine.some((c) => c.internal || /internal error/.test(c.message)), show);
      const head = mine[0]!;
      assert.equal(head.id, "builder.ssh-argv", show);
      assert.deepEqual([head.status, head.cause], [want.status, want.cause], show);
      assert.match(head.message, want.text, show);
      // Nothing else ran: no ssh -G, no DNS, no TCP, no probe.
      for (const c of mine.slice(1)) assert.equal(c.status, "skip", `${c.id}\n${show}`);
    });
  }

  it("ssh never ran for any of them (only for the one machine Nix accepts)", () => {
    const runs = sshRuns();
    assert.ok(runs.length >= 1, "the accepted machine ran ssh -G");
    for (const r of runs) assert.deepEqual(r.slice(0, 2), ["-G", `${evilUser}@${evilHost}`], r.join(" "));
  });

  it("the doctor's exit code is 2 (failures), not 70, and --json has no error object", () => {
    assert.equal(report.summary.exitCode, 2);
    assert.equal("error" in reportJson(report), false);
  });
});

describe("machine fields never reach a shell", () => {
  it("user and host with & ' \" $( ) reach ssh -G as one verbatim argv word, the key as another", () => {
    const g = sshRuns().find((r) => r.includes(`${evilUser}@${evilHost}`));
    assert.ok(g, JSON.stringify(sshRuns()));
    assert.equal(g[0], "-G");
    assert.equal(g[1], `${evilUser}@${evilHost}`);
    assert.equal(g[g.indexOf("-i") + 1], evilKey);
  });

  it("the key path went to ssh-keygen as a word: the $(touch …) inside it never ran", () => {
    const key = report.checks.find((c) => c.builder === evilUri && c.id === "builder.key")!;
    assert.equal(key.status, "fail", key.message);
    assert.match(key.message, /does not exist/);
    assert.equal(existsSync(marker), false, "a shell ran the key path");
  });

  it("probeSshArgv: the fields are argv words, exactly as written", () => {
    const a = probeSshArgv({
      version: NIX_2_8,
      storeUri: evilUri,
      sshKey: evilKey,
      hostKeyFile: "/k",
    });
    assert.equal(a.error, undefined);
    assert.equal(a.program, "ssh");
    assert.equal(a.args[0], `${evilUser}@${evilHost}`);
    assert.equal(a.args[a.args.indexOf("-i") + 1], evilKey);
  });
});

describe("a user or host starting with '-' never reaches ssh", () => {
  for (const uri of ["ssh://nix@-oProxyCommand=touch", "ssh-ng://nix@-oProxyCommand=touch", "-x", "nix@-x"]) {
    it(`${uri}: probeSshArgv refuses, whatever Nix 2.8 itself would do`, () => {
      const a = probeSshArgv({ version: NIX_2_8, storeUri: uri, hostKeyFile: "/k" });
      assert.ok(a.error, JSON.stringify(a));
      assert.deepEqual(a.args, []);
    });
  }

  it("2.8 itself checks only the whole user@host word: nixSshArgv (Nix's model) accepts nix@-x", () => {
    assert.equal(nixSshArgv({ version: NIX_2_8, storeUri: "ssh://nix@-x" }).error, undefined);
    assert.match(nixSshArgv({ version: NIX_2_8, storeUri: "ssh://-x" }).error ?? "", /invalid SSH host name/);
  });
});

describe("localhost (2.8: Nix runs `bash -c` on this machine) is probed as Nix runs it", () => {
  const haveNixStore = (() => {
    try {
      execFileSync("nix-store", ["--version"], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  })();
  it("bash does not source the identity's ~/.bashrc (Nix's stdin is a pipe; Node's is a socket)", {
    skip: !haveNixStore && "needs nix-store",
  }, async () => {
    const home = join(tmp, "lh-home");
    mkdirSync(home);
    const rcRan = join(tmp, "bashrc-ran");
    writeFileSync(join(home, ".bashrc"), `touch '${rcRan}'\n`);
    mkdirSync(join(tmp, "lh-conf"));
    writeFileSync(join(tmp, "lh-conf", "nix.conf"), "build-users-group =\n");
    const r = await probeStore(
      { version: NIX_2_8, storeUri: "ssh://localhost", remoteStore: join(tmp, "lh-store") },
      {
        timeoutMs: 30_000,
        baseEnv: {
          PATH: "/usr/bin:/bin",
          HOME: home,
          NIX_CONF_DIR: join(tmp, "lh-conf"),
          NIX_USER_CONF_FILES: join(tmp, "none"),
        },
      },
    );
    assert.equal(r.ok, true, `${JSON.stringify(r.failure)}\n${r.stderr}`);
    assert.equal(r.argv[0], "bash");
    assert.equal(existsSync(rcRan), false, "the probe's bash sourced ~/.bashrc; Nix's does not");
  });
});

describe("a check that throws is a bug: exit 70, one line, the trace only with --debug", () => {
  // The check has a real bug (it reads a property of undefined), as builder.ssh-config had for `local`.
  const buggy = [
    {
      id: "buggy",
      deps: [],
      run: async () => {
        const argv = (JSON.parse("{}") as { argv?: { args: string[] } }).argv;
        return { status: "pass" as const, message: String(argv!.args.length) };
      },
    },
  ];
  it("without --debug: fails with one line, no stack in its evidence; the doctor exits 70", async () => {
    const [r] = await runChecks(buggy, {}, null);
    assert.equal(r!.status, "fail");
    assert.equal(r!.internal, true);
    assert.match(
      r!.message,
      /^internal error in check: Cannot read properties of undefined \(reading 'args'\) \(run with --debug for the trace\)$/,
    );
    assert.deepEqual(r!.evidence, []);
    assert.equal(exitCodeFor([r!]), 70);
    const j = reportJson({ checks: [r!], summary: { ...report.summary, exitCode: 70 } }) as {
      error?: { kind: string };
    };
    assert.equal(j.error?.kind, "internal");
  });
  it("with --debug: the stack trace is the evidence", async () => {
    const [r] = await runChecks(buggy, {}, null, new Map(), { debug: true });
    assert.match(r!.evidence[0]!.result, /^TypeError: .*\n\s+at /);
  });
});
