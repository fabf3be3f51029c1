/**
 * Issue 11, findings 4–6 and rules 2, 3, 6: files Nix reads as a user are read with that user's
 * credentials (one setpriv helper per identity and run, with a deadline), reads are bounded (regular
 * files only, 16 MiB, never a FIFO or device), and no message quotes more than a bounded excerpt of a
 * line, nor anything of a private key.
 *
 * Pure parts run everywhere; the throwaway-user parts need root and skip otherwise; the Nix-agreement
 * part also needs Debian's Nix 2.8 (`nix`).
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  HELPER_SOURCE,
  helperReader,
  nodeFileReader,
  READ_LIMIT,
  readBounded,
  readerFor,
} from "../../src/host/fs-reader.js";
import { resolveIdentity } from "../../src/host/run-as.js";
import { type FileReader, loadConfig, parseConfText } from "../../src/nix/conf.js";
import { lintConfSyntax } from "../../src/nix/lint.js";
import { parseBuilders } from "../../src/nix/machines.js";
import { EXCERPT_MAX, excerpt, KEY_REDACTED, looksLikePrivateKey } from "../../src/nix/redact.js";
import { NIX_2_8 } from "../../src/nix/version.js";
import { IS_ROOT, makeUser, removeUser, runCli, type Throwaway } from "../support/throwaway.js";

/**
 * Without a nix-daemon (this host), a user who cannot write /nix/var/nix gets an error from every Nix
 * command that opens the store, and show/lint say so (exit 2, `store-not-writable`). These tests are about
 * reading files as the user: exit 0, or 2 with that store error as the only error.
 */
const STORE_ONLY_EXIT = 2;
function okOrStoreOnly(code: number | null, out: string): boolean {
  if (code === 0) return true;
  const errors = out.split("\n").filter((l) => /\berror: /.test(l));
  const storeOnly =
    /cannot write \/nix\/var\/nix/.test(out) &&
    errors.every((l) => /no nix-daemon|could not set permissions on|big-lock/.test(l));
  return code === STORE_ONLY_EXIT && storeOnly;
}
const MACHINE = {
  system: "x86_64-linux",
  extraPlatforms: [],
  systemFeatures: [],
  cores: 2,
  hardwareThreads: 2,
};
const HAVE_NIX = spawnSync("nix", ["--version"], { timeout: 10_000 }).status === 0;

function sshKey(dir: string, name: string, args: string[] = ["-t", "ed25519"]): string {
  const p = join(dir, name);
  execFileSync("ssh-keygen", ["-q", ...args, "-N", "", "-C", "", "-f", p], { timeout: 20_000 });
  unlinkSync(`${p}.pub`);
  return readFileSync(p, "utf8");
}

function bodyLines(key: string): string[] {
  return key
    .split("\n")
    .filter((l) => l !== "" && !l.startsWith("-----"))
    .map((l) => l.slice(0, 24));
}

function memReader(files: Record<string, string>): FileReader {
  return {
    read: (p) => (p in files ? { ok: true, text: files[p]! } : { ok: false, code: "ENOENT" }),
    exists: (p) => ({ ok: true, exists: p in files }),
  };
}

