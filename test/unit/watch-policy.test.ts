import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { WatchState } from "../../src/app/watch/model.js";
import {
  applyGuards,
  type BuilderMemory,
  backoffDelaySec,
  causeKind,
  DEFAULT_POLICY,
  disposition,
  freshMemory,
  type GuardInput,
  isDue,
  keep,
  type PolicyConfig,
  step,
} from "../../src/app/watch/policy.js";

const P = DEFAULT_POLICY;
const S = 1000;

describe("backoff: Hydra's formula and constants by default", () => {
  // Hydra's queue runner: disabledUntil = now + 60·3^(n−1) + rand()%30, n capped at 4.
  const cases: [number, number, number][] = [
    [1, 0, 60],
    [1, 0.999, 89],
    [2, 0, 180],
    [2, 0.5, 195],
    [3, 0, 540],
    [4, 0, 1620],
    [4, 0.999, 1649],
    [5, 0, 1620], // capped at level 4
    [12, 0.999, 1649],
    [0, 0, 60], // level 0 is treated as the first
  ];
  for (const [n, r, want] of cases)
    test(`delay(${n}, rand ${r}) = ${want} s`, () => assert.equal(backoffDelaySec(n, P, r), want));
  test("configurable: base 10, factor 2, max 50, no jitter", () => {
    const c: PolicyConfig = {
      ...P,
      backoffBaseSec: 10,
      backoffFactor: 2,
      backoffMaxSec: 50,
      backoffMaxLevel: 4,
      backoffJitterSec: 0,
    };
    assert.deepEqual(
      [1, 2, 3, 4, 5].map((n) => backoffDelaySec(n, c, 0.9)),
      [10, 20, 40, 50, 50],
    );
  });
});

describe("cause kinds", () => {
  const cases: [boolean, string | null, string][] = [
    [true, null, "pass"],
    [false, "slow", "pass"],
    [false, "remote-untrusted", "deterministic"],
    [false, "system-mismatch", "deterministic"],
    [false, "feature-mismatch", "deterministic"],
    [false, "unreachable", "builder"],
    [false, "timeout", "builder"],
    [false, "auth", "builder"],
    [false, "host-key", "builder"],
    [false, "protocol", "builder"],
    [false, null, "builder"],
    [false, "daemon-unreachable", "local"],
    [false, "ssh-missing", "local"],
    [false, "local-config", "local"],
  ];
  for (const [ok, cause, want] of cases)
    test(`${ok ? "ok" : "fail"} ${cause} → ${want}`, () => assert.equal(causeKind(ok, cause), want));
});

type Ev = { ok: boolean; cause?: string; at: number };

/** Run a sequence of probe outcomes from a fresh memory; rand fixed at 0 (no jitter). */
function run(
  events: Ev[],
  cfg: PolicyConfig = P,
  from?: BuilderMemory,
): { m: BuilderMemory; path: string[] } {
  let m = from ?? freshMemory(0);
  const path: string[] = [];
  for (const e of events) {
    const r = step(m, { ok: e.ok, cause: e.cause ?? null }, e.at, cfg, 0);
    m = r.memory;
    path.push(m.state);
  }
  return { m, path };
}

const fail = (at: number, cause = "timeout"): Ev => ({ ok: false, cause, at: at * S });
const pass = (at: number): Ev => ({ ok: true, at: at * S });

