// The systemd unit shipped for watch (contrib/systemd/nix-builders-watch.service): `systemd-analyze
// verify` (offline, Debian's systemd) finds nothing wrong with it, `systemd-analyze security --offline`
// rates its exposure, and its settings are the ones watch needs (read-only system, writes only to its
// runtime and state directories, V8's JIT allowed, readiness through --wait-ready).
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { have, run } from "../support/bounded.js";

const REPO = join(import.meta.dirname, "..", "..");
export const UNIT_FILE = join(REPO, "contrib", "systemd", "nix-builders-watch.service");
const SHIPPED_BIN = "/usr/local/bin/nix-builders";
const SKIP = !have("systemd-analyze") && "needs systemd-analyze (Debian's systemd)";

/** The unit as `section -> key -> values` (a key may repeat). Comments and blank lines skipped. */
export function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const out = new Map<string, Map<string, string[]>>();
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1]!;
      if (!out.has(section)) out.set(section, new Map());
      continue;
    }
    const eq = line.indexOf("=");
    assert.ok(eq > 0, `not a key=value line: ${line}`);
    const key = line.slice(0, eq);
    const keys = out.get(section)!;
    keys.set(key, [...(keys.get(key) ?? []), line.slice(eq + 1)]);
  }
  return out;
}

/** The value of a flag in a command line ("--state-dir X"). */
function flag(cmd: string, name: string): string | undefined {
  const words = cmd.split(/\s+/);
  const i = words.indexOf(name);
  return i >= 0 ? words[i + 1] : undefined;
}

describe("watch's systemd unit", { skip: SKIP }, () => {
  let dir: string;
  const text = readFileSync(UNIT_FILE, "utf8");
  const unit = parseUnit(text);
  const svc = unit.get("Service")!;
  const one = (k: string) => {
    const v = svc.get(k);
    assert.ok(v && v.length === 1, `${k} set once`);
    return v[0]!;
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "nb-unit-"));
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** The unit with its binary path pointing at a real executable in the temp dir (verify checks it). */
  function installed(body = text): string {
    const bin = join(dir, "nix-builders");
    writeFileSync(bin, "#!/bin/sh\nexit 0\n");
    chmodSync(bin, 0o755);
    const path = join(dir, "nix-builders-watch.service");
    writeFileSync(path, body.replaceAll(SHIPPED_BIN, bin));
    return path;
  }

  test("systemd-analyze verify: no finding", async () => {
    const r = await run("systemd-analyze", ["verify", installed()], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(`${r.stdout}${r.stderr}`.trim(), "");
  });

  test("systemd-analyze verify reports a bad value and a missing binary (the check can fail)", async () => {
    const bad = await run(
      "systemd-analyze",
      ["verify", installed(text.replace("ProtectSystem=strict", "ProtectSystem=strictt"))],
      {
        timeoutMs: 60_000,
      },
    );
    assert.match(bad.stderr, /Failed to parse protect system value, ignoring: strictt/);
    const path = join(dir, "nix-builders-watch.service");
    writeFileSync(path, text.replaceAll(SHIPPED_BIN, join(dir, "missing", "nix-builders")));
    const missing = await run("systemd-analyze", ["verify", path], { timeoutMs: 60_000 });
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /is not executable/);
  });

  test('systemd-analyze security --offline: exposure 3.5 or lower ("OK")', async () => {
    const r = await run("systemd-analyze", ["security", "--offline=yes", installed()], { timeoutMs: 60_000 });
    const m = /Overall exposure level for nix-builders-watch\.service: (\d+\.\d+) (\S+)/.exec(r.stdout);
    assert.ok(m, r.stdout.slice(-500) + r.stderr);
    assert.ok(Number(m[1]) <= 3.5, `exposure ${m[1]} ${m[2]}`);
  });

  test("hardening: read-only system, writes only to its runtime and state directories", () => {
    assert.equal(one("ProtectSystem"), "strict");
    assert.equal(one("ProtectHome"), "read-only");
    assert.equal(one("PrivateTmp"), "yes");
    assert.equal(one("NoNewPrivileges"), "yes");
    for (const k of ["ReadWritePaths", "ReadWriteDirectories", "BindPaths", "AmbientCapabilities"]) {
      assert.ok(!svc.has(k), `${k} is not set`);
    }
    assert.equal(one("RuntimeDirectory"), "nix-builders");
    assert.equal(one("RuntimeDirectoryPreserve"), "yes", "Nix keeps reading the file while watch is down");
    assert.equal(one("StateDirectory"), "nix-builders/watch");
    // V8 needs W+X memory.
    assert.equal(one("MemoryDenyWriteExecute"), "no");
    assert.equal(one("User"), "root");
    assert.ok(!one("CapabilityBoundingSet").includes("CAP_SYS_ADMIN"));
  });

  test("the command writes where the unit lets it, and readiness comes from --wait-ready", () => {
    const start = one("ExecStart");
    const post = one("ExecStartPost");
    assert.equal(one("Type"), "exec");
    assert.ok(start.startsWith(`${SHIPPED_BIN} watch `));
    assert.equal(flag(start, "--output"), "/run/nix-builders/machines", "inside RuntimeDirectory");
    assert.equal(flag(start, "--state-dir"), "/var/lib/nix-builders/watch", "the StateDirectory");
    assert.match(flag(start, "--listen") ?? "", /^127\.0\.0\.1:\d+$/);
    assert.ok(post.startsWith(`${SHIPPED_BIN} watch --wait-ready`));
    assert.equal(flag(post, "--state-dir"), flag(start, "--state-dir"));
    assert.equal(one("Restart"), "always");
    assert.ok(Number(one("TimeoutStartSec").replace(/s$/, "")) > Number(flag(post, "--wait-timeout")));
  });

  test("every flag in the unit is one `nix-builders watch` accepts", {
    skip:
      !existsSync(join(REPO, "src", "commands", "watch.ts")) && "the watch command is not in this tree yet",
  }, async () => {
    const r = await run(
      process.execPath,
      ["--import", "tsx", join(REPO, "src", "cli.ts"), "watch", "--help"],
      { timeoutMs: 60_000, cwd: REPO },
    );
    assert.equal(r.code, 0, r.stderr);
    for (const cmd of [one("ExecStart"), one("ExecStartPost")]) {
      for (const f of cmd.split(/\s+/).filter((w) => w.startsWith("--")))
        assert.ok(r.stdout.includes(`${f} `) || r.stdout.includes(`${f}\n`), `${f} in watch --help`);
    }
  });
});
