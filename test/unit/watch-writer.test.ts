import assert from "node:assert/strict";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import type { Disposition } from "../../src/app/watch/model.js";
import { parseSourceText } from "../../src/app/watch/source.js";
import { loadState, type PersistedState, saveState, validateState } from "../../src/app/watch/state.js";
import { holdLine, holdSegment, render, sameFile, writeOutput } from "../../src/app/watch/writer.js";
import { parseBuilders } from "../../src/nix/machines.js";
import { parseNixVersion } from "../../src/nix/version.js";

const V28 = parseNixVersion("2.8")!;
const V230 = parseNixVersion("2.30")!;
const tmp = fs.mkdtempSync(join(tmpdir(), "watch-writer-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("hold: only maxJobs becomes 0, everything else byte for byte", () => {
  const cases: [string, string][] = [
    ["ssh://a x86_64-linux /k 4 2 kvm big ", "ssh://a x86_64-linux /k 0 2 kvm big "],
    ["ssh://a\tx86_64-linux\t/k\t4", "ssh://a\tx86_64-linux\t/k\t0"],
    ["ssh://a", "ssh://a - - 0"],
    ["ssh://a aarch64-linux", "ssh://a aarch64-linux - 0"],
    ["  ssh://a aarch64-linux - 12 1 - - AAAA", "  ssh://a aarch64-linux - 0 1 - - AAAA"],
    ["ssh://a x86_64-linux - - 3", "ssh://a x86_64-linux - 0 3"],
  ];
  for (const [line, want] of cases) test(JSON.stringify(line), () => assert.equal(holdSegment(line), want));

  test("a comment after the machine is kept, the segment before it rewritten", () => {
    assert.equal(holdLine("ssh://a x - 4 # max 4 jobs", new Set([0])), "ssh://a x - 0 # max 4 jobs");
  });
  test("two machines on one line (;): only the held one changes", () => {
    assert.equal(holdLine("ssh://a x - 4;ssh://b x - 2", new Set([1])), "ssh://a x - 4;ssh://b x - 0");
  });
  for (const v of [V28, V230])
    test(`Nix ${v.major}.${v.minor} parses a held line to maxJobs 0 with every other field equal`, () => {
      const line = "ssh://nix@b2 aarch64-linux,x86_64-linux /root/.ssh/k 8 3 kvm,big big AAAA";
      const parse = (s: string) =>
        parseBuilders({
          spec: s,
          version: v,
          defaultSystem: "x86_64-linux",
          fs: { read: () => ({ ok: false, code: "ENOENT" }) },
        }).machines[0]!;
      const a = parse(line);
      const b = parse(holdSegment(line));
      assert.equal(b.maxJobs, 0);
      assert.deepEqual({ ...b, maxJobs: 8, row: "", origin: null }, { ...a, row: "", origin: null });
      const short = parse(holdSegment("ssh://nix@b2"));
      assert.equal(short.maxJobs, 0);
      assert.deepEqual(short.systemTypes, ["x86_64-linux"]);
      assert.equal(short.sshKey, null);
    });
});

describe("render", () => {
  const text =
    "# builders\nssh://b1 aarch64-linux - 2\n\nssh://b2 aarch64-linux - 2 # second\nssh://b3 x86_64-linux\n";
  const src = parseSourceText(text, V28, "x86_64-linux", "/src");
  const d = (o: Record<string, Disposition>) => new Map(Object.entries(o));
  test("the source parses into lines and machines with their line index", () => {
    assert.deepEqual(
      src.machines.map((m) => [m.storeUri, m.index]),
      [
        ["ssh://b1", 1],
        ["ssh://b2", 3],
        ["ssh://b3", 4],
      ],
    );
  });
  test("all listed: the source byte for byte", () => assert.equal(render(src.text, new Map()), text));
  test("held and removed, in order, comments kept", () => {
    assert.equal(
      render(src.text, d({ "ssh://b2": "held", "ssh://b3": "removed" })),
      "# builders\nssh://b1 aarch64-linux - 2\n\nssh://b2 aarch64-linux - 0 # second\n",
    );
  });
  test("no trailing newline stays without one", () => {
    const s = parseSourceText("ssh://b1 x - 1", V28, "x86_64-linux", null);
    assert.equal(render(s.text, d({ "ssh://b1": "held" })), "ssh://b1 x - 0");
  });
  test("a duplicate store URI and an include line are copied as is", () => {
    const s = parseSourceText("ssh://b1 x - 1\nssh://b1 y - 1\n@/etc/other\n", V28, "x86_64-linux", null);
    assert.equal(s.machines.length, 1);
    assert.equal(render(s.text, d({ "ssh://b1": "held" })), "ssh://b1 x - 0\nssh://b1 y - 1\n@/etc/other\n");
  });
});