describe("state machine (table)", () => {
  const table: { name: string; events: Ev[]; path: WatchState[]; level?: number; until?: number | null }[] = [
    { name: "a pass makes an unknown builder up", events: [pass(0)], path: ["up"] },
    {
      name: "one network failure: suspect, listed",
      events: [pass(0), fail(30)],
      path: ["up", "suspect"],
    },
    {
      name: "K=2 network failures quarantine; level 1, back in 60 s",
      events: [pass(0), fail(30), fail(60)],
      path: ["up", "suspect", "quarantined"],
      level: 1,
      until: 120 * S,
    },
    {
      name: "a pass in between resets the count",
      events: [fail(0), pass(30), fail(60), pass(90)],
      path: ["suspect", "up", "suspect", "up"],
    },
    {
      name: "a deterministic cause quarantines at once (misconfigured)",
      events: [pass(0), fail(30, "remote-untrusted")],
      path: ["up", "misconfigured"],
      level: 1,
      until: 90 * S,
    },
    {
      name: "feature-mismatch, system-mismatch: misconfigured at once",
      events: [fail(0, "feature-mismatch"), pass(100), pass(130), fail(140, "system-mismatch")],
      path: ["misconfigured", "probation", "up", "misconfigured"],
    },
    {
      name: "quarantine → probation on a pass → up after R=2 passes",
      events: [fail(0), fail(30), pass(100), pass(130)],
      path: ["suspect", "quarantined", "probation", "up"],
    },
    {
      name: "a failed re-probe raises the level: 60, then 180 s",
      events: [fail(0), fail(30), fail(100)],
      path: ["suspect", "quarantined", "quarantined"],
      level: 2,
      until: (100 + 180) * S,
    },
    {
      name: "a failure on probation goes back to quarantine one level up",
      events: [fail(0), fail(30), pass(100), fail(130)],
      path: ["suspect", "quarantined", "probation", "quarantined"],
      level: 2,
      until: (130 + 180) * S,
    },
    {
      name: "the level is capped at 4 (1620 s)",
      events: [fail(0), fail(30), fail(100), fail(300), fail(900), fail(3000), fail(6000)],
      path: [
        "suspect",
        "quarantined",
        "quarantined",
        "quarantined",
        "quarantined",
        "quarantined",
        "quarantined",
      ],
      level: 4,
      until: (6000 + 1620) * S,
    },
    {
      name: "unlike Hydra, recovery does not reset the level: a flapper comes back later each time",
      events: [fail(0), fail(30), pass(100), pass(130), fail(160), fail(190)],
      path: ["suspect", "quarantined", "probation", "up", "suspect", "quarantined"],
      level: 2,
      until: (190 + 180) * S,
    },
    {
      name: "600 s continuously up decays the level to 0",
      events: [fail(0), fail(30), pass(100), pass(130), pass(400), pass(731), fail(760), fail(790)],
      path: ["suspect", "quarantined", "probation", "up", "up", "up", "suspect", "quarantined"],
      level: 1,
      until: (790 + 60) * S,
    },
    {
      name: "slow is a pass",
      events: [{ ok: false, cause: "slow", at: 0 }],
      path: ["up"],
    },
  ];
  for (const row of table)
    test(row.name, () => {
      const { m, path } = run(row.events);
      assert.deepEqual(path, row.path);
      if (row.level !== undefined) assert.equal(m.backoffLevel, row.level);
      if (row.until !== undefined) assert.equal(m.quarantinedUntil, row.until);
    });

  test("failures within the 30 s window raise the level once", () => {
    const c = { ...P, failureThreshold: 1 };
    // quarantine at 0 (level 1); failed re-probes 10 s and 20 s later do not count; 40 s later does.
    const { m } = run([fail(0), fail(10), fail(20), fail(40)], c);
    assert.equal(m.backoffLevel, 2);
  });

  test("a drained builder keeps its state whatever the probes say", () => {
    const d = { ...freshMemory(0), state: "drained" as WatchState };
    const { path, m } = run([fail(0), fail(30), fail(60), pass(90)], P, d);
    assert.deepEqual(path, ["drained", "drained", "drained", "drained"]);
    assert.equal(m.lastSuccessAt, 90 * S);
  });

  test("a local cause in one builder's own checks counts like a network one", () => {
    const { path } = run([fail(0, "local-config"), fail(30, "local-config")]);
    assert.deepEqual(path, ["suspect", "quarantined"]);
  });

  test("K and R are configurable", () => {
    const c = { ...P, failureThreshold: 3, successThreshold: 1 };
    const { path } = run([fail(0), fail(30), fail(60), pass(200)], c);
    assert.deepEqual(path, ["suspect", "suspect", "quarantined", "up"]);
  });

  test("the reason names the cause or probe-ok, only on a change", () => {
    let m = freshMemory(0);
    const r1 = step(m, { ok: true }, 0, P, 0);
    assert.equal(r1.reason, "probe-ok");
    m = r1.memory;
    assert.equal(step(m, { ok: true }, 30 * S, P, 0).reason, null);
    assert.equal(step(m, { ok: false, cause: "auth" }, 30 * S, P, 0).reason, "auth");
  });
});

