import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isKnownSystem, splitSystem, suggestSystem } from "../../src/nix/systems.js";

describe("systems", () => {
  it("knows the usual doubles and builtin", () => {
    for (const s of [
      "x86_64-linux",
      "aarch64-darwin",
      "i686-linux",
      "armv7l-linux",
      "riscv64-linux",
      "x86_64-v3-linux",
      "x86_64-darwin",
      "powerpc64le-linux",
      "x86_64-freebsd",
      "builtin",
    ]) {
      assert.ok(isKnownSystem(s), s);
    }
  });
  it("rejects what people write by mistake", () => {
    for (const s of [
      "x86_64",
      "linux-x86_64",
      "amd64-linux",
      "x86_64-unknown-linux-gnu",
      "X86_64-Linux",
      "",
      "-linux",
      "x86_64-",
    ]) {
      assert.ok(!isKnownSystem(s), s);
    }
  });
  it("suggests the intended double", () => {
    const cases: [string, string | null][] = [
      ["x86_64", "x86_64-linux"],
      ["aarch64", "aarch64-linux"],
      ["linux-x86_64", "x86_64-linux"],
      ["amd64-linux", "x86_64-linux"],
      ["arm64-darwin", "aarch64-darwin"],
      ["arm64-macos", "aarch64-darwin"],
      ["x86_64-unknown-linux-gnu", "x86_64-linux"],
      ["aarch64-apple-darwin", "aarch64-darwin"],
      ["X86_64-Linux", "x86_64-linux"],
      ["i386-linux", "i686-linux"],
      ["x86_64-linux", null],
      ["builtin", null],
      ["banana", null],
    ];
    for (const [input, want] of cases) assert.equal(suggestSystem(input), want, input);
  });
  it("splits on the last dash", () => {
    assert.deepEqual(splitSystem("x86_64-v3-linux"), { cpu: "x86_64-v3", kernel: "linux" });
    assert.equal(splitSystem("x86_64"), null);
  });
});
