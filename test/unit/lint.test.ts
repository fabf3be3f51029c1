/**
 * The lint rules (src/nix/lint.ts) on fixture data: configuration views from the real conf engine over an
 * in-memory file system, builders results from the real machines engine, and hand-written host facts.
 * Each rule is checked on both Nix 2.8 and current Nix where they differ.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { classifyFile } from "../../src/commands/lint.js";
import { classifySshKeygen, resolveKeyPath } from "../../src/host/keyfile.js";
import { base64Encode } from "../../src/nix/base64.js";
import { type ConfigView, type FileReader, loadConfig } from "../../src/nix/conf.js";
import {
  exitCodeFor,
  type Finding,
  type KeyFileFacts,
  lintBuildersSource,
  lintConfError,
  lintConfSyntax,
  lintKeyFiles,
  lintMachines,
  lintMachinesFileAccess,
  lintMandatoryFeatures,
  lintOverrides,
  lintPlatformNames,
  lintReplacedDefaults,
  lintSkippedFiles,
  lintUnknownSettings,
  normaliseFindings,
  summarise,
} from "../../src/nix/lint.js";
import { type BuildersResult, parseBuilders, type Reader } from "../../src/nix/machines.js";
import { applyClientSettings } from "../../src/nix/trust.js";
import { NIX_2_8, NIX_LATEST, type NixVersion } from "../../src/nix/version.js";

const V28 = NIX_2_8;
const HEAD = NIX_LATEST;
const SYS = "x86_64-linux";
const FACTS = {
  system: SYS,
  extraPlatforms: ["i686-linux", "x86_64-v1-linux", "x86_64-v2-linux"],
  systemFeatures: ["benchmark", "big-parallel", "kvm", "nixos-test"],
  cores: 4,
  hardwareThreads: 4,
  source: "computed" as const,
};

function memFs(files: Record<string, string>): FileReader & Reader {
  return {
    read(p: string) {
      const t = files[p];
      return t === undefined ? { ok: false, code: "ENOENT" } : { ok: true, text: t };
    },
    exists(p: string) {
      return { ok: true, exists: files[p] !== undefined };
    },
  };
}

/** A config view: /etc/nix/nix.conf plus optional user files (highest priority first). */
function view(
  files: Record<string, string>,
  version: NixVersion = V28,
  userFiles: string[] = [],
  env: Record<string, string> = {},
): ConfigView {
  return loadConfig({
    version,
    env: { NIX_CONF_DIR: "/etc/nix", NIX_USER_CONF_FILES: userFiles.join(":"), ...env },
    passwdHome: "/root",
    fs: memFs(files),
    machine: { ...FACTS, isRoot: true },
  });
}

function machines(
  spec: string,
  files: Record<string, string> = {},
  version: NixVersion = V28,
): BuildersResult {
  return parseBuilders({ spec, version, defaultSystem: SYS, fs: memFs(files), cwd: "/" });
}

function ids(fs: readonly Finding[]): string[] {
  return fs.map((f) => f.id);
}

function only(fs: readonly Finding[], id: string): Finding[] {
  return fs.filter((f) => f.id === id);
}

const HOST_KEY = base64Encode(
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDfHtzJlAdbNbrI9aBQX9DqEYIvnkFJ1mjRpAe8Szkq0 root@builder\n",
);

describe("lintConfSyntax: every bad line, Nix's text per version", () => {
  const text = "cores = 2\nmax-jobs=4\nsandbox = false\nbuilders= x\n";
  it("2.8: both bad lines, the first as Nix raises it", () => {
    const f = lintConfSyntax(text, "/etc/nix/nix.conf", V28);
    assert.deepEqual(
      f.map((x) => [x.id, x.severity, x.line]),
      [
        ["conf-syntax", "error", 2],
        ["conf-syntax", "error", 4],
      ],
    );
    assert.equal(f[0]!.nixMessage, "illegal configuration line 'max-jobs=4' in '/etc/nix/nix.conf'");
    assert.equal(f[1]!.nixMessage, "illegal configuration line 'builders= x' in '/etc/nix/nix.conf'");
    assert.match(f[0]!.message, /stops loading/);
    assert.match(f[1]!.message, /once the lines above are fixed/);
  });
  it("HEAD: the newer message text", () => {
    const f = lintConfSyntax(text, "/etc/nix/nix.conf", HEAD);
    assert.equal(f.length, 2);
    assert.equal(f[0]!.nixMessage, `syntax error in configuration line 'max-jobs=4' in "/etc/nix/nix.conf"`);
  });
  it("a clean file has no findings; CRLF lines are fine", () => {
    assert.deepEqual(lintConfSyntax("cores = 2\r\n\r\n# x\r\n", "/x", V28), []);
  });
});

