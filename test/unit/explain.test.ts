/**
 * The explain knowledge base: every entry against the message forms quoted in the spec / landscape,
 * root-cause selection ("the earlier specific error wins"), internal-json and ANSI input, the real
 * Nix 2.8 output captured by test/support/capture-logs.sh, and the `explain` command.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { renderText, runExplain } from "../../src/commands/explain.js";
import type { Io } from "../../src/commands/io.js";
import {
  CAUSES,
  explainLog,
  explainMessage,
  KNOWLEDGE,
  normaliseLog,
  parseNoMachineListing,
  stripAnsi,
  versionInRange,
} from "../../src/nix/explain.js";
import { NIX_2_8, NIX_LATEST } from "../../src/nix/version.js";

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "..", "fixtures", "logs");
/** The causes issue 5 names for `doctor --json`, copied from the issue on purpose: the source must keep them. */
const DOCTOR_CAUSES = [
  "unreachable",
  "timeout",
  "host-key",
  "auth",
  "remote-nix-missing",
  "remote-shell",
  "protocol",
  "remote-untrusted",
  "remote-daemon-down",
  "system-mismatch",
  "feature-mismatch",
  "signature",
  "local-config",
  "local-untrusted",
  "daemon-unreachable",
  "ssh-missing",
];

// A line that puts the log in a remote-build context (as Nix prints it before using a builder).
const REMOTE = "building '/nix/store/b3s8qmvd4k3vlz511mamyhg990f79a7r-x.drv' on 'ssh-ng://builder'...";

/**
 * At least one real message form per entry: the texts quoted in the Nix sources and the bug reports each entry names
 * (verbatim, including their `…` placeholders), Nix 2.8 output, and OpenSSH's wording.
 * Each sample is [log text, expected cause].
 */
