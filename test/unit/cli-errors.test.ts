/**
 * Exit codes and error reports of the real command line (`node --import tsx src/cli.ts`, a subprocess):
 *
 *  - a refusal is one line on stderr, `nix-builders: <file>: <reason>`, exit 2, no stack trace;
 *  - a usage error is one line, exit 64;
 *  - the stack trace appears only with the global `--debug` (before or after the command);
 *  - with `--json`, stdout holds one JSON document `{"error": {kind, message, path?, exitCode}}`;
 *  - exit 70 only for a bug: no command's refusal path exits 70 or prints a trace (one case per command);
 *  - the error vocabulary itself (describeFailure): Node system errors on a path (EISDIR, ENOENT, ELOOP,
 *    EACCES …) are refusals `<path>: <strerror>`, a NixError is a refusal naming its file and line,
 *    anything else is internal (70) with a one-line message.
 *
 * Cases with an unreadable file run the CLI as a real throwaway user (root only; skipped otherwise).
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { describeFailure, json, Refusal, reportFailure, UsageError } from "../../src/commands/io.js";
import { NixError } from "../../src/nix/errors.js";
import { captureIo } from "../support/capture-io.js";
import { CLI_NODE_ARGS } from "../support/cli.js";

const ROOT = resolve(import.meta.dirname, "../..");
const tmp = mkdtempSync(join(tmpdir(), "nb-cli-errors-"));
const isRoot = process.getuid?.() === 0;
let user: { name: string; uid: number; gid: number } | null = null;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The real CLI, with a private Nix configuration (no /etc/nix), bounded by a deadline. */
function cli(
  args: string[],
  opts: { env?: Record<string, string>; as?: { uid: number; gid: number } } = {},
): Promise<Run> {
  const node = [process.execPath, ...CLI_NODE_ARGS, ...args];
  const argv = opts.as
    ? [
        "setpriv",
        `--reuid=${opts.as.uid}`,
        `--regid=${opts.as.gid}`,
        "--clear-groups",
        "--inh-caps=-all",
        "--",
        ...node,
      ]
    : node;
  return new Promise((res) => {
    const p = spawn(argv[0]!, argv.slice(1), {
      cwd: ROOT,
      env: {
        PATH: process.env["PATH"] ?? "/usr/bin:/bin",
        HOME: tmp,
        NIX_CONF_DIR: join(tmp, "conf"),
        NIX_USER_CONF_FILES: join(tmp, "none"),
        NIX_STATE_DIR: join(tmp, "state"),
        ...opts.env,
      },
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 60_000,
    });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (b: Buffer) => {
      stdout += b.toString();
    });
    p.stderr.on("data", (b: Buffer) => {
      stderr += b.toString();
    });
    p.on("close", (code) => res({ code, stdout, stderr }));
  });
}

const lines = (s: string) => s.split("\n").filter((l) => l !== "");
const TRACE = /^\s+at /m;
const show = (r: Run) => `exit ${r.code}\n--- stderr\n${r.stderr}--- stdout\n${r.stdout.slice(0, 2000)}`;

/** One line on stderr, this exit code, no trace. */
function oneLine(r: Run, code: number, text: string | RegExp): void {
  assert.equal(r.code, code, show(r));
  assert.equal(lines(r.stderr).length, 1, show(r));
  if (typeof text === "string") assert.equal(r.stderr, `${text}\n`, show(r));
  else assert.match(r.stderr, text, show(r));
  assert.doesNotMatch(r.stderr, TRACE, show(r));
}

const dir = join(tmp, "a-directory");
const loop = join(tmp, "loop-a");
const secret = join(tmp, "root-only", "secret.log");

before(() => {
  mkdirSync(join(tmp, "conf"));
  writeFileSync(join(tmp, "conf", "nix.conf"), "build-users-group =\n");
  mkdirSync(dir);
  symlinkSync(join(tmp, "loop-b"), loop);
  symlinkSync(loop, join(tmp, "loop-b"));
  mkdirSync(join(tmp, "root-only"), { mode: 0o755 });
  writeFileSync(secret, "SECRET-CONTENT error: root only\n", { mode: 0o600 });
  if (isRoot) {
    const name = `nbt-${Math.random().toString(36).slice(2, 8)}`;
    execFileSync("useradd", [
      "--no-create-home",
      "--home-dir",
      "/nonexistent",
      "--shell",
      "/usr/sbin/nologin",
      name,
    ]);
    const id = (flag: string) => Number(execFileSync("id", [flag, name], { encoding: "utf8" }).trim());
    user = { name, uid: id("-u"), gid: id("-g") };
  }
});

after(() => {
  if (user) execFileSync("userdel", [user.name], { stdio: "ignore" });
  rmSync(tmp, { recursive: true, force: true });
});