describe("lintConfError", () => {
  it("a bad value is reported with Nix's message and place", () => {
    const v = view({ "/etc/nix/nix.conf": "cores = 2\nkeep-going = True\n" });
    const f = lintConfError(v, "the daemon's configuration");
    assert.equal(f.length, 1);
    assert.equal(f[0]!.id, "conf-error");
    assert.equal(f[0]!.line, 2);
    assert.equal(f[0]!.nixMessage, "Boolean setting 'keep-going' has invalid value 'True'");
    assert.match(f[0]!.message, /daemon runs fails/);
  });
  it("a missing include names the fix", () => {
    const v = view({ "/etc/nix/nix.conf": "include extra.conf\n" });
    const f = lintConfError(v, "x");
    assert.equal(f[0]!.nixMessage, "file '/etc/nix/extra.conf' included from '/etc/nix/nix.conf' not found");
    assert.match(f[0]!.fix, /!include/);
  });
  it("a syntax error from the view dedupes with the text scan", () => {
    const conf = "max-jobs=4\n";
    const v = view({ "/etc/nix/nix.conf": conf });
    const all = normaliseFindings([
      ...lintConfSyntax(conf, "/etc/nix/nix.conf", V28),
      ...lintConfError(v, "x"),
    ]);
    assert.deepEqual(ids(all), ["conf-syntax"]);
  });
  it("no error, no finding", () => {
    assert.deepEqual(lintConfError(view({ "/etc/nix/nix.conf": "cores = 1\n" }), "x"), []);
  });
});

describe("extra-builders and unknown settings", () => {
  it("extra-builders: a warning with the machines-file alternative", () => {
    const v = view({
      "/etc/nix/nix.conf":
        "builders = @/etc/nix/machines\nextra-builders = ssh://nix@b aarch64-linux\nbuildrs = x\n",
    });
    const f = lintUnknownSettings(v, "@/etc/nix/machines");
    const eb = only(f, "extra-builders");
    assert.equal(eb.length, 1);
    assert.equal(eb[0]!.severity, "warning");
    assert.equal(eb[0]!.line, 2);
    assert.equal(eb[0]!.nixMessage, "unknown setting 'extra-builders'");
    assert.match(eb[0]!.fix, /`@\/etc\/nix\/machines`/);
    assert.match(eb[0]!.fix, /builders = @\/etc\/nix\/machines\.all/);
    const unk = only(f, "unknown-setting");
    assert.deepEqual(
      unk.map((x) => [x.severity, x.line, x.nixMessage]),
      [["warning", 3, "unknown setting 'buildrs'"]],
    );
    assert.match(unk[0]!.message, /did you mean 'builders'\?/);
  });
  it("typos of remote-build settings (issue 16 item 5): a warning with 'did you mean'; other typos stay info", () => {
    const v = view({
      "/etc/nix/nix.conf":
        "builder = ssh://b x86_64-linux\ntrusted-user = alice\nbuilders-use-substitute = true\nkeep-outputz = true\nfrobnicate = 1\n",
    });
    const f = only(lintUnknownSettings(v, ""), "unknown-setting");
    assert.deepEqual(
      f.map((x) => [x.line, x.severity, /did you mean '([^']+)'/.exec(x.message)?.[1] ?? null]),
      [
        [1, "warning", "builders"],
        [2, "warning", "trusted-users"],
        [3, "warning", "builders-use-substitutes"],
        [4, "info", "keep-outputs"],
        [5, "info", null],
      ],
    );
    assert.match(f[0]!.fix, /`builders = ssh:\/\/b x86_64-linux`/);
  });
  it("the alternative includes the builders value in force", () => {
    const v = view({ "/etc/nix/nix.conf": "extra-builders = h x86_64-linux\n" });
    const f = lintUnknownSettings(v, "@/srv/m1 ; @/srv/m2");
    assert.match(f[0]!.fix, /`@\/srv\/m1`, `@\/srv\/m2`/);
  });
});