const SAMPLES: Record<string, [string, string][]> = {
  "ssh-host-key-failed": [
    ["cannot build on 'ssh://…': cannot connect to '…': Host key verification failed.", "host-key"],
    ["Host key verification failed.", "host-key"],
  ],
  "ssh-host-key-changed": [
    [
      "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@",
      "host-key",
    ],
    ["Host key for builder has changed and you have requested strict checking.", "host-key"],
  ],
  "ssh-no-tty-passphrase": [["read_passphrase: can't open /dev/tty: No such device or address", "auth"]],
  "ssh-too-many-auth": [
    ["Received disconnect from 10.0.0.2 port 22:2: Too many authentication failures", "auth"],
  ],
  "ssh-key-permissions": [
    ["@         WARNING: UNPROTECTED PRIVATE KEY FILE!          @", "auth"],
    ["Permissions 0644 for '/etc/nix/builder_ed25519' are too open.", "auth"],
    ['Load key "/etc/nix/builder_ed25519": bad permissions', "auth"],
  ],
  "ssh-key-invalid-format": [['Load key "/etc/nix/builder_ed25519": invalid format', "auth"]],
  "ssh-identity-missing": [
    ["Warning: Identity file /etc/nix/id not accessible: No such file or directory.", "auth"],
  ],
  "ssh-config-permissions": [["Bad owner or permissions on /root/.ssh/config", "local-config"]],
  "ssh-auth-denied": [
    [
      "cannot build on 'ssh://…': error: failed to start SSH connection to '…': Permission denied (publickey,keyboard-interactive).",
      "auth",
    ],
    ["nix@builder: Permission denied (publickey).", "auth"],
  ],
  "ssh-resolve": [
    [
      "cannot build on 'ssh://nix@h1': error: cannot connect to 'nix@h1': ssh: Could not resolve hostname h1: Name or service not known",
      "unreachable",
    ],
  ],
  "ssh-refused": [["ssh: connect to host localhost port 22: Connection refused", "unreachable"]],
  "ssh-timeout": [
    ["ssh: connect to host 192.0.2.1 port 22: Connection timed out", "timeout"],
    ["Connection timed out during banner exchange", "timeout"],
  ],
  "ssh-no-route": [["ssh: connect to host 10.0.0.9 port 22: No route to host", "unreachable"]],
  "ssh-connection-closed": [
    ["kex_exchange_identification: read: Connection reset by peer", "unreachable"],
    ["Connection closed by 10.0.0.2 port 22", "unreachable"],
  ],
  "remote-nix-not-on-path": [
    ["bash: nix-store: command not found\nerror: cannot connect to 'mac'", "remote-nix-missing"],
    [
      "zsh:1: command not found: nix-daemon\nerror: cannot open connection to remote store 'ssh-ng://…': error: unexpected end-of-file",
      "remote-nix-missing",
    ],
    ["sh: nix-store: command not found", "remote-nix-missing"],
    ["sh: 1: nix-store: not found", "remote-nix-missing"],
  ],
  "remote-nologin": [["protocol mismatch, got 'This account is currently not available.'", "remote-shell"]],
  "ssh-missing": [
    [
      "cannot build on 'ssh://…': writing to file: Broken pipe: error: unable to execute 'ssh': No such file or directory",
      "ssh-missing",
    ],
  ],
  "ssh-invalid-host": [
    ["error: invalid SSH host name ''", "machines-syntax"],
    [
      "invalid SSH authority: 'nix@-oProxyCommand=x': host name '-oProxyCommand=x' must not start with '-'",
      "machines-syntax",
    ],
  ],
  "ssh-connection-failed": [
    [
      "cannot build on 'ssh-ng://builder@linux-builder': error: failed to start SSH connection to 'builder@linux-builder'",
      "unreachable",
    ],
    ["error: failed to start SSH master connection to 'nix@h'", "unreachable"],
  ],
  "serve-protocol-garbage": [
    [
      "cannot build on 'ssh://nix@myhost': error: 'nix-store --serve' protocol mismatch from 'nix@myhost', got 'some banner on stdout': ssh: connect to host fake port 22: Connection refused",
      "remote-shell",
    ],
    [
      "cannot build on 'ssh://nix@myhost': error: 'nix-store --serve' protocol mismatch from 'nix@myhost', got 'Welcome to myhost!\n       \ufffd\ufffdRT",
      "remote-shell",
    ],
  ],
  "daemon-protocol-garbage": [
    [
      "cannot build on 'ssh-ng://other': error: cannot open connection to remote store 'ssh-ng://other': error: protocol mismatch, got '<stdout text>'",
      "remote-shell",
    ],
  ],
  "protocol-mismatch": [
    ["error: unsupported 'nix-store --serve' protocol version on 'nix@myhost'", "protocol"],
    ["error: 'nix-store --serve' protocol mismatch from 'nix@myhost'", "protocol"],
    ["error: the Nix daemon version is too old", "protocol"],
    ["error: the Nix client version is too old", "protocol"],
    ["error: Nix daemon protocol version not supported", "protocol"],
  ],
  "remote-daemon-socket": [
    [
      `${REMOTE}\nerror: cannot connect to socket at '/nix/var/nix/daemon-socket/socket': Connection refused`,
      "remote-daemon-down",
    ],
  ],
  "remote-daemon-socket-denied": [
    [
      `${REMOTE}\nerror: cannot connect to socket at '/nix/var/nix/daemon-socket/socket': Permission denied`,
      "remote-untrusted",
    ],
  ],
  "daemon-socket-down": [
    [
      "error: cannot connect to socket at '/nix/var/nix/daemon-socket/socket': Connection refused",
      "daemon-unreachable",
    ],
    [
      "error: cannot connect to socket at '/nix/var/nix/daemon-socket/socket': No such file or directory",
      "daemon-unreachable",
    ],
  ],
  "daemon-socket-denied": [
    [
      "error: cannot connect to socket at '/nix/var/nix/daemon-socket/socket': Permission denied",
      "daemon-unreachable",
    ],
  ],
  "daemon-user-not-allowed": [
    [
      "error processing connection: user 'alice' is not allowed to connect to the Nix daemon",
      "daemon-unreachable",
    ],
  ],
  "daemon-connection-reset": [
    [
      "error: cannot open connection to remote store 'unix:///…': error: reading from file: Connection reset by peer",
      "daemon-unreachable",
    ],
  ],
  "remote-store-eof": [
    [
      "cannot build on 'ssh-ng://eu.nixbuild.net': error: cannot open connection to remote store 'ssh-ng://eu.nixbuild.net': error: unexpected end-of-file",
      "unreachable",
    ],
  ],
  "daemon-disconnected": [
    [
      "cannot build on 'ssh-ng://…': error: cannot open connection to remote store 'ssh-ng://': error: Nix daemon disconnected unexpectedly (maybe it crashed?)",
      "remote-nix-missing",
    ],
    ["error: Nix daemon disconnected unexpectedly (maybe it crashed?)", "daemon-unreachable"],
  ],
  "serve-connect-eof": [
    ["cannot build on 'ssh://nix@myhost': error: cannot connect to 'nix@myhost'", "unreachable"],
    ["error: cannot connect to '::1'", "unreachable"],
  ],
  "ssh-open-failed-old": [
    [
      "unable to open SSH connection to 'ssh://root@…': cannot connect to 'root@…'; trying other available machines...",
      "unreachable",
    ],
  ],
  "cannot-build-on": [["cannot build on 'ssh://nix@h': error: something no entry knows", "unreachable"]],
  "remote-not-privileged": [
    ["error: you are not privileged to build input-addressed derivations", "remote-untrusted"],
    ["error: you are not privileged to build derivations", "remote-untrusted"],
  ],
  "signature-missing": [
    ["error: cannot add path '/nix/store/…' because it lacks a signature by a trusted key", "signature"],
    [
      "error: cannot add path '/nix/store/yymf8i892fsz45mb3r187568l3dpvlvw-d' because it lacks a valid signature",
      "signature",
    ],
  ],
  "untrusted-setting-ignored": [
    [
      "warning: ignoring the client-specified setting 'builders', because it is a restricted setting and you are not a trusted user",
      "local-untrusted",
    ],
  ],
  "untrusted-substituter": [
    ["warning: ignoring untrusted substituter '…'", "local-untrusted"],
    [
      "warning: ignoring untrusted substituter 'https://cache.example.org', you are not a trusted user.\nRun `man nix.conf` for more information on the `substituters` configuration option.",
      "local-untrusted",
    ],
  ],
  "config-syntax": [
    ["error: illegal configuration line 'builders=ssh://h' in '/etc/nix/nix.conf'", "local-config"],
    ["error: syntax error in configuration line 'key=value' in '/etc/nix/nix.conf'", "local-config"],
    ["error: syntax error in configuration line 'key=value' in \"/etc/nix/nix.conf\"", "local-config"],
    ["error: illegal configuration line '= x' in 'NIX_CONFIG'", "local-config"],
  ],
  "config-include-missing": [
    ["error: file '/etc/nix/extra.conf' included from '/etc/nix/nix.conf' not found", "local-config"],
    ['error: file "/etc/nix/extra.conf" included from "/etc/nix/nix.conf" not found', "local-config"],
    ["error: not an absolute path: './inc.conf'", "local-config"],
  ],
  "config-bad-value": [
    ["error: Boolean setting 'keep-going' has invalid value 'True'", "local-config"],
    ["error: configuration setting 'max-jobs' should be 'auto' or an integer", "local-config"],
    ["error: setting 'cores' has invalid value '1K'", "local-config"],
    ["error: option 'sandbox' has invalid value 'maybe'", "local-config"],
  ],
  "unknown-setting-extra-builders": [["warning: unknown setting 'extra-builders'", "unknown-setting"]],
  "unknown-setting-builder-like": [["warning: unknown setting 'remote-builders'", "unknown-setting"]],
  "unknown-setting": [["warning: unknown setting 'foo-baz'", "unknown-setting"]],
  "machine-spec-column": [
    [
      "error: bad machine specification: failed to convert column #3 in a row: 'nix@scratchy.labs.cs.uu.nl - - eight' to 'unsigned int'\nerror: unexpected EOF reading a line",
      "machines-syntax",
    ],
    [
      "error: bad machine specification: failed to convert column #4 in a row: 'ssh://h x86_64-linux - 1 1.5' to 'unsigned int'",
      "machines-syntax",
    ],
    [
      "error: bad machine specification: failed to convert column #4 in a row: 'ssh://h x86_64-linux - 1 fast' to 'float'",
      "machines-syntax",
    ],
  ],
  "machine-spec-url": [
    [
      "error: bad machine specification: store URL was not found at the first column of a row: ' '",
      "machines-syntax",
    ],
    [
      "error: bad machine specification: store URL was not found at the first column of a row: '- x86_64-linux'",
      "machines-syntax",
    ],
  ],
  "machine-spec-hostkey": [
    [
      "error: bad machine specification: a column #7 in a row: 'ssh://h x86_64-linux - 1 1 - - not_base64' is not valid base64 string: error: invalid character in Base64 string: '\x1b'",
      "machines-syntax",
    ],
    [
      "error: invalid character in Base64 string: '_'\n       … while parsing machine specification at a column #7 in a row: 'ssh://h x86_64-linux - 1 1 - - a_b'",
      "machines-syntax",
    ],
  ],
  "machine-spec-base64-char": [["error: invalid character in Base64 string: '_'", "machines-syntax"]],
  "machine-spec-speed-negative": [["error: speed factor must be >= 0", "machines-syntax"]],
  "store-uri-unparseable": [["error: Cannot parse Nix store 'ssh://[::1'", "machines-syntax"]],
  "hook-eof": [
    ["error: unexpected EOF reading a line", "machines-syntax"],
    ["build hook died unexpectedly: Broken pipe", "machines-syntax"],
  ],
  "machines-file-missing": [["cannot find machines file '/etc/nix/machines'", "no-builders"]],
  "no-machine": [
    [
      [
        "Failed to find a machine for remote build!",
        "derivation: fjym90m5r8qrc51g6cxblkdf7z4jk19s-x.drv",
        "required (system, features): (aarch64-linux, )",
        "1 available machines:",
        "(systems, maxjobs, supportedFeatures, mandatoryFeatures)",
        "(riscv64-linux, 1, , )",
      ].join("\n"),
      "system-mismatch",
    ],
    [
      [
        "Failed to find a machine for remote build!",
        "derivation: fjym90m5r8qrc51g6cxblkdf7z4jk19s-x.drv",
        "required (system, features): (x86_64-linux, [big-parallel])",
        "1 available machines:",
        "(systems, maxjobs, supportedFeatures, mandatoryFeatures)",
        "([x86_64-linux], 4, [], [])",
      ].join("\n"),
      "feature-mismatch",
    ],
  ],
  "waiting-for-machine": [
    [
      "waiting for a machine to build '/nix/store/b3s8qmvd4k3vlz511mamyhg990f79a7r-x.drv'...",
      "builders-busy",
    ],
  ],
  "upload-lock": [
    ["somebody is hogging the upload lock for '…', continuing...", "upload-lock"],
    ["somebody is hogging the upload lock for '%s', continuing...", "upload-lock"],
  ],
  "unable-to-start-no-builders": [
    [
      "error: unable to start any build; either increase '--max-jobs' or enable remote builds.\n       https://nixos.org/manual/nix/stable/advanced-topics/distributed-builds.html",
      "max-jobs-zero",
    ],
    [
      "error: Unable to start any build; either increase '--max-jobs' or enable remote builds.\n\nFor more information run 'man nix.conf' and search for '/machines'.",
      "max-jobs-zero",
    ],
  ],
  "unable-to-start-features": [
    [
      "error: unable to start any build; remote machines may not have all required system features.",
      "feature-mismatch",
    ],
    [
      "error: Unable to start any build; remote machines may not have all required system features.",
      "feature-mismatch",
    ],
  ],
  "non-local-store": [
    [
      "error: unable to build with a primary store that isn't a local store; either pass a different '--store' or enable remote builds.",
      "no-builders",
    ],
    [
      "error: Unable to build with a primary store that isn't a local store; either pass a different '--store' or enable remote builds.",
      "no-builders",
    ],
  ],
  "local-fallback-28": [
    [
      "error: a 'aarch64-linux' with features {} is required to build '/nix/store/…-x.drv', but I am a 'x86_64-linux' with features {benchmark, big-parallel, kvm, nixos-test}",
      "system-mismatch",
    ],
    [
      "error: a 'x86_64-linux' with features {} is required to build '…', but I am a 'x86_64-darwin' with features {benchmark, big-parallel, nixos-test}",
      "system-mismatch",
    ],
    [
      "error: a 'x86_64-linux' with features {kvm} is required to build '/nix/store/…-t.drv', but I am a 'x86_64-linux' with features {benchmark, big-parallel, nixos-test}",
      "feature-mismatch",
    ],
  ],
  "local-fallback-cannot-build": [
    [
      "error: Cannot build '/nix/store/…-x.drv'.\nReason: platform mismatch\nRequired system: 'aarch64-linux'\nCurrent system: 'x86_64-linux'",
      "system-mismatch",
    ],
    [
      "error: Cannot build '/nix/store/…-x.drv'.\nReason: missing system features\nRequired features: {kvm}\nAvailable features: {benchmark, big-parallel, nixos-test}",
      "feature-mismatch",
    ],
    [
      "error: Cannot build '/nix/store/…-x.drv'.\nReason: local builds are disabled (max-jobs = 0)\nHint: set 'max-jobs' to a non-zero value to enable local builds, or configure remote builders via 'builders'",
      "max-jobs-zero",
    ],
    [
      "error: Cannot build '/nix/store/…-x.drv'.\nReason: required system or feature not available\nRequired system: 'aarch64-linux' with features {}\nCurrent system: 'x86_64-linux' with features {benchmark, big-parallel, kvm, nixos-test}",
      "system-mismatch",
    ],
    ["Cannot build '…'. Reason: platform mismatch", "system-mismatch"],
  ],
  "rosetta-note": [
    [
      "Note: run `/usr/sbin/softwareupdate --install-rosetta && launchctl stop org.nixos.nix-daemon` to run programs for x86_64-darwin",
      "system-mismatch",
    ],
  ],
  "remote-build-refused-platform": [
    [
      "error: build of '/nix/store/…-x.drv' on 'ssh://nix-builder@10.213.1.2' failed: error: a 'riscv64-linux' with features {} is required to build '/nix/store/…-x.drv', but I am a 'x86_64-linux' with features {benchmark, big-parallel, nixos-test}",
      "system-mismatch",
    ],
    [
      "error: build of '/nix/store/…-x.drv' on 'ssh://nix-builder@10.213.1.2' failed: error: a 'aarch64-linux' with features {kvm} is required to build '/nix/store/…-x.drv', but I am a 'x86_64-linux' with features {benchmark, big-parallel, nixos-test}",
      "feature-mismatch",
    ],
  ],
  "remote-build-failed": [
    [
      "error: build of '/nix/store/…-x.drv' on 'ssh://h' failed: builder for '/nix/store/…-x.drv' failed with exit code 1",
      "build-failed",
    ],
  ],
  "builder-failed": [
    [
      "error: builder for '/nix/store/b3s8qmvd4k3vlz511mamyhg990f79a7r-x.drv' failed with exit code 1",
      "build-failed",
    ],
    ["error: 1 dependencies of derivation '/nix/store/…-y.drv' failed to build", "build-failed"],
  ],
};

