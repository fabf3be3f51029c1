/**
 * The doctor's verdicts (src/app/doctor/builder-verdicts.ts, local.ts) on fixture facts: no ssh, no
 * network, no files. Each row is a fact as a stage would return it and the status, cause and message
 * the check must give.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type {
  BuilderScope,
  DnsFact,
  KeyFact,
  ProbeFact,
  Reach,
  RemoteConfigFact,
  RemoteRun,
  TcpFact,
} from "../../src/app/doctor/builder-facts.js";
import * as V from "../../src/app/doctor/builder-verdicts.js";
import type { ProbeStage } from "../../src/app/doctor/classify.js";
import { type DaemonFact, daemonVerdict, lintVerdict } from "../../src/app/doctor/local.js";
import type { CheckOutcome } from "../../src/app/doctor/types.js";
import type { Finding } from "../../src/nix/lint.js";
import type { Machine } from "../../src/nix/machines.js";
import { NIX_2_8 } from "../../src/nix/version.js";
import type { ProbeResult } from "../../src/remote/probe.js";
import { probeSshArgv } from "../../src/remote/ssh-argv.js";

const machine = (over: Partial<Machine> = {}): Machine =>
  ({
    storeUri: "ssh://nix@b1",
    systemTypes: ["x86_64-linux"],
    sshKey: null,
    maxJobs: 1,
    speedFactor: 1,
    supportedFeatures: ["kvm"],
    mandatoryFeatures: [],
    sshPublicHostKey: null,
    row: "ssh://nix@b1 x86_64-linux",
    ...over,
  }) as Machine;

const scope = (m: Machine = machine()): BuilderScope => ({
  machine: m,
  env: {
    version: NIX_2_8,
    identity: { name: "root", uid: 0, gid: 0, home: "/root", shell: "/bin/sh" },
    env: {},
    sshPath: "/usr/bin/ssh",
    timeoutMs: 5000,
    slowMs: 1000,
  },
});

function reach(storeUri = "ssh://nix@b1", proxy: string | null = null): Reach {
  const input = { version: NIX_2_8, storeUri, sshKey: null, base64PublicHostKey: null };
  const argv = probeSshArgv({ ...input, hostKeyFile: "<tmp>/host-key" });
  return {
    plan: { input, argv },
    g: argv.fakeSsh
      ? null
      : {
          hostname: "b1",
          port: 22,
          user: "nix",
          identityFiles: ["/root/.ssh/id_ed25519"],
          hostKeyAlias: null,
          proxy,
          strictHostKeyChecking: "true",
          userKnownHostsFiles: ["/root/.ssh/known_hosts"],
        },
  };
}

function probe(stage: ProbeStage, over: Partial<ProbeResult> = {}, r: Reach = reach()): ProbeFact {
  return {
    reach: r,
    argv: ["ssh", "nix@b1"],
    remoteRun: null,
    cls: {
      stage,
      cause: stage === "ok" ? null : "auth",
      summary: `stopped at ${stage}`,
      fix: stage === "ok" ? null : "fix it",
    },
    result: {
      ok: stage === "ok",
      protocol: "serve",
      argv: ["ssh"],
      stderr: "",
      stderrTruncated: false,
      exitCode: 0,
      signal: null,
      killed: false,
      timings: { firstByteMs: 10, handshakeMs: 20, queryMs: 30, totalMs: 40 },
      ...(stage === "ok" || stage === "store"
        ? { serve: { ok: true, serverVersion: "2.5" } as ProbeResult["serve"] }
        : {}),
      ...over,
    },
  };
}

function remote(stdout: string, worker?: ProbeResult["worker"]): RemoteConfigFact {
  const run: RemoteRun = {
    argv: ["ssh", "nix@b1", "cmd"],
    via: "mux",
    code: 0,
    signal: null,
    stdout,
    stderr: "",
    timedOut: false,
    expectStartedLine: false,
  };
  return {
    probe: probe("ok", worker ? { worker, protocol: "worker" } : {}),
    run,
    rc: V.parseRemoteConfig(run),
  };
}

const config = (settings: Record<string, unknown>, user = "nix", groups = "nix") =>
  `nix-store (Nix) 2.8.1\n${user}\n${groups}\n${JSON.stringify(
    Object.fromEntries(Object.entries(settings).map(([k, v]) => [k, { value: v }])),
  )}`;

type Row = [
  name: string,
  got: () => CheckOutcome,
  want: { status: string; cause?: string | null; text: RegExp },
];

const rows: Row[] = [
  [
    "dns: resolved",
    () =>
      V.dnsVerdict(
        {
          reach: reach(),
          target: { host: "b1", port: 22, via: "" },
          resolved: { ok: true, addresses: ["10.0.0.1"], ms: 3 },
        },
        scope(),
      ),
    { status: "pass", text: /^b1 → 10\.0\.0\.1 \(3 ms\)$/ },
  ],
  [
    "dns: no answer is a timeout",
    () =>
      V.dnsVerdict(
        {
          reach: reach(),
          target: { host: "b1", port: 22, via: "" },
          resolved: { ok: false, addresses: [], error: "no answer within 5000 ms", ms: 5000 },
        } satisfies DnsFact,
        scope(),
      ),
    { status: "fail", cause: "timeout", text: /^cannot resolve b1: no answer/ },
  ],
  [
    "dns: a ProxyCommand is not tested",
    () =>
      V.dnsVerdict(
        { reach: reach("ssh://nix@b1", "proxycommand nc %h %p"), target: null, resolved: null },
        scope(),
      ),
    { status: "pass", text: /^not tested: ssh connects through proxycommand nc %h %p$/ },
  ],
  [
    "dns: localhost on 2.8 runs no ssh",
    () => V.dnsVerdict({ reach: reach("ssh://localhost"), target: null, resolved: null }, scope()),
    { status: "pass", text: /^not applicable: for 'localhost' Nix runs `bash -c` locally, without ssh$/ },
  ],
  [
    "tcp: the second address accepts",
    () =>
      V.tcpVerdict(
        {
          reach: reach(),
          target: { host: "b1", port: 22, via: "" },
          attempts: [
            {
              address: "::1",
              result: {
                ok: false,
                address: "::1",
                port: 22,
                error: "refused",
                message: "ECONNREFUSED",
                ms: 1,
              },
            },
            { address: "10.0.0.1", result: { ok: true, address: "10.0.0.1", port: 22, ms: 2 } },
          ],
        } satisfies TcpFact,
        scope(),
      ),
    { status: "pass", text: /^10\.0\.0\.1 port 22 accepts connections \(2 ms\)$/ },
  ],
  [
    "tcp: dropped packets",
    () =>
      V.tcpVerdict(
        {
          reach: reach(),
          target: { host: "b1", port: 22, via: "" },
          attempts: [
            {
              address: "10.0.0.1",
              result: { ok: false, address: "10.0.0.1", port: 22, error: "timeout", ms: 5000 },
            },
          ],
        },
        scope(),
      ),
    { status: "fail", cause: "timeout", text: /^no answer from b1 port 22 within 5000 ms/ },
  ],
  [
    "key: the machines line's key has a passphrase",
    () =>
      V.keyVerdict(
        {
          reach: reach(),
          explicit: "/k",
          candidates: ["/k"],
          runs: [
            {
              file: "/k",
              argv: ["ssh-keygen", "-y", "-f", "/k"],
              code: 1,
              stderr: "Load key: incorrect passphrase supplied",
            },
          ],
        } satisfies KeyFact,
        scope(),
      ),
    { status: "fail", cause: "auth", text: /^the key \/k has a passphrase/ },
  ],
  [
    "key: no default key exists",
    () =>
      V.keyVerdict(
        {
          reach: reach(),
          explicit: null,
          candidates: ["/root/.ssh/id_rsa"],
          runs: [
            { file: "/root/.ssh/id_rsa", argv: ["ssh-keygen"], code: 1, stderr: "No such file or directory" },
          ],
        },
        scope(),
      ),
    { status: "warn", cause: "auth", text: /^no usable key file for root/ },
  ],
  [
    "host-key: refused",
    () => V.hostKeyVerdict(probe("host-key"), scope()),
    { status: "fail", cause: "auth", text: /^with the known_hosts of the identity: stopped at host-key$/ },
  ],
  [
    "host-key: passed",
    () => V.hostKeyVerdict(probe("auth"), scope()),
    { status: "pass", text: /^the host key is in the known_hosts of root$/ },
  ],
  [
    "auth: refused",
    () => V.authVerdict(probe("auth"), scope()),
    { status: "fail", text: /^stopped at auth$/ },
  ],
  [
    "auth: passed",
    () => V.authVerdict(probe("exec"), scope()),
    { status: "pass", text: /^authenticated as nix$/ },
  ],
  [
    "remote-command: failed",
    () => V.remoteCommandVerdict(probe("exec")),
    { status: "fail", text: /^'nix-store --serve --write': stopped at exec$/ },
  ],
  [
    "handshake: store stage without a handshake is skipped",
    () => V.handshakeVerdict(probe("store", { serve: undefined })),
    { status: "skip", text: /^not reached/ },
  ],
  [
    "handshake: serve protocol",
    () => V.handshakeVerdict(probe("ok")),
    { status: "pass", text: /^nix-store --serve protocol 2\.5 \(handshake after 20 ms\)$/ },
  ],
  [
    "remote-daemon: failed handshake is skipped",
    () => V.remoteDaemonVerdict(probe("handshake")),
    { status: "skip", text: /see builder\.handshake/ },
  ],
  [
    "latency: slow",
    () =>
      V.latencyVerdict(
        probe("ok", { timings: { firstByteMs: 1, handshakeMs: 1500, queryMs: 1600, totalMs: 1700 } }),
        scope(),
      ),
    { status: "warn", cause: "slow", text: /^ssh \+ handshake took 1500 ms \(more than 1000 ms\)$/ },
  ],
  [
    "remote-config: no JSON",
    () => V.remoteConfigVerdict(remote("nix-store (Nix) 2.3\nnix\nnix\n")),
    { status: "warn", cause: null, text: /^could not read the builder's configuration/ },
  ],
  [
    "remote-config: read",
    () => V.remoteConfigVerdict(remote(config({ system: "x86_64-linux", "system-features": ["kvm"] }))),
    {
      status: "pass",
      text: /^builder runs Nix 2\.8\.1 as nix; system x86_64-linux, extra-platforms \(none\); system-features kvm$/,
    },
  ],
  [
    "trust: the protocol says trusted",
    () => V.trustVerdict(remote(config({}), { ok: true, trusted: "trusted" } as ProbeResult["worker"])),
    { status: "pass", text: /protocol trust flag/ },
  ],
  [
    "trust: the protocol says not trusted",
    () => V.trustVerdict(remote(config({}), { ok: true, trusted: "not-trusted" } as ProbeResult["worker"])),
    { status: "fail", cause: "remote-untrusted", text: /does not trust nix \(protocol trust flag\)/ },
  ],
  [
    "trust: by group",
    () => V.trustVerdict(remote(config({ "trusted-users": ["root", "@wheel"] }, "nix", "nix wheel"))),
    { status: "pass", text: /^nix is trusted on the builder/ },
  ],
  [
    "trust: not listed",
    () => V.trustVerdict(remote(config({ "trusted-users": ["root"] }))),
    {
      status: "fail",
      cause: "remote-untrusted",
      text: /^the builder does not trust nix: trusted-users = root;/,
    },
  ],
  [
    "systems: missing",
    () => V.systemsVerdict(remote(config({ system: "aarch64-linux" })), scope()),
    {
      status: "fail",
      cause: "system-mismatch",
      text: /^declared x86_64-linux, but the builder only has aarch64-linux/,
    },
  ],
  [
    "systems: by extra-platforms",
    () =>
      V.systemsVerdict(
        remote(config({ system: "aarch64-linux", "extra-platforms": "x86_64-linux" })),
        scope(),
      ),
    { status: "pass", text: /⊆ builder's aarch64-linux x86_64-linux$/ },
  ],
  [
    "features: missing kvm",
    () => V.featuresVerdict(remote(config({ "system-features": ["big-parallel"] })), scope()),
    {
      status: "fail",
      cause: "feature-mismatch",
      text: /^declared feature kvm, but the builder's system-features are big-parallel$/,
    },
  ],
  [
    "features: unknown configuration",
    () => V.featuresVerdict(remote("x"), scope()),
    { status: "skip", text: /unknown/ },
  ],
];

describe("builder verdicts on fixture facts", () => {
  for (const [name, got, want] of rows)
    it(name, () => {
      const o = got();
      assert.equal(o.status, want.status, o.message);
      if (want.cause !== undefined) assert.equal(o.cause ?? null, want.cause, o.message);
      assert.match(o.message, want.text);
    });
});

describe("local verdicts on fixture facts", () => {
  const daemon = (ping: DaemonFact["ping"]): DaemonFact => ({
    socket: "/nix/var/nix/daemon-socket/socket",
    evidence: [],
    ping,
  });
  const f = (id: string, severity: Finding["severity"]): Finding =>
    ({
      id,
      severity,
      message: `${id} says`,
      file: "/etc/nix/machines",
      line: 3,
      fix: null,
    }) as unknown as Finding;
  const cases: Row[] = [
    [
      "daemon: not root",
      () => daemonVerdict(daemon(null), "alice"),
      { status: "warn", cause: "daemon-unreachable", text: /^cannot connect as alice without root/ },
    ],
    [
      "daemon: permission denied",
      () =>
        daemonVerdict(
          daemon({
            argv: ["nix"],
            code: 1,
            timedOut: false,
            output: "error: cannot connect: Permission denied",
          }),
          "alice",
        ),
      {
        status: "fail",
        cause: "daemon-unreachable",
        text: /^alice may not open the daemon socket .* \(permission denied\)/,
      },
    ],
    [
      "daemon: reached",
      () =>
        daemonVerdict(
          daemon({ argv: ["nix"], code: 0, timedOut: false, output: "Store URL: daemon\nVersion: 2.8.1" }),
          "alice",
        ),
      {
        status: "pass",
        text: /^alice reaches the daemon at \/nix\/var\/nix\/daemon-socket\/socket \(Nix 2\.8\.1\)$/,
      },
    ],
    [
      "lint: clean",
      () => lintVerdict([f("x", "info")]),
      { status: "pass", text: /finds no errors or warnings/ },
    ],
    [
      "lint: two warnings",
      () => lintVerdict([f("a", "warning"), f("b", "warning")]),
      {
        status: "warn",
        cause: "local-config",
        text: /^\/etc\/nix\/machines:3: a says \(and 1 more; see nix-builders lint\)$/,
      },
    ],
    [
      "lint: an error leads",
      () => lintVerdict([f("a", "warning"), f("b", "error")]),
      { status: "fail", cause: "local-config", text: /^\/etc\/nix\/machines:3: b says$/ },
    ],
  ];
  for (const [name, got, want] of cases)
    it(name, () => {
      const o = got();
      assert.equal(o.status, want.status, o.message);
      if (want.cause !== undefined) assert.equal(o.cause ?? null, want.cause, o.message);
      assert.match(o.message, want.text);
    });
});