describe("output file", () => {
  test("written atomically, only on change, root-owned 0644, no temp left", async () => {
    const out = join(tmp, "run", "machines");
    assert.equal(await writeOutput(out, "ssh://a\n"), true);
    const st1 = fs.statSync(out);
    assert.equal(await writeOutput(out, "ssh://a\n"), false);
    assert.equal(fs.statSync(out).ino, st1.ino);
    assert.equal(await writeOutput(out, "ssh://a - - 0\n"), true);
    assert.notEqual(
      fs.statSync(out).ino,
      st1.ino,
      "replaced by rename (a new inode, as Hydra's reload expects)",
    );
    assert.equal(fs.statSync(out).mode & 0o7777, 0o644);
    assert.deepEqual(
      fs.readdirSync(join(tmp, "run")).filter((n) => n.includes("tmp")),
      [],
    );
  });
  test("a symlink at the output is refused", async () => {
    const out = join(tmp, "link");
    fs.symlinkSync(join(tmp, "elsewhere"), out);
    await assert.rejects(writeOutput(out, "x\n"), /symbolic link/);
  });
  test("sameFile sees through symlinks and not-yet-created files", () => {
    const a = join(tmp, "a");
    fs.writeFileSync(a, "");
    fs.symlinkSync(a, join(tmp, "a-link"));
    assert.equal(sameFile(join(tmp, "a-link"), a), true);
    assert.equal(sameFile(join(tmp, "new"), join(tmp, ".", "new")), true);
    assert.equal(sameFile(join(tmp, "new"), a), false);
  });
});

describe("state file", () => {
  const good: PersistedState = {
    version: 1,
    savedAt: 5,
    builders: {
      "ssh://b1": {
        memory: {
          state: "quarantined",
          since: 1,
          consecutiveFailures: 2,
          passes: 0,
          backoffLevel: 2,
          lastCountedFailureAt: 1,
          quarantinedUntil: 200,
          upSince: null,
          lastSuccessAt: null,
        },
        transitions: [{ at: 1, from: "suspect", to: "quarantined", reason: "timeout" }],
        transitionCounts: { "suspect>quarantined": 1 },
        probeCounts: { timeout: 2 },
        drained: false,
      },
    },
  };
  test("saved and loaded back, 0600 in a 0700 directory", async () => {
    const dir = join(tmp, "state-ok");
    fs.mkdirSync(dir, { mode: 0o700 });
    await saveState(dir, good);
    assert.equal(fs.statSync(join(dir, "state.json")).mode & 0o777, 0o600);
    assert.deepEqual(loadState(dir), { state: good, problem: null });
  });
  test("no file: fresh start without a problem", () => {
    const dir = join(tmp, "state-none");
    fs.mkdirSync(dir, { mode: 0o700 });
    assert.deepEqual(loadState(dir), { state: null, problem: null });
  });
  test("a file others can write is ignored, with the reason", async () => {
    const dir = join(tmp, "state-ww");
    fs.mkdirSync(dir, { mode: 0o700 });
    await saveState(dir, good);
    fs.chmodSync(join(dir, "state.json"), 0o666);
    const r = loadState(dir);
    assert.equal(r.state, null);
    assert.match(r.problem ?? "", /writable by group or others/);
  });
  test("a file owned by another user is ignored", async () => {
    const dir = join(tmp, "state-owner");
    fs.mkdirSync(dir, { mode: 0o700 });
    await saveState(dir, good);
    fs.chownSync(join(dir, "state.json"), 65534, 65534);
    const r = loadState(dir);
    assert.equal(r.state, null);
    assert.match(r.problem ?? "", /owned by uid 65534/);
  });
  test("a directory others can write makes the state untrusted", async () => {
    const dir = join(tmp, "state-dirww");
    fs.mkdirSync(dir, { mode: 0o700 });
    await saveState(dir, good);
    fs.chmodSync(dir, 0o777);
    assert.match(loadState(dir).problem ?? "", /writable by group or others/);
  });
  test("a symlinked state file is ignored", () => {
    const dir = join(tmp, "state-link");
    fs.mkdirSync(dir, { mode: 0o700 });
    fs.symlinkSync("/etc/passwd", join(dir, "state.json"));
    assert.match(loadState(dir).problem ?? "", /symbolic link/);
  });
  const bad: [string, unknown][] = [
    ["not an object", 3],
    ["wrong version", { ...good, version: 2 }],
    [
      "unknown state",
      {
        ...good,
        builders: {
          x: {
            ...good.builders["ssh://b1"],
            memory: { ...good.builders["ssh://b1"]!.memory, state: "gone" },
          },
        },
      },
    ],
    [
      "negative failures",
      {
        ...good,
        builders: {
          x: {
            ...good.builders["ssh://b1"],
            memory: { ...good.builders["ssh://b1"]!.memory, consecutiveFailures: -1 },
          },
        },
      },
    ],
    [
      "huge level",
      {
        ...good,
        builders: {
          x: {
            ...good.builders["ssh://b1"],
            memory: { ...good.builders["ssh://b1"]!.memory, backoffLevel: 1e9 },
          },
        },
      },
    ],
    [
      "string until",
      {
        ...good,
        builders: {
          x: {
            ...good.builders["ssh://b1"],
            memory: { ...good.builders["ssh://b1"]!.memory, quarantinedUntil: "soon" },
          },
        },
      },
    ],
    [
      "bad transition",
      { ...good, builders: { x: { ...good.builders["ssh://b1"], transitions: [{ at: 1 }] } } },
    ],
    [
      "bad counters",
      { ...good, builders: { x: { ...good.builders["ssh://b1"], probeCounts: { ok: "many" } } } },
    ],
    ["no drained flag", { ...good, builders: { x: { ...good.builders["ssh://b1"], drained: undefined } } }],
  ];
  for (const [name, v] of bad) test(`invalid: ${name}`, () => assert.equal(validateState(v).ok, false));
});
