import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { runAs, runAsArgv, SERVICE_PATH, startAs } from "../../src/host/run-as.js";
import { lookupGroup, lookupUser } from "../../src/host/users.js";

const isRoot = process.getuid?.() === 0;
const tag = randomBytes(3).toString("hex");
const USER = `nbtest-${tag}`;
const SUPP = `nbtest-${tag}-s`;
const HOME = `/var/lib/${USER}`;

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

describe("runAs (real users)", { skip: isRoot ? false : "needs root" }, () => {
  let uid = -1;
  let gid = -1;
  let suppGid = -1;

  before(() => {
    sh("groupadd", ["--system", SUPP]);
    sh("useradd", [
      "--system",
      "--no-create-home",
      "--home-dir",
      HOME,
      "--shell",
      "/usr/sbin/nologin",
      "--user-group",
      "--groups",
      SUPP,
      USER,
    ]);
    const u = lookupUser(USER, { getent: false });
    assert.ok(u, "test user was created");
    uid = u.uid;
    gid = u.gid;
    suppGid = lookupGroup(SUPP, { getent: false })!.gid;
    assert.deepEqual(u.supplementaryGroups, [SUPP]);
  });

  after(() => {
    try {
      sh("userdel", [USER]);
    } catch {
      // already gone
    }
    try {
      sh("groupdel", [SUPP]);
    } catch {
      // already gone
    }
    try {
      sh("groupdel", [USER]);
    } catch {
      // userdel removes the user group
    }
  });

  it("sets uid, gid and the supplementary groups from /etc/group", async () => {
    const r1 = await runAs(USER, ["id", "-u"]);
    assert.equal(r1.code, 0, r1.stderr);
    assert.equal(r1.stdout.trim(), String(uid));
    const r2 = await runAs(USER, ["id", "-g"]);
    assert.equal(r2.stdout.trim(), String(gid));
    const r3 = await runAs(USER, ["id", "-G"]);
    assert.deepEqual(
      r3.stdout.trim().split(/\s+/).map(Number).sort(),
      [gid, suppGid].sort(),
      "root's groups are gone; the user's own are there",
    );
    const r4 = await runAs(USER, ["id", "-Gn"]);
    assert.deepEqual(r4.stdout.trim().split(/\s+/).sort(), [USER, SUPP].sort());
  });

  it("starts from a clean service environment", async () => {
    process.env.NB_LEAK_CHECK = "leaked";
    try {
      const r = await runAs(USER, ["env"]);
      assert.equal(r.code, 0, r.stderr);
      const env = Object.fromEntries(
        r.stdout
          .trim()
          .split("\n")
          .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
      );
      assert.deepEqual(env, {
        HOME,
        USER,
        LOGNAME: USER,
        SHELL: "/usr/sbin/nologin",
        PATH: SERVICE_PATH,
      });
    } finally {
      delete process.env.NB_LEAK_CHECK;
    }
  });

  it("layers opts.env on top and can remove names", async () => {
    const r = await runAs(USER, ["env"], { env: { NIX_CONFIG: "max-jobs = 0", SHELL: undefined } });
    assert.match(r.stdout, /^NIX_CONFIG=max-jobs = 0$/m);
    assert.doesNotMatch(r.stdout, /^SHELL=/m);
    assert.match(r.stdout, new RegExp(`^HOME=${HOME}$`, "m"));
  });

  it("runs in / by default and in cwd when given", async () => {
    assert.equal((await runAs(USER, ["pwd"])).stdout.trim(), "/");
    assert.equal((await runAs(USER, ["pwd"], { cwd: "/tmp" })).stdout.trim(), "/tmp");
  });

  it("has no capabilities left", async () => {
    const r = await runAs(USER, ["grep", "^CapEff:", "/proc/self/status"]);
    assert.match(r.stdout, /^CapEff:\s+0+$/m);
  });

  it("never uses a shell", async () => {
    const r = await runAs(USER, ["echo", "$HOME;", "`id`", "&&", "*"]);
    assert.equal(r.stdout, "$HOME; `id` && *\n");
    assert.equal(runAsArgv({ name: USER, uid, gid, home: HOME, shell: "" }, ["true"]).includes("-c"), false);
  });

  it("passes input, exit codes and stderr", async () => {
    const r = await runAs(USER, ["cat"], { input: "hello\nworld\n" });
    assert.equal(r.stdout, "hello\nworld\n");
    const f = await runAs(USER, ["ls", "/nonexistent-nbtest"]);
    assert.equal(f.code, 2);
    assert.match(f.stderr, /No such file/);
    assert.equal(f.timedOut, false);
  });

  it("is denied what the user may not do", async () => {
    const r = await runAs(USER, ["cat", "/etc/shadow"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Permission denied/);
  });

  it("times out and kills the process group", async () => {
    const t0 = Date.now();
    const r = await runAs(USER, ["sleep", "30"], { timeoutMs: 300 });
    assert.equal(r.timedOut, true);
    assert.equal(r.signal, "SIGTERM");
    assert.ok(Date.now() - t0 < 5000);
  });

  it("runs as a bare uid with no passwd entry, with no supplementary groups", async () => {
    const r = await runAs(
      { name: "45678", uid: 45678, gid: 45678, home: "/", shell: "", hasPasswdEntry: false },
      ["id"],
    );
    assert.equal(r.stdout.trim(), "uid=45678 gid=45678 groups=45678");
  });

  it("streams output", async () => {
    const chunks: string[] = [];
    const r = await startAs(USER, ["sh", "-c", "echo one; sleep 0.2; echo two"], {
      onStdout: (b: Buffer) => chunks.push(b.toString()),
    }).done;
    assert.equal(r.code, 0);
    assert.equal(chunks.join(""), "one\ntwo\n");
    assert.ok(chunks.length >= 2, "arrived in more than one chunk");
  });

  it("rejects unknown users", async () => {
    await assert.rejects(runAs(`nbtest-nonexistent-${tag}`, ["true"]), /no such user/);
  });
});
