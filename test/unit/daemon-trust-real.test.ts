/**
 * Differential test: trust and client settings against throwaway daemons of real Nix 2.8 and real
 * Nix 2.30. Each daemon serves a chroot store on its own socket with a nix.conf of our choosing; a
 * worker-protocol client (`test/support/daemon-client.ts`) connects as root and as `nobody` (through
 * `setpriv`), sends SetOptions with a set of overrides at verbosity 7, and records every message the
 * daemon sends back. The model must give:
 * * who is trusted (`matchUserList` on `trusted-users`): 2.30 says it in the handshake (protocol 1.35+);
 *   on 2.8 it shows in the messages (a trusted client gets no "restricted setting" lines);
 * * every message, its level (2.8 says "restricted setting" at debug, 2.22+ as a warning) and its order
 *   (`applyClientSettings` over the overrides in the order the client sends them, sorted by name).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { applyClientSettings, matchUserList, type OverriddenSetting } from "../../src/nix/trust.js";
import { atLeast } from "../../src/nix/version.js";
import { REAL_NIXES, type RealNix } from "../support/nix-versions.js";

const isRoot = process.getuid?.() === 0;
const haveSetpriv = spawnSync("setpriv", ["--version"]).status === 0;

/** Overrides a Nix client sends (fixed-field settings such as max-silent-time travel as fields, not here). */
const OVERRIDES: Record<string, string> = {
  substituters: "https://a.example https://b.example https://c.example https://a.example",
  sandbox: "false",
  timeout: "5",
  builders: "ssh://x",
  "post-build-hook": "/bin/true",
  "connect-timeout": "3",
  "unknown-thing": "1",
  "build-poll-interval": "2",
  "allowed-uris": "https://x",
};

const DAEMON_CONF = [
  "sandbox = false",
  "build-users-group =",
  "substituters = https://a.example/",
  "trusted-substituters = https://b.example",
];

interface Peer {
  label: string;
  setpriv: string[];
  subject: { name: string; primaryGroup: string; supplementaryGroups: string[] };
}

const PEERS: Peer[] = [
  { label: "root", setpriv: [], subject: { name: "root", primaryGroup: "root", supplementaryGroups: [] } },
  {
    label: "nobody",
    setpriv: ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
    subject: { name: "nobody", primaryGroup: "nogroup", supplementaryGroups: [] },
  },
];

function describeTrust(n: RealNix, trustedUsers: string[]): void {
  const skip = (!isRoot && "needs root") || (!haveSetpriv && "needs setpriv") || n.skipReason;
  describe(`daemon trust and client settings: real Nix ${n.label}, trusted-users = ${trustedUsers.join(" ")}`, {
    skip,
  }, () => {
    let tmp = "";
    let sock = "";
    let daemon: ChildProcess | undefined;
    let log = "";
    // what the client sends: the overrides, sorted by name (plugin-files is not sent from 2.24 on)
    const overrides = Object.fromEntries(
      [
        ...Object.entries(OVERRIDES),
        ...(atLeast(n.version ?? { major: 2, minor: 8, patch: 0 }, 2, 24) ? [] : [["plugin-files", ""]]),
      ].sort(([a], [b]) => (a! < b! ? -1 : 1)),
    ) as Record<string, string>;

    before(async () => {
      tmp = mkdtempSync(join(tmpdir(), "nb-trust-"));
      chmodSync(tmp, 0o755);
      const conf = join(tmp, "conf");
      mkdirSync(conf);
      writeFileSync(
        join(conf, "nix.conf"),
        [...DAEMON_CONF, `trusted-users = ${trustedUsers.join(" ")}`, ""].join("\n"),
      );
      sock = join(tmp, "daemon.sock");
      daemon = spawn(join(n.bin, "nix-daemon"), ["--store", join(tmp, "root")], {
        env: { ...process.env, NIX_CONF_DIR: conf, NIX_USER_CONF_FILES: "", NIX_DAEMON_SOCKET_PATH: sock },
        stdio: ["ignore", "ignore", "pipe"],
      });
      daemon.stderr!.on("data", (b: Buffer) => {
        log += b.toString();
      });
      for (let i = 0; i < 200 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(existsSync(sock), log);
      chmodSync(sock, 0o666);
    });
    after(async () => {
      if (daemon && daemon.exitCode === null) {
        const gone = new Promise((r) => daemon!.once("exit", r));
        daemon.kill("SIGTERM");
        await Promise.race([gone, new Promise((r) => setTimeout(r, 3000))]);
        if (daemon.exitCode === null) daemon.kill("SIGKILL");
      }
      if (tmp) rmSync(tmp, { recursive: true, force: true });
    });

    for (const peer of PEERS) {
      test(`${peer.label}`, () => {
        const arg = JSON.stringify({ socket: sock, clientVersion: 0x126, verbosity: 7, overrides });
        const cmd = [
          ...peer.setpriv,
          process.execPath,
          "--import",
          "tsx",
          "test/support/daemon-client.ts",
          arg,
        ];
        const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: "utf8", timeout: 30_000 });
        assert.equal(r.status, 0, r.stderr);
        const got = JSON.parse(r.stdout) as {
          handshake: { ok: boolean; trusted: string | null };
          messages: string[];
        };
        assert.ok(got.handshake.ok, r.stdout);
        const trusted = matchUserList(trustedUsers, peer.subject).matched;
        if (atLeast(n.version!, 2, 20))
          assert.equal(got.handshake.trusted, trusted ? "trusted" : "not-trusted");
        else assert.equal(got.handshake.trusted, null, "2.8 speaks protocol 1.34: no trust flag");
        const overridden: OverriddenSetting[] = Object.entries(overrides).map(([name, value]) => ({
          name,
          value,
          origin: { kind: "flag", flag: "--option" } as unknown as OverriddenSetting["origin"],
        }));
        const model = applyClientSettings({
          version: n.version!,
          trusted,
          overridden,
          daemonSettings: {
            substituters: ["https://a.example/"],
            trustedSubstituters: ["https://b.example"],
          },
        });
        const want = model.ignored
          .filter((x) => x.nixMessage !== null)
          .map((x) => (x.nixLogLevel === "warning" ? `warning: ${x.nixMessage}` : x.nixMessage));
        // a trusted 2.8 daemon also warns about plugin-files it cannot load any more (the model notes it as applied without effect)
        const seen = got.messages.filter(
          (m) => !m.startsWith("warning: error: plugin-files set after plugins"),
        );
        assert.deepEqual(seen, want);
      });
    }
  });
}

for (const n of REAL_NIXES) {
  describeTrust(n, ["root"]);
  describeTrust(n, ["@nogroup"]);
}
