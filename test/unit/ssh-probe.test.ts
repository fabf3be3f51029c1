/**
 * End to end against a real OpenSSH server on 127.0.0.1: Nix's argv (+ probe options), a pinned host
 * key in a private known_hosts file (never StrictHostKeyChecking=no), and the serve / worker
 * handshakes with the real Nix 2.8 on the other side. 2.8 has no ports in store URIs, so the port
 * goes through NIX_SSHOPTS exactly as a 2.8 user would do it.
 *
 * Needs root (sshd, login as root with a temp AuthorizedKeysFile) and /usr/sbin/sshd.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { NIX_2_8, NIX_LATEST } from "../../src/nix/version.js";
import { buildHookFailureText, probeStore } from "../../src/remote/probe.js";
import { MAX_CONTROL_PATH } from "../../src/remote/ssh-argv.js";
import { keygen, type LoopbackSshd, sshdSkipReason, startLoopbackSshd } from "../support/loopback-sshd.js";

const skip = sshdSkipReason();

const tmp = mkdtempSync(join(tmpdir(), "nb-ssh-"));
const store = join(tmp, "store");
let sshd: LoopbackSshd;
let port = 0;
let addedPath = "";
const missingPath = "/nix/store/00000000000000000000000000000000-missing";

let hostKey: { priv: string; pub: string };
let clientKey: { priv: string; pub: string };
let otherKey: { priv: string; pub: string };
const b64 = (s: string) => Buffer.from(s).toString("base64");

before(async () => {
  if (skip) return;
  hostKey = keygen(tmp, "hostkey");
  clientKey = keygen(tmp, "client");
  otherKey = keygen(tmp, "other");
  const env = { ...process.env, NIX_CONF_DIR: join(tmp, "conf"), NIX_USER_CONF_FILES: join(tmp, "none") };
  mkdirSync(join(tmp, "conf"));
  writeFileSync(join(tmp, "conf", "nix.conf"), "sandbox = false\n");
  writeFileSync(join(tmp, "payload"), "payload\n");
  addedPath = execFileSync("nix-store", ["--store", store, "--add", join(tmp, "payload")], {
    env,
    encoding: "utf8",
  }).trim();
  sshd = await startLoopbackSshd({ dir: tmp, hostKey: hostKey.priv, authorizedKeys: clientKey.pub });
  port = sshd.port;
});

after(async () => {
  await sshd?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

describe("probe over a real sshd on 127.0.0.1", { skip }, () => {
  const base = () => ({
    version: NIX_2_8,
    storeUri: "ssh://root@127.0.0.1",
    sshKey: clientKey.priv,
    base64PublicHostKey: b64(hostKey.pub),
    nixSshOpts: `-p ${port}`,
    remoteStore: store,
  });

  it("2.8 ssh://: pinned host key + serve handshake + QueryValidPaths", async () => {
    const r = await probeStore(base(), { queryValidPaths: [addedPath, missingPath], timeoutMs: 15_000 });
    assert.equal(r.ok, true, `${JSON.stringify(r.failure)}\n${r.stderr}`);
    assert.ok(r.serve?.ok);
    assert.equal(r.serve.serverVersion, "2.7");
    assert.deepEqual(r.validPaths, [addedPath]);
    assert.equal(r.argv[0], "ssh");
    assert.deepEqual(r.argv.slice(1, 6), [
      "root@127.0.0.1",
      "-oBatchMode=yes",
      "-oConnectTimeout=10",
      "-x",
      "-a",
    ]);
    assert.equal(r.argv.at(-1), `nix-store --serve --write --store '${store}'`);
    assert.ok(r.argv.some((a) => a.startsWith("-oUserKnownHostsFile=")));
    assert.ok(!r.argv.some((a) => /StrictHostKeyChecking/i.test(a)));
    assert.equal(r.ssh.knownHostsContent?.startsWith("127.0.0.1 ssh-ed25519 "), true);
    console.log(
      `# ssh serve probe: first byte ${r.timings.firstByteMs} ms, handshake ${r.timings.handshakeMs} ms`,
    );
  });

  it("2.8 ssh-ng://: worker handshake through ssh (nix-daemon --stdio)", async () => {
    const r = await probeStore(
      { ...base(), storeUri: "ssh-ng://root@127.0.0.1" },
      { queryValidPaths: [addedPath, missingPath] },
    );
    assert.equal(r.ok, true, `${JSON.stringify(r.failure)}\n${r.stderr}`);
    assert.ok(r.worker?.ok);
    assert.equal(r.worker.protocolVersion, "1.34");
    assert.equal(r.worker.daemonNixVersion, "2.8.0");
    assert.deepEqual(r.validPaths, [addedPath]);
    console.log(`# ssh worker probe: handshake ${r.timings.handshakeMs} ms`);
  });

  it("leaves no timer behind: the command can exit as soon as the probe returns", async () => {
    const timers = () => process.getActiveResourcesInfo().filter((x) => x === "Timeout").length;
    const before = timers();
    const r = await probeStore(base(), { queryValidPaths: [missingPath] });
    assert.equal(r.ok, true, `${JSON.stringify(r.failure)}\n${r.stderr}`);
    assert.equal(timers(), before);
  });

  it("controlPath + whileOpen: a second command runs over the probe's own connection", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nb-cm-"));
    try {
      const cm = join(dir, "cm");
      const accepted = () => sshd.log().split("Accepted publickey").length - 1;
      const before = accepted();
      let second: { code: number | null; out: string } | undefined;
      const r = await probeStore(base(), {
        ssh: { controlPath: cm },
        queryValidPaths: [missingPath],
        whileOpen: async () => {
          // The socket only exists while the probe's session is open.
          assert.ok(existsSync(cm));
          const c = spawn(
            "ssh",
            [
              "root@127.0.0.1",
              `-oControlPath=${cm}`,
              "-oControlMaster=no",
              "-oBatchMode=yes",
              "echo",
              "muxed",
            ],
            { stdio: ["ignore", "pipe", "pipe"] },
          );
          let out = "";
          c.stdout?.on("data", (b: Buffer) => {
            out += b.toString();
          });
          const code = await new Promise<number | null>((res) => c.on("close", res));
          second = { code, out };
        },
      });
      assert.equal(r.ok, true, `${JSON.stringify(r.failure)}\n${r.stderr}`);
      assert.ok(r.argv.includes("-oControlMaster=yes"));
      assert.ok(r.argv.includes(`-oControlPath=${cm}`));
      assert.ok(r.argv.includes("-oControlPersist=no"));
      assert.deepEqual(second, { code: 0, out: "muxed\n" });
      // One authentication for both commands: the second one did not open a connection of its own
      // (it has no key and no port: on its own it could not have logged in at all).
      await new Promise((res) => setTimeout(res, 100)); // sshd's log line may trail the session
      assert.equal(accepted() - before, 1);
      assert.equal(existsSync(cm), false, "ssh removes its control socket when the master exits");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it(`a control path of ${MAX_CONTROL_PATH} bytes works, one more makes ssh exit`, async () => {
    const base0 = join(tmp, "cp");
    const at = (len: number) => {
      const dir = `${base0}${"d".repeat(len - base0.length - 3)}`;
      mkdirSync(dir, { recursive: true });
      return join(dir, "cm");
    };
    const fits = at(MAX_CONTROL_PATH);
    assert.equal(Buffer.byteLength(fits), MAX_CONTROL_PATH);
    const r1 = await probeStore(base(), { ssh: { controlPath: fits } });
    assert.equal(r1.ok, true, `${JSON.stringify(r1.failure)}\n${r1.stderr}`);
    const r2 = await probeStore(base(), { ssh: { controlPath: at(MAX_CONTROL_PATH + 1) } });
    assert.equal(r2.ok, false);
    assert.match(r2.stderr, /too long for Unix domain socket/);
    assert.equal(r2.exitCode, 255);
  });

  it("a wrong pinned key fails with ssh's `Host key verification failed.`", async () => {
    const r = await probeStore({ ...base(), base64PublicHostKey: b64(otherKey.pub) });
    assert.equal(r.ok, false);
    assert.deepEqual(r.failure, { kind: "eof", nixMessage: "cannot connect to 'root@127.0.0.1'" });
    assert.match(r.stderr, /Host key verification failed\./);
    assert.equal(r.exitCode, 255);
    assert.equal(
      buildHookFailureText("ssh://root@127.0.0.1", r.failure.nixMessage, "Host key verification failed.\n"),
      "cannot build on 'ssh://root@127.0.0.1': error: cannot connect to 'root@127.0.0.1': Host key verification failed.",
    );
  });

  it("an unauthorised client key fails fast (BatchMode), no hang", async () => {
    const r = await probeStore({ ...base(), sshKey: otherKey.priv }, { timeoutMs: 15_000 });
    assert.equal(r.failure?.kind, "eof");
    assert.match(r.stderr, /Permission denied \(publickey\)/);
    assert.ok(r.timings.totalMs < 10_000);
  });

  it("current-Nix argv (`--`, words, -oLocalCommand=echo started) works against the same sshd", async () => {
    const r = await probeStore({
      ...base(),
      version: NIX_LATEST,
      storeUri: `ssh://root@127.0.0.1:${port}`,
      nixSshOpts: "",
    });
    assert.equal(r.ok, true, `${JSON.stringify(r.failure)}\n${r.stderr}`);
    assert.ok(r.argv.includes(`-p${port}`));
    assert.ok(r.argv.includes("--"));
    assert.equal(r.ssh.expectStartedLine, true);
    assert.equal(r.ssh.knownHostsContent?.startsWith("127.0.0.1 ssh-ed25519 "), true, "bare host, no port");
  });
});
