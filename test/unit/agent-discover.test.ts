import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import {
  agentEnvironment,
  agentInstallDefaults,
  agentNixConfPaths,
  agentRestartCommand,
  type DiscoveredAgent,
  discoverAgents,
  loadAgentConfig,
  manualAgent,
  nixRelevantEnvironment,
  parseExecCommand,
  parsePlist,
  parseUnitText,
  readAgentRuntime,
  splitShellCommands,
} from "../../src/agent/index.js";

const FIX = join(dirname(fileURLToPath(import.meta.url)), "..", "fixtures", "agent");
const root = (name: string): string => join(FIX, name);
const only = (agents: DiscoveredAgent[], name: string): DiscoveredAgent => {
  const a = agents.find((x) => x.name === name);
  assert.ok(a, `expected an agent named ${name}, got ${agents.map((x) => x.name).join(", ")}`);
  return a;
};

describe("systemd discovery", () => {
  it("finds a plain unit under /usr/lib with its user, config and passwd home", () => {
    const agents = discoverAgents({ root: root("plain") });
    assert.equal(agents.length, 1);
    const a = agents[0]!;
    assert.equal(a.kind, "systemd");
    assert.equal(a.name, "hercules-ci-agent.service");
    assert.equal(a.instance, "");
    assert.equal(a.definitionFile, "/usr/lib/systemd/system/hercules-ci-agent.service");
    assert.equal(a.user, "hci");
    assert.equal(a.configFile, "/etc/hercules-ci-agent/agent.toml");
    assert.equal(a.agentExecutable, "/usr/local/bin/hercules-ci-agent");
    assert.equal(a.passwd?.home, "/var/lib/hci");
    assert.equal(a.environment.HOME?.value, "/var/lib/hci");
    assert.equal(a.installMethod, "manual");
    assert.deepEqual(a.findings, []);
    // the config it names is readable under the same root
    const cfg = loadAgentConfig(a.configFile!, { root: root("plain"), cpus: 2 });
    assert.equal(cfg.config!.concurrentTasks, 4);
  });

  it("applies drop-ins in name order, /etc shadowing /run for the same name, with ExecStart reset", () => {
    const a = discoverAgents({ root: root("dropin") })[0]!;
    assert.equal(a.definitionFile, "/lib/systemd/system/hercules-ci-agent.service");
    assert.deepEqual(a.dropIns, [
      "/etc/systemd/system/hercules-ci-agent.service.d/10-config.conf",
      "/run/systemd/system/hercules-ci-agent.service.d/20-env.conf",
    ]);
    assert.equal(a.configFile, "/etc/hci/agent.json");
    assert.equal(a.privateDevices, true);
    assert.equal(a.environment.XDG_CONFIG_HOME?.value, "/srv/hci config");
    assert.equal(
      a.environment.XDG_CONFIG_HOME?.source,
      "/run/systemd/system/hercules-ci-agent.service.d/20-env.conf:2",
    );
    assert.equal(a.environment.NIX_REMOTE?.value, "daemon");
    assert.deepEqual(Object.keys(nixRelevantEnvironment(a.environment)).sort(), [
      "HOME",
      "NIX_REMOTE",
      "USER",
      "XDG_CONFIG_HOME",
    ]);
    assert.ok(!a.findings.some((f) => f.id === "agent-service-multiple-execstart"));
  });

  it("handles prefixes, quotes, continuation, comments and EnvironmentFile variables", () => {
    const a = discoverAgents({ root: root("quoted") })[0]!;
    assert.equal(a.agentExecutable, "/opt/hci/bin/hercules-ci-agent");
    assert.equal(a.configFile, "/etc/hercules ci/agent config.toml");
    assert.deepEqual(a.argv!.slice(1), [
      "--config",
      "/etc/hercules ci/agent config.toml",
      "--test-arg",
      "two words",
    ]);
    assert.equal(a.environment.HOME?.value, "/home/ci-agent", "Environment=HOME overrides the passwd home");
    assert.equal(a.environment.NIX_USER_CONF_FILES?.value, "/etc/hci/nix.conf:/etc/hci/extra.conf");
    assert.equal(a.environment.NIX_USER_CONF_FILES?.source, "/etc/default/hercules-ci-agent:3");
    assert.equal(a.environment.HERCULES_CI_API_BASE_URL?.value, "https://hci.example.com");
    assert.deepEqual(a.environmentFiles, [
      { path: "/etc/default/hercules-ci-agent", optional: false, found: true },
      { path: "/etc/default/hercules-ci-agent.local", optional: true, found: false },
    ]);
    assert.deepEqual(
      a.findings.map((f) => [f.id, f.severity]),
      [["agent-service-envfile-missing-optional", "info"]],
    );
    // the agent user's Nix reads the files NIX_USER_CONF_FILES names, the first one winning
    const paths = agentNixConfPaths({ env: agentEnvironment(a), passwdHome: a.passwd?.home ?? null });
    assert.deepEqual(paths.userFiles, ["/etc/hci/extra.conf", "/etc/hci/nix.conf"]);
    assert.equal(paths.primaryUserFile, "/etc/hci/nix.conf");
  });

  it("reads NixOS units that link into /nix/store, with a named instance, and skips the restarter", () => {
    const agents = discoverAgents({ root: root("nixos") });
    assert.deepEqual(
      agents.map((a) => a.name),
      ["hercules-ci-agent-foo.service", "hercules-ci-agent.service"],
    );
    const main = only(agents, "hercules-ci-agent.service");
    assert.equal(main.definitionFile, "/etc/systemd/system/hercules-ci-agent.service");
    assert.equal(main.configFile, "/nix/store/4444-hercules-ci-agent.json");
    assert.equal(main.agentVersionHint, "0.10.8");
    assert.equal(main.privateDevices, true);
    assert.equal(main.installMethod, "nixos-flake");
    assert.equal(main.user, "hercules-ci-agent");
    const foo = only(agents, "hercules-ci-agent-foo.service");
    assert.equal(foo.instance, "foo");
    assert.equal(foo.user, "hci-foo");
    assert.equal(foo.privateDevices, false);
    assert.equal(foo.installMethod, "nixos-flake-instance");
    assert.equal(foo.passwd?.home, "/var/lib/hercules-ci-agent-foo");
    const d = agentInstallDefaults(foo.installMethod, foo.instance!);
    assert.equal(d.user, "hci-foo");
    assert.equal(d.home, "/var/lib/hercules-ci-agent-foo");
    const paths = agentNixConfPaths({ env: agentEnvironment(foo), passwdHome: foo.passwd!.home });
    assert.equal(paths.primaryUserFile, "/var/lib/hercules-ci-agent-foo/.config/nix/nix.conf");
    assert.equal(paths.suggestedMachinesFile, "/var/lib/hercules-ci-agent-foo/.config/nix/machines");
    assert.deepEqual(paths.userFiles, [
      "/etc/xdg/nix/nix.conf",
      "/var/lib/hercules-ci-agent-foo/.config/nix/nix.conf",
    ]);
    const cfg = loadAgentConfig(main.configFile!, { root: root("nixos") });
    assert.deepEqual(cfg.config!.remotePlatformsWithSameFeatures, ["aarch64-darwin"]);
  });

  it("only looks where it is told", () => {
    assert.deepEqual(discoverAgents({ root: root("plain"), unitDirs: ["/etc/systemd/system"] }), []);
    assert.deepEqual(discoverAgents({ root: root("nixos"), managers: ["launchd"] }), []);
  });
});

