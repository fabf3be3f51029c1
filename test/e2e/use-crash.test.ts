/**
 * `use` / `reset` against the real file system, as root for a real user, with no mocks:
 *  - kill -9 at random points, 200+ times: never a partial or missing file, and a rerun always finishes;
 *  - 20 concurrent runs leave one consistent result;
 *  - reset gives the original bytes, owner and mode back.
 * Each run is a child process (`node --import tsx test/support/run-command.ts`) in a private mount
 * namespace whose /etc/nix is a bind mount of a temp directory (the host's /etc/nix is never touched).
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const ENTRY = path.join(REPO, "test/support/run-command.ts");

function skipReason(): string | false {
  if (process.platform !== "linux") return "needs Linux";
  if (process.getuid?.() !== 0) return "needs root (runs as another user, uses a mount namespace)";
  if (spawnSync("unshare", ["--mount", "--propagation", "private", "true"]).status !== 0)
    return "needs unshare --mount";
  return false;
}
const SKIP = skipReason();

const MACHINES =
  "# lab-like system builders\n" +
  "ssh://nix@b1.test aarch64-linux /root/.ssh/k 2 1 big-parallel - -\n" +
  "ssh://nix@b2.test aarch64-linux,armv7l-linux /root/.ssh/k 4 2 big-parallel - -   # the fast one\n" +
  "ssh-ng://nix@b3.test x86_64-darwin\n";
const USER_CONF =
  "# my own settings\nmax-jobs = 4\r\nextra-builders = ssh://old aarch64-linux\n# \xe9t\xe9 (latin-1 bytes)\n";

let root: string;
let etcNix: string;
const users: string[] = [];

interface Home {
  user: string;
  uid: number;
  gid: number;
  home: string;
  conf: string;
  machines: string;
}

function mkUser(tag: string): Home {
  const name = `nbu-${tag}-${randomBytes(2).toString("hex")}`;
  const home = path.join(root, name);
  execFileSync("useradd", [
    "--system",
    "--user-group",
    "--home-dir",
    home,
    "--create-home",
    "--shell",
    "/usr/sbin/nologin",
    name,
  ]);
  users.push(name);
  const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8" }).trim());
  const gid = Number(execFileSync("id", ["-g", name], { encoding: "utf8" }).trim());
  const dir = path.join(home, ".config/nix");
  fs.mkdirSync(dir, { recursive: true });
  fs.chownSync(path.join(home, ".config"), uid, gid);
  fs.chownSync(dir, uid, gid);
  const conf = path.join(dir, "nix.conf");
  fs.writeFileSync(conf, Buffer.from(USER_CONF, "latin1"), { mode: 0o640 });
  fs.chownSync(conf, uid, gid);
  fs.chmodSync(conf, 0o640);
  return { user: name, uid, gid, home, conf, machines: path.join(dir, "machines") };
}

let bundle: string;

function argv(args: string[]): string[] {
  return [
    "--mount",
    "--propagation",
    "private",
    "--",
    process.execPath,
    bundle,
    "--etc-nix",
    etcNix,
    ...args,
  ];
}

/** Root's records (`use` for `reset`) in the test's own directory, not the host's /var/lib/nix-builders. */
function env(): NodeJS.ProcessEnv {
  return { ...process.env, NIX_BUILDERS_STATE_DIR: path.join(root, "state") };
}

function stateDirOf(h: Home): string {
  return path.join(root, "state", "use", `${h.uid}-${h.user}`);
}

