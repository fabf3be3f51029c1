// `lab up` / `lab down` cycles, also after `kill -9` of `lab up`, leave nothing behind:
// no namespaces, mounts, processes, users, files or keys. This file takes the lab down and leaves it
// down; the next file's ensureLab() brings it up again.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import { describe, it } from "node:test";
import { lab, labSkipReason, labStatus, rawSsh } from "./support/lab.js";

const skip = labSkipReason();
const STATE = "/run/nix-builders-lab";

function sh(cmd: string): string {
  return spawnSync("sh", ["-c", cmd], { encoding: "utf8" }).stdout ?? "";
}
function hash(file: string): string {
  try {
    return createHash("sha256").update(fs.readFileSync(file)).digest("hex");
  } catch {
    return "absent";
  }
}
function ls(dir: string): string {
  try {
    return fs.readdirSync(dir).sort().join(" ");
  } catch {
    return "absent";
  }
}

/** What the lab could leave behind on the host. */
function snapshot() {
  return {
    netns: sh("ip netns list"),
    links: sh("ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort"),
    mounts: sh("awk '{print $5, $9}' /proc/self/mountinfo | sort"),
    labMounts: sh(`grep -c '${STATE}' /proc/self/mountinfo || true`).trim(),
    // processes the lab started (they carry a marker in their environment)
    markedProcs: sh("grep -lzx NIX_BUILDERS_LAB_PROC=1 /proc/[0-9]*/environ 2>/dev/null | wc -l").trim(),
    // the lab's users live only in its machines' copy-on-write /etc, never in the host's
    labUsersInHostFiles: sh(
      "grep -lE '^(hercules-ci-agent|nix-builder):' /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/subuid /etc/subgid",
    ),
    users: sh("getent passwd hercules-ci-agent nix-builder; getent group hercules-ci-agent"),
    stateDir: fs.existsSync(STATE),
    run: ls("/run"),
    rootSsh: ls("/root/.ssh"),
    rootHome: ls("/root"),
    etcSsh: ls("/etc/ssh"),
    etcNix: ls("/etc/nix"),
    nixConf: hash("/etc/nix/nix.conf"),
    sshdConfig: hash("/etc/ssh/sshd_config"),
    etcSystemd: ls("/etc/systemd/system"),
    varLib: ls("/var/lib"),
    home: ls("/home"),
    nixTop: ls("/nix"),
    nixVarNix: ls("/nix/var/nix"),
    etc: ls("/etc"),
  };
}

/** The lab's namespaces right now, as /proc/PID/ns/* links name them. */
function labNamespaces(): string[] {
  return sh(
    `for f in /run/netns/nbl-*; do [ -e "$f" ] && echo "net:[$(stat -L -c %i "$f")]"; done
     for f in ${STATE}/ns/*.mnt; do [ -e "$f" ] && i=$(stat -L -c %i "$f") &&
       [ "$i" != "$(stat -c %i ${STATE}/ns)" ] && echo "mnt:[$i]"; done`,
  )
    .split("\n")
    .filter(Boolean);
}

function processesIn(namespaces: string[]): string[] {
  if (namespaces.length === 0) return [];
  const want = new Set(namespaces);
  const out: string[] = [];
  for (const pid of fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    for (const kind of ["mnt", "net"]) {
      try {
        if (
          fs
            .readFileSync(`/proc/${pid}/stat`, "utf8")
            .replace(/^.*\) /, "")
            .startsWith("Z")
        )
          continue;
        if (want.has(fs.readlinkSync(`/proc/${pid}/ns/${kind}`))) {
          out.push(`${pid} ${startTime(pid)} ${fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim()}`);
          break;
        }
      } catch {}
    }
  }
  return out;
}

function startTime(pid: string): string {
  return fs
    .readFileSync(`/proc/${pid}/stat`, "utf8")
    .replace(/^.*\) /, "")
    .split(" ")[19]!;
}

/**
 * The lab's processes (taken before `down`) that still run. Namespace inode numbers are reused
 * once a namespace is gone, so processes are matched by PID and start time, not by namespace.
 */
