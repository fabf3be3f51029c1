/**
 * The serve and worker handshakes against both real Nix releases the tests run (2.8 and 2.30), through
 * the same code the doctor uses (`probe`, `connectDaemon`): `nix-store --serve --write`,
 * `nix-daemon --stdio`, and a throwaway daemon on a socket, each on a chroot store. What each release
 * answers is written down here (protocol versions, the daemon's Nix version, the trust flag).
 * `protocols.test.ts` covers 2.8 and misbehaving peers in depth.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { probe } from "../../src/remote/probe.js";
import { connectDaemon } from "../../src/remote/worker.js";
import { REAL_NIXES, type RealNix } from "../support/nix-versions.js";

const EXPECT: Record<string, { worker: string; serve: string; version: string }> = {
  "2.8": { worker: "1.34", serve: "2.7", version: "2.8.0" },
  "2.30": { worker: "1.38", serve: "2.7", version: "2.30.5" },
};

function describeProto(n: RealNix): void {
  describe(`serve and worker handshakes: real Nix ${n.label}`, { skip: n.skipReason }, () => {
    const want = EXPECT[n.label]!;
    let tmp = "";
    let root = "";
    let env: NodeJS.ProcessEnv = {};
    let added = "";
    let daemon: ChildProcess | undefined;
    let sock = "";

    before(async () => {
      tmp = mkdtempSync(join(tmpdir(), "nb-protov-"));
      root = join(tmp, "root");
      const conf = join(tmp, "conf");
      mkdirSync(conf);
      writeFileSync(join(conf, "nix.conf"), "sandbox = false\nbuild-users-group =\n");
      env = { ...process.env, NIX_CONF_DIR: conf, NIX_USER_CONF_FILES: join(conf, "none"), NIX_REMOTE: "" };
      writeFileSync(join(tmp, "a"), "alpha\n");
      added = execFileSync(join(n.bin, "nix-store"), ["--store", root, "--add", join(tmp, "a")], {
        env,
        encoding: "utf8",
        timeout: 30_000,
      }).trim();
      sock = join(tmp, "daemon.sock");
      daemon = spawn(join(n.bin, "nix-daemon"), ["--store", root], {
        env: { ...env, NIX_DAEMON_SOCKET_PATH: sock },
        stdio: ["ignore", "ignore", "ignore"],
      });
      for (let i = 0; i < 200 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
    });
    after(async () => {
      if (daemon && daemon.exitCode === null) {
        const gone = new Promise((r) => daemon!.once("exit", r));
        daemon.kill("SIGTERM");
        await Promise.race([gone, new Promise((r) => setTimeout(r, 3000))]);
        if (daemon.exitCode === null) daemon.kill("SIGKILL");
      }
      if (tmp) rmSync(tmp, { recursive: true, force: true });
    });

    it(`nix-store --serve --write: serve protocol ${want.serve}, QueryValidPaths`, async () => {
      const r = await probe({
        program: join(n.bin, "nix-store"),
        args: ["--serve", "--write", "--store", root],
        env,
        protocol: "serve",
        host: "localhost",
        storeUri: "ssh://localhost",
        queryValidPaths: [added, "/nix/store/00000000000000000000000000000000-missing"],
        timeoutMs: 15_000,
      });
      assert.equal(r.ok, true, JSON.stringify(r.failure));
      assert.ok(r.serve?.ok);
      assert.equal(r.serve.serverVersion, want.serve);
      assert.deepEqual(r.validPaths, [added]);
      assert.equal(r.exitCode, 0);
    });

    it(`nix-daemon --stdio: worker protocol ${want.worker}, Nix ${want.version}`, async () => {
      const r = await probe({
        program: join(n.bin, "nix-daemon"),
        args: ["--stdio", "--store", root],
        env,
        protocol: "worker",
        host: "localhost",
        storeUri: "ssh-ng://localhost",
        queryValidPaths: [added],
        timeoutMs: 15_000,
      });
      assert.equal(r.ok, true, JSON.stringify(r.failure));
      assert.ok(r.worker?.ok);
      assert.equal(r.worker.protocolVersion, want.worker);
      assert.equal(r.worker.daemonNixVersion, want.version);
      assert.deepEqual(r.validPaths, [added]);
    });

    it("unix socket, our client at protocol 1.38: negotiated version, trust flag, features", async () => {
      const { result, connection } = await connectDaemon({ socketPath: sock, clientVersion: 0x126 });
      assert.ok(result.ok && connection, JSON.stringify(result));
      try {
        assert.equal(result.protocolVersion, want.worker);
        assert.equal(result.daemonNixVersion, want.version);
        // 1.35+ sends the trust flag (root is trusted by default); 2.8 stops at 1.34
        assert.equal(result.trusted, n.label === "2.8" ? null : "trusted");
        assert.deepEqual(result.features, []);
        assert.equal(await connection.isValidPath(added), true);
        const info = await connection.queryPathInfo(added);
        assert.equal(info?.path, added);
      } finally {
        connection.close();
      }
    });
  });
}

for (const n of REAL_NIXES) describeProto(n);
