import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  currentLoadDir,
  defaultStateDir,
  escapeUri,
  loadMap,
  parseProcLocks,
  readCurrentLoad,
  slotFile,
  splitDev,
} from "../../src/host/current-load.js";

describe("pure helpers", () => {
  test("parseProcLocks: FLOCK, POSIX, waiters skipped, hex device", () => {
    const text = [
      "1: FLOCK  ADVISORY  WRITE 10203 fe:00:2146854 0 EOF",
      "1: -> FLOCK  ADVISORY  WRITE 10204 fe:00:2146854 0 EOF",
      "2: POSIX  ADVISORY  READ 999 103:0a:77 0 EOF",
      "3: OFDLCK ADVISORY  WRITE -1 00:19:42 0 EOF",
      "garbage",
      "",
    ].join("\n");
    assert.deepEqual(parseProcLocks(text), [
      {
        type: "FLOCK",
        mode: "ADVISORY",
        access: "WRITE",
        pid: 10203,
        major: 0xfe,
        minor: 0,
        inode: 2146854n,
      },
      { type: "POSIX", mode: "ADVISORY", access: "READ", pid: 999, major: 0x103, minor: 0x0a, inode: 77n },
      { type: "OFDLCK", mode: "ADVISORY", access: "WRITE", pid: -1, major: 0, minor: 0x19, inode: 42n },
    ]);
  });
  test("splitDev: old and new dev_t encodings", () => {
    assert.deepEqual(splitDev(0xfe00n), { major: 254, minor: 0 });
    assert.deepEqual(splitDev(0x0803n), { major: 8, minor: 3 });
    // major 259, minor 1 (nvme partitions): (259 << 8) | 1
    assert.deepEqual(splitDev((259n << 8n) | 1n), { major: 259, minor: 1 });
    // minor 300: low byte in bits 0-7, the rest from bit 20 on
    assert.deepEqual(splitDev((8n << 8n) | (300n & 0xffn) | ((300n & ~0xffn) << 12n)), {
      major: 8,
      minor: 300,
    });
  });
  test("escapeUri and paths", () => {
    assert.equal(escapeUri("ssh://nix@host"), "ssh:__nix@host");
    assert.equal(escapeUri("/tmp/bh/m7"), "_tmp_bh_m7");
    assert.equal(slotFile("/s", "ssh://nix@host", 0), "/s/current-load/ssh:__nix@host-0");
    assert.equal(currentLoadDir("/nix/var/nix"), "/nix/var/nix/current-load");
    assert.equal(defaultStateDir({}), "/nix/var/nix");
    assert.equal(defaultStateDir({ NIX_STATE_DIR: "/x" }), "/x");
  });
  test("injected /proc/locks text decides busy slots", () => {
    const dir = mkdtempSync(join(tmpdir(), "nb-cl-"));
    try {
      mkdirSync(join(dir, "current-load"));
      const f = slotFile(dir, "ssh://a", 1);
      writeFileSync(f, "");
      const st = statSync(f, { bigint: true });
      const { major, minor } = splitDev(st.dev);
      const hex = (n: number) => n.toString(16).padStart(2, "0");
      const line = (type: string) =>
        `1: ${type}  ADVISORY  WRITE 42 ${hex(major)}:${hex(minor)}:${st.ino} 0 EOF`;
      const a = readCurrentLoad([{ storeUri: "ssh://a", maxJobs: 2 }], {
        stateDir: dir,
        procLocks: line("FLOCK"),
      });
      assert.deepEqual(
        a.machines[0]!.slots.map((s) => [s.slot, s.exists, s.busy, s.holders]),
        [
          [0, false, false, []],
          [1, true, true, [42]],
        ],
      );
      // POSIX locks do not block the hook's flock.
      const b = readCurrentLoad([{ storeUri: "ssh://a", maxJobs: 2 }], {
        stateDir: dir,
        procLocks: line("POSIX"),
      });
      assert.equal(b.machines[0]!.busy, 0);
      // Slots beyond maxJobs are not counted (the hook only probes 0…maxJobs-1).
      const c = readCurrentLoad([{ storeUri: "ssh://a", maxJobs: 1 }], {
        stateDir: dir,
        procLocks: line("FLOCK"),
      });
      assert.equal(c.machines[0]!.busy, 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const HAVE_FLOCK = existsSync("/usr/bin/flock") && existsSync("/proc/locks");

describe("real flocks held by a child process", {
  skip: !HAVE_FLOCK && "needs flock(1) and /proc/locks",
}, () => {
  let stateDir = "";
  let holder: ChildProcess | null = null;
  const m1 = "ssh://nix@builder-1";
  const m2 = "/tmp/some/local-store";

  before(async () => {
    stateDir = mkdtempSync(join(tmpdir(), "nb-state-"));
    mkdirSync(currentLoadDir(stateDir));
    // m1: slots 0 and 2 held; m2: slot 0 exists but is free; slot 1 held with a shared lock.
    const held = [slotFile(stateDir, m1, 0), slotFile(stateDir, m1, 2)];
    writeFileSync(slotFile(stateDir, m2, 0), "");
    const script =
      'for f in "$@"; do exec {fd}>"$f"; flock -x -n "$fd" || exit 3; done; ' +
      'exec {s}>"$SHARED"; flock -s -n "$s" || exit 4; echo ready; exec sleep 600';
    holder = spawn("bash", ["-c", script, "holder", ...held], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, SHARED: slotFile(stateDir, m2, 1) },
    });
    await new Promise<void>((resolve, reject) => {
      holder!.stdout!.once("data", () => resolve());
      holder!.once("exit", (c) => reject(new Error(`holder exited ${c}`)));
    });
  });
  after(() => {
    if (holder && holder.exitCode === null) holder.kill("SIGKILL");
    rmSync(stateDir, { recursive: true, force: true });
  });

  test("busy counts match the held locks", () => {
    const load = readCurrentLoad(
      [
        { storeUri: m1, maxJobs: 4 },
        { storeUri: m2, maxJobs: 2 },
        { storeUri: "ssh://never-used", maxJobs: 3 },
      ],
      { stateDir },
    );
    assert.equal(load.locksReadable, true);
    assert.deepEqual(
      load.machines.map((m) => [m.storeUri, m.busy, m.slots.map((s) => s.busy)]),
      [
        [m1, 2, [true, false, true, false]],
        [m2, 1, [false, true]],
        ["ssh://never-used", 0, [false, false, false]],
      ],
    );
    // /proc/locks names the process that took the lock (here the short-lived flock(1)), not every holder.
    assert.equal(load.machines[0]!.slots[0]!.holders.length, 1);
    assert.deepEqual(
      [...loadMap(load)],
      [
        [m1, 2],
        [m2, 1],
        ["ssh://never-used", 0],
      ],
    );
  });

  test("reading takes no lock and creates no file", () => {
    const before = readdirSync(currentLoadDir(stateDir)).sort();
    readCurrentLoad(
      [
        { storeUri: "ssh://fresh", maxJobs: 2 },
        { storeUri: m2, maxJobs: 2 },
      ],
      { stateDir },
    );
    assert.deepEqual(readdirSync(currentLoadDir(stateDir)).sort(), before);
    // The free slot is still free for Nix: a non-blocking exclusive flock succeeds.
    const free = spawnSync("flock", ["-x", "-n", slotFile(stateDir, m2, 0), "true"]);
    assert.equal(free.status, 0);
    // The held slot is still held.
    const busy = spawnSync("flock", ["-x", "-n", slotFile(stateDir, m1, 0), "true"]);
    assert.notEqual(busy.status, 0);
  });

  test("a released lock reads as free", async () => {
    const f = slotFile(stateDir, "ssh://brief", 0);
    // One process holds the lock itself (bash execs into sleep), so killing it releases the lock.
    const child = spawn("bash", ["-c", 'exec {fd}>"$1"; flock -x "$fd"; exec sleep 30', "brief", f], {
      stdio: "ignore",
    });
    const seen = async (want: number): Promise<void> => {
      for (let i = 0; i < 100; i++) {
        if (
          readCurrentLoad([{ storeUri: "ssh://brief", maxJobs: 1 }], { stateDir }).machines[0]!.busy === want
        )
          return;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.fail(`busy never became ${want}`);
    };
    await seen(1);
    await new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.kill("SIGKILL");
    });
    await seen(0);
  });

  test("missing state directory: everything free, nothing created", () => {
    const nowhere = join(stateDir, "does-not-exist");
    const load = readCurrentLoad([{ storeUri: m1, maxJobs: 2 }], { stateDir: nowhere });
    assert.equal(load.machines[0]!.busy, 0);
    assert.equal(existsSync(nowhere), false);
  });
});
