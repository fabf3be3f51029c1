/**
 * The build-hook spool (libexec/build-hook, src/app/hook-spool.ts): the wrapper run for real with a
 * stand-in hook (its arguments name the real hook, as 2.30's `build-hook` list does), so that what it
 * spools, what it refuses and what it passes on can be checked byte for byte; and the spool's reader,
 * collector and signal scan on pairs made from the real protocol encoding.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { joinEvents, readEvents } from "../../src/app/builds-store.js";
import {
  collectSpool,
  hookAlive,
  parseSpoolName,
  readSpool,
  readSpoolEvents,
  SPOOL_FILE_MAX,
  spoolEvents,
  spoolSignals,
} from "../../src/app/hook-spool.js";
import { takeSignals } from "../../src/app/watch/signals.js";
import { encodeHookRequest } from "../support/build-remote.js";
import { WRAPPER } from "../support/hook-scenario.js";

const isRoot = process.getuid?.() === 0;
const root = mkdtempSync(join(tmpdir(), "nb-spool-"));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
function fresh(): string {
  const d = join(root, `t${n++}`);
  mkdirSync(d, { mode: 0o700 });
  return d;
}

/** Run the wrapper with a stand-in hook (a shell command); returns its stderr (what Nix would read). */
function wrap(
  spool: string,
  script: string,
  input: Buffer | string = "",
  env: Record<string, string> = {},
  arg0 = "hook",
) {
  const r = spawnSync(WRAPPER, ["/bin/sh", "-c", script, arg0], {
    input,
    env: {
      PATH: "/usr/bin:/bin",
      NIX_BUILDERS_HOOK_SPOOL: spool,
      NIX_BUILDERS_HOOK_COLLECT_EVERY: "0",
      ...env,
    },
    maxBuffer: 1 << 24,
    timeout: 20_000,
  });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout };
}

const request = encodeHookRequest({
  builders: "ssh://b1 x86_64-linux - 1",
  system: "x86_64-linux",
  store: "/tmp/none",
  drvPath: "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv",
});

describe("the wrapper's spool", () => {
  test("every byte passes both ways; the pair holds exact copies; the directory is made 0700", () => {
    const spool = join(fresh(), "spool");
    // The stand-in hook keeps its stdin in a file ($0), then answers.
    const got = join(root, `stdin-${n}`);
    const r = wrap(spool, 'cat > "$0"; printf "# accept\\nssh://b1\\n" >&2; exit 7', request, {}, got);
    assert.equal(r.status, 7, "the hook's exit status");
    assert.deepEqual(readFileSync(got), request, "the hook reads exactly Nix's bytes");
    const expected = Buffer.from("# accept\nssh://b1\n");
    assert.deepEqual(r.stderr, expected, "Nix reads exactly the hook's bytes");
    assert.equal(r.stdout.length, 0, "the hook's stdout goes to stderr, as Nix sets it up");
    const files = readdirSync(spool).sort();
    assert.equal(files.length, 2);
    assert.match(files[0]!, /^\d+-\d{16}\.err$/);
    assert.deepEqual(readFileSync(join(spool, files[1]!)), request, ".in: the requests");
    assert.deepEqual(readFileSync(join(spool, files[0]!)), expected, ".err: the hook's stderr");
    if (isRoot) assert.equal(spawnSync("stat", ["-c", "%a", spool]).stdout.toString().trim(), "700");
    const events = readSpoolEvents(spool);
    const recs = joinEvents(events);
    assert.equal(recs.length, 1);
    assert.equal(recs[0]!.drv, "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv");
    assert.equal(recs[0]!.machine, "ssh://b1");
    assert.equal(recs[0]!.result, "success", "the hook has ended: the build is over");
  });

  test("each copy is capped at 128 KiB; the hook still gets every byte", () => {
    const spool = join(fresh(), "spool");
    const big = Buffer.alloc(300 << 10, 0x61);
    const r = wrap(spool, "wc -c >&2", big);
    assert.equal(r.stderr.toString().trim(), String(big.length));
    const inFile = readdirSync(spool).find((f) => f.endsWith(".in"))!;
    assert.equal(readFileSync(join(spool, inFile)).length, SPOOL_FILE_MAX);
  });

  test("no spooling at 256 waiting pairs, and recording off spools nothing", () => {
    const spool = fresh();
    for (let i = 0; i < 256; i++) writeFileSync(join(spool, `9${i}-1796690000000000.err`), "");
    const r = wrap(spool, "echo ran >&2");
    assert.equal(r.stderr.toString(), "ran\n");
    assert.equal(readdirSync(spool).length, 256);
    const off = join(fresh(), "spool");
    assert.equal(wrap(off, "echo ran >&2", "", { NIX_BUILDERS_HOOK_RECORD: "0" }).stderr.toString(), "ran\n");
    assert.throws(() => readdirSync(off), /ENOENT/);
  });

  test("a spool that is a link, or another user's, is not used; the hook runs the same", {
    skip: !isRoot && "needs root (chown)",
  }, () => {
    const d = fresh();
    const target = join(d, "elsewhere");
    mkdirSync(target, { mode: 0o700 });
    symlinkSync(target, join(d, "link"));
    assert.equal(wrap(join(d, "link"), "echo ran >&2").stderr.toString(), "ran\n");
    assert.deepEqual(readdirSync(target), [], "nothing through the link");
    const theirs = join(d, "theirs");
    mkdirSync(theirs, { mode: 0o777 });
    chownSync(theirs, 65534, 65534);
    assert.equal(wrap(theirs, "echo ran >&2").stderr.toString(), "ran\n");
    assert.deepEqual(readdirSync(theirs), []);
    // In a directory another user owns (who could swap the spool for another): not used either.
    const parent = join(d, "parent");
    mkdirSync(parent, { mode: 0o755 });
    chownSync(parent, 65534, 65534);
    assert.equal(wrap(join(parent, "spool"), "echo ran >&2").stderr.toString(), "ran\n");
    assert.deepEqual(readdirSync(parent), []);
  });

  test("a spool others may write is never read or collected", () => {
    const spool = join(fresh(), "spool");
    wrap(spool, 'cat >/dev/null; printf "# accept\\nssh://b1\\n" >&2', request);
    chmodSync(spool, 0o777);
    assert.equal(readSpool(spool), null);
    assert.deepEqual(readSpoolEvents(spool), []);
    const state = fresh();
    assert.equal(collectSpool(spool, state).skipped, true);
    chmodSync(spool, 0o700);
    assert.equal(readSpool(spool)?.length, 1);
  });
});