describe("lintSkippedFiles (issue 16 item 9)", () => {
  const load = (errs: Record<string, string>, files: Record<string, string>) =>
    loadConfig({
      version: V28,
      env: { NIX_CONF_DIR: "/etc/nix", NIX_USER_CONF_FILES: "" },
      passwdHome: "/root",
      fs: {
        read: (p: string) =>
          errs[p]
            ? { ok: false, code: errs[p]! }
            : files[p] === undefined
              ? { ok: false, code: "ENOENT" }
              : { ok: true, text: files[p]! },
        exists: (p: string) => ({ ok: true, exists: errs[p] !== undefined || files[p] !== undefined }),
      },
      machine: { ...FACTS, isRoot: true },
    });
  it("an included directory: Nix skips it silently; a warning at the include line", () => {
    const v = load({ "/etc/nix/d": "EISDIR" }, { "/etc/nix/nix.conf": "include /etc/nix/d\n" });
    const f = lintSkippedFiles(v, "root's configuration");
    assert.deepEqual(
      f.map((x) => [x.id, x.severity, x.file, x.line]),
      [["conf-file-skipped", "warning", "/etc/nix/nix.conf", 1]],
    );
    assert.match(f[0]!.fix, /not a directory/);
  });
  it("an unreadable nix.conf: a warning naming it; a missing one: nothing", () => {
    const v = load({ "/etc/nix/nix.conf": "EACCES" }, {});
    const f = lintSkippedFiles(v, "alice's configuration");
    assert.deepEqual(
      f.map((x) => [x.id, x.file]),
      [["conf-file-skipped", "/etc/nix/nix.conf"]],
    );
    assert.match(f[0]!.message, /Permission denied/);
    assert.deepEqual(lintSkippedFiles(load({}, {}), "x"), []);
  });
});

describe("lintPlatformNames (issue 16 item 5)", () => {
  it("`extra-platforms = aarch64` is not a system double: warning, did you mean aarch64-linux", () => {
    const f = lintPlatformNames(view({ "/etc/nix/nix.conf": "extra-platforms = aarch64 i686-linux\n" }));
    assert.deepEqual(
      f.map((x) => [x.id, x.severity, x.line]),
      [["platform-not-a-system", "warning", 1]],
    );
    assert.match(f[0]!.message, /did you mean 'aarch64-linux'/);
  });
  it("real doubles and the default: nothing", () => {
    assert.deepEqual(
      lintPlatformNames(view({ "/etc/nix/nix.conf": "extra-platforms = aarch64-linux\n" })),
      [],
    );
    assert.deepEqual(lintPlatformNames(view({ "/etc/nix/nix.conf": "" })), []);
  });
  it("x86-64-linux is suggested as x86_64-linux, not i686-linux", () => {
    const f = lintPlatformNames(view({ "/etc/nix/nix.conf": "extra-platforms = x86-64-linux\n" }));
    assert.match(f[0]!.message, /did you mean 'x86_64-linux'/);
  });
});

describe("lintReplacedDefaults: extra-platforms / system-features", () => {
  const defaults = { extraPlatforms: FACTS.extraPlatforms, systemFeatures: FACTS.systemFeatures };
  it("extra-platforms = … replaces the defaults: warning naming what is lost and extra-extra-platforms", () => {
    const v = view({ "/etc/nix/nix.conf": "extra-platforms = aarch64-linux\n" });
    const f = lintReplacedDefaults(v, defaults);
    assert.equal(f.length, 1);
    assert.equal(f[0]!.id, "extra-platforms-replaces");
    assert.equal(f[0]!.severity, "warning");
    assert.match(f[0]!.message, /i686-linux, x86_64-v1-linux, x86_64-v2-linux/);
    assert.match(f[0]!.fix, /extra-extra-platforms = aarch64-linux/);
  });
  it("extra-extra-platforms appends: nothing to say", () => {
    const v = view({ "/etc/nix/nix.conf": "extra-extra-platforms = aarch64-linux\n" });
    assert.deepEqual(lintReplacedDefaults(v, defaults), []);
  });
  it("a replacement that keeps every default is fine", () => {
    const v = view({
      "/etc/nix/nix.conf": `extra-platforms = ${FACTS.extraPlatforms.join(" ")} aarch64-linux\n`,
    });
    assert.deepEqual(lintReplacedDefaults(v, defaults), []);
  });
  it("system-features = … dropping kvm is an info", () => {
    const v = view({ "/etc/nix/nix.conf": "system-features = big-parallel\n" });
    const f = lintReplacedDefaults(v, defaults);
    assert.deepEqual(ids(f), ["system-features-replaces"]);
    assert.equal(f[0]!.severity, "info");
    assert.match(f[0]!.message, /benchmark, kvm, nixos-test/);
  });
});

