/**
 * Differential: `nix-builders route` against the builder real Nix 2.8 and real Nix 2.30 build on, with
 * the tool seeing that Nix as the installed one (its bin directory first on PATH).
 *
 * The local store is a chroot store (`<tmp>/local`); the "remote" machines are chroot stores too
 * (`<tmp>/m1` …), which Nix 2.8 builds on through the real build hook (spec Appendix A). For each
 * scenario the same configuration (NIX_CONFIG: system, extra-platforms, system-features, max-jobs,
 * builders) is given to `route --json` and to `nix-store --realise --log-format internal-json -v`,
 * and the machine route predicts must be the one in Nix's first "building '…' on '…'" activity
 * (type 105; machine "" = local). Load: a child holds flocks on the real current-load files of the
 * local store. Where Nix postpones, it prints "waiting for a machine to build" and never starts (we
 * stop it after a few seconds); where it declines, it fails with the error route predicts.
 *
 * 2.30 prints the machine as it renders it (`local://<tmp>/m1`), names the slot files after that, and
 * is built without seccomp (`filter-syscalls = false`).
 *
 * Needs root (builds in chroot stores) and Nix 2.8's nix-store / build-remote (2.30: /opt/nix-current).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Io } from "../../src/commands/io.js";
import { runRoute } from "../../src/commands/route.js";
import { slotFile } from "../../src/host/current-load.js";
import { REAL_NIXES, type RealNix } from "../support/nix-versions.js";
import { mulberry32 } from "../support/random.js";

const isRoot = process.getuid?.() === 0;
const skipFor = (n: RealNix): string | false =>
  (!isRoot && "needs root (real builds in chroot stores)") ||
  n.skipReason ||
  (!existsSync("/bin/busybox") && "needs /bin/busybox");

interface M {
  name: string;
  systems: string[];
  maxJobs: number;
  speed: number;
  features: string[];
  mandatory: string[];
  /** Busy slots (flocks held). */
  busy?: number;
}

interface Scenario {
  name: string;
  machines: M[];
  system: string;
  features: string[];
  preferLocal?: boolean;
  builtin?: boolean;
  maxJobs?: number;
}

const m = (
  name: string,
  systems: string,
  maxJobs: number,
  speed: number,
  f = "",
  mand = "",
  busy = 0,
): M => ({
  name,
  systems: systems.split(","),
  maxJobs,
  speed,
  features: f ? f.split(",") : [],
  mandatory: mand ? mand.split(",") : [],
  busy,
});

