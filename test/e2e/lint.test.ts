/**
 * `nix-builders lint` on real files (root): keys made with ssh-keygen (0600, 0644, passphrase-protected),
 * a key readable by root but not by a real test user (useradd, removed afterwards), a machines file that
 * user cannot read; the command's exit codes 0/1/2, its JSON shape, and that no key material is printed.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Command } from "commander";
import { readerForUser, userView } from "../../src/app/view.js";
import { register, runLint } from "../../src/commands/lint.js";
import { keyFileFacts } from "../../src/host/keyfile.js";
import { lookupUser, type UserInfo } from "../../src/host/users.js";
import { base64Encode } from "../../src/nix/base64.js";
import { captureIo } from "../support/capture-io.js";

const isRoot = process.getuid?.() === 0;
const tag = randomBytes(3).toString("hex");
const USER = `nblint-${tag}`;

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

interface JsonOut {
  findings: {
    id: string;
    severity: string;
    file: string | null;
    line: number | null;
    message: string;
    fix: string;
    nixMessage?: string;
  }[];
  summary: { errors: number; warnings: number; infos: number };
}

describe("lint on real files", { skip: isRoot ? false : "needs root" }, () => {
  let dir = "";
  let etc = "";
  let keys = "";
  let testUser: UserInfo;
  let hostKey = "";
  let env: NodeJS.ProcessEnv = {};
  const secrets: string[] = [];

  const keygen = (name: string, pass: string, mode: number): string => {
    const p = join(keys, name);
    sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", pass, "-C", "", "-f", p]);
    chmodSync(p, mode);
    // what must never show up in our output: the private key body and the public key blob
    const priv = readFileSync(p, "utf8").split("\n")[1]!;
    const pub = readFileSync(`${p}.pub`, "utf8").split(" ")[1]!;
    secrets.push(priv, pub);
    return p;
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "nb-lint-"));
    chmodSync(dir, 0o755); // the test user must be able to traverse it
    etc = join(dir, "etc");
    keys = join(dir, "keys");
    mkdirSync(etc);
    mkdirSync(keys, { mode: 0o755 });
    chmodSync(keys, 0o755);
    sh("useradd", [
      "--system",
      "--no-create-home",
      "--home-dir",
      join(dir, "home"),
      "--shell",
      "/usr/sbin/nologin",
      USER,
    ]);
    const u = lookupUser(USER, { getent: false });
    assert.ok(u, "test user exists");
    testUser = u;
    keygen("ok", "", 0o600);
    keygen("open", "", 0o644);
    keygen("locked", "secret", 0o600);
    keygen("rootonly", "", 0o600);
    keygen("theirs", "", 0o600);
    chownSync(join(keys, "theirs"), testUser.uid, testUser.gid);
    hostKey = base64Encode(
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDfHtzJlAdbNbrI9aBQX9DqEYIvnkFJ1mjRpAe8Szkq0 root@b\n",
    );
    // A user view that only sees our files: no user files, HOME in the temp dir. As root with a writable
    // /nix/var/nix the store is local, so the build hook (and ssh) runs as root.
    env = {
      NIX_CONF_DIR: etc,
      NIX_USER_CONF_FILES: "",
      HOME: dir,
      PATH: process.env["PATH"] ?? "/usr/bin:/bin",
    };
  });

  after(() => {
    try {
      sh("userdel", [USER]);
    } catch {
      // already gone
    }
    try {
      sh("groupdel", [USER]);
    } catch {
      // removed with the user
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const writeView = (machines: string, conf = `builders = @${join(etc, "machines")}\n`) => {
    // No build users: a fresh machine has no nixbld group, and lint rightly reports the default
    // `build-users-group = nixbld` without one (not what these tests are about).
    writeFileSync(join(etc, "nix.conf"), `${conf}build-users-group =\n`);
    writeFileSync(join(etc, "machines"), machines);
  };

  const run = async (opts: Parameters<typeof runLint>[0], given?: Parameters<typeof runLint>[2]) => {
    const io = captureIo(env);
    const code = await runLint(opts, io, given);
    const text = io.stdout;
    for (const s of secrets) assert.ok(!text.includes(s), "no key material in the output");
    return { code, text };
  };

  it("a clean configuration: exit 0, no findings", async () => {
    writeView(`ssh://nix@builder x86_64-linux ${join(keys, "ok")} 2 1 big-parallel - ${hostKey}\n`);
    const { code, text } = await run({});
    assert.equal(code, 0, text);
    assert.match(text, /no problems found/);
    const j = await run({ json: true });
    assert.deepEqual(JSON.parse(j.text), { findings: [], summary: { errors: 0, warnings: 0, infos: 0 } });
  });

  it("warnings only: exit 1 (a system that is not a double)", async () => {
    writeView(`ssh://nix@builder x86_64 ${join(keys, "ok")} 2 1\n`);
    const { code, text } = await run({ json: true });
    assert.equal(code, 1);
    const j = JSON.parse(text) as JsonOut;
    assert.deepEqual(
      j.findings.map((f) => [f.id, f.severity, f.file, f.line]),
      [["unknown-system", "warning", join(etc, "machines"), 1]],
    );
    assert.deepEqual(j.summary, { errors: 0, warnings: 1, infos: 0 });
  });

  it("errors: a 0644 key (ssh refuses it) and a passphrase key: exit 2, JSON shape, human output", async () => {
    writeView(
      `ssh://nix@a x86_64-linux ${join(keys, "open")} 1 1\nssh://nix@b x86_64-linux ${join(keys, "locked")} 1 1\n`,
    );
    const { code, text } = await run({ json: true });
    assert.equal(code, 2);
    const j = JSON.parse(text) as JsonOut;
    assert.deepEqual(Object.keys(j).sort(), ["findings", "summary"]);
    for (const f of j.findings) {
      for (const k of Object.keys(f))
        assert.ok(
          ["id", "severity", "file", "line", "message", "fix", "nixMessage", "nixDisplayed"].includes(k),
          k,
        );
      assert.ok(["error", "warning", "info"].includes(f.severity));
    }
    assert.deepEqual(
      j.findings.map((f) => [f.id, f.severity, f.line]),
      [
        ["key-permissions", "error", 1],
        ["key-passphrase", "error", 2],
      ],
    );
    assert.match(j.findings[0]!.nixMessage!, /Permissions 0644 for '.*open' are too open/);
    assert.match(j.findings[1]!.nixMessage!, /incorrect passphrase/);
    assert.deepEqual(j.summary, { errors: 2, warnings: 0, infos: 0 });

    const human = await run({});
    assert.equal(human.code, 2);
    const m = join(etc, "machines");
    assert.ok(human.text.includes(`${m}:1: error: ssh key ${join(keys, "open")} has mode 0644`), human.text);
    assert.match(human.text, new RegExp(`${m}:2: error: .*passphrase[^\\n]*\\n  fix: `));
    assert.match(human.text, /2 errors, 0 warnings, 0 infos/);
  });

  it("the 2.8-only breakages: errors on 2.8, warnings on current Nix", async () => {
    writeView(`ssh://nix@a x86_64-linux ${join(keys, "ok")} 1 1 # old; x\r\n\r\n`);
    const on28 = JSON.parse((await run({ json: true, nixVersion: "2.8" })).text) as JsonOut;
    assert.deepEqual(
      on28.findings.map((f) => [f.id, f.severity, f.line]),
      [
        ["semicolon-in-comment", "error", 1],
        ["blank-entry", "error", 2],
      ],
    );
    const onHead = await run({ json: true, nixVersion: "2.35" });
    assert.equal(onHead.code, 1);
    const j = JSON.parse(onHead.text) as JsonOut;
    assert.deepEqual(
      j.findings.map((f) => [f.id, f.severity]),
      [
        ["semicolon-in-comment", "warning"],
        ["blank-entry", "warning"],
      ],
    );
  });

  it("builders = '' hides an existing machines file (NixOS distributedBuilds = false)", async () => {
    writeView(`ssh://nix@a x86_64-linux ${join(keys, "ok")} 1 1\n`, "builders =\n");
    const j = JSON.parse((await run({ json: true })).text) as JsonOut;
    assert.deepEqual(
      j.findings.map((f) => [f.id, f.severity, f.file, f.line]),
      [["builders-empty", "warning", join(etc, "nix.conf"), 1]],
    );
  });

  it("FILE arguments: a nix.conf-like file and a machines file, classified by content", async () => {
    // the system machines file has a machine: a builders value that leaves it out is worth an info
    writeView(`ssh://nix@sys x86_64-linux ${join(keys, "ok")} 1 1\n`);
    const conf = join(dir, "builders-settings");
    const mf = join(dir, "more-machines");
    writeFileSync(conf, `builders = @${mf}\nextra-builders = ssh://c x86_64-linux\nbuilders = @${mf}\n`);
    writeFileSync(mf, `ssh://nix@a x86_64-linux ${join(keys, "ok")} 1 1\nssh://nix@a aarch64-linux - 0 1\n`);
    const { code, text } = await run({ json: true, files: [conf] });
    assert.equal(code, 1);
    assert.equal(
      (JSON.parse(text) as JsonOut).findings.find((f) => f.id === "machines-file-unused")?.severity,
      "info",
    );
    const j = JSON.parse(text) as JsonOut;
    assert.deepEqual(
      j.findings.map((f) => [f.id, f.file === conf ? "conf" : f.file === mf ? "machines" : f.file, f.line]),
      [
        ["builders-overridden", "conf", 1],
        ["extra-builders", "conf", 2],
        ["machines-file-unused", "conf", 3],
        ["duplicate-machine", "machines", 2],
        ["max-jobs-zero", "machines", 2],
      ],
    );
    const direct = JSON.parse((await run({ json: true, files: [mf] })).text) as JsonOut;
    assert.deepEqual(
      direct.findings.map((f) => f.id),
      ["duplicate-machine", "max-jobs-zero"],
    );
    // forcing the kind: read as a nix.conf, a machines line is a syntax error
    const forced = JSON.parse((await run({ json: true, conf: [mf] })).text) as JsonOut;
    assert.equal(forced.findings[0]!.id, "conf-syntax");
    assert.match(forced.findings[0]!.nixMessage!, /^illegal configuration line/);
  });

  it("a key and a machines file root can read but the hook user cannot", async () => {
    const mf = join(dir, "hook-machines");
    writeFileSync(
      mf,
      `ssh://nix@a x86_64-linux ${join(keys, "rootonly")} 1 1\nssh://nix@b x86_64-linux ${join(keys, "theirs")} 1 1\n`,
    );
    chmodSync(mf, 0o644);
    const real = await userView({ env });
    // The hook user and the reader that reads as the hook user go together (the view reads through it).
    const asTestUser = { ...real, hookUser: testUser, hookReader: readerForUser(testUser) };
    const j = JSON.parse((await run({ json: true, machines: [mf] }, asTestUser)).text) as JsonOut;
    assert.deepEqual(
      j.findings.map((f) => [f.id, f.severity, f.line]),
      [["key-unreadable", "error", 1]],
    );
    assert.match(j.findings[0]!.message, new RegExp(`not readable by ${USER}`));

    // the machines file itself unreadable by the hook user: Nix's read fails
    const conf = join(dir, "hook.conf");
    writeFileSync(conf, `builders = @${mf}\n`);
    chmodSync(mf, 0o600);
    const j2 = JSON.parse((await run({ json: true, conf: [conf] }, asTestUser)).text) as JsonOut;
    const mu = j2.findings.filter((f) => f.id === "machines-unreadable");
    assert.equal(mu.length, 1);
    assert.equal(mu[0]!.file, conf);
    assert.equal(mu[0]!.nixMessage, `opening file '${mf}': Permission denied`);
  });

  it("keyFileFacts runs ssh-keygen as the hook user and never returns key material", async () => {
    const f = await keyFileFacts(join(keys, "theirs"), testUser);
    assert.equal(f.exists, true);
    assert.equal(f.readableByHookUser, true);
    assert.equal(f.mode, 0o600);
    assert.equal(f.ownerUid, testUser.uid);
    assert.equal(f.passphrase, false);
    const locked = await keyFileFacts(join(keys, "locked"), { ...testUser, uid: 0, gid: 0, name: "root" });
    assert.equal(locked.passphrase, true);
    const pub = await keyFileFacts(`${join(keys, "ok")}.pub`, { ...testUser, uid: 0, gid: 0, name: "root" });
    // 0644 .pub owned by root: ssh-keygen refuses on permissions before parsing: unknown, not a passphrase
    assert.equal(pub.passphrase, null);
    for (const s of secrets) assert.ok(!JSON.stringify([f, locked, pub]).includes(s));
  });

  it("registered as a commander command: `lint --json --machines FILE` sets the exit code", async () => {
    const mf = join(dir, "cli-machines");
    writeFileSync(mf, `ssh://nix@a x86_64-linux ${join(keys, "open")} 1 1\n`);
    const io = captureIo(env);
    let code = -1;
    const program = new Command().exitOverride();
    register(program, io, (c) => {
      code = c;
    });
    await program.parseAsync(["node", "nix-builders", "lint", "--json", "--machines", mf]);
    assert.equal(code, 2);
    const j = JSON.parse(io.stdout) as JsonOut;
    assert.deepEqual(
      j.findings.map((f) => f.id),
      ["key-permissions"],
    );
  });
});
