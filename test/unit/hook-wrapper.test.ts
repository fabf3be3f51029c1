/**
 * The build-hook wrapper with real Nix 2.8: real remote builds through the real hook (chroot stores as
 * the machines, one machine unreachable, one build failing, one derivation no machine can take), once
 * with Nix's own hook and once with the wrapper in front of it. Nothing may change for Nix (the same
 * results, the same client log lines), and the records must name the builder Nix's own log names. Then
 * the recording side is broken four ways (a read-only state directory, a full tmpfs, the recorder killed,
 * a frozen file system) and every build must still end as without the wrapper.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { joinEvents, readEvents, remoteBuilds } from "../../src/app/builds-store.js";
import { collectSpool, readSpool, spoolSignals } from "../../src/app/hook-spool.js";
import { takeSignals } from "../../src/app/watch/signals.js";
import { CLI_NODE_ARGS } from "../support/cli.js";
import {
  buildingOn,
  haveNixBuild,
  normalised,
  RECORDER,
  runScenario,
  type ScenarioRun,
} from "../support/hook-scenario.js";

const isRoot = process.getuid?.() === 0;
const skip = !haveNixBuild()
  ? "nix-build (Nix 2.8) is not installed"
  : !isRoot
    ? "needs root (mounts)"
    : false;

function tmpState(): string {
  const d = mkdtempSync(join(tmpdir(), "nb-hookst-"));
  chmodSync(d, 0o755);
  return d;
}

/** Collect the spool until every accepted build has its end (the tees finish a moment after the hook). */
async function settle(spool: string, state: string, accepted: number, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    collectSpool(spool, state);
    const recs = joinEvents(readEvents(state)).filter((r) => r.reply === "accept");
    if (recs.length >= accepted && recs.every((r) => r.result !== "in-progress")) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}

