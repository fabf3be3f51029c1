/**
 * Fuzz acceptance test of issue 11: a local user U plants hostile files where nix-builders (run by root
 * for U, or by U itself) reads them: U's nix.conf (as a symlink or a file), an `include` / `!include`, the
 * machines file named by `builders = @…`, a `NIX_CONFIG` value, and the FILE / DRV arguments of the
 * commands. The targets are devices (/dev/zero, /dev/urandom, /dev/null), a FIFO, a directory, symlinks
 * to /etc/shadow and to a root-only private key, files U cannot read, a 20 MB line, non-UTF-8 bytes, and
 * private keys U can read. Every command runs against a random sample of these (seeded: the seed is
 * printed, and NB_FUZZ_SEED=<seed> replays a run; NB_FUZZ_RUNS sets how many random runs).
 *
 * Each run must end within its deadline, never exit 70 nor die by a signal, print no stack trace, and
 * never print a line of a file U cannot read (random canaries are planted in every such file, including
 * U's own /etc/shadow entry) nor a line of any private key.
 *
 * Root only (a real throwaway user, real setpriv); skipped otherwise.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { mulberry32 } from "../support/random.js";
import { type CliRun, IS_ROOT, makeUser, removeUser, runCli, type Throwaway } from "../support/throwaway.js";

const DEADLINE_MS = 20_000;
const SEED = Number(process.env["NB_FUZZ_SEED"] ?? Date.now() % 2 ** 31);
const RUNS = Number(process.env["NB_FUZZ_RUNS"] ?? 24);

/** Key material lines of a private key file (the header/footer are not secret; the body is). */
function keyBodyLines(text: string): string[] {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("-----"))
    .map((l) => l.slice(0, 24));
}

