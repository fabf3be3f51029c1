/**
 * The serve and worker protocols against the real Nix 2.8 binaries: `nix-store --serve --write`,
 * `nix-daemon --stdio` and a throwaway `nix-daemon` on a temp socket, all on a chroot store under
 * a temp dir. Plus misbehaving peers (a banner, EOF, a hang). No mocks.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { probe } from "../../src/remote/probe.js";
import { serveHandshake } from "../../src/remote/serve.js";
import { connectDaemon, DaemonError, workerHandshake } from "../../src/remote/worker.js";

function hasNix(): boolean {
  try {
    execFileSync("nix-store", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const skip = hasNix() ? false : "nix-store (Nix 2.8) is not installed";

const tmp = mkdtempSync(join(tmpdir(), "nb-proto-"));
const root = join(tmp, "root");
const confDir = join(tmp, "conf");
const env: NodeJS.ProcessEnv = {
  ...process.env,
  NIX_CONF_DIR: confDir,
  NIX_USER_CONF_FILES: join(confDir, "none"),
  NIX_REMOTE: "",
};
const added: string[] = [];
/** Valid-looking store paths that do not exist in the chroot store. */
const missing = [
  "/nix/store/00000000000000000000000000000000-missing",
  "/nix/store/1111111111111111111111111111111a-x",
];

function addPath(name: string, content: string): string {
  const f = join(tmp, name);
  writeFileSync(f, content);
  return execFileSync("nix-store", ["--store", root, "--add", f], { env, encoding: "utf8" }).trim();
}

before(() => {
  if (skip) return;
  mkdirSync(confDir, { recursive: true });
  writeFileSync(join(confDir, "nix.conf"), "sandbox = false\n");
  added.push(addPath("a", "alpha\n"), addPath("b", "beta\n"));
});

after(() => {
  rmSync(tmp, { recursive: true, force: true });
});

