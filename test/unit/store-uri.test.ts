import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decodeHostKey } from "../../src/nix/machines.js";
import {
  isFakeSsh,
  lockFileName,
  normaliseStoreUri,
  parseUrl28,
  slotLockPath,
  sshAuthority,
} from "../../src/nix/store-uri.js";
import { NIX_2_8, NIX_LATEST } from "../../src/nix/version.js";

describe("store URIs", () => {
  it("normalises bare hosts to ssh:// (§2.4)", () => {
    const cases: [string, string][] = [
      ["nix@host", "ssh://nix@host"],
      ["localhost", "ssh://localhost"],
      ["host:2222", "ssh://host:2222"],
      ["[::1]", "ssh://[::1]"],
      ["/srv/store", "/srv/store"],
      ["ssh-ng://h", "ssh-ng://h"],
      ["auto", "auto"],
      ["daemon", "daemon"],
      ["local", "local"],
      ["local?root=/x", "local?root=/x"],
      ["?root=x", "?root=x"],
      ["autox", "ssh://autox"],
      ["@/file", "@/file"],
    ];
    for (const [i, o] of cases) assert.equal(normaliseStoreUri(i), o, i);
  });
  it("lock file names replace / with _", () => {
    assert.equal(lockFileName("ssh://nix@host"), "ssh:__nix@host");
    assert.equal(lockFileName("/tmp/bh/m7"), "_tmp_bh_m7");
    assert.equal(
      slotLockPath("/nix/var/nix/current-load", "/tmp/bh/m7", 0),
      "/nix/var/nix/current-load/_tmp_bh_m7-0",
    );
  });
  it("2.8 ssh host validation and known_hosts name", () => {
    const a = sshAuthority("ssh://nix@myhost:2200", NIX_2_8);
    assert.equal(a.valid, true);
    assert.equal(a.sshTarget, "nix@myhost:2200");
    assert.equal(a.hostForKnownHosts, "myhost:2200");
    assert.equal(a.port, null);
    assert.equal(
      sshAuthority("ssh://-oProxyCommand=x", NIX_2_8).error,
      "invalid SSH host name '-oProxyCommand=x'",
    );
    assert.equal(sshAuthority("ssh://", NIX_2_8).error, "invalid SSH host name ''");
    assert.equal(sshAuthority("ssh://nix@-x", NIX_2_8).valid, true);
    assert.equal(sshAuthority("ssh://[::1]", NIX_2_8).sshTarget, "::1");
    assert.equal(sshAuthority("ssh://root@[::1]", NIX_2_8).sshTarget, "root@::1");
    assert.equal(sshAuthority("ssh://h?ssh-key=/a", NIX_2_8).sshTarget, "h");
    assert.equal(sshAuthority("/tmp/x", NIX_2_8).scheme, null);
  });
  it("HEAD ssh authority validation", () => {
    const a = sshAuthority("ssh://nix@h:2222", NIX_LATEST);
    assert.deepEqual([a.user, a.host, a.port, a.hostForKnownHosts, a.valid], ["nix", "h", 2222, "h", true]);
    assert.equal(
      sshAuthority("ssh://-h", NIX_LATEST).error,
      "invalid SSH authority: '-h': host name '-h' must not start with '-'",
    );
    assert.equal(
      sshAuthority("ssh://@h", NIX_LATEST).error,
      "invalid SSH authority: '@h': user name must not be empty",
    );
    assert.equal(
      sshAuthority("ssh://-u@h", NIX_LATEST).error,
      "invalid SSH authority: '-u@h': user name '-u' must not start with '-'",
    );
    assert.equal(
      sshAuthority("ssh://", NIX_LATEST).error,
      "invalid SSH authority: '': host name must not be empty",
    );
    assert.equal(sshAuthority("ssh://[::1]:22", NIX_LATEST).host, "::1");
  });
  it("2.8 URL parsing (the regex of url-parts.hh)", () => {
    assert.deepEqual(parseUrl28("ssh://h?a=1&b&a=2&c=%41"), {
      scheme: "ssh",
      authority: "h",
      path: "",
      query: { a: "1", c: "A" },
    });
    assert.equal(parseUrl28("ssh://h?x=%zz"), null);
    assert.equal(parseUrl28("/tmp/x"), null);
  });
  it("localhost is not ssh", () => {
    assert.equal(isFakeSsh("ssh://localhost", NIX_2_8), true);
    assert.equal(isFakeSsh("ssh://nix@localhost", NIX_2_8), false);
    assert.equal(isFakeSsh("ssh://nix@localhost", NIX_LATEST), false);
    assert.equal(isFakeSsh("ssh-ng://localhost", NIX_LATEST), true);
  });
  it("decodes host keys leniently and checks for a public key line", () => {
    const line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@h\n";
    const ok = decodeHostKey(Buffer.from(line).toString("base64"));
    assert.deepEqual(ok, { ok: true, text: line, isPublicKeyLine: true });
    const junk = decodeHostKey("SSH+HOST+PUBLIC+KEY+BASE64+ENCODED==");
    assert.equal(junk.ok && junk.isPublicKeyLine, false);
    assert.deepEqual(decodeHostKey("c3No\nLXJz=garbage*"), {
      ok: true,
      text: "ssh-rs",
      isPublicKeyLine: false,
    });
    const bad = decodeHostKey("BAD_BASE64");
    assert.equal(bad.ok, false);
    assert.match(bad.ok ? "" : bad.message, /invalid character in Base64 string: '_'/);
  });
});

it("parseUrl28: a URI of 14 MB is not a URI (the regular expression's stack overflow is not a crash)", () => {
  assert.equal(parseUrl28(`ssh://${"y-".repeat(7 * 1024 * 1024)}`), null);
});