describe("knowledge base shape", () => {
  test("entry ids are unique and every entry has a sample", () => {
    const ids = KNOWLEDGE.map((e) => e.id);
    assert.equal(new Set(ids).size, ids.length);
    for (const id of ids) assert.ok(SAMPLES[id]?.length, `no sample for entry ${id}`);
    for (const id of Object.keys(SAMPLES)) assert.ok(ids.includes(id), `sample for unknown entry ${id}`);
  });
  test("causes: the doctor's vocabulary is included verbatim; every entry uses a known cause", () => {
    for (const c of DOCTOR_CAUSES) assert.ok((CAUSES as readonly string[]).includes(c), c);
    for (const e of KNOWLEDGE) assert.ok((CAUSES as readonly string[]).includes(e.cause), e.id);
  });
  test("every entry has a title, a source, patterns and a valid version range", () => {
    for (const e of KNOWLEDGE) {
      assert.ok(e.title && e.source && e.patterns.length > 0, e.id);
      assert.match(e.versions, /^(all|\d+\.\d+|\d+\.\d+-\d+\.\d+|>=\d+\.\d+|<=\d+\.\d+)$/, e.id);
    }
  });
});

describe("every entry recognises its message forms", () => {
  for (const [id, samples] of Object.entries(SAMPLES)) {
    samples.forEach(([text, cause], i) => {
      test(`${id} #${i + 1}`, () => {
        const r = explainLog(text);
        const f = r.findings.find((x) => x.entryId === id);
        assert.ok(f, `${id} not found in ${JSON.stringify(r.findings.map((x) => x.entryId))}`);
        assert.equal(f.cause, cause);
        assert.ok(f.summary.length > 0 && f.fix.length > 0);
        assert.ok(r.primary, "a primary finding");
      });
    });
  }
});

