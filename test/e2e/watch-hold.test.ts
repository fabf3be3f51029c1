/**
 * What watch's "hold" (a machines line with maxJobs 0) does to real Nix 2.8 and 2.30 builds, the rule the
 * hold relies on. The local store is a chroot store and the "builders" are chroot stores too (paths as
 * store URIs), so the real build hook runs with no network: a machine it connects to gets its store
 * directory created, a machine it never touches does not. Local `max-jobs = 0`, so every build must go
 * through the hook.
 *
 * Found (both versions):
 *  - the only machine held: the build postpones ("waiting for a machine to build"), it does not fail and
 *    Nix never opens the held machine;
 *  - a held machine next to a listed one: the build goes to the listed one at once;
 *  - no machine at all (what `remove` leads to): the build fails at once;
 *  - a build already waiting does NOT see the line come back: the hook reads the machines file once and is
 *    kept while it postpones, so it waits until its client ends; a build started after the un-hold builds.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { REAL_NIXES, type RealNix } from "../support/nix-versions.js";

const isRoot = process.getuid?.() === 0;
const skipFor = (n: RealNix): string | false =>
  (!isRoot && "needs root (real builds in chroot stores)") ||
  n.skipReason ||
  (!existsSync("/bin/busybox") && "needs /bin/busybox");

interface Outcome {
  /** The machine of the first build activity (type 105): a store URI, "" for local, null when none. */
  machine: string | null;
  waiting: number;
  errors: string[];
  exit: number | null;
  timedOut: boolean;
}

const strip = (t: string) => t.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");

/** nix-store --realise with internal-json; `until` decides when to stop looking (then SIGKILL). */
function realise(
  n: RealNix,
  store: string,
  drv: string,
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
  onWaiting?: (o: Outcome, child: ChildProcess) => void,
): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = spawn(
      join(n.bin, "nix-store"),
      ["--store", store, "--realise", drv, "-v", "--log-format", "internal-json"],
      { env, stdio: ["ignore", "ignore", "pipe"], detached: true },
    );
    const kill = () => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // gone
      }
    };
    const out: Outcome = { machine: null, waiting: 0, errors: [], exit: null, timedOut: false };
    const timer = setTimeout(() => {
      out.timedOut = true;
      kill();
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
        const text = strip(
          j.action === "start" && typeof j.text === "string"
            ? j.text
            : j.action === "msg" && typeof j.msg === "string"
              ? j.msg
              : "",
        );
        if (text.startsWith("waiting for a machine to build")) {
          out.waiting++;
          onWaiting?.(out, child);
        }
        if (j.action === "start" && j.type === 105 && out.machine === null && j.fields?.[0] === drv) {
          out.machine = String(j.fields[1]);
          kill(); // routed: the build itself does not matter
        }
        if (j.action === "msg" && j.level === 0 && typeof j.msg === "string") out.errors.push(strip(j.msg));
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      out.exit = code;
      kill();
      resolve(out);
    });
  });
}

