/**
 * What hercules-ci-agent 0.10.8 really does (issue 18), each on a fixture config in
 * test/fixtures/agent/configs/. Sources cited as hercules-ci/hercules-ci-agent@037a7f91 paths
 * (A/ = hercules-ci-agent/hercules-ci-agent/Hercules/Agent/), kowainik/tomland@a486fea8 and
 * ghc/ghc rts; docs/agent.md has the same citations with line numbers.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  AgentConfigError,
  affinityCpuCount,
  checkModuleExtraOptions,
  checkNarinfoNegativeTtl,
  cpusAllowedCount,
  jsonConcurrentTasks,
  loadAgentConfig,
  parseAgentConfig,
} from "../../src/agent/index.js";

const FIX = join(import.meta.dirname, "..", "fixtures", "agent", "configs");
const fx = (name: string) => join(FIX, name);
const ids = (r: { findings: readonly { id: string }[] }): string[] => r.findings.map((f) => f.id);

describe("point 3: JSON concurrentTasks is floored (A/Config/Json.hs:168-169 int = _Integer . integral)", () => {
  it("4.5 means 4, not auto", () => {
    const r = loadAgentConfig(fx("concurrent-4.5.json"), { cpus: 16 });
    assert.equal(r.config!.concurrentTasks, 4);
    assert.equal(r.config!.concurrentTasksAuto, false);
    const f = r.findings.find((x) => x.id === "agent-config-concurrent-tasks-float")!;
    assert.match(f.message, /rounds it down to 4/);
    assert.equal(f.line, 3);
  });

  it("0.5 means 0, and the agent refuses to start (A/Config.hs:222-225)", () => {
    const r = loadAgentConfig(fx("concurrent-0.5.json"), { cpus: 16 });
    assert.equal(r.config, null);
    assert.ok(ids(r).includes("agent-config-concurrent-tasks"));
    assert.match(
      r.findings.find((x) => x.id === "agent-config-concurrent-tasks-float")!.message,
      /refuses to start/,
    );
  });

  it("a number beyond a 64-bit Int fails `integral` and means auto", () => {
    const r = loadAgentConfig(fx("concurrent-huge.json"), { cpus: 16 });
    assert.equal(r.config!.concurrentTasks, 16);
    assert.equal(r.config!.concurrentTasksAuto, true);
    assert.ok(ids(r).includes("agent-config-type"));
    assert.equal(jsonConcurrentTasks(-0.5), -1);
    assert.equal(jsonConcurrentTasks(2 ** 62), 2 ** 62);
    assert.equal(jsonConcurrentTasks(2 ** 63), null);
  });

  it("TOML floats still mean auto (tomland's int codec does not read floats), and so do TOML integers beyond Int", () => {
    const r = parseAgentConfig('baseDirectory = "/b"\nconcurrentTasks = 4.5\n', "a.toml", { cpus: 16 });
    assert.equal(r.config!.concurrentTasks, 16);
    const big = parseAgentConfig('baseDirectory = "/b"\nconcurrentTasks = 9223372036854775808\n', "a.toml", {
      cpus: 16,
    });
    assert.equal(big.config!.concurrentTasks, 16);
    const max = parseAgentConfig('baseDirectory = "/b"\nconcurrentTasks = 9223372036854775807\n', "a.toml", {
      cpus: 16,
    });
    assert.equal(max.config!.concurrentTasksAuto, false);
  });
});

describe("point 4: TOML that tomland cannot parse is an error, as in the agent", () => {
  // tomland src/Toml/Parser/Value.hs arrayP + anyValueP, src/Toml/Type/UValue.hs typeCheck
  it("a mixed-type array stops the agent with a parse error; we throw with the line", () => {
    assert.throws(
      () => loadAgentConfig(fx("mixed-array.toml")),
      (e: unknown) =>
        e instanceof AgentConfigError &&
        e.line === 5 &&
        /labels\.mix is an array that mixes an integer and a string/.test(e.message) &&
        /tomland/.test(e.message),
    );
  });

  it("integers and floats do not mix either", () => {
    assert.throws(
      () => loadAgentConfig(fx("mixed-number.toml")),
      (e: unknown) =>
        e instanceof AgentConfigError && e.line === 5 && /an integer and a float/.test(e.message),
    );
  });

  it("an inline table inside an inline table (tomland Parser/Item.hs inlineTableP)", () => {
    assert.throws(
      () => loadAgentConfig(fx("nested-inline.toml")),
      (e: unknown) =>
        e instanceof AgentConfigError && e.line === 4 && /nests an inline table/.test(e.message),
    );
  });

  it("what tomland accepts is still accepted: arrays of arrays of different types, top-level inline table arrays", () => {
    const r = loadAgentConfig(fx("labels-ok.toml"));
    assert.deepEqual(r.config!.labels, {
      role: "ci",
      since: "2026-01-15",
      sizes: [[1, 2], ["a"]],
      site: { rack: "r3" },
    });
    assert.deepEqual(ids(r), []);
    const ok = parseAgentConfig('baseDirectory = "/b"\nx = [{a = 1}, {a = 2}]\n', "a.toml");
    assert.ok(ok.config);
    assert.throws(
      () => parseAgentConfig('baseDirectory = "/b"\nx = [[{a = 1}]]\n', "a.toml"),
      AgentConfigError,
    );
    assert.throws(
      () => parseAgentConfig('baseDirectory = "/b"\nx = [{a = 1}, 2]\n', "a.toml"),
      AgentConfigError,
    );
    assert.throws(
      () => parseAgentConfig('baseDirectory = "/b"\nx = [1979-05-27, 1979-05-27T07:32:00]\n', "a.toml"),
      AgentConfigError,
    );
  });
});

describe("point 5: TOML labels the agent drops whole (A/Config/Toml.hs:17-58 embedJson)", () => {
  it("a date anywhere in labels empties all labels", () => {
    const r = loadAgentConfig(fx("labels-date.toml"));
    assert.deepEqual(r.config!.labels, {});
    const f = r.findings.find((x) => x.id === "agent-config-labels-dropped")!;
    assert.match(f.message, /labels\.since is a local date/);
    assert.match(f.message, /ALL labels/);
    assert.equal(f.line, 5);
  });

  it("an array of tables in labels empties all labels (tomland internalTableMap reads table arrays too)", () => {
    const r = loadAgentConfig(fx("labels-table-array.toml"));
    assert.deepEqual(r.config!.labels, {});
    assert.match(
      r.findings.find((x) => x.id === "agent-config-labels-dropped")!.message,
      /labels\.disks is an array of tables/,
    );
  });

  it("JSON labels take any JSON value", () => {
    const r = parseAgentConfig(
      '{"baseDirectory":"/b","labels":{"since":"2026-01-15","d":[{"a":1}]}}',
      "a.json",
    );
    assert.deepEqual(r.config!.labels, { since: "2026-01-15", d: [{ a: 1 }] });
  });
});

describe("point 2: narinfo-cache-negative-ttl depends on trust (A/Nix/Init.hs:13-39)", () => {
  const agentFile = {
    kind: "agent",
    file: "/etc/hercules-ci-agent.json",
    key: "nixSettings.narinfo-cache-negative-ttl",
  } as const;
  it("untrusted: the fix is the system nix.conf, and nixSettings is called out as not enough", () => {
    const f = checkNarinfoNegativeTtl({ value: null, store: "untrusted" });
    assert.equal(f[0]!.id, "agent-narinfo-negative-ttl");
    assert.match(f[0]!.fix!, /\/etc\/nix\/nix\.conf/);
    assert.match(f[0]!.fix!, /would only get the agent past its own check/);
    assert.doesNotMatch(f[0]!.fix!, /or set it in the agent's nixSettings/);
  });

  it("trusted: nixSettings reaches the daemon, so it is offered", () => {
    const f = checkNarinfoNegativeTtl({ value: "3600", store: "trusted" });
    assert.match(f[0]!.fix!, /or set it in the agent's nixSettings as "0"/);
  });

  it("untrusted with 0 only in nixSettings: the agent starts, the daemon keeps 3600", () => {
    const f = checkNarinfoNegativeTtl({
      value: "0",
      origin: agentFile,
      store: "untrusted",
      daemonValue: null,
    });
    assert.deepEqual(ids({ findings: f }), ["agent-narinfo-negative-ttl-daemon"]);
    assert.match(f[0]!.message, /3600/);
    assert.deepEqual(
      checkNarinfoNegativeTtl({ value: "0", origin: agentFile, store: "untrusted", daemonValue: "0" }),
      [],
    );
    assert.deepEqual(checkNarinfoNegativeTtl({ value: "0", store: "trusted", daemonValue: null }), []);
  });
});

describe("point 7: small points", () => {
  it("the modules reject trusted-users in nix.extraOptions (internal/nix/common.nix:69-80)", () => {
    assert.deepEqual(
      ids({
        findings: checkModuleExtraOptions({
          extraOptions: "  trusted-users = root\n",
          nixUserIsTrusted: true,
        }),
      }),
      ["agent-module-extra-options-trusted-users"],
    );
    assert.deepEqual(
      checkModuleExtraOptions({ extraOptions: "extra-trusted-users = ci\n", nixUserIsTrusted: true }),
      [],
    );
    assert.deepEqual(
      checkModuleExtraOptions({ extraOptions: "trusted-users = root\n", nixUserIsTrusted: false }),
      [],
    );
    assert.deepEqual(
      ids({
        findings: checkModuleExtraOptions({ extraOptions: "x = 1\ntrusted-users=a", nixUserIsTrusted: true }),
      }),
      ["agent-module-extra-options-trusted-users"],
    );
  });

  it("Cpus_allowed_list is counted like GHC's getNumberOfProcessors (sched_getaffinity)", () => {
    assert.equal(cpusAllowedCount("Name:\tx\nCpus_allowed_list:\t0-3,8,10-11\n"), 7);
    assert.equal(cpusAllowedCount("Cpus_allowed_list:\t5\n"), 1);
    assert.equal(cpusAllowedCount("Cpus_allowed:\tff\n"), null);
    const own = cpusAllowedCount(readFileSync("/proc/self/status", "utf8"));
    assert.equal(affinityCpuCount(), own);
  });

  it("a process pinned to one CPU counts 1, while os.cpus() counts them all", (t) => {
    if (cpus().length < 2) return t.skip("needs 2 CPUs");
    const src = join(import.meta.dirname, "..", "..", "src", "agent", "config.ts");
    const out = execFileSync(
      "taskset",
      [
        "-c",
        "0",
        process.execPath,
        "--import",
        "tsx",
        "-e",
        `import(${JSON.stringify(src)}).then((m) => console.log(m.affinityCpuCount(), require("node:os").cpus().length))`,
      ],
      { timeout: 30_000, encoding: "utf8" },
    );
    const [pinned, all] = out.trim().split(" ").map(Number);
    assert.equal(pinned, 1);
    assert.equal(all, cpus().length);
    // and the config's auto default follows: max(2, 1) = 2 whatever the machine has
  });
});

describe("point 7: advertised local platforms are a Haskell Data.Set of ByteString (A/EnvironmentInfo.hs:75)", () => {
  it("sorts byte-wise and removes duplicates, then appends remotePlatformsWithSameFeatures as written", async () => {
    const { agentAdvertisement } = await import("../../src/agent/index.js");
    const a = agentAdvertisement(
      {
        system: "x86_64-linux",
        extraPlatforms: ["i686-linux", "X86-weird", "i686-linux"],
        systemFeatures: [],
      },
      ["aarch64-darwin", "aarch64-darwin"],
    );
    // byte order puts upper case before lower case
    assert.deepEqual(a.localPlatforms, ["X86-weird", "i686-linux", "x86_64-linux"]);
    assert.deepEqual(a.platforms, [
      "X86-weird",
      "i686-linux",
      "x86_64-linux",
      "aarch64-darwin",
      "aarch64-darwin",
    ]);
  });
});
