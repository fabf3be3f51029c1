// The engine with a scripted prober: the probe itself (ssh, handshake) is exercised on the lab
// (test/e2e/watch.test.ts); here the outcomes are chosen so that each rule of the engine is hit.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import type { Prober, RoundProbe, SourceMachine } from "../../src/app/watch/engine.js";
import { UnknownBuilderError, Watch } from "../../src/app/watch/engine.js";
import type { ProbeRecord } from "../../src/app/watch/model.js";
import { fileSource } from "../../src/app/watch/source.js";
import { parseNixVersion } from "../../src/nix/version.js";

const V = parseNixVersion("2.8")!;
const root = fs.mkdtempSync(join(tmpdir(), "watch-engine-"));
after(() => fs.rmSync(root, { recursive: true, force: true }));

const SRC = [
  "# lab",
  "ssh://nix-builder@b1 aarch64-linux - 1",
  "ssh://nix-builder@b2 aarch64-linux - 1",
  "ssh://nix-builder@b3 aarch64-linux - 1",
  "ssh://nix-builder@b4 x86_64-linux - 1",
  "",
].join("\n");

/** A prober whose answers the test sets per builder (host name → cause, or null for a pass). */
class Scripted implements Prober {
  answers = new Map<string, string | null>();
  local: RoundProbe["local"] = null;
  probed: string[][] = [];
  constructor(private readonly clock: { t: number }) {}
  async round(ms: readonly SourceMachine[]): Promise<RoundProbe> {
    this.probed.push(ms.map((m) => m.storeUri.replace(/^.*@/, "")));
    const results = new Map<string, ProbeRecord>();
    for (const m of ms) {
      const host = m.storeUri.replace(/^.*@/, "");
      const cause = this.answers.get(host) ?? null;
      results.set(
        m.storeUri,
        cause === null
          ? { at: this.clock.t, ok: true, phases: {} }
          : { at: this.clock.t, ok: false, cause, phases: {} },
      );
    }
    return { local: this.local, results };
  }
}

function setup(name: string, extra: Partial<ConstructorParameters<typeof Watch>[0]> = {}) {
  const dir = join(root, name);
  fs.mkdirSync(join(dir, "state"), { recursive: true, mode: 0o700 });
  const src = join(dir, "machines");
  fs.writeFileSync(src, SRC, { mode: 0o644 });
  const out = join(dir, "out", "machines");
  const clock = { t: 1_000_000 };
  const prober = new Scripted(clock);
  const mk = () =>
    new Watch({
      source: fileSource(src, out, V, "x86_64-linux"),
      prober,
      outputPath: out,
      stateDir: join(dir, "state"),
      intervalMs: 30_000,
      minWriteIntervalMs: 0,
      now: () => clock.t,
      random: () => 0,
      ...extra,
    });
  const tick = async (w: Watch) => {
    await w.round();
    clock.t += 30_000;
  };
  const read = () => fs.readFileSync(out, "utf8");
  return { dir, src, out, clock, prober, mk, tick, read };
}