// The Nix versions run side by side (their stores and machines files are separate): most of each is
// waiting on Nix's 5 s postpone polls, so this halves the file's time. Each version's tests stay in order.
describe("hold = maxJobs 0 on real Nix", { concurrency: REAL_NIXES.length }, () => {
  for (const n of REAL_NIXES) {
    describe(`hold = maxJobs 0 on real Nix ${n.label}`, { skip: skipFor(n), concurrency: 1 }, () => {
      let dir = "";
      let local = "";
      let env: NodeJS.ProcessEnv = {};
      const drvs: string[] = [];
      const extra = n.label === "2.8" ? [] : ["filter-syscalls = false"];
      const machinesFile = () => join(dir, "machines");
      const line = (m: string, jobs: number) => `${join(dir, m)} x86_64-linux - ${jobs} 1`;

      before(() => {
        dir = mkdtempSync(join(tmpdir(), "nb-hold-"));
        local = join(dir, "local");
        mkdirSync(join(dir, "bb"));
        copyFileSync("/bin/busybox", join(dir, "bb", "busybox"));
        env = {
          ...process.env,
          NIX_CONFIG: [
            "sandbox = false",
            "build-users-group =",
            "fsync-metadata = false",
            "substituters =",
            ...extra,
            "system = x86_64-linux",
            "max-jobs = 0",
            `builders = @${machinesFile()}`,
          ].join("\n"),
        };
        delete env["NIX_STATE_DIR"];
        const bb = spawnSync(join(n.bin, "nix-store"), ["--store", local, "--add", join(dir, "bb")], {
          env,
          encoding: "utf8",
        }).stdout.trim();
        const attrs = [0, 1, 2, 3, 4].map(
          (i) =>
            `d${i} = derivation { name = "hold${i}"; system = "x86_64-linux"; builder = "\${builtins.storePath "${bb}"}/busybox"; args = [ "sh" "-c" "echo ${i} > $out" ]; };`,
        );
        writeFileSync(join(dir, "d.nix"), `{ ${attrs.join("\n")} }`);
        const r = spawnSync(
          join(n.bin, "nix-instantiate"),
          ["--store", local, join(dir, "d.nix"), ...[0, 1, 2, 3, 4].flatMap((i) => ["-A", `d${i}`])],
          { env, encoding: "utf8" },
        );
        assert.equal(r.status, 0, r.stderr);
        drvs.push(...r.stdout.trim().split("\n"));
      });
      after(() => {
        if (dir) rmSync(dir, { recursive: true, force: true });
      });

      test("the only machine held: the build postpones and Nix never opens that machine", async () => {
        writeFileSync(machinesFile(), `${line("held0", 0)}\n`);
        let killed = false;
        const o = await realise(n, local, drvs[0]!, env, 30_000, (x, c) => {
          // 2.8 repeats the waiting line every 5 s, 2.30 shows it once (an activity): look 7 s more.
          if (x.waiting === 1)
            setTimeout(() => {
              killed = true;
              process.kill(-c.pid!, "SIGKILL");
            }, 7000);
        });
        assert.ok(o.waiting >= 1, `waiting lines: ${o.waiting}; errors: ${o.errors.join(" | ")}`);
        assert.ok(killed, "still waiting 7 s later (we stopped it)");
        assert.equal(o.machine, null);
        assert.deepEqual(o.errors, []);
        assert.equal(existsSync(join(dir, "held0")), false, "the held machine's store was never opened");
      });

      test("a held machine next to a listed one: the build goes to the listed one", async () => {
        writeFileSync(machinesFile(), `${line("held1", 0)}\n${line("up1", 1)}\n`);
        const o = await realise(n, local, drvs[1]!, env, 60_000);
        assert.equal(o.machine?.replace(/^local:\/\//, ""), join(dir, "up1"));
        assert.equal(existsSync(join(dir, "held1")), false);
      });

      test("no machine (what remove leads to when it was the only one): the build fails at once", async () => {
        writeFileSync(machinesFile(), "");
        const o = await realise(n, local, drvs[2]!, env, 60_000);
        assert.equal(o.waiting, 0);
        assert.equal(o.machine, null);
        assert.notEqual(o.exit, 0);
        assert.ok(o.errors.length > 0);
      });

      test("a build already waiting keeps waiting after the un-hold; a new one builds", async () => {
        writeFileSync(machinesFile(), `${line("back", 0)}\n`);
        let unheldAt = 0;
        const o = await realise(n, local, drvs[3]!, env, 60_000, (x, c) => {
          if (x.waiting === 1) {
            writeFileSync(machinesFile(), `${line("back", 1)}\n`);
            unheldAt = Date.now();
            // Nix polls every 5 s: three polls after the un-hold show it does not re-read the file.
            setTimeout(() => process.kill(-c.pid!, "SIGKILL"), 16_000);
          }
        });
        assert.ok(unheldAt > 0);
        assert.deepEqual(o.errors, []);
        assert.equal(o.machine, null, "the waiting build never used the machine that came back");
        const again = await realise(n, local, drvs[4]!, env, 60_000);
        assert.equal(again.machine?.replace(/^local:\/\//, ""), join(dir, "back"));
      });
    });
  }
});
