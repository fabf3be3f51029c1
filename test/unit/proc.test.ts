/**
 * The one subprocess helper (src/os/proc.ts) on real programs: a program that never exits is killed at
 * its deadline with everything it started (its process group), one that ignores SIGTERM gets SIGKILL,
 * output is bounded, streamed, and a program that cannot start is reported, not thrown.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { failureText, runProc, startProc } from "../../src/os/proc.js";

/** Is process `pid` still there (and not a zombie)? */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return false;
  }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return !alive(pid);
}

describe("startProc / runProc", () => {
  it("a program that never exits is killed at its deadline, with the process it started", async () => {
    let grandchild = 0;
    const t0 = Date.now();
    const r = await runProc(["sh", "-c", "sleep 1000 & echo $!; wait"], {
      deadlineMs: 400,
      onStdout: (b) => {
        grandchild = Number(b.toString().trim());
      },
    });
    assert.equal(r.timedOut, true);
    assert.equal(r.code, null);
    assert.equal(r.signal, "SIGTERM");
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
    assert.ok(grandchild > 0, "the shell printed its child's pid");
    assert.equal(await waitGone(grandchild, 2000), true, "the grandchild (same process group) is gone");
    assert.match(failureText(r) ?? "", /^no answer within/);
  });

  it("a program that ignores SIGTERM gets SIGKILL after the grace period", async () => {
    const r = await runProc(["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"], {
      deadlineMs: 300,
      killAfterMs: 300,
    });
    assert.equal(r.timedOut, true);
    assert.equal(r.signal, "SIGKILL");
    assert.equal(r.stdout, "ready\n");
  });

  it("collects output up to the bound and counts the rest", async () => {
    const r = await runProc(["head", "-c", "100000", "/dev/zero"], {
      deadlineMs: 10_000,
      maxOutputBytes: 1000,
    });
    assert.equal(r.code, 0);
    assert.equal(r.stdout.length, 1000);
    assert.equal(r.truncated.stdout, 99_000);
    assert.equal(failureText(r), null);
  });

  it("streams output as it comes, and writes stdin", async () => {
    const chunks: string[] = [];
    const r = await runProc(["sh", "-c", "read x; echo got $x; sleep 0.2; echo two"], {
      deadlineMs: 10_000,
      input: "one\n",
      onStdout: (b) => chunks.push(b.toString()),
    });
    assert.equal(r.code, 0);
    assert.equal(chunks.join(""), "got one\ntwo\n");
    assert.ok(chunks.length >= 2, "arrived in more than one chunk");
    assert.equal(r.stdout, "", "streamed output is not also collected");
  });

  it("reports a program that cannot start, without throwing", async () => {
    const r = await runProc(["/nonexistent/nb-program"], { deadlineMs: 1000 });
    assert.equal(r.spawnError?.code, "ENOENT");
    assert.equal(r.code, null);
    assert.equal(failureText(r), "ENOENT");
  });

  it("an exit status and stderr make a one-line reason", async () => {
    const r = await runProc(["sh", "-c", "echo first >&2; echo second >&2; exit 3"], { deadlineMs: 5000 });
    assert.equal(r.code, 3);
    assert.equal(failureText(r), "exit 3: first");
  });

  it("refuses to start without a deadline, and kill() ends it early", async () => {
    assert.throws(() => startProc(["true"], { deadlineMs: 0 }), /deadline is required/);
    const p = startProc(["sleep", "1000"], { deadlineMs: 60_000 });
    setTimeout(() => p.kill(), 50);
    const r = await p.done;
    assert.equal(r.timedOut, true);
    assert.ok(r.elapsedMs < 5000);
  });
});