describe("engine", () => {
  test("healthy: the output is the source byte for byte, written once", async () => {
    const s = setup("healthy");
    const w = s.mk();
    await s.tick(w);
    await s.tick(w);
    assert.equal(s.read(), SRC);
    const snap = w.snapshot();
    assert.equal(snap.output.writes, 1);
    assert.deepEqual(
      snap.builders.map((b) => b.state),
      ["up", "up", "up", "up"],
    );
    assert.deepEqual(snap.routing, [
      {
        system: "aarch64-linux",
        builders: ["ssh://nix-builder@b1", "ssh://nix-builder@b2", "ssh://nix-builder@b3"],
      },
      { system: "x86_64-linux", builders: ["ssh://nix-builder@b4"] },
    ]);
  });

  test("b2 down: held within 2 rounds, not probed during backoff, back after probation", async () => {
    const s = setup("quarantine");
    const w = s.mk();
    await s.tick(w);
    s.prober.answers.set("b2", "timeout");
    await s.tick(w);
    assert.equal(w.snapshot().builders[1]!.state, "suspect");
    assert.equal(s.read(), SRC);
    await s.tick(w);
    const b2 = w.snapshot().builders[1]!;
    assert.equal(b2.state, "quarantined");
    assert.equal(b2.disposition, "held");
    assert.equal(
      s.read(),
      SRC.replace("ssh://nix-builder@b2 aarch64-linux - 1", "ssh://nix-builder@b2 aarch64-linux - 0"),
    );
    // backoff 60 s: the next round (30 s later) skips b2
    s.prober.probed = [];
    await s.tick(w);
    assert.deepEqual(s.prober.probed[0], ["b1", "b3", "b4"]);
    s.prober.answers.delete("b2");
    await s.tick(w); // 60 s after: probed, passes → probation (still held)
    assert.equal(w.snapshot().builders[1]!.state, "probation");
    assert.equal(w.snapshot().builders[1]!.disposition, "held");
    await s.tick(w);
    assert.equal(w.snapshot().builders[1]!.state, "up");
    assert.equal(s.read(), SRC);
    assert.deepEqual(
      w.snapshot().builders[1]!.transitions.map((t) => `${t.from}>${t.to}:${t.reason}`),
      [
        "unknown>up:probe-ok",
        "up>suspect:timeout",
        "suspect>quarantined:timeout",
        "quarantined>probation:probe-ok",
        "probation>up:probe-ok",
      ],
    );
  });

  test("a deterministic cause holds at once", async () => {
    const s = setup("misconfigured");
    const w = s.mk();
    s.prober.answers.set("b3", "remote-untrusted");
    await s.tick(w);
    assert.equal(w.snapshot().builders[2]!.state, "misconfigured");
    assert.match(s.read(), /b3 aarch64-linux - 0/);
  });

  test("at most half held: the third failing builder is kept listed", async () => {
    const s = setup("share");
    const w = s.mk();
    await s.tick(w);
    for (const b of ["b1", "b2", "b3"]) s.prober.answers.set(b, "unreachable");
    await s.tick(w);
    await s.tick(w);
    const snap = w.snapshot();
    assert.deepEqual(
      snap.builders.map((b) => b.state),
      ["quarantined", "quarantined", "kept", "up"],
    );
    assert.deepEqual(snap.guards, ["max-quarantined-share"]);
    assert.equal(
      s
        .read()
        .split("\n")
        .filter((l) => / 0$/.test(l)).length,
      2,
    );
  });

  test("every builder fails at once: the guard keeps the file as the source", async () => {
    const s = setup("allfail");
    const w = s.mk();
    await s.tick(w);
    for (const b of ["b1", "b2", "b3", "b4"]) s.prober.answers.set(b, "timeout");
    await s.tick(w);
    await s.tick(w);
    await s.tick(w);
    const snap = w.snapshot();
    assert.deepEqual(snap.guards, ["all-failed"]);
    assert.equal(snap.localFault?.cause, "all-builders-failed");
    assert.ok(snap.builders.every((b) => b.disposition === "listed"));
    assert.equal(s.read(), SRC);
    s.prober.answers.delete("b1");
    await s.tick(w);
    assert.equal(w.snapshot().localFault, null, "cleared when one builder answers again");
  });

  test("a local fault freezes the file and is reported", async () => {
    const s = setup("local");
    const w = s.mk();
    s.prober.answers.set("b2", "timeout");
    await s.tick(w);
    await s.tick(w);
    const before = s.read();
    assert.match(before, /b2 aarch64-linux - 0/);
    s.prober.local = { cause: "ssh-missing", message: "ssh-path: no ssh on the daemon's PATH" };
    s.prober.answers.clear();
    await s.tick(w);
    await s.tick(w);
    await s.tick(w);
    const snap = w.snapshot();
    assert.equal(snap.localFault?.cause, "ssh-missing");
    assert.deepEqual(snap.guards, ["local-fault"]);
    assert.equal(s.read(), before);
    assert.equal(snap.builders[1]!.state, "quarantined", "no state moves while the local side is broken");
  });

  test("drain removes the line, undrain brings it back; unknown names are refused", async () => {
    const s = setup("drain");
    const w = s.mk();
    await s.tick(w);
    const b = await w.drain("b4");
    assert.equal(b.state, "drained");
    assert.equal(s.read(), SRC.replace("ssh://nix-builder@b4 x86_64-linux - 1\n", ""));
    await s.tick(w);
    assert.equal(w.snapshot().builders[3]!.state, "drained", "probes do not undo a drain");
    await assert.rejects(w.drain("nope"), UnknownBuilderError);
    await w.undrain("nix-builder@b4");
    await s.tick(w);
    assert.equal(s.read(), SRC);
    assert.equal(w.snapshot().builders[3]!.state, "up");
  });

  test("remove mode never writes an empty file while the source has lines", async () => {
    const s = setup("never-empty", { policy: { mode: "remove" } });
    const w = s.mk();
    await s.tick(w);
    for (const b of ["b1", "b2", "b3", "b4"]) await w.drain(b);
    assert.equal(s.read(), SRC);
    assert.ok(w.snapshot().guards.includes("never-empty"));
  });

  test("a restart keeps the counters; a clean stop restores the source", async () => {
    const s = setup("restart");
    const w1 = s.mk();
    await s.tick(w1);
    s.prober.answers.set("b2", "timeout");
    await s.tick(w1);
    await s.tick(w1);
    await s.tick(w1);
    await s.tick(w1);
    const b2 = w1.snapshot().builders[1]!;
    assert.equal(b2.state, "quarantined");
    const w2 = s.mk();
    await s.tick(w2);
    const again = w2.snapshot().builders[1]!;
    assert.equal(again.backoffLevel, b2.backoffLevel);
    assert.ok(again.consecutiveFailures >= b2.consecutiveFailures);
    assert.deepEqual(again.transitionCounts, b2.transitionCounts);
    assert.match(s.read(), /b2 aarch64-linux - 0/);
    await w2.stop({ restore: true });
    assert.equal(s.read(), SRC);
  });

  test("the source changing is picked up; a source that is the output is an error, the file untouched", async () => {
    const s = setup("source");
    const w = s.mk();
    await s.tick(w);
    fs.appendFileSync(s.src, "ssh://nix-builder@b5 aarch64-linux\n");
    await s.tick(w);
    assert.equal(w.snapshot().builders.length, 5);
    assert.match(s.read(), /b5/);
    const w2 = new Watch({
      source: fileSource(s.out, s.out, V, "x86_64-linux"),
      prober: s.prober,
      outputPath: s.out,
      stateDir: join(s.dir, "state"),
      intervalMs: 30_000,
    });
    const before = s.read();
    await w2.round();
    assert.match(w2.snapshot().source.error ?? "", /is the output/);
    assert.equal(s.read(), before);
  });

  test("a source another user can write is refused", async () => {
    const s = setup("unsafe");
    fs.chmodSync(s.src, 0o666);
    const w = s.mk();
    await w.round();
    assert.match(w.snapshot().source.error ?? "", /writable by group or others/);
    assert.equal(fs.existsSync(s.out), false);
  });
});