describe("serve protocol (nix-store --serve --write)", { skip }, () => {
  it("handshakes with the real 2.8 server: version 2.7", async () => {
    const r = await probe({
      program: "nix-store",
      args: ["--serve", "--write", "--store", root],
      env,
      protocol: "serve",
      host: "localhost",
      storeUri: "ssh://localhost",
      timeoutMs: 10_000,
    });
    assert.equal(r.ok, true, JSON.stringify(r.failure));
    assert.ok(r.serve?.ok);
    assert.equal(r.serve.serverVersion, "2.7");
    assert.equal(r.serve.serverVersionNumber, 0x207);
    assert.equal(r.exitCode, 0, "closing stdin makes the server exit 0");
    assert.equal(r.killed, false);
    assert.ok(r.timings.handshakeMs !== null && r.timings.firstByteMs !== null);
  });

  it("QueryValidPaths returns exactly the added paths", async () => {
    const r = await probe({
      program: "nix-store",
      args: ["--serve", "--write", "--store", root],
      env,
      protocol: "serve",
      host: "localhost",
      storeUri: "ssh://localhost",
      queryValidPaths: [...added, ...missing],
    });
    assert.equal(r.ok, true, JSON.stringify(r.failure));
    assert.deepEqual([...(r.validPaths ?? [])].sort(), [...added].sort());
  });

  it("a banner on stdout gives Nix's mismatch text with the bytes seen", async () => {
    const r = await probe({
      program: "sh",
      args: ["-c", "echo banner; cat"],
      protocol: "serve",
      host: "nix@myhost",
      storeUri: "ssh://nix@myhost",
      timeoutMs: 5000,
    });
    assert.equal(r.failure?.kind, "garbage");
    // `cat` echoes our greeting back after the banner; Nix shows all of it, as do we.
    assert.match(
      r.failure.nixMessage,
      /^'nix-store --serve' protocol mismatch from 'nix@myhost', got 'banner\n/,
    );
    assert.ok(r.serve && !r.serve.ok && r.serve.bytesSeen.subarray(0, 7).toString() === "banner\n");
  });

  it("a text-only banner then EOF: exact text", async () => {
    const r = await probe({
      program: "sh",
      args: ["-c", "echo 'Welcome to myhost!'; echo 'second line'"],
      protocol: "serve",
      host: "nix@myhost",
      storeUri: "ssh://nix@myhost",
      timeoutMs: 5000,
    });
    assert.deepEqual(r.failure, {
      kind: "garbage",
      nixMessage:
        "'nix-store --serve' protocol mismatch from 'nix@myhost', got 'Welcome to myhost!\nsecond line'",
    });
  });

  it("a short banner then EOF is `cannot connect to` (EOF before 8 bytes)", async () => {
    const r = await probe({
      program: "printf",
      args: ["hi"],
      protocol: "serve",
      host: "h1",
      storeUri: "ssh://h1",
    });
    assert.deepEqual(r.failure, { kind: "eof", nixMessage: "cannot connect to 'h1'" });
  });

  it("EOF (`true`) gives `cannot connect to '<host>'`", async () => {
    const r = await probe({
      program: "true",
      args: [],
      protocol: "serve",
      host: "nix@h1",
      storeUri: "ssh://nix@h1",
    });
    assert.deepEqual(r.failure, { kind: "eof", nixMessage: "cannot connect to 'nix@h1'" });
  });

  it("a small wrong magic is a plain protocol mismatch; a wrong major is unsupported", async () => {
    const wrongMagic = await probe({
      program: "printf",
      args: ["\\001\\000\\000\\000\\000\\000\\000\\000\\007\\002\\000\\000\\000\\000\\000\\000"],
      protocol: "serve",
      host: "h",
      storeUri: "ssh://h",
    });
    assert.deepEqual(wrongMagic.failure, {
      kind: "bad-magic",
      nixMessage: "'nix-store --serve' protocol mismatch from 'h'",
    });
    const wrongMajor = await probe({
      program: "printf",
      args: ["\\313\\356\\122\\124\\000\\000\\000\\000\\007\\003\\000\\000\\000\\000\\000\\000"],
      protocol: "serve",
      host: "h",
      storeUri: "ssh://h",
    });
    assert.deepEqual(wrongMajor.failure, {
      kind: "bad-version",
      nixMessage: "unsupported 'nix-store --serve' protocol version on 'h'",
    });
  });

  it("a hanging peer (`sleep 30`) times out within the deadline and is killed", async () => {
    const t = Date.now();
    const r = await probe({
      program: "sleep",
      args: ["30"],
      protocol: "serve",
      host: "h",
      storeUri: "ssh://h",
      timeoutMs: 800,
    });
    const took = Date.now() - t;
    assert.equal(r.failure?.kind, "timeout");
    assert.equal(r.killed, true);
    assert.equal(r.signal, "SIGKILL");
    assert.ok(took < 3000, `took ${took} ms`);
  });

  it("a missing program is a spawn failure", async () => {
    const r = await probe({
      program: "/nonexistent/ssh",
      args: [],
      protocol: "serve",
      host: "h",
      storeUri: "ssh://h",
    });
    assert.equal(r.failure?.kind, "spawn");
    assert.equal(r.failure.nixMessage, "unable to execute '/nonexistent/ssh': No such file or directory");
  });

  it("stderr is collected as evidence (bounded)", async () => {
    const r = await probe({
      program: "sh",
      args: [
        "-c",
        "echo 'ssh: connect to host fake port 22: Connection refused' >&2; head -c 100000 /dev/zero >&2",
      ],
      protocol: "serve",
      host: "fake",
      storeUri: "ssh://fake",
      stderrLimit: 1000,
    });
    assert.equal(r.failure?.kind, "eof");
    assert.match(r.stderr, /^ssh: connect to host fake port 22: Connection refused\n/);
    assert.equal(r.stderr.length, 1000);
    assert.equal(r.stderrTruncated, true);
  });

  it("serveHandshake works over raw streams (client-side API)", async () => {
    const child = spawn("nix-store", ["--serve", "--write", "--store", root], {
      env,
      stdio: ["pipe", "pipe", "inherit"],
    });
    try {
      const { result, connection } = await serveHandshake(
        { input: child.stdout, output: child.stdin },
        { host: "localhost" },
      );
      assert.ok(result.ok && connection);
      assert.deepEqual(await connection.queryValidPaths([missing[0]!]), []);
      assert.deepEqual(await connection.queryValidPaths([added[0]!]), [added[0]]);
      connection.close();
      const code = await new Promise((r) => child.once("exit", r));
      assert.equal(code, 0);
    } finally {
      child.kill("SIGKILL");
    }
  });
});

