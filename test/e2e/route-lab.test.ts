/**
 * Differential on the lab: `nix-builders route` against the builder real Nix 2.8 builds on, with the
 * lab's builders reached over real ssh (`ssh://` and `ssh-ng://`), from the agent machine as root.
 *
 * Per scenario the machines are lab builders whose machines lines are rewritten (systems column,
 * maxJobs, speed factor, supported and mandatory features). A nonce derivation (system, features,
 * preferLocalBuild, or `builtin:fetchurl`) is instantiated in the agent machine's store, then
 *   1. `node src/cli.ts route --json --builders SPEC DRV` runs on the agent machine (NIX_CONFIG gives
 *      `max-jobs`), while a child on the agent machine holds flocks on the real current-load files
 *      (`/nix/var/nix/current-load/<uri with / → _>-<slot>`) for the "busy" slots;
 *   2. `nix-store --realise DRV --builders SPEC -v --log-format internal-json` runs there with the same
 *      NIX_CONFIG, the locks still held, and the first build activity (type 105, `building '…' on '…'`)
 *      gives the machine Nix chose ("" = local).
 * remote → Nix's machine is `decision.storeUri`; local → Nix built it locally; postpone → Nix prints
 * `waiting for a machine to build '…'` (we stop it: it would wait forever); none → Nix builds nowhere and
 * fails with the error route predicts.
 *
 * Root on the agent machine uses the local store (no daemon), so route reads root's settings and Nix's
 * own state dir /nix/var/nix. Only the routing is compared: a build sent to a machine that lies about
 * its systems or features may then fail remotely; that is not what this test checks.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { slotFile } from "../../src/host/current-load.js";
import { CLI_NODE_ARGS } from "../support/cli.js";
import { mulberry32 } from "../support/random.js";
import { ensureLab, type LabBuilder, type LabStatus, labExec, labSkipReason, REPO } from "./support/lab.js";

const skip = labSkipReason();
const STATE_DIR = "/nix/var/nix";
const BUILDERS = 3;

interface M {
  /** Index of the lab builder (0-based). */
  b: number;
  ng?: boolean;
  systems: string[];
  maxJobs: number;
  speed: number;
  features: string[];
  mandatory: string[];
  /** Busy slots (flocks held by a child on the agent machine). */
  busy?: number;
}

interface Scenario {
  name: string;
  machines: M[];
  system: string;
  features: string[];
  preferLocal?: boolean;
  builtin?: boolean;
  /** max-jobs of the building process (default 1). */
  maxJobs?: number;
}

const X86 = "x86_64-linux";
const ARM = "aarch64-linux";
const RV = "riscv64-linux";

const m = (
  b: number,
  systems: string,
  maxJobs: number,
  speed: number,
  f = "",
  mand = "",
  busy = 0,
  ng = false,
): M => ({
  b,
  ng,
  systems: systems.split(","),
  maxJobs,
  speed,
  features: f ? f.split(",") : [],
  mandatory: mand ? mand.split(",") : [],
  busy,
});

