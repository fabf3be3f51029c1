/**
 * `nix-builders route` on real derivations (written by nix-instantiate into a temporary chroot store),
 * with builders given by --builders (the test user's store is local, so the flag applies), and live
 * load from flocks held on the chroot store's current-load files.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { runRoute } from "../../src/commands/route.js";
import { slotFile } from "../../src/host/current-load.js";
import { renderStoreUri } from "../../src/nix/store-uri.js";
import { parseNixVersion } from "../../src/nix/version.js";
import { captureIo } from "../support/capture-io.js";

/** The remote decision as route --json gives it: printedUri is the URI as that Nix renders it (2.23+). */
function remote(json: { nixVersion?: unknown }, uri: string): Record<string, unknown> {
  const v = parseNixVersion(String(json.nixVersion));
  return { kind: "remote", storeUri: uri, printedUri: v ? renderStoreUri(uri, v) : uri };
}

import { type DrvStore, haveNix, makeDrvStore } from "../support/drv-store.js";

// biome-ignore lint/suspicious/noExplicitAny: the JSON document under test
type Json = any;

const SKIP = !haveNix() && "nix-instantiate or /bin/busybox is not installed";

function holdLocks(files: string[]): Promise<ChildProcess> {
  const script =
    'for f in "$@"; do exec {fd}>"$f" || exit 2; flock -x -n "$fd" || exit 3; done; echo ready; exec sleep 600';
  const child = spawn("bash", ["-c", script, "holder", ...files], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    child.stdout!.once("data", () => resolve(child));
    child.once("exit", (code) => reject(new Error(`lock holder exited with ${code}`)));
  });
}