describe("launchd discovery", () => {
  const agents = discoverAgents({ root: root("darwin") });

  it("finds plists whose name mentions hercules, case-insensitively", () => {
    assert.deepEqual(
      agents.map((a) => a.definitionFile),
      [
        "/Library/LaunchDaemons/com.example.Hercules-direct.plist",
        "/Library/LaunchDaemons/hercules-binary.plist",
        "/Library/LaunchDaemons/org.nixos.hercules-ci-agent.plist",
      ],
    );
  });

  it("follows nix-darwin's sh -c wrapper into the start script, with a script variable", () => {
    const a = only(agents, "org.nixos.hercules-ci-agent");
    assert.equal(a.kind, "launchd");
    assert.equal(a.user, "_hercules-ci-agent");
    assert.equal(a.group, "_hercules-ci-agent");
    assert.equal(a.configFile, "/nix/store/ffff-hercules-ci-agent.json");
    assert.equal(a.agentExecutable, "/nix/store/gggg-hercules-ci-agent-0.10.7/bin/hercules-ci-agent");
    assert.equal(a.agentVersionHint, "0.10.7");
    assert.equal(a.workingDirectory, "/var/lib/hercules-ci-agent");
    assert.equal(
      a.environment.NIX_SSL_CERT_FILE?.value,
      "/nix/store/cccc-nss-cacert-3.101/etc/ssl/certs/ca-bundle.crt",
    );
    assert.equal(a.installMethod, "nix-darwin");
    assert.equal(agentRestartCommand(a), "launchctl kickstart -k system/org.nixos.hercules-ci-agent");
    assert.deepEqual(a.findings, []);
  });

  it("reads ProgramArguments directly, decoding XML entities", () => {
    const a = only(agents, "com.example.hercules-direct");
    assert.equal(a.configFile, "/usr/local/etc/hercules & co/agent.toml");
    assert.equal(a.user, "hci");
  });

  it("reports binary plists instead of guessing", () => {
    const a = only(agents, "hercules-binary");
    assert.equal(a.configFile, null);
    assert.deepEqual(
      a.findings.map((f) => f.id),
      ["agent-launchd-unparsable"],
    );
    assert.match(a.findings[0]!.fix!, /plutil -convert xml1/);
  });

  it("parses plist value types", () => {
    const v = parsePlist(
      "<plist><dict><key>a</key><integer>3</integer><key>b</key><false/><key>c</key><array><string>x &lt;y&gt;</string><real>1.5</real></array><key>d</key><string/></dict></plist>",
    );
    assert.deepEqual(v, { a: 3, b: false, c: ["x <y>", 1.5], d: "" });
    assert.throws(() => parsePlist("<plist><dict><string>x</string></dict></plist>"), /expected <key>/);
  });
});

