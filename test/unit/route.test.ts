import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  localFallbackMessage,
  noMachineMessage,
  type RouteInput,
  type RouteLocal,
  type RouteMachine,
  route,
  routeRules,
  stallMessage,
  waitingMessage,
} from "../../src/nix/route.js";

const LOCAL: RouteLocal = {
  system: "x86_64-linux",
  extraPlatforms: ["i686-linux"],
  systemFeatures: ["benchmark", "big-parallel", "kvm", "nixos-test"],
  maxJobs: 1,
  experimentalFeatures: [],
};

function m(
  storeUri: string,
  maxJobs: number,
  speedFactor: number,
  more: Partial<RouteMachine> = {},
): RouteMachine {
  return {
    storeUri,
    systemTypes: ["x86_64-linux"],
    maxJobs,
    speedFactor,
    supportedFeatures: [],
    mandatoryFeatures: [],
    ...more,
  };
}

const DRV = "/nix/store/fjym90m5r8qrc51g6cxblkdf7z4jk19s-x.drv";

function run(
  machines: RouteMachine[],
  opts: {
    load?: Record<string, number>;
    amWilling?: boolean;
    system?: string;
    features?: string[];
    preferLocalBuild?: boolean;
    version?: RouteInput["version"];
    local?: Partial<RouteLocal>;
  } = {},
) {
  return route({
    version: opts.version ?? "2.8",
    drv: {
      path: DRV,
      system: opts.system ?? "x86_64-linux",
      requiredFeatures: opts.features ?? [],
      preferLocalBuild: opts.preferLocalBuild ?? false,
    },
    machines,
    load: new Map(Object.entries(opts.load ?? {})),
    local: { ...LOCAL, ...opts.local },
    amWilling: opts.amWilling ?? true,
  });
}