describe("rule 3: never echo more of a file than identifies the problem", () => {
  let dir = "";
  const keys: Record<string, string> = {};
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "nb-redact-"));
    keys["openssh"] = sshKey(dir, "openssh");
    keys["rsa-pem"] = sshKey(dir, "rsa", ["-t", "rsa", "-b", "1024", "-m", "PEM"]);
    keys["pkcs8"] = sshKey(dir, "pkcs8", ["-t", "ecdsa", "-m", "PKCS8"]);
    keys["body-only"] = `${keys["openssh"]!.split("\n").slice(1, -2).join("\n")}\n`;
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("recognises private keys (OpenSSH, PEM, PKCS#8, armour stripped) and not nix.conf or machines files", () => {
    for (const [name, text] of Object.entries(keys)) assert.ok(looksLikePrivateKey(text), name);
    assert.ok(looksLikePrivateKey("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n"));
    assert.ok(!looksLikePrivateKey("builders = @/etc/nix/machines\ncores = 4\n"));
    assert.ok(
      !looksLikePrivateKey(
        "ssh://nix@b1 x86_64-linux /root/.ssh/id 4 1 kvm - c3NoLWVkMjU1MTkgQUFBQUMzTnphQzFsWkRJMU5URTVBQUFBSUxiCg==\n",
      ),
    );
    assert.ok(!looksLikePrivateKey(""));
  });

  it("a nix.conf error on a private key (include ~/.ssh/id_…) quotes nothing of it", () => {
    for (const [name, text] of Object.entries(keys)) {
      const e = parseConfText(text, "/k", NIX_2_8).error;
      assert.ok(e, name);
      assert.equal(e.nixMessage, `illegal configuration line '${KEY_REDACTED}' in '/k'`);
      const findings = JSON.stringify(lintConfSyntax(text, "/k", NIX_2_8));
      for (const l of bodyLines(text)) assert.ok(!findings.includes(l), `${name}: ${l}`);
      assert.equal(lintConfSyntax(text, "/k", NIX_2_8).length, 1);
    }
  });

  it("finding 6: builders = @<private key> gives one error, no machine, and none of its lines", () => {
    for (const [name, text] of Object.entries(keys)) {
      const r = parseBuilders({
        spec: "@/k",
        version: NIX_2_8,
        defaultSystem: "x86_64-linux",
        fs: memReader({ "/k": text }),
      });
      assert.equal(r.machines.length, 0, name);
      assert.match(r.error?.message ?? "", /'\/k' is a private key, not a machines file/);
      assert.equal(r.includes[0]?.problem, "a private key, not a machines file");
      const all = JSON.stringify(r);
      for (const l of bodyLines(text)) assert.ok(!all.includes(l), `${name}: ${l}`);
    }
  });

  it("a 20 MB line is quoted as a bounded excerpt (nix.conf and machines errors)", () => {
    const long = "x-".repeat(10 * 1024 * 1024);
    const e = parseConfText(`${long}\n`, "/c", NIX_2_8).error!;
    assert.ok(e.nixMessage.length < EXCERPT_MAX + 100, String(e.nixMessage.length));
    assert.ok(e.nixMessage.includes(`'${"x-".repeat(EXCERPT_MAX / 2)}…'`));
    // a line that is one long base64 run is taken for key material: not quoted at all
    const blob = parseConfText(`${"x".repeat(20 * 1024 * 1024)}\n`, "/c", NIX_2_8).error!;
    assert.equal(blob.nixMessage, `illegal configuration line '${KEY_REDACTED}' in '/c'`);
    const r = parseBuilders({
      spec: "@/m",
      version: NIX_2_8,
      defaultSystem: "x86_64-linux",
      fs: memReader({ "/m": `host - - ${long}\n` }),
    });
    assert.ok(r.error && r.error.message.length < EXCERPT_MAX + 120, String(r.error?.message.length));
    assert.equal(excerpt("abc", 2), "ab…");
    assert.equal(excerpt("abc", 3), "abc");
  });
});