describe("ANSI and the error: prefix", () => {
  test("coloured 2.8 output", () => {
    const text =
      "cannot build on 'ssh://nix@builder': \x1b[31;1merror:\x1b[0m cannot connect to '\x1b[35;1mnix@builder\x1b[0m': Host key verification failed.\n" +
      "\x1b[31;1merror:\x1b[0m a '\x1b[35;1maarch64-linux\x1b[0m' with features {\x1b[35;1m\x1b[0m} is required to build '\x1b[35;1m/nix/store/b3s8qmvd4k3vlz511mamyhg990f79a7r-x.drv\x1b[0m', but I am a '\x1b[35;1mx86_64-linux\x1b[0m' with features {\x1b[35;1mbenchmark, big-parallel, kvm, nixos-test\x1b[0m}\n";
    const r = explainLog(text);
    assert.equal(r.primary?.entryId, "ssh-host-key-failed");
    assert.equal(r.primary?.line, 1);
    assert.ok(!r.primary.text.includes("\x1b"));
    assert.equal(r.findings[1]?.entryId, "local-fallback-28");
  });
  test("stripAnsi removes CSI and OSC sequences", () => {
    assert.equal(stripAnsi("\x1b[1;31mred\x1b[0m \x1b]8;;http://x\x07link\x1b]8;;\x07"), "red link");
  });
  test("progress redraws (\\r) keep the final text", () => {
    const lines = normaliseLog("[0/1 built] copying…\r\x1b[Kerror: unknown setting 'extra-builders'\r\n");
    assert.deepEqual(lines, [{ line: 1, text: "error: unknown setting 'extra-builders'" }]);
  });
  test("explainMessage classifies a single captured stderr", () => {
    assert.equal(explainMessage("nix@h: Permission denied (publickey).\r\n")?.cause, "auth");
    assert.equal(explainMessage("all fine")?.cause, undefined);
    assert.equal(
      explainMessage(
        "error: cannot connect to socket at '/nix/var/nix/daemon-socket/socket': Connection refused",
        {
          remote: true,
        },
      )?.cause,
      "remote-daemon-down",
    );
  });
});

