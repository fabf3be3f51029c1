/**
 * The cache is the running user's own: root's in /var/cache/nix-builders, a user's under their own
 * cache directory, never a shared /tmp, never through a directory or file someone else controls,
 * and a planted or damaged entry can never change which Nix rules apply.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  cacheDir,
  fileIdentity,
  pathOwnedBy,
  ROOT_CACHE_DIR,
  readCache,
  writeCache,
} from "../../src/host/cache.js";
import { findNixBinary, validVersionText } from "../../src/host/nix.js";
import { CLI_NODE_ARGS } from "../support/cli.js";
import { isRoot, makeTempUser, type TempUser } from "../support/temp-user.js";

const HERE = join(import.meta.dirname, "../..");
const CACHE_CLI = join(HERE, "test/support/cache-cli.ts");
const str = (x: unknown) => (typeof x === "string" ? x : undefined);

describe("cache", () => {
  let user: TempUser | undefined;
  let scratch = "";
  before(() => {
    // Root's scratch must not sit in a shared /tmp (that is the point); /run is root's.
    scratch = mkdtempSync(join(isRoot() ? "/run" : tmpdir(), "nb-cache-"));
    chmodSync(scratch, 0o755);
    if (isRoot()) user = makeTempUser();
  });
  after(() => {
    user?.remove();
    rmSync(scratch, { recursive: true, force: true });
  });

  /** The cache command run as the throwaway user, with exactly `env`. */
  const asUser = (env: NodeJS.ProcessEnv, ...args: string[]) =>
    JSON.parse(user!.run([process.execPath, "--import", "tsx", CACHE_CLI, ...args], env));

  it("root's cache is /var/cache/nix-builders (root's, not group/world-writable), whatever HOME says", (t) => {
    if (!isRoot()) return t.skip("needs root");
    for (const env of [{}, { HOME: "/tmp" }, { XDG_CACHE_HOME: "/tmp" }])
      assert.equal(cacheDir({ env }), ROOT_CACHE_DIR);
    const st = lstatSync(ROOT_CACHE_DIR);
    assert.ok(st.isDirectory() && st.uid === 0 && (st.mode & 0o022) === 0);
  });

  it("root refuses a cache directory on a path another user can write", (t) => {
    if (!user) return t.skip("needs root (a real throwaway user)");
    // Under the user's home: the user owns a directory on the way.
    const inHome = join(user.home, "rootcache");
    assert.equal(cacheDir({ rootDir: inHome }), null);
    assert.ok(!existsSync(inHome));
    // Under a world-writable directory (a shared /tmp).
    const shared = join(scratch, "shared");
    mkdirSync(shared, { mode: 0o777 });
    chmodSync(shared, 0o1777);
    assert.equal(cacheDir({ rootDir: join(shared, "c") }), null);
    // A root-owned private path is fine, and is created 0700.
    const ok = join(scratch, "ok");
    assert.equal(cacheDir({ rootDir: ok }), ok);
    assert.equal(statSync(ok).mode & 0o777, 0o700);
    assert.equal(pathOwnedBy(join(user.home), user.uid), true);
    assert.equal(pathOwnedBy(join(user.home), 0), false);
  });

  it("root with HOME unset (env -i) neither reads nor writes a shared /tmp/nix-builders, and a planted fake version changes nothing", (t) => {
    if (!user) return t.skip("needs root (a real throwaway user)");
    const nix = findNixBinary("/usr/bin:/bin");
    if (!nix) return t.skip("Nix is not installed");
    // The user plants the old fallback directory: a fake "Nix 2.35.2" entry under the real key,
    // and symlinks where the old code wrote its temp file and entries.
    const old = "/tmp/nix-builders";
    rmSync(old, { recursive: true, force: true });
    user.run(["mkdir", "-m", "777", old]);
    const fake = JSON.stringify({ key: fileIdentity(nix), value: "nix (Nix) 2.35.2\n" });
    user.run(["sh", "-c", `printf '%s' '${fake}' > ${old}/nix-version.json`]);
    user.run(["ln", "-s", join(user.home, "stolen"), `${old}/machine-facts.json`]);
    const before = readdirSync(old).sort();
    const r = spawnSync("env", ["-i", `PATH=/usr/bin:/bin`, process.execPath, ...CLI_NODE_ARGS, "config"], {
      cwd: HERE,
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(r.status, 0, r.stderr);
    const real = execFileSync(nix, ["--version"], {
      encoding: "utf8",
      env: { PATH: "/usr/bin:/bin", NIX_CONF_DIR: scratch, NIX_USER_CONF_FILES: "" },
    });
    assert.equal(
      r.stdout.split("\n")[0],
      `Nix ${/\d+\.\d+\.\d+/.exec(real)![0]} rules (installed) for user root`,
    );
    assert.deepEqual(readdirSync(old).sort(), before, "root wrote into /tmp/nix-builders");
    assert.ok(!existsSync(join(user.home, "stolen")), "root wrote through the user's symlink");
    assert.equal(readFileSync(`${old}/nix-version.json`, "utf8"), fake, "root replaced the user's entry");
    assert.ok(lstatSync(`${old}/machine-facts.json`).isSymbolicLink(), "root replaced the user's symlink");
    // Root's own cache now holds the real version.
    const cached = JSON.parse(readFileSync(join(ROOT_CACHE_DIR, "nix-version.json"), "utf8"));
    assert.equal(cached.value.trim(), real.trim());
    rmSync(old, { recursive: true, force: true });
  });

  it("a user's cache is their own ~/.cache/nix-builders; HOME unset or a shared or foreign directory means no cache", (t) => {
    if (!user) return t.skip("needs root (a real throwaway user)");
    const u = user;
    assert.equal(asUser({ HOME: u.home }, "dir"), join(u.home, ".cache", "nix-builders"));
    const st = lstatSync(join(u.home, ".cache", "nix-builders"));
    assert.equal(st.uid, u.uid);
    assert.equal(st.mode & 0o777, 0o700);
    assert.equal(asUser({ HOME: undefined }, "dir"), null, "HOME unset");
    const shared = join(scratch, "shared-xdg");
    mkdirSync(shared, { mode: 0o777 });
    chmodSync(shared, 0o1777);
    assert.equal(
      asUser({ HOME: u.home, XDG_CACHE_HOME: shared }, "dir"),
      null,
      "world-writable XDG_CACHE_HOME",
    );
    assert.deepEqual(readdirSync(shared), []);
    // Root's directory (not the user's) as XDG_CACHE_HOME.
    const rootOwned = join(scratch, "root-owned");
    mkdirSync(rootOwned, { mode: 0o755 });
    assert.equal(asUser({ HOME: u.home, XDG_CACHE_HOME: rootOwned }, "dir"), null);
    // Write and read back.
    asUser({ HOME: u.home }, "write", "nix-version", "k1", "nix (Nix) 2.8.0\n");
    assert.equal(asUser({ HOME: u.home }, "read", "nix-version", "k1"), "nix (Nix) 2.8.0\n");
    assert.equal(asUser({ HOME: u.home }, "read", "nix-version", "other-key"), null);
    const files = readdirSync(join(u.home, ".cache", "nix-builders"));
    assert.deepEqual(files, ["nix-version.json"], "no temp file left behind");
  });

  it("symlink plants: a linked cache directory or entry is never followed", (t) => {
    if (!user) return t.skip("needs root (a real throwaway user)");
    const u = user;
    const dir = join(u.home, ".cache", "nix-builders");
    // An entry that is a symlink to a file with a valid entry: not read; writing replaces the link.
    const target = join(u.home, "target.json");
    u.run(["sh", "-c", `printf '%s' '{"key":"k2","value":"nix (Nix) 2.35.2"}' > ${target}`]);
    rmSync(join(dir, "nix-version.json"), { force: true });
    u.run(["ln", "-s", target, join(dir, "nix-version.json")]);
    assert.equal(asUser({ HOME: u.home }, "read", "nix-version", "k2"), null);
    asUser({ HOME: u.home }, "write", "nix-version", "k3", "nix (Nix) 2.8.0\n");
    assert.ok(lstatSync(join(dir, "nix-version.json")).isFile());
    assert.ok(readFileSync(target, "utf8").includes("2.35.2"), "wrote through the symlink");
    // The cache directory itself a symlink (to a directory of another owner): no cache.
    const other = mkdtempSync(join(scratch, "other-"));
    rmSync(dir, { recursive: true, force: true });
    u.run(["ln", "-s", other, dir]);
    assert.equal(asUser({ HOME: u.home }, "dir"), null);
    asUser({ HOME: u.home }, "write", "nix-version", "k4", "x");
    assert.deepEqual(readdirSync(other), []);
    rmSync(dir, { force: true });
  });

  it("root reads only its own bounded regular files with a valid value; anything else is a miss", (t) => {
    if (!isRoot()) return t.skip("needs root");
    const rootDir = join(scratch, "rc");
    const scope = { rootDir };
    const file = join(rootDir, "nix-version.json");
    writeCache("nix-version", "k", "nix (Nix) 2.8.0\n", scope);
    assert.equal(readCache("nix-version", "k", validVersionText, scope), "nix (Nix) 2.8.0\n");
    const entry = (value: unknown) => writeFileSync(file, JSON.stringify({ key: "k", value }));
    // Values a real `nix --version` never prints.
    for (const bad of ["nix (Nix) 2.35.2 rules=latest\n", "2.35", "", 2.35, { major: 2 }, "nix (Nix) x.y"]) {
      entry(bad);
      assert.equal(readCache("nix-version", "k", validVersionText, scope), undefined, JSON.stringify(bad));
    }
    entry("nix (Nix) 2.8.0\n");
    assert.equal(readCache("nix-version", "k", validVersionText, scope), "nix (Nix) 2.8.0\n");
    if (user) {
      chownSync(file, user.uid, user.gid);
      assert.equal(readCache("nix-version", "k", str, scope), undefined, "a file owned by another user");
      chownSync(file, 0, 0);
    }
    chmodSync(file, 0o664);
    assert.equal(readCache("nix-version", "k", str, scope), undefined, "a group-writable file");
    chmodSync(file, 0o600);
    writeFileSync(file, JSON.stringify({ key: "k", value: "x".repeat(70_000) }));
    assert.equal(readCache("nix-version", "k", str, scope), undefined, "an oversized file");
    rmSync(file);
    execFileSync("mkfifo", [file]);
    const t0 = Date.now();
    assert.equal(readCache("nix-version", "k", str, scope), undefined, "a FIFO");
    assert.ok(Date.now() - t0 < 2000);
    rmSync(file);
    symlinkSync("/etc/passwd", file);
    assert.equal(readCache("nix-version", "k", str, scope), undefined, "a symlink");
  });
});