describe("worker protocol over `nix-daemon --stdio`", { skip }, () => {
  it("handshakes: protocol 1.34, version string 2.8.0, no trust flag, LAST right away", async () => {
    const r = await probe({
      program: "nix-daemon",
      args: ["--stdio", "--store", root],
      env,
      protocol: "worker",
      host: "localhost",
      storeUri: "ssh-ng://localhost",
      queryValidPaths: [...added, ...missing],
    });
    assert.equal(r.ok, true, JSON.stringify(r.failure));
    assert.ok(r.worker?.ok);
    assert.equal(r.worker.protocolVersion, "1.34");
    assert.equal(r.worker.daemonNixVersion, "2.8.0");
    assert.equal(r.worker.trusted, null);
    assert.deepEqual(r.worker.messages, []);
    assert.deepEqual([...(r.validPaths ?? [])].sort(), [...added].sort());
    assert.equal(r.exitCode, 0);
  });

  it("garbage → `protocol mismatch, got '…'` wrapped as 2.8 wraps it", async () => {
    const r = await probe({
      program: "sh",
      args: ["-c", "echo 'Last login: yesterday'"],
      protocol: "worker",
      host: "other",
      storeUri: "ssh-ng://other",
    });
    assert.deepEqual(r.failure, {
      kind: "garbage",
      nixMessage:
        "cannot open connection to remote store 'ssh-ng://other': error: protocol mismatch, got 'Last login: yesterday'",
    });
  });

  it("EOF → `unexpected end-of-file`", async () => {
    const r = await probe({
      program: "true",
      args: [],
      protocol: "worker",
      host: "other",
      storeUri: "ssh-ng://other",
    });
    assert.deepEqual(r.failure, {
      kind: "eof",
      nixMessage: "cannot open connection to remote store 'ssh-ng://other': error: unexpected end-of-file",
    });
  });

  it("a hang times out", async () => {
    const r = await probe({
      program: "sleep",
      args: ["30"],
      protocol: "worker",
      host: "h",
      storeUri: "ssh-ng://h",
      timeoutMs: 500,
    });
    assert.equal(r.failure?.kind, "timeout");
    assert.equal(r.killed, true);
  });
});