describe("internal-json logs", () => {
  test("msg and start lines are decoded, line numbers are the JSON lines'", () => {
    const text = [
      '@nix {"action":"start","id":1,"level":4,"text":"connecting to \'ssh://nix@builder\'","type":0}',
      '@nix {"action":"msg","level":0,"msg":"cannot build on \'ssh://nix@builder\': \\u001b[31;1merror:\\u001b[0m cannot connect to \'\\u001b[35;1mnix@builder\\u001b[0m\': nix@builder: Permission denied (publickey)."}',
      '@nix {"action":"stop","id":1}',
      '@nix {"action":"msg","level":1,"msg":"Failed to find a machine for remote build!\\nderivation: \\u001b[35;1mb3s8-x.drv\\u001b[0m\\nrequired (system, features): (\\u001b[35;1maarch64-linux\\u001b[0m, \\u001b[35;1m\\u001b[0m)\\n\\u001b[35;1m1\\u001b[0m available machines:\\n(systems, maxjobs, supportedFeatures, mandatoryFeatures)\\n(\\u001b[35;1maarch64-linux\\u001b[0m, \\u001b[35;1m1\\u001b[0m, \\u001b[35;1m\\u001b[0m, \\u001b[35;1m\\u001b[0m)"}',
      '@nix {"action":"result","id":2,"type":101,"fields":["error: builder for \'/nix/store/x.drv\' failed with exit code 1"]}',
      "not json at all",
      "@nix {broken",
    ].join("\n");
    const r = explainLog(text);
    assert.equal(r.primary?.cause, "auth");
    assert.equal(r.primary?.line, 2);
    const nm = r.findings.find((f) => f.entryId === "no-machine");
    assert.equal(nm?.line, 4);
    assert.equal(nm?.generic, true, "the machine matches, so the listing is only a consequence");
    assert.equal(r.findings.find((f) => f.entryId === "builder-failed")?.line, 5);
  });
});

