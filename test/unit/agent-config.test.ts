import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  AgentConfigError,
  agentConfigFormat,
  agentNixOverrides,
  agentNixSettingsFindings,
  didYouMean,
  loadAgentConfig,
  parseAgentConfig,
} from "../../src/agent/index.js";

const ids = (r: { findings: readonly { id: string }[] }): string[] => r.findings.map((f) => f.id);

describe("agent config format", () => {
  it("chooses JSON only for a .json suffix, as the agent does", () => {
    assert.equal(agentConfigFormat("/nix/store/x-hercules-ci-agent.json"), "json");
    assert.equal(agentConfigFormat("agent.toml"), "toml");
    assert.equal(agentConfigFormat("agent.conf"), "toml");
    assert.equal(agentConfigFormat("agent.JSON"), "toml");
  });
});

describe("JSON configs", () => {
  it("parses the minimal documented config and derives every default", () => {
    const r = parseAgentConfig('{ "baseDirectory": "/var/lib/hercules-ci-agent" }', "/etc/agent.json", {
      cpus: 8,
    });
    assert.deepEqual(ids(r), []);
    const c = r.config!;
    assert.equal(c.format, "json");
    assert.equal(c.baseDirectory, "/var/lib/hercules-ci-agent");
    assert.equal(c.staticSecretsDirectory, "/var/lib/hercules-ci-agent/secrets");
    assert.equal(c.workDirectory, "/var/lib/hercules-ci-agent/work");
    assert.equal(c.clusterJoinTokenPath, "/var/lib/hercules-ci-agent/secrets/cluster-join-token.key");
    assert.equal(c.binaryCachesPath, "/var/lib/hercules-ci-agent/secrets/binary-caches.json");
    assert.equal(c.secretsJsonPath, "/var/lib/hercules-ci-agent/secrets/secrets.json");
    assert.equal(c.concurrentTasks, 8);
    assert.equal(c.concurrentTasksAuto, true);
    assert.equal(c.nixUserIsTrusted, false);
    assert.equal(c.apiBaseUrl, "https://hercules-ci.com");
    assert.equal(c.apiBaseUrlSource, "default");
    assert.equal(c.logLevel, "InfoS");
    assert.equal(c.nixVerbosity, "Talkative");
    assert.equal(c.allowInsecureBuiltinFetchers, false);
    assert.equal(c.remotePlatformsWithSameFeatures, null);
    assert.deepEqual(c.nixSettings, {});
    assert.deepEqual(c.labels, {});
  });

  it("derives secret paths from staticSecretsDirectory, not baseDirectory, when it is set", () => {
    const r = parseAgentConfig(
      JSON.stringify({ baseDirectory: "/b/", staticSecretsDirectory: "/s", workDirectory: "/w" }),
      "a.json",
      { cpus: 1 },
    );
    const c = r.config!;
    assert.equal(c.clusterJoinTokenPath, "/s/cluster-join-token.key");
    assert.equal(c.binaryCachesPath, "/s/binary-caches.json");
    assert.equal(c.workDirectory, "/w");
    // concurrentTasks "auto" is at least 2
    assert.equal(c.concurrentTasks, 2);
  });

  it("takes apiBaseUrl from HERCULES_CI_API_BASE_URL before HERCULES_API_BASE_URL", () => {
    const text = '{"baseDirectory":"/b"}';
    const env = {
      HERCULES_API_BASE_URL: "https://old.example",
      HERCULES_CI_API_BASE_URL: "https://new.example",
    };
    assert.equal(parseAgentConfig(text, "a.json", { env }).config!.apiBaseUrl, "https://new.example");
    const r = parseAgentConfig(text, "a.json", { env: { HERCULES_API_BASE_URL: "https://old.example" } });
    assert.equal(r.config!.apiBaseUrl, "https://old.example");
    assert.equal(r.config!.apiBaseUrlSource, "HERCULES_API_BASE_URL");
  });

  it("parses the full shape from the spec (module-generated JSON)", () => {
    const text = JSON.stringify(
      {
        apiBaseUrl: "http://api",
        nixUserIsTrusted: true,
        concurrentTasks: 4,
        baseDirectory: "/var/lib/hercules-ci-agent",
        logLevel: "DebugS",
        nixVerbosity: "Vomit",
        nixSettings: { substituters: "https://example.com" },
        remotePlatformsWithSameFeatures: ["aarch64-darwin", "x86_64-darwin"],
        labels: { agent: { source: "flake" }, version: null },
        effectMountables: { hosts: { source: "/etc/hosts", readOnly: true, condition: true } },
        allowInsecureBuiltinFetchers: true,
      },
      null,
      2,
    );
    const r = parseAgentConfig(text, "/nix/store/x-hercules-ci-agent.json");
    assert.deepEqual(ids(r), []);
    const c = r.config!;
    assert.equal(c.nixUserIsTrusted, true);
    assert.equal(c.concurrentTasks, 4);
    assert.equal(c.concurrentTasksAuto, false);
    assert.equal(c.logLevel, "DebugS");
    assert.equal(c.nixVerbosity, "Vomit");
    assert.deepEqual(c.remotePlatformsWithSameFeatures, ["aarch64-darwin", "x86_64-darwin"]);
    assert.deepEqual(c.nixSettings, { substituters: "https://example.com" });
    assert.equal(c.effectMountables.hosts!.source, "/etc/hosts");
    assert.deepEqual(c.labels, { agent: { source: "flake" }, version: null });
    assert.ok(c.explicitKeys.includes("nixSettings"));
  });

  it("treats JSON null as absent, without findings", () => {
    const r = parseAgentConfig('{"baseDirectory":"/b","nixUserIsTrusted":null,"labels":null}', "a.json");
    assert.deepEqual(ids(r), []);
    assert.equal(r.config!.nixUserIsTrusted, false);
  });

  it("flags misspelt keys with a suggestion and the line", () => {
    const text = '{\n  "baseDirectory": "/b",\n  "remotePlatformWithSameFeatures": ["aarch64-darwin"]\n}';
    const r = parseAgentConfig(text, "/etc/agent.json");
    const f = r.findings.find((x) => x.id === "agent-config-unknown-key");
    assert.ok(f, "expected an unknown-key finding");
    assert.equal(f.severity, "warning");
    assert.match(f.message, /Did you mean remotePlatformsWithSameFeatures\?/);
    assert.equal(f.line, 3);
    assert.equal(f.file, "/etc/agent.json");
    // and, like the agent, it advertises nothing extra
    assert.equal(r.config!.remotePlatformsWithSameFeatures, null);
  });

  it("suggests across case and separators, and moves Nix settings into nixSettings", () => {
    assert.equal(didYouMean("base_directory", ["baseDirectory", "workDirectory"]), "baseDirectory");
    assert.equal(didYouMean("NixUserIsTrusted", ["nixUserIsTrusted"]), "nixUserIsTrusted");
    assert.equal(didYouMean("completelyDifferent", ["baseDirectory"]), null);
    const r = parseAgentConfig('{"baseDirectory":"/b","extra-platforms":"aarch64-linux"}', "a.json");
    const f = r.findings.find((x) => x.id === "agent-config-unknown-key")!;
    assert.match(f.fix!, /nixSettings/);
  });

  it("ignores mistyped values as the agent does, and says so", () => {
    const r = parseAgentConfig(
      '{"baseDirectory":"/b","nixUserIsTrusted":"true","concurrentTasks":"4","logLevel":"debug"}',
      "a.json",
      { cpus: 16 },
    );
    const c = r.config!;
    assert.equal(c.nixUserIsTrusted, false);
    assert.equal(c.concurrentTasks, 16);
    assert.equal(c.logLevel, "InfoS");
    assert.equal(r.findings.filter((f) => f.id === "agent-config-type").length, 2);
    const enumF = r.findings.find((f) => f.id === "agent-config-enum")!;
    assert.match(enumF.message, /Did you mean DebugS\?/);
  });

  it("drops ALL nixSettings when one value is not a string, naming the value", () => {
    const text =
      '{\n"baseDirectory": "/b",\n"nixSettings": {\n  "builders": "@/etc/nix/machines",\n  "max-jobs": 0\n}\n}';
    const r = parseAgentConfig(text, "/etc/agent.json");
    assert.deepEqual(r.config!.nixSettings, {});
    assert.deepEqual(agentNixOverrides(r.config!), []);
    const f = r.findings.find((x) => x.id === "agent-config-nix-settings-non-string");
    assert.ok(f);
    assert.equal(f.severity, "error");
    assert.match(f.message, /nixSettings\.max-jobs/);
    assert.match(f.fix!, /max-jobs = "0"/);
    assert.equal(f.line, 5);
  });

  it("suggests a space-separated string for list values in nixSettings", () => {
    const r = parseAgentConfig('{"baseDirectory":"/b","nixSettings":{"substituters":["a","b"]}}', "a.json");
    const f = r.findings.find((x) => x.id === "agent-config-nix-settings-non-string")!;
    assert.match(f.fix!, /"a b"/);
  });

  it("reports missing baseDirectory as fatal: no final config", () => {
    const r = parseAgentConfig('{"concurrentTasks": 2}', "/etc/agent.json");
    assert.equal(r.config, null);
    assert.deepEqual(ids(r), ["agent-config-base-directory-missing"]);
    assert.equal(r.input.concurrentTasks, 2);
  });

  it("reports concurrentTasks < 1 as fatal", () => {
    const r = parseAgentConfig('{"baseDirectory":"/b","concurrentTasks":0}', "a.json");
    assert.equal(r.config, null);
    assert.ok(ids(r).includes("agent-config-concurrent-tasks"));
  });

  it("reports a top-level non-object", () => {
    const r = parseAgentConfig("[1,2]", "a.json");
    assert.equal(r.config, null);
    assert.ok(ids(r).includes("agent-config-not-object"));
  });

  it("drops every effect mountable when one is malformed", () => {
    const r = parseAgentConfig(
      '{"baseDirectory":"/b","effectMountables":{"ok":{"source":"/x","readOnly":true,"condition":true},"bad":{"source":"/y"}}}',
      "a.json",
    );
    assert.deepEqual(r.config!.effectMountables, {});
    assert.ok(ids(r).includes("agent-config-mountables-dropped"));
  });

  it("gives file, line and column for JSON syntax errors", () => {
    const text = '{\n  "baseDirectory": "/b",\n  "concurrentTasks": 4,\n}\n';
    assert.throws(
      () => parseAgentConfig(text, "/etc/hci/agent.json"),
      (e: unknown) => {
        assert.ok(e instanceof AgentConfigError);
        assert.equal(e.file, "/etc/hci/agent.json");
        assert.equal(e.line, 4);
        assert.equal(e.column, 1);
        assert.match(e.message, /^\/etc\/hci\/agent\.json:4:1: JSON syntax error/);
        return true;
      },
    );
    // a message without a position from V8 still gets one from our scanner
    assert.throws(
      () => parseAgentConfig('{"a": [1,]}', "x.json"),
      (e: unknown) => e instanceof AgentConfigError && e.line === 1 && e.column === 10,
    );
  });
});

