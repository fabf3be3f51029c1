/**
 * What a new user hits (issue 16), compared with the real Nix 2.8 (Debian's nix-bin) and, where it is
 * installed, Nix 2.30: our finding must carry the exact text the real Nix prints.
 *
 *  - item 1: a long store URI (`?remote-program=…&ssh-key=…&base64-ssh-public-host-key=…`) makes the build
 *    hook die on its slot lock file: `opening lock file '…/current-load/…': File name too long`.
 *    2.8 names the file after the URI as written; 2.30 after the URI rendered again (parameters sorted,
 *    `=` in a value as `%3D`).
 *  - item 2: `max-jobs = 0` with no builders (Nix stops: "unable to start any build"), or with only
 *    max-jobs-0 builders (Nix waits for a machine forever): both errors, with Nix's text.
 *  - item 3: `build-users-group` naming a group that does not exist: root's every local build fails.
 *    Real builds run as root into a chroot store (`--store <tmp>`) with a private NIX_CONF_DIR.
 *  - item 4: no daemon, and a throwaway user who cannot write /nix/var/nix: `show --user` and `lint --user`
 *    carry the error Nix prints as that user (2.8: `could not set permissions on '…/profiles/per-user'`;
 *    2.30: `opening lock file '…/db/big-lock': Permission denied`).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { lintLockFileNames } from "../../src/nix/lint.js";
import { parseBuilders } from "../../src/nix/machines.js";
import { runBuildRemote, scratchDir } from "../support/build-remote.js";
import { CLI_NODE_ARGS } from "../support/cli.js";
import { REAL_NIXES } from "../support/nix-versions.js";
import { makeUser, removeUser, runCli, type Throwaway } from "../support/throwaway.js";

const IS_ROOT = process.getuid?.() === 0;
const tmp = mkdtempSync(join(tmpdir(), "nb-newuser-diff-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const noFs = { read: () => ({ ok: false as const, code: "ENOENT" }) };

/** A realistic URI: 294 characters, as a NixOS `nix.buildMachines` entry with every option in the URI. */
function longUri(): string {
  const hostKey = Buffer.from(`ssh-ed25519 ${"A".repeat(100)}`).toString("base64");
  return `ssh://nix@builder.example.org?remote-program=/run/current-system/sw/bin/nix-store&ssh-key=/etc/nix/builder_ed25519&base64-ssh-public-host-key=${hostKey}`;
}

for (const nix of REAL_NIXES) {
  describe(`item 1: a store URI too long for the slot lock file, against real Nix ${nix.label}`, {
    skip: nix.skipReason,
  }, () => {
    it("the hook dies with 'File name too long', and lint's finding carries that exact text", async () => {
      const store = `${scratchDir()}/store`;
      const builders = `${longUri()} x86_64-linux`;
      const r = await runBuildRemote({ builders, system: "x86_64-linux", hook: nix.buildRemote, store });
      assert.equal(r.reply, null, "the hook died before answering");
      assert.match(r.error ?? "", /File name too long$/);
      const machines = parseBuilders({
        spec: builders,
        version: nix.version!,
        defaultSystem: "x86_64-linux",
        fs: noFs,
        cwd: "/",
      }).machines;
      const f = lintLockFileNames(machines, nix.version!, `${store}/nix/var/nix`);
      assert.deepEqual(
        f.map((x) => [x.id, x.severity]),
        [["store-uri-too-long", "error"]],
      );
      assert.equal(f[0]!.nixMessage, r.error);
      assert.match(f[0]!.fix, /column 3/);
    });
    it("the same machine with the key and host key in columns 3 and 8: no finding", async () => {
      const store = `${scratchDir()}/store`;
      const hostKey = Buffer.from(`ssh-ed25519 ${"A".repeat(100)}`).toString("base64");
      const builders = `ssh://nix@builder.example.org?remote-program=/run/current-system/sw/bin/nix-store x86_64-linux /etc/nix/builder_ed25519 1 1 - - ${hostKey}`;
      const machines = parseBuilders({
        spec: builders,
        version: nix.version!,
        defaultSystem: "x86_64-linux",
        fs: noFs,
        cwd: "/",
      }).machines;
      // (the hook is not run here: it would then connect to the builder, and tests stay on loopback)
      assert.deepEqual(lintLockFileNames(machines, nix.version!, `${store}/nix/var/nix`), []);
    });
  });
}

