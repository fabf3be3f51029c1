/**
 * Issue 18 point 6, reproduced on real daemons: does a trusted hercules-ci-agent's build for its own
 * (native) system reach a remote builder? The agent (trusted, not materialising) sends the daemon an
 * in-memory derivation with BuildDerivation; with `max-jobs = 0` (agent ≥ 0.10.6) or a platform in
 * `remotePlatformsWithSameFeatures` it materialises and sends BuildPaths on the `.drv` instead.
 *
 * For real Nix 2.8 and real Nix 2.30: a throwaway nix-daemon over a chroot store, `builders` naming
 * another chroot store (a real machine for the real build hook), max-jobs 1 in the daemon's nix.conf,
 * and root as the (trusted) client speaking the worker protocol (`src/remote/worker.ts`). Where the
 * build ran is read twice: the first `building '…' on '…'` activity (type 105; "" = local) and whether
 * the output is valid in the builder's store. The result is what `agentNativeOffload` states.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { agentNativeOffload, checkNativeOffload } from "../../src/agent/native-offload.js";
import { readDerivation } from "../../src/host/derivation-read.js";
import { connectDaemon, DaemonError } from "../../src/remote/worker.js";
import { REAL_NIXES, type RealNix } from "../support/nix-versions.js";

const isRoot = process.getuid?.() === 0;

interface Case {
  name: string;
  op: "buildDerivation" | "buildPaths";
  maxJobs: number;
  /** Delete the .drv from the daemon's store first (an agent that did not evaluate it there). */
  drvAbsent?: boolean;
}

const CASES: Case[] = [
  { name: "in-memory derivation, .drv in the store, max-jobs 1", op: "buildDerivation", maxJobs: 1 },
  {
    name: "in-memory derivation, .drv not in the store, max-jobs 1",
    op: "buildDerivation",
    maxJobs: 1,
    drvAbsent: true,
  },
  { name: "in-memory derivation, .drv in the store, max-jobs 0", op: "buildDerivation", maxJobs: 0 },
  { name: "materialised (BuildPaths on the .drv), max-jobs 0", op: "buildPaths", maxJobs: 0 },
];

function describeOffload(n: RealNix): void {
  const skip = (!isRoot && "needs root (builds in chroot stores)") || n.skipReason;
  describe(`native-platform offload of a trusted agent's build: real Nix ${n.label}`, { skip }, () => {
    let dir = "";
    let local = "";
    let m1 = "";
    let env: NodeJS.ProcessEnv = {};
    let daemon: ChildProcess | undefined;
    let daemonLog = "";
    let sock = "";
    const drvs: string[] = [];

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), "nb-offload-"));
      local = join(dir, "local");
      m1 = join(dir, "m1");
      mkdirSync(join(dir, "bb"));
      copyFileSync("/bin/busybox", join(dir, "bb", "busybox"));
      const conf = join(dir, "conf");
      mkdirSync(conf);
      writeFileSync(
        join(conf, "nix.conf"),
        [
          "sandbox = false",
          "build-users-group =",
          "substituters =",
          "fsync-metadata = false",
          "system = x86_64-linux",
          "max-jobs = 1",
          "trusted-users = root",
          `builders = ${m1} x86_64-linux - 1 1 - -`,
          ...(n.label === "2.8" ? [] : ["filter-syscalls = false"]),
          "",
        ].join("\n"),
      );
      env = { ...process.env, NIX_CONF_DIR: conf, NIX_USER_CONF_FILES: "", NIX_REMOTE: "" };
      const run = (bin: string, args: string[]): string => {
        const r = spawnSync(join(n.bin, bin), args, { env, encoding: "utf8", timeout: 60_000 });
        assert.equal(r.status, 0, r.stderr);
        return r.stdout.trim();
      };
      const bb = run("nix-store", ["--store", local, "--add", join(dir, "bb")]);
      const attrs = CASES.map(
        (_, i) =>
          `c${i} = derivation { name = "native-${i}"; system = "x86_64-linux"; builder = "\${builtins.storePath "${bb}"}/busybox"; args = [ "sh" "-c" "echo ${i} > $out" ]; };`,
      );
      writeFileSync(join(dir, "d.nix"), `{ ${attrs.join("\n")} }`);
      const args = ["--store", local, join(dir, "d.nix")];
      for (let i = 0; i < CASES.length; i++) args.push("-A", `c${i}`);
      drvs.push(...run("nix-instantiate", args).split("\n"));
      sock = join(dir, "daemon.sock");
      daemon = spawn(join(n.bin, "nix-daemon"), ["--store", local], {
        env: { ...env, NIX_DAEMON_SOCKET_PATH: sock },
        stdio: ["ignore", "ignore", "pipe"],
      });
      daemon.stderr!.on("data", (b: Buffer) => {
        daemonLog += b.toString();
      });
      for (let i = 0; i < 200 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(existsSync(sock), `the daemon socket did not appear: ${daemonLog}`);
    });

    after(async () => {
      if (daemon && daemon.exitCode === null) {
        const gone = new Promise((r) => daemon!.once("exit", r));
        daemon.kill("SIGTERM");
        await Promise.race([gone, new Promise((r) => setTimeout(r, 3000))]);
        if (daemon.exitCode === null) daemon.kill("SIGKILL");
      }
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    CASES.forEach((c, i) => {
      test(c.name, async () => {
        const drvPath = drvs[i]!;
        // read it before a deletion: the agent holds it in memory
        const drv = readDerivation(drvPath, { realStoreDir: join(local, "nix", "store") });
        if (c.drvAbsent) {
          const r = spawnSync(join(n.bin, "nix-store"), ["--store", local, "--delete", drvPath], {
            env,
            encoding: "utf8",
            timeout: 60_000,
          });
          assert.equal(r.status, 0, r.stderr);
        }
        const { result, connection } = await connectDaemon({ socketPath: sock });
        assert.ok(result.ok && connection, JSON.stringify(result));
        let failed: string | null = null;
        try {
          assert.equal(result.trusted === null || result.trusted === "trusted", true);
          await connection.setOptions({ maxBuildJobs: c.maxJobs, verbosity: 3 });
          if (c.op === "buildDerivation") {
            const r = await connection.buildDerivation(drvPath, drv, 90_000);
            if (r.status >= 3) failed = r.errorMsg.replace(/\x1b\[[0-9;]*m/g, "");
          } else {
            try {
              await connection.buildPaths([`${drvPath}!out`], 90_000);
            } catch (e) {
              if (!(e instanceof DaemonError)) throw e;
              failed = e.info.message;
            }
          }
        } finally {
          connection.close();
        }
        const first = connection.lastMessages.find(
          (m) => m.type === "start-activity" && m.activityType === 105,
        );
        const machine = first ? String(first.fields?.[1] ?? "") : null;
        const out = drv.outputs.get("out")!.path;
        const onBuilder =
          spawnSync(join(n.bin, "nix-store"), ["--store", m1, "--check-validity", out], {
            env,
            timeout: 30_000,
          }).status === 0;
        const seen = failed !== null ? "fails" : onBuilder && machine !== "" ? "remote" : "local";

        const want = agentNativeOffload({
          version: n.version!,
          materialised: c.op === "buildPaths",
          maxJobs: c.maxJobs,
          drvInDaemonStore: !c.drvAbsent,
        });
        assert.equal(seen, want.outcome, `${c.name}: ${failed ?? ""} machine ${machine} ${daemonLog}`);
        if (seen === "remote") assert.match(machine ?? "", /m1$/);
        if (seen === "fails") assert.match(failed!, /nable to start any build/);
      });
    });
  });
}

