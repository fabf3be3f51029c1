import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chooseSystem, nixStr, verifyExpr } from "../../src/commands/verify.js";
import { humanLine, parseBuildLog, type TimedLine } from "../../src/nix/build-log.js";

const FIX = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures");

/** test/fixtures/verify/*.log: `ms<TAB>line`, timed on arrival. */
function timed(name: string): TimedLine[] {
  return fs
    .readFileSync(path.join(FIX, "verify", name), "utf8")
    .split("\n")
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => {
      const tab = l.indexOf("\t");
      return { t: Number(l.slice(0, tab)), text: l.slice(tab + 1) };
    });
}

/** test/fixtures/logs/*.log (captured by test/support/capture-logs.sh, no times): line i at i ms. */
function untimed(name: string): TimedLine[] {
  return fs
    .readFileSync(path.join(FIX, "logs", name), "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((text, i) => ({ t: i, text }));
}

describe("parseBuildLog on real Nix 2.8 logs", () => {
  test("a remote build over ssh://localhost: machine, drv, and the four phases in order", () => {
    const s = parseBuildLog(timed("localhost-success-2.8.log"));
    assert.equal(s.builtOn, "ssh://localhost");
    assert.match(s.drvPath ?? "", /^\/nix\/store\/[0-9a-z]{32}-nix-builders-verify-.*\.drv$/);
    assert.deepEqual(
      s.phases.map((p) => p.name),
      ["connect", "upload-lock", "upload", "build", "download"],
    );
    const byName = Object.fromEntries(s.phases.map((p) => [p.name, p]));
    // The arrival times in the fixture: connect 182.0 → 299.5, upload 307.5 → 309.8, download 322.4 → 327.5 (stop).
    assert.equal(byName["connect"]!.startMs, 182.0);
    assert.equal(byName["connect"]!.endMs, 299.5);
    assert.equal(byName["upload"]!.startMs, 307.5);
    assert.equal(byName["upload"]!.endMs, 309.8);
    assert.equal(byName["build"]!.startMs, 309.8, "the build runs between the upload and the download");
    assert.equal(byName["build"]!.endMs, 322.4);
    assert.equal(byName["download"]!.startMs, 322.4);
    for (let i = 1; i < s.phases.length; i++)
      assert.ok(s.phases[i]!.startMs >= s.phases[i - 1]!.endMs, "phases do not overlap");
    assert.ok(s.text.includes("this derivation will be built:"));
    assert.deepEqual(s.failedMachines, []);
  });

  test("plain log format (ssh-ng, untrusted remote): the machine comes from `building … on …`", () => {
    const s = parseBuildLog(untimed("remote-untrusted-build.log"));
    assert.equal(
      s.builtOn,
      "ssh-ng://nobody@builder?remote-store=unix:///tmp/nix-builders-capture/daemon.sock",
    );
    assert.equal(s.drvPath, "/nix/store/b3s8qmvd4k3vlz511mamyhg990f79a7r-x.drv");
    assert.deepEqual(s.phases, [], "the plain format has no phase boundaries");
  });

  test("internal-json, host key refused: no build, the machine that failed is listed", () => {
    const s = parseBuildLog(untimed("ssh-host-key-internal-json.log"));
    assert.equal(s.builtOn, null);
    assert.equal(
      s.drvPath,
      "/nix/store/b3s8qmvd4k3vlz511mamyhg990f79a7r-x.drv",
      "from 'this derivation will be built'",
    );
    assert.deepEqual(
      s.failedMachines.map((f) => f.machine),
      ["ssh://nix@builder"],
    );
    assert.match(s.failedMachines[0]!.message, /Host key verification failed/);
    assert.ok(!s.text.some((t) => t.includes("\u001b")), "ANSI codes are removed");
  });

  test("a log cut off mid-upload ends the open phase at the last line", () => {
    const lines = timed("localhost-success-2.8.log");
    const cut = lines.findIndex((l) => l.text.includes('"copying 0 paths"'));
    const s = parseBuildLog(lines.slice(0, cut + 1));
    assert.equal(s.builtOn, "ssh://localhost");
    const upload = s.phases.find((p) => p.name === "upload");
    assert.equal(upload?.endMs, lines[cut]!.t);
  });

  test("humanLine renders messages, talkative activities and build output; hides the rest", () => {
    assert.equal(
      humanLine('@nix {"action":"msg","level":0,"msg":"\\u001b[31;1merror:\\u001b[0m boom"}'),
      "error: boom",
    );
    assert.equal(
      humanLine('@nix {"action":"start","id":1,"level":4,"text":"connecting to \'ssh://h\'","type":0}'),
      "connecting to 'ssh://h'...",
    );
    assert.equal(humanLine('@nix {"action":"start","id":1,"level":6,"text":"querying info","type":0}'), null);
    assert.equal(humanLine('@nix {"action":"result","fields":["hello"],"id":1,"type":101}'), "  | hello");
    assert.equal(humanLine('@nix {"action":"stop","id":1}'), null);
    assert.equal(humanLine("plain text"), "plain text");
  });
});

describe("the verify derivation", () => {
  test("default: /bin/sh -c, nonce in name and output; strings are Nix-escaped", () => {
    const e = verifyExpr({ system: "aarch64-linux", nonce: "n1", program: "/bin/sh", nixpkgs: false });
    assert.equal(
      e,
      'derivation { name = "nix-builders-verify-n1"; system = "aarch64-linux"; builder = "/bin/sh"; args = [ "-c" "echo nix-builders-verify n1 > $out" ]; nonce = "n1"; }',
    );
    const interp = ["$", "{c}"].join("");
    assert.equal(nixStr(`a"b${interp}\\`), `"a\\"b\\${interp}\\\\"`);
  });

  test("a store-path program becomes an input (copied to the builder); busybox runs as `busybox sh`", () => {
    const bb = "/nix/store/8hzbz17vcmw97w1wpqpadxhfkj7crcps-busybox/busybox";
    const e = verifyExpr({ system: "aarch64-linux", nonce: "n", program: bb, nixpkgs: false });
    assert.match(
      e,
      /builder = "\$\{builtins\.storePath "\/nix\/store\/8hzbz17vcmw97w1wpqpadxhfkj7crcps-busybox"\}\/busybox";/,
    );
    assert.match(e, /args = \[ "sh" "-c" /);
  });

  test("bad systems and relative programs are refused", () => {
    assert.throws(() => verifyExpr({ system: 'x"; }', nonce: "n", program: "/bin/sh", nixpkgs: false }));
    assert.throws(() => verifyExpr({ system: "aarch64-linux", nonce: "n", program: "sh", nixpkgs: false }));
  });

  test("--nixpkgs is the guide's hello with a nonce", () => {
    assert.equal(
      verifyExpr({ system: "aarch64-darwin", nonce: "7", program: "/bin/sh", nixpkgs: true }),
      'with import <nixpkgs> { system = "aarch64-darwin"; }; hello.overrideAttrs (o: { n = "7"; })',
    );
  });

  test("system choice: flag, pinned builder, else a builder system that is not ours", () => {
    const v = {
      hookSystem: "x86_64-linux",
      machines: {
        machines: [{ systemTypes: ["x86_64-linux"] }, { systemTypes: ["x86_64-linux", "aarch64-linux"] }],
      },
    } as unknown as Parameters<typeof chooseSystem>[2];
    assert.equal(chooseSystem({}, null, v), "aarch64-linux");
    assert.equal(chooseSystem({ system: "riscv64-linux" }, null, v), "riscv64-linux");
    const pinned = { systemTypes: ["armv7l-linux"] } as unknown as Parameters<typeof chooseSystem>[1];
    assert.equal(chooseSystem({}, pinned, v), "armv7l-linux");
  });
});
