/**
 * Issue 16 item 15: what a new user met with `use` and `reset`, run by root for a throwaway local user
 * (useradd; the user's own files written through `setpriv` as that user). No /etc/nix on this host, so
 * the daemon (when the user's nix.conf says `store = daemon`) trusts only root. Root's records go to a
 * private NIX_BUILDERS_STATE_DIR. Skipped when not root.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { runReset } from "../../src/commands/reset.js";
import { runUse } from "../../src/commands/use.js";
import { captureIo } from "../support/capture-io.js";

const LINE = "ssh://nix@b1.test x86_64-linux";

function skipReason(): string | false {
  if (process.platform !== "linux") return "needs Linux";
  if (process.getuid?.() !== 0) return "needs root (makes throwaway users, acts for them)";
  for (const tool of ["useradd", "userdel", "setpriv"])
    if (spawnSync(tool, ["--help"], { timeout: 10_000 }).error) return `needs ${tool}`;
  return false;
}
const SKIP = skipReason();

interface User {
  name: string;
  uid: number;
  gid: number;
  home: string;
  dir: string;
  conf: string;
  machines: string;
}

let root = "";
let stateDir = "";
const made: string[] = [];

function mkUser(tag: string): User {
  const name = `nbc-${tag}-${randomBytes(3).toString("hex")}`;
  const home = path.join(root, name);
  const r = spawnSync(
    "useradd",
    ["--create-home", "--home-dir", home, "--shell", "/usr/sbin/nologin", "--user-group", name],
    { encoding: "utf8", timeout: 30_000 },
  );
  assert.equal(r.status, 0, `useradd: ${r.stderr}`);
  made.push(name);
  const id = (flag: string) =>
    Number(spawnSync("id", [flag, name], { encoding: "utf8", timeout: 10_000 }).stdout.trim());
  const dir = path.join(home, ".config", "nix");
  return {
    name,
    uid: id("-u"),
    gid: id("-g"),
    home,
    dir,
    conf: path.join(dir, "nix.conf"),
    machines: path.join(dir, "machines"),
  };
}

/** Write a file of the user's, as the user. */
function userFile(u: User, file: string, text: string): void {
  const r = spawnSync(
    "setpriv",
    [
      `--reuid=${u.uid}`,
      `--regid=${u.gid}`,
      "--init-groups",
      "--reset-env",
      "--",
      "sh",
      "-euc",
      'mkdir -p "$(dirname "$1")" && printf "%s" "$2" > "$1"',
      "sh",
      file,
      text,
    ],
    { encoding: "utf8", timeout: 30_000, cwd: "/" },
  );
  assert.equal(r.status, 0, r.stderr);
}

async function use(u: User, extra: Record<string, unknown> = {}, names = [LINE]) {
  const io = captureIo({ NIX_BUILDERS_STATE_DIR: stateDir });
  const code = await runUse(names, { user: u.name, ...extra }, io);
  return { code, stdout: io.stdout, stderr: io.stderr };
}

async function reset(u: User) {
  const io = captureIo({ NIX_BUILDERS_STATE_DIR: stateDir });
  const code = await runReset({ user: u.name }, io);
  return { code, stdout: io.stdout, stderr: io.stderr };
}

const read = (p: string): string | null => (fs.existsSync(p) ? fs.readFileSync(p, "utf8") : null);
const recordDir = (u: User) => path.join(stateDir, "use", `${u.uid}-${u.name}`);

