import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { type CpuidRegs, readCpuid } from "../../src/host/cpuid.js";
import {
  computeFacts,
  computeLocalFacts,
  configShowArgs,
  factsFromShowConfig,
  featuresFromCpuid,
  machineFacts,
  nixSystemFor,
  x86Levels,
} from "../../src/host/machine-facts.js";
import { findNix, type NixInstall } from "../../src/host/nix.js";
import { NIX230 } from "../support/nix-versions.js";

describe("machine facts", () => {
  it("maps Node's platform and arch to Nix doubles", () => {
    assert.equal(nixSystemFor("linux", "x64"), "x86_64-linux");
    assert.equal(nixSystemFor("darwin", "arm64"), "aarch64-darwin");
    assert.equal(nixSystemFor("linux", "arm64"), "aarch64-linux");
  });

  const V1 = ["cmov", "cx8", "fpu", "fxsr", "mmx", "sse", "sse2"];
  const V2 = ["cx16", "lahf_lm", "popcnt", "pni", "ssse3", "sse4_1", "sse4_2"];
  const V3 = ["avx", "avx2", "f16c", "fma", "abm", "movbe"];
  const V4 = ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"];
  const cpu = (vendor: string, ...flags: string[][]) => ({ vendor, flags: new Set(flags.flat()) });

  it("computes x86-64 levels with Nix 2.8's flag sets, stopping at the first level whose flags are missing", () => {
    assert.deepEqual(x86Levels(cpu("GenuineIntel", V1, V2)), [1, 2]);
    assert.deepEqual(x86Levels(cpu("GenuineIntel", V1, V2, V3, V4)), [1, 2, 3, 4]);
    // v3 does not need bmi1/bmi2/xsave in Nix 2.8, but needs abm (LZCNT) and pni (SSE3) for v2.
    assert.deepEqual(x86Levels(cpu("GenuineIntel", V1, V2, V3)), [1, 2, 3]);
    assert.deepEqual(
      x86Levels(
        cpu(
          "GenuineIntel",
          V1,
          V2.filter((f) => f !== "pni"),
          V3,
        ),
      ),
      [1],
    );
    assert.deepEqual(
      x86Levels(
        cpu(
          "GenuineIntel",
          V1,
          V2,
          V3.filter((f) => f !== "abm"),
          V4,
        ),
      ),
      [1, 2],
    );
    assert.deepEqual(x86Levels(cpu("GenuineIntel", V4)), []);
    assert.deepEqual(x86Levels(cpu("GenuineIntel")), []);
  });

  it("follows libcpuid 0.6: no AVX-512 outside Intel, and no levels for a vendor it does not know", () => {
    assert.deepEqual(x86Levels(cpu("AuthenticAMD", V1, V2, V3, V4)), [1, 2, 3]);
    assert.deepEqual(x86Levels(cpu("HygonGenuine", V1, V2, V3, V4)), [1, 2, 3]);
    assert.deepEqual(x86Levels(cpu("  Shanghai  ", V1, V2, V3, V4)), []);
  });

  it("decodes raw CPUID registers as libcpuid does (leaf limits, vendor-specific AVX-512)", () => {
    // Registers read on an AMD EPYC (Zen 4) VM whose /proc/cpuinfo lacks "abm": CPUID itself has it,
    // and Nix 2.8 there says x86_64-v1..v3 (verified with Debian's nix 2.8.0 + libcpuid 0.6.2).
    const amd: CpuidRegs = {
      0: [0xd, 0x68747541, 0x444d4163, 0x69746e65],
      1: [0xb00f21, 0xdcfe0800, 0xfed83203, 0x178bfbff],
      7: [0x1, 0xf1bb03a9, 0x18005f42, 0x110],
      2147483648: [0x80000021, 0x68747541, 0x444d4163, 0x69746e65],
      2147483649: [0xb00f21, 0x40000000, 0x440001f1, 0x25d3fbff],
    };
    const f = featuresFromCpuid(amd)!;
    assert.equal(f.vendor, "AuthenticAMD");
    assert.ok(f.flags.has("abm") && !f.flags.has("avx512f"));
    assert.deepEqual(x86Levels(f), [1, 2, 3]);
    // The same bits under Intel's vendor string: AVX-512 counts, v4.
    const intel: CpuidRegs = { ...amd, 0: [0xd, 0x756e6547, 0x6c65746e, 0x49656e69] };
    assert.equal(featuresFromCpuid(intel)!.vendor, "GenuineIntel");
    assert.deepEqual(x86Levels(featuresFromCpuid(intel)!), [1, 2, 3, 4]);
    // Leaf 7 beyond the CPU's maximum basic leaf is not read: no AVX2, so v2.
    assert.deepEqual(
      x86Levels(featuresFromCpuid({ ...intel, 0: [6, 0x756e6547, 0x6c65746e, 0x49656e69] })!),
      [1, 2],
    );
  });

  it("runs CPUID as a process (the way Nix sees the CPU) on x86-64 Linux", async (t) => {
    if (process.platform !== "linux" || process.arch !== "x64") return t.skip("not x86-64 Linux");
    const regs = await readCpuid();
    assert.ok(regs, "the CPUID program did not run");
    const vendor = /^vendor_id\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1];
    assert.equal(featuresFromCpuid(regs)!.vendor, vendor);
    assert.ok(featuresFromCpuid(regs)!.flags.has("sse2"));
  });

  it("adds kvm only when /dev/kvm is accessible, and only on Linux", () => {
    const base = { platform: "linux", arch: "x64", cpu: cpu("GenuineIntel", V1), hardwareThreads: 4 };
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

  it("agrees with the installed Nix 2.8's own defaults on this machine, whatever its CPU", async (t) => {
    const nix = await findNix();
    if (!nix) return t.skip("Nix is not installed");
    if (nix.version.major !== 2 || nix.version.minor !== 8)
      return t.skip(`the computed model is Nix 2.8's (with libcpuid 0.6); installed: ${nix.versionText}`);
    const empty = mkdtempSync(join(tmpdir(), "nb-facts-"));
    try {
      const out = execFileSync(
        nix.nixPath,
        ["--extra-experimental-features", "nix-command", "show-config", "--json"],
        {
          env: { PATH: process.env["PATH"], NIX_CONF_DIR: empty, NIX_USER_CONF_FILES: "", HOME: empty },
          encoding: "utf8",
          timeout: 20_000,
        },
      );
      const fromNix = factsFromShowConfig(JSON.parse(out));
      const computed = await computeLocalFacts();
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

  it("real Nix 2.30: facts from `config show --json` values (sandbox shell, the build hook's nix, uid-range)", {
    skip: NIX230.skipReason,
  }, async () => {
    const v = NIX230.version!;
    assert.deepEqual(configShowArgs(v), ["config", "show", "--json"]);
    const empty = mkdtempSync(join(tmpdir(), "nb-facts-"));
    try {
      const out = execFileSync(
        NIX230.nix,
        ["--extra-experimental-features", "nix-command", ...configShowArgs(v)],
        {
          env: { PATH: process.env["PATH"], NIX_CONF_DIR: empty, NIX_USER_CONF_FILES: "", HOME: empty },
          encoding: "utf8",
          timeout: 20_000,
        },
      );
      const json = JSON.parse(out) as Record<string, { value: unknown; defaultValue: unknown }>;
      const f = factsFromShowConfig(json);
      // the values Nix runs with, not the declared defaults
      assert.deepEqual(f.sandboxPaths, json["sandbox-paths"]!.value);
      assert.notDeepEqual(json["sandbox-paths"]!.value, json["sandbox-paths"]!.defaultValue);
      assert.equal(f.selfExe, NIX230.nix);
      assert.ok(f.systemFeatures.includes("uid-range"));
      // the computed model agrees on the features (this 2.30 has no libcpuid: no x86-64 levels to compare)
      const computed = await computeLocalFacts(v);
      assert.deepEqual(computed.systemFeatures, f.systemFeatures);
      assert.equal(computed.system, f.system);
      // through the cache path, as the tool asks it
      const install: NixInstall = { nixPath: NIX230.nix, binDir: NIX230.bin, version: v, versionText: "" };
      const viaCache = await machineFacts(install, v);
      assert.equal(viaCache.source, "nix");
      assert.deepEqual(viaCache.sandboxPaths, f.sandboxPaths);
      assert.equal(viaCache.selfExe, NIX230.nix);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
