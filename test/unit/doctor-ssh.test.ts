/**
 * The doctor against a real OpenSSH server on 127.0.0.1 (temp host key, temp authorized key) with the
 * real Nix 2.8 on the far side (`nix-store --serve`, `nix-daemon --stdio`, chroot stores). One doctor
 * run over a machines file in which every line breaks one link; each line must fail exactly the check
 * that names its fault, with the right cause, and nothing else. 2.8 has no ports in store URIs, so the
 * port comes from NIX_SSHOPTS, as for a 2.8 user.
 *
 * Needs root (sshd, login as root) and /usr/sbin/sshd.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type DoctorReport, doctor } from "../../src/app/doctor/doctor.js";
import { reportJson, reportText } from "../../src/app/doctor/report.js";
import { DOCTOR_CAUSES } from "../../src/app/doctor/types.js";
import { keygen, type LoopbackSshd, sshdSkipReason, startLoopbackSshd } from "../support/loopback-sshd.js";

const skip = sshdSkipReason();

const tmp = mkdtempSync(join(tmpdir(), "nb-doctor-"));
const store = join(tmp, "store");
let port = 0;
let sshd: LoopbackSshd | undefined;
let silent: Server | undefined;
let report: DoctorReport;
const b64 = (s: string) => Buffer.from(s).toString("base64");

/** name → [machines line, expected failing check id or null, expected cause]. */
const cases: Record<string, { line: string; check: string | null; cause?: string; uri: string }> = {};