/** The real `nix-build` of a trivial derivation into a chroot store, with a private NIX_CONF_DIR. */
function realBuild(
  nix: (typeof REAL_NIXES)[number],
  confDir: string,
  timeoutMs = 60_000,
): { code: number | null; error: string | null; stderr: string } {
  const store = join(confDir, "store");
  const r = spawnSync(
    join(nix.bin, "nix-build"),
    [
      "--no-out-link",
      "--store",
      store,
      "-E",
      'derivation { name = "nb-x"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }',
    ],
    {
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: confDir,
        NIX_CONF_DIR: confDir,
        NIX_USER_CONF_FILES: "",
      },
      encoding: "utf8",
      timeout: timeoutMs,
      killSignal: "SIGINT",
    },
  );
  const stderr = r.stderr ?? "";
  // `error: first line`, then continuation lines indented by 7 spaces (blank ones empty)
  const m = /^error: (.*(?:\n(?: {7}.*|))*)/m.exec(stderr);
  const error = m ? m[1]!.replace(/\n {7}/g, "\n").replace(/\n+$/, "") : null;
  return { code: r.status, error, stderr };
}

/** Our lint on the same private NIX_CONF_DIR, following `version`'s rules. */
function ourLint(
  confDir: string,
  version: string,
): { id: string; nixMessage?: string; severity: string; message?: string; fix?: string }[] {
  const r = spawnSync(process.execPath, [...CLI_NODE_ARGS, "lint", "--json", "--nix-version", version], {
    env: { ...process.env, NIX_CONF_DIR: confDir, NIX_USER_CONF_FILES: "", NIX_CONFIG: "" },
    encoding: "utf8",
    timeout: 60_000,
  });
  return (JSON.parse(r.stdout) as { findings: { id: string; nixMessage?: string; severity: string }[] })
    .findings;
}

function confDir(text: string): string {
  const d = mkdtempSync(join(tmp, "conf-"));
  writeFileSync(join(d, "nix.conf"), text);
  return d;
}