for (const n of REAL_NIXES) describeOffload(n);

describe("checkNativeOffload: what show --agent and the doctor say", () => {
  const v28 = { major: 2, minor: 8, patch: 0 };
  const v230 = { major: 2, minor: 30, patch: 5 };
  const machines = [
    { storeUri: "ssh://b", systemTypes: ["x86_64-linux"], mandatoryFeatures: [] },
    { storeUri: "ssh://gpu", systemTypes: ["x86_64-linux"], mandatoryFeatures: ["cuda"] },
  ];
  const base = {
    system: "x86_64-linux",
    nixUserIsTrusted: true,
    maxJobs: 4,
    remotePlatforms: null,
    machines,
  };
  test("trusted, max-jobs 4, Nix 2.8: a warning, native builds stay local", () => {
    const r = checkNativeOffload({ ...base, version: v28 });
    assert.deepEqual(
      r.findings.map((f) => [f.id, f.severity]),
      [["agent-native-offload", "warning"]],
    );
    assert.equal(r.report?.op, "BuildDerivation");
    assert.equal(r.report?.outcome, "local");
    assert.deepEqual(r.report?.builders, ["ssh://b"], "a builder with mandatory features does not count");
    assert.match(r.findings[0]!.message, /never go to ssh:\/\/b/);
  });
  test("trusted, max-jobs 4, Nix 2.30: info, they can go remote", () => {
    const r = checkNativeOffload({ ...base, version: v230 });
    assert.equal(r.report?.outcome, "remote");
    assert.equal(r.findings[0]!.severity, "info");
  });
  test("trusted, max-jobs 0 (agent 0.10.8) or native in remotePlatformsWithSameFeatures: BuildPaths", () => {
    for (const x of [{ maxJobs: 0, agentVersion: "0.10.8" }, { remotePlatforms: ["x86_64-linux"] }]) {
      const r = checkNativeOffload({ ...base, ...x, version: v28 });
      assert.equal(r.report?.op, "BuildPaths");
      assert.equal(r.report?.outcome, "remote");
    }
  });
  test("trusted, max-jobs 0, agent 0.10.5 on 2.8: the build fails", () => {
    const r = checkNativeOffload({ ...base, maxJobs: 0, agentVersion: "0.10.5", version: v28 });
    assert.equal(r.report?.outcome, "fails");
  });
  test("untrusted agent: BuildPaths on every version", () => {
    const r = checkNativeOffload({ ...base, nixUserIsTrusted: false, version: v28 });
    assert.equal(r.report?.op, "BuildPaths");
  });
  test("no builder for the native system: nothing to say", () => {
    const r = checkNativeOffload({ ...base, machines: [machines[1]!], version: v28 });
    assert.deepEqual(r, { report: null, findings: [] });
  });
});
