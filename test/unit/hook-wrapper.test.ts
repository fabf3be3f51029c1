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
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { joinEvents, readEvents, remoteBuilds } from "../../src/app/builds-store.js";
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

/** Wait until the recorders have written an end (or a no-machine try) for every accepted build. */
async function settle(state: string, accepted: number, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const recs = joinEvents(readEvents(state)).filter((r) => r.reply === "accept");
    if (recs.length >= accepted && recs.every((r) => r.result !== "in-progress")) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}

function sameForNix(a: ScenarioRun, b: ScenarioRun, what: string): void {
  assert.equal(b.exitCode, a.exitCode, `${what}: exit code`);
  assert.deepEqual(b.built, a.built, `${what}: which derivations were built`);
  assert.deepEqual(normalised(b.lines), normalised(a.lines), `${what}: the client's log lines`);
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
    const run = await runScenario({ wrapper: true, env: { NIX_BUILDERS_STATE_DIR: state } });
    try {
      sameForNix(plain, run, "wrapper");
      const on = buildingOn(run.lines);
      assert.equal(on.size, 6, "six derivations went out");
      await settle(state, on.size);
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
        env: { ...process.env, NIX_BUILDERS_STATE_DIR: state },
        encoding: "utf8",
      });
      const j = JSON.parse(out) as { builds: { drv: string; builder: string; result: string }[] };
      assert.equal(j.builds.length, expected.size);
      for (const b of j.builds)
        if (b.drv !== run.drvs["a1"]) assert.equal(b.builder.split(run.dir).join("<R>"), on.get(b.drv));
      // Signals for watch: one file per `cannot build on`.
      const sigs = spawnSync("ls", [join(state, "watch", "signals")], { encoding: "utf8" })
        .stdout.trim()
        .split("\n");
      assert.ok(sigs.length >= 1);
      const sig = JSON.parse(readFileSync(join(state, "watch", "signals", sigs[0]!), "utf8")) as {
        builder: string;
      };
      assert.equal(sig.builder, "ssh://bad.invalid");
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

  test("fail-open: a read-only state directory", async () => {
    const fs = tmpfs("ro,mode=0755,size=64k");
    try {
      const run = await runScenario({ wrapper: true, env: { NIX_BUILDERS_STATE_DIR: fs.dir } });
      run.cleanup();
      sameForNix(plain, run, "read-only");
    } finally {
      fs.done();
    }
  });

  test("fail-open: a full state directory (a small tmpfs, filled)", async () => {
    const fs = tmpfs("mode=0755,size=64k");
    try {
      mkdirSync(join(fs.dir, "builds"), { mode: 0o700 });
      spawnSync("dd", ["if=/dev/zero", `of=${join(fs.dir, "fill")}`, "bs=4k", "count=1000"]);
      const run = await runScenario({ wrapper: true, env: { NIX_BUILDERS_STATE_DIR: fs.dir } });
      run.cleanup();
      sameForNix(plain, run, "full");
    } finally {
      fs.done();
    }
  });

  test("fail-open: the recorder killed while the hook runs", async () => {
    // A recorder that reads a little of each copy, then is killed (SIGKILL): the tees lose their reader.
    const dir = mkdtempSync(join(tmpdir(), "nb-hookrk-"));
    const rec = join(dir, "rec.mjs");
    writeFileSync(
      rec,
      'import { createReadStream } from "node:fs";\n' +
        'createReadStream("", { fd: 3 }).once("data", () => process.kill(process.pid, "SIGKILL"));\n' +
        'process.stdin.once("data", () => {});\n',
    );
    try {
      const run = await runScenario({ wrapper: true, env: { NIX_BUILDERS_HOOK_RECORDER: rec } });
      run.cleanup();
      sameForNix(plain, run, "recorder killed");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("fail-open: the state directory's file system frozen (writes stall)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nb-hookfz-"));
    const img = join(dir, "img");
    const mnt = join(dir, "m");
    mkdirSync(mnt);
    execFileSync("truncate", ["-s", "8M", img]);
    execFileSync("mkfs.ext4", ["-q", img]);
    execFileSync("mount", ["-o", "loop", img, mnt]);
    chmodSync(mnt, 0o755);
    mkdirSync(join(mnt, "builds"), { mode: 0o700 });
    execFileSync("fsfreeze", ["-f", mnt]);
    try {
      const run = await runScenario({ wrapper: true, env: { NIX_BUILDERS_STATE_DIR: mnt } });
      run.cleanup();
      sameForNix(plain, run, "frozen");
    } finally {
      spawnSync("fsfreeze", ["-u", mnt]);
      // The recorders finish their writes once the file system thaws.
      await new Promise((r) => setTimeout(r, 1000));
      spawnSync("umount", ["-l", mnt]);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the recorder is the built one", () => {
    assert.ok(readFileSync(RECORDER, "utf8").includes("HookSession"));
  });
});
