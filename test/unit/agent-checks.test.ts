import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type AgentFinding,
  agentAdvertisement,
  type BuilderMachine,
  checkAgentTrust,
  checkAgentUser,
  checkAgentUserBuilders,
  checkKvm,
  checkMaxJobsZero,
  checkNarinfoNegativeTtl,
  checkRemotePlatforms,
  checkRestartNeeded,
  checkUnadvertisedBuilders,
  compareAgentVersions,
  parseAgentVersion,
} from "../../src/agent/index.js";

const ids = (fs: readonly AgentFinding[]): string[] => fs.map((f) => f.id);
const machine = (
  storeUri: string,
  systemTypes: string[],
  supportedFeatures: string[] = [],
  mandatoryFeatures: string[] = [],
): BuilderMachine => ({ storeUri, systemTypes, supportedFeatures, mandatoryFeatures });

const linuxView = {
  system: "x86_64-linux",
  extraPlatforms: ["i686-linux"],
  systemFeatures: ["nixos-test", "benchmark", "big-parallel", "kvm"],
};

describe("advertisement", () => {
  it("is the sorted set {system} ∪ extra-platforms, then remote platforms as written", () => {
    const a = agentAdvertisement(
      {
        system: "x86_64-linux",
        extraPlatforms: ["x86_64-v3-linux", "i686-linux", "x86_64-linux"],
        systemFeatures: ["kvm", "benchmark", "kvm"],
      },
      ["aarch64-darwin", "i686-linux", "aarch64-darwin"],
    );
    assert.deepEqual(a.platforms, [
      "i686-linux",
      "x86_64-linux",
      "x86_64-v3-linux",
      "aarch64-darwin",
      "i686-linux",
      "aarch64-darwin",
    ]);
    assert.deepEqual(a.systemFeatures, ["benchmark", "kvm"]);
    assert.deepEqual(a.localPlatforms, ["i686-linux", "x86_64-linux", "x86_64-v3-linux"]);
    assert.deepEqual(agentAdvertisement(linuxView, null).remotePlatforms, []);
  });
});

describe("trust", () => {
  it("is an error when the config claims trust the daemon does not grant", () => {
    const f = checkAgentTrust({
      trust: { trusted: false, reason: "not in trusted-users = root" },
      nixUserIsTrusted: true,
      user: "hercules-ci-agent",
    });
    assert.deepEqual(ids(f), ["agent-trust-claim-false"]);
    assert.equal(f[0]!.severity, "error");
    assert.match(f[0]!.message, /not privileged/);
    assert.match(f[0]!.message, /not in trusted-users = root/);
    assert.match(f[0]!.fix!, /trusted-users/);
  });

  it("is info when trusted but not claimed", () => {
    const f = checkAgentTrust({ trust: { trusted: true, reason: "listed" }, nixUserIsTrusted: false });
    assert.deepEqual(ids(f), ["agent-trust-unclaimed"]);
    assert.equal(f[0]!.severity, "info");
    assert.match(f[0]!.fix!, /nixUserIsTrusted = true/);
  });

  it("is silent when claim and reality agree on trust, and ignores trust for a local store", () => {
    assert.deepEqual(checkAgentTrust({ trust: { trusted: true, reason: "x" }, nixUserIsTrusted: true }), []);
    const local = checkAgentTrust({
      trust: { trusted: false, reason: "x" },
      nixUserIsTrusted: true,
      localStore: true,
    });
    assert.deepEqual(ids(local), ["agent-trust-local-store"]);
  });
});

