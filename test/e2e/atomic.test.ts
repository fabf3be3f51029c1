import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import {
  acquireLock,
  atomicWrite,
  LOCK_NAME,
  LockTimeoutError,
  managedTarget,
} from "../../src/host/atomic.js";
import { runAs } from "../../src/host/run-as.js";
import { lookupUser } from "../../src/host/users.js";

const THIS_FILE = fileURLToPath(import.meta.url);
const REPO = path.resolve(path.dirname(THIS_FILE), "../..");

// ---------------------------------------------------------------------------------------------------------
// Child mode: this file doubles as the crash-test writer (NB_ATOMIC_CHILD=loop) and as a one-shot writer
// run as another user (NB_ATOMIC_CHILD=once).

const childMode = process.env.NB_ATOMIC_CHILD;
if (childMode === "loop") {
  const target = process.env.NB_TARGET!;
  const a = fs.readFileSync(process.env.NB_A!);
  const b = fs.readFileSync(process.env.NB_B!);
  let i = 0;
  process.stdout.write("ready\n");
  for (;;) {
    await atomicWrite(target, i++ % 2 === 0 ? a : b, { lockTimeoutMs: 60_000 });
    process.stdout.write("w\n");
  }
} else if (childMode === "once") {
  const r = await atomicWrite(process.env.NB_TARGET!, process.env.NB_CONTENT!, { lockTimeoutMs: 5000 });
  process.stdout.write(JSON.stringify(r));
} else {
  runTests();
}

