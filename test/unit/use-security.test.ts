/**
 * `use` and `reset` run by root for a local user who wants root's rights: each attack of issue 11 (#1 reset
 * trusting the user's record, #8 planted symlinks, #9 a root-owned nix.conf, #7 refusals as stack traces;
 * test names start with the number) is tried by a real throwaway user on this host (useradd; the user's own steps
 * run through `setpriv --reuid=U --regid=U --init-groups --reset-env`), then root runs the command, and the
 * test checks that nothing outside the user's two files changed and that the refusal is one line, exit 2.
 *
 * No /etc/nix, no daemon: the builder is given as a whole machines line. Root's records go to a private
 * directory (NIX_BUILDERS_STATE_DIR, root's own environment), never the host's /var/lib/nix-builders.
 * Skipped when not root.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { runReset } from "../../src/commands/reset.js";
import { runUse } from "../../src/commands/use.js";
import { atomicWrite, LOCK_NAME, moveAside } from "../../src/host/atomic.js";
import { withUserCreds } from "../../src/host/user-creds.js";
import { captureIo } from "../support/capture-io.js";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const LINE = "ssh://nix@b1.test x86_64-linux";

function skipReason(): string | false {
  if (process.platform !== "linux") return "needs Linux";
  if (process.getuid?.() !== 0) return "needs root (makes throwaway users, acts for them)";
  for (const tool of ["useradd", "userdel", "setpriv"])
    if (spawnSync(tool, ["--help"], { timeout: 10_000 }).error) return `needs ${tool}`;
  return false;
}
const SKIP = skipReason();

interface User {
  name: string;
  uid: number;
  gid: number;
  home: string;
  dir: string;
  conf: string;
  machines: string;
}

let root = "";
let stateDir = "";
const made: string[] = [];

function idOf(name: string, flag: "-u" | "-g"): number {
  const r = spawnSync("id", [flag, name], { encoding: "utf8", timeout: 10_000 });
  return Number(r.stdout.trim());
}

function mkUser(tag: string, opts: { name?: string; uid?: number; home?: string } = {}): User {
  const name = opts.name ?? `nbt-${tag}-${randomBytes(3).toString("hex")}`;
  const home = opts.home ?? path.join(root, name);
  const args = ["--create-home", "--home-dir", home, "--shell", "/usr/sbin/nologin", "--user-group"];
  if (opts.uid !== undefined) args.push("--uid", String(opts.uid));
  const r = spawnSync("useradd", [...args, name], { encoding: "utf8", timeout: 30_000 });
  assert.equal(r.status, 0, `useradd: ${r.stderr}`);
  if (!made.includes(name)) made.push(name);
  const dir = path.join(home, ".config", "nix");
  return {
    name,
    uid: idOf(name, "-u"),
    gid: idOf(name, "-g"),
    home,
    dir,
    conf: path.join(dir, "nix.conf"),
    machines: path.join(dir, "machines"),
  };
}

function delUser(name: string): void {
  spawnSync("userdel", ["-r", "-f", name], { timeout: 30_000 });
}

/** Run argv as the user, the way a local user (or a CI job of theirs) would. */
function asUser(u: User, argv: string[], env: Record<string, string> = {}) {
  const pre = Object.keys(env).length ? ["env", ...Object.entries(env).map(([k, v]) => `${k}=${v}`)] : [];
  const r = spawnSync(
    "setpriv",
    [`--reuid=${u.uid}`, `--regid=${u.gid}`, "--init-groups", "--reset-env", "--", ...pre, ...argv],
    { encoding: "utf8", timeout: 120_000, cwd: "/" },
  );
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function sh(u: User, script: string): void {
  const r = asUser(u, ["sh", "-euc", script]);
  assert.equal(r.code, 0, `as ${u.name}: ${script}\n${r.stderr}`);
}

/** The user's usual nix.conf (mode 0640), written by the user. */
function userConf(u: User, text = "max-jobs = 4\n"): void {
  sh(u, `mkdir -p ${u.dir} && umask 027 && printf '%s' '${text}' > ${u.conf}`);
}

async function use(u: User, extra: Record<string, unknown> = {}, names = [LINE]) {
  const io = captureIo({ NIX_BUILDERS_STATE_DIR: stateDir });
  const code = await runUse(names, { user: u.name, ...extra }, io);
  return { code, stdout: io.stdout, stderr: io.stderr };
}

async function reset(u: User, extra: Record<string, unknown> = {}) {
  const io = captureIo({ NIX_BUILDERS_STATE_DIR: stateDir });
  const code = await runReset({ user: u.name, ...extra }, io);
  return { code, stdout: io.stdout, stderr: io.stderr };
}

/** The real command line (src/cli.ts), as root. */
function cli(args: string[]) {
  const r = spawnSync(process.execPath, ["--import", "tsx", "src/cli.ts", ...args], {
    cwd: REPO,
    encoding: "utf8",
    timeout: 120_000,
    env: { ...process.env, NIX_BUILDERS_STATE_DIR: stateDir },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Exit 2, and stderr is exactly one line naming `file` and matching `why`: no stack trace. */
function assertRefusal(r: { code: number | null; stderr: string }, file: string, why: RegExp): void {
  assert.equal(r.code, 2, `exit 2, got ${r.code}:\n${r.stderr}`);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `one line:\n${r.stderr}`);
  assert.ok(lines[0]!.includes(file), `names ${file}: ${lines[0]}`);
  assert.match(lines[0]!, why);
  assert.doesNotMatch(r.stderr, /internal error|\n\s+at |Error:/);
}

function read(p: string): Buffer | null {
  try {
    return fs.readFileSync(p);
  } catch {
    return null;
  }
}

/** A root-owned file and directory outside the user's reach, that an attack aims at. */
function victim(tag: string): { dir: string; file: string; bytes: Buffer } {
  const dir = fs.mkdtempSync(path.join(root, `victim-${tag}-`));
  fs.chmodSync(dir, 0o755);
  const file = path.join(dir, "nix.conf");
  const bytes = Buffer.from("# root's file\ntrusted-users = root\n");
  fs.writeFileSync(file, bytes, { mode: 0o644 });
  return { dir, file, bytes };
}

function assertVictimIntact(v: { dir: string; file: string; bytes: Buffer }): void {
  assert.deepEqual(fs.readdirSync(v.dir), ["nix.conf"], `nothing new in ${v.dir}`);
  assert.ok(read(v.file)!.equals(v.bytes), `${v.file} unchanged`);
  const st = fs.statSync(v.file);
  assert.equal(st.uid, 0);
  assert.equal(st.mode & 0o7777, 0o644);
}

function stateFileOf(u: User): string {
  return path.join(stateDir, "use", `${u.uid}-${u.name}`, "state.json");
}

describe("use / reset as root for a hostile local user", { skip: SKIP }, () => {
  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), "nb-use-sec-"));
    fs.chmodSync(root, 0o755);
    stateDir = path.join(root, "state");
  });
  after(() => {
    for (const u of made) delUser(u);
    if (root) {
      spawnSync("chattr", ["-R", "-i", root], { timeout: 30_000 });
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  // ---------------------------------------------------------------------------------------------------
  // Finding 1: reset trusted a state file the user owns.

  test("#1 reset never trusts a record in the user's home (the old location): nothing is written, one line says what to do", async () => {
    const u = mkUser("f1");
    userConf(u);
    const v = victim("f1");
    const suid = path.join(v.dir, "suid");
    // The attack: a record of the old format, in the user's own directory, claiming that `use` wrote a
    // root nix.conf that trusts the user, and a setuid-root program; the hashes match, so "not modified".
    const evil = Buffer.from(`trusted-users = root ${u.name}\n`).toString("base64");
    const sha = () => createHash("sha256").update(fs.readFileSync(v.file)).digest("hex");
    const record = {
      version: 1,
      user: u.name,
      uid: u.uid,
      created: new Date().toISOString(),
      files: {
        [v.file]: { existed: true, content: evil, uid: 0, gid: 0, mode: 0o644, written: [sha()] },
        [suid]: { existed: true, content: evil, uid: 0, gid: 0, mode: 0o4755, written: [] },
      },
      createdDirs: [],
    };
    sh(
      u,
      `mkdir -p ${u.dir}/.nix-builders && cat > ${u.dir}/.nix-builders/state.json <<'EOF'\n${JSON.stringify(record)}\nEOF`,
    );
    for (const json of [false, true]) {
      const r = await reset(u, json ? { json: true } : {});
      assertRefusal(
        r,
        path.join(u.dir, ".nix-builders", "state.json"),
        /older nix-builders.*not used.*by hand/,
      );
      if (json) {
        const j = JSON.parse(r.stdout) as { ok: boolean; refused: string; path: string; message: string };
        assert.equal(j.ok, false);
        assert.equal(j.path, path.join(u.dir, ".nix-builders", "state.json"));
      }
      assertVictimIntact(v);
      assert.equal(read(suid), null, "no setuid file appeared");
      assert.equal(read(u.conf)!.toString(), "max-jobs = 4\n");
    }
    // The same through --force: still not trusted.
    assertRefusal(await reset(u, { force: true }), u.dir, /older nix-builders/);
    assertVictimIntact(v);
  });

  test("#1 root's record lives under the state directory, root's alone (0700 dirs, 0600 file); the user can neither read nor change it", async () => {
    const u = mkUser("f1b");
    userConf(u);
    const r = await use(u);
    assert.ok(r.code === 0 || r.code === 1, r.stdout + r.stderr);
    const file = stateFileOf(u);
    const st = fs.statSync(file);
    assert.equal(st.uid, 0);
    assert.equal(st.mode & 0o777, 0o600);
    for (const d of [stateDir, path.join(stateDir, "use"), path.dirname(file)]) {
      const ds = fs.lstatSync(d);
      assert.ok(ds.isDirectory() && !ds.isSymbolicLink());
      assert.equal(ds.uid, 0);
      assert.equal(ds.mode & 0o777, 0o700, d);
    }
    assert.notEqual(asUser(u, ["cat", file]).code, 0, "the user cannot read it");
    assert.notEqual(asUser(u, ["sh", "-c", `echo x > ${file}`]).code, 0, "nor write it");
    assert.notEqual(asUser(u, ["ls", path.dirname(file)]).code, 0, "nor list its directory");
    // Nothing of ours is left in the user's config directory but our files: no lock file, no backup
    // (the record keeps the original).
    assert.deepEqual(fs.readdirSync(u.dir).sort(), ["machines", "nix.conf"]);
    const rr = await reset(u);
    assert.equal(rr.code, 0, rr.stdout + rr.stderr);
    assert.equal(read(u.conf)!.toString(), "max-jobs = 4\n");
    assert.equal(read(u.machines), null);
    assert.deepEqual(fs.readdirSync(u.dir), ["nix.conf"], "a use/reset cycle leaves nothing behind");
    assert.deepEqual(fs.readdirSync(path.dirname(file)), [], "nor in the record's directory");
  });

  test("#1 reset restores content, owner and mode as they were, written as the user (0640 stays 0640, the owner is the user)", async () => {
    const u = mkUser("f1c");
    userConf(u, "cores = 3\n");
    assert.equal(fs.statSync(u.conf).mode & 0o777, 0o640);
    const r = await use(u);
    assert.ok(r.code === 0 || r.code === 1, r.stdout + r.stderr);
    for (const f of [u.conf, u.machines]) assert.equal(fs.statSync(f).uid, u.uid, `${f} is the user's`);
    assert.equal(fs.statSync(u.conf).mode & 0o777, 0o640, "use keeps the mode");
    const rr = await reset(u);
    assert.equal(rr.code, 0, rr.stdout + rr.stderr);
    const st = fs.statSync(u.conf);
    assert.equal(read(u.conf)!.toString(), "cores = 3\n");
    assert.equal(st.uid, u.uid);
    assert.equal(st.gid, u.gid);
    assert.equal(st.mode & 0o7777, 0o640);
  });

  test("#1 even root's own record cannot make reset write elsewhere, root-owned, or set-id", async () => {
    const u = mkUser("f1d");
    userConf(u);
    assert.ok([0, 1].includes((await use(u)).code));
    const file = stateFileOf(u);
    const orig = fs.readFileSync(file, "utf8");
    const v = victim("f1d");
    // Another path than the user's two files.
    const s1 = JSON.parse(orig);
    s1.files.conf.path = v.file;
    fs.writeFileSync(file, JSON.stringify(s1));
    assertRefusal(await reset(u), file, /the user's files are now/);
    assertVictimIntact(v);
    // An owner other than the user.
    const s2 = JSON.parse(orig);
    s2.files.conf.uid = 0;
    fs.writeFileSync(file, JSON.stringify(s2));
    assertRefusal(await reset(u), file, /reset only restores files owned by/);
    assert.equal(fs.statSync(u.conf).uid, u.uid);
    // Set-id bits: never written.
    const s3 = JSON.parse(orig);
    s3.files.conf.mode = 0o6755;
    fs.writeFileSync(file, JSON.stringify(s3));
    const rr = await reset(u);
    assert.equal(rr.code, 0, rr.stdout + rr.stderr);
    const st = fs.statSync(u.conf);
    assert.equal(st.mode & 0o7000, 0, "no setuid/setgid bit");
    assert.equal(st.mode & 0o777, 0o755);
    assert.equal(st.uid, u.uid);
  });

  test("#1 an account deleted and made again with the same name and uid does not get the old account's files back", async () => {
    const u = mkUser("f1e");
    userConf(u, "# the old account, private\naccess-tokens = github.com=OLDSECRET\n");
    assert.ok([0, 1].includes((await use(u)).code));
    const file = stateFileOf(u);
    delUser(u.name);
    const again = mkUser("f1e", { name: u.name, uid: u.uid, home: u.home });
    assert.equal(again.uid, u.uid);
    userConf(again, "max-jobs = 1\n");
    sh(again, `printf 'builders = @${again.machines}\\n' > ${again.conf}`);
    for (const run of [() => reset(again), () => use(again)]) {
      assertRefusal(await run(), file, /another home directory/);
      assert.equal(
        read(again.conf)!.toString(),
        `builders = @${again.machines}\n`,
        "the new account's nix.conf is untouched",
      );
      assert.doesNotMatch(read(again.conf)!.toString(), /OLDSECRET/);
    }
    // A new account with the same name but another uid has no record at all.
    const file2 = stateFileOf({ ...again, uid: again.uid + 1 });
    assert.equal(read(file2), null);
  });

  test("#1 root's records are only kept where root alone can change them (NIX_BUILDERS_STATE_DIR into a user's home, a group-writable directory: refused)", async () => {
    const u = mkUser("f1f");
    userConf(u);
    const inHome = path.join(u.home, "state");
    sh(u, `mkdir -p ${inHome}`);
    for (const dir of [inHome, path.join(inHome, "deeper")]) {
      const io = captureIo({ NIX_BUILDERS_STATE_DIR: dir });
      const code = await runUse([LINE], { user: u.name }, io);
      assertRefusal({ code, stderr: io.stderr }, u.home, new RegExp(`owned by uid ${u.uid}, not root`));
      assert.deepEqual(fs.readdirSync(inHome), [], "nothing made in the user's directory");
      const io2 = captureIo({ NIX_BUILDERS_STATE_DIR: dir });
      assert.equal(await runReset({ user: u.name }, io2), 2, io2.stderr);
    }
    const open = fs.mkdtempSync(path.join(root, "open-"));
    fs.chmodSync(open, 0o775);
    const io3 = captureIo({ NIX_BUILDERS_STATE_DIR: path.join(open, "s") });
    const code3 = await runUse([LINE], { user: u.name }, io3);
    assertRefusal({ code: code3, stderr: io3.stderr }, open, /writable by group or others/);
    assert.deepEqual(fs.readdirSync(open), []);
    assert.equal(read(u.machines), null, "and nothing written in the user's home");
  });

  test("#1 a damaged record (not JSON, wrong shape, not root's) is one line, exit 2, and nothing is written", async () => {
    const u = mkUser("f1g");
    userConf(u);
    assert.ok([0, 1].includes((await use(u)).code));
    const file = stateFileOf(u);
    const good = fs.readFileSync(file, "utf8");
    const conf = read(u.conf)!;
    for (const bad of ["{not json", JSON.stringify({ version: 2, files: {} }), "null"]) {
      fs.writeFileSync(file, bad);
      assertRefusal(await reset(u), file, /not a nix-builders record/);
      assertRefusal(await use(u), file, /not a nix-builders record/);
      assert.ok(read(u.conf)!.equals(conf));
    }
    fs.writeFileSync(file, good);
    fs.chownSync(file, u.uid, u.gid);
    assertRefusal(await reset(u), file, /not root's alone.*refusing to trust it/);
    assert.ok(read(u.conf)!.equals(conf));
  });

  test("#1 written as the user: atomicWrite and moveAside refuse a file that is not the user's, even past the checks", async () => {
    const u = mkUser("f1h");
    userConf(u);
    const as = { name: u.name, uid: u.uid, gid: u.gid };
    fs.chownSync(u.conf, 0, 0);
    fs.chmodSync(u.conf, 0o644); // readable: only the owner check stands in the way
    await assert.rejects(
      atomicWrite(u.conf, "x\n", { as, noFollow: true }),
      /owned by uid 0, not by .*never changed/,
    );
    await assert.rejects(moveAside(u.conf, { as }), /owned by uid 0/);
    assert.equal(read(u.conf)!.toString(), "max-jobs = 4\n");
    assert.equal(fs.statSync(u.conf).uid, 0);
    // A new file is the user's, never set-id, whatever mode is asked for.
    const r = await atomicWrite(u.machines, "m\n", { as, noFollow: true, mode: 0o6755 });
    assert.equal(r.status, "written");
    const st = fs.statSync(u.machines);
    assert.equal(st.uid, u.uid);
    assert.equal(st.mode & 0o7777, 0o755);
  });

  test("withUserCreds: the user's rights inside, root's again after (also after a throw); an async function is refused", async () => {
    const u = mkUser("creds0");
    const as = { name: u.name, uid: u.uid, gid: u.gid };
    const seen = withUserCreds(as, () => [process.geteuid!(), process.getegid!(), process.getuid!()]);
    assert.deepEqual(seen, [u.uid, u.gid, 0]);
    assert.throws(
      () =>
        withUserCreds(as, () => {
          throw new Error("boom");
        }),
      /boom/,
    );
    assert.equal(process.geteuid!(), 0);
    assert.equal(process.getegid!(), 0);
    assert.ok(!process.getgroups!().includes(u.gid));
    assert.throws(() => withUserCreds(as, async () => 1), /must be synchronous/);
    assert.equal(process.geteuid!(), 0);
  });

  // ---------------------------------------------------------------------------------------------------
  // Finding 8 (issue numbering): use followed a planted `.nix-builders` symlink.

  test("#8 a planted .nix-builders symlink makes root create nothing where it points", async () => {
    const u = mkUser("f8");
    userConf(u);
    const v = victim("f8");
    sh(u, `ln -s ${v.dir} ${u.dir}/.nix-builders`);
    const r = await use(u);
    assert.ok(r.code === 0 || r.code === 1, r.stdout + r.stderr);
    assertVictimIntact(v);
    assert.ok(fs.existsSync(stateFileOf(u)), "the record is root's, in the state directory");
    const rr = await reset(u);
    assert.equal(rr.code, 0, rr.stdout + rr.stderr);
    assertVictimIntact(v);
  });

  // ---------------------------------------------------------------------------------------------------
  // Symlinks anywhere in the user's config chain: refused, one line, exit 2, nothing written.

  const chain: { name: string; plant: (u: User, victimDir: string, victimFile: string) => string }[] = [
    {
      name: "~/.config is a link to a directory the user owns",
      plant: (u) => {
        sh(u, `mv ${u.home}/.config ${u.home}/real-config && ln -s ${u.home}/real-config ${u.home}/.config`);
        return path.join(u.home, ".config");
      },
    },
    {
      name: "~/.config is a link to a root-owned directory",
      plant: (u, vd) => {
        sh(u, `rm -rf ${u.home}/.config && ln -s ${vd} ${u.home}/.config`);
        return path.join(u.home, ".config");
      },
    },
    {
      name: "~/.config/nix is a link to a root-owned directory",
      plant: (u, vd) => {
        sh(u, `rm -rf ${u.dir} && ln -s ${vd} ${u.dir}`);
        return u.dir;
      },
    },
    {
      name: "nix.conf is a link to a root-owned file",
      plant: (u, _vd, vf) => {
        sh(u, `rm -f ${u.conf} && ln -s ${vf} ${u.conf}`);
        return u.conf;
      },
    },
    {
      name: "nix.conf is a link to a file of the user's own",
      plant: (u) => {
        sh(u, `mv ${u.conf} ${u.home}/my.conf && ln -s ${u.home}/my.conf ${u.conf}`);
        return u.conf;
      },
    },
    {
      name: "the machines file is a link to a root-owned file",
      plant: (u, _vd, vf) => {
        sh(u, `ln -s ${vf} ${u.machines}`);
        return u.machines;
      },
    },
    {
      name: "the machines file is a dangling link (to where root could create a file)",
      plant: (u, vd) => {
        sh(u, `ln -s ${vd}/created-by-root ${u.machines}`);
        return u.machines;
      },
    },
  ];
  for (const c of chain) {
    test(`#8 #7 ${c.name}: use (also --json and --dry-run) refuses with one line, exit 2, and writes nothing`, async () => {
      const u = mkUser("ln");
      userConf(u);
      const v = victim("ln");
      const before = read(u.conf);
      assert.ok(before);
      const link = c.plant(u, v.dir, v.file);
      const r = await use(u);
      assertRefusal(r, link, /symbolic link/);
      const j = await use(u, { json: true });
      assert.equal(j.code, 2);
      const doc = JSON.parse(j.stdout) as { ok: boolean; path: string; message: string };
      assert.equal(doc.ok, false);
      assert.equal(doc.path, link);
      assert.match(doc.message, /symbolic link/);
      assertVictimIntact(v);
      assert.equal(read(stateFileOf(u)), null, "no record either");
      const dry = await use(u, { dryRun: true });
      assertRefusal(dry, link, /symbolic link/);
      if (link === u.machines) assert.ok(read(u.conf)!.equals(before!), "nix.conf unchanged");
    });
  }

  test("#8 a symlink swapped in between the checks and the write (use waiting at the lock) is refused, and root's file is untouched", async () => {
    const u = mkUser("race");
    userConf(u);
    const v = victim("race");
    // Root holds the lock of the user's record (use and reset take it before they write), so use stops
    // after its first checks. Then the user swaps nix.conf for a link to root's file.
    const recordDir = path.dirname(stateFileOf(u));
    fs.mkdirSync(recordDir, { recursive: true, mode: 0o700 });
    for (const d of [stateDir, path.join(stateDir, "use")]) fs.chmodSync(d, 0o700);
    const holder: ChildProcess = spawn(
      "flock",
      ["-x", path.join(recordDir, LOCK_NAME), "sh", "-c", "echo locked; exec sleep 60"],
      { stdio: ["ignore", "pipe", "inherit"], detached: true },
    );
    // flock's child (the shell, then sleep) holds the lock too: stop the whole process group.
    const release = () => {
      try {
        process.kill(-holder.pid!, "SIGKILL");
      } catch {
        // gone already
      }
    };
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout!.on("data", (b: Buffer) => b.toString().includes("locked") && resolve());
        holder.on("exit", () => reject(new Error("flock holder exited")));
      });
      const running = use(u);
      // use waits for the lock once its own flock helper (a child of this process) runs: then swap.
      const waiting = () =>
        spawnSync("pgrep", ["-P", String(process.pid), "-x", "flock"], { encoding: "utf8", timeout: 10_000 })
          .stdout.split("\n")
          .some((p) => p !== "" && Number(p) !== holder.pid);
      const t0 = Date.now();
      while (!waiting()) {
        assert.ok(Date.now() - t0 < 30_000, "use reached the lock");
        await new Promise((r) => setTimeout(r, 20));
      }
      sh(u, `rm -f ${u.conf} && ln -s ${v.file} ${u.conf}`);
      release();
      const r = await running;
      assertRefusal(r, u.conf, /symbolic link/);
      assertVictimIntact(v);
      assert.equal(fs.readlinkSync(u.conf), v.file, "the link is left as it was");
      // After the check under the lock, the write itself refuses a link (O_NOFOLLOW, as the user).
      await assert.rejects(
        atomicWrite(u.conf, "builders = x\n", { as: u, noFollow: true, unlocked: true, backup: false }),
        /symbolic link|symlink/,
      );
      assertVictimIntact(v);
    } finally {
      release();
    }
  });

  test("#8 a directory swapped for a link after the checks only ever leads where the user can write (the write runs as the user)", () => {
    const u = mkUser("creds");
    userConf(u);
    const v = victim("creds");
    // What use does at the write, with the user's credentials: a root-owned target is out of reach.
    sh(u, `rm -rf ${u.dir} && ln -s ${v.dir} ${u.dir}`);
    assert.throws(
      () =>
        withUserCreds({ name: u.name, uid: u.uid, gid: u.gid }, () =>
          fs.writeFileSync(u.conf, "trusted-users = *\n"),
        ),
      /EACCES/,
    );
    assertVictimIntact(v);
    assert.equal(process.geteuid?.(), 0, "root again afterwards");
  });

  test("#8 the XDG_CONFIG_HOME variant (the agent's unit sets it): a linked config home is refused, one outside the home too", async () => {
    const u = mkUser("xdg");
    const v = victim("xdg");
    const agentRoot = fs.mkdtempSync(path.join(root, "agent-root-"));
    const unitDir = path.join(agentRoot, "etc/systemd/system");
    fs.mkdirSync(unitDir, { recursive: true });
    const unit = (xdg: string) =>
      fs.writeFileSync(
        path.join(unitDir, "hercules-ci-agent.service"),
        `[Service]\nUser=${u.name}\nEnvironment=XDG_CONFIG_HOME=${xdg}\nExecStart=/bin/hercules-ci-agent --config /etc/hci/agent.json\n`,
      );
    const xdg = path.join(u.home, "xdg");
    sh(u, `mkdir -p ${u.home}/real-xdg/nix && ln -s ${u.home}/real-xdg ${xdg}`);
    unit(xdg);
    const io = captureIo({ NIX_BUILDERS_STATE_DIR: stateDir });
    const code = await runUse([LINE], { agent: true, agentRoot }, io);
    assertRefusal({ code, stderr: io.stderr }, xdg, /symbolic link/);
    assert.deepEqual(fs.readdirSync(path.join(u.home, "real-xdg", "nix")), []);
    unit(v.dir);
    const io2 = captureIo({ NIX_BUILDERS_STATE_DIR: stateDir });
    const code2 = await runUse([LINE], { agent: true, agentRoot }, io2);
    assertRefusal({ code: code2, stderr: io2.stderr }, path.join(v.dir, "nix", "nix.conf"), /outside .*home/);
    assertVictimIntact(v);
    // A real directory there is fine, and the files land in it.
    sh(u, `rm ${xdg} && mkdir -p ${xdg}`);
    unit(xdg);
    const io3 = captureIo({ NIX_BUILDERS_STATE_DIR: stateDir });
    const code3 = await runUse([LINE], { agent: true, agentRoot }, io3);
    assert.ok(code3 === 0 || code3 === 1, io3.stdout + io3.stderr);
    assert.equal(fs.statSync(path.join(xdg, "nix", "nix.conf")).uid, u.uid);
  });

  // ---------------------------------------------------------------------------------------------------
  // Finding 9 (issue numbering): use took a root-owned nix.conf in the user's home and gave it to the user.

  test("#9 a root-owned nix.conf in the user's home is refused and stays root's", async () => {
    const u = mkUser("f9");
    sh(u, `mkdir -p ${u.dir}`);
    fs.writeFileSync(u.conf, "trusted-users = root\n", { mode: 0o644 });
    for (const opts of [{}, { dryRun: true }]) {
      const r = await use(u, opts);
      assertRefusal(r, u.conf, /owned by root \(uid 0\), not by .*chown/);
      const st = fs.statSync(u.conf);
      assert.equal(st.uid, 0, "still root's");
      assert.equal(read(u.conf)!.toString(), "trusted-users = root\n");
      assert.equal(read(u.machines), null);
    }
  });

  test("#9 other owners in the chain: another user's machines file, a root-owned ~/.config/nix, a root-owned ~/.config", async () => {
    const u = mkUser("f9b");
    const other = mkUser("f9o");
    userConf(u);
    fs.writeFileSync(u.machines, "ssh://x x86_64-linux\n");
    fs.chownSync(u.machines, other.uid, other.gid);
    assertRefusal(await use(u), u.machines, new RegExp(`owned by ${other.name} \\(uid ${other.uid}\\)`));
    assert.equal(fs.statSync(u.machines).uid, other.uid);
    fs.rmSync(u.machines);
    fs.chownSync(u.dir, 0, 0);
    assertRefusal(await use(u), u.dir, /owned by root/);
    assert.equal(fs.statSync(u.dir).uid, 0);
    fs.chownSync(u.dir, u.uid, u.gid);
    fs.chownSync(path.dirname(u.dir), 0, 0);
    assertRefusal(await use(u), path.dirname(u.dir), /owned by root/);
    fs.chownSync(path.dirname(u.dir), u.uid, u.gid);
    // And reset, when nix.conf became root's after use.
    assert.ok([0, 1].includes((await use(u)).code));
    fs.chownSync(u.conf, 0, 0);
    assertRefusal(await reset(u), u.conf, /owned by root/);
    assert.equal(fs.statSync(u.conf).uid, 0);
  });

  // ---------------------------------------------------------------------------------------------------
  // Finding 7 (use part): the refusals came out as exit 70 with a stack trace. Through the real CLI.

  test("#7 through the command line: a linked nix.conf, a linked ~/.config/nix: exit 2, one line, JSON too", () => {
    const u = mkUser("f7");
    userConf(u);
    const v = victim("f7");
    sh(u, `mv ${u.conf} ${u.home}/my.conf && ln -s ${u.home}/my.conf ${u.conf}`);
    assertRefusal(cli(["use", LINE, "--user", u.name]), u.conf, /symbolic link/);
    const j = cli(["use", LINE, "--user", u.name, "--json"]);
    assert.equal(j.code, 2);
    assert.equal((JSON.parse(j.stdout) as { path: string }).path, u.conf);
    sh(u, `rm ${u.conf} && mv ${u.dir} ${u.home}/nixdir && ln -s ${u.home}/nixdir ${u.dir}`);
    assertRefusal(cli(["use", LINE, "--user", u.name]), u.dir, /symbolic link/);
    // reset, when the link appears after use.
    sh(u, `rm ${u.dir} && mkdir ${u.dir}`);
    const ok = cli(["use", LINE, "--user", u.name]);
    assert.ok(ok.code === 0 || ok.code === 1, ok.stdout + ok.stderr);
    sh(u, `mv ${u.conf} ${u.home}/my2.conf && ln -s ${v.file} ${u.conf}`);
    assertRefusal(cli(["reset", "--user", u.name]), u.conf, /symbolic link/);
    const rj = cli(["reset", "--user", u.name, "--json"]);
    assert.equal(rj.code, 2);
    assert.equal((JSON.parse(rj.stdout) as { path: string }).path, u.conf);
    assertVictimIntact(v);
  });

  test("#7 an immutable ~/.config/nix (chattr +i): exit 2, one line naming it, no trace", (t) => {
    const u = mkUser("imm");
    userConf(u);
    const r0 = spawnSync("chattr", ["+i", u.dir], { encoding: "utf8", timeout: 10_000 });
    if (r0.status !== 0) {
      t.skip(`the file system does not support chattr +i: ${r0.stderr.trim()}`);
      return;
    }
    try {
      const r = cli(["use", LINE, "--user", u.name]);
      assertRefusal(r, u.dir, /Operation not permitted.*immutable/);
      const j = cli(["use", LINE, "--user", u.name, "--json"]);
      assert.equal(j.code, 2);
      assert.match((JSON.parse(j.stdout) as { message: string }).message, /Operation not permitted/);
      assert.equal(read(u.conf)!.toString(), "max-jobs = 4\n");
      assert.equal(read(u.machines), null);
      // An immutable nix.conf (the directory writable): the same.
      spawnSync("chattr", ["-i", u.dir], { timeout: 10_000 });
      spawnSync("chattr", ["+i", u.conf], { timeout: 10_000 });
      assertRefusal(cli(["use", LINE, "--user", u.name]), u.dir, /Operation not permitted/);
      assert.equal(read(u.conf)!.toString(), "max-jobs = 4\n");
    } finally {
      spawnSync("chattr", ["-i", u.dir], { timeout: 10_000 });
      spawnSync("chattr", ["-i", u.conf], { timeout: 10_000 });
    }
  });

  // ---------------------------------------------------------------------------------------------------
  // The user running use for themselves.

  test("a user running use for themselves keeps the record in their own ~/.local/state, and may not act for others", () => {
    const u = mkUser("self");
    const other = mkUser("selfo");
    userConf(u);
    const node = process.execPath;
    const run = (args: string[], env: Record<string, string> = {}) =>
      asUser(
        u,
        ["sh", "-c", `cd ${REPO} && exec "$@"`, "sh", node, "--import", "tsx", "src/cli.ts", ...args],
        env,
      );
    const r = run(["use", LINE, "--user", u.name]);
    assert.ok(r.code === 0 || r.code === 1, r.stdout + r.stderr);
    const own = path.join(u.home, ".local/state/nix-builders/use", `${u.uid}-${u.name}`, "state.json");
    assert.equal(fs.statSync(own).uid, u.uid);
    assert.equal(read(stateFileOf(u)), null, "nothing in root's directory");
    // Root never reads it.
    const rr = cli(["reset", "--user", u.name]);
    assert.equal(rr.code, 0, rr.stdout + rr.stderr);
    assert.match(rr.stdout, /Nothing to reset/);
    assert.ok(read(u.machines), "root's reset touched nothing");
    const back = run(["reset", "--user", u.name]);
    assert.equal(back.code, 0, back.stdout + back.stderr);
    assert.equal(read(u.conf)!.toString(), "max-jobs = 4\n");
    // Another user's configuration: refused, one line.
    assertRefusal(run(["use", LINE, "--user", other.name]), other.name, /needs root/);
    // The same chain rules for the user's own run: a linked ~/.config/nix is refused.
    sh(u, `mv ${u.dir} ${u.home}/nixdir && ln -s ${u.home}/nixdir ${u.dir}`);
    assertRefusal(run(["use", LINE, "--user", u.name]), u.dir, /symbolic link/);
  });
});