describe("per-user builders", () => {
  const userFile = {
    kind: "file" as const,
    file: "/var/lib/hercules-ci-agent/.config/nix/nix.conf",
    line: 3,
  };
  it("warns that user and nixSettings builders are ignored for an untrusted user", () => {
    const f = checkAgentUserBuilders({
      trusted: false,
      user: "hci",
      settings: [
        {
          name: "builders",
          value: "@/etc/nix/machines",
          origin: { kind: "file", file: "/etc/nix/nix.conf", line: 1 },
          scope: "system",
        },
        { name: "builders", value: "@/var/lib/hci/machines", origin: userFile, scope: "user" },
        {
          name: "extra-builders",
          value: "ssh://mac aarch64-darwin",
          origin: { kind: "agent", file: "/etc/agent.json", key: "nixSettings.extra-builders" },
          scope: "agent",
        },
      ],
    });
    // extra-builders is not a trust matter (issue 16 item 7): an unknown setting in every Nix
    assert.deepEqual(ids(f), ["agent-builders-ignored-untrusted", "agent-extra-builders-unknown"]);
    assert.match(f[0]!.message, /nix\.conf:3/);
    assert.match(f[1]!.message, /\/etc\/agent\.json \(nixSettings\.extra-builders\)/);
    assert.match(f[1]!.message, /unknown setting 'extra-builders'/);
    assert.doesNotMatch(f[1]!.message, /is not a trusted user/);
  });

  it("extra-builders for a trusted user too: still unknown, never 'ignored because untrusted'", () => {
    const f = checkAgentUserBuilders({
      trusted: true,
      user: "hci",
      settings: [
        { name: "extra-builders", value: "ssh://mac aarch64-darwin", origin: userFile, scope: "user" },
      ],
    });
    assert.deepEqual(ids(f), ["agent-extra-builders-unknown"]);
  });

  it("accepts them for a trusted user, and notes an empty builders reset either way", () => {
    const s = [
      { name: "builders", value: "@/m", origin: userFile, scope: "user" as const },
      { name: "builders", value: "", origin: userFile, scope: "user" as const },
    ];
    assert.deepEqual(ids(checkAgentUserBuilders({ trusted: true, settings: s })), ["agent-builders-reset"]);
    assert.deepEqual(ids(checkAgentUserBuilders({ trusted: false, settings: s })), [
      "agent-builders-ignored-untrusted",
      "agent-builders-reset",
    ]);
  });
});

describe("remotePlatformsWithSameFeatures coverage", () => {
  it("is an error when no builder supports an advertised remote platform", () => {
    const f = checkRemotePlatforms({
      view: linuxView,
      remotePlatforms: ["aarch64-darwin"],
      machines: [machine("ssh://arm", ["aarch64-linux"], ["kvm"])],
    });
    assert.deepEqual(ids(f), ["agent-remote-platform-no-builder"]);
    assert.equal(f[0]!.severity, "error");
  });

  it("names the local features that no builder for the platform supports", () => {
    const f = checkRemotePlatforms({
      view: linuxView,
      remotePlatforms: ["aarch64-darwin"],
      machines: [machine("ssh://mac", ["aarch64-darwin", "x86_64-darwin"], ["big-parallel"], ["benchmark"])],
    });
    // the only builder has a mandatory feature: plain derivations cannot go there, and neither can
    // jobs that require big-parallel without benchmark
    assert.deepEqual(ids(f), ["agent-remote-platform-mandatory", "agent-remote-platform-features"]);
    assert.match(f[1]!.message, /supports big-parallel, kvm, nixos-test:/);
  });

  it("is satisfied by one builder covering all local features", () => {
    const f = checkRemotePlatforms({
      view: linuxView,
      remotePlatforms: ["aarch64-darwin"],
      machines: [
        machine("ssh://partial", ["aarch64-darwin"], ["benchmark"]),
        machine("ssh://mac", ["aarch64-darwin"], ["nixos-test", "benchmark", "big-parallel", "kvm"]),
      ],
    });
    assert.deepEqual(f, []);
  });

  it("notes features spread over builders, duplicates, and Linux entries", () => {
    const f = checkRemotePlatforms({
      view: { system: "x86_64-linux", extraPlatforms: [], systemFeatures: ["kvm", "big-parallel"] },
      remotePlatforms: ["aarch64-linux", "x86_64-linux", "aarch64-linux"],
      machines: [
        machine("ssh://a", ["aarch64-linux", "x86_64-linux"], ["kvm"]),
        machine("ssh://b", ["aarch64-linux", "x86_64-linux"], ["big-parallel"]),
      ],
    });
    assert.deepEqual(ids(f), [
      "agent-remote-platform-linux",
      "agent-remote-platform-features-split",
      "agent-remote-platform-duplicate",
      "agent-remote-platform-linux",
      "agent-remote-platform-features-split",
      "agent-remote-platform-duplicate",
    ]);
  });
});