before(async () => {
  if (skip) return;
  const hostKey = keygen(tmp, "hostkey");
  const client = keygen(tmp, "client");
  const other = keygen(tmp, "other");
  const locked = keygen(tmp, "locked", "secret-passphrase");
  writeFileSync(join(tmp, "payload"), "payload\n");
  mkdirSync(join(tmp, "conf"));
  writeFileSync(join(tmp, "conf", "nix.conf"), "sandbox = false\n");
  execFileSync("nix-store", ["--store", store, "--add", join(tmp, "payload")], {
    env: { ...process.env, NIX_CONF_DIR: join(tmp, "conf"), NIX_USER_CONF_FILES: join(tmp, "none") },
  });
  sshd = await startLoopbackSshd({
    dir: tmp,
    hostKey: hostKey.priv,
    authorizedKeys: client.pub + locked.pub,
    extraConfig: ["MaxStartups 100:30:200"],
  });
  port = sshd.port;
  // A TCP listener that never speaks ssh: the banner exchange times out.
  silent = createServer(() => {});
  await new Promise<void>((r) => silent!.listen(port, "127.0.0.3", r));

  const pin = b64(hostKey.pub);
  const rs = `remote-store=${store}`;
  const ok = (
    uri: string,
    extra: Partial<{ systems: string; key: string; features: string; pin: string }> = {},
  ) =>
    `${uri} ${extra.systems ?? "x86_64-linux"} ${extra.key ?? client.priv} 1 1 ${extra.features ?? "-"} - ${extra.pin ?? pin}`;
  const add = (name: string, uri: string, line: string, check: string | null, cause?: string) => {
    cases[name] = { uri, line, check, ...(cause ? { cause } : {}) };
  };
  const h = `ssh://root@127.0.0.1?${rs}`;
  add("healthy ssh://", h, ok(h), null);
  const ng = `ssh-ng://root@127.0.0.1?${rs}`;
  add("healthy ssh-ng://", ng, ok(ng), null);
  const lh = `ssh://localhost?${rs}`;
  add("localhost (no ssh in 2.8)", lh, ok(lh), null);
  const hk = `ssh://root@127.0.0.1?${rs}&x=hk`;
  add("wrong pinned host key", hk, ok(hk, { pin: b64(other.pub) }), "builder.host-key", "host-key");
  const au = `ssh://root@127.0.0.1?${rs}&x=au`;
  add("key not authorized", au, ok(au, { key: other.priv }), "builder.auth", "auth");
  const pp = `ssh://root@127.0.0.1?${rs}&x=pp`;
  add("key with a passphrase", pp, ok(pp, { key: locked.priv }), "builder.key", "auth");
  const nm = `ssh://root@127.0.0.1?${rs}&remote-program=/nonexistent/bin/nix-store`;
  add("nix-store not found", nm, ok(nm), "builder.remote-command", "remote-nix-missing");
  const bn = `ssh://root@127.0.0.1?${rs}&remote-program=echo%20Welcome%20to%20the%20builder%3B%20nix-store`;
  add("banner on stdout", bn, ok(bn), "builder.remote-command", "remote-shell");
  const nl = `ssh://root@127.0.0.1?${rs}&remote-program=echo%20This%20account%20is%20currently%20not%20available.%3B%20exit%201%3B`;
  add("nologin-like shell", nl, ok(nl), "builder.remote-command", "remote-shell");
  const pr = `ssh-ng://root@127.0.0.1?remote-program=nix-store%20--serve%20--write%20%23`;
  add("serve protocol for an ssh-ng client", pr, ok(pr), "builder.handshake", "protocol");
  const dd = `ssh-ng://root@127.0.0.1?remote-store=unix://${tmp}/no-daemon/socket`;
  add("ssh-ng: remote daemon down", dd, ok(dd), "builder.remote-daemon", "remote-daemon-down");
  const ds = `ssh://root@127.0.0.1?remote-store=unix://${tmp}/no-daemon/socket`;
  add("ssh: remote daemon down", ds, ok(ds), "builder.remote-daemon", "remote-daemon-down");
  const sy = `ssh://root@127.0.0.1?${rs}&x=sy`;
  add(
    "undeclared system",
    sy,
    ok(sy, { systems: "x86_64-linux,riscv64-linux" }),
    "builder.systems",
    "system-mismatch",
  );
  const fe = `ssh://root@127.0.0.1?${rs}&x=fe`;
  add(
    "missing feature",
    fe,
    ok(fe, { features: "big-parallel,doctor-test-feature" }),
    "builder.features",
    "feature-mismatch",
  );
  const dn = `ssh://root@127.0.0.2?${rs}`;
  add("nothing listens", dn, ok(dn), "builder.tcp", "unreachable");
  const to = `ssh://root@127.0.0.3?${rs}`;
  add("peer never speaks ssh", to, ok(to), "builder.host-key", "timeout");

  writeFileSync(
    join(tmp, "machines"),
    `${Object.values(cases)
      .map((c) => c.line)
      .join("\n")}\n`,
  );
  writeFileSync(join(tmp, "conf", "nix.conf"), `sandbox = false\nbuilders = @${join(tmp, "machines")}\n`);
  report = await doctor({
    env: {
      PATH: process.env["PATH"] ?? "/usr/bin:/bin",
      HOME: "/root",
      NIX_CONF_DIR: join(tmp, "conf"),
      NIX_USER_CONF_FILES: join(tmp, "none"),
      NIX_SSHOPTS: `-p ${port}`,
    },
    timeoutSec: 8,
  });
});