describe("dispositions and due", () => {
  const cases: [WatchState, "hold" | "remove", string][] = [
    ["up", "hold", "listed"],
    ["suspect", "hold", "listed"],
    ["kept", "hold", "listed"],
    ["unknown", "hold", "listed"],
    ["quarantined", "hold", "held"],
    ["misconfigured", "hold", "held"],
    ["probation", "hold", "held"],
    ["quarantined", "remove", "removed"],
    ["drained", "hold", "removed"],
  ];
  for (const [s, mode, want] of cases)
    test(`${s} (${mode}) → ${want}`, () => assert.equal(disposition(s, { mode }), want));
  test("a quarantined builder is due only when its backoff ran out", () => {
    const m = { ...freshMemory(0), state: "quarantined" as WatchState, quarantinedUntil: 100 };
    assert.equal(isDue(m, 99), false);
    assert.equal(isDue(m, 100), true);
    assert.equal(isDue({ ...m, state: "probation" }, 0), true);
  });
});

describe("guards", () => {
  const item = (
    b: string,
    state: WatchState,
    previous: WatchState,
    failing: boolean,
    since = 0,
  ): GuardInput => ({
    builder: b,
    memory: { ...freshMemory(since), state },
    previous,
    failingNetwork: failing,
  });
  test("every builder failing at once: suspect this machine, keep them all", () => {
    const r = applyGuards(
      [
        item("b1", "quarantined", "suspect", true),
        item("b2", "quarantined", "quarantined", true),
        item("b3", "suspect", "up", true),
        item("b4", "kept", "kept", true),
      ],
      P,
    );
    assert.deepEqual(r.guards, ["all-failed"]);
    assert.deepEqual(r.kept.sort(), ["b1", "b2", "b4"]);
  });
  test("one builder of one failing is not 'all failed' (but the share guard keeps it)", () => {
    const r = applyGuards([item("b1", "quarantined", "suspect", true)], P);
    assert.deepEqual(r.guards, ["max-quarantined-share"]);
    assert.deepEqual(r.kept, ["b1"]);
  });
  test("at most 50%: the old quarantine stays, the newest is kept", () => {
    const r = applyGuards(
      [
        item("b1", "quarantined", "quarantined", true, 10),
        item("b2", "quarantined", "suspect", true, 50),
        item("b3", "misconfigured", "up", false, 50),
        item("b4", "up", "up", false),
      ],
      P,
    );
    assert.deepEqual(r.guards, ["max-quarantined-share"]);
    assert.deepEqual(r.kept, ["b3"]);
  });
  test("within the share: nothing kept", () => {
    const r = applyGuards(
      [
        item("b1", "quarantined", "suspect", true),
        item("b2", "up", "up", false),
        item("b3", "up", "up", false),
        item("b4", "up", "up", false),
      ],
      P,
    );
    assert.deepEqual(r, { kept: [], guards: [] });
  });
  test("drained builders are not counted", () => {
    const r = applyGuards(
      [
        item("b1", "drained", "drained", true),
        item("b2", "quarantined", "suspect", true),
        item("b3", "up", "up", false),
      ],
      P,
    );
    // 2 active, at most 1 out: b2 may go
    assert.deepEqual(r, { kept: [], guards: [] });
  });
  test("keep: listed, counters kept, the next failure tries again", () => {
    let m: BuilderMemory = {
      ...freshMemory(0),
      consecutiveFailures: 2,
      backoffLevel: 1,
      state: "quarantined",
    };
    m = keep(m, 5);
    assert.equal(m.state, "kept");
    assert.equal(disposition(m.state, P), "listed");
    const r = step(m, { ok: false, cause: "timeout" }, 60 * S, P, 0);
    assert.equal(r.memory.state, "quarantined");
    assert.equal(r.memory.backoffLevel, 2);
  });
});
