// watch and the build hook: a `cannot build on` signal left by the hook's recorder starts a round at
// once (never a quarantine by itself), and the hook's records reach the snapshot as recentBuilds.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import type { Prober, RoundProbe, SourceMachine } from "../../src/app/watch/engine.js";
import { Watch } from "../../src/app/watch/engine.js";
import type { ProbeRecord } from "../../src/app/watch/model.js";
import { takeSignals } from "../../src/app/watch/signals.js";
import { fileSource } from "../../src/app/watch/source.js";
import { parseNixVersion } from "../../src/nix/version.js";

const V = parseNixVersion("2.8")!;
const root = fs.mkdtempSync(join(tmpdir(), "watch-signals-"));
after(() => fs.rmSync(root, { recursive: true, force: true }));
const isRoot = process.getuid?.() === 0;

const SRC = ["ssh://nix-builder@b1 aarch64-linux - 1", "ssh://nix-builder@b2 aarch64-linux - 1", ""].join(
  "\n",
);

class Scripted implements Prober {
  answers = new Map<string, string | null>();
  rounds = 0;
  constructor(private readonly clock: { t: number }) {}
  async round(ms: readonly SourceMachine[]): Promise<RoundProbe> {
    this.rounds++;
    const results = new Map<string, ProbeRecord>();
    for (const m of ms) {
      const cause = this.answers.get(m.storeUri.replace(/^.*@/, "")) ?? null;
      results.set(
        m.storeUri,
        cause === null
          ? { at: this.clock.t, ok: true, phases: {} }
          : { at: this.clock.t, ok: false, cause, phases: {} },
      );
    }
    return { local: null, results };
  }
}

function signal(dir: string, name: string, body: unknown): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(join(dir, name), typeof body === "string" ? body : JSON.stringify(body), { mode: 0o600 });
}

describe("watch: signals from the build hook", () => {
  test("takeSignals reads and deletes signal files; a symlink, a large or malformed file is not a signal", (t) => {
    if (!isRoot) return t.skip("signal files are root's");
    const dir = join(root, "take");
    signal(dir, "1.json", {
      builder: "ssh://nix-builder@b2",
      at: 5,
      reason: "cannot build on 'ssh://nix-builder@b2'",
    });
    signal(dir, "2.json", "{not json");
    signal(dir, "3.json", { builder: "x".repeat(5000) });
    fs.writeFileSync(join(root, "elsewhere.json"), JSON.stringify({ builder: "ssh://evil" }));
    fs.symlinkSync(join(root, "elsewhere.json"), join(dir, "4.json"));
    const got = takeSignals(dir);
    assert.deepEqual(got, [
      { builder: "ssh://nix-builder@b2", at: 5, reason: "cannot build on 'ssh://nix-builder@b2'" },
    ]);
    assert.deepEqual(fs.readdirSync(dir), [], "every file was taken");
    assert.ok(fs.existsSync(join(root, "elsewhere.json")), "a symlink's target is never touched");
    assert.deepEqual(takeSignals(join(root, "missing")), []);
  });

  test("a signal for a builder in the file starts a round at once; none for an unknown builder or within the gap", async (t) => {
    if (!isRoot) return t.skip("signal files are root's");
    const dir = join(root, "engine");
    fs.mkdirSync(join(dir, "state"), { recursive: true, mode: 0o700 });
    fs.writeFileSync(join(dir, "machines"), SRC, { mode: 0o644 });
    const out = join(dir, "out", "machines");
    const clock = { t: 1_000_000 };
    const prober = new Scripted(clock);
    const signals = join(dir, "state", "signals");
    const builds = [
      {
        drv: "/nix/store/aaaa-x.drv",
        system: "aarch64-linux",
        machine: "ssh://nix-builder@b2",
        startedAt: 1,
        endedAt: 2,
        result: "success",
      },
    ];
    const w = new Watch({
      source: fileSource(join(dir, "machines"), out, V, "x86_64-linux"),
      prober,
      outputPath: out,
      stateDir: join(dir, "state"),
      intervalMs: 3_600_000,
      minWriteIntervalMs: 0,
      now: () => clock.t,
      random: () => 0,
      signalsDir: signals,
      recentBuilds: () => builds,
    });
    await w.round();
    assert.equal(prober.rounds, 1);
    assert.deepEqual(w.snapshot().recentBuilds, builds);

    assert.equal(w.checkSignals(), null, "no signal, no round");
    signal(signals, "a.json", { builder: "ssh://nix-builder@nowhere", at: clock.t, reason: "x" });
    assert.equal(w.checkSignals(), null, "a builder that is not in the file");
    prober.answers.set("b2", "unreachable");
    signal(signals, "b.json", {
      builder: "ssh://nix-builder@b2",
      at: clock.t,
      reason: "cannot build on 'ssh://nix-builder@b2'",
    });
    await w.checkSignals();
    assert.equal(prober.rounds, 2, "the signal started a round");
    const b2 = w.snapshot().builders.find((b) => b.builder.endsWith("@b2"))!;
    assert.notEqual(b2.state, "quarantined", "one failed probe after a signal is not a quarantine");
    assert.equal(b2.disposition, "listed");
    clock.t += 1000;
    signal(signals, "c.json", { builder: "ssh://nix-builder@b2", at: clock.t, reason: "again" });
    assert.equal(w.checkSignals(), null, "within the gap: no second round");
    assert.deepEqual(fs.readdirSync(signals), [], "but the signal was taken");
    await w.stop({ restore: false });
  });
});