function run(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync("unshare", argv(args), { cwd: REPO, encoding: "utf8", timeout: 120_000, env: env() });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function start(args: string[]): ChildProcess {
  return spawn("unshare", argv(args), { cwd: REPO, stdio: ["ignore", "pipe", "pipe"], env: env() });
}

function exited(
  c: ChildProcess,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }> {
  let out = "";
  c.stdout?.on("data", (b: Buffer) => {
    out += b.toString();
  });
  c.stderr?.on("data", (b: Buffer) => {
    out += b.toString();
  });
  return new Promise((resolve) => c.on("close", (code, signal) => resolve({ code, signal, out })));
}

function read(p: string): Buffer | null {
  try {
    return fs.readFileSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

interface Expected {
  conf: Buffer;
  byName: Record<string, Buffer>;
}

/** Full runs (no kill) for each name: what a finished `use NAME` leaves. Then reset. */
function reference(h: Home, names: string[]): Expected {
  const byName: Record<string, Buffer> = {};
  let conf: Buffer | null = null;
  for (const n of names) {
    const r = run(["use", n, "--user", h.user]);
    assert.ok(r.code === 0 || r.code === 1, `use ${n}: ${r.code}\n${r.stdout}${r.stderr}`);
    byName[n] = read(h.machines)!;
    const c = read(h.conf)!;
    if (conf) assert.ok(conf.equals(c), "nix.conf does not depend on the builder chosen");
    conf = c;
  }
  const r = run(["reset", "--user", h.user]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return { conf: conf!, byName };
}

function assertOriginal(h: Home): void {
  assert.ok(
    read(h.conf)!.equals(Buffer.from(USER_CONF, "latin1")),
    "nix.conf is byte-identical to the original",
  );
  const st = fs.statSync(h.conf);
  assert.equal(st.uid, h.uid);
  assert.equal(st.gid, h.gid);
  assert.equal(st.mode & 0o7777, 0o640);
  assert.equal(read(h.machines), null, "machines did not exist before, and does not now");
}

function assertWhole(h: Home, exp: Expected, allowedMachines: Buffer[], context: string): void {
  const conf = read(h.conf);
  assert.ok(conf !== null, `${context}: nix.conf is missing`);
  const orig = Buffer.from(USER_CONF, "latin1");
  assert.ok(
    conf.equals(orig) || conf.equals(exp.conf),
    `${context}: nix.conf is neither old nor new:\n${conf}`,
  );
  const m = read(h.machines);
  if (m !== null)
    assert.ok(
      allowedMachines.some((x) => x.equals(m)),
      `${context}: machines is partial or unknown:\n${m.toString("latin1")}`,
    );
  if (conf.equals(exp.conf))
    assert.ok(m !== null, `${context}: nix.conf points at a machines file that is missing`);
  const state = path.join(stateDirOf(h), "state.json");
  if (fs.existsSync(state)) JSON.parse(fs.readFileSync(state, "utf8")); // never partial
  for (const f of [h.conf, h.machines]) {
    if (!fs.existsSync(f)) continue;
    const st = fs.statSync(f);
    assert.equal(st.uid, h.uid, `${context}: ${f} owner`);
  }
}

describe("use / reset: crashes, concurrency, byte-exact reset", { skip: SKIP }, () => {
  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), "nb-use-crash-"));
    fs.chmodSync(root, 0o755);
    etcNix = path.join(root, "etc-nix");
    fs.mkdirSync(etcNix);
    fs.writeFileSync(path.join(etcNix, "nix.conf"), "sandbox = false\nbuilders = @/etc/nix/machines\n");
    fs.writeFileSync(path.join(etcNix, "machines"), MACHINES);
    // The same entry script, bundled once (esbuild, which tsx uses): hundreds of runs start in a tenth of the time.
    bundle = path.join(root, "run-command.mjs");
    await build({
      entryPoints: [ENTRY],
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      outfile: bundle,
      banner: {
        js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
      },
      logLevel: "warning",
    });
  });
  after(() => {
    for (const u of users) spawnSync("userdel", [u]);
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  test("use copies the machine line byte for byte, keeps every other line; a second run changes nothing; reset restores", () => {
    const h = mkUser("basic");
    const r1 = run(["use", "b2.test", "--user", h.user]);
    assert.equal(
      r1.code,
      1,
      `exit 1: a warning about the commented extra-builders line\n${r1.stdout}${r1.stderr}`,
    );
    assert.match(r1.stderr, /commented out 'extra-builders'/);
    const m = read(h.machines)!.toString("latin1");
    assert.ok(m.includes(`${MACHINES.split("\n")[2]}\n`), "the /etc/nix/machines line, comment included");
    assert.ok(!m.includes("b1.test") && !m.includes("b3.test"));
    const conf = read(h.conf)!.toString("latin1");
    assert.equal(
      conf,
      `${USER_CONF.replace("extra-builders", "# disabled by nix-builders use: extra-builders")}# set by nix-builders use (nix-builders reset puts back what was here before)\nbuilders = @${h.machines}\n`,
    );
    const st = fs.statSync(h.machines);
    assert.equal(st.uid, h.uid);
    assert.equal(st.mode & 0o777, 0o644);
    assert.equal(fs.statSync(h.conf).mode & 0o777, 0o640, "an existing file keeps its mode");
    const before = fs.statSync(h.conf).mtimeMs;
    const r2 = run(["use", "b2.test", "--user", h.user, "--json"]);
    const j = JSON.parse(r2.stdout) as { files: { status: string }[] };
    assert.deepEqual(
      j.files.map((f) => f.status),
      ["unchanged", "unchanged"],
    );
    assert.equal(fs.statSync(h.conf).mtimeMs, before);
    const dry = run(["use", "b1.test", "--user", h.user, "--dry-run"]);
    assert.match(dry.stdout, /-ssh:\/\/nix@b2\.test/);
    assert.match(dry.stdout, /\+ssh:\/\/nix@b1\.test/);
    assert.ok(read(h.machines)!.toString("latin1").includes("b2.test"), "--dry-run writes nothing");
    const rr = run(["reset", "--user", h.user]);
    assert.equal(rr.code, 0, rr.stdout + rr.stderr);
    assertOriginal(h);
  });

  test("reset refuses to lose a change made after use, unless --force", () => {
    const h = mkUser("edit");
    run(["use", "b1.test", "--user", h.user]);
    fs.appendFileSync(h.conf, "cores = 2\n");
    const r = run(["reset", "--user", h.user]);
    assert.equal(r.code, 2);
    assert.match(r.stdout, /was changed after nix-builders use wrote it/);
    assert.ok(read(h.conf)!.toString().includes("cores = 2"));
    const f = run(["reset", "--user", h.user, "--force"]);
    assert.equal(f.code, 0, f.stdout + f.stderr);
    assertOriginal(h);
  });

  test("an unknown builder is refused, and nothing is written", () => {
    const h = mkUser("nomatch");
    const r = run(["use", "nosuch.test", "--user", h.user]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no builder matches: nosuch\.test/);
    assert.match(r.stderr, /ssh:\/\/nix@b1\.test/);
    assertOriginal(h);
  });

  test("a nix.conf that is a link into /nix/store is managed: nothing written, NixOS options printed", () => {
    const h = mkUser("managed");
    // NixOS / home-manager: a link into the store (it need not exist for us to know who owns it).
    const target = "/nix/store/00000000000000000000000000000000-nix.conf";
    fs.rmSync(h.conf);
    fs.symlinkSync(target, h.conf);
    const r = run(["use", "b2.test", "--user", h.user]);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stdout, /is managed by Nix/);
    assert.match(r.stdout, /nix\.buildMachines = \[/);
    assert.match(r.stdout, /hostName = "b2\.test";/);
    assert.equal(read(h.machines), null);
    assert.equal(fs.readlinkSync(h.conf), target);
  });

  test("20 concurrent runs leave one consistent result, and reset still restores the original", async () => {
    const h = mkUser("conc");
    const exp = reference(h, ["b1.test", "b2.test"]);
    const kids = Array.from({ length: 20 }, (_, i) =>
      start(["use", i % 2 ? "b1.test" : "b2.test", "--user", h.user]),
    );
    const results = await Promise.all(kids.map(exited));
    for (const r of results) assert.ok(r.code === 0 || r.code === 1, r.out);
    assert.ok(read(h.conf)!.equals(exp.conf));
    const m = read(h.machines)!;
    assert.ok(m.equals(exp.byName["b1.test"]!) || m.equals(exp.byName["b2.test"]!));
    const tmp = fs.readdirSync(path.dirname(h.conf)).filter((n) => n.includes(".tmp."));
    assert.deepEqual(tmp, [], "no temp files left");
    const r = run(["reset", "--user", h.user]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assertOriginal(h);
  });

  test("kill -9 at random points (>= 200 kills): never partial or missing, a rerun always finishes", async () => {
    const WORKERS = 2;
    const TARGET = 220;
    const stats = { kills: 0, inWritePhase: 0, midway: 0, finishedBeforeKill: 0 };
    const worker = async (w: number): Promise<void> => {
      const h = mkUser(`k${w}`);
      const exp = reference(h, ["b1.test", "b2.test"]);
      const all = [exp.byName["b1.test"]!, exp.byName["b2.test"]!];
      const lockFile = path.join(stateDirOf(h), ".nix-builders.lock");
      const durations: number[] = [];
      const writePhase: number[] = [];
      const est = (xs: number[], d: number) =>
        xs.length ? [...xs].sort((a, b) => a - b)[xs.length >> 1]! : d;
      /** Start a run; with `kill`, kill -9 it either once it holds the state lock (then after a random part of
       * the usual write phase) or at a random point of its usual duration. */
      const go = async (args: string[], kill: boolean) => {
        const t0 = Date.now();
        const c = start(args);
        const done = exited(c);
        let finished = false;
        void done.then(() => {
          finished = true;
        });
        const afterLock = Math.random() < 0.75;
        const deadline = t0 + Math.random() * est(durations, 800);
        let lockedAt: number | null = null;
        let killedInWritePhase = false;
        while (!finished) {
          if (lockedAt === null) {
            try {
              if (Number.parseInt(fs.readFileSync(lockFile, "utf8"), 10) === c.pid) lockedAt = Date.now();
            } catch {
              // not there yet
            }
          }
          if (kill && afterLock && lockedAt !== null) {
            await new Promise((r) => setTimeout(r, Math.random() * est(writePhase, 30)));
            killedInWritePhase = !finished;
            c.kill("SIGKILL");
            break;
          }
          if (kill && !afterLock && Date.now() >= deadline) {
            killedInWritePhase = lockedAt !== null;
            c.kill("SIGKILL");
            break;
          }
          await new Promise((r) => setTimeout(r, 1));
        }
        const res = await done;
        if (!kill) {
          durations.push(Date.now() - t0);
          if (lockedAt !== null) writePhase.push(Date.now() - lockedAt);
        }
        return { ...res, killedInWritePhase };
      };
      for (let i = 0; stats.kills < TARGET && i < 300; i++) {
        const action = i % 5 === 4 ? "reset" : i % 2 ? "b1.test" : "b2.test";
        const args =
          action === "reset" ? ["reset", "--user", h.user, "--force"] : ["use", action, "--user", h.user];
        const before = [read(h.conf), read(h.machines)];
        const res = await go(args, true);
        const killed = res.signal === "SIGKILL";
        if (killed) stats.kills++;
        else stats.finishedBeforeKill++;
        if (killed && res.killedInWritePhase) stats.inWritePhase++;
        const ctx = `worker ${w} iteration ${i} (${action})`;
        assertWhole(h, exp, all, ctx);
        const now = [read(h.conf), read(h.machines)];
        const same = (a: Buffer | null, b: Buffer | null) =>
          a === null ? b === null : b !== null && a.equals(b);
        const changed = now.some((b, k) => !same(b, before[k] ?? null));
        const final =
          action === "reset"
            ? same(now[0]!, Buffer.from(USER_CONF, "latin1")) && now[1] === null
            : same(now[0]!, exp.conf) && same(now[1]!, exp.byName[action]!);
        if (killed && changed && !final) stats.midway++;
        // A rerun finishes the job.
        const r = await go(args, false);
        assert.ok(r.code === 0 || r.code === 1, `${ctx}: rerun: ${r.code}\n${r.out}`);
        if (action === "reset") assertOriginal(h);
        else {
          assert.ok(read(h.conf)!.equals(exp.conf), `${ctx}: rerun leaves the new nix.conf`);
          assert.ok(
            read(h.machines)!.equals(exp.byName[action]!),
            `${ctx}: rerun leaves the chosen machines`,
          );
        }
      }
      const r = run(["reset", "--user", h.user, "--force"]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assertOriginal(h);
    };
    await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
    console.log(
      `# kill -9 test: ${stats.kills} runs killed (${stats.inWritePhase} while holding the state lock, ${stats.midway} after changing a file but before finishing), ${stats.finishedBeforeKill} finished first`,
    );
    assert.ok(stats.kills >= 200, `only ${stats.kills} kills`);
    assert.ok(stats.midway > 0, "some kills landed between the first and the last write");
  });
});