describe("root cause: the earlier specific error wins", () => {
  const hostKey =
    "cannot build on 'ssh://nix@builder': error: cannot connect to 'nix@builder': Host key verification failed.";
  const listing = [
    "Failed to find a machine for remote build!",
    "derivation: b3s8qmvd4k3vlz511mamyhg990f79a7r-x.drv",
    "required (system, features): (aarch64-linux, )",
    "1 available machines:",
    "(systems, maxjobs, supportedFeatures, mandatoryFeatures)",
    "(aarch64-linux, 1, , )",
  ].join("\n");
  const cases: [string, string, string, number][] = [
    [
      "host key, then the 2.8 local fallback",
      `${hostKey}\nerror: a 'aarch64-linux' with features {} is required to build '/nix/store/…-x.drv', but I am a 'x86_64-linux' with features {benchmark, big-parallel, kvm, nixos-test}`,
      "host-key",
      1,
    ],
    [
      "host key, then the current local fallback",
      `${hostKey}\nerror: Cannot build '/nix/store/…-x.drv'.\nReason: platform mismatch\nRequired system: 'aarch64-linux'\nCurrent system: 'x86_64-linux'`,
      "host-key",
      1,
    ],
    [
      "host key, then Failed to find a machine (the machine matched)",
      `${hostKey}\n${listing}`,
      "host-key",
      1,
    ],
    [
      "ssh-ng: ssh's raw stderr, then end-of-file",
      "nix@builder: Permission denied (publickey).\ncannot build on 'ssh-ng://nix@builder': error: cannot open connection to remote store 'ssh-ng://nix@builder': error: unexpected end-of-file\nerror: unable to start any build; remote machines may not have all required system features.",
      "auth",
      1,
    ],
    [
      "extra-builders warning, then unable to start any build",
      "warning: unknown setting 'extra-builders'\nerror: unable to start any build; either increase '--max-jobs' or enable remote builds.",
      "unknown-setting",
      1,
    ],
    [
      "bad machine spec, then the hook's EOF",
      "error: bad machine specification: failed to convert column #3 in a row: 'x - - eight' to 'unsigned int'\nerror: unexpected EOF reading a line",
      "machines-syntax",
      1,
    ],
    [
      "untrusted substituter warning, then a host-key failure: the failure wins",
      `warning: ignoring untrusted substituter 'https://c'\n${hostKey}`,
      "host-key",
      2,
    ],
    [
      "only generic lines: the most telling generic one is primary",
      "error: unexpected EOF reading a line\nerror: unable to start any build; either increase '--max-jobs' or enable remote builds.",
      "max-jobs-zero",
      2,
    ],
    [
      "two specific causes of equal weight: the earlier wins",
      "ssh: connect to host a port 22: Connection refused\nHost key verification failed.",
      "unreachable",
      1,
    ],
  ];
  for (const [name, text, cause, line] of cases) {
    test(name, () => {
      const r = explainLog(text);
      assert.equal(
        r.primary?.cause,
        cause,
        JSON.stringify(r.findings.map((f) => [f.entryId, f.cause, f.line])),
      );
      assert.equal(r.primary?.line, line);
      assert.equal(r.findings.filter((f) => f.primary).length, 1);
    });
  }
  test("a listing where no machine matches is itself the cause, and says which column fails", () => {
    const text = [
      "Failed to find a machine for remote build!",
      "derivation: x.drv",
      "required (system, features): (x86_64-linux, big-parallel, kvm)",
      "3 available machines:",
      "(systems, maxjobs, supportedFeatures, mandatoryFeatures)",
      "(aarch64-linux, 4, big-parallel, kvm, )",
      "(x86_64-linux, 2, big-parallel, )",
      "(x86_64-linux, 2, , benchmark)",
      "error: a 'x86_64-linux' with features {big-parallel, kvm} is required to build 'x.drv', but I am a 'x86_64-darwin' with features {}",
    ].join("\n");
    const r = explainLog(text);
    assert.equal(r.primary?.entryId, "no-machine");
    assert.equal(r.primary?.cause, "feature-mismatch");
    assert.match(r.primary.detail, /aarch64-linux.*systems column/);
    assert.match(
      r.primary.detail,
      /\(x86_64-linux, 2, big-parallel, \).*supported-features column \(6th\) lacks kvm/,
    );
    assert.match(r.primary.detail, /\(x86_64-linux, 2, , benchmark\).*lacks big-parallel, kvm/);
  });
});

describe("parseNoMachineListing", () => {
  test("2.8 rows: mandatory column and its failure", () => {
    const l = parseNoMachineListing([
      "derivation: b3s8-x.drv",
      "required (system, features): (aarch64-linux, )",
      "1 available machines:",
      "(systems, maxjobs, supportedFeatures, mandatoryFeatures)",
      "(aarch64-linux, 1, kvm, kvm)",
    ]);
    assert.ok(l);
    assert.equal(l.system, "aarch64-linux");
    assert.deepEqual(l.features, []);
    assert.deepEqual(l.machines[0]?.systems, ["aarch64-linux"]);
    assert.equal(l.verdicts[0]?.failing, "mandatory");
  });
  test("HEAD bracketed rows, several systems, max-jobs 0", () => {
    const l = parseNoMachineListing([
      "derivation: x.drv",
      "required (system, features): (aarch64-linux, [])",
      "2 available machines:",
      "(systems, maxjobs, supportedFeatures, mandatoryFeatures)",
      "([aarch64-linux, x86_64-linux], 0, [], [])",
      "([riscv64-linux], 1, [big-parallel], [kvm])",
    ]);
    assert.deepEqual(l?.machines[0]?.systems, ["aarch64-linux", "x86_64-linux"]);
    assert.deepEqual(
      l?.verdicts.map((v) => v.failing),
      ["max-jobs", "system"],
    );
  });
  test("2.8 several systems before max-jobs", () => {
    const l = parseNoMachineListing([
      "required (system, features): (i686-linux, )",
      "1 available machines:",
      "(systems, maxjobs, supportedFeatures, mandatoryFeatures)",
      "(x86_64-linux, i686-linux, 8, big-parallel, kvm, )",
    ]);
    assert.deepEqual(l?.machines[0]?.systems, ["x86_64-linux", "i686-linux"]);
    assert.equal(l?.machines[0]?.maxJobs, 8);
    assert.equal(l?.verdicts[0]?.failing, null);
  });
});