describe("the spool's reader, collector and signals", () => {
  function pair(spool: string, pid: number, startMs: number, input: Buffer, err: string, errAt: number) {
    const name = `${pid}-${startMs}000`;
    writeFileSync(join(spool, `${name}.in`), input, { mode: 0o600 });
    writeFileSync(join(spool, `${name}.err`), err, { mode: 0o600 });
    utimesSync(join(spool, `${name}.err`), errAt / 1000, errAt / 1000);
    return name;
  }
  const cannot =
    '@nix {"action":"msg","level":0,"msg":"cannot build on \'ssh://b0\': error: cannot connect to \'b0\'"}\n';

  test("names, times and the running hook", () => {
    assert.deepEqual(parseSpoolName("123-1796690921539930"), { pid: 123, startMs: 1796690921539 });
    assert.equal(parseSpoolName("../x-1"), null);
    assert.equal(hookAlive(process.pid, Date.now() - process.uptime() * 1000), true);
    assert.equal(hookAlive(process.pid, 1000), false, "the same pid, another start: another process");
    assert.equal(hookAlive(2 ** 22 + 1, Date.now()), false);
    const entry = {
      name: "1-1",
      pid: 1,
      startMs: 1000,
      input: request,
      err: Buffer.from(`${cannot}# accept\nssh://b1\n`),
      inMtimeMs: 1500,
      errMtimeMs: 9000,
      finished: true,
    };
    const [r] = joinEvents(spoolEvents(entry));
    assert.equal(r!.startedAt, 1000, "the only try: the wrapper's start");
    assert.equal(r!.endedAt, 9000, "the end: the hook's last message");
    assert.deepEqual(r!.cannotBuild, [{ machine: "ssh://b0", error: "error: cannot connect to 'b0'" }]);
    const running = joinEvents(spoolEvents({ ...entry, finished: false }));
    assert.equal(running[0]!.result, "in-progress");
  });

  test("collect: ended hooks move into builds.jsonl, a running one stays; one collector at a time", () => {
    const spool = fresh();
    const state = fresh();
    chmodSync(state, 0o755);
    const now = Date.now();
    pair(spool, 2 ** 22 + 3, now - 5000, request, `${cannot}# accept\nssh://b1\n`, now - 1000);
    // This process stands for a hook still running.
    const live = pair(
      spool,
      process.pid,
      Math.round(Date.now() - process.uptime() * 1000),
      request,
      "# accept\nssh://b2\n",
      now,
    );
    writeFileSync(join(spool, ".collect.lock"), String(process.pid));
    assert.equal(collectSpool(spool, state).skipped, true, "a live collector holds the lock");
    rmSync(join(spool, ".collect.lock"));
    assert.deepEqual(collectSpool(spool, state), { collected: 1, running: 1, failed: 0, skipped: false });
    assert.deepEqual(readdirSync(spool).sort(), [`${live}.err`, `${live}.in`]);
    const stored = joinEvents(readEvents(state));
    assert.equal(stored.length, 1);
    assert.equal(stored[0]!.machine, "ssh://b1");
    assert.equal(stored[0]!.result, "success");
    // Read together (spool first), the running one shows as in progress, nothing twice.
    const all = joinEvents([...readSpoolEvents(spool), ...readEvents(state), ...readSpoolEvents(spool)]);
    assert.deepEqual(all.map((r) => [r.machine, r.result]).sort(), [
      ["ssh://b1", "success"],
      ["ssh://b2", "in-progress"],
    ]);
  });

  test("a state directory that cannot be written keeps the pair in the spool", () => {
    const spool = fresh();
    const state = fresh();
    chmodSync(state, 0o777); // others may write it: never written
    pair(spool, 2 ** 22 + 5, Date.now() - 5000, request, "# accept\nssh://b1\n", Date.now());
    assert.equal(collectSpool(spool, state).failed, 1);
    assert.equal(readSpool(spool)?.length, 1);
  });

  test("signals: one file per new `cannot build on`, in watch's format, once", () => {
    const spool = fresh();
    const state = fresh();
    pair(spool, 2 ** 22 + 7, Date.now() - 2000, request, `${cannot}${cannot}# decline\n`, Date.now());
    pair(spool, 2 ** 22 + 9, Date.now() - 90_000, request, cannot, Date.now() - 60_000);
    const dir = join(state, "signals");
    const seen = new Set<string>();
    assert.equal(spoolSignals(spool, dir, seen), 2, "two lines of the recent pair; the old pair is skipped");
    assert.equal(spoolSignals(spool, dir, seen), 0);
    const sigs = takeSignals(dir);
    assert.equal(sigs.length, 2);
    assert.deepEqual(
      sigs.map((s) => [s.builder, s.reason]),
      [
        ["ssh://b0", "cannot build on 'ssh://b0': error: cannot connect to 'b0'"],
        ["ssh://b0", "cannot build on 'ssh://b0': error: cannot connect to 'b0'"],
      ],
    );
  });
});