describe("observed 2.8 decisions of the selection loop", () => {
  test("m1 4 1; m2 4 2; idle → accept m2 (higher speed)", () => {
    const r = run([m("m1", 4, 1), m("m2", 4, 2)]);
    assert.equal(r.hook.reply, "accept");
    assert.deepEqual(r.decision, { kind: "remote", storeUri: "m2", printedUri: "m2" });
  });
  test("m1 4 1; m2 4 3; m2 load 2 → accept m2 (2/3 = 0 with integer division)", () => {
    const r = run([m("m1", 4, 1), m("m2", 4, 3)], { load: { m2: 2 } });
    assert.equal(r.decision.storeUri, "m2");
    assert.equal(r.machines[1]!.score, 0);
  });
  test("HEAD divides floats: the same case picks m1", () => {
    const r = run([m("m1", 4, 1), m("m2", 4, 3)], { load: { m2: 2 }, version: "head" });
    assert.equal(r.decision.storeUri, "m1");
    assert.ok(Math.abs(r.machines[1]!.score! - 2 / 3) < 1e-6);
  });
  test("m1 4 1; m2 4 3; m2 load 3 → accept m1", () => {
    assert.equal(run([m("m1", 4, 1), m("m2", 4, 3)], { load: { m2: 3 } }).decision.storeUri, "m1");
  });
  test("m1 4 2; m2 4 2; m1 load 1 → accept m2", () => {
    assert.equal(run([m("m1", 4, 2), m("m2", 4, 2)], { load: { m1: 1 } }).decision.storeUri, "m2");
  });
  test("m1 4 2; m2 4 2; both load 1 → accept m1 (earlier stays)", () => {
    assert.equal(run([m("m1", 4, 2), m("m2", 4, 2)], { load: { m1: 1, m2: 1 } }).decision.storeUri, "m1");
  });
  test("m1 1 1 full, amWilling 0, local system → postpone", () => {
    const r = run([m("m1", 1, 1)], { load: { m1: 1 }, amWilling: false });
    assert.equal(r.hook.reply, "postpone");
    assert.deepEqual(r.decision, { kind: "postpone", message: waitingMessage(DRV) });
    assert.deepEqual(r.machines[0]!.reasons, ["no free slot (1/1 busy)"]);
  });
  test("m1 1 1 full, amWilling 1, local system → decline (then local build)", () => {
    const r = run([m("m1", 1, 1)], { load: { m1: 1 } });
    assert.equal(r.hook.reply, "decline");
    assert.equal(r.decision.kind, "local");
    assert.equal(r.hook.noMachineMessage?.level, "chatty");
  });
  test("m1 aarch64-linux 1 1 full, amWilling 1, drv aarch64 → postpone", () => {
    const r = run([m("m1", 1, 1, { systemTypes: ["aarch64-linux"] })], {
      load: { m1: 1 },
      system: "aarch64-linux",
    });
    assert.equal(r.hook.reply, "postpone");
    assert.equal(r.decision.kind, "postpone");
  });
  test("m1 0 1, amWilling 0 → postpone (forever)", () => {
    const r = run([m("m1", 0, 1)], { amWilling: false });
    assert.equal(r.hook.reply, "postpone");
    assert.deepEqual(r.machines[0]!.reasons, ["maxJobs is 0: never chosen"]);
    assert.equal(r.machines[0]!.rightType, true);
  });
  test("m1 0 1, amWilling 1, local → decline", () => {
    const r = run([m("m1", 0, 1)]);
    assert.equal(r.hook.reply, "decline");
    assert.equal(r.decision.kind, "local");
  });
  test("machine listing 'builtin' as a system does not match x86_64-linux → decline", () => {
    const r = run([m("m1", 1, 1, { systemTypes: ["builtin"] })]);
    assert.equal(r.hook.reply, "decline");
    assert.deepEqual(r.machines[0]!.reasons, ["system x86_64-linux not in [builtin]"]);
  });
  test("any machine takes builtin derivations → accept", () => {
    const r = run([m("m1", 1, 1, { systemTypes: ["aarch64-linux"] })], { system: "builtin" });
    assert.deepEqual(r.decision, { kind: "remote", storeUri: "m1", printedUri: "m1" });
  });
  test("mandatory {kvm}, drv {} → decline", () => {
    const r = run([m("m1", 1, 1, { mandatoryFeatures: ["kvm"] })]);
    assert.equal(r.hook.reply, "decline");
    assert.deepEqual(r.machines[0]!.reasons, ["mandatory feature kvm not required by the derivation"]);
  });
  test("mandatory {kvm}, drv {kvm} → accept", () => {
    const r = run([m("m1", 1, 1, { mandatoryFeatures: ["kvm"] })], { features: ["kvm"] });
    assert.equal(r.decision.storeUri, "m1");
  });
  test("supported {big} + mandatory {kvm}, drv {kvm, big} → accept", () => {
    const r = run([m("m1", 1, 1, { supportedFeatures: ["big"], mandatoryFeatures: ["kvm"] })], {
      features: ["kvm", "big"],
    });
    assert.equal(r.decision.storeUri, "m1");
  });
  test("supported {big}, drv {big, kvm} → decline", () => {
    const r = run([m("m1", 1, 1, { supportedFeatures: ["big"] })], { features: ["big", "kvm"] });
    assert.equal(r.hook.reply, "decline");
    assert.deepEqual(r.machines[0]!.reasons, ["feature kvm not supported"]);
  });
});

describe("tie-breaks and rows", () => {
  test("equal score: higher speed wins even with more load", () => {
    // 2.8: 1/2 = 0 and 0/1 = 0 tie; speed 2 wins.
    const r = run([m("a", 4, 1), m("b", 4, 2)], { load: { b: 1 } });
    assert.equal(r.decision.storeUri, "b");
  });
  test("equal score and speed: lower load wins", () => {
    // 2.8: 1/3 = 0 and 2/3 = 0; same speed; b has lower load.
    const r = run([m("a", 4, 3), m("b", 4, 3)], { load: { a: 2, b: 1 } });
    assert.equal(r.decision.storeUri, "b");
  });
  test("every reason is listed", () => {
    const r = run([m("a", 2, 1, { systemTypes: ["aarch64-linux"], mandatoryFeatures: ["benchmark"] })], {
      features: ["kvm"],
      load: { a: 2 },
    });
    assert.deepEqual(r.machines[0]!.reasons, [
      "system x86_64-linux not in [aarch64-linux]",
      "feature kvm not supported",
      "mandatory feature benchmark not required by the derivation",
      "no free slot (2/2 busy)",
    ]);
    assert.equal(r.machines[0]!.eligible, false);
    assert.equal(r.machines[0]!.freeSlots, 0);
  });
  test("no machines: decline-permanently, then local", () => {
    const r = run([]);
    assert.equal(r.hook.reply, "decline-permanently");
    assert.equal(r.decision.kind, "local");
  });
  test("disabled machines do not count as the right type (decline, not postpone)", () => {
    const r = route({
      version: "2.8",
      drv: { path: DRV, system: "aarch64-linux", requiredFeatures: [], preferLocalBuild: false },
      machines: [m("a", 1, 1, { systemTypes: ["aarch64-linux"] })],
      local: LOCAL,
      amWilling: false,
      disabled: new Set(["a"]),
    });
    assert.equal(r.hook.reply, "decline");
  });
  test("HEAD float scores: 1/3 vs 2/6 tie and go to speed", () => {
    const r = run([m("a", 4, 3), m("b", 8, 6)], { load: { a: 1, b: 2 }, version: "head" });
    assert.equal(r.decision.storeUri, "b");
  });
});

