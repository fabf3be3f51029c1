/**
 * kill -9 of a running `nix-builders watch` while it writes, many times: the managed file is never partial
 * or empty, the state file is always valid, and a restart keeps the counters. The builders are loopback
 * addresses nobody listens on (every probe fails fast); writes come from drain/undrain requests on the
 * control socket, sent in bursts, with the kill at a random moment inside the burst.
 *
 * NIX_BUILDERS_WATCH_KILLS sets the number of kills (default 15, to keep CI short; NIX_BUILDERS_WATCH_FULL=1 runs
 * the 200 of the acceptance run whose figures are in docs/watch.md).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { controlRequest } from "../../src/app/watch/control.js";
import type { WatchSnapshot } from "../../src/app/watch/model.js";
import { validateState } from "../../src/app/watch/state.js";
import { CLI_NODE_ARGS } from "../support/cli.js";
import { mulberry32 } from "../support/random.js";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const KILLS = Number(
  process.env["NIX_BUILDERS_WATCH_KILLS"] ?? (process.env["NIX_BUILDERS_WATCH_FULL"] === "1" ? 200 : 15),
);
const skip = process.getuid?.() !== 0 ? "needs root (watch writes root-owned state)" : false;

/** Newest modification time of the sources under a directory, in ms. */
function _newestSource(dir: string): number {
  let t = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, _newestSource(p));
    else if (e.name.endsWith(".ts")) t = Math.max(t, fs.statSync(p).mtimeMs);
  }
  return t;
}
// watch is started once per kill, so its start-up counts KILLS times: CLI_NODE_ARGS is the built CLI when
// dist/ is up to date (test/support/cli.ts).
const LINES = [1, 2, 3, 4].map((i) => `ssh://nix-builder@127.0.0.${i + 10} aarch64-linux - 2 1`);
const SOURCE = `# crash test\n${LINES.join("\n")}\n`;

describe("watch: kill -9 during writes", { skip }, () => {
  let dir = "";
  let child: ChildProcess | null = null;
  const out = () => path.join(dir, "out", "machines");
  const stateDir = () => path.join(dir, "state");

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "nb-watch-crash-"));
    fs.writeFileSync(path.join(dir, "source"), SOURCE, { mode: 0o644 });
  });
  after(() => {
    if (child?.pid) {
      try {
        process.kill(child.pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  function start(): ChildProcess {
    const c = spawn(
      process.execPath,
      [
        ...CLI_NODE_ARGS,
        "watch",
        "--source",
        path.join(dir, "source"),
        "--output",
        out(),
        "--state-dir",
        stateDir(),
        "--interval",
        "0.5",
        "--timeout",
        "1",
        "--min-write-interval",
        "0",
        "--backoff-base",
        "1",
        "--backoff-jitter",
        "0",
      ],
      { cwd: REPO, stdio: ["ignore", "ignore", "ignore"] },
    );
    return c;
  }

  async function ready(deadlineMs = 30_000): Promise<WatchSnapshot> {
    const end = Date.now() + deadlineMs;
    for (;;) {
      try {
        const a = await controlRequest(stateDir(), { op: "status" }, 2000);
        if (a.ok && (a.result as WatchSnapshot).lastRoundAt !== null) return a.result as WatchSnapshot;
      } catch {
        // not yet
      }
      if (Date.now() > end) throw new Error("watch did not become ready");
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Every line of the file is a source line; at least one machine line; no half line. */
  function checkOutput(text: string, round: number): void {
    assert.ok(text.length > 0, `round ${round}: empty output`);
    assert.ok(text.endsWith("\n"), `round ${round}: output does not end with a newline (partial)`);
    const lines = text.slice(0, -1).split("\n");
    for (const l of lines)
      assert.ok(
        l === "# crash test" || LINES.includes(l),
        `round ${round}: unknown line ${JSON.stringify(l)}`,
      );
    assert.ok(lines.filter((l) => LINES.includes(l)).length >= 1, `round ${round}: no machine line`);
  }

  const counted = (s: { builders: Record<string, { transitionCounts: Record<string, number> }> }) =>
    Object.values(s.builders).reduce(
      (n, b) => n + Object.values(b.transitionCounts).reduce((x, y) => x + y, 0),
      0,
    );

  test(`${KILLS} kills: never a partial or empty file; restarts keep the counters`, async () => {
    const rnd = mulberry32(20261207);
    let writesSeen = 0;
    for (let round = 0; round < KILLS; round++) {
      child = start();
      const snap = await ready();
      if (round > 0) {
        // the restarted watch carries what the killed one had saved
        const persisted = JSON.parse(fs.readFileSync(path.join(stateDir(), "state.json"), "utf8"));
        const now = snap.builders.reduce(
          (n, b) => n + Object.values(b.transitionCounts).reduce((x, y) => x + y, 0),
          0,
        );
        assert.ok(
          now >= counted(persisted),
          `round ${round}: counters went back (${now} < ${counted(persisted)})`,
        );
      }
      const before = fs.existsSync(out()) ? fs.statSync(out()).ino : null;
      // a burst of drains and undrains, each one a write; the kill lands somewhere inside it
      const names = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"];
      const burst = Array.from({ length: 12 }, (_, k) => {
        const n = names[Math.floor(rnd() * 4)]!;
        return controlRequest(stateDir(), { op: k % 2 === 0 ? "drain" : "undrain", name: n }, 5000).catch(
          () => null,
        );
      });
      await new Promise((r) => setTimeout(r, Math.floor(rnd() * 1500)));
      process.kill(child.pid!, "SIGKILL");
      await new Promise<void>((r) => child!.once("exit", () => r()));
      await Promise.all(burst);
      const text = fs.readFileSync(out(), "utf8");
      checkOutput(text, round);
      if (before !== null && fs.statSync(out()).ino !== before) writesSeen++;
      const st = JSON.parse(fs.readFileSync(path.join(stateDir(), "state.json"), "utf8"));
      assert.equal(validateState(st).ok, true, `round ${round}: state file invalid`);
    }
    process.stderr.write(
      `watch-crash: ${KILLS} kills, a write landed between the last ready and the kill in ${writesSeen}\n`,
    );
    // A last clean run: temp files left by kills are swept by the next write, a clean stop restores the source.
    child = start();
    await ready();
    await controlRequest(stateDir(), { op: "drain", name: "127.0.0.11" });
    child.kill("SIGTERM");
    await new Promise<void>((r) => child!.once("exit", () => r()));
    assert.equal(fs.readFileSync(out(), "utf8"), SOURCE, "a clean stop restores the source");
    assert.deepEqual(
      fs.readdirSync(path.dirname(out())).filter((n) => n.includes(".tmp.")),
      [],
      "no temp file left",
    );
    assert.ok(writesSeen > 0, "some kills landed after a write had started");
  });
});
