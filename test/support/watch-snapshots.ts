// Fixture snapshots for the watch edges' tests (metrics, status page, HTTP): what the engine publishes
// for a realistic agent machine. Five builders: two up, one quarantined by a blackhole (held, in
// backoff, with a flapping history), one misconfigured (the remote does not trust root), and one
// kept listed by the max-quarantined-share guard; riscv64-linux is served only by the misconfigured
// one, so its builds have nowhere to go. Times are relative to `now` so "3 min ago" reads right.

import type { BuilderStatus, WatchSnapshot } from "../../src/app/watch/model.js";

export const FIXTURE_NOW = Date.UTC(2026, 11, 7, 21, 30, 0);

const min = 60_000;

const HOSTKEY =
  "c3NoLWVkMjU1MTkgQUFBQUMzTnphQzFsWkRJMU5URTVBQUFBSUhEdTd4U2pRbzRBeXBtS2Rwa1dHT1l2TjRBNm1ZVjd5cm9XV0d3eTRTR1Q=";

function builder(
  p: Partial<BuilderStatus> & Pick<BuilderStatus, "builder" | "line" | "index" | "systems" | "state">,
  now: number,
): BuilderStatus {
  return {
    supportedFeatures: [],
    mandatoryFeatures: [],
    maxJobs: 4,
    since: now - 50 * min,
    disposition: "listed",
    consecutiveFailures: 0,
    backoffLevel: 0,
    quarantinedUntil: null,
    nextProbeAt: now + 20_000,
    lastProbe: null,
    lastSuccessAt: null,
    lastFailure: null,
    transitions: [],
    transitionCounts: {},
    probeCounts: {},
    slots: 4,
    slotsBusy: 0,
    ...p,
  };
}

