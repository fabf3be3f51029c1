// Every lab fault shows, in a raw check (plain ssh with the pinned host key, `nix store ping`, a
// plain build), the symptom docs/lab.md promises; and `lab heal` takes it away again.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  ensureLab,
  type LabBuilder,
  type LabStatus,
  lab,
  labExec,
  labSkipReason,
  labStatus,
  nonceDrvExpr,
  rawSsh,
  remoteBuildLines,
} from "./support/lab.js";

const skip = labSkipReason();
const B = "b2"; // b1 stays healthy for the other test files

describe("lab faults", { skip }, () => {
  let s: LabStatus;

  before(() => {
    s = ensureLab();
  });
  after(() => {
    if (!skip) lab(["heal", B]);
  });

  function builder(): LabBuilder {
    const st = labStatus();
    assert.ok(st);
    s = st;
    return st.builders.find((b) => b.name === B)!;
  }

  /** Switch FAULT on, run the check, switch it off, and check that the builder is healthy again. */
  function withFault(fault: string, check: (b: LabBuilder) => void) {
    lab(["fault", B, fault]);
    try {
      const b = builder();
      assert.deepEqual(b.faults, [fault]);
      check(b);
    } finally {
      lab(["heal", B]);
    }
    const b = builder();
    assert.deepEqual(b.faults, []);
    const ok = rawSsh(b, "nix-store --version");
    assert.equal(ok.code, 0, `after healing ${fault}: ${ok.stderr}`);
    assert.match(ok.stdout, /^nix-store \(Nix\) /);
  }

  function ping(uri: string, timeoutMs = 30_000) {
    return labExec(["nix", "store", "ping", "--store", uri], { timeoutMs });
  }

  /** A build as root on the agent machine with only this machines line as builders. */
  function buildWith(line: string, drv: Parameters<typeof nonceDrvExpr>[1]) {
    const { expr } = nonceDrvExpr(s, drv);
    const r = labExec(["nix-build", "--no-out-link", "--option", "builders", line, "-E", expr], {
      timeoutMs: 120_000,
    });
    return { ...r, log: r.stderr + r.stdout };
  }

  it("healthy: ssh, both store URIs and a remote build work", () => {
    const b = builder();
    const r = rawSsh(b, "nix-store --version");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim().split("\n").length, 1); // nothing but the command's output
    assert.equal(ping(b.storeUriPinned).code, 0);
    assert.equal(ping(b.storeUriNgPinned).code, 0);
    const build = buildWith(b.machinesLine, { system: "aarch64-linux" });
    assert.equal(build.code, 0, build.log);
    assert.deepEqual(
      remoteBuildLines(build.log).map((l) => l.uri),
      [b.storeUri],
    );
  });

  it("down: connection refused", () => {
    withFault("down", (b) => {
      const r = rawSsh(b, "true");
      assert.equal(r.code, 255);
      assert.match(r.stderr, /Connection refused/);
    });
  });

  it("wrong-host-key: the pinned key does not match", () => {
    withFault("wrong-host-key", (b) => {
      assert.notEqual(b.machinesLine.split(" ")[7], b.hostKeyBase64);
      const r = rawSsh(b, "true");
      assert.equal(r.code, 255);
      assert.match(r.stderr, /REMOTE HOST IDENTIFICATION HAS CHANGED/);
      assert.match(r.stderr, /Host key verification failed/);
      // The agent machine's system machines list carries the wrong pin too.
      assert.ok(labExec(["cat", s.agent.machinesFile]).stdout.includes(b.machinesLine));
    });
  });

  it("unauthorized: root's key is refused", () => {
    withFault("unauthorized", (b) => {
      const r = rawSsh(b, "true");
      assert.equal(r.code, 255);
      assert.match(r.stderr, /Permission denied \(publickey\)/);
    });
  });

  it("no-nix-on-path: nix is found by a login shell only", () => {
    withFault("no-nix-on-path", (b) => {
      const r = rawSsh(b, "nix-store --version");
      assert.equal(r.code, 127);
      assert.match(r.stderr, /nix-store: command not found/);
      const login = rawSsh(b, "bash -lc 'nix-store --version'");
      assert.equal(login.code, 0, login.stderr);
      const p = ping(b.storeUriPinned);
      assert.notEqual(p.code, 0);
    });
  });

  it("nologin: the account is not available", () => {
    withFault("nologin", (b) => {
      const r = rawSsh(b, "true");
      assert.equal(r.code, 1);
      assert.match(r.stdout + r.stderr, /This account is currently not available/);
    });
  });

  it("untrusted: the builder refuses input-addressed builds and unsigned paths", () => {
    withFault("untrusted", (b) => {
      const conf = rawSsh(b, "nix show-config");
      assert.match(conf.stdout, /^trusted-users = root$/m);
      const build = buildWith(b.machinesLine, { system: "aarch64-linux" });
      assert.notEqual(build.code, 0);
      assert.match(build.log, /you are not privileged to build input-addressed derivations/);
      // Copying an input-addressed path: the builder wants a signature from an untrusted user.
      const local = buildWith("", { system: "x86_64-linux" });
      assert.equal(local.code, 0, local.log);
      const cp = labExec(["nix", "copy", "--to", b.storeUriNgPinned, local.stdout.trim()]);
      assert.notEqual(cp.code, 0);
      assert.match(cp.stderr, /lacks a valid signature/);
    });
  });

  it("blackhole: connections hang until the timeout", () => {
    withFault("blackhole", (b) => {
      const t0 = Date.now();
      const r = rawSsh(b, "true", { connectTimeoutSec: 2 });
      assert.equal(r.code, 255);
      assert.match(r.stderr, /Connection timed out/);
      assert.ok(Date.now() - t0 >= 1900);
    });
  });

  it("daemon-down: ssh-ng:// cannot reach the builder's daemon", () => {
    withFault("daemon-down", (b) => {
      const p = ping(b.storeUriNgPinned);
      assert.notEqual(p.code, 0);
      assert.match(p.stderr, /cannot connect to socket at '\/nix\/var\/nix\/daemon-socket\/socket'/);
      assert.equal(rawSsh(b, "true").code, 0); // ssh itself is fine
    });
  });

  it("wrong-system: the machines line declares a system the builder does not have", () => {
    withFault("wrong-system", (b) => {
      const declared = b.machinesLine.split(" ")[1]!.split(",");
      const extra = declared.find((x) => !b.systems.includes(x));
      assert.ok(extra, b.machinesLine);
      const conf = rawSsh(b, "nix show-config").stdout;
      assert.doesNotMatch(conf, new RegExp(`^extra-platforms = .*${extra}`, "m"));
      const build = buildWith(b.machinesLine, { system: extra });
      assert.notEqual(build.code, 0);
      assert.deepEqual(
        remoteBuildLines(build.log).map((l) => l.uri),
        [b.storeUri],
      );
      assert.match(build.log, new RegExp(`a '${extra}' with features \\{\\} is required`));
    });
  });

  it("missing-feature: the machines line declares a feature the builder lacks", () => {
    withFault("missing-feature", (b) => {
      const features = b.machinesLine.split(" ")[5]!.split(",");
      assert.ok(features.includes("kvm"));
      assert.ok(!b.features.includes("kvm"));
      const conf = rawSsh(b, "nix show-config").stdout;
      assert.doesNotMatch(conf, /^system-features = .*kvm/m);
      const build = buildWith(b.machinesLine, { system: "aarch64-linux", requiredSystemFeatures: ["kvm"] });
      assert.notEqual(build.code, 0);
      assert.deepEqual(
        remoteBuildLines(build.log).map((l) => l.uri),
        [b.storeUri],
      );
      assert.match(build.log, /with features \{kvm\} is required/);
    });
  });

  it("banner: the shell prints text on stdout, which breaks the Nix protocols", () => {
    withFault("banner", (b) => {
      const r = rawSsh(b, "true");
      assert.equal(r.code, 0);
      assert.match(r.stdout, /Welcome to lab builder/);
      const p = ping(b.storeUriPinned);
      assert.notEqual(p.code, 0);
      assert.match(p.stderr, /protocol mismatch/);
      const png = ping(b.storeUriNgPinned);
      assert.notEqual(png.code, 0);
      assert.match(png.stderr, /protocol mismatch/);
    });
  });

  it("slow: every round trip takes 200 ms longer", () => {
    const time = (b: LabBuilder) => {
      const t0 = Date.now();
      const r = rawSsh(b, "true");
      assert.equal(r.code, 0, r.stderr);
      return Date.now() - t0;
    };
    const healthy = Math.min(time(builder()), time(builder()));
    withFault("slow", (b) => {
      const slow = time(b);
      // An ssh login is several round trips.
      assert.ok(slow >= healthy + 600, `healthy ${healthy} ms, slow ${slow} ms`);
      assert.equal(ping(b.storeUriNgPinned).code, 0);
    });
  });

  it("several faults at once; unknown faults and builders are refused", () => {
    const bad = lab(["fault", B, "no-such-fault"], { allowFail: true });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /unknown fault/);
    assert.notEqual(lab(["fault", "b999", "down"], { allowFail: true }).code, 0);
    // Two faults at once, then heal both.
    lab(["fault", B, "down"]);
    lab(["fault", B, "nologin"]);
    assert.deepEqual(builder().faults.sort(), ["down", "nologin"]);
    lab(["heal", B]);
    assert.deepEqual(builder().faults, []);
    assert.equal(rawSsh(builder(), "true").code, 0);
  });
});
