/**
 * SIGINT (Ctrl-C) and SIGTERM (a CI timeout) to a real `nix-builders doctor` while its ssh probe waits:
 * the builder is a loopback TCP listener that accepts and never sends an ssh banner, so the doctor's
 * real OpenSSH client sits mid-probe (its ControlMaster socket and host-key file in a private temp
 * dir). The doctor must stop that ssh (it runs in its own process group, which the terminal's signal
 * does not reach), remove its temp dir, and exit 130 or 143.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CLI_NODE_ARGS } from "../support/cli.js";

const root = mkdtempSync("/tmp/nb-int-");
let server: Server;
const sockets: Socket[] = [];
let port = 0;

/** Pids of processes whose argv mentions `marker` (other than this test's own). */
function processesMentioning(marker: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, "latin1").includes(marker)) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** The doctor's own temp dirs under `tmp` (tsx keeps its cache there too). */
function ours(tmp: string): string[] {
  return readdirSync(tmp).filter((n) => n.startsWith("nix-builders-"));
}

async function until(what: string, ms: number, ok: () => boolean): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  // Accepts, and never says anything: ssh waits for the server's banner.
  server = createServer((s) => {
    sockets.push(s);
    s.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as { port: number }).port;
  mkdirSync(join(root, "conf"));
  writeFileSync(
    join(root, "conf", "nix.conf"),
    "build-users-group =\nbuilders = ssh://127.0.0.1 x86_64-linux\n",
  );
});

after(() => {
  for (const s of sockets) s.destroy();
  server.close();
  rmSync(root, { recursive: true, force: true });
});

async function interrupted(signal: "SIGINT" | "SIGTERM"): Promise<{ code: number | null; stderr: string }> {
  const tmp = mkdtempSync(join(root, "t-"));
  const t0 = Date.now();
  const child = spawn(process.execPath, [...CLI_NODE_ARGS, "doctor", "--json", "--timeout", "60"], {
    cwd: join(import.meta.dirname, "../.."),
    env: {
      PATH: "/usr/bin:/bin",
      HOME: root,
      TMPDIR: tmp,
      NIX_CONF_DIR: join(root, "conf"),
      NIX_USER_CONF_FILES: join(root, "none"),
      NIX_STATE_DIR: join(root, "state"),
      // 2.8 has no ports in store URIs: the port comes from NIX_SSHOPTS, as for a 2.8 user.
      NIX_SSHOPTS: `-oPort=${port}`,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (b: Buffer) => {
    stderr += b.toString();
  });
  child.stdout.resume();
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const deadline = setTimeout(() => child.kill("SIGKILL"), 150_000);
  try {
    // Mid-probe: the real ssh runs, its control socket in the doctor's temp dir.
    await until(
      "the doctor's ssh probe",
      120_000,
      () => processesMentioning(`ControlPath=${tmp}/`).length > 0,
    );
    assert.equal(ours(tmp).length, 1, "one private temp dir while the probe runs");
    const t1 = Date.now();
    child.kill(signal);
    const code = await exited;
    // How long the doctor took to stop (for the log; not asserted).
    console.log(`# ${signal}: mid-probe after ${t1 - t0} ms; exited ${Date.now() - t1} ms after the signal`);
    // The ssh (reparented when its group was not killed) and the temp dir are gone.
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(processesMentioning(tmp), [], `no process left that mentions ${tmp}`);
    assert.deepEqual(ours(tmp), [], "the doctor's temp dir was removed");
    return { code, stderr };
  } finally {
    clearTimeout(deadline);
    child.kill("SIGKILL");
    for (const pid of processesMentioning(tmp)) process.kill(pid, "SIGKILL");
  }
}

// Both runs at once: most of each is the CLI's start-up.
describe("doctor: SIGINT and SIGTERM mid-probe", { concurrency: true }, () => {
  it("SIGINT: ssh stopped, temp dir removed, exit 130, one line on stderr", async () => {
    const r = await interrupted("SIGINT");
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /doctor interrupted by SIGINT/);
  });
  it("SIGTERM: ssh stopped, temp dir removed, exit 143", async () => {
    const r = await interrupted("SIGTERM");
    assert.equal(r.code, 143, r.stderr);
    assert.match(r.stderr, /doctor interrupted by SIGTERM/);
  });
});
