/**
 * Differential test: our route() against the real build hooks of Nix 2.8 and Nix 2.30.
 *
 * Machines are local chroot stores (`<tmp>/m1` …), so the hook's connect() succeeds at once and
 * `# accept` names the machine it chose (2.30: as it renders it, `local://<tmp>/m1`). Load is simulated
 * by a child process holding flocks on `<store>/nix/var/nix/current-load/<stem>-<slot>`, where the stem
 * is the one the version's hook uses (`slotStem`): if the tool named them wrong, the real hook would not
 * see the load and the replies would differ. The tool's own load reader (`readCurrentLoad` with the
 * version) feeds route(), as `route` does. Scenarios are generated from a fixed seed.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadMap, readCurrentLoad } from "../../src/host/current-load.js";
import { type RouteMachine, route } from "../../src/nix/route.js";
import { slotStem } from "../../src/nix/store-uri.js";
import { DEFAULT_DRV_PATH, runBuildRemote, scratchDir } from "../support/build-remote.js";
import { REAL_NIXES, type RealNix } from "../support/nix-versions.js";
import { mulberry32 } from "../support/random.js";

const LOCAL_SYSTEM = "x86_64-linux";
const EXTRA_PLATFORMS = ["i686-linux"];
const SYSTEM_FEATURES = ["benchmark", "big-parallel", "kvm"];

interface Scenario {
  name: string;
  machines: RouteMachine[];
  load: Map<string, number>;
  system: string;
  features: string[];
  amWilling: boolean;
}

function machineLine(m: RouteMachine): string {
  const list = (xs: readonly string[]) => (xs.length === 0 ? "-" : xs.join(","));
  return [
    m.storeUri,
    m.systemTypes.join(","),
    "-",
    m.maxJobs,
    m.speedFactor,
    list(m.supportedFeatures),
    list(m.mandatoryFeatures),
  ].join(" ");
}

function generate(base: string, count: number, seed: number): Scenario[] {
  const rnd = mulberry32(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const subset = (xs: readonly string[], p: number): string[] => xs.filter(() => rnd() < p);
  const SYSTEMS = ["x86_64-linux", "aarch64-linux", "i686-linux", "riscv64-linux"];
  const FEATURES = ["kvm", "big-parallel", "benchmark", "cuda"];
  const out: Scenario[] = [];
  for (let i = 0; i < count; i++) {
    const n = 1 + Math.floor(rnd() * 4);
    const machines: RouteMachine[] = [];
    const load = new Map<string, number>();
    for (let j = 0; j < n; j++) {
      const systems = subset(SYSTEMS, 0.45);
      if (systems.length === 0) systems.push(pick(SYSTEMS));
      const maxJobs = rnd() < 0.1 ? 0 : 1 + Math.floor(rnd() * 3);
      const uri = join(base, `s${i}m${j + 1}`);
      machines.push({
        storeUri: uri,
        systemTypes: systems,
        maxJobs,
        speedFactor: 1 + Math.floor(rnd() * 4),
        supportedFeatures: subset(FEATURES, 0.4),
        mandatoryFeatures: rnd() < 0.2 ? [pick(FEATURES)] : [],
      });
      const l = Math.floor(rnd() * (maxJobs + 1));
      if (l > 0) load.set(uri, l);
    }
    // Bias the drv towards systems the machines offer, so that accepts are common.
    const system = rnd() < 0.75 ? pick(pick(machines).systemTypes) : rnd() < 0.3 ? "builtin" : pick(SYSTEMS);
    const features = subset(FEATURES, 0.25);
    out.push({ name: `random #${i}`, machines, load, system, features, amWilling: rnd() < 0.5 });
  }
  return out;
}

/** Hold exclusive flocks on the given files in one child process; resolves when all are held. */
function holdLocks(files: string[]): Promise<ChildProcess | null> {
  if (files.length === 0) return Promise.resolve(null);
  const script =
    'for f in "$@"; do exec {fd}>"$f" || exit 2; flock -x -n "$fd" || exit 3; done; echo ready; exec sleep 600';
  const child = spawn("bash", ["-c", script, "holder", ...files], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    child.stdout!.once("data", () => resolve(child));
    child.once("exit", (code) => reject(new Error(`lock holder exited with ${code}`)));
  });
}

