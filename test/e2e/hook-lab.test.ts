/**
 * Attribution on the lab: `hook install` on the agent machine (its daemon restarted), two builders
 * that take aarch64-linux and riscv64-linux, b1 down (so every build goes elsewhere: to b2; a third
 * builder only made `lab up` about 20 s longer). Twelve new derivations of the two systems, six
 * built by the hercules-ci-agent user and six by root, two of them failing in the builder.
 * `builds --json` must list exactly the derivations Nix's client logs show going out, each with the
 * builder those logs name (`building '…' on '…'`), the failures with their cause, and the `cannot build
 * on` of the faulty builder. `hook uninstall` gives nix.conf back byte for byte.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type LabStatus, lab, labExec, labSkipReason, REPO, remoteBuildLines } from "./support/lab.js";

const skip = labSkipReason();
const CLI = join(REPO, "dist", "cli.js");

/** The agent machine's nix-daemon processes (as the lab finds them: by mount namespace and name). */
function agentDaemons(): number[] {
  const ino = statSync("/run/nix-builders-lab/ns/agent.mnt").ino;
  const out: number[] = [];
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (readlinkSync(`/proc/${p}/ns/mnt`) !== `mnt:[${ino}]`) continue;
      if (readFileSync(`/proc/${p}/comm`, "utf8").trim() === "nix-daemon") out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}

/** Restart the agent's daemon the way the lab starts it, so that it reads nix.conf again. */
async function restartAgentDaemon(): Promise<void> {
  for (const pid of agentDaemons()) process.kill(pid, "SIGTERM");
  for (let i = 0; i < 50 && agentDaemons().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
  const r = labExec([
    "sh",
    "-c",
    "setsid env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root NIX_BUILDERS_LAB_PROC=1 nix-daemon </dev/null >>/root/nix-daemon-hook-test.log 2>&1 &",
  ]);
  assert.equal(r.code, 0, r.stderr);
  for (let i = 0; i < 100; i++) {
    if (labExec(["nix", "store", "ping", "--store", "daemon"]).code === 0) return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error("the agent's nix-daemon does not answer");
}

function drvList(s: LabStatus, tag: string, n: number): string {
  const bb = `\${builtins.storePath ${JSON.stringify(s.busybox)}}/busybox`;
  const items: string[] = [];
  for (let i = 0; i < n; i++) {
    const system = i % 2 === 0 ? "aarch64-linux" : "riscv64-linux";
    const nonce = `${tag}-${i}-${Date.now().toString(36)}`;
    const script = i === n - 1 ? `echo ${nonce} fails; exit 4` : `echo ${nonce} > $out`;
    items.push(
      `(derivation { name = "hook-${nonce}"; system = "${system}"; builder = "${bb}"; args = [ "sh" "-c" ${JSON.stringify(script)} ]; })`,
    );
  }
  return `[ ${items.join(" ")} ]`;
}

describe("lab: the build-hook wrapper names the builder Nix's client log names", { skip }, () => {
  let s: LabStatus;
  let original: string;

  before(async () => {
    lab(["up", "--builders", "2", "--systems", "aarch64-linux,riscv64-linux", "--fault", "b1=down"], {
      timeoutMs: 300_000,
    });
    const st = JSON.parse(lab(["status", "--json"]).stdout) as LabStatus;
    s = st;
    original = labExec(["cat", "/etc/nix/nix.conf"]).stdout;
  });

  after(() => {
    if (skip) return;
    lab(["down"], { allowFail: true });
  });

  it("12 derivations from the agent user and root: builds --json lists them with Nix's builders", async () => {
    const inst = labExec([process.execPath, CLI, "hook", "install", "--json"]);
    assert.equal(inst.code, 0, inst.stderr + inst.stdout);
    assert.equal(JSON.parse(inst.stdout).action, "installed");
    assert.match(labExec(["cat", "/etc/nix/nix.conf"]).stdout, /^build-hook = \S+\/libexec\/build-hook$/m);
    await restartAgentDaemon();

    const logs: string[] = [];
    for (const [user, tag] of [
      [s.agent.user, "agent"],
      ["root", "root"],
    ] as const) {
      const r = labExec(["nix-build", "--no-out-link", "--keep-going", "-E", drvList(s, tag, 6)], {
        user,
        timeoutMs: 300_000,
      });
      assert.notEqual(r.code, 0, "one derivation of each user fails");
      logs.push(r.stderr + r.stdout);
    }
    const out = new Map<string, string>();
    for (const l of logs) for (const { drv, uri } of remoteBuildLines(l)) out.set(drv, uri);
    assert.equal(out.size, 12, `12 derivations went out:\n${logs.join("\n")}`);
    const b1 = s.builders.find((b) => b.name === "b1")!;
    assert.ok(
      ![...out.values()].includes(b1.storeUri ?? ""),
      "nothing was built on the builder that is down",
    );

    // The recorders write a moment after each hook ends.
    let builds: {
      drv: string;
      builder: string;
      result: string;
      error: string | null;
      cannotBuild: { machine: string }[];
    }[] = [];
    for (let i = 0; i < 60; i++) {
      const r = labExec([process.execPath, CLI, "builds", "--json"]);
      assert.equal(r.code, 0, r.stderr);
      builds = JSON.parse(r.stdout).builds;
      if (builds.length >= 12 && builds.every((b) => b.result !== "in-progress")) break;
      await new Promise((res) => setTimeout(res, 500));
    }
    assert.deepEqual(
      new Set(builds.map((b) => b.drv)),
      new Set(out.keys()),
      "exactly the derivations that went out",
    );
    assert.equal(builds.length, 12);
    for (const b of builds) assert.equal(b.builder, out.get(b.drv), `builder of ${b.drv}`);
    const failed = builds.filter((b) => b.result === "failure");
    assert.equal(failed.length, 2, "the two failing derivations");
    for (const f of failed) assert.match(f.error ?? "", /exit code 4/);
    assert.ok(
      builds.some((b) => b.cannotBuild.some((c) => c.machine === b1.storeUri)),
      "b1's cannot build on is recorded",
    );

    const un = labExec([process.execPath, CLI, "hook", "uninstall", "--json"]);
    assert.equal(un.code, 0, un.stderr);
    assert.equal(labExec(["cat", "/etc/nix/nix.conf"]).stdout, original, "nix.conf byte for byte");
  });
});