describe("when the hook is asked (§3.1)", () => {
  test("2.8 preferLocalBuild and buildable locally: no hook, local", () => {
    const r = run([m("a", 1, 1)], { preferLocalBuild: true });
    assert.equal(r.hook.asked, false);
    assert.equal(r.decision.kind, "local");
  });
  test("2.8 preferLocalBuild but wrong system: the hook is asked", () => {
    const r = run([m("a", 1, 1, { systemTypes: ["aarch64-linux"] })], {
      preferLocalBuild: true,
      system: "aarch64-linux",
    });
    assert.equal(r.hook.asked, true);
    assert.equal(r.decision.storeUri, "a");
  });
  test("2.8 max-jobs = 0: even preferLocalBuild goes to the hook", () => {
    const r = run([m("a", 1, 1)], { preferLocalBuild: true, local: { maxJobs: 0 }, amWilling: false });
    assert.equal(r.hook.asked, true);
    assert.equal(r.decision.storeUri, "a");
    assert.deepEqual(r.local.reasons, ["max-jobs is 0: local builds are disabled"]);
  });
  test("2.8 builtin with max-jobs = 0 goes to a remote machine", () => {
    const r = route({
      version: "2.8",
      drv: { path: DRV, system: "builtin", requiredFeatures: [], preferLocalBuild: true, isBuiltin: true },
      machines: [m("a", 1, 1, { systemTypes: ["aarch64-linux"] })],
      local: { ...LOCAL, maxJobs: 0 },
    });
    assert.equal(r.hook.asked, true);
    assert.equal(r.decision.storeUri, "a");
  });
  test("HEAD preferLocalBuild: local first", () => {
    const r = run([m("a", 1, 1)], { preferLocalBuild: true, version: "head" });
    assert.equal(r.hook.asked, false);
    assert.equal(r.decision.kind, "local");
  });
  test("HEAD max-jobs = 0 and preferLocalBuild: hook, then refused with the max-jobs reason", () => {
    const r = run([m("a", 1, 1, { mandatoryFeatures: ["x"] })], {
      preferLocalBuild: true,
      version: "head",
      local: { maxJobs: 0 },
      amWilling: false,
    });
    assert.equal(r.hook.asked, true);
    assert.equal(r.hook.reply, "decline");
    assert.equal(r.decision.kind, "none");
    assert.equal(
      r.decision.message,
      `Cannot build '${DRV}'.\nReason: local builds are disabled (max-jobs = 0)\nHint: set 'max-jobs' to a non-zero value to enable local builds, or configure remote builders via 'builders'`,
    );
  });
  test("repair mode never asks the hook", () => {
    const r = route({
      version: "2.8",
      drv: { path: DRV, system: "x86_64-linux", requiredFeatures: [], preferLocalBuild: false },
      machines: [m("a", 1, 1)],
      local: LOCAL,
      buildMode: "repair",
    });
    assert.equal(r.hook.asked, false);
    assert.equal(r.decision.kind, "local");
  });
});

