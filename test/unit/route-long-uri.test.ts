/**
 * Issue 16 item 1, the `route` half: a store URI too long for the hook's slot lock file name. The real
 * build hooks of Nix 2.8 and 2.30 open `<state>/current-load/<URI with / as _>-<slot>` for every machine
 * of the right type with a slot, before choosing; a name over 255 bytes makes the hook die with
 * `opening lock file '…': File name too long`, whichever machine it would have chosen. route() must
 * predict that death (not "remote"), and only when the real hook dies. 2.23+ names the file after the
 * rendered URI (`local://…`, parameters sorted), so the threshold differs by version: the boundary
 * scenario is accepted by 2.8 and kills 2.30.
 */
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { type RouteMachine, route } from "../../src/nix/route.js";
import { slotStem } from "../../src/nix/store-uri.js";
import { NIX_2_8 } from "../../src/nix/version.js";
import { DEFAULT_DRV_PATH, runBuildRemote, scratchDir } from "../support/build-remote.js";
import { REAL_NIXES, type RealNix } from "../support/nix-versions.js";

/** A realistic remote-builder URI (336 characters): remote-program, ssh-key and a base64 host key. */
const HOST_KEY = Buffer.from(
  `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOs1b2d4Y2ZqZkR3cnVtYm9sZWV0aGVyZWFsaG9zdGtleQ root@builder-eu-west-1`,
).toString("base64");
const LONG_SSH = `ssh-ng://nix-remote-builder@builder-eu-west-1.ci.example.org?remote-program=/run/current-system/sw/bin/nix-daemon&ssh-key=/etc/nix/keys/remote-builder-eu-west-1_ed25519&base64-ssh-public-host-key=${HOST_KEY}`;

function machine(storeUri: string, over: Partial<RouteMachine> = {}): RouteMachine {
  return {
    storeUri,
    systemTypes: ["x86_64-linux"],
    maxJobs: 1,
    speedFactor: 1,
    supportedFeatures: [],
    mandatoryFeatures: [],
    ...over,
  };
}

function line(m: RouteMachine): string {
  return `${m.storeUri} ${m.systemTypes.join(",")} - ${m.maxJobs} ${m.speedFactor} - -`;
}

/** A local store path whose 2.8 slot name (`<path with / as _>-0`) is exactly 255 bytes. */
function boundaryPath(base: string): string {
  const dir = join(base, "b");
  const pad = 255 - `${dir}/`.length - "-0".length;
  return `${dir}/${"x".repeat(pad)}`;
}

function describeLong(n: RealNix): void {
  describe(`route() on an overlong store URI vs the real ${n.label} build-remote`, {
    skip: n.skipReason,
  }, () => {
    let base = "";
    let store = "";
    let stateDir = "";
    before(() => {
      base = join(scratchDir(), `route-long-${n.label}`);
      store = join(base, "store");
      stateDir = join(store, "nix", "var", "nix");
      mkdirSync(join(stateDir, "current-load"), { recursive: true });
    });

    async function both(machines: RouteMachine[], system = "x86_64-linux") {
      const real = await runBuildRemote({
        builders: machines.map(line).join("\n"),
        system,
        amWilling: false,
        store,
        hook: n.buildRemote,
        extraSettings: { "build-users-group": "", system: "x86_64-linux" },
      });
      const ours = route({
        version: n.version!,
        drv: { path: DEFAULT_DRV_PATH, system, requiredFeatures: [], preferLocalBuild: false },
        machines,
        local: {
          system: "x86_64-linux",
          extraPlatforms: [],
          systemFeatures: [],
          maxJobs: 1,
          experimentalFeatures: [],
        },
        amWilling: false,
        stateDir,
      });
      return { real, ours, detail: `${machines.map(line).join("\n")}\nhook stderr:\n${real.stderr}` };
    }

    test("the realistic 336-character URI: the hook dies, route says none with Nix's message", async () => {
      assert.equal(LONG_SSH.length, 336);
      const { real, ours, detail } = await both([machine(LONG_SSH)]);
      assert.equal(real.reply, null, detail);
      assert.match(real.error ?? "", /File name too long$/, detail);
      assert.equal(ours.hook.reply, null);
      assert.equal(ours.decision.kind, "none");
      assert.equal(ours.decision.message, real.error, detail);
      assert.equal(ours.hook.died, real.error);
      assert.match(ours.machines[0]!.reasons.join(";"), /slot lock file name is \d+ bytes/);
    });

    test("a good machine first does not save it: the hook opens every candidate's locks", async () => {
      const good = join(base, "good1");
      const { real, ours, detail } = await both([machine(good, { speedFactor: 9 }), machine(LONG_SSH)]);
      assert.equal(real.reply, null, detail);
      assert.equal(ours.decision.kind, "none");
      assert.equal(ours.decision.message, real.error, detail);
    });

    test("the long URI of the wrong system, or with maxJobs 0, is never opened: the good machine is chosen", async () => {
      const good = join(base, "good2");
      for (const long of [
        machine(LONG_SSH, { systemTypes: ["aarch64-linux"] }),
        machine(LONG_SSH, { maxJobs: 0 }),
      ]) {
        const { real, ours, detail } = await both([long, machine(good)]);
        assert.equal(real.reply, "accept", detail);
        assert.equal(ours.hook.reply, "accept");
        assert.equal(ours.decision.kind, "remote");
        assert.equal(ours.decision.printedUri, real.acceptedUri, detail);
      }
    });

    test("the threshold follows the version's slot name: 255 bytes for 2.8 is over for 2.23+", async () => {
      const path = boundaryPath(base);
      assert.equal(`${slotStem(path, NIX_2_8)}-0`.length, 255);
      const { real, ours, detail } = await both([machine(path)]);
      const dies = `${slotStem(path, n.version!)}-0`.length > 255;
      assert.equal(dies, n.label !== "2.8", "2.30 renders it as local://…, 8 bytes longer");
      assert.equal(real.reply, dies ? null : "accept", detail);
      assert.equal(ours.hook.reply, real.reply);
      if (dies) assert.equal(ours.decision.message, real.error, detail);
      else assert.equal(ours.decision.printedUri, real.acceptedUri, detail);
    });
  });
}

for (const n of REAL_NIXES) describeLong(n);