describe("fuzz: hostile inputs from a local user", {
  skip: !IS_ROOT && "needs root (a throwaway user)",
}, () => {
  let u: Throwaway;
  let dir = "";
  const secrets: string[] = [];
  const targets: Record<string, string> = {};
  const canary = () => `nbcanary${randomBytes(8).toString("hex")}`;

  before(() => {
    console.log(`fuzz seed ${SEED} (replay: NB_FUZZ_SEED=${SEED}), ${RUNS} random runs`);
    u = makeUser();
    dir = mkdtempSync("/tmp/nb-fuzz-");
    chmodSync(dir, 0o755);
    const own = (p: string) => chownSync(p, u.uid, u.gid);
    // files U cannot read, each with a canary (as a nix.conf line, a machines line and a bare word)
    const c1 = canary();
    writeFileSync(join(dir, "root-only.conf"), `cores = 3\n${c1}\nbuilders = ssh://${c1}\n`, { mode: 0o600 });
    secrets.push(c1);
    const c2 = canary();
    writeFileSync(join(dir, "root-only.machines"), `ssh://${c2} x86_64-linux - 1\n${c2}\n`, { mode: 0o600 });
    secrets.push(c2);
    const c3 = canary();
    writeFileSync(join(dir, "u-owned-000"), `${c3} = 1\n`, { mode: 0o600 });
    own(join(dir, "u-owned-000"));
    chmodSync(join(dir, "u-owned-000"), 0o000);
    secrets.push(c3);
    mkdirSync(join(dir, "private"), { mode: 0o700 });
    const c4 = canary();
    writeFileSync(join(dir, "private", "nix.conf"), `${c4}\n`, { mode: 0o644 });
    secrets.push(c4);
    // U's own shadow entry carries a canary too (a nix.conf linked to /etc/shadow must not print it)
    const c5 = canary();
    execFileSync("usermod", ["-p", c5, u.name], { timeout: 20_000 });
    secrets.push(c5);
    // a root-only private key, and a private key U can read (neither may ever be printed)
    for (const [name, owner] of [
      ["root-key", null],
      ["u-key", u],
    ] as const) {
      const p = join(dir, name);
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", p], { timeout: 20_000 });
      unlinkSync(`${p}.pub`);
      secrets.push(...keyBodyLines(readFileSync(p, "utf8")));
      if (owner) own(p);
    }
    const pkcs8 = join(dir, "u-key-pkcs8");
    execFileSync("ssh-keygen", ["-q", "-t", "ecdsa", "-m", "PKCS8", "-N", "", "-C", "", "-f", pkcs8], {
      timeout: 20_000,
    });
    unlinkSync(`${pkcs8}.pub`);
    secrets.push(...keyBodyLines(readFileSync(pkcs8, "utf8")));
    own(pkcs8);
    symlinkSync("/etc/shadow", join(dir, "link-shadow"));
    symlinkSync(join(dir, "root-key"), join(dir, "link-root-key"));
    symlinkSync(join(dir, "root-only.conf"), join(dir, "link-root-only"));
    spawnSync("mkfifo", ["-m", "666", join(dir, "fifo")], { timeout: 5000 });
    mkdirSync(join(dir, "adir"));
    const rnd = mulberry32(SEED);
    const bytes = Buffer.alloc(8192);
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(rnd() * 256);
    writeFileSync(join(dir, "non-utf8"), Buffer.concat([Buffer.from("cores = \xff\xfe\n", "latin1"), bytes]));
    own(join(dir, "non-utf8"));
    writeFileSync(join(dir, "big-line"), `builders = ${"x".repeat(20 * 1024 * 1024)}\n`);
    own(join(dir, "big-line"));
    // under the 16 MiB limit: read and parsed, so every parser and printer meets a 15 MB line
    writeFileSync(join(dir, "15mb-line"), `builders = ssh://${"y-".repeat(7 * 1024 * 1024)}\n`);
    own(join(dir, "15mb-line"));
    Object.assign(targets, {
      "/dev/zero": "/dev/zero",
      "/dev/urandom": "/dev/urandom",
      "/dev/null": "/dev/null",
      fifo: join(dir, "fifo"),
      dir: join(dir, "adir"),
      "link-shadow": join(dir, "link-shadow"),
      "link-root-key": join(dir, "link-root-key"),
      "link-root-only": join(dir, "link-root-only"),
      "root-only.conf": join(dir, "root-only.conf"),
      "root-only.machines": join(dir, "root-only.machines"),
      "u-owned-000": join(dir, "u-owned-000"),
      "under-private-dir": join(dir, "private", "nix.conf"),
      "u-key": join(dir, "u-key"),
      "u-key-pkcs8": join(dir, "u-key-pkcs8"),
      "non-utf8": join(dir, "non-utf8"),
      "big-line": join(dir, "big-line"),
      "15mb-line": join(dir, "15mb-line"),
    });
    mkdirSync(join(u.home, ".config", "nix"), { recursive: true });
    for (const p of [join(u.home, ".config"), join(u.home, ".config", "nix")]) own(p);
  });

  after(() => {
    if (u) removeUser(u);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  type Placement = "conf-link" | "include" | "!include" | "builders" | "ssh-key" | "nix-config" | "arg";
  const placements: Placement[] = [
    "conf-link",
    "include",
    "!include",
    "builders",
    "ssh-key",
    "nix-config",
    "arg",
  ];

  /** Put `target` where `placement` says; returns the extra environment (NIX_CONFIG) for the run. */
  function place(placement: Placement, target: string): Record<string, string> {
    const conf = join(u.home, ".config", "nix", "nix.conf");
    rmSync(conf, { force: true });
    if (placement === "conf-link") symlinkSync(target, conf);
    else if (placement !== "nix-config" && placement !== "arg") {
      const line =
        placement === "builders"
          ? `builders = @${target}`
          : placement === "ssh-key"
            ? `builders = ssh://nb-fuzz-builder x86_64-linux ${target} 1`
            : `${placement} ${target}`;
      writeFileSync(conf, `cores = 2\n${line}\nmax-jobs = 1\n`);
      chownSync(conf, u.uid, u.gid);
    }
    return placement === "nix-config" ? { NIX_CONFIG: `include ${target}\nbuilders = @${target}` } : {};
  }

  /** The command lines for one placement (`arg`: the target is a FILE / DRV argument). */
  function commands(placement: Placement, target: string): string[][] {
    const user = ["--user", u.name];
    if (placement === "arg")
      return [
        ["lint", ...user, target],
        ["lint", ...user, "--conf", target],
        ["lint", ...user, "--machines", target],
        ["route", ...user, "--system", "x86_64-linux", target],
        ["plan", ...user, target],
        ["show", "--agent-config", target],
      ];
    if (placement === "nix-config")
      // U runs the tool itself with a hostile NIX_CONFIG: everything is read as U, in-process
      return [["config"], ["show"], ["lint"], ["route", "--system", "x86_64-linux"]];
    return [
      ["config", ...user],
      ["show", ...user],
      ["lint", ...user],
      ["route", ...user, "--system", "aarch64-linux"],
      ["doctor", ...user, "--timeout", "2"],
      ["use", ...user, "--dry-run", "ssh://nb-fuzz-builder"],
      ["reset", ...user],
      ["verify", ...user, "--timeout", "5", "--builder", "nb-fuzz-builder"],
    ];
  }

  function check(what: string, r: CliRun): void {
    const out = r.stdout + r.stderr;
    const tail = `\n--- ${what} (${r.ms} ms, exit ${r.code}, signal ${r.signal}); seed ${SEED}\n${out.slice(0, 3000)}`;
    assert.equal(r.timedOut, false, `did not end within ${DEADLINE_MS} ms${tail}`);
    assert.equal(r.signal, null, `died by a signal${tail}`);
    assert.notEqual(r.code, 70, `internal error${tail}`);
    assert.ok(r.code !== null && [0, 1, 2, 64].includes(r.code), `unexpected exit code${tail}`);
    assert.doesNotMatch(out, /\n\s+at .+:\d+:\d+\)?\n/, `stack trace${tail}`);
    for (const s of secrets) assert.ok(!out.includes(s), `printed a secret (${s.slice(0, 12)}…)${tail}`);
  }

  async function runOne(placement: Placement, name: string, argv: string[]): Promise<void> {
    const target = targets[name]!;
    const env = place(placement, target);
    const r = await runCli(argv, {
      env,
      deadlineMs: DEADLINE_MS,
      ...(placement === "nix-config" ? { as: u } : {}),
    });
    check(`${placement} ${name}: nix-builders ${argv.join(" ")}`, r);
  }

  it("every target in four placements, with config, show and lint (the commands that print files)", async () => {
    const core: [Placement, string][] = [
      ["conf-link", "lint"],
      ["include", "config"],
      ["!include", "show"],
      ["builders", "show"],
      ["ssh-key", "lint"],
      ["arg", "lint"],
      ["nix-config", "lint"],
    ];
    const names = Object.keys(targets);
    for (let k = 0; k < names.length; k++)
      for (let j = 0; j < 4; j++) {
        const [placement, cmd] = core[(k + j) % core.length]!;
        const argv = commands(placement, target(names[k]!)).find((c) => c[0] === cmd)!;
        await runOne(placement, names[k]!, argv);
      }
  });

  it(`${RUNS} random (placement, target, command) runs over every command`, async () => {
    const rnd = mulberry32(SEED ^ 0x5eed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    for (let i = 0; i < RUNS; i++) {
      const placement = pick(placements);
      const name = pick(Object.keys(targets));
      const argv = pick(commands(placement, target(name)));
      await runOne(placement, name, argv);
    }
  });

  it("explain reads its log argument bounded (devices, FIFO, directory, 20 MB line)", async () => {
    for (const name of ["/dev/zero", "/dev/urandom", "fifo", "dir", "big-line", "non-utf8"]) {
      const r = await runCli(["explain", targets[name]!], { deadlineMs: DEADLINE_MS });
      check(`explain ${name}`, r);
    }
  });

  function target(name: string): string {
    return targets[name]!;
  }
});