describe("builders for platforms the agent does not advertise", () => {
  it("explains that only effects use them on a Linux agent", () => {
    const adv = agentAdvertisement(linuxView, ["aarch64-darwin"]);
    const f = checkUnadvertisedBuilders({
      advertisement: adv,
      system: linuxView.system,
      machines: [
        machine("ssh://mac", ["aarch64-darwin", "x86_64-darwin"]),
        machine("ssh://arm", ["aarch64-linux"]),
      ],
    });
    assert.deepEqual(ids(f), ["agent-builder-unadvertised", "agent-builder-unadvertised"]);
    assert.ok(f.every((x) => x.severity === "info"));
    assert.match(f[0]!.message, /x86_64-darwin \(ssh:\/\/mac\)/);
    assert.match(f[0]!.message, /effects/);
  });

  it("says effects do not run on a darwin agent", () => {
    const f = checkUnadvertisedBuilders({
      advertisement: agentAdvertisement(
        { system: "aarch64-darwin", extraPlatforms: [], systemFeatures: [] },
        null,
      ),
      system: "aarch64-darwin",
      machines: [machine("ssh://linux", ["x86_64-linux"])],
    });
    assert.match(f[0]!.message, /only on Linux/);
  });
});

describe("narinfo-cache-negative-ttl", () => {
  it("must be 0; the default 3600 fails", () => {
    assert.deepEqual(checkNarinfoNegativeTtl({ value: "0" }), []);
    assert.deepEqual(checkNarinfoNegativeTtl({ value: 0 }), []);
    const d = checkNarinfoNegativeTtl({ value: null });
    assert.deepEqual(ids(d), ["agent-narinfo-negative-ttl"]);
    assert.equal(d[0]!.severity, "error");
    assert.match(d[0]!.message, /3600/);
    assert.match(d[0]!.message, /refuses to start/);
    const s = checkNarinfoNegativeTtl({
      value: "60",
      origin: { kind: "file", file: "/etc/nix/nix.conf", line: 9 },
    });
    assert.match(s[0]!.message, /\/etc\/nix\/nix\.conf:9/);
  });
});

describe("max-jobs = 0", () => {
  it("needs builders for the native system and a recent agent", () => {
    const f = checkMaxJobsZero({
      maxJobs: 0,
      view: linuxView,
      machines: [machine("ssh://arm", ["aarch64-linux"])],
      agentVersion: "0.10.5",
    });
    assert.deepEqual(ids(f), [
      "agent-max-jobs-zero-no-builder",
      "agent-max-jobs-zero-no-builder",
      "agent-max-jobs-zero-version",
    ]);
    assert.equal(f[0]!.severity, "error");
    assert.match(f[0]!.message, /x86_64-linux, the native system/);
    assert.equal(f[1]!.severity, "warning");
    assert.match(f[2]!.message, /0\.10\.6/);
  });

  it("is quiet with native builders and agent 0.10.6+, and ignores other max-jobs values", () => {
    const machines = [machine("ssh://x", ["x86_64-linux", "i686-linux"])];
    assert.deepEqual(
      checkMaxJobsZero({ maxJobs: "0", view: linuxView, machines, agentVersion: "0.10.6" }),
      [],
    );
    assert.deepEqual(checkMaxJobsZero({ maxJobs: "auto", view: linuxView, machines: [] }), []);
    assert.deepEqual(checkMaxJobsZero({ maxJobs: 4, view: linuxView, machines: [] }), []);
    assert.deepEqual(ids(checkMaxJobsZero({ maxJobs: 0, view: linuxView, machines })), [
      "agent-max-jobs-zero-version-unknown",
    ]);
    const old = checkMaxJobsZero({ maxJobs: 0, view: linuxView, machines, agentVersion: "0.9.12" });
    assert.match(old[0]!.message, /older than 0\.10\.1/);
  });

  it("does not count builders with mandatory features for plain builds", () => {
    const f = checkMaxJobsZero({
      maxJobs: 0,
      view: { system: "x86_64-linux", extraPlatforms: [], systemFeatures: [] },
      machines: [machine("ssh://bench", ["x86_64-linux"], [], ["benchmark"])],
      agentVersion: "0.10.8",
    });
    assert.deepEqual(ids(f), ["agent-max-jobs-zero-no-builder"]);
  });

  it("compares agent versions numerically", () => {
    assert.deepEqual(parseAgentVersion("/nix/store/x-hercules-ci-agent-0.10.8/bin"), [0, 10, 8]);
    assert.ok(compareAgentVersions(parseAgentVersion("0.10.10")!, parseAgentVersion("0.10.6")!) > 0);
    assert.ok(compareAgentVersions(parseAgentVersion("0.9.12.1")!, parseAgentVersion("0.10")!) < 0);
  });
});