describe("§3.4 the 'no machine' message", () => {
  const machines = [m("ssh://r", 1, 1, { systemTypes: ["riscv64-linux"] })];
  const drv = { path: DRV, system: "aarch64-linux", requiredFeatures: [] as string[] };
  test("2.8: plain lists", () => {
    assert.equal(
      noMachineMessage(routeRules("2.8"), drv, machines),
      [
        "Failed to find a machine for remote build!",
        "derivation: fjym90m5r8qrc51g6cxblkdf7z4jk19s-x.drv",
        "required (system, features): (aarch64-linux, )",
        "1 available machines:",
        "(systems, maxjobs, supportedFeatures, mandatoryFeatures)",
        "(riscv64-linux, 1, , )",
      ].join("\n"),
    );
  });
  test("HEAD: bracketed lists", () => {
    assert.equal(
      noMachineMessage(routeRules("head"), drv, machines),
      [
        "Failed to find a machine for remote build!",
        "derivation: fjym90m5r8qrc51g6cxblkdf7z4jk19s-x.drv",
        "required (system, features): (aarch64-linux, [])",
        "1 available machines:",
        "(systems, maxjobs, supportedFeatures, mandatoryFeatures)",
        "([riscv64-linux], 1, [], [])",
      ].join("\n"),
    );
  });
  const multi = [
    m("a", 2, 1, {
      systemTypes: ["x86_64-linux", "aarch64-linux"],
      supportedFeatures: ["kvm", "big"],
      mandatoryFeatures: ["z", "b"],
    }),
  ];
  const drv2 = { path: DRV, system: "riscv64-linux", requiredFeatures: ["kvm", "big"] };
  test("2.8: systems in file order, features sorted", () => {
    const t = noMachineMessage(routeRules("2.8"), drv2, multi);
    assert.match(t, /\nrequired \(system, features\): \(riscv64-linux, big, kvm\)\n/);
    assert.match(t, /\n\(x86_64-linux, aarch64-linux, 2, big, kvm, b, z\)$/);
  });
  test("HEAD: systems sorted, everything bracketed", () => {
    const t = noMachineMessage(routeRules("head"), drv2, multi);
    assert.match(t, /\nrequired \(system, features\): \(riscv64-linux, \[big, kvm\]\)\n/);
    assert.match(t, /\n\(\[aarch64-linux, x86_64-linux\], 2, \[big, kvm\], \[b, z\]\)$/);
  });
  test("warn level when the derivation cannot be built locally, chatty when it can", () => {
    const r = run(machines, { system: "aarch64-linux" });
    assert.equal(r.hook.noMachineMessage?.level, "warn");
    const r2 = run(machines);
    assert.equal(r2.hook.noMachineMessage?.level, "chatty");
  });
  test("2.8 level follows amWilling, HEAD follows max-jobs", () => {
    // amWilling 0 (local slots full), right system, no right-type machine: decline.
    const r = run(machines, { amWilling: false });
    assert.equal(r.hook.reply, "decline");
    assert.equal(r.hook.noMachineMessage?.level, "warn");
    const h = run(machines, { amWilling: false, version: "head" });
    assert.equal(h.hook.noMachineMessage?.level, "chatty");
  });
});