describe("TOML configs", () => {
  it("parses the agent's own TOML test shape, with explicit intermediate tables", () => {
    const text = [
      "allowInsecureBuiltinFetchers = true",
      'apiBaseUrl = "http://api"',
      'baseDirectory = "/var/lib/hercules-ci-agent"',
      "concurrentTasks = 4",
      'logLevel = "DebugS"',
      "nixUserIsTrusted = true",
      'remotePlatformsWithSameFeatures = ["aarch64-darwin"]',
      "[nixSettings]",
      '  substituters = "https://example.com"',
      "[effectMountables]",
      "[effectMountables.hosts]",
      "  condition = true",
      "  readOnly = true",
      '  source = "/etc/hosts"',
      "[labels]",
      'module = "nixos-profile"',
      "[labels.agent]",
      'source = "flake"',
    ].join("\n");
    const r = parseAgentConfig(text, "/etc/agent.toml");
    assert.deepEqual(ids(r), []);
    const c = r.config!;
    assert.equal(c.format, "toml");
    assert.equal(c.concurrentTasks, 4);
    assert.deepEqual(c.nixSettings, { substituters: "https://example.com" });
    assert.equal(c.effectMountables.hosts!.readOnly, true);
    assert.deepEqual(c.labels, { module: "nixos-profile", agent: { source: "flake" } });
    assert.equal(r.keyLines.get("nixSettings.substituters"), 9);
  });

  it("detects a sub-table without its intermediate table, and drops it like the agent", () => {
    const text = [
      'baseDirectory = "/b"',
      "[effectMountables.hosts]",
      "condition = true",
      "readOnly = true",
      'source = "/etc/hosts"',
    ].join("\n");
    const r = parseAgentConfig(text, "/etc/agent.toml");
    const f = r.findings.find((x) => x.id === "agent-config-toml-intermediate-table");
    assert.ok(f);
    assert.equal(f.line, 2);
    assert.match(f.message, /\[effectMountables\.hosts\]/);
    assert.match(f.fix!, /\[effectMountables\]/);
    assert.deepEqual(r.config!.effectMountables, {});
  });

  it("detects a sub-table that does not directly follow its parent table", () => {
    const text = [
      'baseDirectory = "/b"',
      "[labels]",
      'a = "1"',
      "[nixSettings]",
      'cores = "2"',
      "[labels.late]",
      'x = "y"',
    ].join("\n");
    const r = parseAgentConfig(text, "a.toml");
    const f = r.findings.find((x) => x.id === "agent-config-toml-intermediate-table");
    assert.ok(f);
    assert.equal(f.line, 6);
    assert.deepEqual(r.config!.labels, { a: "1" });
    assert.deepEqual(r.config!.nixSettings, { cores: "2" });
  });

  it("detects top-level dotted keys for tables, which the agent does not read", () => {
    const text = 'baseDirectory = "/b"\nnixSettings.builders = "@/etc/nix/machines"\n';
    const r = parseAgentConfig(text, "a.toml");
    const f = r.findings.find((x) => x.id === "agent-config-toml-dotted-key");
    assert.ok(f);
    assert.equal(f.line, 2);
    assert.deepEqual(r.config!.nixSettings, {});
  });

  it("does not mistake table headers inside multi-line strings or arrays", () => {
    const text = [
      'baseDirectory = "/b"',
      "remotePlatformsWithSameFeatures = [",
      '  "aarch64-darwin", # comment with [brackets]',
      "]",
      "[labels]",
      'note = """',
      "[labels.fake]",
      '"""',
    ].join("\n");
    const r = parseAgentConfig(text, "a.toml");
    assert.deepEqual(ids(r), []);
    assert.deepEqual(r.config!.remotePlatformsWithSameFeatures, ["aarch64-darwin"]);
    assert.equal(r.config!.labels.note, "[labels.fake]\n");
  });

  it("treats TOML floats as invalid concurrentTasks and integers as valid", () => {
    const a = parseAgentConfig('baseDirectory = "/b"\nconcurrentTasks = 3\n', "a.toml", { cpus: 32 });
    assert.equal(a.config!.concurrentTasks, 3);
    const b = parseAgentConfig('baseDirectory = "/b"\nconcurrentTasks = 3.0\n', "a.toml", { cpus: 32 });
    assert.equal(b.config!.concurrentTasks, 32);
    assert.ok(ids(b).includes("agent-config-type"));
  });

  it("drops all nixSettings for a TOML integer or boolean value", () => {
    const r = parseAgentConfig(
      'baseDirectory = "/b"\n[nixSettings]\nmax-jobs = 0\nsandbox = false\n',
      "a.toml",
    );
    assert.deepEqual(r.config!.nixSettings, {});
    const fs = r.findings.filter((f) => f.id === "agent-config-nix-settings-non-string");
    assert.deepEqual(
      fs.map((f) => f.line),
      [3, 4],
    );
    assert.match(fs[1]!.fix!, /sandbox = "false"/);
  });

  it("flags misspelt keys in TOML with their line", () => {
    const r = parseAgentConfig('baseDirectory = "/b"\n\nnixUserIsTrused = true\n', "a.toml");
    const f = r.findings.find((x) => x.id === "agent-config-unknown-key")!;
    assert.equal(f.line, 3);
    assert.match(f.message, /Did you mean nixUserIsTrusted\?/);
  });

  it("gives file and line for TOML syntax errors", () => {
    assert.throws(
      () => parseAgentConfig('baseDirectory = "/b"\nconcurrentTasks = \n', "/etc/agent.toml"),
      (e: unknown) => {
        assert.ok(e instanceof AgentConfigError);
        assert.equal(e.file, "/etc/agent.toml");
        assert.equal(e.line, 2);
        assert.match(e.message, /^\/etc\/agent\.toml:2:\d+: TOML syntax error/);
        return true;
      },
    );
  });

  it("loads from disk, under a root prefix, and names missing files", () => {
    const dir = mkdtempSync(join(tmpdir(), "agent-config-"));
    try {
      writeFileSync(join(dir, "agent.toml"), 'baseDirectory = "/var/lib/x"\n');
      const r = loadAgentConfig("/agent.toml", { root: dir });
      assert.equal(r.file, "/agent.toml");
      assert.equal(r.config!.baseDirectory, "/var/lib/x");
      assert.throws(
        () => loadAgentConfig("/missing.json", { root: dir }),
        (e: unknown) =>
          e instanceof AgentConfigError && e.file === "/missing.json" && /no such file/.test(e.message),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("nixSettings as overrides", () => {
  it("lists overrides in the agent's application order (sorted keys) with agent origins", () => {
    const r = parseAgentConfig(
      JSON.stringify({
        baseDirectory: "/b",
        nixSettings: { "system-features": "kvm", builders: "@/m", "extra-platforms": "aarch64-linux" },
      }),
      "/etc/agent.json",
    );
    const o = agentNixOverrides(r.config!);
    assert.deepEqual(
      o.map((x) => x.name),
      ["builders", "extra-platforms", "system-features"],
    );
    assert.deepEqual(o[0], {
      name: "builders",
      value: "@/m",
      origin: { kind: "agent", file: "/etc/agent.json", key: "nixSettings.builders" },
    });
  });

  it("warns about x together with extra-x and says which wins in the current agent", () => {
    const subs = agentNixSettingsFindings({ substituters: "a", "extra-substituters": "b" }, "f.json");
    assert.equal(subs.length, 1);
    assert.equal(subs[0]!.id, "agent-nix-settings-extra-and-plain");
    assert.match(subs[0]!.message, /substituters replaces the value/);
    const builders = agentNixSettingsFindings({ builders: "a", "extra-builders": "b" }, "f.json");
    assert.match(builders[0]!.message, /builders followed by extra-builders/);
    assert.deepEqual(agentNixSettingsFindings({ builders: "a", "extra-substituters": "b" }, "f.json"), []);
  });

  it("flags unknown Nix settings when given the list of known ones", () => {
    const known = new Set(["builders", "substituters"]);
    const f = agentNixSettingsFindings(
      { "extra-substituters": "x", buidlers: "y" },
      "f.json",
      () => 7,
      known,
    );
    assert.deepEqual(
      f.map((x) => [x.id, x.line]),
      [["agent-nix-settings-unknown", 7]],
    );
    assert.match(f[0]!.message, /buidlers/);
  });
});

describe("loadAgentConfig with the real root", () => {
  it("reads an absolute path when the root is /", () => {
    const dir = mkdtempSync(join(tmpdir(), "nb-agentcfg-"));
    try {
      const file = join(dir, "agent.json");
      writeFileSync(
        file,
        JSON.stringify({ baseDirectory: "/var/lib/hercules-ci-agent", nixUserIsTrusted: true }),
      );
      const r = loadAgentConfig(file, { root: "/" });
      assert.equal(r.config?.nixUserIsTrusted, true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