const FIXED: Scenario[] = [
  { name: "one machine, foreign system goes remote", machines: [m(0, ARM, 1, 1)], system: ARM, features: [] },
  {
    name: "one ssh-ng machine",
    machines: [m(0, ARM, 1, 1, "", "", 0, true)],
    system: ARM,
    features: [],
  },
  {
    name: "native system still goes to the hook first",
    machines: [m(0, X86, 1, 1)],
    system: X86,
    features: [],
  },
  {
    name: "system only the second machine lists",
    machines: [m(0, X86, 2, 4), m(1, ARM, 1, 1)],
    system: ARM,
    features: [],
  },
  {
    name: "feature only one machine has",
    machines: [m(0, ARM, 2, 2), m(1, ARM, 1, 1, "nixos-test")],
    system: ARM,
    features: ["nixos-test"],
  },
  {
    name: "mandatory feature keeps plain drvs away",
    machines: [m(0, ARM, 2, 4, "", "benchmark"), m(1, ARM, 1, 1)],
    system: ARM,
    features: [],
  },
  {
    name: "mandatory feature required: the mandatory machine qualifies",
    machines: [m(0, ARM, 1, 1), m(1, ARM, 2, 2, "", "benchmark"), m(2, ARM, 1, 1, "benchmark")],
    system: ARM,
    features: ["benchmark"],
  },
  {
    name: "speed factor wins on a tie",
    machines: [m(0, ARM, 2, 1), m(1, ARM, 2, 3), m(2, ARM, 2, 2)],
    system: ARM,
    features: [],
  },
  {
    name: "equal machines: the first stays",
    machines: [m(0, ARM, 2, 2), m(1, ARM, 2, 2, "", "", 0, true), m(2, ARM, 2, 2)],
    system: ARM,
    features: [],
  },
  {
    name: "ssh-ng machine is faster",
    machines: [m(0, ARM, 1, 1), m(1, ARM, 1, 5, "", "", 0, true)],
    system: ARM,
    features: [],
  },
  {
    name: "load: integer division 1/2 = 0 ties with an idle machine; speed decides",
    machines: [m(0, ARM, 2, 1), m(1, ARM, 3, 2, "", "", 1)],
    system: ARM,
    features: [],
  },
  {
    name: "load: busy machine loses",
    machines: [m(0, ARM, 2, 1, "", "", 1), m(1, ARM, 2, 1)],
    system: ARM,
    features: [],
  },
  {
    name: "load: a held ssh-ng slot counts too",
    machines: [m(0, ARM, 1, 3, "", "", 1, true), m(1, ARM, 1, 1)],
    system: ARM,
    features: [],
  },
  {
    name: "load: the faster machine's free slot",
    machines: [m(0, ARM, 3, 1, "", "", 1), m(1, ARM, 3, 4, "", "", 2), m(2, ARM, 1, 1, "", "", 1)],
    system: ARM,
    features: [],
  },
  {
    name: "all slots held, local can build: declined, builds locally",
    machines: [m(0, X86, 1, 1, "", "", 1)],
    system: X86,
    features: [],
  },
  {
    name: "all slots held, local cannot: postpone",
    machines: [m(0, ARM, 1, 1, "", "", 1), m(1, ARM, 2, 1, "", "", 2)],
    system: ARM,
    features: [],
  },
  {
    name: "maxJobs 0 machine, local cannot: postpone",
    machines: [m(0, ARM, 0, 1)],
    system: ARM,
    features: [],
  },
  {
    name: "maxJobs 0 machine, local can: local",
    machines: [m(0, X86, 0, 1)],
    system: X86,
    features: [],
  },
  {
    name: "maxJobs 0 machine is skipped for a later one",
    machines: [m(0, ARM, 0, 9), m(1, ARM, 1, 1)],
    system: ARM,
    features: [],
  },
  {
    name: "nothing fits, local cannot: the 2.8 local-fallback error",
    machines: [m(0, ARM, 1, 1)],
    system: X86,
    features: ["cuda"],
  },
  {
    name: "system nobody has: the local-fallback error",
    machines: [m(0, ARM, 1, 1), m(1, X86, 1, 1)],
    system: RV,
    features: [],
  },
  {
    name: "preferLocalBuild builds locally",
    machines: [m(0, X86, 4, 8)],
    system: X86,
    features: [],
    preferLocal: true,
  },
  {
    name: "preferLocalBuild but local cannot: remote",
    machines: [m(0, ARM, 1, 1)],
    system: ARM,
    features: [],
    preferLocal: true,
  },
  {
    name: "max-jobs = 0: even preferLocalBuild goes to the hook",
    machines: [m(0, X86, 1, 1)],
    system: X86,
    features: [],
    preferLocal: true,
    maxJobs: 0,
  },
  {
    name: "max-jobs = 0, foreign system: remote",
    machines: [m(0, X86, 1, 1), m(1, ARM, 1, 1, "", "", 0, true)],
    system: ARM,
    features: [],
    maxJobs: 0,
  },
  {
    name: "max-jobs = 0, no machine fits: stall error",
    machines: [m(0, ARM, 1, 1)],
    system: X86,
    features: [],
    maxJobs: 0,
  },
  {
    name: "max-jobs = 0, slots all held: postpone",
    machines: [m(0, X86, 1, 1, "", "", 1)],
    system: X86,
    features: [],
    maxJobs: 0,
  },
  {
    name: "builtin derivation goes to any machine",
    machines: [m(0, RV, 1, 1)],
    system: "builtin",
    features: [],
    builtin: true,
  },
  {
    name: "builtin with max-jobs = 0 goes remote too",
    machines: [m(0, ARM, 1, 1), m(1, X86, 1, 2, "", "", 0, true)],
    system: "builtin",
    features: [],
    builtin: true,
    maxJobs: 0,
  },
  {
    name: "local has kvm, machine does not: declined, local",
    machines: [m(0, X86, 1, 1)],
    system: X86,
    features: ["kvm"],
  },
];