after(async () => {
  silent?.close();
  await sshd?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

describe("doctor over a real sshd on 127.0.0.1 (Nix 2.8)", { skip }, () => {
  it("local checks pass (root, no daemon: the hook runs ssh as root), but lint sees the locked key", () => {
    const local = report.checks.filter((c) => c.builder === null);
    assert.deepEqual(
      local.map((c) => c.id),
      ["nix", "user-trust", "daemon", "builders", "lint", "ssh-path", "ssh-identity"],
    );
    for (const c of local) {
      if (c.id === "lint") continue;
      assert.equal(c.status, "pass", `${c.id}: ${c.message}`);
    }
    // The machines list deliberately holds a passphrase-protected key: the linter finds it before any ssh.
    const lintCheck = local.find((c) => c.id === "lint")!;
    assert.equal(lintCheck.status, "fail");
    assert.equal(lintCheck.cause, "local-config");
    assert.match(lintCheck.message, /passphrase/);
    assert.equal(report.summary.builders, Object.keys(cases).length);
    console.log(`# doctor over ${report.summary.builders} builders: ${report.summary.durationMs} ms`);
  });

  for (const name of [
    "healthy ssh://",
    "healthy ssh-ng://",
    "localhost (no ssh in 2.8)",
    "wrong pinned host key",
    "key not authorized",
    "key with a passphrase",
    "nix-store not found",
    "banner on stdout",
    "nologin-like shell",
    "serve protocol for an ssh-ng client",
    "ssh-ng: remote daemon down",
    "ssh: remote daemon down",
    "undeclared system",
    "missing feature",
    "nothing listens",
    "peer never speaks ssh",
  ]) {
    it(name, () => {
      const c = cases[name]!;
      const mine = report.checks.filter((x) => x.builder === c.uri);
      assert.ok(mine.length > 10, `no checks for ${c.uri}`);
      const bad = mine.filter((x) => x.status === "fail" || x.status === "warn");
      const show = () => reportText({ ...report, checks: mine });
      if (c.check === null) {
        assert.deepEqual(bad, [], show());
        assert.equal(mine.filter((x) => x.status === "skip").length, 0, show());
        return;
      }
      assert.deepEqual(
        bad.map((x) => [x.id, x.status, x.cause]),
        [[c.check, "fail", c.cause]],
        show(),
      );
      const failed = bad[0]!;
      assert.ok(failed.fix && failed.fix.length > 20, "a failure has a fix");
      assert.ok(failed.evidence.length > 0, "a failure has evidence");
      // Everything after the failed check is skipped, and says why.
      const after = mine.slice(mine.indexOf(failed) + 1).filter((x) => x.deps.includes(failed.id));
      for (const x of after) assert.equal(x.status, "skip", `${x.id} after ${failed.id}`);
    });
  }

  it("the far side is a clean builder: root's home is empty there, its Nix reads only the fixture's nix.conf", () => {
    // A fresh host's root may have a ~/.bashrc that takes seconds (pyenv init, measured 3-5 s): bash
    // started by sshd sources it, and every session then hit the doctor's deadline. The fixture hides it.
    const kh = join(tmp, "fixture-known-hosts");
    writeFileSync(kh, `[127.0.0.1]:${port} ${readFileSync(join(tmp, "hostkey.pub"), "utf8")}`);
    const t0 = performance.now();
    const out = execFileSync(
      "ssh",
      [
        "-p",
        String(port),
        "-i",
        join(tmp, "client"),
        "-oBatchMode=yes",
        `-oUserKnownHostsFile=${kh}`,
        "-oGlobalKnownHostsFile=/dev/null",
        "root@127.0.0.1",
        'echo "home=$HOME"; ls -A "$HOME" | wc -l; echo "conf=$NIX_CONF_DIR"; nix --extra-experimental-features nix-command show-config | grep "^build-users-group"',
      ],
      { encoding: "utf8", timeout: 20_000 },
    );
    const ms = performance.now() - t0;
    const [home, entries, conf, bug] = out.trim().split("\n");
    assert.equal(home, `home=${userInfo().homedir}`);
    assert.equal(entries, "0", out);
    assert.equal(conf, `conf=${join(tmp, "builder-nix-conf")}`);
    assert.match(bug ?? "", /^build-users-group =\s*$/);
    console.log(`# one ssh session + nix show-config on the fixture: ${Math.round(ms)} ms`);
  });

  it("remote-config runs over the main probe's connection (its control socket)", () => {
    const c = cases["healthy ssh://"]!;
    const rc = report.checks.find((x) => x.builder === c.uri && x.id === "builder.remote-config")!;
    assert.equal(rc.status, "pass");
    assert.match(rc.evidence[0]!.what, /over the main probe's ssh connection/);
    assert.match(rc.evidence[0]!.what, /-oControlMaster=no/);
  });

  it("with a TMPDIR too long for a control socket, remote-config gets a session of its own", async () => {
    // ssh exits when it cannot bind its ControlPath (MAX_CONTROL_PATH), so no master is asked for.
    const long = join(tmp, "t".repeat(90));
    mkdirSync(long);
    const conf2 = join(tmp, "conf2");
    mkdirSync(conf2);
    writeFileSync(join(tmp, "machines2"), `${cases["healthy ssh://"]!.line}\n`);
    writeFileSync(join(conf2, "nix.conf"), `sandbox = false\nbuilders = @${join(tmp, "machines2")}\n`);
    const saved = process.env["TMPDIR"];
    process.env["TMPDIR"] = long;
    let r: DoctorReport;
    try {
      r = await doctor({
        env: {
          PATH: process.env["PATH"] ?? "/usr/bin:/bin",
          HOME: "/root",
          NIX_CONF_DIR: conf2,
          NIX_USER_CONF_FILES: join(tmp, "none"),
          NIX_SSHOPTS: `-p ${port}`,
        },
        timeoutSec: 8,
      });
    } finally {
      if (saved === undefined) delete process.env["TMPDIR"];
      else process.env["TMPDIR"] = saved;
    }
    const mine = r.checks.filter((x) => x.builder !== null);
    assert.deepEqual(
      mine.filter((x) => x.status !== "pass").map((x) => [x.id, x.status, x.message]),
      [],
    );
    const rc = mine.find((x) => x.id === "builder.remote-config")!;
    assert.match(rc.evidence[0]!.what, /second ssh session/);
    assert.doesNotMatch(rc.evidence[0]!.what, /ControlPath/);
  });

  it("ProxyJump: dns and tcp test the first jump host, as ssh -G resolves it", async () => {
    const conf3 = join(tmp, "conf3");
    mkdirSync(conf3, { recursive: true });
    writeFileSync(join(tmp, "machines3"), `${cases["healthy ssh://"]!.line}\n`);
    writeFileSync(join(conf3, "nix.conf"), `sandbox = false\nbuilders = @${join(tmp, "machines3")}\n`);
    const run = (jump: string) =>
      doctor({
        env: {
          PATH: process.env["PATH"] ?? "/usr/bin:/bin",
          HOME: "/root",
          NIX_CONF_DIR: conf3,
          NIX_USER_CONF_FILES: join(tmp, "none"),
          NIX_SSHOPTS: `-p ${port} -J ${jump}`,
        },
        timeoutSec: 8,
      });
    const check = (r: DoctorReport, id: string) => r.checks.find((x) => x.builder !== null && x.id === id)!;
    const closed = await run("root@127.0.0.1:1");
    const tcp = check(closed, "builder.tcp");
    assert.deepEqual([tcp.status, tcp.cause], ["fail", "unreachable"]);
    assert.match(tcp.message, /^127\.0\.0\.1 port 1 \(first hop: jump host 127\.0\.0\.1, ProxyJump\): /);
    assert.equal(check(closed, "builder.host-key").status, "skip");
    // Spelled `localhost`: ssh refuses a jump to the very host and port it is asked for ("jumphost
    // loop"), which the doctor reports from ssh -G as it is.
    const loop = await run(`root@127.0.0.1:${port}`);
    assert.match(check(loop, "builder.ssh-config").message, /jumphost loop/);
    const open = await run(`root@localhost:${port}`);
    assert.equal(check(open, "builder.dns").status, "pass", reportText(open, { verbose: true }));
    assert.match(
      check(open, "builder.tcp").message,
      new RegExp(` port ${port} \\(first hop: jump host localhost, ProxyJump\\) accepts connections`),
    );
    // The jump host's key is not in root's known_hosts (ssh passes the pin to the last hop only).
    const hk = check(open, "builder.host-key");
    assert.deepEqual([hk.status, hk.cause], ["fail", "host-key"]);
    assert.match(hk.message, /ProxyJump\): ssh checks that jump host's key against root's own known_hosts/);
  });

  it("the JSON report has the documented shape, causes from the contract, and no key material", () => {
    const j = reportJson(report) as { checks: Record<string, unknown>[]; summary: Record<string, unknown> };
    for (const c of j.checks) {
      for (const k of ["id", "builder", "status", "cause", "message", "evidence", "fix"])
        assert.ok(k in c, k);
      if (c["cause"] !== null) assert.ok((DOCTOR_CAUSES as readonly string[]).includes(c["cause"] as string));
    }
    assert.equal(j.summary["exitCode"], 2);
    const text = JSON.stringify(j);
    assert.ok(!text.includes("PRIVATE KEY"));
    for (const k of ["client", "other", "locked"]) {
      const pub = readFileSync(join(tmp, `${k}.pub`), "utf8").split(" ")[1]!;
      assert.ok(!text.includes(pub), `public key ${k} printed`);
    }
    assert.ok(!/StrictHostKeyChecking/i.test(text));
  });
});
