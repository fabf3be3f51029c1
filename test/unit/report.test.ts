/**
 * snapshot → resolve, `report` and `--from`: resolveUserView on hand-made snapshots (table-driven), a
 * bundle taken on a fixture host (a private config tree, a machines file and a real ssh key) replayed to
 * identical `show --json`, `lint --json`, `route --json` and `config --json`, the refusals of `--from`,
 * the private file written by `--output`, and no private key bytes in a bundle.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { Refusal, UsageError } from "../../src/app/io.js";
import { runConfig } from "../../src/commands/config.js";
import { runExplain } from "../../src/commands/explain.js";
import { runLint } from "../../src/commands/lint.js";
import { runReport } from "../../src/commands/report.js";
import { runRoute } from "../../src/commands/route.js";
import { runShow } from "../../src/commands/show.js";
import type { ReadResult } from "../../src/nix/conf.js";
import {
  type HostSnapshot,
  SNAPSHOT_FORMAT,
  SNAPSHOT_VERSION,
  type SnapshotUser,
} from "../../src/nix/snapshot.js";
import { resolveUserView } from "../../src/nix/user-view.js";
import { NIX_2_8, type NixVersion } from "../../src/nix/version.js";
import { captureIo } from "../support/capture-io.js";

const root = mkdtempSync(join(tmpdir(), "nb-report-"));
after(() => rmSync(root, { recursive: true, force: true }));

const V230: NixVersion = { major: 2, minor: 30, patch: 5 };

function user(name: string, uid: number, groups: string[] = []): SnapshotUser {
  return {
    name,
    uid,
    gid: uid,
    home: uid === 0 ? "/root" : `/home/${name}`,
    shell: "/bin/sh",
    primaryGroup: name,
    supplementaryGroups: groups,
    source: "files",
  };
}

const ROOT = user("root", 0);
const ALICE = user("alice", 1000, ["wheel"]);

/** A snapshot of `who` with `files` read by uid (text, or an errno name). */
function snap(
  who: SnapshotUser,
  opts: {
    daemon: boolean;
    stateDirWritable?: boolean;
    files?: Record<number, Record<string, string>>;
    builders?: string;
  },
): HostSnapshot {
  const files: HostSnapshot["files"] = {};
  for (const [uid, fs] of Object.entries(opts.files ?? {})) {
    const read: Record<string, ReadResult> = {};
    for (const [p, t] of Object.entries(fs))
      read[p] = /^E[A-Z]+$/.test(t) ? { ok: false, code: t } : { ok: true, text: t };
    files[uid] = { who: uid, read, exists: {}, facts: {} };
  }
  return {
    format: SNAPSHOT_FORMAT,
    formatVersion: SNAPSHOT_VERSION,
    takenAt: "2026-12-08T00:00:00.000Z",
    uid: 0,
    nix: { install: null, problem: null },
    version: NIX_2_8,
    versionSource: "flag",
    facts: {
      system: "x86_64-linux",
      extraPlatforms: [],
      systemFeatures: [],
      cores: 2,
      hardwareThreads: 2,
      source: "computed",
    },
    user: who,
    root: ROOT,
    serviceEnv: true,
    env: { HOME: who.home, NIX_CONF_DIR: "/etc/nix", NIX_USER_CONF_FILES: `${who.home}/nix.conf` },
    groups: [{ name: "wheel", gid: 10, members: ["alice"] }],
    clientOverrides: [],
    builders: opts.builders ?? null,
    store: {
      stateDir: "/nix/var/nix",
      socket: "/nix/var/nix/daemon-socket/socket",
      socketExists: opts.daemon,
      stateDirWritable: opts.stateDirWritable ?? !opts.daemon,
    },
    files,
    keys: {},
    load: null,
    redactions: [],
  };
}

const DAEMON_CONF = "builders = @/etc/nix/machines\n";
const MACHINES = "ssh://b1 x86_64-linux - 2\nssh://b2 aarch64-linux - 1\n";

