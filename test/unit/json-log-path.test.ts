/**
 * `json-log-path` (new in 2.30) against the real Nix 2.30 binary: where the records go and what Nix does
 * when the reader misbehaves. Findings are written up in docs/json-log.md.
 *
 * Writers: `nix eval` (the new CLI applies the setting after parsing its arguments) printing N trace
 * lines, and a throwaway `nix-daemon`, which applies it once per client connection.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { joinEvents } from "../../src/app/builds-store.js";
import { readSpoolEvents } from "../../src/app/hook-spool.js";
import { type JsonLogEvent, listenJsonLog } from "../../src/host/json-log.js";
import { connectDaemon } from "../../src/remote/worker.js";
import { WRAPPER } from "../support/hook-scenario.js";
import { startJsonLogReader } from "../support/json-log-reader.js";
import { NIX230 } from "../support/nix-versions.js";

interface Run {
  code: number | null;
  killed: boolean;
  stderr: string;
}

describe("json-log-path on real Nix 2.30", { skip: NIX230.skipReason }, () => {
  let dir = "";
  let conf = "";
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "nb-jlog-"));
    conf = join(dir, "conf");
    mkdirSync(conf);
    writeFileSync(join(conf, "nix.conf"), "build-users-group =\n");
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const env = (logPath: string): NodeJS.ProcessEnv => ({
    PATH: process.env["PATH"],
    HOME: dir,
    NIX_CONF_DIR: conf,
    NIX_USER_CONF_FILES: "",
    NIX_CONFIG: `json-log-path = ${logPath}`,
  });
  const traces = (n: number) =>
    `builtins.foldl' (a: i: builtins.trace "line \${toString i} ${"x".repeat(100)}" a) 0 (builtins.genList (x: x) ${n})`;

  function run(argv: string[], logPath: string, timeoutMs = 20_000): Promise<Run> {
    return new Promise((resolve) => {
      const c = spawn(argv[0]!, argv.slice(1), { env: env(logPath), stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      c.stderr!.on("data", (b: Buffer) => {
        stderr += b.toString();
      });
      let killed = false;
      const t = setTimeout(() => {
        killed = true;
        c.kill("SIGKILL");
      }, timeoutMs);
      c.on("close", (code) => {
        clearTimeout(t);
        resolve({ code, killed, stderr });
      });
    });
  }
  const nixEval = (n: number) => [
    NIX230.nix,
    "--extra-experimental-features",
    "nix-command",
    "eval",
    "--expr",
    traces(n),
  ];

  test("a reader on the socket gets one JSON record per line, without the `@nix ` prefix", async () => {
    const r = await startJsonLogReader(join(dir, "good.sock"), "read");
    try {
      const out = await run(nixEval(3), r.path);
      assert.equal(out.code, 0, out.stderr);
      await new Promise((x) => setTimeout(x, 200));
      assert.equal(r.connections, 1);
      const msgs = r.lines.filter((l) => l["action"] === "msg").map((l) => String(l["msg"]));
      assert.deepEqual(
        msgs.filter((m) => m.startsWith("trace:")).map((m) => m.slice(0, 13)),
        ["trace: line 0", "trace: line 1", "trace: line 2"],
      );
      assert.ok(r.lines.every((l) => !("unparsed" in l)));
    } finally {
      await r.close();
    }
  });

  test("a path with nothing there: Nix creates a regular file (0644) and appends to it, silently", async () => {
    const p = join(dir, "missing.sock");
    const out = await run(nixEval(2), p);
    assert.equal(out.code, 0);
    assert.ok(lstatSync(p).isFile(), "a regular file, not a socket");
    assert.equal(lstatSync(p).mode & 0o777, 0o644 & ~process.umask());
    assert.doesNotMatch(out.stderr, /json|log/i);
    // a reader that starts later cannot bind there
    await assert.rejects(startJsonLogReader(p, "read"), /EADDRINUSE/);
  });

  test("an existing regular file is appended to", async () => {
    const p = join(dir, "file.json");
    writeFileSync(p, "old\n");
    const out = await run(nixEval(1), p);
    assert.equal(out.code, 0);
    const lines = readFileSync(p, "utf8").split("\n");
    assert.equal(lines[0], "old");
    assert.ok(lines.slice(1).some((l) => l.includes('"trace: line 0')));
  });

  test("a socket nobody listens on: `error (ignored): … Connection refused`, and no JSON log", async () => {
    const p = join(dir, "stale.sock");
    // a listener that dies without removing its socket file
    const child = spawn(
      process.execPath,
      ["-e", `require("net").createServer().listen(${JSON.stringify(p)}, () => console.log("up"))`],
      {
        stdio: ["ignore", "pipe", "ignore"],
      },
    );
    await new Promise((x) => child.stdout!.once("data", x));
    child.kill("SIGKILL");
    await new Promise((x) => child.once("exit", x));
    const out = await run(nixEval(1), p);
    assert.equal(out.code, 0, "the command itself goes on");
    assert.match(
      out.stderr,
      new RegExp(`error \\(ignored\\): error: cannot connect to socket at '${p}': Connection refused`),
    );
    assert.ok(lstatSync(p).isSocket());
  });

  test("a reader that closes: `Broken pipe`, then `disabling JSON logger due to write errors`; Nix goes on", async () => {
    const r = await startJsonLogReader(join(dir, "dead.sock"), "close");
    try {
      const out = await run(nixEval(2000), r.path);
      assert.equal(out.code, 0);
      assert.match(out.stderr, /error \(ignored\): error: writing to file: Broken pipe/);
      assert.equal(out.stderr.match(/warning: disabling JSON logger due to write errors/g)?.length, 1);
    } finally {
      await r.close();
    }
  });

  test("a reader that never reads: Nix blocks once the socket buffer is full (it does not drop records)", async () => {
    const r = await startJsonLogReader(join(dir, "stall.sock"), "stall");
    try {
      const small = await run(nixEval(10), r.path, 20_000);
      assert.equal(small.code, 0, "a few records fit in the buffer");
      const big = await run(nixEval(50_000), r.path, 6000);
      assert.equal(big.killed, true, "5 MB of records: Nix is still blocked in write() when we stop it");
    } finally {
      await r.close();
    }
  });

  test("legacy commands (nix-instantiate, nix-build, nix-store) ignore it", async () => {
    const r = await startJsonLogReader(join(dir, "legacy.sock"), "read");
    try {
      const out = await run([join(NIX230.bin, "nix-instantiate"), "--eval", "-E", traces(2)], r.path);
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stderr, /trace: line 1/);
      await new Promise((x) => setTimeout(x, 200));
      assert.equal(r.connections, 0);
    } finally {
      await r.close();
    }
  });

  test("the daemon opens it once per client connection (its own setting, before the client's options)", async () => {
    const r = await startJsonLogReader(join(dir, "daemon-log.sock"), "read");
    const sock = join(dir, "daemon.sock");
    let daemon: ChildProcess | undefined;
    try {
      daemon = spawn(join(NIX230.bin, "nix-daemon"), ["--store", join(dir, "store")], {
        env: { ...env(r.path), NIX_DAEMON_SOCKET_PATH: sock },
        stdio: ["ignore", "ignore", "ignore"],
      });
      for (let i = 0; i < 200 && !existsSync(sock); i++) await new Promise((x) => setTimeout(x, 50));
      for (let k = 0; k < 2; k++) {
        const { result, connection } = await connectDaemon({ socketPath: sock });
        assert.ok(result.ok && connection);
        await connection.isValidPath("/nix/store/00000000000000000000000000000000-x");
        connection.close();
      }
      await new Promise((x) => setTimeout(x, 300));
      assert.equal(r.connections, 2);
    } finally {
      daemon?.kill("SIGKILL");
      await r.close();
    }
  });

  test("a real 2.30 daemon with the wrapper: the reader and the wrapper's spool name the same builders", async () => {
    // A throwaway daemon on a chroot store, max-jobs 0, two machines: one unreachable, one chroot store.
    // Its own environment gives it json-log-path (the reader's socket) and the wrapper as build-hook:
    // from 2.25 a build-hook in the system nix.conf is replaced at start-up, NIX_CONFIG is not.
    const d = join(dir, "d230");
    const dconf = join(d, "conf");
    mkdirSync(dconf, { recursive: true });
    for (const x of ["b1", "bb"]) mkdirSync(join(d, x));
    copyFileSync("/bin/busybox", join(d, "bb", "busybox"));
    const b1 = join(d, "b1");
    writeFileSync(
      join(dconf, "nix.conf"),
      [
        "sandbox = false",
        "filter-syscalls = false",
        "build-users-group =",
        "substituters =",
        "max-jobs = 0",
        "fsync-metadata = false",
        `builders = ssh://bad.invalid x86_64-linux - 1 1 ; ${b1} x86_64-linux - 1 1`,
        "",
      ].join("\n"),
    );
    const events: JsonLogEvent[] = [];
    const reader = await listenJsonLog(join(d, "log.sock"), (e) => events.push(e));
    const sock = join(d, "daemon.sock");
    const spool = join(d, "spool");
    const base = { PATH: process.env["PATH"], HOME: d, NIX_CONF_DIR: dconf, NIX_USER_CONF_FILES: "" };
    let daemon: ChildProcess | undefined;
    try {
      daemon = spawn(join(NIX230.bin, "nix-daemon"), ["--store", join(d, "store")], {
        env: {
          ...base,
          NIX_CONFIG: `json-log-path = ${join(d, "log.sock")}\nbuild-hook = ${WRAPPER} ${NIX230.nix} __build-remote`,
          NIX_DAEMON_SOCKET_PATH: sock,
          NIX_BUILDERS_HOOK_SPOOL: spool,
          NIX_BUILDERS_HOOK_COLLECT_EVERY: "0",
        },
        stdio: ["ignore", "ignore", "ignore"],
      });
      for (let i = 0; i < 200 && !existsSync(sock); i++) await new Promise((x) => setTimeout(x, 50));
      // The client runs asynchronously: a reader that stops reading would stop the daemon.
      const client = (argv: string[]) =>
        new Promise<{ code: number | null; out: string; err: string }>((res) => {
          const c = spawn(join(NIX230.bin, argv[0]!), argv.slice(1), {
            env: { ...base, NIX_REMOTE: `unix://${sock}` },
            stdio: ["ignore", "pipe", "pipe"],
          });
          let out = "";
          let err = "";
          c.stdout!.on("data", (b: Buffer) => {
            out += b.toString();
          });
          c.stderr!.on("data", (b: Buffer) => {
            err += b.toString();
          });
          const t = setTimeout(() => c.kill("SIGKILL"), 60_000);
          c.on("close", (code) => {
            clearTimeout(t);
            res({ code, out, err });
          });
        });
      const bb = (await client(["nix-store", "--add", join(d, "bb")])).out.trim();
      const drv = (name: string, cmd: string) =>
        `(derivation { name = "${name}"; system = "x86_64-linux"; builder = "\${bb}/busybox"; args = [ "sh" "-c" ${JSON.stringify(cmd)} ]; })`;
      const expr = `let bb = builtins.storePath "${bb}"; in [ ${drv("j1", "echo j1 > $out")} ${drv("j2", "exit 3")} ]`;
      const r = await client(["nix-build", "--no-out-link", "--keep-going", "-E", expr]);
      assert.notEqual(r.code, 0, "j2 fails");
      const on = new Map<string, string>();
      for (const m of r.err.matchAll(/building '([^']+)' on '([^']+)'/g)) on.set(m[1]!, m[2]!);
      assert.equal(on.size, 2, r.err);
      // The records arrive a moment after the client's answer (and the tees end after the hooks).
      const ended = () =>
        joinEvents(readSpoolEvents(spool)).filter((x) => x.reply === "accept" && x.result !== "in-progress")
          .length;
      for (let i = 0; i < 100; i++) {
        if (events.filter((e) => e.kind === "build-stop").length >= 4 && ended() >= 2) break;
        await new Promise((x) => setTimeout(x, 100));
      }

      // The reader: activity 105 with the machine for both, as the client's lines say, and both
      // `cannot build on` messages the hook printed (relayed by the daemon's worker).
      const remoteStarts = events.filter((e) => e.kind === "build-start" && e.machine !== "");
      assert.deepEqual(
        new Map(
          remoteStarts.map((e) => [
            e.kind === "build-start" ? e.drv : "",
            e.kind === "build-start" ? e.machine : "",
          ]),
        ),
        on,
      );
      assert.equal(on.get([...on.keys()][0]!), `local://${b1}`, "2.30 renders the machine's store URI");
      const cannot = events.filter((e) => e.kind === "cannot-build");
      assert.equal(cannot.length, 2);
      assert.ok(cannot.every((e) => e.kind === "cannot-build" && e.machine === "ssh://bad.invalid"));
      assert.equal(events.filter((e) => e.kind === "build-stop" && e.machine !== "").length, 2);
      assert.ok(
        events.some((e) => e.kind === "error" && /exit code 3/.test(e.text)),
        "j2's failure",
      );
      // The machine's own build, relayed from the hook (a local-store machine builds in the hook's
      // process): activity 105 again, with machine "" although nothing was built on this machine.
      assert.equal(events.filter((e) => e.kind === "build-start" && e.machine === "").length, 2);

      // The wrapper's spool, for the same builds: the same derivations and machines, and what the
      // reader cannot give without joining records: the result per derivation and the system.
      const recs = joinEvents(readSpoolEvents(spool)).filter((x) => x.reply === "accept");
      assert.deepEqual(new Map(recs.map((x) => [x.drv, x.machine])), on);
      for (const x of recs) {
        assert.equal(x.system, "x86_64-linux");
        assert.deepEqual(
          x.cannotBuild.map((c) => c.machine),
          ["ssh://bad.invalid"],
        );
        assert.equal(x.result, /-j2\.drv$/.test(x.drv) ? "failure" : "success", x.drv);
      }
    } finally {
      daemon?.kill("SIGKILL");
      await reader.close();
    }
  });
});
