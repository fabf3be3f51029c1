/**
 * The installed Nix's version is read with a configuration that cannot fail, so a broken nix.conf
 * (the moment a user needs this tool) still gets that Nix's rules and its exact error text; and the
 * private configuration directory is a fresh mkdtemp one that no user can plant beforehand.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { machineFacts } from "../../src/host/machine-facts.js";
import { findNixBinary, probeNix } from "../../src/host/nix.js";
import { CLI_NODE_ARGS } from "../support/cli.js";
import { isRoot, makeTempUser, type TempUser } from "../support/temp-user.js";

const root = mkdtempSync(join(tmpdir(), "nb-ver-"));
after(() => rmSync(root, { recursive: true, force: true }));

function cli(args: string[], env: NodeJS.ProcessEnv) {
  const r = spawnSync(process.execPath, [...CLI_NODE_ARGS, ...args], {
    env: { PATH: process.env["PATH"], ...env },
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** What real Nix prints for `nix --version` in this environment: its first stderr line, or its version. */
function realNix(env: NodeJS.ProcessEnv): { ok: boolean; line: string } {
  const r = spawnSync("nix", ["--version"], {
    env: { PATH: process.env["PATH"], ...env },
    encoding: "utf8",
    timeout: 20_000,
  });
  return r.status === 0 ? { ok: true, line: r.stdout.trim() } : { ok: false, line: r.stderr.split("\n")[0]! };
}

const haveNix = findNixBinary() !== null;

describe("the installed Nix's version, whatever the configuration says", () => {
  let installed = "";
  before(() => {
    if (!haveNix) return;
    const empty = mkdtempSync(join(root, "empty-"));
    installed = realNix({ NIX_CONF_DIR: empty, NIX_USER_CONF_FILES: "", HOME: empty }).line;
  });

  const broken: [string, (dir: string) => NodeJS.ProcessEnv][] = [
    ["a system nix.conf (NIX_CONF_DIR)", (dir) => ({ NIX_CONF_DIR: dir, HOME: dir })],
    ["NIX_CONFIG", (dir) => ({ NIX_CONF_DIR: join(dir, "none"), NIX_CONFIG: "include a b", HOME: dir })],
    [
      "a user nix.conf (XDG_CONFIG_HOME)",
      (dir) => ({ NIX_CONF_DIR: join(dir, "none"), XDG_CONFIG_HOME: join(dir, "xdg"), HOME: dir }),
    ],
  ];
  for (const [where, mkEnv] of broken) {
    it(`config names the installed Nix and prints its exact error text for 'include a b' in ${where}`, (t) => {
      if (!haveNix) return t.skip("Nix is not installed");
      const dir = mkdtempSync(join(root, "broken-"));
      writeFileSync(join(dir, "nix.conf"), "include a b\n");
      execFileSync("mkdir", ["-p", join(dir, "xdg", "nix")]);
      writeFileSync(join(dir, "xdg", "nix", "nix.conf"), "include a b\n");
      const env = mkEnv(dir);
      const nix = realNix(env);
      assert.equal(nix.ok, false, "real Nix accepted the broken configuration");
      assert.match(nix.line, /^error: illegal configuration line 'include a b' in '.+'$/);
      const version = /(\d+\.\d+\.\d+)/.exec(installed)![1]!;
      const r = cli(["config"], env);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stdout.split("\n")[0], `Nix ${version} rules (installed) for user root`);
      assert.ok(r.stdout.includes(`\n  ${nix.line}\n`), `missing Nix's text ${nix.line} in:\n${r.stdout}`);
      const j = JSON.parse(cli(["config", "--json"], env).stdout);
      assert.equal(j.nixVersion, version);
      assert.equal(j.error.text, nix.line);
      assert.equal(j.nixVersionNote, undefined);
    });
  }

  it("says which version it follows, and why, when the installed nix cannot say its version", () => {
    const bin = mkdtempSync(join(root, "bin-"));
    writeFileSync(join(bin, "nix"), "#!/bin/sh\necho 'error: cannot load libnixstore.so' >&2\nexit 1\n");
    chmodSync(join(bin, "nix"), 0o755);
    const env = { PATH: `${bin}:${process.env["PATH"]}`, NIX_CONF_DIR: join(bin, "none"), HOME: bin };
    const r = cli(["config"], env);
    assert.equal(r.code, 0, r.stderr);
    const [head, note] = r.stdout.split("\n");
    assert.match(head!, /^Nix 2\.35\.\d+ rules \(latest\) for user root$/);
    assert.equal(
      note,
      `  note: cannot read the version of the installed Nix: '${bin}/nix --version' failed (exit 1: error: cannot load libnixstore.so); following Nix ${/Nix (\S+)/.exec(head!)![1]}'s rules (the newest modelled); pass --nix-version X.Y to choose`,
    );
    const j = JSON.parse(cli(["show", "--json"], env).stdout);
    assert.match(j.nixVersionNote, /cannot read the version of the installed Nix: .*exit 1/);
  });
});

describe("the private Nix configuration directory cannot be planted", () => {
  let user: TempUser | undefined;
  before(() => {
    if (isRoot()) user = makeTempUser();
  });
  after(() => user?.remove());

  it("a user's directory or symlink at the old predictable names is never used by root", async (t) => {
    if (!user) return t.skip("needs root (a real throwaway user)");
    if (!haveNix) return t.skip("Nix is not installed");
    // The user's bad configuration: were root's Nix to read it, `nix --version` and `show-config`
    // would fail (so the version would be lost and the facts would not come from Nix).
    const evil = user.run(["mktemp", "-d", "/tmp/nbt-evil-XXXXXX"]).trim();
    user.run(["sh", "-c", `printf 'include a b\\nplugin-files = ${evil}/evil.so\\n' > ${evil}/nix.conf`]);
    const plants = [
      join(tmpdir(), `nix-builders-empty-conf-${process.pid}`),
      join(tmpdir(), `nix-builders-conf-${process.pid}`),
    ];
    for (const variant of ["directory", "symlink"] as const) {
      for (const p of plants) {
        rmSync(p, { recursive: true, force: true });
        if (variant === "directory") user.run(["sh", "-c", `mkdir -m 777 ${p} && cp ${evil}/nix.conf ${p}/`]);
        else user.run(["ln", "-s", evil, p]);
      }
      // A copy of nix under a new inode: a cache miss, so root really runs it.
      const bin = mkdtempSync(join(root, "nix-"));
      copyFileSync(findNixBinary()!, join(bin, "nix"));
      const probe = await probeNix(`${bin}:/usr/bin:/bin`);
      assert.ok(probe.install, `${variant}: version lost: ${probe.problem}`);
      assert.equal(probe.install.nixPath, join(bin, "nix"));
      const facts = await machineFacts(probe.install);
      assert.equal(facts.source, "nix", `${variant}: show-config failed, so it read the planted config`);
      for (const p of plants) {
        // Root neither used nor removed the user's plant.
        const st = lstatSync(p);
        assert.equal(variant === "symlink" ? st.isSymbolicLink() : st.isDirectory(), true);
        if (variant === "directory") assert.equal(st.uid, user.uid);
      }
      assert.ok(readFileSync(join(evil, "nix.conf"), "utf8").startsWith("include a b"));
      assert.ok(!existsSync(join(evil, "evil.so")));
    }
    for (const p of plants) rmSync(p, { recursive: true, force: true });
    rmSync(evil, { recursive: true, force: true });
  });
});