describe("resolveUserView: the rules of the user view, on snapshots", () => {
  const cases: {
    name: string;
    s: HostSnapshot;
    version?: NixVersion;
    want: {
      storeMode: string;
      hookUser: string;
      from: "daemon" | "user";
      builders: string;
      machines: string[];
      trusted: boolean;
      ignored?: string[];
      trustReason?: RegExp;
      unusable?: RegExp;
      problem?: RegExp;
    };
  }[] = [
    {
      name: "no daemon: the user's builders, the hook runs as the user",
      s: snap(ALICE, {
        daemon: false,
        files: { 1000: { "/home/alice/nix.conf": "builders = ssh://u x86_64-linux\n" } },
      }),
      want: {
        storeMode: "local",
        hookUser: "alice",
        from: "user",
        builders: "ssh://u x86_64-linux",
        machines: ["ssh://u"],
        trusted: true,
        trustReason: /^no daemon: alice uses the store directly/,
      },
    },
    {
      name: "daemon, user not trusted: the user's builders are ignored, the daemon's machines as root",
      s: snap(ALICE, {
        daemon: true,
        files: {
          0: { "/etc/nix/nix.conf": DAEMON_CONF, "/etc/nix/machines": MACHINES },
          1000: {
            "/etc/nix/nix.conf": DAEMON_CONF,
            "/home/alice/nix.conf": "builders = ssh://mine x86_64-linux\n",
          },
        },
      }),
      want: {
        storeMode: "daemon",
        hookUser: "root",
        from: "daemon",
        builders: "@/etc/nix/machines",
        machines: ["ssh://b1", "ssh://b2"],
        trusted: false,
        ignored: ["builders"],
      },
    },
    {
      name: "daemon, user trusted through @wheel: the user's builders reach the hook (run as root)",
      s: snap(ALICE, {
        daemon: true,
        files: {
          0: { "/etc/nix/nix.conf": `trusted-users = root @wheel\n${DAEMON_CONF}` },
          1000: {
            "/etc/nix/nix.conf": `trusted-users = root @wheel\n${DAEMON_CONF}`,
            "/home/alice/nix.conf": "builders = ssh://mine x86_64-linux\n",
          },
        },
      }),
      want: {
        storeMode: "daemon",
        hookUser: "root",
        from: "user",
        builders: "ssh://mine x86_64-linux",
        machines: ["ssh://mine"],
        trusted: true,
      },
    },
    {
      name: "daemon: a machines file root cannot read is a problem of the include, read as root",
      s: snap(ALICE, {
        daemon: true,
        files: { 0: { "/etc/nix/nix.conf": DAEMON_CONF, "/etc/nix/machines": "EACCES" } },
      }),
      want: {
        storeMode: "daemon",
        hookUser: "root",
        from: "daemon",
        builders: "@/etc/nix/machines",
        machines: [],
        trusted: false,
        problem: /Permission denied/,
      },
    },
    {
      name: "no daemon, state dir not writable (2.8): every Nix command fails fixing per-user's mode",
      s: snap(ALICE, { daemon: false, stateDirWritable: false }),
      want: {
        storeMode: "local",
        hookUser: "alice",
        from: "user",
        builders: "@/etc/nix/machines",
        machines: [],
        trusted: true,
        unusable: /could not set permissions on '\/nix\/var\/nix\/profiles\/per-user'/,
      },
    },
    {
      name: "no daemon, state dir not writable (2.30): the big lock",
      s: snap(ALICE, { daemon: false, stateDirWritable: false }),
      version: V230,
      want: {
        storeMode: "local",
        hookUser: "alice",
        from: "user",
        builders: "@/etc/nix/machines",
        machines: [],
        trusted: true,
        unusable: /opening lock file '\/nix\/var\/nix\/db\/big-lock'/,
      },
    },
    {
      name: "--builders as a flag, no daemon: it wins over the files",
      s: snap(ROOT, {
        daemon: false,
        builders: "ssh://flag x86_64-linux",
        files: { 0: { "/root/nix.conf": "builders = ssh://file x86_64-linux\n" } },
      }),
      want: {
        storeMode: "local",
        hookUser: "root",
        from: "user",
        builders: "ssh://flag x86_64-linux",
        machines: ["ssh://flag"],
        trusted: true,
      },
    },
  ];
  for (const c of cases)
    it(c.name, () => {
      const v = resolveUserView(c.s, c.version ?? NIX_2_8);
      assert.equal(v.storeMode, c.want.storeMode);
      assert.equal(v.hookUser.name, c.want.hookUser);
      assert.equal(v.builders.from, c.want.from);
      assert.equal(v.builders.value, c.want.builders);
      assert.deepEqual(
        v.machines.machines.map((m) => m.storeUri),
        c.want.machines,
      );
      assert.equal(v.trusted, c.want.trusted);
      if (c.want.ignored)
        assert.deepEqual(
          v.ignored.map((i) => i.setting),
          c.want.ignored,
        );
      if (c.want.trustReason) assert.match(v.trustReason, c.want.trustReason);
      if (c.want.unusable) assert.match(v.storeUnusable?.nixMessage ?? "", c.want.unusable);
      else assert.equal(v.storeUnusable, null);
      if (c.want.problem) assert.match(v.machines.includes[0]?.problem ?? "", c.want.problem);
    });

  it("survives JSON: a snapshot parsed back resolves to the same view", () => {
    const s = cases[1]!.s;
    const back = JSON.parse(JSON.stringify(s)) as HostSnapshot;
    assert.deepEqual(back, s);
    const a = resolveUserView(s, NIX_2_8);
    const b = resolveUserView(back, NIX_2_8);
    assert.deepEqual(b.machines, a.machines);
    assert.deepEqual(b.ignored, a.ignored);
  });
});

