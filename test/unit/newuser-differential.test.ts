/**
 * What a new user hits (issue 16), compared with the real Nix 2.8 (Debian's nix-bin) and, where it is
 * installed, Nix 2.30: our finding must carry the exact text the real Nix prints.
 *
 *  - item 1: a long store URI (`?remote-program=…&ssh-key=…&base64-ssh-public-host-key=…`) makes the build
 *    hook die on its slot lock file: `opening lock file '…/current-load/…': File name too long`.
 *    2.8 names the file after the URI as written; 2.30 after the URI rendered again (parameters sorted,
 *    `=` in a value as `%3D`).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { lintLockFileNames } from "../../src/nix/lint.js";
import { parseBuilders } from "../../src/nix/machines.js";
import { runBuildRemote, scratchDir } from "../support/build-remote.js";
import { REAL_NIXES } from "../support/nix-versions.js";

const noFs = { read: () => ({ ok: false as const, code: "ENOENT" }) };

/** A realistic URI: 294 characters, as a NixOS `nix.buildMachines` entry with every option in the URI. */
function longUri(): string {
  const hostKey = Buffer.from(`ssh-ed25519 ${"A".repeat(100)}`).toString("base64");
  return `ssh://nix@builder.example.org?remote-program=/run/current-system/sw/bin/nix-store&ssh-key=/etc/nix/builder_ed25519&base64-ssh-public-host-key=${hostKey}`;
}

for (const nix of REAL_NIXES) {
  describe(`item 1: a store URI too long for the slot lock file, against real Nix ${nix.label}`, {
    skip: nix.skipReason,
  }, () => {
    it("the hook dies with 'File name too long', and lint's finding carries that exact text", async () => {
      const store = `${scratchDir()}/store`;
      const builders = `${longUri()} x86_64-linux`;
      const r = await runBuildRemote({ builders, system: "x86_64-linux", hook: nix.buildRemote, store });
      assert.equal(r.reply, null, "the hook died before answering");
      assert.match(r.error ?? "", /File name too long$/);
      const machines = parseBuilders({
        spec: builders,
        version: nix.version!,
        defaultSystem: "x86_64-linux",
        fs: noFs,
        cwd: "/",
      }).machines;
      const f = lintLockFileNames(machines, nix.version!, `${store}/nix/var/nix`);
      assert.deepEqual(
        f.map((x) => [x.id, x.severity]),
        [["store-uri-too-long", "error"]],
      );
      assert.equal(f[0]!.nixMessage, r.error);
      assert.match(f[0]!.fix, /column 3/);
    });
    it("the same machine with the key and host key in columns 3 and 8: no finding", async () => {
      const store = `${scratchDir()}/store`;
      const hostKey = Buffer.from(`ssh-ed25519 ${"A".repeat(100)}`).toString("base64");
      const builders = `ssh://nix@builder.example.org?remote-program=/run/current-system/sw/bin/nix-store x86_64-linux /etc/nix/builder_ed25519 1 1 - - ${hostKey}`;
      const machines = parseBuilders({
        spec: builders,
        version: nix.version!,
        defaultSystem: "x86_64-linux",
        fs: noFs,
        cwd: "/",
      }).machines;
      // (the hook is not run here: it would then connect to the builder, and tests stay on loopback)
      assert.deepEqual(lintLockFileNames(machines, nix.version!, `${store}/nix/var/nix`), []);
    });
  });
}
