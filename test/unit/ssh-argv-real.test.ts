/**
 * Differential test: the ssh command line the real build hooks of Nix 2.8 and Nix 2.30 run, recorded
 * by a fake `ssh` first on PATH (it writes its argv and exits 1, so nothing connects), against
 * `nixSshArgv` for that version. Cases cover NIX_SSHOPTS (2.8's whitespace split, 2.26's shell-word
 * split), ssh keys from the machine column and the URI, `compress`, `remote-program`, `remote-store`,
 * users, IPv6, and both `ssh://` and `ssh-ng://`. The `-oUserKnownHostsFile=` of a pinned host key is
 * a temporary path Nix picks, so it is compared up to that path.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { nixSshArgv } from "../../src/remote/ssh-argv.js";
import { runBuildRemote, scratchDir } from "../support/build-remote.js";
import { REAL_NIXES, type RealNix } from "../support/nix-versions.js";

interface Case {
  uri: string;
  key?: string;
  hostKey?: string;
  sshOpts?: string;
}

const HOSTKEY = Buffer.from(
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMOF2yqIJnEEUbBXMS2XiG3PI2ykwvNJPkkmMAJXHiWj",
).toString("base64");

const CASES: Case[] = [
  { uri: "ssh://h1" },
  { uri: "ssh://nix@h2" },
  { uri: "ssh-ng://nix@h3" },
  { uri: "ssh://nix@h4", key: "/etc/nix/key" },
  { uri: "ssh-ng://nix@h5", key: "/etc/nix/key" },
  { uri: "ssh://h6?ssh-key=/k/uri" },
  { uri: "ssh://h7?ssh-key=/k/uri", key: "/k/column" },
  { uri: "ssh://h8?compress=true" },
  { uri: "ssh-ng://h9?compress=true" },
  { uri: "ssh://h10?remote-program=/opt/nix/bin/nix-store" },
  { uri: "ssh-ng://h11?remote-program=/opt/nix/bin/nix-daemon" },
  { uri: "ssh://h12?remote-store=/tmp/s" },
  { uri: "ssh-ng://h13?remote-store=/tmp/s" },
  { uri: "ssh://h14", sshOpts: "-o ConnectTimeout=3 -p 2222" },
  { uri: "ssh-ng://h15", sshOpts: "-o ConnectTimeout=3" },
  { uri: "ssh://h16", sshOpts: "-o 'ProxyCommand=nc %h %p'" },
  { uri: "ssh://h17", sshOpts: "  -4   -v " },
  { uri: "ssh://h18", hostKey: HOSTKEY },
  { uri: "ssh-ng://h19", hostKey: HOSTKEY, key: "/k" },
  { uri: "ssh://[::1]" },
  { uri: "ssh://nix@h20?remote-program=nix-store%20-v" },
];

function describeArgv(n: RealNix): void {
  describe(`ssh argv: what the real Nix ${n.label} hook runs`, { skip: n.skipReason }, () => {
    const base = join(scratchDir(), `ssh-argv-${n.label}`);
    const fakeBin = join(base, "bin");
    const log = join(base, "argv");
    for (const c of CASES) {
      test(`${c.uri}${c.key ? ` key ${c.key}` : ""}${c.hostKey ? " pinned" : ""}${c.sshOpts !== undefined ? ` NIX_SSHOPTS=${c.sshOpts}` : ""}`, async () => {
        mkdirSync(fakeBin, { recursive: true });
        writeFileSync(
          join(fakeBin, "ssh"),
          // One file per run ($$): 2.30 runs the command and `ssh -O check` at once, and two appends to
          // one file could interleave.
          `#!/bin/sh\n{ for a in "$@"; do printf '%s\\0' "$a"; done; printf '\\1'; } > '${log}'.$$\nexit 1\n`,
        );
        chmodSync(join(fakeBin, "ssh"), 0o755);
        for (const f of readdirSync(base)) if (f.startsWith("argv.")) rmSync(join(base, f), { force: true });
        const line = `${c.uri} x86_64-linux ${c.key ?? "-"} 1 1 - - ${c.hostKey ?? "-"}`;
        const env: Record<string, string | undefined> = { PATH: `${fakeBin}:${process.env["PATH"]}` };
        if (c.sshOpts !== undefined) env["NIX_SSHOPTS"] = c.sshOpts;
        const real = await runBuildRemote({
          hook: n.buildRemote,
          builders: line,
          system: "x86_64-linux",
          store: join(base, "store"),
          extraSettings: { "build-users-group": "" },
          env,
          timeoutMs: 15_000,
        });
        // Each run is one record; 2.30 also runs `ssh -O check <host> …` (is a master running?) after
        // starting the command, so the command is the record that is not that check.
        const runs = readdirSync(base)
          .filter((f) => f.startsWith("argv."))
          .map((f) => readFileSync(join(base, f), "utf8"))
          .join("")
          .split("\u0001")
          .slice(0, -1)
          .map((r) => r.split("\0").slice(0, -1));
        const checks = runs.filter((r) => r[0] === "-O" && r[1] === "check");
        const commands = runs.filter((r) => !(r[0] === "-O" && r[1] === "check"));
        assert.equal(commands.length, 1, JSON.stringify(runs));
        const argv = commands[0]!;
        const known = argv.findIndex((a) => a.startsWith("-oUserKnownHostsFile="));
        const ours = nixSshArgv({
          version: n.version!,
          storeUri: c.uri,
          sshKey: c.key ?? null,
          base64PublicHostKey: c.hostKey ?? null,
          hostKeyFile: known >= 0 ? argv[known]!.slice("-oUserKnownHostsFile=".length) : "/unused",
          ...(c.sshOpts !== undefined ? { nixSshOpts: c.sshOpts } : {}),
        });
        assert.equal(ours.program, "ssh");
        assert.deepEqual(ours.args, argv, real.stderr);
        if (ours.expectStartedLine) {
          // the master check carries the same host and common options, without -x and the command (verbosity is 1: no -v of its own)
          assert.equal(checks.length, 1, JSON.stringify(runs));
          const common = ours.args.slice(2, ours.args.indexOf("--"));
          assert.deepEqual(checks[0], ["-O", "check", ours.args[0], ...common]);
        } else assert.equal(checks.length, 0, JSON.stringify(runs));
      });
    }
  });
}

for (const n of REAL_NIXES) describeArgv(n);