describe("versions", () => {
  test("versionInRange", () => {
    assert.ok(versionInRange("all", NIX_2_8));
    assert.ok(versionInRange("2.8-2.29", NIX_2_8));
    assert.ok(!versionInRange("2.8-2.29", NIX_LATEST));
    assert.ok(versionInRange(">=2.30", NIX_LATEST));
    assert.ok(!versionInRange(">=2.30", NIX_2_8));
    assert.ok(versionInRange("<=2.7", { major: 2, minor: 3, patch: 0 }));
    assert.ok(!versionInRange("<=2.7", NIX_2_8));
  });
  test("a wording from another version gets a note", () => {
    const r = explainLog("error: Cannot build '/nix/store/…-x.drv'.\nReason: platform mismatch", {
      version: "2.8",
    });
    assert.match(r.primary?.versionNote ?? "", /from Nix >=2\.30, not 2\.8/);
    const s = explainLog("error: Cannot build '/nix/store/…-x.drv'.\nReason: platform mismatch", {
      version: "2.35",
    });
    assert.equal(s.primary?.versionNote, undefined);
  });
  test("untrusted builders: 2.8 only shows it at -vvvv, the explanation says so", () => {
    const line =
      "ignoring the client-specified setting 'builders', because it is a restricted setting and you are not a trusted user";
    assert.match(explainLog(line, { version: NIX_2_8 }).primary?.detail ?? "", /only at -vvvv/);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Real Nix 2.8 output, captured by test/support/capture-logs.sh.

/** fixture → [entry, cause, line] of the expected primary finding. */
/** fixture → [primary entry, cause, line], or null: a successful build, where explain finds no failure. */
const CAPTURED: Record<string, [string, string, number] | null> = {
  "bad-machine-maxjobs": ["machine-spec-column", "machines-syntax", 3],
  "bad-machine-speed": ["machine-spec-column", "machines-syntax", 3],
  "bad-machine-hostkey": ["machine-spec-hostkey", "machines-syntax", 3],
  "bad-machine-no-url": ["machine-spec-url", "machines-syntax", 3],
  "illegal-config-line": ["config-syntax", "local-config", 1],
  "unknown-extra-builders": ["unknown-setting-extra-builders", "unknown-setting", 1],
  "no-builders-j0": ["unable-to-start-no-builders", "max-jobs-zero", 3],
  "no-machine-system-j0": ["no-machine", "system-mismatch", 3],
  "no-machine-features-j0": ["no-machine", "feature-mismatch", 3],
  "no-machine-mandatory": ["no-machine", "feature-mismatch", 3],
  "no-machine-local-fallback": ["no-machine", "system-mismatch", 3],
  "waiting-for-machine": ["waiting-for-machine", "builders-busy", 3],
  "ssh-host-key": ["ssh-host-key-failed", "host-key", 3],
  "ssh-host-key-internal-json": ["ssh-host-key-failed", "host-key", 16],
  "ssh-ng-host-key": ["ssh-host-key-failed", "host-key", 3],
  "ssh-publickey": ["ssh-auth-denied", "auth", 3],
  "ssh-banner": ["serve-protocol-garbage", "remote-shell", 3],
  "ssh-ng-banner": ["daemon-protocol-garbage", "remote-shell", 3],
  "ssh-nologin": ["remote-nologin", "remote-shell", 3],
  "remote-nix-store-missing": ["remote-nix-not-on-path", "remote-nix-missing", 3],
  "remote-nix-daemon-missing": ["remote-nix-not-on-path", "remote-nix-missing", 3],
  "ssh-missing": ["ssh-missing", "ssh-missing", 3],
  "ssh-unresolvable": ["ssh-resolve", "unreachable", 3],
  "ssh-refused": ["ssh-refused", "unreachable", 3],
  "ssh-invalid-host": ["ssh-invalid-host", "machines-syntax", 3],
  "daemon-socket-missing": ["daemon-socket-down", "daemon-unreachable", 1],
  "daemon-socket-denied": ["daemon-socket-denied", "daemon-unreachable", 1],
  "daemon-socket-refused": ["daemon-socket-down", "daemon-unreachable", 1],
  "untrusted-builders": ["untrusted-setting-ignored", "local-untrusted", 4],
  "untrusted-substituter": ["untrusted-substituter", "local-untrusted", 1],
  "remote-untrusted-build": ["remote-not-privileged", "remote-untrusted", 5],
  "remote-untrusted-signature": ["signature-missing", "signature", 8],
  // Captured from the lab, one fault on b1 each (test/e2e/explain-lab.test.ts, NIX_BUILDERS_SAVE_FIXTURES=1).
  "lab-down": ["ssh-refused", "unreachable", 3],
  "lab-wrong-host-key": ["ssh-host-key-changed", "host-key", 4],
  "lab-unauthorized": ["ssh-auth-denied", "auth", 3],
  "lab-no-nix-on-path": ["remote-nix-not-on-path", "remote-nix-missing", 3],
  "lab-nologin": ["remote-nologin", "remote-shell", 3],
  "lab-untrusted": ["remote-not-privileged", "remote-untrusted", 5],
  "lab-blackhole": ["ssh-timeout", "timeout", 3],
  "lab-daemon-down": ["remote-daemon-socket", "remote-daemon-down", 3],
  "lab-wrong-system": ["remote-build-refused-platform", "system-mismatch", 5],
  "lab-missing-feature": ["remote-build-refused-platform", "feature-mismatch", 5],
  "lab-banner": ["serve-protocol-garbage", "remote-shell", 3],
  "lab-slow": null,
};

describe("captured Nix 2.8 logs (test/fixtures/logs)", () => {
  const have = existsSync(FIXTURES) ? readdirSync(FIXTURES) : [];
  test("every .log has a .cmd note and an expectation here", () => {
    const logs = have.filter((f) => f.endsWith(".log")).map((f) => f.slice(0, -4));
    assert.ok(logs.length >= Object.keys(CAPTURED).length);
    for (const l of logs) {
      assert.ok(have.includes(`${l}.cmd`), `${l}.cmd missing`);
      assert.ok(l in CAPTURED, `no expectation for fixture ${l}`);
    }
  });
  for (const [name, want] of Object.entries(CAPTURED)) {
    test(name, () => {
      const text = readFileSync(join(FIXTURES, `${name}.log`), "utf8");
      assert.match(readFileSync(join(FIXTURES, `${name}.cmd`), "utf8"), /Nix\) 2\.8/);
      const r = explainLog(text, { version: "2.8" });
      if (want === null) {
        assert.equal(r.primary, null, JSON.stringify(r.findings.map((f) => [f.entryId, f.line])));
        assert.deepEqual(r.findings, []);
        return;
      }
      const [entryId, cause, line] = want;
      assert.equal(r.primary?.entryId, entryId, JSON.stringify(r.findings.map((f) => [f.entryId, f.line])));
      assert.equal(r.primary?.cause, cause);
      assert.equal(r.primary?.line, line);
      assert.equal(r.primary?.versionNote, undefined, "2.8 output matches 2.8 wording");
    });
  }
  test("the 2.8 local fallback after a connection failure is reported, but not as the cause", () => {
    const r = explainLog(readFileSync(join(FIXTURES, "ssh-host-key.log"), "utf8"));
    const last = r.findings.at(-1);
    assert.equal(last?.entryId, "local-fallback-28");
    assert.equal(last?.primary, false);
    assert.equal(r.findings.find((f) => f.entryId === "no-machine")?.generic, true);
  });
});

// ---------------------------------------------------------------------------------------------------------
// The command

function fakeIo(): Io & { stdout: string; stderr: string } {
  const io = {
    stdout: "",
    stderr: "",
    out(t: string) {
      io.stdout += t;
    },
    err(t: string) {
      io.stderr += t;
    },
    env: {},
    isTTY: false,
  };
  return io;
}

function input(files: Record<string, string>, stdin = "") {
  return {
    readFile: async (p: string) => {
      const v = files[p];
      if (v === undefined) throw new Error("ENOENT: no such file");
      return v;
    },
    readStdin: async () => stdin,
  };
}

describe("nix-builders explain", () => {
  const log = readFileSync(join(FIXTURES, "ssh-host-key.log"), "utf8");
  test("text: primary cause first, then the other findings with line numbers; exit 0", async () => {
    const io = fakeIo();
    const rc = await runExplain("x.log", {}, io, input({ "x.log": log }));
    assert.equal(rc, 0);
    const out = io.stdout;
    assert.match(out, /^Cause: host-key/);
    assert.ok(out.indexOf("line 3:") < out.indexOf("line 4:"));
    assert.ok(out.indexOf("line 4:") < out.indexOf("line 10:"));
    assert.match(out, /Fix:\n {6}- Pin the key/);
  });
  test("--json: {primary, findings}", async () => {
    const io = fakeIo();
    const rc = await runExplain("-", { json: true, nixVersion: "2.8" }, io, input({}, log));
    assert.equal(rc, 0);
    const v = JSON.parse(io.stdout) as { primary: { cause: string; line: number }; findings: unknown[] };
    assert.deepEqual(Object.keys(v), ["primary", "findings"]);
    assert.equal(v.primary.cause, "host-key");
    assert.equal(v.primary.line, 3);
    assert.equal(v.findings.length, 3);
  });
  test("nothing recognised: exit 1, primary null", async () => {
    const io = fakeIo();
    assert.equal(
      await runExplain(undefined, { json: true }, io, input({}, "these 2 paths will be fetched\n")),
      1,
    );
    assert.deepEqual(JSON.parse(io.stdout), { primary: null, findings: [] });
    const t = fakeIo();
    assert.equal(await runExplain(undefined, {}, t, input({}, "")), 1);
    assert.match(t.stdout, /No known Nix remote-build problem/);
  });
  test("an unreadable file is a refusal (exit 2); a bad --nix-version a usage error", async () => {
    await assert.rejects(runExplain("nope.log", {}, fakeIo(), input({})), { name: "Refusal" });
    await assert.rejects(runExplain("-", { nixVersion: "latest" }, fakeIo(), input({}, log)), {
      name: "UsageError",
    });
  });
  test("renderText of an all-generic log says 'Other findings:'", () => {
    const r = explainLog(
      "error: unexpected EOF reading a line\nerror: unable to start any build; either increase '--max-jobs' or enable remote builds.",
    );
    assert.match(renderText(r), /^Cause: max-jobs-zero[\s\S]*Other findings:\nline 1:/);
  });
});