describe("route command", { skip: SKIP }, () => {
  let s: DrvStore;
  let drvs: Record<string, string>;
  let m1: string;
  let m2: string;

  before(() => {
    s = makeDrvStore();
    m1 = `${s.dir}/m1`;
    m2 = `${s.dir}/m2`;
    drvs = s.instantiate(
      `{
        plain = mk "plain" { };
        kvm = mk "kvm" { requiredSystemFeatures = [ "kvm" ]; };
        cuda = mk "cuda" { requiredSystemFeatures = [ "cuda" ]; };
        arm = mk "arm" { system = "aarch64-linux"; };
        local = mk "local" { preferLocalBuild = true; };
        fetch = derivation { name = "f"; system = "builtin"; builder = "builtin:fetchurl"; url = "file:///dev/null";
          outputHashMode = "flat"; outputHashAlgo = "sha256";
          outputHash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; };
      }`,
      ["plain", "kvm", "cuda", "arm", "local", "fetch"],
    );
  });
  after(() => s?.cleanup());

  async function route(args: {
    drv?: string;
    builders: string;
    extra?: Partial<Parameters<typeof runRoute>[0]>;
  }) {
    const io = captureIo(s.env);
    const code = await runRoute(
      { builders: args.builders, store: s.store, json: true, ...args.extra },
      args.drv,
      io,
    );
    return { code, json: JSON.parse(io.stdout) as Json, io };
  }

  test("remote: the JSON shape, the machine Nix picks, exit 0", async () => {
    const { code, json } = await route({
      drv: drvs.arm,
      builders: `${m1} x86_64-linux - 2 1 kvm; ${m2} aarch64-linux,x86_64-linux - 1 2`,
    });
    assert.equal(code, 0);
    for (const k of ["system", "requiredFeatures", "decision", "local", "machines"]) assert.ok(k in json, k);
    assert.equal(json.system, "aarch64-linux");
    assert.deepEqual(json.requiredFeatures, []);
    assert.deepEqual(json.decision, remote(json, m2));
    assert.equal(json.drvPath, drvs.arm);
    assert.equal(json.machines.length, 2);
    const [r1, r2] = json.machines;
    for (const r of json.machines)
      for (const k of ["storeUri", "eligible", "reasons", "load", "freeSlots", "score"]) assert.ok(k in r, k);
    assert.equal(r1.storeUri, m1);
    assert.equal(r1.eligible, false);
    assert.deepEqual(r1.reasons, ["system aarch64-linux not in [x86_64-linux]"]);
    assert.equal(r1.score, null);
    assert.equal(r2.eligible, true);
    assert.equal(r2.freeSlots, 1);
    assert.equal(r2.score, 0);
    assert.equal(json.local.capable, false);
    assert.match(json.local.reasons[0], /system aarch64-linux is not x86_64-linux/);
  });

  test("none: a feature nobody has; Nix's 2.8 local-fallback error names the drv; exit 2", async () => {
    const { code, json } = await route({ drv: drvs.cuda, builders: `${m1} x86_64-linux - 2 1 kvm` });
    assert.equal(code, 2);
    assert.equal(json.decision.kind, "none");
    assert.equal(json.decision.storeUri, undefined);
    assert.equal(
      json.decision.message,
      `a 'x86_64-linux' with features {cuda} is required to build '${drvs.cuda}', but I am a 'x86_64-linux' with features {kvm}`,
    );
    assert.deepEqual(json.machines[0].reasons, ["feature cuda not supported"]);
    assert.deepEqual(json.local.reasons, ["feature cuda not in system-features [kvm]"]);
  });

  test("--feature adds to the drv's features; --system overrides it", async () => {
    const a = await route({
      drv: drvs.plain,
      builders: `${m1} x86_64-linux - 1 1 cuda`,
      extra: { feature: ["cuda"] },
    });
    assert.deepEqual(a.json.requiredFeatures, ["cuda"]);
    assert.deepEqual(a.json.decision, remote(a.json, m1));
    const b = await route({ builders: `${m1} riscv64-linux - 1 1`, extra: { system: "riscv64-linux" } });
    assert.equal(b.json.drvPath, null);
    assert.deepEqual(b.json.decision, remote(b.json, m1));
  });

  test("preferLocalBuild builds locally without asking the hook; exit 0", async () => {
    const { code, json } = await route({ drv: drvs.local, builders: `${m1} x86_64-linux - 2 1` });
    assert.equal(code, 0);
    assert.equal(json.decision.kind, "local");
    assert.equal(json.hook.asked, false);
    assert.equal(json.preferLocalBuild, true);
  });

  test("builtin derivations: platform ok locally, the hook is still asked (2.8)", async () => {
    const { json } = await route({ drv: drvs.fetch, builders: `${m1} aarch64-linux - 1 1` });
    assert.equal(json.system, "builtin");
    assert.equal(json.isBuiltin, true);
    assert.deepEqual(json.decision, remote(json, m1));
  });

  test("live load: held slots are busy, a full right-type machine postpones (exit 1)", async () => {
    const builders = `${m1} x86_64-linux - 1 1 cuda; ${m2} x86_64-linux - 2 1 cuda`;
    mkdirSync(`${s.store}/nix/var/nix/current-load`, { recursive: true });
    const stateDir = `${s.store}/nix/var/nix`;
    const holder = await holdLocks([slotFile(stateDir, m1, 0), slotFile(stateDir, m2, 0)]);
    try {
      const a = await route({ drv: drvs.cuda, builders });
      assert.equal(a.code, 0);
      assert.deepEqual(a.json.decision, remote(a.json, m2));
      assert.equal(a.json.machines[0].load, 1);
      assert.equal(a.json.machines[0].freeSlots, 0);
      assert.deepEqual(a.json.machines[0].reasons, ["no free slot (1/1 busy)"]);
      assert.equal(a.json.machines[1].load, 1);
      assert.equal(a.json.machines[1].freeSlots, 1);
      const b = await route({ drv: drvs.cuda, builders: `${m1} x86_64-linux - 1 1 cuda` });
      assert.equal(b.code, 1);
      assert.deepEqual(b.json.decision, {
        kind: "postpone",
        message: `waiting for a machine to build '${drvs.cuda}'`,
      });
    } finally {
      holder.kill("SIGKILL");
    }
  });

  test("a right-type machine with maxJobs 0 postpones (exit 1); the text table has a local row", async () => {
    const io = captureIo(s.env);
    const code = await runRoute({ builders: `${m1} x86_64-linux - 0 1 cuda`, store: s.store }, drvs.cuda, io);
    assert.equal(code, 1);
    const t = io.stdout;
    assert.match(t, /Decision: postpone — Nix prints: waiting for a machine to build/);
    assert.match(t, new RegExp(`${m1}\\s+no\\s+0/0\\s+0\\s+-\\s+maxJobs is 0: never chosen`));
    assert.match(t, /local \(x86_64-linux, max-jobs 1\)\s+no/);
  });

  test("a machines error stops Nix: decision none with that error, exit 2", async () => {
    const { code, json } = await route({ drv: drvs.plain, builders: `${m1} x86_64-linux - x 1` });
    assert.equal(code, 2);
    assert.equal(json.decision.kind, "none");
    assert.ok(typeof json.decision.message === "string" && json.decision.message.length > 0);
  });

  test("a store URI too long for the slot lock file: not remote; Nix's hook error, exit 2 (issue 16 item 1)", async () => {
    const long = `${m1}?${"x".repeat(300)}=1`;
    const { code, json } = await route({ drv: drvs.plain, builders: `${long} x86_64-linux - 1 1` });
    assert.equal(code, 2);
    assert.equal(json.decision.kind, "none");
    assert.match(json.decision.message, /^opening lock file '.*\/current-load\/.*-0': File name too long$/);
    assert.equal(json.hook.died, json.decision.message);
    const io = captureIo(s.env);
    assert.equal(
      await runRoute({ builders: `${long} x86_64-linux - 1 1`, store: s.store }, drvs.plain, io),
      2,
    );
    assert.doesNotMatch(io.stdout, /Decision: remote/);
    assert.match(
      io.stdout,
      /Decision: none — Nix fails with:\n {2}error: opening lock file .*File name too long/,
    );
    assert.match(io.stdout, /the hook is asked \(not preferLocalBuild\) and dies before replying/);
  });
});