/** The main fixture: one quarantined builder (b2), guards, transitions, routing, recent builds. */
export function fixtureSnapshot(
  now = FIXTURE_NOW,
  opts: { extraBuilder?: BuilderStatus; recentBuilds?: boolean } = {},
): WatchSnapshot {
  const okProbe = (at: number, total: number, version = "2.8.0", protocol = "2.7") => ({
    at,
    ok: true,
    phases: { dns: 0.001, tcp: 0.002, auth: total * 0.5, handshake: total * 0.3, query: total * 0.1, total },
    remoteNixVersion: version,
    protocol,
    remoteTrusted: true,
  });
  const b1 = builder(
    {
      builder: "ssh-ng://nix@b1.lab",
      line: `ssh-ng://nix@b1.lab x86_64-linux,i686-linux /root/.ssh/id_builders 4 2 kvm,nixos-test,big-parallel - ${HOSTKEY}`,
      index: 0,
      systems: ["x86_64-linux", "i686-linux"],
      supportedFeatures: ["kvm", "nixos-test", "big-parallel"],
      state: "up",
      since: now - 3 * 60 * min,
      lastProbe: okProbe(now - 10_000, 0.084, "2.30.5", "1.38"),
      lastSuccessAt: now - 10_000,
      transitions: [{ at: now - 3 * 60 * min, from: "unknown", to: "up", reason: "probe-ok" }],
      transitionCounts: { "unknown>up": 1 },
      probeCounts: { ok: 361 },
      slotsBusy: 3,
    },
    now,
  );
  const timeoutFailure = {
    at: now - 2 * min,
    ok: false,
    cause: "timeout",
    message:
      "ssh to b2.lab did not connect within 10 s (no answer to the TCP handshake: the host or a firewall drops packets)",
    fix: "check that b2.lab is up and that port 22 is reachable from this machine (ssh -vvv nix@b2.lab true)",
    phases: { dns: 0.001, tcp: 10.0, total: 10.002 },
  };
  const b2 = builder(
    {
      builder: "ssh://nix@b2.lab",
      line: "ssh://nix@b2.lab aarch64-linux /root/.ssh/id_builders 2 1 big-parallel",
      index: 1,
      systems: ["aarch64-linux"],
      supportedFeatures: ["big-parallel"],
      maxJobs: 2,
      state: "quarantined",
      since: now - 2 * min,
      disposition: "held",
      consecutiveFailures: 3,
      backoffLevel: 2,
      quarantinedUntil: now + 3 * min,
      nextProbeAt: now + 3 * min,
      lastProbe: timeoutFailure,
      lastSuccessAt: now - 25 * min,
      lastFailure: timeoutFailure,
      transitions: [
        { at: now - 3 * 60 * min, from: "unknown", to: "up", reason: "probe-ok" },
        { at: now - 40 * min, from: "up", to: "suspect", reason: "timeout" },
        { at: now - 39 * min, from: "suspect", to: "quarantined", reason: "timeout" },
        { at: now - 30 * min, from: "quarantined", to: "probation", reason: "probe-ok" },
        { at: now - 25 * min, from: "probation", to: "up", reason: "probe-ok" },
        { at: now - 3 * min, from: "up", to: "suspect", reason: "timeout" },
        { at: now - 2 * min, from: "suspect", to: "quarantined", reason: "timeout" },
      ],
      transitionCounts: {
        "unknown>up": 1,
        "up>suspect": 2,
        "suspect>quarantined": 2,
        "quarantined>probation": 1,
        "probation>up": 1,
      },
      probeCounts: { ok: 310, timeout: 5, unreachable: 1 },
      slots: 2,
      slotsBusy: null,
    },
    now,
  );
  const b3 = builder(
    {
      builder: "ssh-ng://b3.lab",
      line: "ssh-ng://b3.lab aarch64-linux,x86_64-linux /root/.ssh/id_builders 4 1 kvm,big-parallel kvm",
      index: 2,
      systems: ["aarch64-linux", "x86_64-linux"],
      supportedFeatures: ["kvm", "big-parallel"],
      mandatoryFeatures: ["kvm"],
      state: "up",
      since: now - 60 * min,
      lastProbe: okProbe(now - 4_000, 0.213, "2.30.5", "1.38"),
      lastSuccessAt: now - 4_000,
      transitions: [
        { at: now - 3 * 60 * min, from: "unknown", to: "up", reason: "probe-ok" },
        { at: now - 70 * min, from: "up", to: "drained", reason: "drain" },
        { at: now - 60 * min, from: "drained", to: "up", reason: "undrain" },
      ],
      transitionCounts: { "unknown>up": 1, "up>drained": 1, "drained>up": 1 },
      probeCounts: { ok: 340 },
      slotsBusy: 2,
    },
    now,
  );
  const untrusted = {
    at: now - 8 * min,
    ok: false,
    cause: "remote-untrusted",
    message:
      "b4.lab's nix-daemon does not trust the user nix, so it would refuse the build's unsigned inputs",
    fix: "on b4.lab, add nix to trusted-users in /etc/nix/nix.conf and restart nix-daemon",
    phases: { dns: 0.001, tcp: 0.003, auth: 0.05, handshake: 0.02, total: 0.09 },
    remoteNixVersion: "2.24.9",
    protocol: "1.37",
    remoteTrusted: false,
  };
  const b4 = builder(
    {
      builder: "ssh-ng://nix@b4.lab",
      line: "ssh-ng://nix@b4.lab riscv64-linux /root/.ssh/id_builders 1",
      index: 3,
      systems: ["riscv64-linux"],
      maxJobs: 1,
      state: "misconfigured",
      since: now - 8 * min,
      disposition: "held",
      consecutiveFailures: 1,
      backoffLevel: 1,
      quarantinedUntil: now + 52_000,
      nextProbeAt: now + 52_000,
      lastProbe: untrusted,
      lastFailure: untrusted,
      transitions: [{ at: now - 8 * min, from: "unknown", to: "misconfigured", reason: "remote-untrusted" }],
      transitionCounts: { "unknown>misconfigured": 1 },
      probeCounts: { "remote-untrusted": 1 },
      slots: 1,
      slotsBusy: null,
    },
    now,
  );
  const refused = {
    at: now - 30_000,
    ok: false,
    cause: "unreachable",
    message: "ssh to b5.lab: connection refused (nothing listens on port 22)",
    fix: "start sshd on b5.lab, or remove its line from /etc/nix/machines",
    phases: { dns: 0.001, tcp: 0.001, total: 0.004 },
  };
  const b5 = builder(
    {
      builder: "ssh://b5.lab",
      line: "ssh://b5.lab x86_64-linux - 2",
      index: 4,
      systems: ["x86_64-linux"],
      maxJobs: 2,
      state: "kept",
      since: now - 60_000,
      consecutiveFailures: 2,
      lastProbe: refused,
      lastFailure: refused,
      lastSuccessAt: now - 90 * min,
      transitions: [
        { at: now - 3 * 60 * min, from: "unknown", to: "up", reason: "probe-ok" },
        { at: now - 90_000, from: "up", to: "suspect", reason: "unreachable" },
        { at: now - 60_000, from: "suspect", to: "kept", reason: "max-quarantined-share" },
      ],
      transitionCounts: { "unknown>up": 1, "up>suspect": 1, "suspect>kept": 1 },
      probeCounts: { ok: 350, unreachable: 2 },
      slots: 2,
      slotsBusy: 0,
    },
    now,
  );
  const builders = [b1, b2, b3, b4, b5];
  if (opts.extraBuilder) builders.push(opts.extraBuilder);
  const content = builders
    .filter((b) => b.disposition !== "removed")
    .map((b) => (b.disposition === "held" ? heldLine(b.line) : b.line));
  const snapshot: WatchSnapshot = {
    version: 1,
    startedAt: now - 3 * 60 * min - 5_000,
    lastRoundAt: now - 4_000,
    source: { path: "/etc/nix/machines", lines: builders.length, readAt: now - 4_000, error: null },
    output: {
      path: "/run/nix-builders/machines",
      lastWriteAt: now - 2 * min,
      writes: 7,
      hash: "9f2c1e0b7d5a4c3e8f6a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a",
      content,
    },
    diff: builders
      .filter((b) => b.disposition !== "listed")
      .map((b) => ({ builder: b.builder, disposition: b.disposition as "held" | "removed", state: b.state })),
    guards: ["max-quarantined-share"],
    localFault: null,
    routing: [
      { system: "x86_64-linux", builders: ["ssh-ng://nix@b1.lab", "ssh-ng://b3.lab", "ssh://b5.lab"] },
      { system: "i686-linux", builders: ["ssh-ng://nix@b1.lab"] },
      { system: "aarch64-linux", builders: ["ssh-ng://b3.lab"] },
      { system: "riscv64-linux", builders: [] },
    ],
    builders,
  };
  if (opts.recentBuilds !== false) {
    snapshot.recentBuilds = [
      {
        drv: "/nix/store/7x0qg2jvd1m3k1l7f2wz9h0y5b3c6a4r-hello-2.12.1.drv",
        system: "x86_64-linux",
        machine: "ssh-ng://nix@b1.lab",
        startedAt: now - 50_000,
        endedAt: null,
        result: "running",
      },
      {
        drv: "/nix/store/2b8q3yv0w9k1d5f6g7h8j9k0l1m2n3p4-openssl-3.0.13.drv",
        system: "aarch64-linux",
        machine: "ssh-ng://b3.lab",
        startedAt: now - 9 * min,
        endedAt: now - 4 * min,
        result: "built",
      },
      {
        drv: "/nix/store/9c7d6e5f4g3h2j1k0l9m8n7p6q5r4s3t-zlib-1.3.1.drv",
        system: "x86_64-linux",
        machine: "ssh-ng://nix@b1.lab",
        startedAt: now - 12 * min,
        endedAt: now - 11 * min,
        result: "built",
      },
      {
        drv: "/nix/store/1a2b3c4d5e6f7g8h9j0k1l2m3n4p5q6r-test-vm.drv",
        system: "x86_64-linux",
        machine: null,
        startedAt: now - 20 * min,
        endedAt: now - 18 * min,
        result: "failed",
      },
    ];
  }
  return snapshot;
}

/** The line as watch holds it: maxJobs (the 4th field) set to 0, the rest as is. */
export function heldLine(line: string): string {
  const f = line.split(/\s+/);
  while (f.length < 4) f.push("-");
  f[3] = "0";
  return f.join(" ");
}

/** A builder whose store URI and line carry HTML: the page must show them as text. */
export function hostileBuilder(now = FIXTURE_NOW): BuilderStatus {
  return builder(
    {
      builder: 'ssh://x<script>alert("owned")</script>',
      line: 'ssh://x<script>alert("owned")</script> x86_64-linux - 1 1 <img/src/onerror=alert(1)>',
      index: 5,
      systems: ["x86_64-linux"],
      state: "suspect",
      consecutiveFailures: 1,
      lastProbe: {
        at: now - 5_000,
        ok: false,
        cause: "unreachable",
        message:
          'ssh: Could not resolve hostname x<script>alert("owned")</script>: Name or service not known',
        fix: "fix the host name in the machines line </p><script>alert(2)</script>",
        phases: { dns: 0.02, total: 0.021 },
      },
    },
    now,
  );
}