const FIXED: Scenario[] = [
  {
    name: "one machine, native",
    machines: [m("a", "x86_64-linux", 1, 1)],
    system: "x86_64-linux",
    features: [],
  },
  {
    name: "foreign system goes remote",
    machines: [m("a", "aarch64-linux", 1, 1)],
    system: "aarch64-linux",
    features: [],
  },
  {
    name: "feature only a machine has",
    machines: [m("a", "x86_64-linux", 1, 1), m("b", "x86_64-linux", 1, 1, "cuda")],
    system: "x86_64-linux",
    features: ["cuda"],
  },
  {
    name: "mandatory feature keeps plain drvs away",
    machines: [m("a", "x86_64-linux", 2, 4, "", "benchmark"), m("b", "x86_64-linux", 1, 1)],
    system: "x86_64-linux",
    features: [],
  },
  {
    name: "mandatory feature required",
    machines: [m("a", "x86_64-linux", 2, 1, "", "benchmark"), m("b", "x86_64-linux", 1, 1, "benchmark")],
    system: "x86_64-linux",
    features: ["benchmark"],
  },
  {
    name: "speed factor wins on a tie",
    machines: [m("a", "x86_64-linux", 2, 1), m("b", "x86_64-linux", 2, 3)],
    system: "x86_64-linux",
    features: [],
  },
  {
    name: "load: integer division 1/2 = 0 ties with an idle machine; speed decides",
    machines: [m("a", "x86_64-linux", 2, 1), m("b", "x86_64-linux", 3, 2, "", "", 1)],
    system: "x86_64-linux",
    features: [],
  },
  {
    name: "load: busy machine loses",
    machines: [m("a", "x86_64-linux", 2, 1, "", "", 1), m("b", "x86_64-linux", 2, 1)],
    system: "x86_64-linux",
    features: [],
  },
  {
    name: "all slots held, local can build: declined, builds locally",
    machines: [m("a", "x86_64-linux", 1, 1, "", "", 1)],
    system: "x86_64-linux",
    features: [],
  },
  {
    name: "all slots held, local cannot: postpone",
    machines: [m("a", "aarch64-linux", 1, 1, "", "", 1)],
    system: "aarch64-linux",
    features: [],
  },
  {
    name: "maxJobs 0 machine, local cannot: postpone forever",
    machines: [m("a", "aarch64-linux", 0, 1)],
    system: "aarch64-linux",
    features: [],
  },
  {
    name: "maxJobs 0 machine, local can: local",
    machines: [m("a", "x86_64-linux", 0, 1)],
    system: "x86_64-linux",
    features: [],
  },
  {
    name: "nothing fits, local cannot: the 2.8 local-fallback error",
    machines: [m("a", "aarch64-linux", 1, 1)],
    system: "x86_64-linux",
    features: ["cuda"],
  },
  {
    name: "preferLocalBuild builds locally",
    machines: [m("a", "x86_64-linux", 4, 8)],
    system: "x86_64-linux",
    features: [],
    preferLocal: true,
  },
  {
    name: "preferLocalBuild but local cannot: remote",
    machines: [m("a", "aarch64-linux", 1, 1)],
    system: "aarch64-linux",
    features: [],
    preferLocal: true,
  },
  {
    name: "max-jobs = 0: even preferLocalBuild goes to the hook",
    machines: [m("a", "x86_64-linux", 1, 1)],
    system: "x86_64-linux",
    features: [],
    preferLocal: true,
    maxJobs: 0,
  },
  {
    name: "max-jobs = 0, no machine fits: stall error",
    machines: [m("a", "aarch64-linux", 1, 1)],
    system: "x86_64-linux",
    features: [],
    maxJobs: 0,
  },
  {
    name: "builtin derivation goes to any machine",
    machines: [m("a", "aarch64-linux", 1, 1)],
    system: "builtin",
    features: [],
    builtin: true,
  },
  {
    name: "extra-platforms: i686 can build locally, machine preferred",
    machines: [m("a", "i686-linux", 1, 1)],
    system: "i686-linux",
    features: [],
  },
  {
    name: "local has kvm, machine does not: declined, local",
    machines: [m("a", "x86_64-linux", 1, 1)],
    system: "x86_64-linux",
    features: ["kvm"],
  },
];