describe("cli: a refusal is one line naming the file and the reason, exit 2", () => {
  it("a directory", async () => {
    oneLine(await cli(["explain", dir]), 2, `nix-builders: ${dir}: Is a directory`);
  });
  it("a missing file", async () => {
    const p = join(tmp, "missing.log");
    oneLine(await cli(["explain", p]), 2, `nix-builders: ${p}: No such file or directory`);
  });
  it("a symlink loop", async () => {
    oneLine(await cli(["explain", loop]), 2, `nix-builders: ${loop}: Too many levels of symbolic links`);
  });
  it("a file the user cannot read (a real throwaway user): the reason, never the content", {
    skip: !isRoot && "needs root (useradd)",
  }, async () => {
    const r = await cli(["explain", secret], { as: user! });
    oneLine(r, 2, `nix-builders: ${secret}: Permission denied`);
    assert.ok(!`${r.stdout}${r.stderr}`.includes("SECRET-CONTENT"));
  });
  it("a file name with control characters stays on one line", async () => {
    const p = join(tmp, "evil\nname\x1b[31m.log");
    const r = await cli(["explain", p]);
    oneLine(r, 2, /^nix-builders: .*evil\\x0aname\\x1b\[31m\.log: No such file or directory\n$/);
  });
});

describe("cli: --debug shows the trace, --json carries the error", () => {
  it("--debug, before or after the command: the same line, then the stack", async () => {
    for (const args of [
      ["--debug", "explain", dir],
      ["explain", dir, "--debug"],
    ]) {
      const r = await cli(args);
      assert.equal(r.code, 2, show(r));
      assert.equal(lines(r.stderr)[0], `nix-builders: ${dir}: Is a directory`, show(r));
      assert.match(r.stderr, TRACE, show(r));
    }
  });
  it("--json: one JSON document on stdout with the refusal; still one line on stderr", async () => {
    const r = await cli(["explain", "--json", dir]);
    oneLine(r, 2, `nix-builders: ${dir}: Is a directory`);
    assert.deepEqual(JSON.parse(r.stdout), {
      error: { kind: "refusal", message: `${dir}: Is a directory`, path: dir, exitCode: 2 },
    });
  });
  it("usage errors: 64, one line; with --json kind usage", async () => {
    oneLine(
      await cli(["doctor", "--timeout", "soon"]),
      64,
      "nix-builders: --timeout: not a positive number: 'soon'",
    );
    // Beyond Node's timer range a deadline would fire at once: refused, not silently broken.
    oneLine(await cli(["doctor", "--timeout", "1e7"]), 64, "nix-builders: --timeout: at most 3600: '1e7'");
    const j = await cli(["doctor", "--json", "--timeout", "soon"]);
    assert.equal(j.code, 64);
    assert.deepEqual(JSON.parse(j.stdout), {
      error: { kind: "usage", message: "--timeout: not a positive number: 'soon'", exitCode: 64 },
    });
    const u = await cli(["--json", "no-such-command"]);
    assert.equal(u.code, 64, show(u));
    assert.equal((JSON.parse(u.stdout) as { error: { kind: string } }).error.kind, "usage");
  });
});

describe("cli: no command's refusal path exits 70 or prints a trace", () => {
  const badConf = () => {
    mkdirSync(join(tmp, "badconf"), { recursive: true });
    writeFileSync(join(tmp, "badconf", "nix.conf"), "build-users-group =\nmax-jobs = lots\n");
    return { NIX_CONF_DIR: join(tmp, "badconf") };
  };
  const machines = (text: string) => {
    const d = mkdtempSync(join(tmp, "m-"));
    writeFileSync(join(d, "machines"), text);
    writeFileSync(join(d, "nix.conf"), `build-users-group =\nbuilders = @${join(d, "machines")}\n`);
    return { NIX_CONF_DIR: d };
  };
  const cases: [string, string[], () => Record<string, string>, number][] = [
    ["config: a setting Nix rejects", ["config"], badConf, 2],
    ["show: a setting Nix rejects", ["show"], badConf, 2],
    ["lint: a setting Nix rejects", ["lint"], badConf, 2],
    ["lint: a directory as FILE", ["lint", dir], () => ({}), 64],
    ["route: a .drv that is not there", ["route", join(tmp, "x.drv")], () => ({}), 2],
    ["plan: no such derivation", ["plan", join(tmp, "nothing.drv")], () => ({}), 64],
    ["doctor: a user that does not exist", ["doctor", "--user", "nbt-no-such-user"], () => ({}), 64],
    ["verify: a user that does not exist", ["verify", "--user", "nbt-no-such-user"], () => ({}), 64],
    ["use: a user that does not exist", ["use", "--user", "nbt-no-such-user", "h"], () => ({}), 64],
    ["reset: a user that does not exist", ["reset", "--user", "nbt-no-such-user"], () => ({}), 64],
    ["explain: a directory", ["explain", dir], () => ({}), 2],
    // Finding 7: local/daemon stores crashed the doctor (TypeError … reading 'args').
    [
      "doctor: local, daemon, chroot and rejected stores",
      ["doctor", "--timeout", "2"],
      () => machines(`local\ndaemon\n${tmp}/chroot\nunix://${tmp}/sock\nlocal:///x\nssh://h^st\n`),
      2,
    ],
  ];
  for (const [name, args, env, code] of cases) {
    it(name, async () => {
      const r = await cli(args, { env: env() });
      assert.equal(r.code, code, show(r));
      assert.doesNotMatch(r.stderr, TRACE, show(r));
      assert.doesNotMatch(`${r.stderr}${r.stdout}`, /internal error/, show(r));
      // A thrown refusal or usage error is one line; a command's own report goes to stdout.
      assert.ok(lines(r.stderr).length <= 1, show(r));
    });
  }
  it("doctor --json on those stores: one document, exit code in the summary, no error object", async () => {
    const r = await cli(["doctor", "--json", "--timeout", "2"], {
      env: machines(`local\ndaemon\nlocal:///x\n`),
    });
    const j = JSON.parse(r.stdout) as { summary: { exitCode: number }; error?: unknown };
    assert.equal(r.code, 2, show(r));
    assert.equal(j.summary.exitCode, 2);
    assert.equal(j.error, undefined);
  });
});

describe("the error vocabulary (describeFailure / reportFailure), on real errors", () => {
  const thrown = (f: () => unknown): unknown => {
    try {
      f();
    } catch (e) {
      return e;
    }
    assert.fail("did not throw");
  };
  it("system errors on a path are refusals: <path>: <strerror>", () => {
    assert.deepEqual(describeFailure(thrown(() => openSync(dir, "w"))), {
      kind: "refusal",
      message: `${dir}: Is a directory`,
      path: dir,
      exitCode: 2,
    });
    // Node gives no path when read(2) fails: still a refusal, not a bug.
    assert.deepEqual(describeFailure(thrown(() => readFileSync(dir))), {
      kind: "refusal",
      message: "cannot read: Is a directory",
      exitCode: 2,
    });
    assert.equal(
      describeFailure(thrown(() => readFileSync(loop))).message,
      `${loop}: Too many levels of symbolic links`,
    );
    assert.equal(
      describeFailure(thrown(() => mkdirSync(join(dir, "x", "y")))).message,
      `${join(dir, "x", "y")}: No such file or directory`,
    );
  });
  it("Refusal and UsageError keep their message; a NixError names its file and line", () => {
    assert.deepEqual(describeFailure(new Refusal("/f: is a symbolic link", { path: "/f" })), {
      kind: "refusal",
      message: "/f: is a symbolic link",
      path: "/f",
      exitCode: 2,
    });
    assert.equal(describeFailure(new UsageError("--x: bad")).exitCode, 64);
    const n = describeFailure(
      new NixError("format", "syntax error in configuration line 'x'", { file: "/c", line: 3 }),
    );
    assert.deepEqual(n, {
      kind: "refusal",
      message: "/c:3: syntax error in configuration line 'x'",
      path: "/c",
      exitCode: 2,
    });
  });
  it("anything else is a bug: 70, one line, the trace only with debug, and --json carries it", () => {
    const bug = thrown(() => (JSON.parse("null") as { args: string[] }).args.length);
    const f = describeFailure(bug);
    assert.deepEqual([f.kind, f.exitCode], ["internal", 70]);
    assert.match(f.message, /^TypeError: Cannot read properties of null/);
    const io = captureIo();
    assert.equal(reportFailure(bug, io, { json: true, debug: false }), 70);
    assert.equal(lines(io.stderr).length, 1);
    assert.match(
      io.stderr,
      /^nix-builders: internal error: TypeError: .* \(run with --debug for the trace\)\n$/,
    );
    assert.equal(io.stdout, json({ error: f }));
    const dbg = captureIo();
    reportFailure(bug, dbg, { json: false, debug: true });
    assert.match(dbg.stderr, TRACE);
    assert.equal(dbg.stdout, "");
  });
  it("an errno without a path, or EINVAL, is not a refusal", () => {
    const e = Object.assign(new Error("spawn failed"), { code: "EINVAL", path: "/x" });
    assert.equal(describeFailure(e).kind, "internal");
    const noPath = Object.assign(new Error("boom"), { code: "ENOENT" });
    assert.equal(describeFailure(noPath).kind, "internal");
  });
});
