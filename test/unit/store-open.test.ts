/**
 * Which machine store URIs Nix can open at all, and what kind of store each is: our model
 * (src/nix/store-open.ts) against the real Nix 2.8 (`nix store ping --store URI`, which opens the store
 * exactly as the build hook's `Machine::openStore` does). A URI Nix rejects must never be probed by the
 * doctor; the list covers shell metacharacters, `-` hosts, bad `%` escapes and schemes 2.8 lacks.
 *
 * No case opens /nix or leaves loopback: no `local`/`auto` (they open the system store), ssh only to
 * 127.0.0.1 port 1 (NIX_SSHOPTS) or to hosts OpenSSH refuses before resolving them.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { storeOpen, storeOpenError } from "../../src/nix/store-open.js";
import { NIX_2_8, NIX_LATEST } from "../../src/nix/version.js";

const tmp = mkdtempSync(join(tmpdir(), "nb-store-open-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const haveNix = (() => {
  try {
    return execFileSync("nix", ["--version"], { encoding: "utf8" }).includes("2.8");
  } catch {
    return false;
  }
})();

/** uri → the 2.8 error, or null when 2.8 opens it. */
const CASES: [string, string | null][] = [
  ["foo://x", "don't know how to open Nix store 'foo://x'"],
  ["local:///tmp/x", "don't know how to open Nix store 'local:///tmp/x'"],
  ["file://host/x", "don't know how to open Nix store 'file://host/x'"],
  ["ssh://h^st", "don't know how to open Nix store 'ssh://h^st'"],
  ["ssh://h`id`", "don't know how to open Nix store 'ssh://h`id`'"],
  ["ssh://h|x", "don't know how to open Nix store 'ssh://h|x'"],
  ["ssh://h\\x", "don't know how to open Nix store 'ssh://h\\x'"],
  ["ssh://h%zz", "don't know how to open Nix store 'ssh://h%zz'"],
  ["ssh://[::1", "don't know how to open Nix store 'ssh://[::1'"],
  ["ssh://h?x=%zz", "invalid URI parameter '%zz'"],
  ["ssh://h?x=a%zzb", "invalid URI parameter 'a%zzb'"],
  ["ssh://h?x=%4", "invalid URI parameter '%4'"],
  ["local?x=%zz", "invalid URI parameter '%zz'"],
  ["ssh://-oProxyCommand=x", "invalid SSH host name '-oProxyCommand=x'"],
  ["ssh-ng://-oProxyCommand=x", "invalid SSH host name '-oProxyCommand=x'"],
  ["ssh://", "invalid SSH host name ''"],
  ["ssh-ng://", "invalid SSH host name ''"],
  // Opened (ssh then fails to connect, or refuses the host itself: "hostname contains invalid characters").
  ["ssh://nix@-x", null],
  ["ssh://h$x", null],
  ["ssh://h;x", null],
  ["ssh://h&x", null],
  ['ssh://h"x', null],
  ["ssh://h'q", null],
  ["ssh://127.0.0.1", null],
  ["ssh-ng://root@127.0.0.1?remote-store=/x", null],
  ["daemon", null],
  [`unix://${tmp}/no-socket`, null],
  [`file://${tmp}/cache`, null],
  ["dummy://", null],
  [`${tmp}/chroot`, null],
  [`local?root=${tmp}/root`, null],
  ["http://127.0.0.1:1", null],
];

function nixOpens(uri: string): Promise<{ error: string | null; out: string }> {
  mkdirSync(join(tmp, "conf"), { recursive: true });
  writeFileSync(join(tmp, "conf", "nix.conf"), "build-users-group =\n");
  return new Promise((resolve) => {
    execFile(
      "nix",
      [
        "--extra-experimental-features",
        "nix-command",
        "store",
        "ping",
        "--download-attempts",
        "1",
        "--connect-timeout",
        "2",
        "--store",
        uri,
      ],
      {
        cwd: tmp,
        timeout: 20_000,
        env: {
          PATH: process.env["PATH"] ?? "/usr/bin:/bin",
          HOME: tmp,
          NIX_CONF_DIR: join(tmp, "conf"),
          NIX_USER_CONF_FILES: "",
          NIX_SSHOPTS: "-p 1 -oConnectTimeout=2 -oBatchMode=yes -oStrictHostKeyChecking=yes",
        },
      },
      (_e, stdout, stderr) => {
        const out = `${stdout}${stderr}`;
        // Opened: it says which store, or (a binary cache) it was made and then failed to fetch nix-cache-info.
        const opened = /^Store URL: /m.test(out) || /^error: unable to download '/m.test(out);
        const err = /^error: (.*)$/m.exec(out)?.[1] ?? null;
        resolve({ error: opened ? null : err, out });
      },
    );
  });
}

describe("store URIs: what Nix 2.8 opens", () => {
  it("our model gives 2.8's verdict and error text for every case", () => {
    for (const [uri, want] of CASES) assert.equal(storeOpenError(uri, NIX_2_8), want, uri);
  });

  it("the real Nix 2.8 agrees, case by case", {
    skip: !haveNix && "needs Nix 2.8",
    timeout: 120_000,
  }, async () => {
    const results = await Promise.all(CASES.map(([uri]) => nixOpens(uri)));
    CASES.forEach(([uri, want], i) => {
      assert.equal(results[i]!.error === null ? null : results[i]!.error, want, `${uri}: ${results[i]!.out}`);
    });
  });

  it("kinds: ssh, local (chroot), daemon, binary cache, dummy", () => {
    assert.deepEqual(storeOpen("ssh-ng://h", NIX_2_8), { kind: "ssh", scheme: "ssh-ng" });
    assert.deepEqual(storeOpen("/srv/store", NIX_2_8), {
      kind: "local",
      root: "/srv/store",
      uri: "/srv/store",
    });
    assert.deepEqual(storeOpen("rel/store", NIX_2_8), {
      kind: "local",
      root: "/rel/store",
      uri: "rel/store",
    });
    assert.deepEqual(storeOpen("local?root=/a%20b", NIX_2_8), {
      kind: "local",
      root: "/a b",
      uri: "local?root=/a%20b",
    });
    assert.deepEqual(storeOpen("local", NIX_2_8), { kind: "local", root: null, uri: "local" });
    assert.deepEqual(storeOpen("auto", NIX_2_8), { kind: "auto" });
    assert.deepEqual(storeOpen("daemon", NIX_2_8), { kind: "daemon", socket: null });
    assert.deepEqual(storeOpen("unix:///run/s", NIX_2_8), { kind: "daemon", socket: "/run/s" });
    assert.deepEqual(storeOpen("https://c.example", NIX_2_8), { kind: "binary-cache", scheme: "https" });
    assert.deepEqual(storeOpen("dummy://", NIX_2_8), { kind: "dummy" });
  });

  it("a later Nix: never called rejected for a scheme we do not model", () => {
    assert.deepEqual(storeOpen("foo://x", NIX_LATEST), { kind: "unknown", scheme: "foo" });
    assert.deepEqual(storeOpen("local:///x", NIX_LATEST), { kind: "local", root: null, uri: "local:///x" });
    assert.equal(
      storeOpenError("ssh://-x", NIX_LATEST),
      "invalid SSH authority: '-x': host name '-x' must not start with '-'",
    );
  });
});