describe("rule 6: bounded reads", () => {
  let dir = "";
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "nb-bounded-"));
    spawnSync("mkfifo", [join(dir, "fifo")], { timeout: 5000 });
    mkdirSync(join(dir, "d"));
    writeFileSync(join(dir, "ok"), "cores = 1\n");
    writeFileSync(join(dir, "bad-utf8"), Buffer.from([0x63, 0xff, 0xfe, 0x0a]));
    writeFileSync(join(dir, "huge"), "");
    truncateSync(join(dir, "huge"), READ_LIMIT + 1); // sparse: costs nothing on disk
    writeFileSync(join(dir, "limit"), "");
    truncateSync(join(dir, "limit"), READ_LIMIT);
    symlinkSync(join(dir, "fifo"), join(dir, "link-to-fifo"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const cases = (): [string, unknown][] => [
    [join(dir, "ok"), { ok: true, text: "cores = 1\n" }],
    // not UTF-8: the bytes are kept (escaped as U+DC00 + byte, src/nix/bytes.ts), never replaced
    [join(dir, "bad-utf8"), { ok: true, text: "c\udcff\udcfe\n" }],
    [join(dir, "fifo"), { ok: false, code: "ENOTREG", detail: "a FIFO" }],
    [join(dir, "link-to-fifo"), { ok: false, code: "ENOTREG", detail: "a FIFO" }],
    ["/dev/zero", { ok: false, code: "ENOTREG", detail: "a character device" }],
    ["/dev/urandom", { ok: false, code: "ENOTREG", detail: "a character device" }],
    ["/dev/null", { ok: true, text: "" }],
    [join(dir, "d"), { ok: false, code: "EISDIR" }],
    [join(dir, "huge"), { ok: false, code: "EFBIG" }],
    [join(dir, "missing"), { ok: false, code: "ENOENT" }],
  ];

  it("reads regular files only, never blocks on a FIFO nor reads a device, and stops at 16 MiB", () => {
    const t0 = Date.now();
    for (const [p, want] of cases()) assert.deepEqual(readBounded(p), want, p);
    const atLimit = readBounded(join(dir, "limit"));
    assert.ok(atLimit.ok && atLimit.text.length === READ_LIMIT);
    assert.ok(Date.now() - t0 < 5000);
  });

  it("finding 5: a FIFO include, a FIFO or /dev/zero machines file end at once, as errors", () => {
    const fifo = join(dir, "fifo");
    const conf = loadConfig({
      version: NIX_2_8,
      env: { NIX_CONF_DIR: join(dir, "none"), NIX_USER_CONF_FILES: join(dir, "u.conf") },
      passwdHome: "/",
      fs: {
        read: (p) =>
          p === join(dir, "u.conf") ? { ok: true, text: `include ${fifo}\n` } : nodeFileReader.read(p),
        exists: (p) => nodeFileReader.exists(p),
      },
      machine: MACHINE,
    });
    assert.match(conf.error?.nixMessage ?? "", /is not a regular file \(a FIFO\): Nix blocks reading it/);
    for (const p of [fifo, "/dev/zero", join(dir, "huge")]) {
      const r = parseBuilders({
        spec: `@${p}`,
        version: NIX_2_8,
        defaultSystem: "x86_64-linux",
        fs: nodeFileReader,
      });
      assert.equal(r.error?.kind, "SysError", p);
      assert.equal(r.error?.nix, false, p);
      assert.equal(r.machines.length, 0);
    }
  });

  it("the helper program runs the same algorithm (as ourselves, through node -e)", () => {
    const r = spawnSync(process.execPath, ["-e", HELPER_SOURCE], {
      input: `${cases()
        .map(([p]) => JSON.stringify({ op: "read", path: p }))
        .join("\n")}\n`,
      timeout: 20_000,
      maxBuffer: 1 << 20,
    });
    const answers = r.stdout
      .toString("utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as unknown);
    assert.deepEqual(
      answers,
      cases().map(([, want]) => want),
    );
  });
});

describe("rule 2: read as the user, not as root", {
  skip: !IS_ROOT && "needs root (a throwaway user)",
}, () => {
  let u: Throwaway;
  let dir = "";
  let canary = "";
  let rootKey = "";
  before(() => {
    u = makeUser();
    dir = mkdtempSync("/tmp/nb-asuser-");
    chmodSync(dir, 0o755);
    canary = `nbcanary${randomBytes(8).toString("hex")}`;
    writeFileSync(join(dir, "root-only"), `cores = 7\n${canary}\n`, { mode: 0o600 });
    rootKey = sshKey(dir, "root-key");
    mkdirSync(join(dir, "private"), { mode: 0o700 });
    writeFileSync(join(dir, "private", "x.conf"), "cores = 9\n", { mode: 0o644 });
    writeFileSync(join(dir, "readable"), "cores = 5\n", { mode: 0o644 });
    mkdirSync(join(dir, "d"));
    mkdirSync(join(u.home, ".config", "nix"), { recursive: true });
    for (const p of [join(u.home, ".config"), join(u.home, ".config", "nix")]) chownSync(p, u.uid, u.gid);
  });
  after(() => {
    if (u) removeUser(u);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const conf = () => join(u.home, ".config", "nix", "nix.conf");
  function setConf(text: string | { link: string }): void {
    rmSync(conf(), { force: true });
    if (typeof text === "string") {
      writeFileSync(conf(), text);
      chownSync(conf(), u.uid, u.gid);
    } else symlinkSync(text.link, conf());
  }

  it("the helper sees what the user sees: EACCES for root-only files, the same answers otherwise", () => {
    const r = helperReader(resolveIdentity(u.name));
    assert.deepEqual(r.read(join(dir, "root-only")), { ok: false, code: "EACCES" });
    assert.deepEqual(r.read(join(dir, "private", "x.conf")), { ok: false, code: "EACCES" });
    assert.deepEqual(r.exists(join(dir, "private", "x.conf")), { ok: false, code: "EACCES" });
    assert.deepEqual(r.read("/etc/shadow"), { ok: false, code: "EACCES" });
    assert.deepEqual(r.read(join(dir, "readable")), { ok: true, text: "cores = 5\n" });
    assert.deepEqual(r.read("/dev/zero"), { ok: false, code: "ENOTREG", detail: "a character device" });
    assert.deepEqual(r.read(join(dir, "d")), { ok: false, code: "EISDIR" });
    const f = r.facts(join(dir, "root-only"));
    assert.equal(f.readable, false);
    assert.equal(f.ownerUid, 0);
    assert.equal(r.helpersStarted, 1, "one helper process for every read of this identity");
    r.close();
  });

  it("one helper per identity and run, shared by every reader user (readerFor)", () => {
    const id = resolveIdentity(u.name);
    const a = readerFor(id);
    assert.equal(readerFor(id), a);
    assert.equal(readerFor(resolveIdentity(0)), nodeFileReader, "root reads its own files itself");
    for (let i = 0; i < 50; i++) a.read(join(dir, "readable"));
    assert.equal((a as unknown as { helpersStarted: number }).helpersStarted, 1);
  });

  it("a command run in-process leaves no process of the user behind (the user can be deleted next)", async () => {
    setConf(`include ${join(dir, "readable")}\n`);
    const { runShow } = await import("../../src/commands/show.js");
    const { captureIo } = await import("../support/capture-io.js");
    const io = captureIo({});
    assert.ok([0, STORE_ONLY_EXIT].includes(await runShow({ user: u.name }, io)), io.stderr);
    assert.match(io.stdout, new RegExp(`user ${u.name}`));
    let left = "";
    for (let i = 0; i < 50; i++) {
      await new Promise((r) => setTimeout(r, 20));
      left = spawnSync("pgrep", ["-u", String(u.uid)], { encoding: "utf8", timeout: 5000 }).stdout.trim();
      if (left === "") break;
    }
    assert.equal(left, "", "a helper process of the user is still running");
  });

  it("a helper that misses its deadline is killed, and later reads fail fast with ETIMEDOUT", () => {
    const r = helperReader(resolveIdentity(u.name), 1); // 1 ms: even starting node takes longer
    assert.deepEqual(r.read(join(dir, "readable")), { ok: false, code: "ETIMEDOUT", detail: "timed out" });
    const t0 = Date.now();
    assert.equal(r.exists(join(dir, "readable")).ok, false);
    assert.ok(Date.now() - t0 < 100);
  });

  it("finding 4: an include of a root-only file is unreadable for the user, skipped as Nix does, never printed", async () => {
    setConf(`include ${join(dir, "root-only")}\ncores = 3\n`);
    for (const cmd of ["config", "show", "lint"]) {
      const r = await runCli([cmd, "--user", u.name]);
      const out = r.stdout + r.stderr;
      assert.ok(!out.includes(canary), `${cmd} printed the root-only file:\n${out}`);
      assert.ok(okOrStoreOnly(r.code, out), `${cmd}: ${out}`);
      if (cmd === "config") {
        assert.match(out, new RegExp(`unreadable for ${u.name}: Permission denied \\(Nix skips it\\)`));
        assert.match(out, /cores += +3 /);
      }
    }
  });

  it("finding 4: a nix.conf linked to /etc/shadow or to a root-only key prints neither", async () => {
    const shadowCanary = `nbshadow${randomBytes(8).toString("hex")}`;
    execFileSync("usermod", ["-p", shadowCanary, u.name], { timeout: 20_000 });
    writeFileSync(join(dir, "root-key-copy"), rootKey, { mode: 0o600 });
    for (const link of ["/etc/shadow", join(dir, "root-key-copy")]) {
      setConf({ link });
      for (const cmd of ["config", "show", "lint"]) {
        const r = await runCli([cmd, "--user", u.name]);
        const out = r.stdout + r.stderr;
        assert.ok(!out.includes(shadowCanary), `${cmd} printed /etc/shadow`);
        for (const l of bodyLines(rootKey)) assert.ok(!out.includes(l), `${cmd} printed the key`);
        assert.ok(okOrStoreOnly(r.code, out), `${cmd} ${link}: ${out}`);
      }
    }
  });

  it("finding 5: a FIFO include and builders = @/dev/zero end at once with exit 2", async () => {
    spawnSync("mkfifo", ["-m", "666", join(dir, "fifo")], { timeout: 5000 });
    for (const text of [
      `include ${join(dir, "fifo")}\n`,
      "builders = @/dev/zero\n",
      `builders = @${join(dir, "fifo")}\n`,
    ])
      for (const cmd of ["config", "show", "lint", "route"]) {
        if (cmd === "config" && text.startsWith("builders")) continue;
        setConf(text);
        const args =
          cmd === "route" ? [cmd, "--user", u.name, "--system", "aarch64-linux"] : [cmd, "--user", u.name];
        const r = await runCli(args, { deadlineMs: 20_000 });
        assert.equal(r.timedOut, false, `${cmd} with ${text} hung`);
        assert.equal(r.code, 2, `${cmd} with ${text}: ${r.stdout}${r.stderr}`);
        assert.match(r.stdout + r.stderr, /not a regular file \((a FIFO|a character device)\)/);
      }
  });

  it("finding 6: builders = @<the user's own key> lists no machine and prints no key line", async () => {
    const key = sshKey(dir, "u-key", ["-t", "ecdsa", "-m", "PKCS8"]);
    chownSync(join(dir, "u-key"), u.uid, u.gid);
    setConf(`builders = @${join(dir, "u-key")}\n`);
    for (const cmd of ["show", "lint"]) {
      const r = await runCli([cmd, "--user", u.name, "--json"]);
      const out = r.stdout + r.stderr;
      for (const l of bodyLines(key)) assert.ok(!out.includes(l), `${cmd} printed the key`);
      assert.equal(r.code, 2);
      assert.match(out, /is a private key, not a machines file/);
      if (cmd === "show") assert.deepEqual((JSON.parse(r.stdout) as { machines: unknown[] }).machines, []);
    }
  });

  describe("the verdict agrees with Nix 2.8 run as the user", { skip: !HAVE_NIX && "needs nix" }, () => {
    /** `cores` and `max-jobs` as real Nix, run as the user, sees them for a user nix.conf `text`. */
    function nixAsUser(confFile: string): { cores: number; maxJobs: number } | string {
      const r = spawnSync(
        "setpriv",
        [
          `--reuid=${u.uid}`,
          `--regid=${u.gid}`,
          "--init-groups",
          "--",
          "nix",
          "show-config",
          "--json",
          "--extra-experimental-features",
          "nix-command",
        ],
        {
          env: {
            PATH: "/usr/bin:/bin",
            HOME: u.home,
            NIX_CONF_DIR: join(dir, "no-etc"),
            NIX_USER_CONF_FILES: confFile,
          },
          timeout: 20_000,
          encoding: "utf8",
        },
      );
      if (r.status !== 0) return r.stderr.trim().replace(/^error: /, "");
      const j = JSON.parse(r.stdout) as Record<string, { value: number }>;
      return { cores: j["cores"]!.value, maxJobs: j["max-jobs"]!.value };
    }
    function oursAsUser(confFile: string): { cores: number; maxJobs: number } | string {
      const v = loadConfig({
        version: NIX_2_8,
        env: { NIX_CONF_DIR: join(dir, "no-etc"), NIX_USER_CONF_FILES: confFile, HOME: u.home },
        passwdHome: u.home,
        fs: readerFor(resolveIdentity(u.name)),
        machine: MACHINE,
      });
      if (v.error) return v.error.nixMessage;
      return {
        cores: v.settings.get("cores")!.value as number,
        maxJobs: v.settings.get("max-jobs")!.value as number,
      };
    }
    const cases = (): [string, string][] => [
      ["include of a root-only file", `max-jobs = 4\ninclude ${join(dir, "root-only")}\ncores = 3\n`],
      ["!include of a root-only file", `!include ${join(dir, "root-only")}\ncores = 3\n`],
      [
        "include under a directory the user cannot enter",
        `include ${join(dir, "private", "x.conf")}\ncores = 3\n`,
      ],
      ["include of a directory", `include ${join(dir, "d")}\ncores = 3\n`],
      ["include of a readable file", `include ${join(dir, "readable")}\nmax-jobs = 6\n`],
    ];
    for (const [name, text] of cases())
      it(name, () => {
        const f = join(dir, `case-${randomBytes(3).toString("hex")}.conf`);
        writeFileSync(f, text, { mode: 0o644 });
        assert.deepEqual(oursAsUser(f), nixAsUser(f));
      });
    it("a user nix.conf the user cannot read (Nix skips it)", () => {
      assert.deepEqual(oursAsUser(join(dir, "root-only")), nixAsUser(join(dir, "root-only")));
      assert.ok(existsSync(join(dir, "root-only")));
    });
  });
});
