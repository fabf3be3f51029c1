/** The ssh argv Nix 2.8 and current Nix build (Nix 2.8.0 src/libstore/ssh.cc; docs/protocols.md). Pure: no processes. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { NIX_2_8, NIX_LATEST } from "../../src/nix/version.js";
import {
  nixBase64Decode,
  nixSshArgv,
  probeSshArgv,
  probeSshEnv,
  shellEscape,
  shellSplit,
} from "../../src/remote/ssh-argv.js";

const HK = "/tmp/nix-1-0/host-key";
const KEY_LINE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDUMMYDUMMYDUMMYDUMMYDUMMYDUMMYDUMMYDUMMYD root@b";
const KEY_B64 = Buffer.from(`${KEY_LINE}\n`).toString("base64");

describe("nixSshArgv, Nix 2.8", () => {
  const v = NIX_2_8;
  it("plain ssh://host", () => {
    const r = nixSshArgv({ version: v, storeUri: "ssh://nix@myhost" });
    assert.equal(r.program, "ssh");
    assert.deepEqual(r.args, ["nix@myhost", "-x", "-a", "nix-store --serve --write"]);
    assert.equal(r.protocol, "serve");
    assert.equal(r.host, "nix@myhost");
    assert.equal(r.expectStartedLine, false);
    assert.deepEqual(r.env, {});
    assert.equal(r.error, undefined);
  });
  it("ssh-ng:// uses nix-daemon --stdio", () => {
    const r = nixSshArgv({ version: v, storeUri: "ssh-ng://other" });
    assert.deepEqual(r.args, ["other", "-x", "-a", "nix-daemon --stdio"]);
    assert.equal(r.protocol, "worker");
  });
  it("bare host is ssh://", () => {
    assert.deepEqual(nixSshArgv({ version: v, storeUri: "h1" }).args, [
      "h1",
      "-x",
      "-a",
      "nix-store --serve --write",
    ]);
  });
  it("all options, in Nix's order", () => {
    const r = nixSshArgv({
      version: v,
      storeUri: "ssh://nix@b1",
      sshKey: "/etc/nix/id",
      base64PublicHostKey: KEY_B64,
      hostKeyFile: HK,
      nixSshOpts: "-p 2222 -oServerAliveInterval=5",
      compress: true,
      verbose: true,
      remoteProgram: "/run/current-system/sw/bin/nix-store",
      remoteStore: "/tmp/x y",
    });
    assert.deepEqual(r.args, [
      "nix@b1",
      "-x",
      "-a",
      "-p",
      "2222",
      "-oServerAliveInterval=5",
      "-i",
      "/etc/nix/id",
      `-oUserKnownHostsFile=${HK}`,
      "-C",
      "-v",
      "/run/current-system/sw/bin/nix-store --serve --write --store '/tmp/x y'",
    ]);
    // host after the last `@`; the decoded key keeps its newline, so the file ends with a blank line
    assert.equal(r.knownHostsContent, `b1 ${KEY_LINE}\n\n`);
  });
  it("NIX_SSHOPTS: whitespace split, no quote handling", () => {
    const r = nixSshArgv({ version: v, storeUri: "ssh://h", nixSshOpts: ' -o "Foo=bar baz"\t-v\n' });
    assert.deepEqual(r.args, ["h", "-x", "-a", "-o", '"Foo=bar', 'baz"', "-v", "nix-store --serve --write"]);
  });
  it("ports are not parsed: part of the host word and of the known_hosts name", () => {
    const r = nixSshArgv({
      version: v,
      storeUri: "ssh://nix@myhost:2200",
      base64PublicHostKey: KEY_B64,
      hostKeyFile: HK,
    });
    assert.equal(r.args[0], "nix@myhost:2200");
    assert.ok(r.knownHostsContent?.startsWith("myhost:2200 ssh-ed25519 "));
  });
  it("IPv6 brackets are stripped", () => {
    assert.equal(nixSshArgv({ version: v, storeUri: "ssh://[::1]" }).args[0], "::1");
    assert.equal(nixSshArgv({ version: v, storeUri: "ssh://nix@[fe80::1]" }).args[0], "nix@fe80::1");
  });
  it("URI parameters (machine columns win over them)", () => {
    const r = nixSshArgv({
      version: v,
      storeUri: "ssh://h?ssh-key=/a&compress=true&remote-program=/opt/nix-store&remote-store=%2Fsrv%2Fs",
    });
    assert.deepEqual(r.args, [
      "h",
      "-x",
      "-a",
      "-i",
      "/a",
      "-C",
      "/opt/nix-store --serve --write --store '/srv/s'",
    ]);
    const r2 = nixSshArgv({ version: v, storeUri: "ssh://h?ssh-key=/a&ssh-key=/c", sshKey: "/b" });
    assert.deepEqual(r2.args.slice(3, 5), ["-i", "/b"]);
    const r3 = nixSshArgv({ version: v, storeUri: "ssh://h?ssh-key=/a&ssh-key=/c" });
    assert.deepEqual(r3.args.slice(3, 5), ["-i", "/a"], "first duplicate key wins");
  });
  it("remote-store with a quote is shell-escaped", () => {
    const r = nixSshArgv({ version: v, storeUri: "ssh-ng://h", remoteStore: "it's" });
    assert.equal(r.args.at(-1), "nix-daemon --stdio --store 'it'\\''s'");
  });
  it("relative ssh-key passes verbatim", () => {
    assert.deepEqual(nixSshArgv({ version: v, storeUri: "ssh://h", sshKey: "id_x" }).args.slice(3, 5), [
      "-i",
      "id_x",
    ]);
  });
  it("invalid host names", () => {
    assert.equal(
      nixSshArgv({ version: v, storeUri: "ssh://-oProxyCommand=x" }).error,
      "invalid SSH host name '-oProxyCommand=x'",
    );
    assert.equal(nixSshArgv({ version: v, storeUri: "ssh://" }).error, "invalid SSH host name ''");
    assert.equal(nixSshArgv({ version: v, storeUri: "ssh://" }).args.length, 0);
    // `-` after a user is not rejected by 2.8 (the host string starts with the user)
    assert.equal(nixSshArgv({ version: v, storeUri: "ssh://u@-h" }).error, undefined);
  });
  it("bad host key base64", () => {
    const r = nixSshArgv({ version: v, storeUri: "ssh://h", base64PublicHostKey: "ab_c", hostKeyFile: HK });
    assert.equal(r.error, "invalid character in Base64 string: '_'");
  });
  it("localhost runs bash -c locally", () => {
    const r = nixSshArgv({ version: v, storeUri: "ssh://localhost", nixSshOpts: "-v", sshKey: "/k" });
    assert.equal(r.program, "bash");
    assert.deepEqual(r.args, ["-c", "nix-store --serve --write"]);
    assert.equal(r.fakeSsh, true);
    const ng = nixSshArgv({ version: v, storeUri: "ssh-ng://localhost", remoteStore: "/tmp/s" });
    assert.deepEqual(ng.args, ["-c", "nix-daemon --stdio --store '/tmp/s'"]);
    // `nix@localhost` is real ssh in 2.8
    assert.equal(nixSshArgv({ version: v, storeUri: "ssh://nix@localhost" }).program, "ssh");
  });
  it("not an ssh URI", () => {
    assert.match(nixSshArgv({ version: v, storeUri: "daemon?x" }).error ?? "", /^not an ssh store URI/);
    assert.match(nixSshArgv({ version: v, storeUri: "/srv/store" }).error ?? "", /^not an ssh store URI/);
  });
});

describe("nixSshArgv, current Nix", () => {
  const v = NIX_LATEST;
  const TAIL = ["-oPermitLocalCommand=yes", "-oLocalCommand=echo started"];
  it("plain ssh://host", () => {
    const r = nixSshArgv({ version: v, storeUri: "ssh://nix@myhost" });
    assert.deepEqual(r.args, ["nix@myhost", "-x", ...TAIL, "--", "nix-store", "--serve", "--write"]);
    assert.equal(r.host, "myhost");
    assert.equal(r.expectStartedLine, true);
    assert.deepEqual(r.env, { SHELL: "/bin/sh" });
  });
  it("ssh-ng://", () => {
    assert.deepEqual(nixSshArgv({ version: v, storeUri: "ssh-ng://h" }).args, [
      "h",
      "-x",
      ...TAIL,
      "--",
      "nix-daemon",
      "--stdio",
    ]);
  });
  it("all options with a port", () => {
    const r = nixSshArgv({
      version: v,
      storeUri: "ssh://nix@b1:2200",
      sshKey: "/etc/nix/id",
      base64PublicHostKey: KEY_B64,
      hostKeyFile: HK,
      nixSshOpts: `-o "ProxyJump=jump host" -v`,
      compress: true,
      verbose: true,
      remoteProgram: "/opt/nix/bin/nix-store --option x y",
      remoteStore: "/tmp/x y",
    });
    assert.deepEqual(r.args, [
      "nix@b1",
      "-x",
      "-o",
      "ProxyJump=jump host",
      "-v",
      "-i",
      "/etc/nix/id",
      `-oUserKnownHostsFile=${HK}`,
      "-C",
      "-p2200",
      ...TAIL,
      "-v",
      "--",
      "/opt/nix/bin/nix-store",
      "--option",
      "x",
      "y",
      "--serve",
      "--write",
      "--store",
      "/tmp/x y",
    ]);
    assert.equal(r.knownHostsContent, `b1 ${KEY_LINE}\n\n`, "bare host, no port");
  });
  it("IPv6 with and without brackets, with a port", () => {
    assert.equal(nixSshArgv({ version: v, storeUri: "ssh://[::1]:2222" }).args[0], "::1");
    assert.ok(nixSshArgv({ version: v, storeUri: "ssh://[::1]:2222" }).args.includes("-p2222"));
    assert.equal(nixSshArgv({ version: v, storeUri: "ssh://u@fe80::1" }).args[0], "u@fe80::1");
  });
  it("NIX_SSHOPTS is shell-split; bad quotes are an error", () => {
    const r = nixSshArgv({ version: v, storeUri: "ssh://h", nixSshOpts: `-o 'A=b c' -o "D=\\"e\\"" f\\ g` });
    assert.deepEqual(r.args.slice(2, 7), ["-o", "A=b c", "-o", 'D="e"', "f g"]);
    const bad = nixSshArgv({ version: v, storeUri: "ssh://h", nixSshOpts: `-o "A` });
    assert.equal(bad.error, `unterminated double quote\n… while splitting NIX_SSHOPTS '-o "A'`);
  });
  it("authority validation texts", () => {
    const e = (u: string) => nixSshArgv({ version: v, storeUri: u }).error;
    assert.equal(
      e("ssh://-oProxyCommand=x"),
      "invalid SSH authority: '-oProxyCommand=x': host name '-oProxyCommand=x' must not start with '-'",
    );
    assert.equal(e("ssh://-u@h"), "invalid SSH authority: '-u@h': user name '-u' must not start with '-'");
    assert.equal(e("ssh://@h"), "invalid SSH authority: '@h': user name must not be empty");
    assert.equal(e("ssh://u@"), "invalid SSH authority: 'u@': host name must not be empty");
  });
  it("relative ssh-key is rejected (≥ 2.34)", () => {
    assert.match(nixSshArgv({ version: v, storeUri: "ssh://h", sshKey: "id" }).error ?? "", /absolute/);
  });
  it("localhost execs the command directly; nix@localhost is real ssh (≥ 2.32)", () => {
    const r = nixSshArgv({ version: v, storeUri: "ssh://localhost", remoteStore: "/tmp/s" });
    assert.equal(r.program, "nix-store");
    assert.deepEqual(r.args, ["--serve", "--write", "--store", "/tmp/s"]);
    assert.equal(r.fakeSsh, true);
    assert.equal(r.expectStartedLine, false);
    assert.equal(nixSshArgv({ version: v, storeUri: "ssh://nix@localhost" }).program, "ssh");
  });
  it("intermediate versions: 2.12 drops -a; 2.15 adds the started line; 2.20 splits the command", () => {
    const a = nixSshArgv({ version: { major: 2, minor: 12, patch: 0 }, storeUri: "ssh://h" });
    assert.deepEqual(a.args, ["h", "-x", "nix-store --serve --write"]);
    const b = nixSshArgv({ version: { major: 2, minor: 15, patch: 0 }, storeUri: "ssh://h" });
    assert.deepEqual(b.args, ["h", "-x", ...TAIL, "nix-store --serve --write"]);
    const c = nixSshArgv({ version: { major: 2, minor: 20, patch: 0 }, storeUri: "ssh://h" });
    assert.deepEqual(c.args, ["h", "-x", ...TAIL, "--", "nix-store", "--serve", "--write"]);
  });
});

describe("probeSshArgv / probeSshEnv", () => {
  it("inserts BatchMode and ConnectTimeout right after the host, both versions", () => {
    const a = probeSshArgv(
      { version: NIX_2_8, storeUri: "ssh://h", nixSshOpts: "-oConnectTimeout=99" },
      { connectTimeoutSec: 5 },
    );
    assert.deepEqual(a.args, [
      "h",
      "-oBatchMode=yes",
      "-oConnectTimeout=5",
      "-x",
      "-a",
      "-oConnectTimeout=99",
      "nix-store --serve --write",
    ]);
    const b = probeSshArgv({ version: NIX_LATEST, storeUri: "ssh-ng://h" }, { noAgent: true });
    assert.deepEqual(b.args.slice(0, 5), [
      "h",
      "-oBatchMode=yes",
      "-oConnectTimeout=10",
      "-oIdentityAgent=none",
      "-x",
    ]);
  });
  it("leaves fake-ssh and errors alone", () => {
    assert.deepEqual(probeSshArgv({ version: NIX_2_8, storeUri: "ssh://localhost" }).args, [
      "-c",
      "nix-store --serve --write",
    ]);
    assert.ok(probeSshArgv({ version: NIX_2_8, storeUri: "ssh://-x" }).error);
  });
  it("env: no agent, no askpass, no display; SHELL for current Nix", () => {
    const base = {
      PATH: "/bin",
      SSH_AUTH_SOCK: "/tmp/agent",
      DISPLAY: ":0",
      SSH_ASKPASS: "x",
      HOME: "/root",
    };
    assert.deepEqual(probeSshEnv(base, nixSshArgv({ version: NIX_2_8, storeUri: "ssh://h" })), {
      PATH: "/bin",
      HOME: "/root",
    });
    assert.deepEqual(probeSshEnv(base, nixSshArgv({ version: NIX_LATEST, storeUri: "ssh://h" })), {
      PATH: "/bin",
      HOME: "/root",
      SHELL: "/bin/sh",
    });
  });
});

describe("helpers", () => {
  it("nixBase64Decode is lenient like Nix", () => {
    const ok = (s: string) => {
      const r = nixBase64Decode(s);
      assert.ok(r.ok);
      return r.bytes.toString("latin1");
    };
    assert.equal(ok("aGVsbG8="), "hello");
    assert.equal(ok("aGVs\nbG8"), "hello");
    assert.equal(ok("aGVsbG8=garbage!"), "hello", "stops at the first =");
    assert.equal(
      ok("SSH+HOST+PUBLIC+KEY+BASE64+ENCODED=="),
      Buffer.from("SSH+HOST+PUBLIC+KEY+BASE64+ENCODED", "base64").toString("latin1"),
    );
    assert.deepEqual(nixBase64Decode("a-b"), { ok: false, error: "invalid character in Base64 string: '-'" });
  });
  it("shellSplit / shellEscape", () => {
    assert.deepEqual(shellSplit(""), { ok: true, words: [] });
    assert.deepEqual(shellSplit(`a  ''  "b c"d`), { ok: true, words: ["a", "", "b cd"] });
    assert.deepEqual(shellSplit(`"a\\nb"`), { ok: true, words: ["a\\nb"] });
    assert.deepEqual(shellSplit(`'x`), { ok: false, error: "unterminated single quote" });
    assert.equal(shellEscape("a'b"), "'a'\\''b'");
  });
});