function generate(count: number, seed: number): Scenario[] {
  const rnd = mulberry32(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const subset = (xs: readonly string[], p: number): string[] => xs.filter(() => rnd() < p);
  const SYSTEMS = [X86, ARM, RV];
  const FEATURES = ["kvm", "big-parallel", "cuda"];
  const out: Scenario[] = [];
  for (let i = 0; i < count; i++) {
    const machines: M[] = [];
    const n = 1 + Math.floor(rnd() * BUILDERS);
    for (let j = 0; j < n; j++) {
      const systems = subset(SYSTEMS, 0.45);
      if (systems.length === 0) systems.push(pick(SYSTEMS));
      const maxJobs = rnd() < 0.1 ? 0 : 1 + Math.floor(rnd() * 3);
      machines.push({
        b: j,
        ng: rnd() < 0.3,
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
      maxJobs: rnd() < 0.1 ? 0 : 1,
    });
  }
  return out;
}

const SCENARIOS = [...FIXED, ...generate(14, 2808)];

/** The machines line of builder `b` with the scenario's columns (URI, key and host key are the lab's). */
function machinesLine(b: LabBuilder, x: M): string {
  const cols = (x.ng ? b.machinesLineNg : b.machinesLine).split(/\s+/);
  const list = (xs: string[]) => (xs.length ? xs.join(",") : "-");
  return [
    cols[0],
    x.systems.join(","),
    cols[2],
    x.maxJobs,
    x.speed,
    list(x.features),
    list(x.mandatory),
    cols[7],
  ].join(" ");
}

/** Resolves once no process of the group `pgid` is left (so every lock they held is released). */
async function groupGone(pgid: number): Promise<void> {
  for (;;) {
    try {
      process.kill(-pgid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Kill the lock holder and wait until it is gone. */
async function release(holder: ChildProcess | null): Promise<void> {
  if (!holder) return;
  const gone = new Promise<void>((r) => {
    if (holder.exitCode !== null || holder.signalCode !== null) r();
    else holder.once("exit", () => r());
  });
  holder.kill("SIGKILL");
  await gone;
}

/** Hold exclusive flocks on `files` from a child on the agent machine; resolves once they are all held. */
function holdLocks(s: LabStatus, files: string[]): Promise<ChildProcess | null> {
  if (files.length === 0) return Promise.resolve(null);
  const script =
    'mkdir -p "$(dirname "$1")"; for f in "$@"; do exec {fd}>"$f" || exit 2; flock -x -n "$fd" || exit 3; done; echo ready; exec sleep 600';
  // nsenter execs bash, which execs sleep: the child's pid is the holder's.
  const child = spawn(
    s.agent.exec[0]!,
    [...s.agent.exec.slice(1), "bash", "-c", script, "holder", ...files],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
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
  exit: number | null;
  timedOut: boolean;
}

const stripAnsi = (t: string) => t.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");

/**
 * `nix-store --realise DRV` on the agent machine as root. Runs in its own process group (nsenter execs
 * nix-store), so stopping it also stops the build hook and its ssh, which would otherwise keep a slot.
 */
function realise(
  s: LabStatus,
  drv: string,
  spec: string,
  maxJobs: number,
  timeoutMs: number,
): Promise<NixOutcome> {
  return new Promise((resolve) => {
    const argv = [
      ...s.agent.exec,
      "env",
      `NIX_CONFIG=max-jobs = ${maxJobs}`,
      "nix-store",
      "--realise",
      drv,
      "--builders",
      spec,
      "-v",
      "--log-format",
      "internal-json",
    ];
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "ignore", "pipe"], detached: true });
    const out: NixOutcome = { machine: null, waiting: false, errors: [], exit: null, timedOut: false };
    const stop = () => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => {
      out.timedOut = true;
      stop();
    }, timeoutMs);
    let buf = "";
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
        const waitingText =
          j.action === "start" && typeof j.text === "string"
            ? stripAnsi(j.text)
            : j.action === "msg" && typeof j.msg === "string"
              ? stripAnsi(j.msg)
              : "";
        if (waitingText.startsWith("waiting for a machine to build") && !out.waiting) {
          out.waiting = true;
          out.waitingText = waitingText;
          // Postponing is the outcome; Nix would retry for ever.
          setTimeout(stop, 1500);
        }
        if (j.action === "start" && j.type === 105 && out.machine === null && j.fields?.[0] === drv) {
          // The routing is decided; the build itself does not matter (and some machines lie).
          out.machine = String(j.fields[1]);
          stop();
        }
        if (j.action === "msg" && typeof j.msg === "string" && j.level === 0) {
          out.errors.push(stripAnsi(j.msg).replace(/^error: /, ""));
        }
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      out.exit = code;
      // The hook (same process group) may outlive nix-store for a moment, holding its slot.
      stop();
      void groupGone(child.pid!).then(() => resolve(out));
    });
  });
}

interface Predicted {
  decision: { kind: string; storeUri?: string; message?: string };
  machines: { storeUri: string; load: number }[];
  local: { capable: boolean };
  isBuiltin: boolean;
  preferLocalBuild: boolean;
  requiredFeatures: string[];
  system: string;
}

describe("lab: route vs real Nix 2.8 builds over ssh", { skip }, () => {
  let s: LabStatus;
  let dir = "";
  let drvs: string[] = [];
  const summary: string[] = [];
  const tally: Record<string, number> = {};

  before(() => {
    s = ensureLab({ builders: BUILDERS });
    dir = mkdtempSync(join(tmpdir(), "nb-route-lab-"));
    const nonce = randomBytes(6).toString("hex");
    const bb = `\${builtins.storePath ${JSON.stringify(s.busybox)}}/busybox`;
    const attrs = SCENARIOS.map((sc, i) => {
      const common = `name = "route-lab-${nonce}-s${i}"; system = "${sc.system}";${
        sc.features.length
          ? ` requiredSystemFeatures = [ ${sc.features.map((f) => `"${f}"`).join(" ")} ];`
          : ""
      }${sc.preferLocal ? " preferLocalBuild = true;" : ""}`;
      if (sc.builtin)
        return `s${i} = derivation { ${common} builder = "builtin:fetchurl"; url = "file:///dev/null"; outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; };`;
      return `s${i} = derivation { ${common} builder = "${bb}"; args = [ "sh" "-c" "echo ${nonce}-${i} > $out" ]; };`;
    });
    writeFileSync(join(dir, "s.nix"), `{ ${attrs.join("\n")} }`);
    const args = ["nix-instantiate", join(dir, "s.nix")];
    for (let i = 0; i < SCENARIOS.length; i++) args.push("-A", `s${i}`);
    const r = labExec(args, { timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.stderr);
    drvs = r.stdout.trim().split("\n");
    assert.equal(drvs.length, SCENARIOS.length);
    assert.equal(labExec(["mkdir", "-p", `${STATE_DIR}/current-load`]).code, 0);
  });

  after(() => {
    if (summary.length) process.stderr.write(`${summary.join("\n")}\n`);
    if (Object.keys(tally).length) process.stderr.write(`route-lab outcomes: ${JSON.stringify(tally)}\n`);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("at least 30 scenarios, covering every kind of input", () => {
    assert.ok(SCENARIOS.length >= 30, `${SCENARIOS.length} scenarios`);
    assert.ok(SCENARIOS.some((x) => x.maxJobs === 0));
    assert.ok(SCENARIOS.some((x) => x.preferLocal));
    assert.ok(SCENARIOS.some((x) => x.builtin));
    assert.ok(SCENARIOS.some((x) => x.machines.some((y) => (y.busy ?? 0) > 0)));
    assert.ok(SCENARIOS.some((x) => x.machines.some((y) => y.mandatory.length > 0)));
    assert.ok(SCENARIOS.some((x) => x.machines.some((y) => y.ng)));
  });

  SCENARIOS.forEach((sc, i) => {
    test(sc.name, async () => {
      const lines = sc.machines.map((x) => machinesLine(s.builders[x.b]!, x));
      const uris = lines.map((l) => l.split(" ")[0]!);
      const spec = lines.join(" ; ");
      const maxJobs = sc.maxJobs ?? 1;
      const held: string[] = [];
      sc.machines.forEach((x, k) => {
        for (let slot = 0; slot < (x.busy ?? 0); slot++) held.push(slotFile(STATE_DIR, uris[k]!, slot));
      });
      const holder = await holdLocks(s, held);
      try {
        const drv = drvs[i]!;
        const r = labExec(
          [
            "env",
            `NIX_CONFIG=max-jobs = ${maxJobs}`,
            process.execPath,
            ...CLI_NODE_ARGS,
            "route",
            "--json",
            "--builders",
            spec,
            drv,
          ],
          { cwd: REPO, timeoutMs: 60_000 },
        );
        assert.ok(r.stdout.startsWith("{"), `route printed no JSON (exit ${r.code}): ${r.stderr}`);
        const p = JSON.parse(r.stdout) as Predicted;
        // route read the derivation and saw the load we hold.
        assert.equal(p.system, sc.system);
        assert.deepEqual(p.requiredFeatures, [...sc.features].sort());
        assert.equal(p.preferLocalBuild, sc.preferLocal === true);
        assert.equal(p.isBuiltin, sc.builtin === true);
        assert.deepEqual(
          p.machines.map((x) => [x.storeUri, x.load]),
          sc.machines.map((x, k) => [uris[k], Math.min(x.busy ?? 0, x.maxJobs)]),
        );
        const nix = await realise(s, drv, spec, maxJobs, 90_000);
        const d = p.decision;
        const short = (u: string | null | undefined) =>
          u === "" ? "local" : u ? (u.startsWith("ssh-ng") ? "ng:" : "") + u.replace(/^.*@/, "") : String(u);
        summary.push(
          `route-lab ${sc.name}: route ${d.kind}${d.storeUri ? ` ${short(d.storeUri)}` : ""}; nix ${
            nix.machine !== null ? `built on ${short(nix.machine)}` : nix.waiting ? "waiting" : "error"
          }`,
        );
        tally[d.kind] = (tally[d.kind] ?? 0) + 1;
        assert.equal(nix.timedOut, false, "nix-store neither routed nor finished in time");
        if (d.kind === "remote") {
          assert.equal(r.code, 0);
          assert.equal(nix.machine, d.storeUri);
        } else if (d.kind === "local") {
          assert.equal(r.code, 0);
          assert.equal(nix.machine, "");
        } else if (d.kind === "postpone") {
          assert.equal(r.code, 1);
          assert.equal(nix.machine, null);
          assert.equal(nix.waiting, true);
          assert.equal(d.message, `waiting for a machine to build '${drv}'`);
          assert.equal(nix.waitingText, d.message);
        } else {
          assert.equal(r.code, 2);
          assert.equal(nix.machine, null);
          assert.equal(nix.waiting, false);
          assert.notEqual(nix.exit, 0);
          const first = (d.message ?? "").split("\n")[0]!;
          assert.ok(first.length > 0);
          assert.ok(
            nix.errors.some((e) => e.includes(first)),
            `expected Nix's error to include ${JSON.stringify(first)}; got ${JSON.stringify(nix.errors)}`,
          );
        }
      } finally {
        await release(holder);
      }
    });
  });
});
