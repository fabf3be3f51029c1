/**
 * The pure parts of attribution: the hook protocol decoders (both directions, fed byte by byte and in one
 * piece, and against the real 2.8 hook's replies), the recorder's session (events from the two streams),
 * the record encoding and joining, the store's rotation and trust checks, and the nix.conf edits of
 * `hook install / uninstall`.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import {
  appendEventsSync,
  type BuildEvent,
  builderCounters,
  encodeEvent,
  joinEvents,
  MAX_LINE,
  readEvents,
  readRecentBuilds,
  remoteBuilds,
  StoreRefusal,
  type TryEvent,
} from "../../src/app/builds-store.js";
import { HookSession } from "../../src/hook-recorder.js";
import { hookBlock, planInstall, planUninstall } from "../../src/nix/hook-conf.js";
import { parseCannotBuild, ReplyDecoder, RequestDecoder } from "../../src/nix/hook-protocol.js";
import {
  encodeHookRequest,
  haveBuildRemote,
  runBuildRemote,
  wireString,
  wireU64,
} from "../support/build-remote.js";

const DRV = "/nix/store/fjym90m5r8qrc51g6cxblkdf7z4jk19s-x.drv";

function request(): Buffer {
  const first = encodeHookRequest({
    builders: "",
    system: "x86_64-linux",
    features: ["kvm", "big"],
    drvPath: DRV,
  });
  const second = Buffer.concat([
    wireString("try"),
    wireU64(1),
    wireString("i686-linux"),
    wireString("/nix/store/00000000000000000000000000000000-y.drv"),
    wireU64(0),
  ]);
  // After `# accept`: the inputs (3 paths: a count that could be mistaken for "try"'s length) and outputs.
  const tail = Buffer.concat([
    wireU64(3),
    wireString("/nix/store/11111111111111111111111111111111-a"),
    wireString("/nix/store/22222222222222222222222222222222-b"),
    wireString("/nix/store/33333333333333333333333333333333-c"),
    wireU64(1),
    wireString("out"),
  ]);
  return Buffer.concat([first, second, tail]);
}

describe("RequestDecoder", () => {
  const expected = [
    "settings",
    `try x86_64-linux ${DRV} big,kvm false`,
    "try i686-linux /nix/store/00000000000000000000000000000000-y.drv  true",
    "accepted 3 out",
  ];
  const show = (e: ReturnType<RequestDecoder["push"]>[number]): string =>
    e.kind === "settings"
      ? "settings"
      : e.kind === "try"
        ? `try ${e.system} ${e.drv} ${e.features.join(",")} ${e.amWilling}`
        : `accepted ${e.inputs.length} ${e.wantedOutputs.join(",")}`;

  test("decodes settings, tries and the accept tail in one piece", () => {
    const d = new RequestDecoder();
    const events = d.push(request());
    assert.deepEqual(events.map(show), expected);
    const s = events[0]!;
    assert.ok(s.kind === "settings" && s.settings["builders"] === "");
    assert.equal(d.failed, null);
  });

  test("the same, fed one byte at a time", () => {
    const d = new RequestDecoder();
    const bytes = request();
    const events = [];
    for (let i = 0; i < bytes.length; i++) events.push(...d.push(bytes.subarray(i, i + 1)));
    assert.deepEqual(events.map(show), expected);
  });

  test("a malformed stream stops decoding (and never throws)", () => {
    const d = new RequestDecoder();
    assert.deepEqual(d.push(Buffer.concat([wireU64(7), wireU64(0)])), []);
    assert.match(d.failed ?? "", /bad settings tag/);
    assert.deepEqual(d.push(request()), []);
  });
});

describe("ReplyDecoder", () => {
  test("replies, the machine after accept, messages, cannot build on", () => {
    const d = new ReplyDecoder();
    const msg = (m: string, level = 0) => `@nix ${JSON.stringify({ action: "msg", level, msg: m })}\n`;
    const text =
      msg(
        "\u001b[31;1mcannot build on '\u001b[35;1mssh://a\u001b[0m': error: cannot connect to 'a': it's down\u001b[0m",
      ) +
      "# decline\n# postpone\n# accept\nssh://b\n" +
      `@nix ${JSON.stringify({ action: "start", id: 1, level: 4, text: "copying dependencies to 'ssh://b'", type: 0 })}\n` +
      msg("\u001b[31;1merror:\u001b[0m build of 'x' on 'ssh://b' failed") +
      "plain text";
    const evs = [...d.push(text.slice(0, 17)), ...d.push(text.slice(17)), ...d.end()];
    assert.deepEqual(evs, [
      { kind: "cannot-build", machine: "ssh://a", error: "error: cannot connect to 'a': it's down" },
      { kind: "reply", reply: "decline" },
      { kind: "reply", reply: "postpone" },
      { kind: "reply", reply: "accept" },
      { kind: "machine", machine: "ssh://b" },
      { kind: "activity", text: "copying dependencies to 'ssh://b'" },
      { kind: "msg", level: 0, text: "error: build of 'x' on 'ssh://b' failed" },
      { kind: "other", text: "plain text" },
    ]);
  });

  test("a store URI with a quote-colon inside is cut at the first `': `", () => {
    assert.deepEqual(parseCannotBuild("cannot build on 'ssh://h': e: f"), {
      machine: "ssh://h",
      error: "e: f",
    });
    assert.equal(parseCannotBuild("building on 'x'"), null);
  });

  test("the real 2.8 hook's answers decode", { skip: !haveBuildRemote() }, async () => {
    // (`cannot build on` from the real hook is decoded in hook-wrapper.test.ts, through real builds.)
    const r = await runBuildRemote({
      builders: "ssh://elsewhere.invalid aarch64-linux",
      system: "x86_64-linux",
    });
    assert.equal(r.reply, "decline");
    assert.deepEqual(
      new ReplyDecoder().push(r.stderr).filter((e) => e.kind === "reply"),
      [{ kind: "reply", reply: "decline" }],
    );
    const none = await runBuildRemote({ builders: "", system: "x86_64-linux" });
    assert.deepEqual(
      new ReplyDecoder().push(none.stderr).filter((e) => e.kind === "reply"),
      [{ kind: "reply", reply: "decline-permanently" }],
    );
  });
});

describe("HookSession", () => {
  function session() {
    const events: BuildEvent[] = [];
    const signals: string[] = [];
    let t = 1000;
    const s = new HookSession(
      42,
      { event: (e) => events.push(e), signal: (b) => signals.push(b) },
      () => t++,
    );
    return { s, events, signals };
  }
  const tryOf = (drv: string) => ({ amWilling: false, system: "x86_64-linux", drv, features: [] });

  test("a decline, then an accept after a cannot build on, then the end", () => {
    const { s, events, signals } = session();
    s.request(tryOf("/d1"));
    s.reply("decline");
    s.request(tryOf("/d2"));
    s.cannotBuild("ssh://a", "down");
    s.reply("accept");
    s.machine("ssh://b");
    s.line("copying");
    s.end();
    assert.deepEqual(signals, ["ssh://a"]);
    const [d1, d2, end] = events as [TryEvent, TryEvent, BuildEvent];
    assert.equal(d1.reply, "decline");
    assert.equal(d2.reply, "accept");
    assert.equal(d2.machine, "ssh://b");
    assert.deepEqual(d2.cannotBuild, [{ machine: "ssh://a", error: "down" }]);
    assert.ok(end.t === "end" && end.id === d2.id && end.result === "success" && end.lines[0] === "copying");
  });

  test("an error after accept is a failure with its text", () => {
    const { s, events } = session();
    s.request(tryOf("/d"));
    s.reply("accept");
    s.machine("ssh://b");
    s.message(0, "error: build of '/d' on 'ssh://b' failed: boom");
    s.end();
    const end = events[1]!;
    assert.ok(
      end.t === "end" && end.result === "failure" && end.error === "build of '/d' on 'ssh://b' failed: boom",
    );
  });

  test("a try the hook never answered is recorded as unknown", () => {
    const { s, events } = session();
    s.request(tryOf("/d"));
    s.end();
    assert.equal(events.length, 2);
    assert.ok(events[0]!.t === "try" && events[0]!.reply === null);
    assert.ok(events[1]!.t === "end" && events[1]!.result === "unknown");
  });
});

describe("records", () => {
  const tryEv = (
    id: string,
    drv: string,
    reply: TryEvent["reply"],
    machine: string | null,
    at: number,
    cannot: string[] = [],
  ): TryEvent => ({
    v: 1,
    t: "try",
    id,
    hook: 1,
    at,
    drv,
    system: "x86_64-linux",
    features: [],
    amWilling: false,
    reply,
    machine,
    cannotBuild: cannot.map((m) => ({ machine: m, error: "down" })),
  });

  test("join, one row per derivation, counters, the watch shape", () => {
    const events: BuildEvent[] = [
      tryEv("1", "/a", "decline", null, 1, ["ssh://x"]),
      tryEv("2", "/a", "decline", null, 2, ["ssh://x"]),
      tryEv("3", "/b", "accept", "ssh://y", 3, ["ssh://x"]),
      { v: 1, t: "end", id: "3", at: 13, result: "success", error: null, lines: [] },
      tryEv("4", "/c", "accept", "ssh://y", 4),
      { v: 1, t: "end", id: "4", at: 6, result: "failure", error: "boom", lines: [] },
      tryEv("5", "/d", "accept", "ssh://y", 5),
      tryEv("6", "/e", "decline", null, 6),
    ];
    const recs = remoteBuilds(joinEvents(events));
    assert.deepEqual(
      recs.map((r) => `${r.id} ${r.result}`),
      ["2 decline", "3 success", "4 failure", "5 in-progress"],
    );
    const c = builderCounters(recs);
    assert.deepEqual(c, [
      { builder: "ssh://x", builds: 0, failures: 0, inProgress: 0, connectFailures: 2, durations: [] },
      {
        builder: "ssh://y",
        builds: 3,
        failures: 1,
        inProgress: 1,
        connectFailures: 0,
        durations: [0.01, 0.002],
      },
    ]);
  });

  test("a long record is cut below one atomic write", () => {
    const e = tryEv(
      "1",
      "/a",
      "decline",
      null,
      1,
      Array.from({ length: 100 }, (_, i) => `ssh://${"h".repeat(100)}${i}`),
    );
    const line = encodeEvent(e);
    assert.ok(Buffer.byteLength(line) <= MAX_LINE + 1);
    assert.equal((JSON.parse(line) as TryEvent).drv, "/a");
  });

  test("the writer rotates at the cap and keeps three files; the reader reads them in order", async () => {
    const state = mkdtempSync(join(tmpdir(), "nb-rot-"));
    chmodSync(state, 0o755);
    try {
      for (let i = 0; i < 60; i++)
        assert.ok(appendEventsSync(state, [tryEv(String(i), `/d${i}`, "accept", "ssh://y", i)], 2000));
      const files = readdirSync(join(state, "builds")).sort();
      assert.deepEqual(files, ["builds.1.jsonl", "builds.2.jsonl", "builds.jsonl"]);
      for (const f of files) assert.ok(statSync(join(state, "builds", f)).size < 2000 + MAX_LINE);
      assert.equal(statSync(join(state, "builds", "builds.jsonl")).mode & 0o777, 0o600);
      const ids = readEvents(state).map((e) => Number(e.id));
      assert.ok(ids.length < 60 && ids.length > 10, "older records rotated away");
      assert.deepEqual(
        ids,
        [...ids].sort((a, b) => a - b),
      );
      assert.equal(ids[ids.length - 1], 59);
      assert.equal(readRecentBuilds(state, { limit: 2 })[0]!.drv, "/d59");
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });

  test("state that others may write is neither written nor trusted", async () => {
    const state = mkdtempSync(join(tmpdir(), "nb-trust-"));
    try {
      chmodSync(state, 0o777);
      assert.equal(appendEventsSync(state, [tryEv("1", "/a", "accept", "ssh://y", 1)]), false);
      chmodSync(state, 0o755);
      mkdirSync(join(state, "builds"), { mode: 0o700 });
      writeFileSync(
        join(state, "builds", "builds.jsonl"),
        `${JSON.stringify(tryEv("1", "/a", "accept", "ssh://y", 1))}\n`,
        { mode: 0o666 },
      );
      chmodSync(join(state, "builds", "builds.jsonl"), 0o666);
      assert.throws(() => readEvents(state), StoreRefusal);
      assert.deepEqual(readRecentBuilds(state), []);
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });
});

describe("hook install / uninstall edits", () => {
  const W = "/opt/nb/libexec/build-hook";
  for (const original of ["", "trusted-users = root\n", "max-jobs = 4", "a = b\r\n# c\n"]) {
    test(`install then uninstall gives the file back byte for byte: ${JSON.stringify(original)}`, () => {
      const p = planInstall(original, W);
      assert.equal(p.kind, "install");
      const installed = p.kind === "install" ? p.text : "";
      assert.ok(installed.endsWith(hookBlock(W)));
      assert.equal(planInstall(installed, W).kind, "already");
      const u = planUninstall(installed, W, original);
      assert.deepEqual(u, { kind: "restore", text: original });
      // Without the saved original (lost state), our two lines are still removed.
      const u2 = planUninstall(`${installed}extra = 1\n`, W, null);
      assert.equal(u2.kind, "restore");
      assert.ok(u2.kind === "restore" && !u2.text.includes("build-hook"));
    });
  }

  test("another build-hook is a conflict; edited lines are not guessed at", () => {
    assert.deepEqual(planInstall("build-hook = /my/hook # mine\n", W), {
      kind: "conflict",
      line: 1,
      value: "/my/hook",
    });
    const installed = hookBlock(W).replace(W, "/elsewhere");
    assert.deepEqual(planUninstall(installed, W, ""), { kind: "changed", line: 1 });
    assert.deepEqual(planUninstall("x = 1\n", W, null), { kind: "not-installed" });
  });
});