function generate(count: number, seed: number): Scenario[] {
  const rnd = mulberry32(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const subset = (xs: readonly string[], p: number): string[] => xs.filter(() => rnd() < p);
  const SYSTEMS = ["x86_64-linux", "aarch64-linux", "i686-linux", "riscv64-linux"];
  const FEATURES = ["kvm", "big-parallel", "cuda"];
  const out: Scenario[] = [];
  for (let i = 0; i < count; i++) {
    const machines: M[] = [];
    const n = 1 + Math.floor(rnd() * 3);
    for (let j = 0; j < n; j++) {
      const systems = subset(SYSTEMS, 0.45);
      if (systems.length === 0) systems.push(pick(SYSTEMS));
      const maxJobs = rnd() < 0.1 ? 0 : 1 + Math.floor(rnd() * 3);
      machines.push({
        name: `r${j}`,
        systems,
        maxJobs,
        speed: 1 + Math.floor(rnd() * 3),
        features: subset(FEATURES, 0.4),
        mandatory: rnd() < 0.15 ? [pick(FEATURES)] : [],
        busy: Math.floor(rnd() * (maxJobs + 1)),
      });
    }
    const system = rnd() < 0.8 ? pick(pick(machines).systems) : pick(SYSTEMS);
    out.push({
      name: `random #${i}`,
      machines,
      system,
      features: subset(FEATURES, 0.25),
      preferLocal: rnd() < 0.15,
    });
  }
  return out;
}

const SCENARIOS = [...FIXED, ...generate(16, 2808)];

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

interface NixOutcome {
  /** The machine of the first build activity: a store URI, "" for local; null when none started. */
  machine: string | null;
  waiting: boolean;
  waitingText?: string;
  errors: string[];
  timedOut: boolean;
}

function realise(
  n: RealNix,
  store: string,
  drv: string,
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<NixOutcome> {
  return new Promise((resolve) => {
    const child = spawn(
      join(n.bin, "nix-store"),
      ["--store", store, "--realise", drv, "-v", "--log-format", "internal-json"],
      { env, stdio: ["ignore", "ignore", "pipe"] },
    );
    let buf = "";
    const out: NixOutcome = { machine: null, waiting: false, errors: [], timedOut: false };
    const timer = setTimeout(() => {
      out.timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.stderr!.on("data", (d: Buffer) => {
      buf += d.toString();
      let i = buf.indexOf("\n");
      while (i >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        i = buf.indexOf("\n");
        if (!line.startsWith("@nix ")) continue;
        const j = JSON.parse(line.slice(5)) as {
          action: string;
          type?: number;
          fields?: unknown[];
          msg?: string;
          text?: string;
          level?: number;
        };
        // 2.8 shows postponing as an activity (actBuildWaiting) whose text is the waiting line.
        if (
          j.action === "start" &&
          typeof j.text === "string" &&
          j.text.startsWith("waiting for a machine to build")
        ) {
          out.waiting = true;
          out.waitingText = j.text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
          setTimeout(() => child.kill("SIGKILL"), 1500);
        }
        if (j.action === "start" && j.type === 105 && out.machine === null && j.fields?.[0] === drv) {
          out.machine = String(j.fields[1]);
          child.kill("SIGKILL"); // the routing is decided; the build itself does not matter
        }
        if (j.action === "msg" && typeof j.msg === "string") {
          const msg = j.msg.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
          if (msg.includes("waiting for a machine to build")) {
            out.waiting = true;
            // Give the stall detector no chance to matter: postponing is the outcome.
            setTimeout(() => child.kill("SIGKILL"), 1500);
          }
          if (j.level === 0) out.errors.push(msg.replace(/^error: /, ""));
        }
      }
    });
    child.on("exit", () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

function describeBuilds(n: RealNix): void {
  describe(`route vs real Nix ${n.label} builds (chroot stores as machines)`, { skip: skipFor(n) }, () => {
    let dir = "";
    let local = "";
    let drvs: Record<string, string> = {};
    const summary: string[] = [];
    const savedPath = process.env["PATH"];
    const extraConf = n.label === "2.8" ? [] : ["filter-syscalls = false"];

    before(() => {
      // the tool finds this Nix as the installed one
      process.env["PATH"] = `${n.bin}:${savedPath}`;
      dir = mkdtempSync(join(tmpdir(), "nb-rdiff-"));
      local = join(dir, "local");
      mkdirSync(join(dir, "bb"));
      copyFileSync("/bin/busybox", join(dir, "bb", "busybox"));
      const env = {
        ...process.env,
        NIX_CONFIG: [
          "sandbox = false",
          "fsync-metadata = false",
          "substituters =",
          "build-users-group =",
          ...extraConf,
        ].join("\n"),
      };
      const bb = spawnSync(join(n.bin, "nix-store"), ["--store", local, "--add", join(dir, "bb")], {
        env,
        encoding: "utf8",
      }).stdout.trim();
      const attrs = SCENARIOS.map((s, i) => {
        const common = `name = "s${i}"; system = "${s.system}";${
          s.features.length
            ? ` requiredSystemFeatures = [ ${s.features.map((f) => `"${f}"`).join(" ")} ];`
            : ""
        }${s.preferLocal ? " preferLocalBuild = true;" : ""}`;
        if (s.builtin)
          return `s${i} = derivation { ${common} builder = "builtin:fetchurl"; url = "file:///dev/null"; outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; };`;
        return `s${i} = derivation { ${common} builder = "\${builtins.storePath "${bb}"}/busybox"; args = [ "sh" "-c" "echo ${i} > $out" ]; };`;
      });
      writeFileSync(join(dir, "s.nix"), `{ ${attrs.join("\n")} }`);
      const args = ["--store", local, join(dir, "s.nix")];
      for (let i = 0; i < SCENARIOS.length; i++) args.push("-A", `s${i}`);
      const r = spawnSync(join(n.bin, "nix-instantiate"), args, { env, encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      const paths = r.stdout.trim().split("\n");
      drvs = Object.fromEntries(paths.map((p, i) => [`s${i}`, p]));
      mkdirSync(join(local, "nix", "var", "nix", "current-load"), { recursive: true });
    });
    after(() => {
      process.env["PATH"] = savedPath;
      if (summary.length) process.stderr.write(`${n.label}:\n${summary.join("\n")}\n`);
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    SCENARIOS.forEach((s, i) => {
      test(`${s.name}`, async () => {
        const uri = (x: M) => join(dir, `s${i}-${x.name}`);
        const list = (xs: string[]) => (xs.length ? xs.join(",") : "-");
        const builders = s.machines
          .map((x) =>
            [uri(x), x.systems.join(","), "-", x.maxJobs, x.speed, list(x.features), list(x.mandatory)].join(
              " ",
            ),
          )
          .join("; ");
        const conf = [
          "sandbox = false",
          // No build users: the host need not have a nixbld group (a fresh machine has none).
          "build-users-group =",
          "fsync-metadata = false",
          "substituters =",
          ...extraConf,
          "system = x86_64-linux",
          "extra-platforms = i686-linux",
          "system-features = kvm",
          `max-jobs = ${s.maxJobs ?? 1}`,
          `builders = ${builders}`,
        ].join("\n");
        const env: NodeJS.ProcessEnv = { ...process.env, NIX_CONFIG: conf };
        delete env.NIX_STATE_DIR;
        const stateDir = join(local, "nix", "var", "nix");
        const held: string[] = [];
        for (const x of s.machines)
          for (let k = 0; k < (x.busy ?? 0); k++) held.push(slotFile(stateDir, uri(x), k, n.version!)!);
        const holder = await holdLocks(held);
        try {
          const drv = drvs[`s${i}`]!;
          let text = "";
          const io: Io = { out: (t) => (text += t), err: () => {}, env, isTTY: false };
          const code = await runRoute({ store: local, json: true }, drv, io);
          const predicted = JSON.parse(text) as {
            nixVersion: string;
            decision: { kind: string; storeUri?: string; printedUri?: string; message?: string };
            machines: { load: number }[];
          };
          // route sees the load we hold.
          assert.deepEqual(
            predicted.machines.map((x) => x.load),
            s.machines.map((x) => Math.min(x.busy ?? 0, x.maxJobs)),
          );
          assert.equal(
            predicted.nixVersion.split(".").slice(0, 2).join("."),
            n.label,
            "the tool sees this Nix",
          );
          const nix = await realise(n, local, drv, env, 15_000);
          const d = predicted.decision;
          summary.push(
            `${s.name}: route ${d.kind}${d.storeUri ? ` ${d.storeUri.replaceAll(`${dir}/`, "")}` : ""}; nix ${
              nix.machine !== null
                ? `built on '${nix.machine.replaceAll(`${dir}/`, "")}'`
                : nix.waiting
                  ? "waiting"
                  : `error`
            }`,
          );
          if (d.kind === "remote") {
            assert.equal(code, 0);
            assert.equal(nix.machine, d.printedUri);
          } else if (d.kind === "local") {
            assert.equal(code, 0);
            assert.equal(nix.machine, "");
          } else if (d.kind === "postpone") {
            assert.equal(code, 1);
            assert.equal(nix.machine, null);
            assert.equal(nix.waiting, true);
            assert.equal(d.message, `waiting for a machine to build '${drv}'`);
            assert.equal(nix.waitingText, d.message);
          } else {
            assert.equal(code, 2);
            assert.equal(nix.machine, null);
            assert.equal(nix.waiting, false);
            const first = (d.message ?? "").split("\n")[0]!;
            assert.ok(
              nix.errors.some((e) => e.includes(first)),
              `expected Nix's error to include ${JSON.stringify(first)}; got ${JSON.stringify(nix.errors)}`,
            );
          }
        } finally {
          holder?.kill("SIGKILL");
        }
      });
    });
  });
}

for (const n of REAL_NIXES) describeBuilds(n);
