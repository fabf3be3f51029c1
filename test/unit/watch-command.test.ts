import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, describe, test } from "node:test";
import { DEFAULT_POLICY } from "../../src/app/watch/policy.js";
import { UsageError } from "../../src/commands/io.js";
import { policyFromFlags } from "../../src/commands/watch.js";

const REPO = resolve(import.meta.dirname, "..", "..");
const tmp = fs.mkdtempSync(join(tmpdir(), "watch-cmd-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function cli(args: string[]) {
  const r = spawnSync(process.execPath, ["--import", "tsx", join(REPO, "src/cli.ts"), ...args], {
    cwd: REPO,
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("watch flags → policy", () => {
  test("defaults are Hydra's constants, hold, 50%", () => {
    assert.deepEqual(policyFromFlags({}), DEFAULT_POLICY);
  });
  test("every knob is a flag; the level cap follows the max delay", () => {
    const p = policyFromFlags({
      mode: "remove",
      failureThreshold: "3",
      successThreshold: "1",
      backoffBase: "10",
      backoffFactor: "2",
      backoffMax: "80",
      backoffJitter: "0",
      countWindow: "5",
      stableAfter: "60",
      maxQuarantinedPercent: "25",
    });
    assert.equal(p.mode, "remove");
    assert.equal(p.failureThreshold, 3);
    assert.equal(p.backoffMaxLevel, 4); // 10, 20, 40, 80
    assert.equal(p.maxQuarantinedShare, 0.25);
  });
  const bad: [string, Record<string, string>][] = [
    ["mode", { mode: "delete" }],
    ["threshold 0", { failureThreshold: "0" }],
    ["threshold fraction", { successThreshold: "1.5" }],
    ["percent > 100", { maxQuarantinedPercent: "150" }],
    ["not a number", { backoffBase: "soon" }],
    ["factor < 1", { backoffFactor: "0.5" }],
  ];
  for (const [name, o] of bad)
    test(`usage error: ${name}`, () => assert.throws(() => policyFromFlags(o), UsageError));
});

describe("watch command line", () => {
  test("status without a running watch: one line naming the socket, exit 2", () => {
    const r = cli(["watch", "status", "--state-dir", tmp]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`^nix-builders: ${tmp}/control.sock: no running watch`));
    assert.equal(r.stderr.trim().split("\n").length, 1);
  });
  test("a source that is the output is refused (exit 2), nothing written", () => {
    const f = join(tmp, "machines");
    fs.writeFileSync(f, "ssh://a x86_64-linux\n");
    const r = cli(["watch", "--once", "--source", f, "--output", f, "--state-dir", join(tmp, "st")]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /is the output/);
    assert.equal(fs.readFileSync(f, "utf8"), "ssh://a x86_64-linux\n");
  });
  test("a source others can write is refused (exit 2)", () => {
    const f = join(tmp, "ww");
    fs.writeFileSync(f, "ssh://a x86_64-linux\n");
    fs.chmodSync(f, 0o666);
    const r = cli([
      "watch",
      "--once",
      "--source",
      f,
      "--output",
      join(tmp, "out"),
      "--state-dir",
      join(tmp, "st"),
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /writable by group or others/);
    assert.equal(fs.existsSync(join(tmp, "out")), false);
  });
  test("--restore writes the source's full list", () => {
    const f = join(tmp, "src");
    fs.writeFileSync(f, "# x\nssh://a x86_64-linux - 2\n", { mode: 0o644 });
    const out = join(tmp, "restored", "machines");
    fs.mkdirSync(join(tmp, "restored"));
    fs.writeFileSync(out, "ssh://a x86_64-linux - 0\n");
    const r = cli(["watch", "--restore", "--source", f, "--output", out]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(fs.readFileSync(out, "utf8"), "# x\nssh://a x86_64-linux - 2\n");
  });
  test("bad interval: usage error 64", () => {
    const r = cli(["watch", "--once", "--interval", "-1", "--source", "/nonexistent"]);
    assert.equal(r.code, 64);
  });
});

describe("a running watch", () => {
  test("--wait-ready, status, drain, undrain, then SIGTERM restores the source", async () => {
    const dir = join(tmp, "running");
    fs.mkdirSync(dir);
    const src = join(dir, "source");
    const SRC =
      "ssh://nix-builder@127.0.0.21 aarch64-linux - 2\nssh://nix-builder@127.0.0.22 aarch64-linux - 2\n";
    fs.writeFileSync(src, SRC, { mode: 0o644 });
    const out = join(dir, "out", "machines");
    const st = join(dir, "state");
    const w = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        join(REPO, "src/cli.ts"),
        "watch",
        "--source",
        src,
        "--output",
        out,
        "--state-dir",
        st,
      ].concat(["--interval", "1", "--timeout", "1", "--min-write-interval", "0"]),
      { cwd: REPO, stdio: ["ignore", "ignore", "pipe"] },
    );
    let log = "";
    w.stderr!.on("data", (d: Buffer) => {
      log += d.toString();
    });
    try {
      const ready = cli(["watch", "--wait-ready", "--state-dir", st, "--wait-timeout", "50"]);
      assert.equal(ready.code, 0, ready.stderr + log);
      assert.equal(fs.readFileSync(out, "utf8"), SRC, "ready means the file is written");
      const status = cli(["watch", "status", "--json", "--state-dir", st]);
      const snap = JSON.parse(status.stdout) as { builders: { builder: string }[]; guards: string[] };
      assert.deepEqual(
        snap.builders.map((b) => b.builder),
        ["ssh://nix-builder@127.0.0.21", "ssh://nix-builder@127.0.0.22"],
      );
      const d = cli(["watch", "drain", "127.0.0.22", "--state-dir", st]);
      assert.equal(d.code, 0, d.stderr);
      assert.match(d.stdout, /drained \(removed\)/);
      assert.equal(fs.readFileSync(out, "utf8"), "ssh://nix-builder@127.0.0.21 aarch64-linux - 2\n");
      const unknown = cli(["watch", "drain", "nope", "--state-dir", st]);
      assert.equal(unknown.code, 64);
      assert.match(unknown.stderr, /no builder named 'nope'/);
      assert.equal(cli(["watch", "undrain", "127.0.0.22", "--state-dir", st]).code, 0);
      assert.equal(fs.readFileSync(out, "utf8"), SRC);
      assert.equal(cli(["watch", "drain", "127.0.0.21", "--state-dir", st]).code, 0);
    } finally {
      w.kill("SIGTERM");
      await new Promise<void>((r) => w.once("exit", () => r()));
    }
    assert.equal(w.exitCode, 0, log);
    assert.equal(fs.readFileSync(out, "utf8"), SRC, "SIGTERM restored the source");
    assert.equal(fs.existsSync(join(st, "control.sock")), false);
  });
});