function release(child: ChildProcess | null): Promise<void> {
  if (child === null || child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.removeAllListeners("exit");
    child.once("exit", () => resolve());
    child.kill("SIGKILL");
  });
}

function describeRoute(n: RealNix): void {
  describe(`route() vs the real ${n.label} build-remote`, { skip: n.skipReason }, () => {
    let base = "";
    let store = "";
    let stateDir = "";
    const results: string[] = [];
    const version = n.version!;

    before(() => {
      base = join(scratchDir(), `route-diff-${n.label}`);
      store = join(base, "store");
      stateDir = join(store, "nix", "var", "nix");
      mkdirSync(join(stateDir, "current-load"), { recursive: true });
    });
    after(() => {
      if (process.env.ROUTE_DIFF_VERBOSE) console.log(results.join("\n"));
    });

    const scenarios = (): Scenario[] => {
      const b = join(scratchDir(), `route-diff-${n.label}`);
      const fixed: Scenario[] = [
        {
          name: "integer division: 2/3 ties 0/1, speed wins",
          machines: [
            {
              storeUri: join(b, "f1m1"),
              systemTypes: ["x86_64-linux"],
              maxJobs: 4,
              speedFactor: 1,
              supportedFeatures: [],
              mandatoryFeatures: [],
            },
            {
              storeUri: join(b, "f1m2"),
              systemTypes: ["x86_64-linux"],
              maxJobs: 4,
              speedFactor: 3,
              supportedFeatures: [],
              mandatoryFeatures: [],
            },
          ],
          load: new Map([[join(b, "f1m2"), 2]]),
          system: "x86_64-linux",
          features: [],
          amWilling: true,
        },
        {
          name: "equal score and speed: lower load wins",
          machines: [
            {
              storeUri: join(b, "f2m1"),
              systemTypes: ["x86_64-linux"],
              maxJobs: 4,
              speedFactor: 3,
              supportedFeatures: [],
              mandatoryFeatures: [],
            },
            {
              storeUri: join(b, "f2m2"),
              systemTypes: ["x86_64-linux"],
              maxJobs: 4,
              speedFactor: 3,
              supportedFeatures: [],
              mandatoryFeatures: [],
            },
          ],
          load: new Map([
            [join(b, "f2m1"), 2],
            [join(b, "f2m2"), 1],
          ]),
          system: "x86_64-linux",
          features: [],
          amWilling: true,
        },
        {
          name: "builtin drv on an aarch64 machine",
          machines: [
            {
              storeUri: join(b, "f3m1"),
              systemTypes: ["aarch64-linux"],
              maxJobs: 1,
              speedFactor: 1,
              supportedFeatures: [],
              mandatoryFeatures: [],
            },
          ],
          load: new Map(),
          system: "builtin",
          features: [],
          amWilling: false,
        },
        {
          name: "i686 via extra-platforms, all busy, amWilling 1: decline",
          machines: [
            {
              storeUri: join(b, "f4m1"),
              systemTypes: ["i686-linux"],
              maxJobs: 1,
              speedFactor: 1,
              supportedFeatures: [],
              mandatoryFeatures: [],
            },
          ],
          load: new Map([[join(b, "f4m1"), 1]]),
          system: "i686-linux",
          features: [],
          amWilling: true,
        },
        {
          name: "feature not in system-features, all busy, amWilling 1: postpone",
          machines: [
            {
              storeUri: join(b, "f5m1"),
              systemTypes: ["x86_64-linux"],
              maxJobs: 1,
              speedFactor: 1,
              supportedFeatures: ["cuda"],
              mandatoryFeatures: [],
            },
          ],
          load: new Map([[join(b, "f5m1"), 1]]),
          system: "x86_64-linux",
          features: ["cuda"],
          amWilling: true,
        },
        {
          // 2.23+: both rows render to local://<b>/f6m1 (`//` and the final `/` go) and share its slot locks;
          // 2.8 keeps them apart
          name: "two spellings of one store: the held slot counts for both on 2.30",
          machines: [
            {
              storeUri: join(b, "f6m1"),
              systemTypes: ["x86_64-linux"],
              maxJobs: 1,
              speedFactor: 2,
              supportedFeatures: [],
              mandatoryFeatures: [],
            },
            {
              storeUri: `${b}//f6m1/`,
              systemTypes: ["x86_64-linux"],
              maxJobs: 1,
              speedFactor: 1,
              supportedFeatures: [],
              mandatoryFeatures: [],
            },
          ],
          load: new Map([[join(b, "f6m1"), 1]]),
          system: "x86_64-linux",
          features: [],
          amWilling: false,
        },
        {
          // parameters are sorted by the 2.30 renderer: the lock on the sorted name is the one it honours
          name: "store with parameters, slot 0 held",
          machines: [
            {
              storeUri: `${join(b, "f7m1")}?b=1&a=2`,
              systemTypes: ["x86_64-linux"],
              maxJobs: 2,
              speedFactor: 1,
              supportedFeatures: [],
              mandatoryFeatures: [],
            },
            {
              storeUri: join(b, "f7m2"),
              systemTypes: ["x86_64-linux"],
              maxJobs: 2,
              speedFactor: 1,
              supportedFeatures: [],
              mandatoryFeatures: [],
            },
          ],
          load: new Map([[`${join(b, "f7m1")}?b=1&a=2`, 1]]),
          system: "x86_64-linux",
          features: [],
          amWilling: false,
        },
      ];
      return [...fixed, ...generate(b, 40, 0x5eed)];
    };

    let agreed = 0;
    const all = scenarios();
    for (const sc of all) {
      test(sc.name, async () => {
        const held = new Set<string>();
        for (const [uri, count] of sc.load) {
          for (let s = 0; s < count; s++)
            held.add(join(stateDir, "current-load", `${slotStem(uri, version)}-${s}`));
        }
        const holder = await holdLocks([...held]);
        try {
          // Our load reader must see exactly the held slots of each machine (shared ones included).
          const seen = readCurrentLoad(sc.machines, { stateDir, version });
          for (const m of seen.machines) {
            const want = m.slots.filter((x) => held.has(x.file)).length;
            assert.equal(m.busy, want, `load of ${m.storeUri}`);
          }

          const real = await runBuildRemote({
            builders: sc.machines.map(machineLine).join("\n"),
            system: sc.system,
            features: sc.features,
            amWilling: sc.amWilling,
            store,
            verbosity: 1,
            hook: n.buildRemote,
            extraSettings: {
              "build-users-group": "",
              system: LOCAL_SYSTEM,
              "extra-platforms": EXTRA_PLATFORMS.join(" "),
              "system-features": SYSTEM_FEATURES.join(" "),
            },
          });
          const ours = route({
            version,
            drv: {
              path: DEFAULT_DRV_PATH,
              system: sc.system,
              requiredFeatures: sc.features,
              preferLocalBuild: false,
            },
            machines: sc.machines,
            load: loadMap(seen),
            local: {
              system: LOCAL_SYSTEM,
              extraPlatforms: EXTRA_PLATFORMS,
              systemFeatures: SYSTEM_FEATURES,
              maxJobs: 1,
              experimentalFeatures: [],
            },
            amWilling: sc.amWilling,
          });
          const detail = `${sc.name}\n${sc.machines.map(machineLine).join("\n")}\nload ${JSON.stringify([...sc.load])} drv ${sc.system} ${JSON.stringify(sc.features)} amWilling ${sc.amWilling}\nhook stderr:\n${real.stderr}`;
          assert.equal(ours.hook.reply, real.reply, detail);
          if (real.reply === "accept") assert.equal(ours.decision.printedUri, real.acceptedUri, detail);
          // The "Failed to find a machine" text appears at verbosity 1 only at warn level; it must match ours.
          const listing = real.messages.find((x) => x.startsWith("Failed to find a machine"));
          if (ours.hook.noMachineMessage?.level === "warn") {
            assert.equal(listing, ours.hook.noMachineMessage.text, detail);
          } else {
            assert.equal(listing, undefined, detail);
          }
          agreed++;
          results.push(`${sc.name}: ${real.reply}${real.acceptedUri ? ` ${real.acceptedUri}` : ""}`);
        } finally {
          await release(holder);
        }
      });
    }
    test("scenario count", () => {
      assert.ok(all.length >= 30);
      assert.equal(agreed, all.length);
    });
  });
}

for (const n of REAL_NIXES) describeRoute(n);