describe("use and reset, as a new user meets them (issue 16 item 15)", { skip: SKIP }, () => {
  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), "nb-use-cycle-"));
    fs.chmodSync(root, 0o755);
    stateDir = path.join(root, "state");
  });
  after(() => {
    for (const n of made) spawnSync("userdel", ["-r", "-f", n], { timeout: 30_000 });
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  test("--dry-run for a user the daemon does not trust shows the diff with the refusal, writes nothing, exit 2", async () => {
    const u = mkUser("dry");
    userFile(u, u.conf, "store = daemon\n");
    for (const json of [false, true]) {
      const r = await use(u, { dryRun: true, json });
      assert.equal(r.code, 2, r.stdout + r.stderr);
      if (json) {
        const j = JSON.parse(r.stdout);
        assert.equal(j.ok, false);
        assert.equal(j.refused, "local-untrusted");
        assert.match(j.message, /does not trust/);
        assert.deepEqual(
          j.files.map((f: { path: string; status: string }) => [f.path, f.status]),
          [
            [u.machines, "would-write"],
            [u.conf, "would-write"],
          ],
        );
        assert.match(j.files[1].diff, new RegExp(`\\+builders = @${u.machines}`));
      } else {
        assert.match(r.stdout, new RegExp(`\\+builders = @${u.machines}`), "the diff is shown");
        assert.match(r.stdout, /\+ssh:\/\/nix@b1\.test x86_64-linux/);
        assert.match(r.stdout, /nix-builders use: refusing: the nix-daemon does not trust/);
      }
    }
    assert.equal(read(u.conf), "store = daemon\n");
    assert.equal(read(u.machines), null);
    assert.equal(fs.existsSync(recordDir(u)), false, "no record");
    // Without --dry-run: still only the refusal.
    const r = await use(u);
    assert.equal(r.code, 2);
    assert.doesNotMatch(r.stdout, /\+builders/);
  });

  test("a line given on the command line is labelled so in the machines file, not as copied from the system's builders", async () => {
    const u = mkUser("label");
    const r = await use(u);
    assert.ok(r.code === 0 || r.code === 1, r.stdout + r.stderr);
    const m = read(u.machines)!;
    assert.match(m, /# Given on the command line:\nssh:\/\/nix@b1\.test x86_64-linux\n$/);
    assert.doesNotMatch(m, /Copied from the system's builders/);
    assert.match(r.stdout, /from command line/);
  });

  test("a use/reset cycle (use twice, then reset) leaves no backup and no lock file, and puts the mtime back", async () => {
    const u = mkUser("cycle");
    userFile(u, u.conf, "max-jobs = 4\n");
    const old = new Date("2021-03-04T05:06:07.123Z");
    fs.utimesSync(u.conf, old, old);
    const before = fs.statSync(u.conf);
    for (const names of [[LINE], ["ssh://nix@b2.test aarch64-linux"]]) {
      const r = await use(u, {}, names);
      assert.ok(r.code === 0 || r.code === 1, r.stdout + r.stderr);
      assert.doesNotMatch(r.stdout, /backup:/);
      assert.deepEqual(fs.readdirSync(u.dir).sort(), ["machines", "nix.conf"], "no .bak, no lock file");
    }
    const rr = await reset(u);
    assert.equal(rr.code, 0, rr.stdout + rr.stderr);
    assert.deepEqual(fs.readdirSync(u.dir), ["nix.conf"]);
    assert.deepEqual(fs.readdirSync(recordDir(u)), [], "the record and its lock file are gone");
    const st = fs.statSync(u.conf);
    assert.equal(read(u.conf), "max-jobs = 4\n");
    assert.ok(Math.abs(st.mtimeMs - before.mtimeMs) < 1, `mtime ${st.mtime.toISOString()} is back`);
    assert.equal(st.uid, u.uid);
    // A user without any nix.conf: both files go again, nothing is left.
    const v = mkUser("cycle2");
    assert.ok([0, 1].includes((await use(v)).code));
    assert.equal((await reset(v)).code, 0);
    assert.deepEqual(fs.readdirSync(v.dir), []);
  });

  test("a later include that sets builders again: use says its line is not in force, exit 2 (text and --json)", async () => {
    const u = mkUser("include");
    const other = path.join(u.dir, "other.conf");
    userFile(u, other, "builders = ssh://nix@elsewhere.test x86_64-linux\n");
    userFile(u, u.conf, `builders = \ninclude ${other}\n`);
    const r = await use(u);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      new RegExp(
        `nix-builders use: after writing, ${u.name}'s builders setting is 'ssh://nix@elsewhere.test x86_64-linux' from ${other}:1, not '@${u.machines}'`,
      ),
    );
    assert.equal((await reset(u)).code, 0);
    const j = JSON.parse((await use(u, { json: true })).stdout);
    assert.equal(j.ok, false);
    assert.match(j.overridden, /something read later overrides it/);
    // Without the include, the same use is in force.
    userFile(u, other, "\n");
    const ok = await use(u, { json: true });
    assert.ok(ok.code === 0 || ok.code === 1, ok.stdout);
    assert.equal(JSON.parse(ok.stdout).overridden, undefined);
  });
});
