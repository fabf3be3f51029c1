/**
 * Exit codes a new user meets (issue 16 item 14), through the real CLI (`node --import tsx src/cli.ts`):
 *
 *  - an evaluation error in `plan` is an error (2), not a usage error (64): the command line was right;
 *  - a `--machines` file that exists but cannot be read is a refusal (2) naming the file, not 64;
 *  - a usage error under `--json` prints a JSON error document on stdout;
 *  - `--nix-version 1.0` is refused (64: nothing before 2.8 is modelled); `--nix-version 9.99` is followed
 *    with a note that the newest modelled rules are used.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { IS_ROOT, makeUser, removeUser, runCli, type Throwaway } from "../support/throwaway.js";

const tmp = mkdtempSync(join(tmpdir(), "nb-exits-"));
chmodSync(tmp, 0o755);
after(() => rmSync(tmp, { recursive: true, force: true }));
const env = { NIX_CONF_DIR: tmp, NIX_USER_CONF_FILES: "" };

describe("exit codes (issue 16 item 14)", () => {
  it("plan: an evaluation error exits 2 with one line, not 64", async () => {
    const bad = join(tmp, "bad.nix");
    writeFileSync(bad, "{ x = ; }\n");
    const r = await runCli(["plan", bad], { env, deadlineMs: 60_000 });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^nix-builders: nix-instantiate .*bad\.nix failed: .*syntax error/);
    assert.equal(r.stderr.trim().split("\n").length, 1);
  });
  it("--json usage error: a JSON error document on stdout, exit 64", async () => {
    const r = await runCli(["lint", "--json", "--no-such-flag"], { env });
    assert.equal(r.code, 64);
    const doc = JSON.parse(r.stdout) as { error: { kind: string; exitCode: number } };
    assert.deepEqual([doc.error.kind, doc.error.exitCode], ["usage", 64]);
  });
  it("--nix-version 1.0 is refused as a usage error; 9.99 is followed with a note", async () => {
    const old = await runCli(["show", "--json", "--nix-version", "1.0"], { env });
    assert.equal(old.code, 64);
    assert.match(JSON.parse(old.stdout).error.message, /before 2\.8 is not modelled/);
    const future = await runCli(["show", "--json", "--nix-version", "9.99"], { env });
    assert.notEqual(future.code, 64);
    assert.match(JSON.parse(future.stdout).nixVersionNote, /newer than the newest modelled release/);
    const ok = await runCli(["show", "--json", "--nix-version", "2.8"], { env });
    assert.equal(JSON.parse(ok.stdout).nixVersionNote, undefined);
  });
  describe("an unreadable --machines file", { skip: !IS_ROOT && "needs root (a throwaway user)" }, () => {
    let u: Throwaway;
    before(() => {
      u = makeUser("nbex");
    });
    after(() => removeUser(u));
    it("is a refusal (2) naming the file, not a usage error (64)", async () => {
      const f = join(tmp, "machines");
      writeFileSync(f, "ssh://b x86_64-linux\n");
      chmodSync(f, 0o600);
      const r = await runCli(["lint", "--machines", f], { env, as: u });
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.trim(), `nix-builders: ${f}: unreadable: Permission denied`);
    });
  });
});