function runTests(): void {
  const isRoot = process.getuid?.() === 0;
  let tmp = "";
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "nb-atomic-"));
  });
  after(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  const sub = (name: string): string => {
    const d = path.join(tmp, name);
    fs.mkdirSync(d, { recursive: true });
    return d;
  };
  const backupsOf = (dir: string): string[] => fs.readdirSync(dir).filter((n) => n.endsWith(".bak"));

  describe("atomicWrite round trips", () => {
    it("creates a new file with mode 0644 and no backup", async () => {
      const d = sub("create");
      const f = path.join(d, "nix.conf");
      const r = await atomicWrite(f, "max-jobs = 0\n");
      assert.deepEqual(r, { status: "written", path: f, created: true, backup: null });
      assert.equal(fs.readFileSync(f, "utf8"), "max-jobs = 0\n");
      assert.equal(fs.statSync(f).mode & 0o7777, 0o644);
      assert.deepEqual(
        fs.readdirSync(d).sort(),
        [LOCK_NAME, "nix.conf"].sort(),
        "no temp files or backups are left behind",
      );
    });

    it("replaces content, backs up the old bytes, and a second identical write changes nothing", async () => {
      const d = sub("replace");
      const f = path.join(d, "nix.conf");
      fs.writeFileSync(f, "old\n", { mode: 0o600 });
      const oldIno = fs.statSync(f).ino;
      const oldMtime = fs.statSync(f).mtimeMs;
      const when = new Date("2024-05-01T12:34:56.789Z");
      const r = await atomicWrite(f, "new\n", { now: () => when });
      assert.equal(r.status, "written");
      const backup = `${f}.nix-builders.2024-05-01T12:34:56.789Z.bak`;
      assert.equal(r.status === "written" ? r.backup : null, backup);
      assert.equal(fs.readFileSync(backup, "utf8"), "old\n");
      assert.equal(fs.statSync(backup).ino, oldIno, "the backup is the old inode");
      assert.equal(fs.statSync(backup).mtimeMs, oldMtime);
      assert.equal(fs.statSync(f).mode & 0o7777, 0o600, "the mode of the replaced file is kept");
      assert.equal(fs.readFileSync(f, "utf8"), "new\n");

      const st1 = fs.statSync(f);
      await new Promise((res) => setTimeout(res, 20));
      const r2 = await atomicWrite(f, "new\n");
      assert.deepEqual(r2, { status: "unchanged", path: f, metadataFixed: false });
      const st2 = fs.statSync(f);
      assert.equal(st2.ino, st1.ino, "no rename");
      assert.equal(st2.mtimeMs, st1.mtimeMs, "same mtime");
      assert.equal(backupsOf(d).length, 1, "no second backup");
    });

    it("an explicit mode applies; identical content only fixes metadata in place", async () => {
      const d = sub("mode");
      const f = path.join(d, "machines");
      await atomicWrite(f, "x\n", { mode: 0o640 });
      assert.equal(fs.statSync(f).mode & 0o7777, 0o640);
      const ino = fs.statSync(f).ino;
      const r = await atomicWrite(f, "x\n", { mode: 0o644 });
      assert.deepEqual(r, { status: "unchanged", path: f, metadataFixed: true });
      assert.equal(fs.statSync(f).mode & 0o7777, 0o644);
      assert.equal(fs.statSync(f).ino, ino);
      assert.equal(backupsOf(d).length, 0);
    });

    it("two backups in the same millisecond get distinct names", async () => {
      const d = sub("samems");
      const f = path.join(d, "c");
      const when = new Date("2024-01-01T00:00:00.000Z");
      await atomicWrite(f, "1");
      await atomicWrite(f, "2", { now: () => when });
      await atomicWrite(f, "3", { now: () => when });
      const b = backupsOf(d).sort();
      assert.deepEqual(b, [
        "c.nix-builders.2024-01-01T00:00:00.000Z-1.bak",
        "c.nix-builders.2024-01-01T00:00:00.000Z.bak",
      ]);
      assert.equal(fs.readFileSync(path.join(d, b[1]!), "utf8"), "1");
      assert.equal(fs.readFileSync(path.join(d, b[0]!), "utf8"), "2");
    });

    it("backup: false writes no backup", async () => {
      const d = sub("nobackup");
      const f = path.join(d, "c");
      await atomicWrite(f, "1");
      await atomicWrite(f, "2", { backup: false });
      assert.equal(backupsOf(d).length, 0);
    });

    it("refuses to replace a directory", async () => {
      const d = sub("dir");
      fs.mkdirSync(path.join(d, "x"));
      await assert.rejects(atomicWrite(path.join(d, "x"), "y"), /not a regular file/);
    });

    it("concurrent writers serialise: final content is one of them, every change backed up", async () => {
      const d = sub("concurrent");
      const f = path.join(d, "c");
      await atomicWrite(f, "start");
      const contents = Array.from({ length: 8 }, (_, i) => `content ${i}\n`.repeat(1000));
      const results = await Promise.all(contents.map((c) => atomicWrite(f, c)));
      assert.ok(results.every((r) => r.status === "written"));
      assert.ok(contents.includes(fs.readFileSync(f, "utf8")));
      const backups = backupsOf(d).map((n) => fs.readFileSync(path.join(d, n), "utf8"));
      assert.equal(backups.length, 8);
      assert.deepEqual(
        new Set(backups),
        new Set(["start", ...contents].filter((c) => c !== fs.readFileSync(f, "utf8"))),
      );
    });
  });

  describe("symlinks", () => {
    it("detects a NixOS-style link chain into the store and refuses to write", async () => {
      const root = sub("nixos");
      const store = path.join(root, "nix/store");
      fs.mkdirSync(path.join(store, "abc-nix.conf"), { recursive: true });
      const storeFile = path.join(store, "abc-nix.conf/nix.conf");
      fs.writeFileSync(storeFile, "managed\n");
      fs.mkdirSync(path.join(root, "etc/static/nix"), { recursive: true });
      fs.mkdirSync(path.join(root, "etc/nix"), { recursive: true });
      fs.symlinkSync(storeFile, path.join(root, "etc/static/nix/nix.conf"));
      fs.symlinkSync("../static/nix/nix.conf", path.join(root, "etc/nix/nix.conf"));
      const f = path.join(root, "etc/nix/nix.conf");
      assert.equal(managedTarget(f, store), storeFile);
      const r = await atomicWrite(f, "mine\n", { storeDir: store });
      assert.deepEqual(r, { status: "managed", path: f, target: storeFile });
      assert.equal(fs.readFileSync(storeFile, "utf8"), "managed\n");
      assert.ok(fs.lstatSync(f).isSymbolicLink());
      assert.equal(fs.existsSync(path.join(root, "etc/nix", LOCK_NAME)), false, "not even a lock file");
    });

    it("a directory that resolves into the store is managed too", () => {
      const root = sub("nixdir");
      const store = path.join(root, "nix/store");
      fs.mkdirSync(path.join(store, "xyz-etc-nix"), { recursive: true });
      fs.symlinkSync(path.join(store, "xyz-etc-nix"), path.join(root, "nixdir"));
      assert.equal(
        managedTarget(path.join(root, "nixdir/machines"), store),
        path.join(store, "xyz-etc-nix/machines"),
      );
    });

    it("a symlink outside the store is followed and kept", async () => {
      const d = sub("outside");
      fs.writeFileSync(path.join(d, "real.conf"), "a\n");
      fs.symlinkSync("real.conf", path.join(d, "link.conf"));
      const r = await atomicWrite(path.join(d, "link.conf"), "b\n", { storeDir: path.join(d, "store") });
      assert.equal(r.status, "written");
      assert.equal(r.path, path.join(fs.realpathSync(d), "real.conf"));
      assert.ok(fs.lstatSync(path.join(d, "link.conf")).isSymbolicLink());
      assert.equal(fs.readFileSync(path.join(d, "link.conf"), "utf8"), "b\n");
    });

    it("a dangling symlink is an error", async () => {
      const d = sub("dangling");
      fs.symlinkSync("nowhere", path.join(d, "x"));
      await assert.rejects(
        atomicWrite(path.join(d, "x"), "b", { storeDir: path.join(d, "store") }),
        /dangling/,
      );
    });
  });

  describe("lock", () => {
    it("a held lock makes a writer time out with the holder's pid, and release lets it through", async () => {
      const d = sub("lock");
      const f = path.join(d, "c");
      const lock = await acquireLock(d);
      try {
        await assert.rejects(atomicWrite(f, "x", { lockTimeoutMs: 300 }), (e: unknown) => {
          assert.ok(e instanceof LockTimeoutError);
          assert.equal(e.holderPid, process.pid);
          return true;
        });
      } finally {
        lock.release();
      }
      assert.equal((await atomicWrite(f, "x", { lockTimeoutMs: 300 })).status, "written");
    });

    it("a lock held by a process that was killed with SIGKILL does not block", async () => {
      const d = sub("killedholder");
      // A child that takes the lock and then sleeps forever.
      const child = spawn(
        process.execPath,
        [
          "--import",
          "tsx",
          "--input-type=module",
          "-e",
          `const m = await import(${JSON.stringify(path.join(REPO, "src/host/atomic.ts"))});
           await m.acquireLock(${JSON.stringify(d)}); process.stdout.write("locked\\n"); setInterval(() => {}, 1e6);`,
        ],
        { cwd: REPO, stdio: ["ignore", "pipe", "inherit"] },
      );
      await new Promise<void>((res) => child.stdout.once("data", () => res()));
      await assert.rejects(atomicWrite(path.join(d, "c"), "x", { lockTimeoutMs: 200 }), LockTimeoutError);
      child.kill("SIGKILL");
      await new Promise((res) => child.once("close", res));
      const t0 = Date.now();
      assert.equal((await atomicWrite(path.join(d, "c"), "x", { lockTimeoutMs: 2000 })).status, "written");
      assert.ok(Date.now() - t0 < 1500);
    });
  });

  describe("lock removal", () => {
    it("releaseAndRemove: a waiter on the removed lock file starts over, so two holders never overlap", async () => {
      const d = sub("lockremove");
      const lockPath = path.join(d, LOCK_NAME);
      const a = await acquireLock(d);
      // B opens the lock file now and waits on it; A removes the file and releases.
      let bHeld = false;
      const b = acquireLock(d, 10_000).then((l) => {
        bHeld = true;
        return l;
      });
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(bHeld, false, "B waits while A holds the lock");
      a.releaseAndRemove();
      const bl = await b;
      // B holds the file that is at the path now (it started over on a new one), so C must wait for B.
      assert.ok(fs.existsSync(lockPath), "B made the lock file again");
      await assert.rejects(acquireLock(d, 300), LockTimeoutError);
      bl.releaseAndRemove();
      assert.equal(fs.existsSync(lockPath), false);
      (await acquireLock(d, 1000)).release();
    });
  });

  describe("crash safety", () => {
    it("kill -9 at random points (60 rounds): the target is always old or new, never partial or missing", async () => {
      const d = sub("crash");
      const f = path.join(d, "nix.conf");
      const size = 512 * 1024;
      const initial = Buffer.alloc(size, 0x30);
      const a = Buffer.alloc(size, 0x41);
      const b = Buffer.alloc(size + 4096, 0x42);
      fs.writeFileSync(path.join(tmp, "A"), a);
      fs.writeFileSync(path.join(tmp, "B"), b);
      fs.writeFileSync(f, initial);
      const valid = [initial, a, b];
      let sawTemp = 0;
      let writesSeen = 0;
      for (let round = 0; round < 60; round++) {
        const child = spawn(process.execPath, ["--import", "tsx", THIS_FILE], {
          cwd: REPO,
          env: {
            ...process.env,
            NB_ATOMIC_CHILD: "loop",
            NB_TARGET: f,
            NB_A: path.join(tmp, "A"),
            NB_B: path.join(tmp, "B"),
          },
          stdio: ["ignore", "pipe", "inherit"],
        });
        // Wait until the child has completed two writes (so the count below does not depend on how
        // loaded the machine is), then kill it at a random point.
        await new Promise<void>((res) => {
          let out = "";
          const onData = (d: Buffer) => {
            out += d.toString();
            if ((out.match(/^w$/gm) ?? []).length >= 2) {
              child.stdout.off("data", onData);
              res();
            }
          };
          child.stdout.on("data", onData);
        });
        await new Promise((res) => setTimeout(res, Math.floor(Math.random() * 80)));
        child.kill("SIGKILL");
        await new Promise((res) => child.once("close", res));

        const now = fs.readFileSync(f);
        assert.ok(
          valid.some((v) => v.equals(now)),
          `round ${round}: target has ${now.length} bytes, not a complete version`,
        );
        const names = fs.readdirSync(d);
        if (names.some((n) => n.includes(".nix-builders.tmp."))) sawTemp++;
        for (const n of names.filter((x) => x.endsWith(".bak"))) {
          const bytes = fs.readFileSync(path.join(d, n));
          assert.ok(
            valid.some((v) => v.equals(bytes)),
            `round ${round}: backup ${n} is partial`,
          );
          fs.unlinkSync(path.join(d, n));
          writesSeen++;
        }
        // The next writer is never blocked by the dead one, and cleans up its temp files.
        const t0 = Date.now();
        const r = await atomicWrite(f, initial, { lockTimeoutMs: 3000, backup: false });
        assert.notEqual(r.status, "managed");
        assert.ok(Date.now() - t0 < 2500, `round ${round}: next writer waited ${Date.now() - t0} ms`);
        assert.deepEqual(
          fs.readdirSync(d).filter((n) => n.includes(".nix-builders.tmp.")),
          [],
          "temp files of the killed writer are removed",
        );
      }
      assert.ok(writesSeen > 60, `the children completed ${writesSeen} writes in total`);
      // Not asserted (timing-dependent), but recorded: how often a kill landed between temp file and rename.
      console.log(
        `# crash test: ${writesSeen} completed writes, ${sawTemp}/60 kills left a temp file behind`,
      );
    });
  });

  describe("ownership as a real user", { skip: isRoot ? false : "needs root" }, () => {
    const tag = randomBytes(3).toString("hex");
    const USER = `nbtest-${tag}`;
    let uid = -1;
    let gid = -1;
    before(() => {
      execFileSync("useradd", [
        "--system",
        "--no-create-home",
        "--user-group",
        "--home-dir",
        "/nonexistent",
        USER,
      ]);
      const u = lookupUser(USER, { getent: false })!;
      uid = u.uid;
      gid = u.gid;
      fs.chmodSync(tmp, 0o755); // mkdtemp makes it 0700; the test user must be able to reach its files
    });
    after(() => {
      try {
        execFileSync("userdel", [USER], { stdio: "ignore" });
      } catch {
        // already gone
      }
      try {
        execFileSync("groupdel", [USER], { stdio: "ignore" });
      } catch {
        // removed by userdel
      }
    });

    it("chowns the new file to the given uid/gid and mode", async () => {
      const d = sub("own");
      const f = path.join(d, "nix.conf");
      await atomicWrite(f, "a\n", { uid, gid, mode: 0o640 });
      const st = fs.statSync(f);
      assert.deepEqual([st.uid, st.gid, st.mode & 0o7777], [uid, gid, 0o640]);
      const r = await runAs(USER, ["cat", f]);
      assert.equal(r.stdout, "a\n");
    });

    it("keeps the old owner and mode on replace, and the backup keeps them too", async () => {
      const d = sub("own2");
      const f = path.join(d, "nix.conf");
      fs.writeFileSync(f, "old\n");
      fs.chownSync(f, uid, gid);
      fs.chmodSync(f, 0o600);
      const r = await atomicWrite(f, "new\n");
      assert.equal(r.status, "written");
      const st = fs.statSync(f);
      assert.deepEqual([st.uid, st.gid, st.mode & 0o7777], [uid, gid, 0o600]);
      const bk = r.status === "written" ? r.backup! : "";
      const bst = fs.statSync(bk);
      assert.deepEqual([bst.uid, bst.gid, bst.mode & 0o7777], [uid, gid, 0o600]);
      assert.equal(fs.readFileSync(bk, "utf8"), "old\n");
    });

    it("the user itself can write its own file (non-root path, flock as that user)", async () => {
      const d = sub("userdir");
      fs.chownSync(d, uid, gid);
      const f = path.join(d, "nix.conf");
      const r = await runAs(USER, [process.execPath, "--import", "tsx", THIS_FILE], {
        cwd: REPO,
        env: { NB_ATOMIC_CHILD: "once", NB_TARGET: f, NB_CONTENT: "builders =\n" },
        timeoutMs: 30_000,
      });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).status, "written");
      const st = fs.statSync(f);
      assert.deepEqual([st.uid, st.gid, st.mode & 0o7777], [uid, gid, 0o644]);
      assert.equal(fs.statSync(path.join(d, LOCK_NAME)).uid, uid);
    });

    it("root does not follow a symlink planted by another user, nor a planted lock symlink", async () => {
      const d = sub("planted");
      const victim = path.join(d, "victim");
      fs.writeFileSync(victim, "precious\n");
      fs.symlinkSync(victim, path.join(d, "nix.conf"));
      fs.lchownSync(path.join(d, "nix.conf"), uid, gid);
      await assert.rejects(
        atomicWrite(path.join(d, "nix.conf"), "x", { storeDir: path.join(d, "store") }),
        /symlink owned by uid/,
      );
      const d2 = sub("plantedlock");
      fs.symlinkSync(victim, path.join(d2, LOCK_NAME));
      await assert.rejects(atomicWrite(path.join(d2, "nix.conf"), "x"), /ELOOP|symbolic links/);
      assert.equal(fs.readFileSync(victim, "utf8"), "precious\n");
    });

    it("a non-root user cannot give the file to root", async () => {
      const d = sub("userdir2");
      fs.chownSync(d, uid, gid);
      const f = path.join(d, "x");
      const r = await runAs(
        USER,
        [
          process.execPath,
          "--import",
          "tsx",
          "--input-type=module",
          "-e",
          `const m = await import(${JSON.stringify(path.join(REPO, "src/host/atomic.ts"))});
           try { await m.atomicWrite(${JSON.stringify(f)}, "x", { uid: 0, gid: 0 }); } catch (e) { console.log(e.code); }`,
        ],
        { cwd: REPO, timeoutMs: 30_000 },
      );
      assert.equal(r.stdout.trim(), "EPERM", r.stderr);
      assert.equal(fs.existsSync(f), false, "nothing half-written");
      assert.deepEqual(
        fs.readdirSync(d).filter((n) => n.includes("tmp")),
        [],
      );
    });
  });
}
