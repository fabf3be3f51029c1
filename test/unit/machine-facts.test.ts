import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  computeFacts,
  computeLocalFacts,
  factsFromShowConfig,
  machineFacts,
  nixSystemFor,
  x86Levels,
} from "../../src/host/machine-facts.js";
import { findNix } from "../../src/host/nix.js";

describe("machine facts", () => {
  it("maps Node's platform and arch to Nix doubles", () => {
    assert.equal(nixSystemFor("linux", "x64"), "x86_64-linux");
    assert.equal(nixSystemFor("darwin", "arm64"), "aarch64-darwin");
    assert.equal(nixSystemFor("linux", "arm64"), "aarch64-linux");
  });

  it("stops at the first x86-64 level whose flags are missing", () => {
    const v2 = ["cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"];
    assert.deepEqual(x86Levels(new Set(v2)), [1, 2]);
    assert.deepEqual(x86Levels(new Set(["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"])), [1]);
    assert.deepEqual(x86Levels(new Set()), [1]);
  });

  it("adds kvm only when /dev/kvm is accessible, and only on Linux", () => {
    const base = { platform: "linux", arch: "x64", cpuFlags: new Set<string>(), hardwareThreads: 4 };
    assert.ok(computeFacts({ ...base, kvmAccessible: true }).systemFeatures.includes("kvm"));
    assert.ok(!computeFacts({ ...base, kvmAccessible: false }).systemFeatures.includes("kvm"));
    assert.deepEqual(computeFacts({ ...base, kvmAccessible: false }).extraPlatforms, [
      "i686-linux",
      "x86_64-v1-linux",
    ]);
    assert.deepEqual(
      computeFacts({ ...base, platform: "darwin", arch: "arm64", kvmAccessible: true }).extraPlatforms,
      [],
    );
  });

  it("agrees with the installed Nix's own defaults on this machine", async (t) => {
    const nix = await findNix();
    if (!nix) return t.skip("Nix is not installed");
    const empty = mkdtempSync(join(tmpdir(), "nb-facts-"));
    try {
      const out = execFileSync(
        nix.nixPath,
        ["--extra-experimental-features", "nix-command", "show-config", "--json"],
        {
          env: { PATH: process.env["PATH"], NIX_CONF_DIR: empty, NIX_USER_CONF_FILES: "", HOME: empty },
          encoding: "utf8",
        },
      );
      const fromNix = factsFromShowConfig(JSON.parse(out));
      const computed = computeLocalFacts();
      assert.equal(computed.system, fromNix.system);
      assert.deepEqual(computed.extraPlatforms, fromNix.extraPlatforms);
      assert.deepEqual(computed.systemFeatures, fromNix.systemFeatures);
      assert.equal(computed.cores, fromNix.cores);
      const viaCache = await machineFacts(nix);
      assert.equal(viaCache.source, "nix");
      assert.deepEqual(viaCache.extraPlatforms, fromNix.extraPlatforms);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it("finds the installed Nix and its version", async (t) => {
    if (!existsSync("/usr/bin/nix")) return t.skip("Nix is not installed");
    const nix = await findNix();
    assert.ok(nix);
    assert.ok(nix.versionText.startsWith("nix (Nix) "));
    assert.equal(nix.version.major, 2);
  });
});