describe("command lines", () => {
  it("splits systemd ExecStart with prefixes and variables", () => {
    // "$" + "{" keeps the literal systemd syntax out of template-string lint
    const c = parseExecCommand(`+-/bin/agent --config "$${"{"}DIR}/a b.json" $FLAGS`, {
      DIR: "/etc/x",
      FLAGS: "-v  -q",
    })!;
    assert.equal(c.prefixes, "+-");
    assert.deepEqual(c.argv, ["/bin/agent", "--config", "/etc/x/a b.json", "-v", "-q"]);
    assert.deepEqual(c.unresolved, []);
    const u = parseExecCommand("/bin/agent --config $MISSING");
    assert.deepEqual(u!.unresolved, ["$MISSING"]);
    // `:` disables expansion
    const x = `$${"{"}X}`;
    assert.deepEqual(parseExecCommand(`:/bin/a ${x}`, { X: "y" })!.argv, ["/bin/a", x]);
  });

  it("joins continuation lines in unit files", () => {
    const e = parseUnitText("[Service]\nExecStart=/a \\\n  --b \\\n  c\nUser=x\n", "u");
    assert.deepEqual(
      e.map((x) => [x.key, x.value, x.line]),
      [
        ["ExecStart", "/a    --b    c", 2],
        ["User", "x", 5],
      ],
    );
  });

  it("splits shell text into commands with quotes and assignments", () => {
    const cmds = splitShellCommands("A=1; exec foo --x \"$A b\" 'c d' && bar $UNSET # comment\n");
    assert.deepEqual(
      cmds.map((c) => c.map((w) => w.text)),
      [["A=1"], ["exec", "foo", "--x", "1 b", "c d"], ["bar", "$UNSET"]],
    );
    assert.equal(cmds[2]![1]!.unresolved, true);
  });
});

describe("runtime enrichment and manual agents", () => {
  it("reads the main PID's environment and start time from /proc under the root", () => {
    const a = discoverAgents({ root: root("runtime") })[0]!;
    const rt = readAgentRuntime(a, { root: root("runtime") });
    assert.equal(rt.pid, 4243, "picks the process with --config, not the worker");
    assert.equal(rt.environ?.NIX_CONFIG, "max-jobs = 0");
    assert.equal(rt.startedAt?.getTime(), (1_700_000_000 + 1500) * 1000);
    assert.equal(agentEnvironment(a, rt).NIX_CONFIG, "max-jobs = 0");
    assert.equal(agentEnvironment(a).NIX_CONFIG, undefined);
  });

  it("tolerates a service that is not running", () => {
    const a = discoverAgents({ root: root("plain") })[0]!;
    const rt = readAgentRuntime(a, { root: root("plain") });
    assert.deepEqual(rt, { pid: null, environ: null, startedAt: null, findings: [] });
    const gone = readAgentRuntime(a, { root: root("plain"), pid: 99999 });
    assert.equal(gone.environ, null);
    assert.deepEqual(
      gone.findings.map((f) => f.id),
      ["agent-runtime-environ-unreadable"],
    );
  });

  it("describes an agent named by hand", () => {
    const a = manualAgent("/srv/agent.json", { root: root("plain"), user: "hci" });
    assert.equal(a.kind, "manual");
    assert.equal(a.configFile, "/srv/agent.json");
    assert.equal(a.environment.HOME?.value, "/var/lib/hci");
    assert.equal(a.installMethod, "manual");
  });
});

describe("agent user's nix.conf", () => {
  it("defaults to <home>/.config/nix/nix.conf and honours XDG variables", () => {
    const p = agentNixConfPaths({ env: {}, passwdHome: "/var/lib/hercules-ci-agent" });
    assert.equal(p.primaryUserFile, "/var/lib/hercules-ci-agent/.config/nix/nix.conf");
    assert.equal(p.homeSource, "passwd");
    assert.equal(p.systemFile, "/etc/nix/nix.conf");
    const x = agentNixConfPaths({
      env: { XDG_CONFIG_HOME: "/cfg", XDG_CONFIG_DIRS: "/a:/b", NIX_CONF_DIR: "/opt/nix" },
      passwdHome: "/h",
    });
    assert.deepEqual(x.userFiles, ["/b/nix/nix.conf", "/a/nix/nix.conf", "/cfg/nix/nix.conf"]);
    assert.equal(x.systemFile, "/opt/nix/nix.conf");
  });

  it("falls back to the passwd home when HOME is not owned by the user", () => {
    const p = agentNixConfPaths({
      env: { HOME: "/root" },
      passwdHome: "/var/lib/hci",
      homeOwnedByUser: false,
    });
    assert.equal(p.home, "/var/lib/hci");
    assert.equal(p.primaryUserFile, "/var/lib/hci/.config/nix/nix.conf");
    assert.equal(p.notes.length, 1);
  });
});