function survivors(procs: string[]): string[] {
  return procs.filter((p) => {
    const [pid, start] = p.split(" ");
    try {
      return startTime(pid!) === start && !fs.readFileSync(`/proc/${pid}/stat`, "utf8").includes(") Z ");
    } catch {
      return false;
    }
  });
}

function assertClean(before: ReturnType<typeof snapshot>, label: string, procs: string[]) {
  const now = snapshot();
  assert.deepEqual(survivors(procs), [], `${label}: the lab's processes are left`);
  assert.equal(now.stateDir, false, `${label}: ${STATE} is left`);
  assert.equal(now.labMounts, "0", `${label}: lab mounts are left`);
  assert.equal(now.markedProcs, "0", `${label}: lab processes are left`);
  assert.equal(now.users, "", `${label}: lab users exist on the host`);
  assert.doesNotMatch(now.netns, /^nbl-/m, `${label}: network namespaces are left`);
  assert.doesNotMatch(now.links, /^nbl-/m, `${label}: links are left`);
  assert.deepEqual(now, before, `${label}: the host differs from before the lab`);
}

describe("lab lifecycle", { skip }, () => {
  it("down is idempotent, and up/down cycles leave nothing behind", { timeout: 300_000 }, () => {
    lab(["down"]);
    lab(["down"]); // twice in a row: nothing to do
    const before = snapshot();
    assert.equal(before.stateDir, false);
    for (const cycle of [1, 2]) {
      const t0 = Date.now();
      lab(["up", "--builders", "4", "--fault", "b3=down", "--fault", "b4=nologin"]);
      const s = labStatus();
      assert.ok(s, "status after up");
      assert.equal(s.builders.length, 4);
      assert.deepEqual(
        s.builders.map((b) => b.faults),
        [[], [], ["down"], ["nologin"]],
      );
      for (const b of s.builders.slice(0, 2)) assert.equal(rawSsh(b, "true").code, 0);
      assert.match(rawSsh(s.builders[2]!, "true").stderr, /Connection refused/);
      // Something running on the agent machine is swept by down too.
      spawnSync("setsid", ["-f", ...s.agent.exec, "sleep", "600"], { stdio: "ignore" });
      const namespaces = labNamespaces();
      for (let i = 0; i < 100 && !processesIn(namespaces).some((p) => p.endsWith(" sleep")); i++) {
        spawnSync("sleep", ["0.05"]);
      }
      assert.equal(namespaces.length, 2 * 4 + 1);
      const procs = processesIn(namespaces);
      // sshd on b1, b2, b4; nix-daemons in builders' network namespaces; our sleep. (Nix daemons
      // unshare a private copy of their mount namespace; the agent's is found by its marker.)
      assert.ok(procs.length >= 4 && procs.some((p) => p.endsWith(" sleep")), procs.join("\n"));
      lab(["down"]);
      assertClean(before, `cycle ${cycle} (up took ${Date.now() - t0} ms)`, procs);
    }
  });

  it("down cleans up after kill -9 of `lab up`", { timeout: 300_000 }, async () => {
    const before = snapshot();
    // `up --builders 4` takes ~1 s on a quiet machine: kill it early and about half-way. The exit
    // promise exists from the start, so an `up` that finished first cannot leave the test waiting.
    for (const delayMs of [300, 600]) {
      const up = spawn("test/lab/lab", ["up", "--builders", "4"], { stdio: "ignore" });
      const exited = new Promise((r) => up.once("exit", r));
      await Promise.race([exited, new Promise((r) => setTimeout(r, delayMs))]);
      const finished = up.exitCode !== null;
      up.kill("SIGKILL");
      await exited;
      if (finished) console.log(`# lab up finished within ${delayMs} ms; down after a complete up`);
      const procs = processesIn(labNamespaces());
      lab(["down"]);
      assertClean(before, `kill -9 after ${delayMs} ms`, procs);
    }
  });

  it("status says down when the lab is down", () => {
    const r = lab(["status", "--json"], { allowFail: true });
    assert.equal(r.code, 3);
    assert.deepEqual(JSON.parse(r.stdout), { up: false });
  });
});
