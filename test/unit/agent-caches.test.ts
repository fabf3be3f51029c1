/**
 * Point 1 of issue 18: binary-caches.json and Cachix change the Nix settings of every task
 * (hercules-ci/hercules-ci-agent@037a7f91 hercules-ci-agent/hercules-ci-agent/Hercules/Agent/Cache.hs:24-38
 * withCaches, applied per task at Hercules/Agent.hs:127-128; Cachix.hs:181-197; decoding in
 * Config/BinaryCaches.hs:32-64). What the nix-daemon keeps for an untrusted user is Nix's
 * setOptions rule, modelled in src/nix/trust.ts.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  agentCleanSubstituter,
  CENSORED_URI,
  parseBinaryCaches,
  type TaskNixSettingsInput,
  taskNixSettings,
} from "../../src/agent/index.js";
import { readBinaryCaches } from "../../src/app/agent-caches.js";

const FIX = join(import.meta.dirname, "..", "fixtures", "agent", "configs");
const V28 = { major: 2, minor: 8, patch: 0 };
const NIXOS_KEY = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

function fixtureCaches() {
  const r = parseBinaryCaches(
    readFileSync(join(FIX, "binary-caches.json"), "utf8"),
    "/var/lib/hci/secrets/binary-caches.json",
  );
  assert.ok(r.caches);
  return r;
}

function input(over: Partial<TaskNixSettingsInput> = {}): TaskNixSettingsInput {
  return {
    version: V28,
    nixSettings: [
      { name: "max-jobs", value: "2" },
      { name: "substituters", value: "https://mine.example.org" },
    ],
    agent: {
      substituters: ["https://cache.nixos.org/", "https://cache.nixos.org"],
      trustedPublicKeys: [NIXOS_KEY],
      netrcFile: null,
    },
    caches: fixtureCaches().caches,
    workDirectory: "/var/lib/hci/work",
    store: "untrusted",
    daemon: {
      substituters: ["https://cache.nixos.org/"],
      trustedSubstituters: [],
      trustedPublicKeys: [NIXOS_KEY],
      netrcFile: "/etc/nix/netrc",
    },
    ...over,
  };
}

describe("binary-caches.json as the agent decodes it", () => {
  it("claims entries by kind, in name order, and keeps no secret", () => {
    const r = fixtureCaches();
    assert.deepEqual(
      r.caches!.nixCaches.map((c) => [c.name, c.storeURI]),
      [["zeta", "https://cache.example.org"]],
    );
    assert.deepEqual(
      r.caches!.cachixCaches.map((c) => [c.name, c.hasAuthToken]),
      [["alpha-ci", true]],
    );
    assert.deepEqual(r.caches!.unknownKinds, [{ name: "mystery", kind: "S3Cache" }]);
    assert.deepEqual(
      r.findings.map((f) => f.id),
      ["agent-binary-caches-unknown-kind"],
    );
    assert.doesNotMatch(JSON.stringify(r), /fixture-token-not-a-secret/);
  });

  it("a decode error is fatal for the agent, and the message does not quote the file", () => {
    const text = readFileSync(join(FIX, "binary-caches-bad.json"), "utf8");
    const r = parseBinaryCaches(text, "b.json");
    assert.equal(r.caches, null);
    assert.equal(r.findings[0]!.id, "agent-binary-caches-invalid");
    assert.match(r.findings[0]!.message, /authToken must be a string/);
    assert.doesNotMatch(JSON.stringify(r), /12345/);
    const broken = parseBinaryCaches('{"x": {"kind": "NixCache", "authToken": "s3cr3t"', "c.json");
    assert.equal(
      broken.findings[0]!.message,
      "c.json: not valid JSON; the agent refuses to start when it cannot decode binary-caches.json.",
    );
  });

  it("the agent's own substituters are rendered as store URIs; anything with @ is censored (EnvironmentInfo.hs:71,83-86)", () => {
    assert.equal(agentCleanSubstituter("https://cache.nixos.org/"), "https://cache.nixos.org");
    assert.equal(agentCleanSubstituter("https://c.example.org?priority=10"), "https://c.example.org");
    assert.equal(agentCleanSubstituter("https://u:p@c.example.org"), CENSORED_URI);
  });
});

describe("taskNixSettings: what every task runs with", () => {
  it("appends netrc-file, substituters, trusted-public-keys after nixSettings, in the agent's order", () => {
    const t = taskNixSettings(input());
    assert.deepEqual(
      t.pairs.map((p) => `${p.from}:${p.name}`),
      [
        "nixSettings:max-jobs",
        "nixSettings:substituters",
        "caches:netrc-file",
        "caches:substituters",
        "caches:trusted-public-keys",
      ],
    );
    // NixCache URIs, then the agent's own (cleaned, de-duplicated), then Cachix
    assert.deepEqual(t.task.substituters, [
      "https://cache.example.org",
      "https://cache.nixos.org",
      "https://alpha-ci.cachix.org",
    ]);
    assert.deepEqual(t.task.trustedPublicKeys, [
      "cache.example.org-1:AAAAfixturekeyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
      NIXOS_KEY,
      "alpha-ci.cachix.org-1:BBBBfixturekeyBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB=",
    ]);
    assert.equal(t.task.netrcFile, "/var/lib/hci/work/secure/tmp-netrc<random>.key");
  });

  it("untrusted: the daemon keeps only substituters it lists, and its own keys and netrc-file; we warn", () => {
    const t = taskNixSettings(input());
    assert.deepEqual(t.daemon.substituters, ["https://cache.nixos.org/"]);
    assert.deepEqual(t.daemon.droppedSubstituters, [
      "https://cache.example.org",
      "https://alpha-ci.cachix.org",
    ]);
    assert.deepEqual(t.daemon.trustedPublicKeys, [NIXOS_KEY]);
    assert.equal(t.daemon.netrcFile, "/etc/nix/netrc");
    // max-jobs is a fixed field of every connection; substituters is the filtered list
    assert.deepEqual(
      t.daemon.applied.map((a) => [a.setting, a.value]),
      [["substituters", "https://cache.nixos.org/"]],
    );
    assert.deepEqual(t.daemon.ignored.map((i) => i.setting).sort(), ["netrc-file", "trusted-public-keys"]);
    const f = t.findings[0]!;
    assert.equal(f.id, "agent-caches-untrusted");
    assert.equal(f.severity, "warning");
    assert.match(f.message, /drops https:\/\/cache\.example\.org, https:\/\/alpha-ci\.cachix\.org/);
    assert.match(f.message, /auth tokens for alpha-ci\.cachix\.org never reach the daemon/);
  });

  it("untrusted, cache in trusted-substituters but its key unknown to the daemon: kept, yet unsigned", () => {
    const base = input();
    const t = taskNixSettings(
      input({ daemon: { ...base.daemon, trustedSubstituters: ["https://cache.example.org"] } }),
    );
    assert.deepEqual(t.daemon.substituters, ["https://cache.example.org", "https://cache.nixos.org/"]);
    assert.match(
      t.findings[0]!.message,
      /https:\/\/cache\.example\.org is kept, but the daemon does not trust its public key/,
    );
  });

  it("trusted: the daemon takes the task's settings as they are", () => {
    const t = taskNixSettings(input({ store: "trusted" }));
    assert.deepEqual(t.daemon.substituters, t.task.substituters);
    assert.deepEqual(
      t.daemon.applied.map((a) => a.setting),
      ["max-jobs", "substituters", "netrc-file", "trusted-public-keys"],
    );
    assert.equal(
      t.daemon.applied.find((a) => a.setting === "substituters")!.value,
      t.task.substituters.join(" "),
    );
    assert.deepEqual(t.daemon.trustedPublicKeys, t.task.trustedPublicKeys);
    assert.deepEqual(t.findings, []);
  });

  it("binary-caches.json unknown: the agent's own part only, said so", () => {
    const t = taskNixSettings(input({ caches: null }));
    assert.equal(t.cachesKnown, false);
    assert.deepEqual(t.task.substituters, ["https://cache.nixos.org"]);
    assert.equal(t.findings[0]!.severity, "info");
    assert.match(t.findings[0]!.message, /not read here/);
  });

  it("never shows a URI's user info", () => {
    const caches = parseBinaryCaches(
      JSON.stringify({
        p: {
          kind: "NixCache",
          storeURI: "https://ci:hunter2@priv.example.org",
          signingKeys: [],
          publicKeys: [],
        },
      }),
      "b.json",
    ).caches;
    const t = taskNixSettings(input({ caches }));
    const text = JSON.stringify(t);
    assert.doesNotMatch(text, /hunter2/);
    assert.match(text, /https:\/\/<redacted>@priv\.example\.org/);
  });
});

describe("readBinaryCaches reads as the agent user (real user, real setpriv)", () => {
  const isRoot = process.getuid?.() === 0;
  const name = `nbt-${Math.random().toString(36).slice(2, 8)}`;
  let dir = "";
  before(() => {
    if (!isRoot) return;
    execFileSync("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], {
      timeout: 30_000,
    });
    dir = mkdtempSync(join(tmpdir(), "nbt-caches-"));
    chmodSync(dir, 0o755);
  });
  after(() => {
    if (!isRoot) return;
    rmSync(dir, { recursive: true, force: true });
    execFileSync("userdel", [name], { timeout: 30_000 });
  });

  it("reads a file the agent user owns, and not one only root can read", async (t) => {
    if (!isRoot) return t.skip("needs root");
    const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8", timeout: 10_000 }).trim());
    const mine = join(dir, "mine.json");
    writeFileSync(mine, readFileSync(join(FIX, "binary-caches.json")));
    chownSync(mine, uid, 0);
    chmodSync(mine, 0o600);
    const ok = await readBinaryCaches(mine, name);
    assert.equal(ok.caches?.nixCaches[0]?.storeURI, "https://cache.example.org");

    const roots = join(dir, "root-only.json");
    writeFileSync(roots, readFileSync(join(FIX, "binary-caches.json")));
    chmodSync(roots, 0o600);
    const no = await readBinaryCaches(roots, name);
    assert.equal(no.caches, null);
    assert.equal(no.findings[0]!.id, "agent-binary-caches-unreadable");
    assert.match(no.findings[0]!.message, /permission denied/);

    const missing = await readBinaryCaches(join(dir, "nope.json"), name);
    assert.equal(missing.findings[0]!.id, "agent-binary-caches-missing");
    assert.equal(missing.findings[0]!.severity, "error");
  });

  it("gives up on a FIFO after its deadline instead of hanging", async (t) => {
    if (!isRoot) return t.skip("needs root");
    const fifo = join(dir, "fifo.json");
    execFileSync("mkfifo", ["-m", "0666", fifo], { timeout: 10_000 });
    const started = Date.now();
    const r = await readBinaryCaches(fifo, name, 500);
    assert.equal(r.caches, null);
    assert.match(r.findings[0]!.message, /no answer within 500 ms/);
    assert.ok(Date.now() - started < 10_000);
  });
});

describe("show --agent --json: taskNixSettings (real user, unit in a fixture root, daemon store)", () => {
  const isRoot = process.getuid?.() === 0;
  const name = `nbt-${Math.random().toString(36).slice(2, 8)}`;
  let dir = "";
  before(() => {
    if (!isRoot) return;
    execFileSync("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], {
      timeout: 30_000,
    });
    dir = mkdtempSync(join(tmpdir(), "nbt-show-"));
    chmodSync(dir, 0o755);
  });
  after(() => {
    if (!isRoot) return;
    rmSync(dir, { recursive: true, force: true });
    execFileSync("userdel", [name], { timeout: 30_000 });
  });

  it("reports what every task runs with and what the untrusted daemon keeps", async (t) => {
    if (!isRoot) return t.skip("needs root");
    const { runShow } = await import("../../src/commands/show.js");
    const { captureIo } = await import("../support/capture-io.js");
    const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8", timeout: 10_000 }).trim());
    // binary-caches.json at a real host path, owned by the agent user, read through setpriv
    const caches = join(dir, "binary-caches.json");
    writeFileSync(caches, readFileSync(join(FIX, "binary-caches.json")));
    chownSync(caches, uid, 0);
    chmodSync(caches, 0o600);
    // the service definition and agent config in a discovery root
    const root = join(dir, "root");
    mkdirSync(join(root, "etc", "systemd", "system"), { recursive: true });
    mkdirSync(join(root, "etc", "hci"), { recursive: true });
    writeFileSync(
      join(root, "etc", "systemd", "system", "hercules-ci-agent.service"),
      `[Service]\nUser=${name}\nEnvironment=NIX_REMOTE=daemon\nExecStart=/nix/store/aaaa-hercules-ci-agent-0.10.8/bin/hercules-ci-agent --config /etc/hci/agent.json\n`,
    );
    writeFileSync(
      join(root, "etc", "hci", "agent.json"),
      JSON.stringify({
        baseDirectory: "/var/lib/hci",
        binaryCachesPath: caches,
        nixSettings: { "narinfo-cache-negative-ttl": "0" },
      }),
    );
    const io = captureIo({ PATH: process.env["PATH"] });
    await runShow({ agent: true, agentRoot: root, json: true, nixVersion: "2.8" }, io);
    const out = JSON.parse(io.stdout);
    const tns = out.agent.taskNixSettings;
    assert.equal(out.storeMode, "daemon", `${out.storeMode}: ${out.trustReason}`);
    assert.equal(out.trusted, false);
    assert.equal(tns.cachesKnown, true);
    assert.deepEqual(tns.task.substituters, [
      "https://cache.example.org",
      "https://cache.nixos.org",
      "https://alpha-ci.cachix.org",
    ]);
    assert.equal(tns.task.netrcFile, "/var/lib/hci/work/secure/tmp-netrc<random>.key");
    assert.equal(tns.daemon.store, "untrusted");
    assert.deepEqual(tns.daemon.substituters, ["https://cache.nixos.org/"]);
    const found = out.agent.findings.map((f: { id: string }) => f.id);
    assert.ok(found.includes("agent-caches-untrusted"), found.join(" "));
    // 0 only in nixSettings: the agent starts, but the untrusted daemon keeps Nix's 3600
    assert.ok(found.includes("agent-narinfo-negative-ttl-daemon"), found.join(" "));
    assert.ok(!found.includes("agent-narinfo-negative-ttl"));
    assert.doesNotMatch(io.stdout, /fixture-token-not-a-secret/);
  });
});
