/**
 * The json-log-path reader on a real Unix socket: activity 105 start/stop and `cannot build on` become
 * events; a writer that sends megabytes as fast as it can is never held back; an oversized line is
 * dropped and counted; a stale socket is replaced but a regular file never is; the socket stays after
 * the reader stops (so Nix never creates a regular file there).
 */
import assert from "node:assert/strict";
import { lstatSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { type JsonLogEvent, JsonLogParser, listenJsonLog } from "../../src/host/json-log.js";

const DRV = "/nix/store/fjym90m5r8qrc51g6cxblkdf7z4jk19s-x.drv";

test("parser: 105 start/stop with the machine, cannot build on, errors", () => {
  let t = 0;
  const p = new JsonLogParser(() => ++t);
  assert.deepEqual(
    p.record(
      JSON.stringify({
        action: "start",
        id: 7,
        level: 3,
        type: 105,
        text: `building '${DRV}' on 'ssh://b'`,
        fields: [DRV, "ssh://b", 1, 1],
      }),
    ),
    [{ kind: "build-start", id: 7, drv: DRV, machine: "ssh://b", at: 1 }],
  );
  assert.deepEqual(p.record('{"action":"stop","id":7}'), [
    { kind: "build-stop", id: 7, drv: DRV, machine: "ssh://b", startedAt: 1, at: 2 },
  ]);
  assert.deepEqual(p.record('{"action":"stop","id":8}'), []);
  assert.deepEqual(
    p.record(
      JSON.stringify({
        action: "msg",
        level: 0,
        msg: "\u001b[31;1mcannot build on '\u001b[35;1mssh://a\u001b[0m': down\u001b[0m",
      }),
    ),
    [{ kind: "cannot-build", machine: "ssh://a", error: "down", at: 4 }],
  );
  assert.deepEqual(p.record("not json"), []);
});

test("reader: no back-pressure, drops oversized lines, keeps the socket", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nb-jsonlog-"));
  const path = join(dir, "log.sock");
  try {
    writeFileSync(path, "");
    await assert.rejects(
      listenJsonLog(path, () => {}),
      /not a socket/,
    );
    rmSync(path);
    const events: JsonLogEvent[] = [];
    const first = await listenJsonLog(path, (e) => events.push(e));
    await first.close();
    // A stale socket (left by a stopped reader) is replaced.
    const r = await listenJsonLog(path, (e) => events.push(e), { maxLine: 4096 });
    assert.ok(lstatSync(path).isSocket());
    assert.equal(lstatSync(path).mode & 0o777, 0o600);
    const filler = `${JSON.stringify({ action: "result", id: 1, type: 101, fields: ["x".repeat(200)] })}\n`;
    const lines = [
      JSON.stringify({ action: "start", id: 9, type: 105, fields: [DRV, "ssh://b", 1, 1] }),
      `{"action":"msg","level":0,"msg":"${"y".repeat(10_000)}"}`,
      filler.repeat(50_000).trimEnd(), // ~11 MB in one go
      '{"action":"stop","id":9}',
    ].join("\n");
    const sock = connect(path);
    const t0 = performance.now();
    await new Promise<void>((res) => sock.end(`${lines}\n`, () => res()));
    const writeMs = performance.now() - t0;
    await new Promise((res) => setTimeout(res, 300));
    assert.deepEqual(
      events.map((e) => e.kind),
      ["build-start", "build-stop"],
    );
    assert.equal(r.dropped(), 1, "the oversized line");
    assert.ok(r.records() >= 50_002);
    assert.ok(writeMs < 60_000);
    await r.close();
    assert.ok(lstatSync(path).isSocket(), "the socket stays after the reader stops");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
