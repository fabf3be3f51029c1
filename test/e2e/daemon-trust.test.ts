/**
 * Pins daemonVerdict / applyClientSettings against a real, throwaway Nix 2.8 daemon.
 *
 * The daemon runs as root with everything in a temp dir: NIX_CONF_DIR (its nix.conf), NIX_DAEMON_SOCKET_PATH,
 * NIX_STATE_DIR, NIX_LOG_DIR, and `store = <tmp>/root` (a chroot store), so /nix is neither needed nor
 * touched. Clients are real test users running `nix store ping --store unix://<sock>` through runAs, with
 * an empty system config (NIX_CONF_DIR=<tmp>/client) and no user config files.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { runAs } from "../../src/host/run-as.js";
import { lookupUser } from "../../src/host/users.js";
import { applyClientSettings, daemonVerdict, type OverriddenSetting } from "../../src/nix/trust.js";
import { NIX_2_8, parseNixVersion } from "../../src/nix/version.js";

const isRoot = process.getuid?.() === 0;
function which(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
const haveNix = which("nix-daemon") && which("nix");
const nixVersion = haveNix ? parseNixVersion(execFileSync("nix", ["--version"], { encoding: "utf8" })) : null;
const skip = !isRoot
  ? "needs root"
  : !haveNix
    ? "needs nix-bin (nix-daemon, nix)"
    : nixVersion?.minor !== 8
      ? `expects Nix 2.8, found ${nixVersion ? `${nixVersion.major}.${nixVersion.minor}` : "unknown"}`
      : false;

const tag = randomBytes(2).toString("hex");
const G = {
  trust: `nbt${tag}-gt`, // trusted-users has @gt; user "memb" is a member in /etc/group
  prim: `nbt${tag}-gp`, // trusted-users has @gp; user "prim" has it as primary group only
  bld: `nbt${tag}-gb`, // build-users-group; user "bld" has it as primary group
  allow: `nbt${tag}-ga`, // allowed-users has @ga in config B; user "allow" is a member
};
const U = {
  name: `nbt${tag}-name`,
  memb: `nbt${tag}-memb`,
  prim: `nbt${tag}-prim`,
  plain: `nbt${tag}-plain`,
  bld: `nbt${tag}-bld`,
  allow: `nbt${tag}-allow`,
};

interface Daemon {
  dir: string;
  sock: string;
  proc: ChildProcess;
  log: () => string;
  stop: () => Promise<void>;
}

async function startDaemon(base: string, name: string, conf: string): Promise<Daemon> {
  const dir = path.join(base, name);
  fs.mkdirSync(path.join(dir, "conf"), { recursive: true });
  fs.chmodSync(dir, 0o755);
  const sock = path.join(dir, "sock");
  fs.writeFileSync(path.join(dir, "conf/nix.conf"), `store = ${path.join(dir, "root")}\n${conf}`);
  let log = "";
  const proc = spawn("nix-daemon", [], {
    cwd: "/",
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: dir,
      NIX_CONF_DIR: path.join(dir, "conf"),
      NIX_USER_CONF_FILES: "",
      NIX_DAEMON_SOCKET_PATH: sock,
      NIX_STATE_DIR: path.join(dir, "state"),
      NIX_LOG_DIR: path.join(dir, "log"),
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  proc.stdout?.on("data", (b: Buffer) => {
    log += b.toString();
  });
  proc.stderr?.on("data", (b: Buffer) => {
    log += b.toString();
  });
  for (let i = 0; i < 100 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(fs.existsSync(sock), `daemon ${name} did not create its socket:\n${log}`);
  return {
    dir,
    sock,
    proc,
    log: () => log,
    stop: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill("SIGTERM");
      await new Promise((r) => proc.once("close", r));
    },
  };
}

async function ping(
  base: string,
  d: Daemon,
  user: string,
  extra: { nixConfig?: string; verbose?: boolean } = {},
): Promise<{ code: number | null; stderr: string }> {
  const clientConf = path.join(base, "client");
  fs.mkdirSync(clientConf, { recursive: true });
  const env: Record<string, string> = {
    NIX_CONF_DIR: clientConf,
    NIX_USER_CONF_FILES: "",
    XDG_CACHE_HOME: path.join(base, "cache", user),
  };
  if (extra.nixConfig !== undefined) env.NIX_CONFIG = extra.nixConfig;
  const argv = [
    "nix",
    "store",
    "ping",
    "--store",
    `unix://${d.sock}`,
    "--extra-experimental-features",
    "nix-command",
  ];
  if (extra.verbose) argv.push("-vvvv");
  const r = await runAs(user, argv, { env, timeoutMs: 30_000 });
  return { code: r.code, stderr: r.stderr };
}

describe("real nix-daemon 2.8: who is allowed and trusted", { skip }, () => {
  let base = "";
  let A: Daemon;
  let B: Daemon;
  const trustedA = ["root", U.name, `@${G.trust}`, `@${G.prim}`, U.bld];
  const allowedB = [`@${G.allow}`];
  const nixBefore = fs.existsSync("/nix") ? execFileSync("ls", ["-laR", "/nix"], { encoding: "utf8" }) : null;

  before(async () => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), "nb-daemon-"));
    fs.chmodSync(base, 0o755);
    for (const g of Object.values(G)) execFileSync("groupadd", ["--system", g]);
    const add = (u: string, args: string[]) =>
      execFileSync("useradd", ["--system", "--no-create-home", "--home-dir", "/nonexistent", ...args, u]);
    add(U.name, ["--user-group"]);
    add(U.memb, ["--user-group", "--groups", G.trust]);
    add(U.prim, ["--gid", G.prim]);
    add(U.plain, ["--user-group"]);
    add(U.bld, ["--gid", G.bld]);
    add(U.allow, ["--user-group", "--groups", G.allow]);
    // A: explicit trusted-users, allowed-users = * (default), a real build-users-group.
    A = await startDaemon(base, "a", `trusted-users = ${trustedA.join(" ")}\nbuild-users-group = ${G.bld}\n`);
    // B: default trusted-users (root), restricted allowed-users, no build-users-group.
    B = await startDaemon(base, "b", `allowed-users = ${allowedB.join(" ")}\nbuild-users-group =\n`);
  });

  after(async () => {
    await A?.stop();
    await B?.stop();
    for (const u of Object.values(U)) {
      try {
        execFileSync("userdel", [u], { stdio: "ignore" });
      } catch {
        // not created
      }
    }
    for (const g of [...Object.values(G), U.name, U.memb, U.plain, U.allow]) {
      try {
        execFileSync("groupdel", [g], { stdio: "ignore" });
      } catch {
        // not created, or removed with its user
      }
    }
    if (base) fs.rmSync(base, { recursive: true, force: true });
    const nixAfter = fs.existsSync("/nix")
      ? execFileSync("ls", ["-laR", "/nix"], { encoding: "utf8" })
      : null;
    assert.equal(nixAfter, nixBefore, "/nix was not touched");
  });

  const cases: {
    d: () => Daemon;
    user: () => string;
    conf: () => { trustedUsers?: string[]; allowedUsers?: string[]; buildUsersGroup?: string };
    expect: [boolean, boolean];
    by?: string;
  }[] = [
    {
      d: () => A,
      user: () => "root",
      conf: () => ({ trustedUsers: trustedA, buildUsersGroup: G.bld }),
      expect: [true, true],
      by: "name",
    },
    {
      d: () => A,
      user: () => U.name,
      conf: () => ({ trustedUsers: trustedA, buildUsersGroup: G.bld }),
      expect: [true, true],
      by: "name",
    },
    {
      d: () => A,
      user: () => U.memb,
      conf: () => ({ trustedUsers: trustedA, buildUsersGroup: G.bld }),
      expect: [true, true],
      by: "@group (member)",
    },
    {
      d: () => A,
      user: () => U.prim,
      conf: () => ({ trustedUsers: trustedA, buildUsersGroup: G.bld }),
      expect: [true, true],
      by: "@group (primary gid)",
    },
    {
      d: () => A,
      user: () => U.plain,
      conf: () => ({ trustedUsers: trustedA, buildUsersGroup: G.bld }),
      expect: [true, false],
    },
    {
      d: () => A,
      user: () => U.bld,
      conf: () => ({ trustedUsers: trustedA, buildUsersGroup: G.bld }),
      expect: [false, false],
    },
    {
      d: () => B,
      user: () => "root",
      conf: () => ({ allowedUsers: allowedB, buildUsersGroup: "" }),
      expect: [true, true],
    },
    {
      d: () => B,
      user: () => U.allow,
      conf: () => ({ allowedUsers: allowedB, buildUsersGroup: "" }),
      expect: [true, false],
    },
    {
      d: () => B,
      user: () => U.plain,
      conf: () => ({ allowedUsers: allowedB, buildUsersGroup: "" }),
      expect: [false, false],
    },
    {
      d: () => B,
      user: () => U.memb,
      conf: () => ({ allowedUsers: allowedB, buildUsersGroup: "" }),
      expect: [false, false],
    },
  ];

  for (const [i, c] of cases.entries()) {
    const label = `case ${i + 1}: ${["A", "B"][i < 6 ? 0 : 1]} ${["allowed", "refused"][c.expect[0] ? 0 : 1]}${c.expect[1] ? " + trusted" : ""}`;
    it(label, async () => {
      const d = c.d();
      const name = c.user();
      const u = lookupUser(name, { getent: false });
      assert.ok(u);
      const verdict = daemonVerdict({ version: NIX_2_8, user: u, ...c.conf() });
      assert.deepEqual([verdict.allowed, verdict.trusted], c.expect, `model: ${verdict.reason}`);
      if (c.by) assert.equal(verdict.trustedMatch.by, c.by);

      const before = d.log().length;
      const r = await ping(base, d, name);
      await new Promise((res) => setTimeout(res, 100)); // let the daemon's log line arrive
      const log = d.log().slice(before);
      if (verdict.allowed) {
        assert.equal(r.code, 0, `real daemon refused ${name}: ${r.stderr}\n${log}`);
        assert.match(r.stderr, /^Version: 2\.8\.\d+$/m);
        const m = /^accepted connection from pid \d+, user (\S+)( \(trusted\))?$/m.exec(log);
        assert.ok(m, `daemon log: ${log}`);
        assert.equal(m[0].replace(/pid \d+/, "pid <pid>"), verdict.acceptLogLine);
      } else {
        assert.equal(r.code, 1, `real daemon accepted ${name}`);
        assert.ok(
          log.includes(verdict.refusalLogLine!),
          `expected daemon log line ${JSON.stringify(verdict.refusalLogLine)} in ${JSON.stringify(log)}`,
        );
        assert.match(r.stderr, /error: cannot open connection to remote store 'unix:\/\/[^']+'/);
        assert.match(r.stderr, /Connection reset by peer|Broken pipe|end of file|unexpected EOF/);
      }
    });
  }

  const origin = { kind: "env", name: "NIX_CONFIG" } as const;
  const restrictedSeen = (stderr: string): string[] =>
    [
      ...stderr.matchAll(
        /^ignoring the client-specified setting '([^']+)', because it is a restricted setting and you are not a trusted user$/gm,
      ),
    ].map((m) => m[1]!);
  const warnings = (stderr: string): string[] => [...stderr.matchAll(/^warning: (.*)$/gm)].map((m) => m[1]!);

  it("untrusted client: which settings the daemon ignores, and how loudly (2.8)", async () => {
    const nixConfig =
      "builders = ssh://nowhere x86_64-linux\nbuilders-use-substitutes = true\ntimeout = 5\n" +
      "substituters = https://evil.example https://cache.nixos.org\n";
    const overridden: OverriddenSetting[] = [
      { name: "builders", value: "ssh://nowhere x86_64-linux", origin },
      { name: "builders-use-substitutes", value: "true", origin },
      { name: "timeout", value: "5", origin },
      { name: "substituters", value: "https://evil.example https://cache.nixos.org", origin },
      { name: "store", value: `unix://${A.sock}`, origin: { kind: "flag", flag: "--store" } },
    ];
    const model = applyClientSettings({
      version: NIX_2_8,
      trusted: false,
      overridden,
      daemonSettings: { substituters: ["https://cache.nixos.org/"], trustedSubstituters: [] },
    });
    const debugNames = model.ignored.filter((i) => i.nixLogLevel === "debug").map((i) => i.setting);
    const warned = model.ignored.filter((i) => i.nixLogLevel === "warning").map((i) => i.nixMessage);
    assert.deepEqual(debugNames.sort(), ["builders", "builders-use-substitutes", "store"]);
    assert.deepEqual(model.applied.map((a) => [a.setting, a.value]).sort(), [
      ["substituters", "https://cache.nixos.org/"],
      ["timeout", "5"],
    ]);

    const quiet = await ping(base, A, U.plain, { nixConfig });
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.deepEqual(restrictedSeen(quiet.stderr), [], "2.8 does not show restricted settings by default");
    assert.deepEqual(warnings(quiet.stderr), warned, "the substituter warning is shown by default");

    const loud = await ping(base, A, U.plain, { nixConfig, verbose: true });
    assert.equal(loud.code, 0, loud.stderr);
    assert.deepEqual(
      restrictedSeen(loud.stderr).sort(),
      debugNames.sort(),
      "-vvvv shows exactly the debug ones",
    );
  });

  it("untrusted client: an empty builders is accepted silently", async () => {
    const model = applyClientSettings({
      version: NIX_2_8,
      trusted: false,
      overridden: [{ name: "builders", value: "", origin }],
      daemonSettings: { substituters: [], trustedSubstituters: [] },
    });
    assert.equal(model.applied[0]?.setting, "builders");
    const r = await ping(base, A, U.plain, { nixConfig: "builders =\n", verbose: true });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(restrictedSeen(r.stderr), ["store"], "only --store is refused, builders = '' is not");
  });

  it("trusted client: nothing is ignored", async () => {
    const nixConfig = "builders = ssh://nowhere x86_64-linux\nsubstituters = https://evil.example\n";
    const model = applyClientSettings({
      version: NIX_2_8,
      trusted: true,
      overridden: [
        { name: "builders", value: "ssh://nowhere x86_64-linux", origin },
        { name: "substituters", value: "https://evil.example", origin },
      ],
      daemonSettings: { substituters: ["https://cache.nixos.org/"], trustedSubstituters: [] },
    });
    assert.equal(model.ignored.length, 0);
    const r = await ping(base, A, U.memb, { nixConfig, verbose: true });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(restrictedSeen(r.stderr), []);
    assert.deepEqual(
      warnings(r.stderr).filter((w) => w.includes("substituter")),
      [],
    );
  });
});