describe("§3.7 local fallback and stall texts", () => {
  test("2.8: 'a X with features {} is required …'", () => {
    const r = run([m("a", 1, 1)], { system: "aarch64-linux" });
    assert.equal(r.hook.reply, "decline");
    assert.equal(r.decision.kind, "none");
    assert.equal(
      r.decision.message,
      `a 'aarch64-linux' with features {} is required to build '${DRV}', but I am a 'x86_64-linux' with features {benchmark, big-parallel, kvm, nixos-test}`,
    );
  });
  test("2.8: features joined sorted", () => {
    const t = localFallbackMessage(
      routeRules("2.8"),
      { path: DRV, system: "x86_64-linux", requiredFeatures: ["zzz", "kvm"], preferLocalBuild: false },
      LOCAL,
    );
    assert.equal(
      t,
      `a 'x86_64-linux' with features {kvm, zzz} is required to build '${DRV}', but I am a 'x86_64-linux' with features {benchmark, big-parallel, kvm, nixos-test}`,
    );
  });
  test("2.30 – 2.33: four lines", () => {
    const t = localFallbackMessage(
      routeRules({ major: 2, minor: 31, patch: 0 }),
      { path: DRV, system: "aarch64-linux", requiredFeatures: [], preferLocalBuild: false },
      LOCAL,
    );
    assert.equal(
      t,
      [
        `Cannot build '${DRV}'.`,
        "Reason: required system or feature not available",
        "Required system: 'aarch64-linux' with features {}",
        "Current system: 'x86_64-linux' with features {benchmark, big-parallel, kvm, nixos-test}",
      ].join("\n"),
    );
  });
  test("HEAD: platform mismatch", () => {
    const r = run([], { system: "aarch64-linux", version: "head" });
    assert.equal(r.hook.reply, "decline-permanently");
    assert.equal(
      r.decision.message,
      `Cannot build '${DRV}'.\nReason: platform mismatch\nRequired system: 'aarch64-linux'\nCurrent system: 'x86_64-linux'`,
    );
  });
  test("HEAD: missing system features", () => {
    const r = run([], { features: ["cuda"], version: "head" });
    assert.equal(
      r.decision.message,
      `Cannot build '${DRV}'.\nReason: missing system features\nRequired features: {cuda}\nAvailable features: {benchmark, big-parallel, kvm, nixos-test}`,
    );
  });
  test("HEAD: Rosetta note", () => {
    const t = localFallbackMessage(
      routeRules("head"),
      { path: DRV, system: "x86_64-darwin", requiredFeatures: [], preferLocalBuild: false },
      { ...LOCAL, system: "aarch64-darwin", extraPlatforms: [] },
    );
    assert.match(
      t,
      /\nNote: run `\/usr\/sbin\/softwareupdate --install-rosetta && launchctl stop org\.nixos\.nix-daemon` to run programs for x86_64-darwin$/,
    );
  });
  test("2.8 max-jobs = 0, no builders: stall text", () => {
    const r = run([], { local: { maxJobs: 0 }, amWilling: false });
    assert.equal(r.decision.kind, "none");
    assert.equal(
      r.decision.message,
      "unable to start any build; either increase '--max-jobs' or enable remote builds.\nhttps://nixos.org/manual/nix/stable/advanced-topics/distributed-builds.html",
    );
  });
  test("2.8 max-jobs = 0, builders that cannot take it: stall text", () => {
    const r = run([m("a", 1, 1, { systemTypes: ["aarch64-linux"] })], {
      local: { maxJobs: 0 },
      amWilling: false,
    });
    assert.equal(r.hook.reply, "decline");
    assert.equal(
      r.decision.message,
      "unable to start any build; remote machines may not have all required system features.\nhttps://nixos.org/manual/nix/stable/advanced-topics/distributed-builds.html",
    );
  });
  test("HEAD stall texts", () => {
    assert.equal(
      stallMessage(routeRules("head"), false),
      "Unable to start any build; either increase '--max-jobs' or enable remote builds.\n\nFor more information run 'man nix.conf' and search for '/machines'.",
    );
    assert.equal(
      stallMessage(routeRules("head"), true),
      "Unable to start any build; remote machines may not have all required system features.\n\nFor more information run 'man nix.conf' and search for '/machines'.",
    );
  });
  test("experimental features extend the store's features", () => {
    const r = run([], {
      features: ["ca-derivations"],
      local: { experimentalFeatures: ["ca-derivations"] },
    });
    assert.equal(r.local.capable, true);
    assert.equal(r.decision.kind, "local");
  });
});

describe("version rules", () => {
  test("thresholds", () => {
    const r = (minor: number) => routeRules({ major: 2, minor, patch: 0 });
    assert.equal(r(11).bracketedMessage, false);
    assert.equal(r(12).bracketedMessage, true);
    assert.equal(r(19).floatSpeed, false);
    assert.equal(r(20).floatSpeed, true);
    assert.equal(r(20).sortedSystems, true);
    assert.equal(r(13).messageLevelFromMaxJobs, false);
    assert.equal(r(14).messageLevelFromMaxJobs, true);
    assert.equal(r(33).localFirstFlow, false);
    assert.equal(r(34).localFirstFlow, true);
    assert.equal(r(29).fallbackText, "2.8");
    assert.equal(r(30).fallbackText, "2.30");
    assert.equal(r(34).fallbackText, "2.34");
  });
});
