/**
 * The explain knowledge base, as data: one entry per message Nix or ssh prints, with its patterns, the
 * Nix versions that print it, its cause and its fix. The engine that matches logs against it is
 * src/nix/explain.ts.
 */

import {
  builderOf,
  type Cause,
  FIX_BYPASS,
  FIX_FIND_EARLIER,
  FIX_TEST_AS_ROOT,
  type KnowledgeEntry,
  MACHINE_LINE_FORMAT,
  machinesColumnMeaning,
  parseNoMachineListing,
  quoteOr,
  rowHint,
  SHELLS_NOT_FOUND,
  splitList,
  verdictText,
} from "./explain-vocabulary.js";
import type { Severity } from "./findings.js";
import { NIX, since } from "./versions.js";

// ---------------------------------------------------------------------------------------------------------
// The knowledge base

type EntryDef = Omit<KnowledgeEntry, "generic" | "severity"> & { generic?: boolean; severity?: Severity };

function entry(e: EntryDef): KnowledgeEntry {
  return { generic: false, severity: "error", ...e };
}

export const KNOWLEDGE: readonly KnowledgeEntry[] = [
  // ----- ssh: host keys ---------------------------------------------------------------------------------
  entry({
    id: "ssh-host-key-failed",
    cause: "host-key",
    title: "ssh refused the builder's host key",
    patterns: [/Host key verification failed\./],
    versions: "all",
    source: "NixOS/nix#2030, #6867; docs/protocols.md",
    priority: 100,
    explain: (_m, ctx) => {
      const b = builderOf(ctx);
      return {
        summary: `The host key of the builder${b ? ` ${quoteOr(b, "")}` : ""} is not known to the user that runs ssh for Nix.`,
        detail:
          "Remote builds are started by the nix-daemon, i.e. root (or the hook's user without a daemon), non-interactively. ssh checks the builder's key against root's known_hosts, not yours, and cannot ask to accept it. That a plain `ssh host` works for you does not mean it works for root.",
        fix: [
          "Pin the key in the machines line: 8th column = `base64 -w0` of the builder's `/etc/ssh/ssh_host_ed25519_key.pub` (on NixOS: `nix.buildMachines.*.publicHostKey`).",
          "Or accept it once as root: `sudo ssh USER@HOST true` (on NixOS: `programs.ssh.knownHosts`).",
          FIX_TEST_AS_ROOT,
        ],
      };
    },
  }),
  entry({
    id: "ssh-host-key-changed",
    cause: "host-key",
    title: "the builder's host key changed",
    patterns: [
      /REMOTE HOST IDENTIFICATION HAS CHANGED/,
      /Host key for (\S+) has changed and you have requested strict checking/,
      /Offending (?:[A-Z0-9-]+ )?key (?:for IP )?in (\S+)/,
    ],
    versions: "all",
    source: "OpenSSH",
    priority: 100,
    explain: () => ({
      summary: "The builder presents a different host key than the one recorded for it.",
      detail:
        "Either the builder was reinstalled or re-keyed (common for VMs such as the darwin linux-builder), or the pinned key in the machines line (8th column) is stale, or something intercepts the connection. ssh refuses to continue.",
      fix: [
        "Verify the new key on the builder (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`).",
        "Then update the pin (8th machines column / `publicHostKey`) or remove the old entry from root's known_hosts: `sudo ssh-keygen -R HOST`.",
      ],
    }),
  }),
  // ----- ssh: authentication ---------------------------------------------------------------------------
  entry({
    id: "ssh-no-tty-passphrase",
    cause: "auth",
    title: "ssh wanted to ask for a passphrase",
    patterns: [/read_passphrase: can't open \/dev\/tty/],
    versions: "all",
    source: "NixOS/nix#14125, #11987, #8099",
    priority: 105,
    explain: () => ({
      summary:
        "The ssh key needs a passphrase (or a password is asked), and the daemon has no terminal to ask on.",
      detail:
        "Keys with a passphrase, or keys that only live in your ssh-agent, do not work for the daemon: it runs as root, has no tty, and does not see your SSH_AUTH_SOCK.",
      fix: [
        "Use a passphrase-less key readable only by root (mode 0600), e.g. `sudo ssh-keygen -t ed25519 -N '' -f /etc/nix/builder_ed25519`.",
        "Reference it in the 3rd column of the machines line (or `IdentityFile` in root's ssh config) and add its .pub to the builder user's authorized_keys.",
        FIX_TEST_AS_ROOT,
      ],
    }),
  }),
  entry({
    id: "ssh-too-many-auth",
    cause: "auth",
    title: "sshd stopped after too many key attempts",
    patterns: [/Too many authentication failures/],
    versions: "all",
    source: "OpenSSH (MaxAuthTries)",
    priority: 100,
    explain: () => ({
      summary:
        "ssh offered more keys than the builder's sshd accepts (MaxAuthTries) before reaching the right one.",
      detail:
        "Usually an ssh-agent or several IdentityFile entries make ssh try many keys; the one the builder accepts comes too late.",
      fix: [
        "Name the key in the machines line (3rd column) and make ssh use only it: `IdentitiesOnly yes` in root's ssh config for that host (or `NIX_SSHOPTS='-o IdentitiesOnly=yes'`).",
      ],
    }),
  }),
  entry({
    id: "ssh-key-permissions",
    cause: "auth",
    title: "ssh ignored a private key with unsafe permissions",
    patterns: [
      /UNPROTECTED PRIVATE KEY FILE/,
      /Permissions 0?\d+ for '([^']*)' are too open/,
      /Load key "?([^":]+)"?: bad permissions/,
    ],
    versions: "all",
    source: "OpenSSH",
    priority: 102,
    explain: (m) => ({
      summary: `ssh refuses to use the private key${m[1] ? ` '${m[1]}'` : ""} because other users can read it.`,
      detail: "The key is skipped, so authentication then fails (or falls back to other keys).",
      fix: [
        "`sudo chown root: KEY && sudo chmod 600 KEY` (the key must belong to the user that runs ssh: root under a daemon).",
      ],
    }),
  }),
  entry({
    id: "ssh-key-invalid-format",
    cause: "auth",
    title: "ssh cannot read the private key",
    patterns: [/Load key "?([^":]+)"?: (invalid format|error in libcrypto)/],
    versions: "all",
    source: "OpenSSH",
    priority: 102,
    explain: (m) => ({
      summary: `ssh cannot parse the private key '${m[1]}' (${m[2]}).`,
      detail:
        "Typical causes: the 3rd machines column points at the *public* key, the file lost its final newline or got CRLF line endings when copied, or it is a format this ssh cannot read.",
      fix: [
        "Point the 3rd column at the private key file (no .pub).",
        "Check it with `sudo ssh-keygen -y -f KEY`; re-create it if that fails.",
      ],
    }),
  }),
  entry({
    id: "ssh-identity-missing",
    cause: "auth",
    title: "the ssh key file does not exist",
    patterns: [
      /no such identity: ([^:]+): No such file or directory/,
      /Identity file (\S+) not accessible: No such file or directory/,
    ],
    versions: "all",
    source: "OpenSSH; docs/protocols.md (-i from the 3rd column)",
    priority: 95,
    explain: (m) => ({
      summary: `The ssh key '${m[1]}' named for the builder does not exist (for the user running ssh).`,
      detail:
        "The 3rd machines column is passed to ssh as `-i` verbatim; relative paths are relative to the hook's working directory (`/`), and since Nix 2.34 the path must be absolute.",
      fix: ["Use an absolute path to a key root can read, e.g. `/etc/nix/builder_ed25519`."],
    }),
  }),
  entry({
    id: "ssh-config-permissions",
    cause: "local-config",
    title: "ssh refuses its own config file",
    patterns: [/Bad owner or permissions on (\S+)/],
    versions: "all",
    source: "OpenSSH",
    priority: 100,
    explain: (m) => ({
      summary: `ssh will not read '${m[1]}' because of its owner or permissions.`,
      detail: "ssh requires its config files to be owned by the user (or root) and not writable by others.",
      fix: [`\`sudo chown root: ${m[1]} && sudo chmod 600 ${m[1]}\` (or 644 for files under /etc/ssh).`],
    }),
  }),
  entry({
    id: "ssh-auth-denied",
    cause: "auth",
    title: "the builder rejected the ssh login",
    patterns: [/Permission denied \(([a-z,-]*(?:publickey|password|keyboard-interactive|gssapi)[a-z,-]*)\)/],
    versions: "all",
    source: "NixOS/nix#14125, #11987; docs/protocols.md",
    priority: 100,
    explain: (m, ctx) => {
      const b = builderOf(ctx);
      return {
        summary: `The builder${b ? ` '${b}'` : ""} did not accept any key ssh offered (methods it allows: ${m[1]}).`,
        detail:
          "The daemon runs ssh as root, without your ssh-agent and without a terminal, so only keys root can use count: the 3rd machines column, or root's ~/.ssh and ssh config. A key that works for you interactively may be in your agent or need a passphrase.",
        fix: [
          "Put a passphrase-less private key in the 3rd column of the machines line (root-owned, 0600) and its .pub in the builder user's ~/.ssh/authorized_keys.",
          "Check the user name in the URI (`ssh://USER@HOST`) is the account that has that key.",
          FIX_TEST_AS_ROOT,
        ],
      };
    },
  }),
  // ----- ssh: reachability ------------------------------------------------------------------------------
  entry({
    id: "ssh-resolve",
    cause: "unreachable",
    title: "the builder's host name does not resolve",
    patterns: [/Could not resolve hostname (\S+?): (.*)/],
    versions: "all",
    source: "docs/routing.md (unresolvable host); OpenSSH",
    priority: 100,
    explain: (m) => {
      const host = m[1]!;
      const port = /:\d+$/.test(host);
      return {
        summary: `The host name '${host}' cannot be resolved (${m[2]}).`,
        detail: port
          ? "The name ends in :PORT. Nix before 2.31 passes `ssh://host:port` to ssh as part of the host name; ports are not supported there."
          : "Name resolution runs as the daemon (root) on this machine: aliases from your own ~/.ssh/config do not apply, and VPN/mDNS names may not resolve for the daemon.",
        fix: port
          ? [
              "Give the port in root's ssh config (`Host builder` / `HostName …` / `Port …`) and use `ssh://user@builder`, or upgrade to Nix ≥ 2.31.",
            ]
          : [
              "Use a name that resolves for root (`getent hosts NAME`), or define a `Host` alias in root's ssh config (/root/.ssh/config or /etc/ssh/ssh_config).",
            ],
      };
    },
  }),
  entry({
    id: "ssh-refused",
    cause: "unreachable",
    title: "nothing accepts ssh connections on the builder",
    patterns: [/connect to host (\S+) port (\d+): Connection refused/],
    versions: "all",
    source: "nix-darwin#913",
    priority: 100,
    explain: (m) => ({
      summary: `The builder ${m[1]} refused the connection on port ${m[2]}: no sshd listens there.`,
      detail:
        "The machine is up but sshd is not running or listens on another port. For the darwin linux-builder VM: the VM is not running, or the ssh alias/port (31022) is not applied for root.",
      fix: [
        "Start sshd on the builder, or point the URI at the right port (via root's ssh config `Port`).",
        "linux-builder: `sudo launchctl list | grep linux-builder`, and check /etc/ssh/ssh_config.d/100-linux-builder.conf; test with `sudo ssh linux-builder`.",
      ],
    }),
  }),
  entry({
    id: "ssh-timeout",
    cause: "timeout",
    title: "the connection to the builder timed out",
    patterns: [
      /connect to host (\S+) port (\d+): (?:Connection|Operation) timed out/,
      /Connection timed out during banner exchange/,
      /banner exchange: Connection to (\S+) port (\d+): (?:Connection|Operation) timed out/,
    ],
    versions: "all",
    source: "NixOS/nix#13513, #7459",
    priority: 100,
    explain: (m) => ({
      summary: `Connecting to ${m[1] ?? "the builder"}${m[2] ? ` port ${m[2]}` : ""} timed out.`,
      detail:
        "The builder is down, or a firewall drops the packets. Nix has no connect timeout of its own and forgets failed builders between derivations, so one dead builder can stall every build for the TCP timeout.",
      fix: [
        "Bring the builder back or remove it from the machines list.",
        "Set `ConnectTimeout 5` for builders in root's ssh config (or `NIX_SSHOPTS='-o ConnectTimeout=5'`) so a dead builder costs seconds.",
        FIX_BYPASS,
      ],
    }),
  }),
  entry({
    id: "ssh-no-route",
    cause: "unreachable",
    title: "no network path to the builder",
    patterns: [
      /connect to host (\S+) port (\d+): (No route to host|Network is unreachable|Host is down)/,
      /\b(No route to host|Network is unreachable)\b/,
    ],
    versions: "all",
    source: "OpenSSH",
    priority: 98,
    explain: (m) => ({
      summary: `${m[1] && m[3] ? `${m[1]}: ${m[3]}` : (m[1] ?? "No route to the builder")}.`,
      detail:
        "The builder's address is not reachable from this machine (down, wrong address, VPN not up, firewall rejecting).",
      fix: ["Check the address and routing as root: `sudo ssh -v USER@HOST true`.", FIX_BYPASS],
    }),
  }),
  entry({
    id: "ssh-connection-closed",
    cause: "unreachable",
    title: "the builder's sshd dropped the connection",
    patterns: [
      /kex_exchange_identification: (?:read: Connection reset by peer|Connection closed by remote host)/,
      /Connection closed by (\S+) port (\d+)/,
      /Connection reset by (\S+) port (\d+)/,
    ],
    versions: "all",
    source: "OpenSSH",
    priority: 70,
    explain: () => ({
      summary: "The builder's sshd closed the connection before login completed.",
      detail:
        "sshd accepted TCP but hung up: too many concurrent unauthenticated connections (MaxStartups), a ban (fail2ban), `AllowUsers`/`DenyUsers`, or a proxy in between.",
      fix: ["Read the builder's sshd log (`journalctl -u sshd`) for the reason.", FIX_TEST_AS_ROOT],
    }),
  }),
  // ----- the remote side of the ssh session -------------------------------------------------------------
  entry({
    id: "remote-nix-not-on-path",
    cause: "remote-nix-missing",
    title: "nix-store / nix-daemon is not on the builder's PATH",
    patterns: SHELLS_NOT_FOUND,
    versions: "all",
    source: "NixOS/nix#7508, #8061; DeterminateSystems/nix-installer#383",
    priority: 103,
    explain: (m) => {
      const prog = m[1] ?? "nix-store";
      return {
        summary: `The builder's non-interactive shell cannot find '${prog}'.`,
        detail:
          "Nix runs `nix-store --serve --write` (ssh://) or `nix-daemon --stdio` (ssh-ng://) as a plain ssh command. Non-login ssh commands do not read the profile files that put Nix on PATH; this is usual on macOS (root's shell is /bin/sh there) and on non-NixOS Linux.",
        fix: [
          `Point Nix at the binary: add \`?remote-program=/nix/var/nix/profiles/default/bin/${prog}\` to the builder's URI.`,
          "Or make Nix visible to non-interactive ssh on the builder: the installer's zshenv/bashrc hook, or sshd `SetEnv PATH=…` for the build user.",
          `Test: \`sudo ssh USER@HOST ${prog} --version\`.`,
        ],
      };
    },
  }),
  entry({
    id: "remote-nologin",
    cause: "remote-shell",
    title: "the build user's login shell is nologin",
    patterns: [/This account is currently not available\./, /This service allows sftp connections only\./],
    versions: "all",
    source: "NuschtOS/nixos-modules PR #423; docs/protocols.md",
    priority: 110,
    explain: () => ({
      summary: "The builder's account has a nologin shell, so sshd cannot run Nix's command.",
      detail:
        "sshd runs every command (even a forced `command=`) through the user's login shell. With /usr/sbin/nologin or /bin/false nothing runs, and Nix sees that text instead of its protocol.",
      fix: [
        "Give the build user a real shell on the builder (`usermod -s /bin/sh USER`; NixOS: `users.users.USER.shell` / `useDefaultShell = true`).",
        'Restrict it with an authorized_keys `command="nix-store --serve --write"` (or `nix-daemon --stdio` for ssh-ng) instead.',
      ],
    }),
  }),
  entry({
    id: "ssh-missing",
    cause: "ssh-missing",
    title: "the ssh client is not on the daemon's PATH",
    patterns: [
      /unable to execute '(ssh)': No such file or directory/,
      /executing '(ssh)': No such file or directory/,
      // 2.30 (execvpe of its own): seen on real 2.30 (test/fixtures/logs-2.30/ssh-missing.log)
      /Could not find executable '(ssh)'/,
    ],
    versions: "all",
    source: "NixOS/nix#4322, nix-on-droid#240",
    priority: 110,
    explain: () => ({
      summary: "Nix could not start `ssh`: there is none on the PATH of the process running the build hook.",
      detail:
        "Nix does not speak ssh itself; it runs OpenSSH's `ssh` found via PATH, and under a daemon that is the daemon's PATH, not your shell's.",
      fix: [
        "Install OpenSSH's client system-wide (Debian: `apt install openssh-client`; NixOS has it), or add it to the daemon's PATH (systemd `Environment=PATH=…`).",
      ],
    }),
  }),
  entry({
    id: "ssh-invalid-host",
    cause: "machines-syntax",
    title: "the builder URI has no usable host",
    patterns: [/invalid SSH host name '([^']*)'/, /invalid SSH authority: '([^']*)': (.*)/],
    versions: "all",
    source: "docs/protocols.md (host validation; HEAD authority errors)",
    priority: 100,
    explain: (m) => ({
      summary: `The host part '${m[1]}' of a builder URI is empty or starts with '-'${m[2] ? ` (${m[2]})` : ""}.`,
      detail:
        "Nix refuses host names that ssh would read as options, and empty ones. Usually a typo in the first machines column, or `ssh://` with nothing after it.",
      fix: [
        "Write the first column as `ssh://USER@HOST` or `ssh-ng://USER@HOST`; put ssh options in root's ssh config or NIX_SSHOPTS.",
      ],
    }),
  }),
  entry({
    id: "ssh-connection-failed",
    cause: "unreachable",
    title: "ssh did not start",
    patterns: [/failed to start SSH (master )?connection to '([^']*)'/],
    versions: "all",
    source: "docs/protocols.md",
    generic: true,
    priority: 30,
    explain: (m) => ({
      summary: `The ssh ${m[1] ? "master " : ""}connection to '${m[2]}' could not be set up.`,
      detail:
        "Nix waits for ssh to report a working session and got none. ssh's own message (printed on the terminal or the daemon's log just before, or after the colon on this line) says why. When there is none, the remote side printed text or exited at once (a nologin shell, a banner, a forced command): from 2.15 Nix reads the first stdout line, expects `started`, and shows what it got only at -vvv (`SSH stdout first line: …`; seen on real 2.30).",
      fix: [FIX_FIND_EARLIER, FIX_TEST_AS_ROOT, "Rerun with -vvv and look for `SSH stdout first line:`."],
    }),
  }),
  // ----- protocol ---------------------------------------------------------------------------------------
  entry({
    id: "serve-protocol-garbage",
    cause: "remote-shell",
    title: "text on the builder's stdout broke the ssh:// handshake",
    // 2.8 reports what it read so far: the banner, then the binary handshake, which can end the message
    // before the closing quote (lab `banner` fault: `got 'Welcome …` + newline + `       ��RT`).
    patterns: [
      /'nix-store --serve' protocol mismatch from '([^']*)', got '(.*)'/,
      /'nix-store --serve' protocol mismatch from '([^']*)', got '(.*)$/,
    ],
    versions: "all",
    source: "docs/protocols.md, docs/routing.md",
    // Above the ssh connection entries: text on stdout proves ssh got through (2.8 appends ssh's stderr).
    priority: 101,
    explain: (m) =>
      m[2]!.trim() === ""
        ? null
        : {
            summary: `The builder '${m[1]}' printed '${m[2]}' where Nix expected the nix-store --serve handshake.`,
            detail:
              "Something on the remote side writes to stdout before Nix's protocol starts: a shell rc file (echo, motd, banner), a forced command that runs something else, or a wrapper.",
            fix: [
              "Make the build user's shell start-up files silent for non-interactive sessions (no echo in .bashrc/.zshenv).",
              "If authorized_keys has `command=…`, it must run `nix-store --serve --write` for ssh:// builders.",
              "Test: `sudo ssh USER@HOST nix-store --serve --write </dev/null | head -c 100 | od -c` should print nothing readable.",
            ],
          },
  }),
  entry({
    id: "daemon-protocol-garbage",
    cause: "remote-shell",
    title: "text on the builder's stdout broke the ssh-ng:// handshake",
    patterns: [/protocol mismatch, got '(.*)'/, /protocol mismatch, got '(.*)$/],
    versions: "all",
    source: "docs/protocols.md, docs/routing.md",
    priority: 101,
    explain: (m) =>
      m[1]!.trim() === ""
        ? null
        : {
            summary: `The builder printed '${m[1]}' where Nix expected the nix-daemon handshake.`,
            detail:
              "For ssh-ng:// Nix runs `nix-daemon --stdio` remotely. Output from shell rc files, a banner, or a forced command that runs `nix-store --serve` (the ssh:// protocol) ends up here.",
            fix: [
              "Silence the build user's shell start-up files for non-interactive sessions.",
              "A forced `command=` must run `nix-daemon --stdio` for ssh-ng://, `nix-store --serve --write` for ssh://.",
            ],
          },
  }),
  entry({
    id: "protocol-mismatch",
    cause: "protocol",
    title: "the two Nix versions do not speak the same protocol",
    patterns: [
      /unsupported 'nix-store --serve' protocol version on '([^']*)'/,
      /'nix-store --serve' protocol mismatch from '([^']*)'/,
      /nix-daemon protocol mismatch from '([^']*)'/,
      /Nix daemon protocol version not supported/,
      /the Nix daemon version is too old/,
      /the Nix client version is too old/,
      /\bprotocol mismatch\b/,
    ],
    versions: "all",
    source: "docs/protocols.md",
    priority: 60,
    explain: (m) => ({
      summary: `The Nix protocol handshake${m[1] ? ` with '${m[1]}'` : ""} failed: ${m[0]}.`,
      detail:
        "Either the remote runs a different program than Nix expects (a forced command running `nix-store --serve` for an ssh-ng:// client or `nix-daemon --stdio` for ssh://), or the versions are too far apart (current Nix needs serve protocol ≥ 2.5 and worker protocol ≥ 1.18 from the other side).",
      fix: [
        "Match the scheme to what the remote runs: ssh:// ↔ `nix-store --serve --write`, ssh-ng:// ↔ `nix-daemon --stdio`.",
        "Check versions on both sides (`nix --version`); upgrade the older one.",
      ],
    }),
  }),
  // ----- remote store / daemon --------------------------------------------------------------------------
  entry({
    id: "remote-daemon-socket",
    cause: "remote-daemon-down",
    title: "the builder's nix-daemon is not running",
    patterns: [/cannot connect to socket at '([^']*)': (Connection refused|No such file or directory)/],
    versions: "all",
    source: "NixOS/nix#10136",
    priority: 95,
    when: (ctx) => ctx.remote,
    explain: (m) => ({
      summary: `On the builder, nix-daemon --stdio could not reach the local daemon socket '${m[1]}' (${m[2]}).`,
      detail:
        "ssh worked, but the builder's own nix-daemon is stopped (or its socket is elsewhere). Nix does not treat this as 'try the next builder', so the whole build fails.",
      fix: [
        "Start the daemon on the builder (`systemctl start nix-daemon.socket` / `launchctl kickstart -k system/org.nixos.nix-daemon`).",
        "Check it before use: `sudo ssh USER@HOST nix store info --store daemon` (2.8: `nix store ping`).",
      ],
    }),
  }),
  entry({
    id: "remote-daemon-socket-denied",
    cause: "remote-untrusted",
    title: "the builder user may not use the builder's nix-daemon",
    patterns: [/cannot connect to socket at '([^']*)': Permission denied/],
    versions: "all",
    source: "docs/trust.md (allowed-users, socket permissions)",
    priority: 95,
    when: (ctx) => ctx.remote,
    explain: (m) => ({
      summary: `On the builder, the ssh user cannot open the daemon socket '${m[1]}'.`,
      detail:
        "The socket (or its directory) is restricted to a group the build user is not in, e.g. root:nix-users 0770 on Debian.",
      fix: [
        "Add the build user to the group that owns the socket directory on the builder, and to `allowed-users` (and `trusted-users` for building).",
      ],
    }),
  }),
  entry({
    id: "daemon-socket-down",
    cause: "daemon-unreachable",
    title: "no nix-daemon on this machine",
    patterns: [/cannot connect to socket at '([^']*)': (Connection refused|No such file or directory)/],
    versions: "all",
    source: "docs/trust.md",
    priority: 90,
    explain: (m) => ({
      summary: `The local nix-daemon socket '${m[1]}' is not served (${m[2]}).`,
      detail:
        m[2] === "No such file or directory"
          ? "No daemon has ever created the socket: the daemon is not installed/enabled, or this is a single-user install and NIX_REMOTE / `store = daemon` asks for one."
          : "The socket file exists but no daemon listens: the daemon stopped or crashed (socket activation broken).",
      fix: [
        "Start it: `sudo systemctl enable --now nix-daemon.socket nix-daemon.service` (macOS: `sudo launchctl kickstart -k system/org.nixos.nix-daemon`).",
        "Or, for a single-user install, unset NIX_REMOTE / remove `store = daemon`.",
      ],
    }),
  }),
  entry({
    id: "daemon-socket-denied",
    cause: "daemon-unreachable",
    title: "this user may not open the nix-daemon socket",
    patterns: [/cannot connect to socket at '([^']*)': Permission denied/],
    versions: "all",
    source: "docs/trust.md",
    priority: 90,
    explain: (m) => ({
      summary: `This user cannot open the daemon socket '${m[1]}' (file permissions).`,
      detail:
        "The socket's directory is restricted to a group (Debian's nix-setup-systemd: root:nix-users 0770), and this user is not in it. This is checked before `allowed-users`.",
      fix: [
        "Add the user to the group owning /nix/var/nix/daemon-socket (`sudo usermod -aG nix-users USER`), then log in again (or restart the service).",
      ],
    }),
  }),
  entry({
    id: "daemon-user-not-allowed",
    cause: "daemon-unreachable",
    title: "the nix-daemon refuses this user",
    patterns: [/user '([^']*)' is not allowed to connect to the Nix daemon/],
    versions: "all",
    source: "docs/trust.md",
    priority: 100,
    explain: (m, ctx) => ({
      summary: `The nix-daemon${ctx.remote ? " (possibly the builder's)" : ""} refuses user '${m[1]}': not in allowed-users/trusted-users, or the user's group is build-users-group.`,
      detail:
        "The daemon closes the connection; the client usually sees `Connection reset by peer` or an end-of-file error.",
      fix: [
        "Add the user (or a group `@G` it belongs to) to `allowed-users` in the daemon's /etc/nix/nix.conf and restart the daemon.",
        "Do not run clients with the nixbld group as primary group.",
      ],
    }),
  }),
  entry({
    id: "daemon-connection-reset",
    cause: "daemon-unreachable",
    title: "the nix-daemon hung up on this user",
    patterns: [
      /cannot open connection to remote store '((?:unix|daemon)[^']*)': (?:error: )?reading from file: Connection reset by peer/,
    ],
    versions: "all",
    source: "docs/trust.md (refusal as seen by a 2.8 client)",
    priority: 80,
    explain: (m) => ({
      summary: `The daemon at '${m[1]}' closed the connection right away.`,
      detail:
        "A 2.8 daemon does this to users that are neither in `allowed-users` nor `trusted-users` (its log says `user '…' is not allowed to connect`).",
      fix: [
        "Add the user to `allowed-users` in the daemon's nix.conf and restart the daemon.",
        "Check the daemon log: `journalctl -u nix-daemon`.",
      ],
    }),
  }),
  entry({
    id: "remote-store-eof",
    cause: "unreachable",
    title: "the ssh-ng connection ended during the handshake",
    patterns: [/cannot open connection to remote store '([^']*)': (?:error: )?unexpected end-of-file/],
    versions: "all",
    source: "docs/routing.md",
    generic: true,
    priority: 30,
    explain: (m) => ({
      summary: `The connection to '${m[1]}' closed before the Nix handshake.`,
      detail:
        "With ssh-ng:// Nix does not capture ssh's error output: ssh's reason (host key, permission denied, refused, command not found) is printed separately, just above this line or in the daemon's journal.",
      fix: [
        FIX_FIND_EARLIER,
        "`journalctl -u nix-daemon` shows ssh's messages when the build went through the daemon.",
        FIX_TEST_AS_ROOT,
      ],
    }),
  }),
  entry({
    id: "daemon-disconnected",
    cause: "remote-nix-missing",
    title: "the builder's nix-daemon --stdio died",
    patterns: [/Nix daemon disconnected unexpectedly(?: \(maybe it crashed\?\))?/],
    versions: "all",
    source: "juspay/vira#241",
    generic: true,
    priority: 35,
    explain: (_m, ctx) =>
      ctx.remote
        ? {
            summary: "The remote `nix-daemon --stdio` exited during the session.",
            detail:
              "Most often it never started: the builder's non-interactive shell has no Nix on PATH (macOS), or the remote daemon crashed or was restarted.",
            fix: [
              "`sudo ssh USER@HOST nix-daemon --version`; if not found, add `?remote-program=/nix/var/nix/profiles/default/bin/nix-daemon` to the URI.",
              FIX_FIND_EARLIER,
            ],
          }
        : {
            summary: "The local nix-daemon dropped the connection.",
            detail: "It crashed, was restarted (e.g. by an upgrade) or was killed (OOM).",
            fix: ["Check `journalctl -u nix-daemon` and retry."],
            cause: "daemon-unreachable",
          },
  }),
  entry({
    id: "serve-connect-eof",
    cause: "unreachable",
    title: "ssh:// connection failed",
    patterns: [/cannot connect to '([^']*)'\s*$/],
    versions: "all",
    source: "docs/routing.md, docs/protocols.md",
    generic: true,
    priority: 30,
    explain: (m) => ({
      summary: `ssh to '${m[1]}' ended before the nix-store --serve handshake, and Nix captured no reason.`,
      detail:
        "ssh exited without output on this channel. Its message, if any, went to the daemon's journal or appears above.",
      fix: [FIX_FIND_EARLIER, FIX_TEST_AS_ROOT],
    }),
  }),
  entry({
    id: "ssh-open-failed-old",
    cause: "unreachable",
    title: "a builder failed and was skipped (older Nix)",
    patterns: [/unable to open SSH connection to '([^']*)': (.*?)(?:; trying other available machines\.*)?$/],
    versions: "<=2.7",
    source: "NixOS/nix#2030 (older wording)",
    generic: true,
    priority: 20,
    explain: (m) => ({
      summary: `Connecting to the builder '${m[1]}' failed: ${m[2]}`,
      detail:
        "Older Nix prints this when ssh to a builder fails and moves on to the next machine. The text after the colon is often only `cannot connect to …`; ssh's own reason goes to the daemon's log.",
      fix: [FIX_TEST_AS_ROOT],
    }),
  }),
  entry({
    id: "cannot-build-on",
    cause: "unreachable",
    title: "a builder failed and was skipped",
    patterns: [/cannot build on '([^']*)': (.*)/],
    versions: "all",
    source: "docs/routing.md (the selection loop; the log lines)",
    generic: true,
    priority: 20,
    explain: (m) => ({
      summary: `Connecting to the builder '${m[1]}' failed: ${m[2]}`,
      detail:
        "Nix disables that builder for the rest of this build-hook run and tries the next one; if none is left it builds locally or fails with a message about the local system.",
      fix: [FIX_TEST_AS_ROOT],
    }),
  }),
  // ----- trust ------------------------------------------------------------------------------------------
  entry({
    id: "remote-not-privileged",
    cause: "remote-untrusted",
    title: "the builder does not trust the ssh user",
    patterns: [/you are not privileged to build (input-addressed )?derivations/],
    versions: "all",
    source: "NixOS/nix#2789, PR #3921; docs/protocols.md",
    priority: 100,
    explain: (m) => ({
      summary:
        "The builder's nix-daemon refused to build: the ssh user is not in the builder's trusted-users.",
      detail: `Over ssh-ng:// the remote daemon serves the ssh user with its normal trust rules, and untrusted users may not send ${m[1] ? "input-addressed " : ""}derivations to build (Nix 2.8 always sends them that way; current Nix falls back to copying the .drv closure, which then needs signatures).`,
      fix: [
        "On the builder: `trusted-users = root USER` in /etc/nix/nix.conf (NixOS: `nix.settings.trusted-users`), restart its nix-daemon.",
        "Or use ssh:// (nix-store --serve), which does not go through the remote daemon's trust check.",
      ],
    }),
  }),
  entry({
    id: "signature-missing",
    cause: "signature",
    title: "the store refused an unsigned path",
    patterns: [
      /cannot add path '([^']*)' because it lacks a (?:valid )?signature(?: by a trusted key)?/,
      /lacks a (?:valid )?signature(?: by a trusted key)?/,
    ],
    versions: "all",
    source: "NixOS/nix#16500, #2127, #5343",
    priority: 100,
    explain: (m, ctx) => ({
      summary: `${ctx.remote ? "The builder" : "The receiving store"} refused ${m[1] ? `'${m[1]}'` : "a path"}: it has no signature from a key the store trusts, and the sending user is not trusted there.`,
      detail: ctx.remote
        ? "While copying build inputs to the builder, its daemon treats the ssh user as untrusted and so requires every non-content-addressed path to be signed by a key in the builder's trusted-public-keys. The message does not say it comes from the builder."
        : "An untrusted user may only add paths that are content-addressed or signed by a trusted key.",
      fix: ctx.remote
        ? [
            "Add the ssh user to the builder's trusted-users (and restart its daemon).",
            "Or sign: `nix-store --generate-binary-cache-key`, `secret-key-files` on this machine, the public key in the builder's `trusted-public-keys`.",
          ]
        : ["Copy as a trusted user, or sign the paths with a key in the receiver's trusted-public-keys."],
    }),
  }),
  entry({
    id: "untrusted-setting-ignored",
    cause: "local-untrusted",
    title: "the daemon ignored a setting from an untrusted user",
    patterns: [
      /ignoring the client-specified setting '([^']*)', because it is a restricted setting and you are not a trusted user/,
    ],
    versions: "all",
    source: "NixOS/nix#2286, #2271, PR #2931; docs/trust.md",
    priority: 85,
    severity: "warning",
    explain: (m, ctx) => {
      const name = m[1]!;
      const quiet = ctx.version !== null && !since(ctx.version, NIX.restrictedSettingWarning);
      return {
        summary: `The nix-daemon ignored '${name}' from this user because the user is not in the daemon's trusted-users.`,
        detail:
          (name === "builders"
            ? 'Only the daemon\'s own builders are used; `--builders`, NIX_CONFIG and ~/.config/nix/nix.conf builders are dropped (except `builders = ""`). '
            : "") +
          (quiet
            ? "Nix before 2.22 reports this only at -vvvv; otherwise the setting just has no effect."
            : "Since Nix 2.22 this is a visible warning; before, it only showed at -vvvv."),
        fix: [
          name === "builders"
            ? "Configure the builders where the daemon reads them: /etc/nix/machines or `builders` in /etc/nix/nix.conf (then restart the daemon)."
            : `Set '${name}' in the daemon's /etc/nix/nix.conf instead (then restart the daemon).`,
          "Or add the user to `trusted-users` in /etc/nix/nix.conf (that is root-equivalent) and restart the daemon.",
        ],
      };
    },
  }),
  entry({
    id: "untrusted-substituter",
    cause: "local-untrusted",
    title: "the daemon ignored a substituter from an untrusted user",
    patterns: [/ignoring untrusted substituter '([^']*)'/],
    versions: "all",
    source: "docs/trust.md; hercules-ci-agent#307",
    priority: 60,
    severity: "warning",
    explain: (m) => ({
      summary: `The daemon does not trust this user, so it ignored the substituter '${m[1]}'.`,
      detail:
        "The same lack of trust also drops `builders`, `builders-use-substitutes` and other restricted settings this user sends, which is the usual reason a CI agent (e.g. hercules-ci-agent) cannot use builders root can.",
      fix: [
        "Add the user to `trusted-users` (check for a later duplicate `trusted-users` line or a NixOS mkForce overriding it), or list the cache in the daemon's `trusted-substituters`.",
        "Test as that user: `sudo -u USER nix store ping --store daemon -vvvv` shows whether it is trusted.",
      ],
    }),
  }),
  // ----- configuration ----------------------------------------------------------------------------------
  entry({
    id: "config-syntax",
    cause: "local-config",
    title: "a nix.conf line cannot be parsed",
    patterns: [
      /illegal configuration line '(.*)' in '(.*)'/,
      /syntax error in configuration line '(.*)' in ["'](.*)["']/,
    ],
    versions: "all",
    source: "docs/nix-conf.md (2.8–2.23: illegal …; ≥2.24: syntax error …)",
    priority: 100,
    explain: (m) => {
      const line = m[1]!;
      const hints: string[] = [];
      if (/^\s*[^\s=]+=\S/.test(line) || /^\s*\S+\s+=\S/.test(line) || /^\s*\S+=\s/.test(line))
        hints.push("`=` must be a separate word: write `name = value` with spaces on both sides");
      else if (/^\s*!?include\s*$/.test(line) || /^\s*!?include\s+\S+\s+\S/.test(line))
        hints.push("`include` takes exactly one path");
      else if (/^\s*\S+\s*$/.test(line)) hints.push("a line needs `name = value`");
      return {
        summary: `Nix cannot parse the line '${line}' in ${m[2]}.`,
        detail: `Every command that reads that file fails (in 2.8 all of them, at start-up).${hints.length ? ` Here: ${hints.join("")}.` : ""} Note that '#' starts a comment anywhere on a line and there is no escaping.`,
        fix: [
          `Fix the line in ${m[2]}${m[2] === "NIX_CONFIG" ? " (the NIX_CONFIG environment variable)" : ""}.`,
        ],
      };
    },
  }),
  entry({
    id: "config-include-missing",
    cause: "local-config",
    title: "a nix.conf include target is missing",
    patterns: [
      /file ['"](.*)['"] included from ['"](.*)['"] not found/,
      /not an absolute path: '(\.\/[^']*)'/,
    ],
    versions: "all",
    source: "docs/nix-conf.md",
    priority: 100,
    explain: (m) => ({
      summary: m[2]
        ? `'${m[1]}', included from ${m[2]}, does not exist.`
        : `The include path '${m[1]}' is relative, which NIX_CONFIG cannot resolve.`,
      detail:
        "`include` of a missing file is an error (`!include` is not). Relative includes are resolved next to the including file; from NIX_CONFIG they fail.",
      fix: ["Create the file, use an absolute path, or use `!include` for optional files."],
    }),
  }),
  entry({
    id: "config-bad-value",
    cause: "local-config",
    title: "a setting has a value of the wrong type",
    patterns: [
      /Boolean setting '([^']*)' has invalid value '([^']*)'/,
      /configuration setting '(max-jobs)' should be 'auto' or an integer/,
      /setting '([^']*)' has invalid value '([^']*)'/,
      /option '(sandbox)' has invalid value '([^']*)'/,
    ],
    versions: "all",
    source: "docs/nix-conf.md",
    priority: 100,
    explain: (m) => ({
      summary: `The setting '${m[1]}' has an invalid value${m[2] !== undefined ? ` '${m[2]}'` : ""}.`,
      detail:
        "Booleans are exactly true/false/yes/no/1/0 (case-sensitive); integers take no units before Nix 2.24-ish (no `1K`), no hex; max-jobs is `auto` or an integer.",
      fix: [
        "Correct the value in the nix.conf (or flag) that sets it; `nix show-config` fails until it is fixed.",
      ],
    }),
  }),
  entry({
    id: "unknown-setting-extra-builders",
    cause: "unknown-setting",
    title: "extra-builders does not exist",
    patterns: [/unknown setting '(extra-builders)'/],
    versions: "all",
    source: "docs/nix-conf.md, docs/routing.md (builders is a plain string, not appendable)",
    priority: 90,
    severity: "warning",
    explain: () => ({
      summary: "`extra-builders` is not a Nix setting: the builders it lists are ignored.",
      detail:
        "`extra-NAME` only appends to list-type settings; `builders` is a single string, so `extra-builders` is an unknown setting (a warning only) and no builder from it is used.",
      fix: [
        "Put all machine lines in one file and point `builders` at it: `builders = @/etc/nix/machines` (one machine per line; include both the old and the new builders).",
        "Or write them all in one `builders = …` value, separated by `;`.",
      ],
    }),
  }),
  entry({
    id: "unknown-setting-builder-like",
    cause: "unknown-setting",
    title: "a misspelt builders setting",
    patterns: [
      /unknown setting '((?:extra-)?(?:remote-builders|build-machines|buildMachines|builder|machines|build-hosts|remote-build(?:s|ers)?|distributed-builds|distributedBuilds))'/,
    ],
    versions: "all",
    source: "docs/nix-conf.md",
    priority: 85,
    severity: "warning",
    explain: (m) => ({
      summary: `'${m[1]}' is not a Nix setting, so the builders it lists are not used.`,
      detail:
        "Nix's setting is `builders` (a string or `@FILE`); its default is `@/etc/nix/machines`. Unknown settings only produce a warning.",
      fix: ["Use `builders = @/etc/nix/machines` (or the machine lines joined by `;`)."],
    }),
  }),
  entry({
    id: "unknown-setting",
    cause: "unknown-setting",
    title: "an unknown setting",
    patterns: [/unknown setting '([^']*)'/],
    versions: "all",
    source: "docs/nix-conf.md, docs/routing.md (unknown store URI parameters warn the same way)",
    generic: true,
    priority: 8,
    severity: "warning",
    explain: (m) => ({
      summary: `Nix does not know the setting '${m[1]}' and ignores it.`,
      detail:
        "Typical reasons: a typo, a setting from a newer Nix, `extra-` on a setting that is not a list, or an unknown `?param=` in a store URI.",
      fix: ["Check the name against `nix show-config` for this Nix version."],
    }),
  }),
  // ----- machines ---------------------------------------------------------------------------------------
  entry({
    id: "machine-spec-column",
    cause: "machines-syntax",
    title: "a machines line has a bad number",
    patterns: [/bad machine specification: failed to convert column #(\d+) in a row: '(.*)' to '([^']*)'/],
    versions: "all",
    source: "docs/routing.md; nix-darwin#1060",
    priority: 100,
    explain: (m) => {
      const col = Number(m[1]);
      const row = m[2]!;
      const val = row.trim().split(/\s+/)[col];
      return {
        summary: `Machines line '${row}': column ${machinesColumnMeaning(col)}, but it holds ${val === undefined ? "nothing" : `'${val}'`} (not an '${m[3]}').`,
        detail: `The build hook parses every machine at start, so this one bad line fails every build, even ones that could run locally. ${MACHINE_LINE_FORMAT}${rowHint(row, col)}`,
        fix: [
          "Fix the line in the machines file / `builders` value (use `-` for a default).",
          "Meanwhile `--builders ''` bypasses the machines list (e.g. to rebuild the configuration that fixes it).",
        ],
      };
    },
  }),
  entry({
    id: "machine-spec-url",
    cause: "machines-syntax",
    title: "a machines entry has no store URI",
    patterns: [/bad machine specification: store URL was not found at the first column of a row: '(.*)'/],
    versions: "all",
    source: "docs/routing.md",
    priority: 100,
    explain: (m) => {
      const row = m[1]!;
      const blank = row.trim() === "";
      return {
        summary: blank
          ? `An empty (whitespace-only) machines entry '${row}' reached the parser.`
          : `The machines line '${row}' has no store URI in its first column (it is missing or '-').`,
        detail: blank
          ? "Nix before 2.29 does not trim entries: `a; ;b`, a blank line with spaces, a CRLF blank line or an indented `# comment` each become an entry without a URI, and fail every build."
          : `${MACHINE_LINE_FORMAT} The first column is required.`,
        fix: [
          blank
            ? "Remove blank/indented lines and empty `; ;` pieces from the machines list (or upgrade to Nix ≥ 2.29, which skips them)."
            : "Put `ssh://USER@HOST` (or ssh-ng://) in the first column.",
          FIX_BYPASS,
        ],
      };
    },
  }),
  entry({
    id: "machine-spec-hostkey",
    cause: "machines-syntax",
    title: "the host-key column is not base64",
    patterns: [
      /bad machine specification: a column #7 in a row: '(.*)' is not valid base64 string/,
      /while parsing machine specification at a column #7 in a row: '(.*)'/,
    ],
    versions: "all",
    source: "docs/routing.md",
    priority: 100,
    explain: (m) => ({
      summary: `Machines line '${m[1]}': column ${machinesColumnMeaning(7)}, and it is not valid base64.`,
      detail:
        "The 8th field must be one token: the standard-alphabet base64 of a known_hosts key line (`ssh-ed25519 AAAA…`). Pasting the key itself (with its space), using URL-safe base64 (`-`, `_`) or a key comment shifts or breaks it. Nix 2.8 shows the offending character garbled.",
      fix: [
        "Generate it with `base64 -w0 /etc/ssh/ssh_host_ed25519_key.pub` on the builder (macOS: `base64 -i … | tr -d '\\n'`).",
        FIX_BYPASS,
      ],
    }),
  }),
  entry({
    id: "machine-spec-base64-char",
    cause: "machines-syntax",
    title: "invalid base64 (host key column)",
    patterns: [/invalid character in Base64 string: '(.*)'/],
    versions: "all",
    source: "docs/routing.md, docs/protocols.md",
    priority: 60,
    explain: () => ({
      summary:
        "A base64 value (the builder's public host key, 8th machines column) has an invalid character.",
      detail:
        "Only the standard alphabet (A–Z a–z 0–9 + /) is accepted; URL-safe `-`/`_` and spaces are not.",
      fix: ["Regenerate it with `base64 -w0 /etc/ssh/ssh_host_ed25519_key.pub`."],
    }),
  }),
  entry({
    id: "machine-spec-speed-negative",
    cause: "machines-syntax",
    title: "negative speed factor",
    patterns: [/speed factor must be >= 0/],
    versions: ">=2.20",
    source: "docs/routing.md",
    priority: 100,
    explain: () => ({
      summary: `A machines line has a negative speed factor (column ${machinesColumnMeaning(4)}).`,
      detail: MACHINE_LINE_FORMAT,
      fix: ["Use a speed factor ≥ 0 (0 means 1)."],
    }),
  }),
  entry({
    id: "store-uri-unparseable",
    cause: "machines-syntax",
    title: "a store URI cannot be parsed",
    patterns: [/Cannot parse Nix store '([^']*)'/],
    versions: ">=2.24",
    source: "docs/routing.md",
    priority: 95,
    explain: (m) => ({
      summary: `The store URI '${m[1]}' cannot be parsed.`,
      detail:
        "Store URIs are `ssh://[user@]host`, `ssh-ng://…`, `daemon`, `local`, `unix://PATH` or a path; a bare host name gets `ssh://`.",
      fix: ["Fix the URI (first machines column, `--store`, or `store =`)."],
    }),
  }),
  entry({
    id: "hook-eof",
    cause: "machines-syntax",
    title: "the build hook died",
    patterns: [/unexpected EOF reading a line/, /build hook died unexpectedly: ?(.*)/],
    versions: "all",
    source: "docs/routing.md (where the error surfaces; the hook protocol)",
    generic: true,
    priority: 25,
    explain: (m) => ({
      summary: `The build hook (build-remote) exited unexpectedly${m[1] ? `: ${m[1]}` : ""}.`,
      detail:
        "The hook reads the machines list first; a bad machines line makes it exit, and the build fails with this line right after the `bad machine specification` error.",
      fix: [FIX_FIND_EARLIER, FIX_BYPASS],
    }),
  }),
  entry({
    id: "machines-file-missing",
    cause: "no-builders",
    title: "no machines file",
    patterns: [/cannot find machines file '([^']*)'/],
    versions: "all",
    source: "docs/routing.md (ENOENT is skipped at debug level)",
    generic: true,
    priority: 15,
    severity: "info",
    explain: (m) => ({
      summary: `The machines file '${m[1]}' does not exist, so it adds no builders.`,
      detail:
        "A missing `@file` is silently skipped; with nothing else configured there are no remote builders.",
      fix: ["Create the file (one machine per line), or fix the path in `builders = @…`."],
    }),
  }),
  // ----- selection --------------------------------------------------------------------------------------
  entry({
    id: "no-machine",
    cause: "system-mismatch",
    title: "no builder can take the derivation",
    patterns: [/Failed to find a machine for remote build!/],
    versions: "all",
    source: "docs/routing.md; NixOS/nix#2238, PR #3897",
    priority: 60,
    explain: (_m, ctx) => {
      const rest = ctx.lines.slice(ctx.index + 1, ctx.index + 60).map((l) => l.text);
      // The internal-json form puts the whole listing in one msg, which normaliseLog split into lines.
      const listing = parseNoMachineListing(rest);
      if (!listing) {
        return {
          summary: "No configured builder matched the derivation's system and features.",
          detail:
            "Nix prints the required system/features and every machine after this line; compare the systems, supported and mandatory feature columns.",
          fix: [
            "Add the system (2nd column) or features (6th column) to a machine line; remember mandatory features (7th) must all be requested by the derivation.",
          ],
          generic: false,
        };
      }
      const { system, features, verdicts } = listing;
      const req = `'${system}'${features.length ? ` with features {${features.join(", ")}}` : ""}`;
      const lines = verdicts.map((v) => `  ${verdictText(v, system, features)}`);
      if (verdicts.length === 0) {
        return {
          summary: `No builders are configured (0 machines) for ${req}.`,
          detail: "The build hook sees an empty machines list.",
          fix: [
            "Configure builders where the process that builds reads them (the daemon's /etc/nix/machines or nix.conf `builders`).",
          ],
          cause: "no-builders",
        };
      }
      const matching = verdicts.filter((v) => v.failing === null);
      if (matching.length > 0) {
        return {
          summary: `A builder matches ${req}, but it was not available: it was busy or was disabled after a failed connection.`,
          detail: `Machines:\n${lines.join("\n")}`,
          fix: [FIX_FIND_EARLIER],
          cause: ctx.remote ? "unreachable" : "builders-busy",
          generic: true,
        };
      }
      const bySystem = verdicts.every((v) => v.failing === "system");
      const byMaxJobs = verdicts.every((v) => v.failing === "max-jobs");
      const fix: string[] = [];
      if (verdicts.some((v) => v.failing === "system"))
        fix.push(
          `Add ${system} to the systems column (2nd) of a builder that can build it (or check the spelling: it must be a full double like x86_64-linux).`,
        );
      if (verdicts.some((v) => v.failing === "features"))
        fix.push(
          `Add the missing features to the supported-features column (6th) of a builder that really has them: ${features.join(", ")}.`,
        );
      if (verdicts.some((v) => v.failing === "mandatory"))
        fix.push(
          "A machine with mandatory features (7th column) only takes derivations that request all of them; move those features to the 6th column if it should take other jobs too.",
        );
      if (verdicts.some((v) => v.failing === "max-jobs"))
        fix.push("Set max-jobs (4th column) to at least 1.");
      const COLUMN = {
        system: "systems (2nd column)",
        features: "supported features (6th column)",
        mandatory: "mandatory features (7th column)",
        "max-jobs": "max-jobs (4th column)",
      } as const;
      const columns = [...new Set(verdicts.map((v) => v.failing).filter((c) => c !== null))].map(
        (c) => COLUMN[c],
      );
      return {
        summary: bySystem
          ? `No builder offers the system ${system}: ruled out by ${columns.join(", ")}.`
          : byMaxJobs
            ? `The builders for ${req} have max-jobs 0.`
            : `No builder can take ${req}: ruled out by ${columns.join(" / ")}.`,
        detail: `Checked against each machine (system, supported ∪ mandatory features, mandatory ⊆ required):\n${lines.join("\n")}`,
        fix,
        cause: bySystem ? "system-mismatch" : byMaxJobs ? "builders-busy" : "feature-mismatch",
      };
    },
  }),
  entry({
    id: "waiting-for-machine",
    cause: "builders-busy",
    title: "waiting for a free builder",
    patterns: [/waiting for a machine to build '([^']*)'/],
    versions: "all",
    source: "docs/routing.md (postpone)",
    generic: true,
    priority: 22,
    severity: "info",
    explain: (m) => ({
      summary: `A builder matches '${m[1]}', but all its slots are taken, and local building is not possible, so Nix waits.`,
      detail:
        "Nix postpones while every matching machine has all max-jobs slots busy (other builds, or stale lock holders). A matching machine with max-jobs 0 makes this wait forever. Nix 2.8 repeats the line every few seconds.",
      fix: [
        "Check the 4th column (max-jobs) of the matching machines is ≥ 1; raise it or add builders.",
        "See who holds the slots: `ls -l /nix/var/nix/current-load/` and `/proc/locks`.",
      ],
    }),
  }),
  entry({
    id: "upload-lock",
    cause: "upload-lock",
    title: "waited 15 minutes for the upload lock",
    patterns: [/somebody is hogging the upload lock(?: for '([^']*)')?/],
    versions: "all",
    source: "NixOS/nix#11083; docs/routing.md",
    priority: 50,
    severity: "warning",
    explain: () => ({
      summary:
        "Another build has been copying inputs to the same builder for 15 minutes; Nix now uploads in parallel anyway.",
      detail:
        "Each builder has one upload lock; big closures or a slow link serialise every build that goes there.",
      fix: [
        "Let the builder fetch from caches itself: `builders-use-substitutes = true` (and make sure the builder can reach the caches).",
        "Fewer concurrent builds to that builder, or more builders.",
      ],
    }),
  }),
  entry({
    id: "unable-to-start-no-builders",
    cause: "max-jobs-zero",
    title: "max-jobs = 0 and no builder",
    patterns: [/[Uu]nable to start any build; either increase '--max-jobs' or enable remote builds/],
    versions: "all",
    source: "docs/routing.md; NixOS/nix#3806",
    generic: true,
    priority: 40,
    explain: (_m, ctx) => ({
      summary: "Local builds are off (max-jobs = 0) and the build hook has no builders at all.",
      detail:
        "Either no builders are configured for the process that builds (with a daemon: the daemon's configuration), or the ones you set were ignored (untrusted user, `extra-builders`, typo).",
      fix: [
        ctx.remote
          ? "See the earlier messages about the builder."
          : "Check `builders` as the daemon sees it: `nix show-config | grep builders` as root, and the machines file.",
        "Or allow local builds: `--max-jobs 1` / `max-jobs = auto`.",
      ],
    }),
  }),
  entry({
    id: "unable-to-start-features",
    cause: "feature-mismatch",
    title: "max-jobs = 0 and no builder fits",
    patterns: [/[Uu]nable to start any build; remote machines may not have all required system features/],
    versions: "all",
    source: "docs/routing.md",
    generic: true,
    priority: 40,
    explain: () => ({
      summary: "Local builds are off (max-jobs = 0) and no configured builder could take the derivation.",
      detail:
        "Despite the wording this also happens when the system does not match or when the builders failed to connect; the `Failed to find a machine` listing or a `cannot build on` line above says which.",
      fix: [FIX_FIND_EARLIER, "Or allow local builds: `--max-jobs 1`."],
    }),
  }),
  entry({
    id: "non-local-store",
    cause: "no-builders",
    title: "cannot build in a non-local store without builders",
    patterns: [/[Uu]nable to build with a primary store that isn't a local store/],
    versions: "all",
    source: "docs/routing.md",
    generic: true,
    priority: 35,
    explain: () => ({
      summary:
        "The primary store is not local (e.g. an ssh or binary-cache store) and no builder took the build.",
      detail: "Builds only run in a local store or on a builder.",
      fix: ["Pass a local `--store`, or configure builders."],
    }),
  }),
  entry({
    id: "local-fallback-28",
    cause: "system-mismatch",
    title: "local fallback refused (2.8–2.29 wording)",
    patterns: [
      /a '([^']+)' with features \{([^}]*)\} is required to build '([^']*)', but I am a '([^']+)' with features \{([^}]*)\}/,
    ],
    versions: "2.8-2.29",
    source: "docs/routing.md; NixOS/nix#10451",
    generic: true,
    priority: 10,
    explain: (m) => {
      const need = splitList(m[2]!);
      const have = new Set(splitList(m[5]!));
      const missing = need.filter((f) => !have.has(f));
      const sys = m[1] !== m[4];
      return {
        summary: sys
          ? `No builder took '${m[3]}', and this machine (${m[4]}) cannot build ${m[1]} itself.`
          : `No builder took '${m[3]}', and this machine lacks the features ${missing.join(", ") || "it requires"}.`,
        detail:
          "This is the last step: the build hook declined (no matching, free, reachable builder), so Nix tried a local build, which is impossible. The real reason is usually earlier in the log.",
        fix: [
          FIX_FIND_EARLIER,
          "Test the builder directly as root (`sudo nix store ping --store ssh://USER@HOST`).",
        ],
        cause: sys ? "system-mismatch" : "feature-mismatch",
      };
    },
  }),
  entry({
    id: "local-fallback-cannot-build",
    cause: "system-mismatch",
    title: "local fallback refused (2.30+ wording)",
    patterns: [/Cannot build '([^']*)'\.(?:\s|$)/],
    versions: ">=2.30",
    source: "docs/routing.md",
    generic: true,
    priority: 10,
    explain: (m, ctx) => {
      // Usually 4 lines; tolerate them joined on one line too.
      const here = ctx.lines[ctx.index]!.text.slice(m.index + m[0].length);
      const next = [
        ...here.split(/\s+(?=Reason:|Required |Current system:|Available features:|Hint:)/),
        ...ctx.lines.slice(ctx.index + 1, ctx.index + 6).map((l) => l.text),
      ].map((t) => t.trim());
      const reason = next.find((t) => t.startsWith("Reason:")) ?? "";
      let cause: Cause = "system-mismatch";
      let why = "it cannot be built here";
      if (/local builds are disabled/.test(reason)) {
        cause = "max-jobs-zero";
        why = "local builds are disabled (max-jobs = 0)";
      } else if (/missing system features/.test(reason)) {
        cause = "feature-mismatch";
        why = "this machine lacks required system features";
      } else if (/platform mismatch/.test(reason)) {
        why = "this machine is of another platform";
      } else if (/required system or feature not available/.test(reason)) {
        why = "the system or a feature is not available here";
      }
      const req = next.find((t) => /^Required (system|features):/.test(t));
      const cur = next.find((t) => /^(Current system|Available features):/.test(t));
      return {
        summary: `No builder took '${m[1]}', and ${why}.`,
        detail: `This is the last step after the build hook declined; the real reason is usually earlier in the log.${req ? ` ${req}` : ""}${cur ? ` ${cur}` : ""}`,
        fix: [
          FIX_FIND_EARLIER,
          cause === "max-jobs-zero"
            ? "Or allow local builds: `--max-jobs 1`."
            : "Test the builder directly as root.",
        ],
        cause,
      };
    },
  }),
  entry({
    id: "rosetta-note",
    cause: "system-mismatch",
    title: "Rosetta is not installed",
    patterns: [/softwareupdate --install-rosetta/],
    versions: ">=2.30",
    source: "docs/routing.md",
    generic: true,
    priority: 12,
    severity: "info",
    explain: () => ({
      summary: "An x86_64-darwin derivation on Apple silicon needs Rosetta to build locally.",
      detail: "Without it only a builder can take x86_64-darwin derivations.",
      fix: ["`/usr/sbin/softwareupdate --install-rosetta`, then restart the nix-daemon."],
    }),
  }),
  // ----- the build itself -------------------------------------------------------------------------------
  entry({
    id: "remote-build-refused-platform",
    cause: "system-mismatch",
    title: "the builder refused the derivation: the machines line claims a system or feature it lacks",
    // The inner text is the *builder's* Nix (2.8–2.29 wording); the wrapper is the local one's.
    patterns: [
      /build of '([^']*)' on '([^']*)' failed: (?:error: )?a '([^']+)' with features \{([^}]*)\} is required to build '[^']*', but I am a '([^']+)' with features \{([^}]*)\}/,
    ],
    versions: "all",
    source: "docs/routing.md; lab faults wrong-system / missing-feature",
    // Above remote-build-failed (45) and the local-fallback wording it contains (10).
    priority: 70,
    explain: (m) => {
      const need = splitList(m[4]!);
      const have = new Set(splitList(m[6]!));
      const missing = need.filter((f) => !have.has(f));
      // "I am a 'x86_64-linux'" does not list extra-platforms: a system that differs may still be fine
      // (lab builders are x86_64-linux with extra-platforms aarch64-linux). Missing features are certain.
      const sys = missing.length === 0;
      return {
        summary: sys
          ? `The hook sent '${m[1]}' (${m[3]}) to '${m[2]}', which is a ${m[5]} and refused it: its machines line lists ${m[3]}, the builder cannot build it.`
          : `The hook sent '${m[1]}' to '${m[2]}', which refused it: its machines line lists the features ${missing.join(", ")}, the builder does not have them.`,
        detail:
          "The build hook chooses machines by the systems and features columns of the machines line only; the builder checks its own `system`, `extra-platforms` and `system-features` when the build arrives. Here the line promises more than the builder's nix.conf gives.",
        fix: sys
          ? [
              "Make the machines line's systems column match the builder: `ssh USER@HOST nix show-config | grep -E '^(system|extra-platforms) '`.",
              "Or give the builder that platform (`extra-platforms`, with binfmt/qemu for a foreign CPU) and restart its nix-daemon.",
            ]
          : [
              "Make the machines line's features column match the builder's `system-features` (`ssh USER@HOST nix show-config | grep system-features`).",
              "Or add the features to the builder's `system-features` (e.g. kvm needs /dev/kvm) and restart its nix-daemon.",
            ],
        cause: sys ? "system-mismatch" : "feature-mismatch",
      };
    },
  }),
  entry({
    id: "remote-build-failed",
    cause: "build-failed",
    title: "the build failed on the builder",
    patterns: [/build of '([^']*)' on '([^']*)' failed: (.*)/],
    versions: "all",
    source: "docs/routing.md",
    priority: 45,
    explain: (m) => ({
      summary: `'${m[1]}' failed on the builder '${m[2]}': ${m[3]}`,
      detail:
        "The connection worked; the derivation's own build failed there (or the builder refused it, see the text).",
      fix: ["Read the build log (`nix log DRV`); retry with `--keep-failed` to inspect it on the builder."],
    }),
  }),
  entry({
    id: "builder-failed",
    cause: "build-failed",
    title: "a builder process failed",
    patterns: [
      /builder for '([^']*)' failed with exit code (\d+)/,
      /(\d+) dependencies of derivation '([^']*)' failed to build/,
    ],
    versions: "all",
    source: "docs/routing.md",
    generic: true,
    priority: 5,
    explain: (m) => ({
      summary: `${m[0]}.`,
      detail:
        "A consequence: the reason is in the lines before (the build's own output, or a remote refusal).",
      fix: [FIX_FIND_EARLIER],
    }),
  }),
];