describe("kvm", () => {
  it("warns when auto-detection runs under PrivateDevices=true", () => {
    const f = checkKvm({
      systemFeaturesExplicit: false,
      privateDevices: true,
      systemFeatures: ["benchmark"],
    });
    assert.deepEqual(ids(f), ["agent-kvm-private-devices"]);
    assert.match(f[0]!.message, /PrivateDevices=true/);
  });

  it("is quiet when system-features is explicit, or the host has no kvm", () => {
    assert.deepEqual(
      checkKvm({ systemFeaturesExplicit: true, privateDevices: true, systemFeatures: [] }),
      [],
    );
    assert.deepEqual(
      checkKvm({
        systemFeaturesExplicit: false,
        privateDevices: true,
        systemFeatures: [],
        hostHasKvm: false,
      }),
      [],
    );
    assert.deepEqual(
      checkKvm({ systemFeaturesExplicit: false, privateDevices: false, systemFeatures: [] }),
      [],
    );
  });

  it("warns when the agent user cannot open /dev/kvm", () => {
    const f = checkKvm({
      systemFeaturesExplicit: false,
      privateDevices: null,
      systemFeatures: [],
      hostHasKvm: true,
      agentUserCanUseKvm: false,
    });
    assert.deepEqual(ids(f), ["agent-kvm-no-access"]);
  });
});

describe("restart needed", () => {
  const started = new Date("2026-01-01T00:00:00Z");
  it("lists files changed after the service started", () => {
    const f = checkRestartNeeded({
      serviceStartedAt: started,
      files: [
        { path: "/etc/nix/nix.conf", mtime: new Date("2026-01-02T00:00:00Z") },
        { path: "/etc/agent.json", mtime: new Date("2025-12-31T00:00:00Z") },
        { path: "/var/lib/hci/.config/nix/nix.conf", mtime: null },
      ],
      restartCommand: "systemctl restart hercules-ci-agent.service",
    });
    assert.deepEqual(ids(f), ["agent-restart-needed"]);
    assert.match(f[0]!.message, /\/etc\/nix\/nix\.conf\. /);
    assert.doesNotMatch(f[0]!.message, /agent\.json/);
    assert.match(f[0]!.fix!, /systemctl restart hercules-ci-agent\.service/);
  });

  it("says nothing when the start time is unknown or nothing changed", () => {
    assert.deepEqual(
      checkRestartNeeded({ serviceStartedAt: null, files: [{ path: "/x", mtime: Date.now() }] }),
      [],
    );
    assert.deepEqual(
      checkRestartNeeded({ serviceStartedAt: started.getTime(), files: [{ path: "/x", mtime: started }] }),
      [],
    );
  });
});

describe("agent user", () => {
  it("refuses root and notes a missing user", () => {
    assert.deepEqual(ids(checkAgentUser({ user: "root" })), ["agent-user-root"]);
    assert.deepEqual(ids(checkAgentUser({ user: "ci", uid: 0 })), ["agent-user-root"]);
    assert.deepEqual(ids(checkAgentUser({ user: null })), ["agent-user-unknown"]);
    assert.deepEqual(checkAgentUser({ user: "hercules-ci-agent", uid: 997 }), []);
  });
});