let n = 0;
/** A fixture host: a config tree, a machines file naming a real ssh key, and a local store (no daemon). */
function fixtureHost(): { env: NodeJS.ProcessEnv; dir: string; key: string } {
  const dir = join(root, `h${n++}`);
  mkdirSync(join(dir, "etc"), { recursive: true });
  mkdirSync(join(dir, "ssh"), { mode: 0o700 });
  const key = join(dir, "ssh", "id_ed25519");
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", key], { timeout: 10_000 });
  writeFileSync(
    join(dir, "etc", "machines"),
    `ssh://b1 x86_64-linux ${key} 2 1 kvm\nssh://b2 aarch64-linux ${join(dir, "ssh", "missing")} 1\n`,
  );
  writeFileSync(
    join(dir, "etc", "nix.conf"),
    `builders = @${join(dir, "etc", "machines")}\nmax-jobs = 0\nno-such-setting = 1\n`,
  );
  writeFileSync(join(dir, "user.conf"), "cores = 1\n");
  return {
    dir,
    key,
    env: {
      PATH: process.env["PATH"],
      HOME: dir,
      NIX_CONF_DIR: join(dir, "etc"),
      NIX_USER_CONF_FILES: join(dir, "user.conf"),
      NIX_STATE_DIR: join(dir, "state"),
      NIX_REMOTE: join(dir, "store"),
      SECRET_OF_THE_CALLER: "not-for-the-bundle",
    },
  };
}

async function take(env: NodeJS.ProcessEnv, output: string): Promise<string> {
  const io = captureIo(env);
  assert.equal(await runReport({ output }, io), 0, io.stderr);
  return readFileSync(output, "utf8");
}

async function out(
  run: (io: ReturnType<typeof captureIo>) => Promise<number>,
  env: NodeJS.ProcessEnv,
): Promise<[number, string]> {
  const io = captureIo(env);
  const code = await run(io);
  return [code, io.stdout];
}