describe("lintOverrides: builders and trusted-users replaced by a later line", () => {
  it("builders in the system file overridden by a user file (2.8 and HEAD)", () => {
    for (const version of [V28, HEAD]) {
      const v = view(
        {
          "/etc/nix/nix.conf": "builders = @/etc/nix/machines\n",
          "/etc/xdg/nix/nix.conf": "builders = ssh://b x86_64-linux\n",
        },
        version,
        ["/etc/xdg/nix/nix.conf"],
      );
      const f = lintOverrides(v.assignments);
      assert.equal(f.length, 1, `version ${version.minor}`);
      assert.equal(f[0]!.id, "builders-overridden");
      assert.equal(f[0]!.severity, "warning");
      assert.equal(f[0]!.file, "/etc/nix/nix.conf");
      assert.match(f[0]!.message, /\/etc\/xdg\/nix\/nix\.conf:1/);
    }
  });
  it("trusted-users overridden by an included file loses users (hercules §6 item 8)", () => {
    const v = view({
      "/etc/nix/nix.conf": "trusted-users = root hercules-ci-agent\n!include /etc/nix/extra.conf\n",
      "/etc/nix/extra.conf": "trusted-users = root @wheel\n",
    });
    const f = lintOverrides(v.assignments);
    assert.equal(f.length, 1);
    assert.equal(f[0]!.id, "trusted-users-overridden");
    assert.equal(f[0]!.severity, "warning");
    assert.equal(f[0]!.line, 1);
    assert.match(f[0]!.message, /hercules-ci-agent is not trusted/);
  });
  it("extra-trusted-users after the line only appends: nothing", () => {
    const v = view({ "/etc/nix/nix.conf": "trusted-users = root\nextra-trusted-users = alice\n" });
    assert.deepEqual(lintOverrides(v.assignments), []);
  });
  it("the same value twice is only an info", () => {
    const v = view({ "/etc/nix/nix.conf": "builders = @/m\nbuilders = @/m\n" });
    const f = lintOverrides(v.assignments);
    assert.deepEqual(
      f.map((x) => [x.id, x.severity]),
      [["builders-overridden", "info"]],
    );
  });
  it("the filter limits which pairs are reported", () => {
    const v = view({ "/etc/nix/nix.conf": "builders = @/a\n", "/u.conf": "builders = @/b\n" }, V28, [
      "/u.conf",
    ]);
    assert.equal(lintOverrides(v.assignments, ["builders"], (a) => a.layer !== "system").length, 0);
  });
});

describe("lintBuildersSource", () => {
  const origin = { kind: "file" as const, file: "/home/a/.config/nix/nix.conf", line: 1 };
  it("a per-user builders the daemon ignores (untrusted): 2.8 says it only at debug level", () => {
    for (const [version, shown] of [
      [V28, false],
      [HEAD, true],
    ] as const) {
      const { ignored } = applyClientSettings({
        version,
        trusted: false,
        overridden: [{ name: "builders", value: "ssh://b x86_64-linux", origin }],
        daemonSettings: { substituters: [], trustedSubstituters: [] },
      });
      const f = lintBuildersSource({
        version,
        builders: { value: "@/etc/nix/machines", origin: [{ kind: "default" }], from: "daemon" },
        ignored,
        user: "alice",
      });
      const b = only(f, "builders-ignored-untrusted");
      assert.equal(b.length, 1);
      assert.equal(b[0]!.file, origin.file);
      assert.match(b[0]!.message, /alice is not a trusted user/);
      assert.match(b[0]!.message, shown ? /Nix prints a warning/ : /debug level/);
      assert.match(b[0]!.nixMessage!, /ignoring the client-specified setting 'builders'/);
    }
  });
  it("builders = '' while the machines file has machines (NixOS distributedBuilds = false)", () => {
    const f = lintBuildersSource({
      version: V28,
      builders: { value: "", origin: [{ kind: "file", file: "/etc/nix/nix.conf", line: 4 }], from: "daemon" },
      ignored: [],
      defaultMachines: { path: "/etc/nix/machines", exists: true, machineCount: 2 },
    });
    assert.deepEqual(
      f.map((x) => [x.id, x.severity, x.line]),
      [["builders-empty", "warning", 4]],
    );
    assert.match(f[0]!.message, /distributedBuilds = false/);
  });
  it("builders = '' with no machines file is only an info; the default value says nothing", () => {
    const empty = lintBuildersSource({
      version: V28,
      builders: { value: "", origin: [{ kind: "file", file: "/etc/nix/nix.conf", line: 4 }], from: "daemon" },
      ignored: [],
      defaultMachines: { path: "/etc/nix/machines", exists: false, machineCount: 0 },
    });
    assert.deepEqual(
      empty.map((x) => x.severity),
      ["info"],
    );
    const dflt = lintBuildersSource({
      version: V28,
      builders: { value: "@/etc/nix/machines", origin: [{ kind: "default" }], from: "daemon" },
      ignored: [],
      defaultMachines: { path: "/etc/nix/machines", exists: true, machineCount: 2 },
    });
    assert.deepEqual(dflt, []);
  });
  it("NIX_REMOTE_SYSTEMS with two files: broken before 2.24 only", () => {
    const mk = (version: NixVersion, value: string) =>
      lintBuildersSource({
        version,
        builders: { value, origin: [{ kind: "env", name: "NIX_REMOTE_SYSTEMS" }], from: "user" },
        ignored: [],
      });
    assert.deepEqual(ids(mk(V28, "@/a @/b")), ["nix-remote-systems-split"]);
    assert.deepEqual(ids(mk(HEAD, "@/a\n@/b")), []);
  });
});