function sameForNix(a: ScenarioRun, b: ScenarioRun, what: string): void {
  assert.equal(b.exitCode, a.exitCode, `${what}: exit code`);
  assert.deepEqual(b.built, a.built, `${what}: which derivations were built`);
  assert.deepEqual(normalised(b.lines), normalised(a.lines), `${what}: the client's log lines`);
  assert.deepEqual(buildingOn(b.lines), buildingOn(a.lines), `${what}: where each derivation was built`);
  const count = (r: ScenarioRun) => r.lines.filter((l) => /^building '/.test(l)).length;
  assert.equal(count(b), count(a), `${what}: one building line per build`);
}

describe("build-hook wrapper with real Nix 2.8", { skip }, () => {
  let plain: ScenarioRun;
  before(async () => {
    plain = await runScenario({});
  });
  after(() => plain?.cleanup());

  test("the plain run is the scenario: builds on b1 and b2, one build fails, one finds no machine", () => {
    assert.equal(plain.exitCode, 1);
    assert.deepEqual(plain.built, { x1: true, x2: true, x3: true, i1: true, i2: true, f1: false, a1: false });
    assert.ok(plain.lines.some((l) => l.startsWith("cannot build on 'ssh://bad.invalid'")));
  });

  test("with the wrapper: the same results and log lines, and records that name Nix's builder", async () => {
    const state = tmpState();
    const spool = join(state, "spool");
    const run = await runScenario({
      wrapper: true,
      env: { NIX_BUILDERS_STATE_DIR: state, NIX_BUILDERS_HOOK_SPOOL: spool },
    });
    try {
      sameForNix(plain, run, "wrapper");
      const on = buildingOn(run.lines);
      assert.equal(on.size, 6, "six derivations went out");
      // The wrapper made the spool directory (root's, 0700) and one pair of files per hook process.
      assert.equal(statSync(spool).mode & 0o777, 0o700);
      assert.ok((readSpool(spool) ?? []).length >= 7, "a pair per hook");
      // Signals for watch: the spool's `cannot build on` lines become the files watch takes.
      const sigDir = join(state, "watch", "signals");
      mkdirSync(join(state, "watch"), { mode: 0o700 });
      const seen = new Set<string>();
      assert.ok(spoolSignals(spool, sigDir, seen) >= 1);
      assert.equal(spoolSignals(spool, sigDir, seen), 0, "each line signalled once");
      const sigs = takeSignals(sigDir);
      assert.ok(sigs.length >= 1);
      assert.ok(sigs.every((sg) => sg.builder === "ssh://bad.invalid" && sg.reason.includes("bad.invalid")));
      await settle(spool, state, on.size);
      assert.deepEqual(readdirSync(spool), [], "the collector emptied the spool");
      const recs = remoteBuilds(joinEvents(readEvents(state)));
      // Exactly the derivations that went out, plus the one no machine could take.
      const expected = new Set([...on.keys(), run.drvs["a1"]!]);
      assert.deepEqual(new Set(recs.map((r) => r.drv)), expected);
      assert.equal(recs.length, expected.size, "one record per derivation");
      for (const r of recs) {
        if (r.drv === run.drvs["a1"]) {
          assert.notEqual(r.reply, "accept");
          assert.deepEqual(
            r.cannotBuild.map((c) => c.machine),
            ["ssh://bad.invalid"],
          );
          assert.match(r.cannotBuild[0]!.error, /bad\.invalid/);
          continue;
        }
        assert.equal(r.machine?.split(run.dir).join("<R>"), on.get(r.drv), `builder of ${r.drv}`);
        const failing = r.drv === run.drvs["f1"];
        assert.equal(r.result, failing ? "failure" : "success", r.drv);
        if (failing) assert.match(r.error ?? "", /failed with exit code 3/);
        assert.ok(r.endedAt !== null && r.endedAt >= r.startedAt);
      }
      // x86_64 builds met the unreachable machine first.
      const x1 = recs.find((r) => r.drv === run.drvs["x1"])!;
      assert.deepEqual(
        x1.cannotBuild.map((c) => c.machine),
        ["ssh://bad.invalid"],
      );
      // The CLI shows the same, as JSON.
      const out = execFileSync(process.execPath, [...CLI_NODE_ARGS, "builds", "--json"], {
        env: { ...process.env, NIX_BUILDERS_STATE_DIR: state, NIX_BUILDERS_HOOK_SPOOL: spool },
        encoding: "utf8",
      });
      const j = JSON.parse(out) as { builds: { drv: string; builder: string; result: string }[] };
      assert.equal(j.builds.length, expected.size);
      for (const b of j.builds)
        if (b.drv !== run.drvs["a1"]) assert.equal(b.builder.split(run.dir).join("<R>"), on.get(b.drv));
    } finally {
      run.cleanup();
      rmSync(state, { recursive: true, force: true });
    }
  });

  /** Mount a tmpfs (options given) at a fresh directory; returns it and its unmount. */
  function tmpfs(opts: string): { dir: string; done: () => void } {
    const dir = mkdtempSync(join(tmpdir(), "nb-hookfs-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", opts, "nb-hook-test", dir]);
    return {
      dir,
      done: () => {
        spawnSync("umount", ["-l", dir]);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }

  test("fail-open: a read-only spool", async () => {
    const fs = tmpfs("ro,mode=0700,size=64k");
    try {
      const run = await runScenario({ wrapper: true, env: { NIX_BUILDERS_HOOK_SPOOL: fs.dir } });
      run.cleanup();
      sameForNix(plain, run, "read-only");
      assert.deepEqual(readdirSync(fs.dir), []);
    } finally {
      fs.done();
    }
  });

  test("fail-open: a full spool (a small tmpfs, filled)", async () => {
    const fs = tmpfs("mode=0700,size=64k");
    try {
      spawnSync("dd", ["if=/dev/zero", `of=${join(fs.dir, "fill")}`, "bs=4k", "count=1000"]);
      const run = await runScenario({ wrapper: true, env: { NIX_BUILDERS_HOOK_SPOOL: fs.dir } });
      run.cleanup();
      sameForNix(plain, run, "full");
    } finally {
      fs.done();
    }
  });

  test("fail-open: the collector killed while it holds the lock; the next one takes over", async () => {
    // A collector that takes the lock as the real one does, then is killed (SIGKILL) at once.
    const state = tmpState();
    const spool = join(state, "spool");
    const rec = join(state, "rec.mjs");
    writeFileSync(
      rec,
      'import { writeFileSync } from "node:fs";\n' +
        `try { writeFileSync(${JSON.stringify(join(spool, ".collect.lock"))}, String(process.pid), { flag: "wx" }); } catch {}\n` +
        'process.kill(process.pid, "SIGKILL");\n',
    );
    try {
      const run = await runScenario({
        wrapper: true,
        env: {
          NIX_BUILDERS_HOOK_SPOOL: spool,
          NIX_BUILDERS_STATE_DIR: state,
          NIX_BUILDERS_HOOK_RECORDER: rec,
          NIX_BUILDERS_HOOK_COLLECT_EVERY: "1",
          NIX_BUILDERS_NODE: process.execPath,
        },
      });
      run.cleanup();
      sameForNix(plain, run, "collector killed");
      assert.ok(readdirSync(spool).includes(".collect.lock"), "a dead collector's lock is left");
      await settle(spool, state, 6);
      assert.equal(remoteBuilds(joinEvents(readEvents(state))).length, 7, "nothing was lost");
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });

  test("fail-open: the state directory's file system frozen (the collector's writes stall)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nb-hookfz-"));
    const img = join(dir, "img");
    const mnt = join(dir, "m");
    const spool = join(dir, "spool");
    mkdirSync(mnt);
    execFileSync("truncate", ["-s", "8M", img]);
    execFileSync("mkfs.ext4", ["-q", img]);
    execFileSync("mount", ["-o", "loop", img, mnt]);
    chmodSync(mnt, 0o755);
    execFileSync("fsfreeze", ["-f", mnt]);
    try {
      try {
        // The real collector, started after every hook: it blocks on the frozen file system.
        const run = await runScenario({
          wrapper: true,
          env: {
            NIX_BUILDERS_HOOK_SPOOL: spool,
            NIX_BUILDERS_STATE_DIR: mnt,
            NIX_BUILDERS_HOOK_COLLECT_EVERY: "1",
            NIX_BUILDERS_NODE: process.execPath,
          },
        });
        run.cleanup();
        sameForNix(plain, run, "frozen");
        assert.ok(readdirSync(spool).includes(".collect.lock"), "a collector is stalled");
      } finally {
        spawnSync("fsfreeze", ["-u", mnt]);
      }
      // Thawed: the stalled collector finishes, and every record is there.
      await settle(spool, mnt, 6);
      assert.equal(remoteBuilds(joinEvents(readEvents(mnt))).length, 7, "nothing was lost");
    } finally {
      spawnSync("fsfreeze", ["-u", mnt]);
      spawnSync("umount", ["-l", mnt]);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the collector is the built one", () => {
    assert.ok(readFileSync(RECORDER, "utf8").includes("collectSpool"));
  });
});