describe("report and --from on a fixture host", () => {
  it("replays to byte-identical show, lint, route and config --json", async () => {
    const h = fixtureHost();
    const bundle = join(h.dir, "bundle.json");
    const text = await take(h.env, bundle);
    assert.equal(statSync(bundle).mode & 0o777, 0o600);
    const data = JSON.parse(text) as HostSnapshot;
    assert.equal(data.format, "nix-builders-report");
    assert.equal(data.env["SECRET_OF_THE_CALLER"], undefined, "only the variables Nix reads are kept");
    // another environment for the replay: the answer must come from the bundle alone
    const other = { PATH: process.env["PATH"], HOME: "/nonexistent" };
    const pairs: [string, (io: ReturnType<typeof captureIo>, from?: string) => Promise<number>][] = [
      ["show", (io, from) => runShow({ json: true, ...(from ? { from } : {}) }, io)],
      ["lint", (io, from) => runLint({ json: true, ...(from ? { from } : {}) }, io)],
      [
        "route",
        (io, from) =>
          runRoute({ json: true, system: "x86_64-linux", ...(from ? { from } : {}) }, undefined, io),
      ],
      ["config", (io, from) => runConfig({ json: true, ...(from ? { from } : {}) }, io)],
    ];
    for (const [name, run] of pairs) {
      const live = await out((io) => run(io), h.env);
      const replay = await out((io) => run(io, bundle), other);
      assert.equal(replay[1], live[1], `${name} --json differs`);
      assert.equal(replay[0], live[0], `${name} exit code differs`);
    }
    const lint = JSON.parse((await out((io) => runLint({ json: true, from: bundle }, io), other))[1]);
    const ids = lint.findings.map((f: { id: string }) => f.id);
    assert.ok(ids.includes("unknown-setting"), ids.join(" "));
    assert.ok(
      ids.some((i: string) => i.startsWith("key-")),
      `a key finding: ${ids.join(" ")}`,
    );
  });

  it("never holds private key bytes: a key included as a nix.conf is replaced, key files are facts only", async () => {
    const h = fixtureHost();
    writeFileSync(join(h.dir, "user.conf"), `cores = 1\ninclude ${h.key}\n`);
    writeFileSync(
      join(h.dir, "etc", "nix.conf"),
      `${readFileSync(join(h.dir, "etc", "nix.conf"), "utf8")}access-tokens = github.com=ghp_SECRETTOKEN\n`,
    );
    const text = await take(h.env, join(h.dir, "b.json"));
    const keyText = readFileSync(h.key, "utf8");
    const body = keyText.split("\n").filter((l) => l !== "" && !l.startsWith("-----"));
    assert.ok(body.length > 0);
    for (const line of body) assert.ok(!text.includes(line), "a line of the private key is in the bundle");
    assert.ok(!text.includes("PRIVATE KEY-----"));
    assert.ok(!text.includes("ghp_SECRETTOKEN"));
    const data = JSON.parse(text) as HostSnapshot;
    assert.ok(
      data.redactions.some((r) => r.startsWith(`${h.key}: looks like a private key`)),
      data.redactions.join("\n"),
    );
    assert.ok(data.redactions.some((r) => r.includes("access-tokens")));
    const facts = data.keys["0"]?.[h.key];
    assert.equal(facts?.exists, true);
    assert.equal(facts?.mode, 0o600);
  });

  it("--output replaces a link at the path, never writes through it", async () => {
    const h = fixtureHost();
    const victim = join(h.dir, "victim");
    writeFileSync(victim, "keep\n");
    const link = join(h.dir, "out.json");
    symlinkSync(victim, link);
    await take(h.env, link);
    assert.equal(readFileSync(victim, "utf8"), "keep\n");
    assert.ok(lstatSync(link).isFile());
    assert.equal(lstatSync(link).mode & 0o777, 0o600);
  });

  it("refuses, in one line naming the file, what is not a report of this version", async () => {
    const h = fixtureHost();
    const bad = (name: string, text: string): string => {
      const p = join(h.dir, name);
      writeFileSync(p, text);
      return p;
    };
    const big = join(h.dir, "big.json");
    writeFileSync(big, "{}");
    truncateSync(big, 65 * 1024 * 1024);
    const cases: [string, RegExp][] = [
      [bad("notjson", "hello"), /: not a nix-builders report \(not JSON\)$/],
      [
        bad("other.json", '{"format":"something-else"}'),
        /: not a nix-builders report \(format is not 'nix-builders-report'\)$/,
      ],
      [
        bad("v9.json", '{"format":"nix-builders-report","formatVersion":9}'),
        /: report format version 9 is not supported/,
      ],
      [big, /: cannot read the report: larger than 64 MiB$/],
      [h.dir, /: cannot read the report: is a directory$/],
      [join(h.dir, "absent.json"), /: cannot read the report: no such file$/],
    ];
    for (const [path, re] of cases)
      for (const run of [
        (io: ReturnType<typeof captureIo>) => runShow({ json: true, from: path }, io),
        (io: ReturnType<typeof captureIo>) => runLint({ from: path }, io),
      ])
        await assert.rejects(run(captureIo({})), (e: unknown) => {
          assert.ok(e instanceof Refusal, String(e));
          assert.ok(e.message.startsWith(`${path}: `), e.message);
          assert.match(e.message, re);
          assert.ok(!e.message.includes("\n"));
          return true;
        });
  });

  it("explain --from follows the bundle's Nix version, as --nix-version does", async () => {
    const h = fixtureHost();
    const s = snap(ROOT, { daemon: false });
    s.nix.install = { nixPath: "/x/nix", binDir: "/x", version: V230, versionText: "nix (Nix) 2.30.5" };
    const bundle = join(h.dir, "v230.json");
    writeFileSync(bundle, JSON.stringify(s));
    const input = {
      readFile: async () => readFileSync("test/fixtures/logs/no-machine-local-fallback.log", "utf8"),
      readStdin: async () => "",
    };
    const viaFrom = captureIo({});
    const viaFlag = captureIo({});
    const none = captureIo({});
    await runExplain("log", { json: true, from: bundle }, viaFrom, input);
    await runExplain("log", { json: true, nixVersion: "2.30" }, viaFlag, input);
    await runExplain("log", { json: true, nixVersion: "2.8" }, none, input);
    assert.equal(viaFrom.stdout, viaFlag.stdout);
    assert.notEqual(viaFrom.stdout, none.stdout, "the version changes the answer for this log");
  });

  it("--from with what a bundle cannot answer is a usage error", async () => {
    const h = fixtureHost();
    const bundle = join(h.dir, "b.json");
    await take(h.env, bundle);
    const runs: [string, Promise<number>][] = [
      [
        "route DRV",
        runRoute({ from: bundle }, "/nix/store/00000000000000000000000000000000-x.drv", captureIo({})),
      ],
      ["--builders", runShow({ from: bundle, builders: "ssh://x" }, captureIo({}))],
      ["lint FILE", runLint({ from: bundle, files: ["/etc/hostname"] }, captureIo({}))],
      ["another user", runShow({ from: bundle, user: "nobody" }, captureIo({}))],
      ["--agent without one", runShow({ from: bundle, agent: true }, captureIo({}))],
    ];
    for (const [what, p] of runs) await assert.rejects(p, UsageError, what);
  });
});