describe("worker protocol over a unix socket to a throwaway nix-daemon", { skip }, () => {
  const sock = join(tmp, "daemon.sock");
  let daemon: ChildProcess | undefined;
  let daemonLog = "";

  before(async () => {
    daemon = spawn("nix-daemon", ["--store", root], {
      env: { ...env, NIX_DAEMON_SOCKET_PATH: sock },
      stdio: ["ignore", "pipe", "pipe"],
    });
    daemon.stderr?.on("data", (b: Buffer) => {
      daemonLog += b.toString();
    });
    for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(existsSync(sock), `daemon socket did not appear: ${daemonLog}`);
  });

  after(async () => {
    if (daemon && daemon.exitCode === null) {
      const gone = new Promise((r) => daemon?.once("exit", r));
      daemon.kill("SIGTERM");
      await Promise.race([gone, new Promise((r) => setTimeout(r, 2000))]);
      if (daemon.exitCode === null) daemon.kill("SIGKILL");
    }
  });

  it("handshake, then ops WITHOUT SetOptions: isValidPath, queryValidPaths, queryPathInfo", async () => {
    const { result, connection } = await connectDaemon({ socketPath: sock });
    assert.ok(result.ok && connection, JSON.stringify(result));
    try {
      assert.equal(result.protocolVersion, "1.34");
      assert.equal(result.daemonNixVersion, "2.8.0");
      assert.equal(await connection.isValidPath(added[0]!), true);
      assert.equal(await connection.isValidPath(missing[0]!), false);
      const valid = await connection.queryValidPaths([...added, ...missing]);
      assert.deepEqual([...valid].sort(), [...added].sort());
      const info = await connection.queryPathInfo(added[0]!);
      assert.ok(info);
      assert.equal(info.path, added[0]);
      assert.match(info.narHash, /^[0-9a-f]{64}$/);
      assert.deepEqual(info.references, []);
      assert.ok(info.narSize > 0);
      assert.equal(typeof info.ultimate, "boolean");
      assert.match(info.ca, /^fixed:r:sha256:/);
      assert.equal(await connection.queryPathInfo(missing[0]!), null);
      // SetOptions also works, and ops keep working after it.
      await connection.setOptions({ maxBuildJobs: 0 });
      assert.equal(await connection.isValidPath(added[1]!), true);
    } finally {
      connection.close();
    }
    await new Promise((r) => setTimeout(r, 100));
    assert.match(daemonLog, /accepted connection from pid \d+, user root \(trusted\)/);
  });

  it("a daemon-side error is decoded (2.8 structured error) and ends the connection", async () => {
    const { result, connection } = await connectDaemon({ socketPath: sock, storeUri: "daemon" });
    assert.ok(result.ok && connection);
    try {
      await assert.rejects(connection.queryValidPaths(["/not/a/store/path"]), (e: unknown) => {
        assert.ok(e instanceof DaemonError);
        assert.equal(
          e.info.message.replace(/\x1b\[[0-9;]*m/g, ""),
          "path '/not/a/store/path' is not in the Nix store",
        );
        assert.equal(e.info.level, 0);
        return true;
      });
      // The 2.8 daemon closes the connection after an error raised while reading the request.
      await assert.rejects(connection.isValidPath(added[0]!));
    } finally {
      connection.close();
    }
  });

  it("queryValidPaths with 20,000 paths is one round trip", async () => {
    const { result, connection } = await connectDaemon({ socketPath: sock });
    assert.ok(result.ok && connection);
    try {
      const alphabet = "0123456789abcdfghijklmnpqrsvwxyz";
      const paths: string[] = [];
      for (let i = 0; i < 20_000; i++) {
        let h = "";
        let n = i;
        for (let j = 0; j < 32; j++) {
          h += alphabet[(n + j * 7) % 32];
          n = Math.floor(n / 3);
        }
        paths.push(`/nix/store/${h}-out-${i}`);
      }
      paths.push(...added);
      const t = performance.now();
      const valid = await connection.queryValidPaths(paths);
      const ms = performance.now() - t;
      assert.deepEqual([...valid].sort(), [...added].sort());
      console.log(`# queryValidPaths(${paths.length} paths) over unix socket: ${ms.toFixed(1)} ms`);
      assert.ok(ms < 10_000);
    } finally {
      connection.close();
    }
  });

  it("a missing socket gives 2.8's connect text", async () => {
    const r = await connectDaemon({ socketPath: join(tmp, "nope.sock") });
    assert.equal(r.result.ok, false);
    assert.ok(!r.result.ok);
    assert.equal(r.result.kind, "connect");
    assert.equal(
      r.result.nixMessage,
      `cannot connect to socket at '${join(tmp, "nope.sock")}': No such file or directory`,
    );
  });

  it("workerHandshake announcing 1.35+ to a 1.34 daemon negotiates down to 1.34", async () => {
    const { createConnection } = await import("node:net");
    const s = createConnection(sock);
    await new Promise((r) => s.once("connect", r));
    try {
      const { result, connection } = await workerHandshake(
        { input: s, output: s },
        { storeUri: "daemon", clientVersion: 0x126 },
      );
      assert.ok(result.ok && connection);
      assert.equal(result.negotiated, 0x122);
      assert.equal(result.trusted, null, "1.34 sends no trust flag");
      assert.equal(await connection.isValidPath(added[0]!), true);
      connection.close();
    } finally {
      s.destroy();
    }
  });
});