describe("lintMachines: errors Nix stops at, all of them", () => {
  it("every bad row with file:line; the first is the one Nix raises", () => {
    const r = machines("@/m", { "/m": "a - - eight\nb x86_64-linux - 1 1\nc - - 1 x\n" });
    const f = only(lintMachines({ version: V28, machines: r }), "machine-spec-error");
    assert.deepEqual(
      f.map((x) => [x.file, x.line]),
      [
        ["/m", 1],
        ["/m", 3],
      ],
    );
    assert.match(f[0]!.message, /Nix stops at this one/);
    assert.doesNotMatch(f[1]!.message, /Nix stops at this one/);
    assert.equal(
      f[0]!.nixMessage,
      "bad machine specification: failed to convert column #3 in a row: 'a - - eight' to 'unsigned int'",
    );
    assert.match(f[1]!.nixMessage!, /column #4 in a row: 'c - - 1 x' to 'unsigned int'/);
  });
  it("a negative speed factor: HEAD's own error", () => {
    const f = lintMachines({ version: HEAD, machines: machines("a - - 1 -1", {}, HEAD) });
    assert.equal(only(f, "machine-spec-error")[0]!.nixMessage, "speed factor must be >= 0");
  });
  it("an unreadable machines file (a directory) is an error", () => {
    const fs: Reader = {
      read: (p) => (p === "/d" ? { ok: false, code: "EISDIR" } : { ok: false, code: "ENOENT" }),
    };
    const r = parseBuilders({ spec: "@/d", version: V28, defaultSystem: SYS, fs });
    const f = lintMachines({ version: V28, machines: r });
    assert.deepEqual(ids(f), ["machines-unreadable"]);
    assert.equal(f[0]!.nixMessage, "reading from file: Is a directory");
  });
});

describe("lintMachines: the pre-2.29 splitting traps", () => {
  const file = "a x86_64-linux\r\n\r\nb x86_64-linux # old; c\n  # indented\n @/etc/nix/other\n";
  const fsFiles = { "/m": file };
  it("2.8: errors, with Nix's message for the blank entries", () => {
    const f = lintMachines({ version: V28, machines: machines("@/m", fsFiles) });
    const blank = only(f, "blank-entry");
    assert.deepEqual(
      blank.map((x) => [x.severity, x.line]),
      [
        ["error", 2],
        ["error", 4],
      ],
    );
    assert.match(blank[0]!.message, /CRLF/);
    assert.match(blank[0]!.nixMessage!, /store URL was not found at the first column of a row/);
    assert.deepEqual(
      only(f, "semicolon-in-comment").map((x) => [x.severity, x.line]),
      [["error", 3]],
    );
    assert.deepEqual(
      only(f, "space-before-at").map((x) => [x.severity, x.line]),
      [["error", 5]],
    );
    // not double-reported as generic spec errors
    assert.equal(only(f, "machine-spec-error").length, 0);
  });
  it("HEAD: the same lines are warnings ('breaks on Nix < 2.29'), found with the 2.8 parse", () => {
    const f = lintMachines({
      version: HEAD,
      machines: machines("@/m", fsFiles, HEAD),
      machines28: machines("@/m", fsFiles, V28),
    });
    const legacy = f.filter((x) => ["blank-entry", "semicolon-in-comment", "space-before-at"].includes(x.id));
    assert.deepEqual(
      legacy.map((x) => [x.id, x.severity, x.line]),
      [
        ["blank-entry", "warning", 2],
        ["blank-entry", "warning", 4],
        ["semicolon-in-comment", "warning", 3],
        ["space-before-at", "warning", 5],
      ],
    );
    for (const x of legacy) assert.match(x.message, /breaks on Nix < 2\.29/);
    assert.equal(only(f, "machine-spec-error").length, 0);
  });
  it("HEAD without the 2.8 parse: nothing about them", () => {
    const f = lintMachines({ version: HEAD, machines: machines("@/m", fsFiles, HEAD) });
    assert.equal(only(f, "blank-entry").length, 0);
  });
  it("inline `builders = a ; ; b` in nix.conf: a whitespace entry on 2.8", () => {
    const r = parseBuilders({
      spec: "a ; ; b",
      version: V28,
      defaultSystem: SYS,
      fs: memFs({}),
      origin: { file: "/etc/nix/nix.conf", line: 3 },
    });
    const f = lintMachines({ version: V28, machines: r });
    assert.deepEqual(
      only(f, "blank-entry").map((x) => [x.file, x.line, x.severity]),
      [["/etc/nix/nix.conf", 3, "error"]],
    );
  });
});

describe("lintMachines: per-row findings", () => {
  it("system types that are not doubles, with the suggestion", () => {
    const f = only(
      lintMachines({ version: V28, machines: machines("a x86_64,aarch64-linux") }),
      "unknown-system",
    );
    assert.equal(f.length, 1);
    assert.equal(f[0]!.severity, "warning");
    assert.match(f[0]!.fix, /'x86_64-linux'/);
  });
  it("a host key that decodes but is not a public key line is an error; a good one is fine", () => {
    const bad = base64Encode("AAAAC3NzaC1lZDI1NTE5AAAAIDfHtzJlAdbNbrI9aBQX9DqEYIvnkFJ1mjRpAe8Szkq0");
    const f = lintMachines({ version: V28, machines: machines(`a x86_64-linux - 1 1 - - ${bad}`) });
    assert.deepEqual(
      only(f, "host-key-not-public-key").map((x) => x.severity),
      ["error"],
    );
    const ok = lintMachines({ version: V28, machines: machines(`a x86_64-linux - 1 1 - - ${HOST_KEY}`) });
    assert.deepEqual(ok, []);
  });
  it("duplicate machines: same store URI after normalisation", () => {
    const f = lintMachines({
      version: V28,
      machines: machines("@/m", {
        "/m": "nix@b x86_64-linux\nother x86_64-linux\nssh://nix@b aarch64-linux\n",
      }),
    });
    const d = only(f, "duplicate-machine");
    assert.deepEqual(
      d.map((x) => [x.line, x.severity]),
      [[3, "warning"]],
    );
    assert.match(d[0]!.message, /already defined at \/m:1/);
  });
  it("maxJobs 0 and extra fields", () => {
    const f = lintMachines({ version: V28, machines: machines("a x86_64-linux - 0 1 - - - comment") });
    assert.deepEqual(ids(f).sort(), ["extra-fields", "max-jobs-zero"]);
  });
  it("a port in the URI: an error on 2.8, fine on HEAD", () => {
    assert.deepEqual(ids(lintMachines({ version: V28, machines: machines("ssh://b:2222 x86_64-linux") })), [
      "port-unsupported",
    ]);
    assert.deepEqual(
      ids(lintMachines({ version: HEAD, machines: machines("ssh://b:2222 x86_64-linux", {}, HEAD) })),
      [],
    );
  });
  it("a relative key: rejected from 2.34 only", () => {
    assert.deepEqual(ids(lintMachines({ version: V28, machines: machines("b x86_64-linux key") })), []);
    assert.deepEqual(
      ids(lintMachines({ version: HEAD, machines: machines("b x86_64-linux key", {}, HEAD) })),
      ["relative-ssh-key"],
    );
  });
  it("a missing @file: a warning unless it is the default machines file", () => {
    const explicit = lintMachines({ version: V28, machines: machines("@/etc/nix/extra") });
    assert.deepEqual(
      explicit.map((x) => [x.id, x.severity]),
      [["include-missing", "warning"]],
    );
    const dflt = lintMachines({
      version: V28,
      machines: machines("@/etc/nix/machines"),
      defaultIncludePath: "/etc/nix/machines",
    });
    assert.deepEqual(dflt, []);
    const rel = lintMachines({ version: V28, machines: machines("@etc/m") });
    assert.match(rel[0]!.message, /relative to \//);
  });
});

describe("lintMandatoryFeatures", () => {
  const ms = (spec: string) => machines(spec).machines;
  it("two mandatory features nixpkgs never requests together: warning", () => {
    const f = lintMandatoryFeatures(ms("a x86_64-linux - 1 1 - big-parallel,kvm"));
    assert.deepEqual(
      f.map((x) => [x.id, x.severity]),
      [["mandatory-features-combined", "warning"]],
    );
    assert.match(f[0]!.fix, /column 6/);
  });
  it("nixos-test + kvm (NixOS VM tests) and add-on features are fine", () => {
    assert.deepEqual(lintMandatoryFeatures(ms("a x86_64-linux - 1 1 - kvm,nixos-test")), []);
    assert.deepEqual(
      lintMandatoryFeatures(ms("a x86_64-linux - 1 1 - ca-derivations,gccarch-znver3,kvm")),
      [],
    );
    assert.deepEqual(lintMandatoryFeatures(ms("a x86_64-linux - 1 1 kvm big-parallel")), []);
  });
  it("a mandatory feature nobody knows: info, unless another machine supports it", () => {
    assert.deepEqual(
      lintMandatoryFeatures(ms("a x86_64-linux - 1 1 - gpu")).map((x) => [x.id, x.severity]),
      [["mandatory-feature-unknown", "info"]],
    );
    assert.deepEqual(lintMandatoryFeatures(ms("a x86_64-linux - 1 1 - gpu\nb x86_64-linux - 1 1 gpu")), []);
  });
});

describe("lintKeyFiles", () => {
  const root = { name: "root", uid: 0 };
  const base: KeyFileFacts = {
    path: "/k",
    exists: true,
    isFile: true,
    readableByHookUser: true,
    mode: 0o600,
    ownerUid: 0,
    passphrase: false,
    loadError: null,
    inStore: false,
  };
  const run = (facts: Partial<KeyFileFacts>, spec = "ssh://b x86_64-linux /k", hookUser = root) =>
    lintKeyFiles({
      version: V28,
      machines: machines(spec).machines,
      facts: [{ ...base, ...facts }],
      hookUser,
    });
  it("a good key: nothing", () => {
    assert.deepEqual(run({}), []);
  });
  it("missing", () => {
    assert.deepEqual(
      run({ exists: false, isFile: null, mode: null }).map((x) => [x.id, x.severity]),
      [["key-missing", "error"]],
    );
  });
  it("0644 owned by the hook user: ssh refuses it (error, with ssh's text)", () => {
    const f = run({ mode: 0o644 });
    assert.deepEqual(ids(f), ["key-permissions"]);
    assert.equal(f[0]!.severity, "error");
    assert.match(f[0]!.nixMessage!, /Permissions 0644 for '\/k' are too open/);
  });
  it("0640 owned by someone else: ssh uses it, but it is exposed (warning)", () => {
    const f = run({ mode: 0o640, ownerUid: 1000 });
    assert.deepEqual(
      f.map((x) => [x.id, x.severity]),
      [["key-permissions", "warning"]],
    );
  });
  it("passphrase-protected, unreadable, not a key", () => {
    assert.deepEqual(ids(run({ passphrase: true })), ["key-passphrase"]);
    const unreadable = run({ readableByHookUser: false, passphrase: null }, "ssh://b x86_64-linux /k", {
      name: "alice",
      uid: 1000,
    });
    assert.deepEqual(ids(unreadable), ["key-unreadable"]);
    assert.match(unreadable[0]!.message, /not readable by alice/);
    assert.deepEqual(ids(run({ loadError: "invalid format", path: "/k.pub" }, "b x86_64-linux /k.pub")), [
      "key-invalid",
    ]);
  });
  it("a .pub key (issue 16 item 11): 'a public key' is the one finding, never chmod 600 first", () => {
    // ssh-keygen refuses a 0644 .pub on its mode before parsing it: no loadError, yet it is a public key
    const f = run({ path: "/k.pub", mode: 0o644, passphrase: null }, "ssh://b x86_64-linux /k.pub");
    assert.deepEqual(ids(f), ["key-invalid"]);
    assert.match(f[0]!.message, /is a public key/);
    assert.match(f[0]!.fix, /\/k$/);
    assert.ok(!f.some((x) => /chmod/.test(x.fix)));
    const g = run({ path: "/k.pub", loadError: "invalid format" }, "ssh://b x86_64-linux /k.pub");
    assert.deepEqual(ids(g), ["key-invalid"]);
  });
  it("one set of findings per key path, however many machines name it (10,000 machines: one finding)", () => {
    const spec = Array.from({ length: 10_000 }, (_, i) => `ssh://b${i} x86_64-linux /k`).join("\n");
    const f = run({ exists: false, isFile: null, mode: null }, spec);
    assert.deepEqual(ids(f), ["key-missing"]);
    assert.match(f[0]!.message, /10000 machines use this key/);
  });
  it("`~` in the key path (issue 16 item 12): ssh's message names the expanded path", () => {
    const f = run(
      { path: "~/.ssh/id_b", resolved: "/root/.ssh/id_b", exists: false, isFile: null, mode: null },
      "ssh://b x86_64-linux ~/.ssh/id_b",
    );
    assert.deepEqual(ids(f), ["key-missing"]);
    assert.equal(
      f[0]!.nixMessage,
      "Warning: Identity file /root/.ssh/id_b not accessible: No such file or directory.",
    );
    const p = run(
      { path: "~/.ssh/id_b", resolved: "/root/.ssh/id_b", mode: 0o644 },
      "ssh://b x86_64-linux ~/.ssh/id_b",
    );
    assert.match(p[0]!.nixMessage!, /^Permissions 0644 for '\/root\/\.ssh\/id_b' are too open/);
  });
  it("unknown readability is an info", () => {
    assert.deepEqual(
      run({ readableByHookUser: null, passphrase: null }).map((x) => [x.id, x.severity]),
      [["key-unchecked", "info"]],
    );
  });
  it("in the Nix store: an error (and no separate permissions finding)", () => {
    const f = run(
      { path: "/nix/store/abc-key", inStore: true, mode: 0o444 },
      "b x86_64-linux /nix/store/abc-key",
    );
    assert.deepEqual(ids(f), ["key-in-store"]);
    assert.equal(f[0]!.severity, "error");
  });
  it("a local store or localhost never uses the key column", () => {
    assert.deepEqual(run({ exists: false }, "/srv/store x86_64-linux /k"), []);
    assert.deepEqual(run({ exists: false }, "localhost x86_64-linux /k"), []);
  });
});

describe("lintMachinesFileAccess", () => {
  it("a found machines file the hook user cannot read: Nix's 'opening file' error", () => {
    const r = machines("@/etc/nix/machines", { "/etc/nix/machines": "a x86_64-linux\n" });
    const f = lintMachinesFileAccess(
      r.includes,
      [{ path: "/etc/nix/machines", readableByHookUser: false }],
      { name: "alice" },
      V28,
    );
    assert.deepEqual(ids(f), ["machines-unreadable"]);
    assert.equal(f[0]!.nixMessage, "opening file '/etc/nix/machines': Permission denied");
    assert.deepEqual(
      lintMachinesFileAccess(
        r.includes,
        [{ path: "/etc/nix/machines", readableByHookUser: true }],
        { name: "a" },
        V28,
      ),
      [],
    );
  });
});

describe("normaliseFindings, summary, exit code", () => {
  const f = (
    id: string,
    severity: Finding["severity"],
    file: string | null,
    line: number | null,
  ): Finding => ({
    id,
    severity,
    file,
    line,
    message: id,
    fix: "x",
  });
  it("sorted by file (none last), line, severity; repeats dropped", () => {
    const out = normaliseFindings([
      f("b", "warning", "/z", 1),
      f("a", "info", null, null),
      f("c", "warning", "/a", 5),
      f("d", "error", "/a", 5),
      f("e", "info", "/a", 2),
      f("c", "warning", "/a", 5),
    ]);
    assert.deepEqual(ids(out), ["e", "d", "c", "b", "a"]);
  });
  it("exit codes 0/1/2; infos do not count", () => {
    assert.equal(exitCodeFor(summarise([f("a", "info", null, null)])), 0);
    assert.equal(exitCodeFor(summarise([f("a", "info", null, null), f("b", "warning", null, null)])), 1);
    assert.equal(exitCodeFor(summarise([f("b", "warning", null, null), f("c", "error", null, null)])), 2);
    assert.deepEqual(summarise([f("b", "warning", null, null), f("c", "error", null, null)]), {
      errors: 1,
      warnings: 1,
      infos: 0,
    });
  });
});

describe("host helpers (pure parts)", () => {
  it("classifyFile: by name, then by the first meaningful line", () => {
    assert.equal(classifyFile("/x/builders.conf", "a x86_64-linux\n"), "conf");
    assert.equal(classifyFile("/x/m", "# c\n\nbuilders = @/m\n"), "conf");
    assert.equal(classifyFile("/x/m", "max-jobs=4\n"), "conf");
    assert.equal(classifyFile("/x/m", "!include /etc/nix/x.conf\n"), "conf");
    assert.equal(classifyFile("/x/m", "# c\nnix@b x86_64-linux /k 2\n"), "machines");
    assert.equal(classifyFile("/x/m", "ssh://b?remote-store=/x x86_64-linux\n"), "machines");
    assert.equal(classifyFile("/x/m", "@/etc/nix/machines\n"), "machines");
    assert.equal(classifyFile("/x/m", ""), "machines");
  });
  it("classifySshKeygen: ssh-keygen's outcomes", () => {
    assert.deepEqual(classifySshKeygen(0, ""), { kind: "none" });
    assert.deepEqual(
      classifySshKeygen(255, 'Load key "/k": incorrect passphrase supplied to decrypt private key\n'),
      { kind: "passphrase" },
    );
    assert.deepEqual(
      classifySshKeygen(
        255,
        '@@@\n@ WARNING: UNPROTECTED PRIVATE KEY FILE! @\nLoad key "/k": bad permissions\n',
      ),
      { kind: "bad-permissions" },
    );
    assert.deepEqual(classifySshKeygen(255, 'Load key "/k.pub": error in libcrypto\n'), {
      kind: "not-a-key",
      reason: "error in libcrypto",
    });
    assert.deepEqual(classifySshKeygen(255, 'Load key "/k": invalid format\n'), {
      kind: "not-a-key",
      reason: "invalid format",
    });
  });
  it("resolveKeyPath: ~ for the hook user, relative against /", () => {
    assert.equal(resolveKeyPath("~/.ssh/id", "/root"), "/root/.ssh/id");
    assert.equal(resolveKeyPath("etc/k", "/root"), "/etc/k");
    assert.equal(resolveKeyPath("/k", "/root"), "/k");
  });
});