for (const nix of REAL_NIXES) {
  const v = nix.label;
  describe(`items 2 and 3: builds that cannot run, against real Nix ${v}`, {
    skip: nix.skipReason || (!IS_ROOT && "needs root (a chroot store with build-users-group)"),
  }, () => {
    it("max-jobs = 0 and no builders: Nix stops at once; lint says so as an error, with Nix's text", () => {
      const d = confDir("max-jobs = 0\nbuild-users-group =\nbuilders =\n");
      const real = realBuild(nix, d);
      assert.equal(real.code, 1, real.stderr);
      const f = ourLint(d, v).filter((x) => x.id === "max-jobs-zero-no-builders");
      assert.equal(f.length, 1);
      assert.equal(f[0]!.severity, "error");
      assert.equal(f[0]!.nixMessage, real.error);
    });
    it("max-jobs = 0 and the only builder at max jobs 0: Nix waits for a machine forever; lint: error", () => {
      const d = confDir("");
      mkdirSync(join(d, "m1"));
      writeFileSync(
        join(d, "nix.conf"),
        `max-jobs = 0\nbuild-users-group =\nbuilders = ${d}/m1 x86_64-linux - 0 1\n`,
      );
      const real = realBuild(nix, d, 8000);
      assert.notEqual(real.code, 0);
      assert.match(real.stderr, /waiting for a machine to build '\/nix\/store\/[a-z0-9]{32}-nb-x\.drv'/);
      const f = ourLint(d, v).filter((x) => x.id === "max-jobs-zero-no-slots");
      assert.equal(f.length, 1);
      assert.equal(f[0]!.severity, "error");
      assert.match(f[0]!.nixMessage!, /^waiting for a machine to build '/);
    });
    it("build-users-group naming a missing group: every local build fails; lint: error with Nix's text", () => {
      const group = "nb-no-such-group";
      assert.equal(spawnSync("getent", ["group", group]).status, 2, "the group must not exist");
      const d = confDir(`build-users-group = ${group}\n`);
      const real = realBuild(nix, d);
      assert.equal(real.code, 1, real.stderr);
      const f = ourLint(d, v).filter((x) => x.id === "build-users-group-missing");
      assert.equal(f.length, 1);
      assert.equal(f[0]!.nixMessage, real.error);
      // an existing group (root's): no finding
      assert.deepEqual(
        ourLint(confDir("build-users-group = root\n"), v).filter((x) => x.id === "build-users-group-missing"),
        [],
      );
    });
  });
}

describe("item 4: no daemon and a user who cannot write the store", {
  skip:
    (!IS_ROOT && "needs root (a throwaway user)") ||
    (existsSync("/nix/var/nix/daemon-socket/socket") && "a daemon socket exists on this host"),
}, () => {
  let u: Throwaway;
  before(() => {
    u = makeUser("nbnu");
  });
  after(() => removeUser(u));
  for (const nix of REAL_NIXES) {
    it(`show --user and lint --user give the error real Nix ${nix.label} prints as that user`, {
      skip: nix.skipReason,
    }, async () => {
      const real = spawnSync(
        "setpriv",
        [
          `--reuid=${u.uid}`,
          `--regid=${u.gid}`,
          "--init-groups",
          "--",
          join(nix.bin, "nix-store"),
          "-q",
          "--references",
          "/nix/store/00000000000000000000000000000000-x",
        ],
        { env: { PATH: "/usr/bin:/bin", HOME: u.home }, encoding: "utf8", timeout: 30_000 },
      );
      assert.notEqual(real.status, 0);
      const said = /^error: (.*)$/m.exec(real.stderr)?.[1];
      assert.ok(said, real.stderr);
      const show = await runCli(["show", "--user", u.name, "--json", "--nix-version", nix.label]);
      const doc = JSON.parse(show.stdout) as { trustReason: string; errors: { message: string }[] };
      assert.deepEqual(
        doc.errors.map((e) => e.message),
        [said],
      );
      assert.doesNotMatch(doc.trustReason, /every setting applies/);
      assert.equal(show.code, 2);
      const lint = await runCli(["lint", "--user", u.name, "--json", "--nix-version", nix.label]);
      const f = (
        JSON.parse(lint.stdout) as { findings: { id: string; nixMessage?: string }[] }
      ).findings.filter((x) => x.id === "store-not-writable");
      assert.equal(f.length, 1);
      assert.equal(f[0]!.nixMessage, said);
    });
  }
  it("root (who can write the store) gets no such error", async () => {
    const show = await runCli(["show", "--json"]);
    const doc = JSON.parse(show.stdout) as { errors: { message: string }[] };
    assert.ok(!doc.errors.some((e) => /per-user|big-lock/.test(e.message)));
  });
});

for (const nix of REAL_NIXES) {
  describe(`item 8: an include cycle in nix.conf, against real Nix ${nix.label}`, {
    skip: nix.skipReason,
  }, () => {
    it("Nix crashes (SIGSEGV, exit 139, no message); lint says so and names the cycle, with no invented Nix text", () => {
      const d = mkdtempSync(join(tmp, "cycle-"));
      writeFileSync(join(d, "nix.conf"), `include ${d}/a.conf\n`);
      writeFileSync(join(d, "a.conf"), `include ${d}/nix.conf\n`);
      const real = spawnSync(nix.nix, nix.configShowJson, {
        env: { PATH: "/usr/bin:/bin", HOME: d, NIX_CONF_DIR: d, NIX_USER_CONF_FILES: "" },
        encoding: "utf8",
        timeout: 60_000,
      });
      assert.equal(real.signal, "SIGSEGV", `status ${real.status}: ${real.stderr}`);
      const f = ourLint(d, nix.label).filter((x) => x.id === "conf-include-cycle");
      assert.equal(f.length, 1);
      const full = f[0] as { message?: string; nixMessage?: string; fix?: string };
      assert.equal(full.nixMessage, undefined);
      assert.match(full.message!, /segmentation fault \(exit 139/);
      assert.ok(full.message!.includes(`${d}/nix.conf:1 includes ${d}/a.conf`));
      assert.ok(full.message!.includes(`${d}/a.conf:1 includes ${d}/nix.conf`));
      assert.doesNotMatch(full.fix!, /fix the value/);
    });
  });
}
