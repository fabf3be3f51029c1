/**
 * Unit tests for the nix.conf engine: every case of Nix's config unit tests (2.8.0 src/libutil/tests/config.cc) under 2.8 and current ("HEAD") rules, plus
 * layering, includes, types, origins and the version-dependent error texts.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  type ConfigView,
  canonPath,
  dirOf,
  type FileReader,
  type LoadConfigInput,
  loadConfig,
  parseConfText,
  userConfigFiles,
} from "../../src/nix/conf.js";
import { NixError } from "../../src/nix/errors.js";
import { SettingRegistry } from "../../src/nix/settings.js";
import { NIX_2_8, NIX_LATEST, type NixVersion } from "../../src/nix/version.js";

/** An in-memory file system: path -> content; a value of null is a directory; `links` are symlinks. */
function memFs(files: Record<string, string | null>, links: Record<string, string> = {}): FileReader {
  const follow = (p: string): string => {
    const t = links[p];
    if (t === undefined) return p;
    return follow(t.startsWith("/") ? t : canonPath(`${dirOf(p)}/${t}`)!);
  };
  return {
    read(path) {
      const p = follow(path);
      if (!(p in files)) return { ok: false, code: "ENOENT" };
      const c = files[p];
      return c === null || c === undefined ? { ok: false, code: "EISDIR" } : { ok: true, text: c };
    },
    exists(path) {
      return { ok: true, exists: path in files || path in links };
    },
  };
}

const MACHINE = {
  system: "x86_64-linux",
  extraPlatforms: ["x86_64-v2-linux", "i686-linux", "x86_64-v1-linux"],
  systemFeatures: ["nixos-test", "benchmark", "big-parallel", "kvm"],
  cores: 2,
  hardwareThreads: 6,
  isRoot: true,
};

function load(
  version: NixVersion,
  files: Record<string, string | null>,
  env: Record<string, string> = {},
  extra: Partial<LoadConfigInput> = {},
): ConfigView {
  return loadConfig({
    version,
    env: { NIX_CONF_DIR: "/etc/nix", NIX_USER_CONF_FILES: "/u/u1.conf", ...env },
    passwdHome: "/root",
    fs: memFs(files),
    machine: MACHINE,
    ...extra,
  });
}

/** Load `text` as the only user file. */
function loadText(version: NixVersion, text: string, env: Record<string, string> = {}): ConfigView {
  return load(version, { "/u/u1.conf": text }, env);
}

const val = (v: ConfigView, name: string) => v.settings.get(name)?.value;
const VERSIONS: [string, NixVersion][] = [
  ["2.8", NIX_2_8],
  ["HEAD", NIX_LATEST],
];

for (const [label, V] of VERSIONS) {
  const head = V === NIX_LATEST;
  const illegal = (line: string, path: string) =>
    head
      ? `syntax error in configuration line '${line}' in "${path}"`
      : `illegal configuration line '${line}' in '${path}'`;

  describe(`Nix config unit-test cases (${label})`, () => {
    test("empty input: no settings changed", () => {
      const v = loadText(V, "");
      assert.equal(v.error, null);
      assert.equal(v.assignments.length, 0);
      assert.equal(val(v, "builders"), "@/etc/nix/machines");
    });

    test("a comment only: no settings", () => {
      const v = loadText(V, "# just a comment");
      assert.equal(v.error, null);
      assert.equal(v.assignments.length, 0);
    });

    test("trailing comment is cut; commented-out line ignored", () => {
      const p = parseConfText(
        "name-of-the-setting = value-from-file #useful comment\n# name-of-the-setting = foo\n",
        "/x",
        V,
      );
      assert.equal(p.error, null);
      assert.deepEqual(
        p.lines.map((l) => (l.kind === "set" ? [l.name, l.value] : null)),
        [["name-of-the-setting", "value-from-file"]],
      );
      const v = loadText(V, "system = value-from-file #useful comment\n# system = foo\n");
      assert.equal(val(v, "system"), "value-from-file");
    });

    test("reassigned setting: the last one wins", () => {
      const v = loadText(V, "system = first-value\nsystem = second-value\n");
      assert.equal(val(v, "system"), "second-value");
      assert.deepEqual(v.settings.get("system")!.origin, [{ kind: "file", file: "/u/u1.conf", line: 2 }]);
    });

    test("include of a missing absolute file is an error", () => {
      const v = loadText(V, "system = a\ninclude /nix/store/does/not/exist.nix");
      assert.ok(v.error instanceof NixError);
      assert.equal(
        v.error.nixMessage,
        head
          ? `file "/nix/store/does/not/exist.nix" included from "/u/u1.conf" not found`
          : "file '/nix/store/does/not/exist.nix' included from '/u/u1.conf' not found",
      );
    });

    test("`value == key` is a usage error", () => {
      const v = loadText(V, "value == key");
      assert.equal(v.error?.kind, "usage");
      assert.equal(v.error?.nixMessage, illegal("value == key", "/u/u1.conf"));
      assert.equal(v.error?.line, 1);
    });

    test("a single token (with trailing space) is a usage error quoting the untrimmed line", () => {
      const v = loadText(V, "value ");
      assert.equal(v.error?.nixMessage, illegal("value ", "/u/u1.conf"));
    });

    test("extra- on a non-appendable setting is unknown", () => {
      const r = new SettingRegistry(V);
      assert.equal(r.resolve("extra-builders"), null);
      assert.equal(r.resolve("extra-cores"), null);
      const v = loadText(V, "extra-builders = ssh://x\n");
      assert.equal(val(v, "builders"), "@/etc/nix/machines");
      assert.deepEqual(
        v.warnings.map((w) => w.message),
        ["unknown setting 'extra-builders'"],
      );
      assert.equal(v.assignments[0]!.setting, null);
    });

    test("an alias sets the same setting as its name", () => {
      const a = loadText(V, "build-max-jobs = 5\n");
      const b = loadText(V, "max-jobs = 5\n");
      assert.equal(val(a, "max-jobs"), 5);
      assert.deepEqual(val(a, "max-jobs"), val(b, "max-jobs"));
      assert.equal(a.assignments[0]!.setting, "max-jobs");
      assert.equal(val(loadText(V, "build-cores = 7"), "cores"), 7);
      assert.deepEqual(val(loadText(V, "binary-caches = a b"), "substituters"), ["a", "b"]);
      assert.deepEqual(val(loadText(V, "trusted-binary-caches = b a"), "trusted-substituters"), ["a", "b"]);
      assert.equal(val(loadText(V, "build-use-sandbox = relaxed"), "sandbox"), "relaxed");
    });

    test("`max-jobs=4` is one token: illegal line", () => {
      const v = loadText(V, "max-jobs=4\n");
      assert.equal(v.error?.nixMessage, illegal("max-jobs=4", "/u/u1.conf"));
    });

    test("runs of whitespace in a value collapse to one space", () => {
      assert.equal(val(loadText(V, "builders = a b   c # comment"), "builders"), "a b c");
    });

    test("tabs and CRLF are whitespace", () => {
      assert.equal(val(loadText(V, "\tbuilders\t=\t@/x  ; y\r\n"), "builders"), "@/x ; y");
    });

    test("`keep-going = 1 2` is an invalid boolean", () => {
      const v = loadText(V, "keep-going = 1 2");
      assert.equal(v.error?.nixMessage, "Boolean setting 'keep-going' has invalid value '1 2'");
      assert.equal(v.error?.kind, "usage");
    });

    test("!include of a missing file is ignored", () => {
      const v = load(
        V,
        { "/tmp/cfgtest/u1.conf": "!include nonexist.conf\ncores = 3\n" },
        {
          NIX_USER_CONF_FILES: "/tmp/cfgtest/u1.conf",
        },
      );
      assert.equal(v.error, null);
      assert.equal(val(v, "cores"), 3);
    });

    test("include of a missing relative file names the resolved path", () => {
      const v = load(
        V,
        { "/tmp/cfgtest/u1.conf": "include nonexist.conf\n" },
        {
          NIX_USER_CONF_FILES: "/tmp/cfgtest/u1.conf",
        },
      );
      assert.equal(
        v.error?.nixMessage,
        head
          ? `file "/tmp/cfgtest/nonexist.conf" included from "/tmp/cfgtest/u1.conf" not found`
          : "file '/tmp/cfgtest/nonexist.conf' included from '/tmp/cfgtest/u1.conf' not found",
      );
    });

    test("NIX_USER_CONF_FILES=u1:u2: the first file wins", () => {
      const v = load(V, { "/u1": "cores = 1\n", "/u2": "cores = 2\n" }, { NIX_USER_CONF_FILES: "/u1:/u2" });
      assert.equal(val(v, "cores"), 1);
      assert.deepEqual(
        v.files.map((f) => f.path),
        ["/etc/nix/nix.conf", "/u2", "/u1"],
      );
    });

    test("NIX_CONFIG wins over all files", () => {
      const v = load(
        V,
        { "/etc/nix/nix.conf": "cores = 5\n", "/u/u1.conf": "cores = 6\n" },
        { NIX_CONFIG: "cores = 33" },
      );
      assert.equal(val(v, "cores"), 33);
      assert.deepEqual(v.settings.get("cores")!.origin, [{ kind: "env", name: "NIX_CONFIG" }]);
      assert.equal(v.settings.get("cores")!.layer, "env");
    });
  });

  describe(`names, types and layering (${label})`, () => {
    test("extra- appends; a later plain assignment clears", () => {
      const a = loadText(V, "substituters = a\nextra-substituters = b\n");
      assert.deepEqual(val(a, "substituters"), ["a", "b"]);
      assert.equal(a.settings.get("substituters")!.origin.length, 2);
      const b = loadText(V, "extra-substituters = b\nsubstituters = a\n");
      assert.deepEqual(val(b, "substituters"), ["a"]);
      const c = loadText(V, "extra-substituters = b\n");
      assert.deepEqual(val(c, "substituters"), ["https://cache.nixos.org/", "b"]);
      assert.deepEqual(
        c.settings.get("substituters")!.origin.map((o) => o.kind),
        ["default", "file"],
      );
    });

    test("extra-platforms replaces; extra-extra-platforms appends; sets sort and de-duplicate", () => {
      assert.deepEqual(val(loadText(V, "extra-platforms = aarch64-linux"), "extra-platforms"), [
        "aarch64-linux",
      ]);
      assert.deepEqual(val(loadText(V, "extra-extra-platforms = aarch64-linux"), "extra-platforms"), [
        "aarch64-linux",
        "i686-linux",
        "x86_64-v1-linux",
        "x86_64-v2-linux",
      ]);
      assert.deepEqual(
        val(loadText(V, "system-features = z a\nextra-system-features = m a"), "system-features"),
        ["a", "m", "z"],
      );
      const v = loadText(V, "extra-extra-extra-platforms = x");
      assert.deepEqual(
        v.warnings.map((w) => w.message),
        ["unknown setting 'extra-extra-extra-platforms'"],
      );
    });

    test("lists keep order and duplicates", () => {
      assert.deepEqual(val(loadText(V, "trusted-users = b a b"), "trusted-users"), ["b", "a", "b"]);
    });

    test("booleans are case-sensitive", () => {
      for (const ok of ["true", "yes", "1"])
        assert.equal(val(loadText(V, `keep-going = ${ok}`), "keep-going"), true);
      for (const ok of ["false", "no", "0"])
        assert.equal(val(loadText(V, `require-sigs = ${ok}`), "require-sigs"), false);
      assert.equal(
        loadText(V, "keep-going = True").error?.nixMessage,
        "Boolean setting 'keep-going' has invalid value 'True'",
      );
      // The canonical name is reported even when an alias was written.
      assert.equal(
        loadText(V, "build-fallback = maybe").error?.nixMessage,
        "Boolean setting 'fallback' has invalid value 'maybe'",
      );
    });

    test("integers: + accepted, - rejected for unsigned, hex rejected, range checked", () => {
      assert.equal(val(loadText(V, "cores = +5"), "cores"), 5);
      assert.equal(val(loadText(V, "max-silent-time = -3"), "max-silent-time"), -3);
      for (const bad of ["-1", "0x10", "4294967296", ""])
        assert.equal(
          loadText(V, `cores = ${bad}`).error?.nixMessage,
          `setting 'cores' has invalid value '${bad}'`,
          bad,
        );
      assert.equal(val(loadText(V, "max-free = 18446744073709551615"), "max-free"), 18446744073709551615n);
    });

    test(`integer unit suffixes (${head ? "accepted" : "rejected"})`, () => {
      const v = loadText(V, "connect-timeout = 1K");
      if (head) assert.equal(val(v, "connect-timeout"), 1024);
      else assert.equal(v.error?.nixMessage, "setting 'connect-timeout' has invalid value '1K'");
      assert.equal(loadText(V, "cores = 1X").error?.nixMessage, "setting 'cores' has invalid value '1X'");
    });

    test("max-jobs: auto = hardware threads; bad value text", () => {
      assert.equal(val(loadText(V, "max-jobs = auto"), "max-jobs"), 6);
      assert.equal(
        loadText(V, "max-jobs = lots").error?.nixMessage,
        "configuration setting 'max-jobs' should be 'auto' or an integer",
      );
    });

    test("sandbox values and error", () => {
      assert.equal(val(loadText(V, "sandbox = relaxed"), "sandbox"), "relaxed");
      assert.equal(val(loadText(V, "sandbox = false"), "sandbox"), false);
      assert.equal(
        loadText(V, "sandbox = yes").error?.nixMessage,
        "option 'sandbox' has invalid value 'yes'",
      );
    });

    test("string maps: k=v tokens, others dropped, first value of a key kept", () => {
      const v = val(loadText(V, "access-tokens = a=1 junk b=x=y a=2"), "access-tokens") as Record<
        string,
        string
      >;
      assert.deepEqual({ ...v }, { a: "1", b: "x=y" });
    });

    test("experimental features: JSON form and unknown-feature warning", () => {
      const v = loadText(V, "experimental-features = nix-command bogus");
      assert.deepEqual(val(v, "experimental-features"), head ? ["nix-command"] : [3]);
      assert.deepEqual(
        v.warnings.map((w) => w.message),
        ["unknown experimental feature 'bogus'"],
      );
    });

    test("unknown settings warn once each, sorted, after all files", () => {
      const v = load(V, { "/etc/nix/nix.conf": "zzz = 1\n", "/u/u1.conf": "aaa = 1\nzzz = 2\n" });
      assert.deepEqual(
        v.warnings.map((w) => w.message),
        ["unknown setting 'aaa'", "unknown setting 'zzz'"],
      );
    });

    test("overridden = set outside the system file", () => {
      const v = load(V, {
        "/etc/nix/nix.conf": "cores = 4\nkeep-going = true\n",
        "/u/u1.conf": "keep-going = true\n",
      });
      assert.equal(v.settings.get("cores")!.overridden, false);
      assert.equal(v.settings.get("cores")!.layer, "system");
      assert.equal(v.settings.get("keep-going")!.overridden, true);
      assert.equal(v.settings.get("keep-going")!.layer, "user");
      assert.equal(v.settings.get("system")!.overridden, false);
    });

    test("includes are relative to the including file; assignments record include expansion order", () => {
      const v = load(V, {
        "/etc/nix/nix.conf": "cores = 1\ninclude conf.d/a.conf\nmax-jobs = 2\n",
        "/etc/nix/conf.d/a.conf": "cores = 9\n!include ../b.conf\n",
        "/etc/nix/b.conf": "keep-going = yes\n",
      });
      assert.equal(v.error, null);
      assert.equal(val(v, "cores"), 9);
      assert.deepEqual(
        v.assignments.map(
          (a) => `${a.name}@${a.origin.kind === "file" ? `${a.origin.file}:${a.origin.line}` : ""}`,
        ),
        [
          "cores@/etc/nix/nix.conf:1",
          "cores@/etc/nix/conf.d/a.conf:1",
          "keep-going@/etc/nix/b.conf:1",
          "max-jobs@/etc/nix/nix.conf:3",
        ],
      );
      assert.deepEqual(
        v.files.filter((f) => f.role === "include").map((f) => f.path),
        ["/etc/nix/conf.d/a.conf", "/etc/nix/b.conf"],
      );
    });

    test("a symlinked config file resolves includes next to the link", () => {
      const fs = memFs(
        { "/real/c.conf": "include x.conf\n", "/real/x.conf": "cores = 1\n", "/l/x.conf": "cores = 2\n" },
        { "/l/c.conf": "/real/c.conf" },
      );
      const v = loadConfig({
        version: V,
        env: { NIX_CONF_DIR: "/etc/nix", NIX_USER_CONF_FILES: "/l/c.conf" },
        passwdHome: "/root",
        fs,
        machine: MACHINE,
      });
      assert.equal(val(v, "cores"), 2);
    });

    test("relative include inside NIX_CONFIG fails; absolute works", () => {
      const v = load(V, { "/x.conf": "cores = 8\n" }, { NIX_CONFIG: "!include x.conf" });
      assert.equal(v.error?.nixMessage, "not an absolute path: './x.conf'");
      assert.equal(val(load(V, { "/x.conf": "cores = 8\n" }, { NIX_CONFIG: "include /x.conf" }), "cores"), 8);
    });

    test("an include target that cannot be read (directory) is ignored", () => {
      const v = load(V, { "/u/u1.conf": "include d\ncores = 3\n", "/u/d": null });
      assert.equal(v.error, null);
      assert.equal(val(v, "cores"), 3);
    });

    test("missing top-level files are skipped silently", () => {
      const v = load(V, {}, { NIX_USER_CONF_FILES: "/nope" });
      assert.equal(v.error, null);
      assert.deepEqual(
        v.files.map((f) => [f.path, f.exists]),
        [
          ["/etc/nix/nix.conf", false],
          ["/nope", false],
        ],
      );
    });

    test("NIX_CONF_DIR moves the system file and the builders/netrc defaults", () => {
      const v = load(V, { "/a/b/nix.conf": "cores = 3\n" }, { NIX_CONF_DIR: "/a/x/../b/" });
      assert.equal(val(v, "cores"), 3);
      assert.equal(val(v, "builders"), "@/a/b/machines");
      assert.equal(val(v, "netrc-file"), "/a/b/netrc");
    });

    test("NIX_REMOTE_SYSTEMS feeds the builders default; NIX_REMOTE the store default", () => {
      const v = load(V, {}, { NIX_REMOTE_SYSTEMS: "/m1:/m2", NIX_REMOTE: "daemon" });
      assert.equal(val(v, "builders"), head ? "@/m1\n@/m2" : "@/m1 @/m2");
      assert.equal(val(v, "store"), "daemon");
      assert.deepEqual(v.settings.get("builders")!.origin, [{ kind: "env", name: "NIX_REMOTE_SYSTEMS" }]);
    });

    test("flags win and count as overridden; unknown long flags are errors; --option only warns", () => {
      const v = load(
        V,
        {},
        {},
        {
          flags: [
            { name: "max-jobs", value: "3" },
            { name: "extra-substituters", value: "x" },
            { name: "no-keep-going" },
            { name: "cores", value: "zz", via: "option" },
          ],
        },
      );
      assert.equal(v.error, null);
      assert.equal(val(v, "max-jobs"), 3);
      assert.equal(v.settings.get("max-jobs")!.layer, "flag");
      assert.deepEqual(val(v, "substituters"), ["https://cache.nixos.org/", "x"]);
      assert.equal(val(v, "keep-going"), false);
      assert.deepEqual(
        v.warnings.map((w) => w.message),
        ["setting 'cores' has invalid value 'zz'"],
      );
      assert.equal(
        load(V, {}, {}, { flags: [{ name: "foo-baz", value: "1" }] }).error?.nixMessage,
        "unrecognised flag '--foo-baz'",
      );
    });
  });
}

describe("version differences", () => {
  test("user config files in 2.30: empty components dropped, string joins, NIX_CONFIG_HOME", () => {
    const v230 = { major: 2, minor: 30, patch: 5 };
    assert.deepEqual(userConfigFiles(v230, { NIX_USER_CONF_FILES: ":/a::/b:" }, "/"), ["/a", "/b"]);
    assert.deepEqual(
      userConfigFiles(v230, { HOME: "/h", XDG_CONFIG_HOME: "", XDG_CONFIG_DIRS: "/d/" }, "/"),
      ["/nix/nix.conf", "/d//nix/nix.conf"],
    );
    assert.deepEqual(userConfigFiles(v230, { HOME: "/h", NIX_CONFIG_HOME: "/c" }, "/")[0], "/c/nix.conf");
  });

  test("user config files: XDG defaults, empty components, NIX_CONFIG_HOME (2.25+)", () => {
    assert.deepEqual(userConfigFiles(NIX_2_8, { HOME: "/root" }, "/x"), [
      "/root/.config/nix/nix.conf",
      "/etc/xdg/nix/nix.conf",
    ]);
    assert.deepEqual(userConfigFiles(NIX_2_8, {}, "/home/p"), [
      "/home/p/.config/nix/nix.conf",
      "/etc/xdg/nix/nix.conf",
    ]);
    assert.deepEqual(userConfigFiles(NIX_2_8, { NIX_USER_CONF_FILES: "::/a::/b:" }, "/"), ["/a", "/b"]);
    assert.deepEqual(userConfigFiles(NIX_2_8, { NIX_USER_CONF_FILES: "" }, "/"), []);
    assert.deepEqual(
      userConfigFiles(NIX_2_8, { HOME: "/h", XDG_CONFIG_HOME: "", XDG_CONFIG_DIRS: "" }, "/"),
      ["/nix/nix.conf"],
    );
    assert.deepEqual(userConfigFiles(NIX_LATEST, { NIX_USER_CONF_FILES: "/a::/b" }, "/"), ["/a", ".", "/b"]);
    assert.deepEqual(
      userConfigFiles(NIX_LATEST, { HOME: "/h", NIX_CONFIG_HOME: "/c", XDG_CONFIG_DIRS: "/d" }, "/"),
      ["/c/nix.conf", "/d/nix/nix.conf"],
    );
    assert.deepEqual(
      userConfigFiles(NIX_2_8, { HOME: "/h", NIX_CONFIG_HOME: "/c", XDG_CONFIG_DIRS: "/d" }, "/"),
      ["/h/.config/nix/nix.conf", "/d/nix/nix.conf"],
    );
  });

  test("2.8 applies lines before a syntax error; HEAD parses the whole file first", () => {
    const text = "cores = 7\nbroken\n";
    assert.equal(val(loadText(NIX_2_8, text), "cores"), 7);
    assert.equal(val(loadText(NIX_LATEST, text), "cores"), 2);
  });

  test("HEAD applies experimental-features lines first", () => {
    const v = loadText(NIX_LATEST, "cores = 3\nexperimental-features = flakes\n");
    assert.deepEqual(
      v.assignments.map((a) => a.name),
      ["experimental-features", "cores"],
    );
    assert.deepEqual(val(v, "experimental-features"), ["flakes", "fetch-tree"]);
    assert.deepEqual(
      loadText(NIX_2_8, "cores = 3\nexperimental-features = flakes\n").assignments.map((a) => a.name),
      ["cores", "experimental-features"],
    );
  });

  test("intermediate version 2.24 uses the new wording with single-quoted paths", () => {
    const v = loadText({ major: 2, minor: 24, patch: 0 }, "oops");
    assert.equal(v.error?.nixMessage, "syntax error in configuration line 'oops' in '/u/u1.conf'");
  });

  test("empty or relative NIX_CONF_DIR", () => {
    assert.equal(load(NIX_2_8, {}, { NIX_CONF_DIR: "rel" }).error?.nixMessage, "not an absolute path: 'rel'");
    assert.ok(load(NIX_2_8, {}, { NIX_CONF_DIR: "" }).error);
    const v = load(NIX_LATEST, {}, { NIX_CONF_DIR: "" });
    assert.equal(v.error, null);
    assert.equal(v.confDir, "/etc/nix");
  });

  test("enforce-determinism exists in 2.8 only", () => {
    assert.ok(new SettingRegistry(NIX_2_8).get("enforce-determinism"));
    assert.equal(new SettingRegistry(NIX_LATEST).get("enforce-determinism"), undefined);
    assert.equal(new SettingRegistry(NIX_2_8).settings.length, 91);
  });

  test("an lstat failure on an include skips the rest of the file, but is fatal in NIX_CONFIG", () => {
    const base = memFs({ "/u/u1.conf": "cores = 5\ninclude /long\ncores = 9\n" });
    const fs: FileReader = {
      read: base.read,
      exists: (p) => (p === "/long" ? { ok: false, code: "ENAMETOOLONG" } : base.exists(p)),
    };
    const input = { version: NIX_2_8, passwdHome: "/root", fs, machine: MACHINE };
    const v = loadConfig({ ...input, env: { NIX_CONF_DIR: "/etc/nix", NIX_USER_CONF_FILES: "/u/u1.conf" } });
    assert.equal(v.error, null);
    assert.equal(val(v, "cores"), 5);
    assert.equal(
      v.files.find((f) => f.path === "/u/u1.conf")?.skipped,
      "getting status of /long: File name too long",
    );
    const w = loadConfig({
      ...input,
      env: { NIX_CONF_DIR: "/etc/nix", NIX_USER_CONF_FILES: "", NIX_CONFIG: "include /long" },
    });
    assert.equal(w.error?.nixMessage, "getting status of /long: File name too long");
  });

  test("include cycles end in an error instead of a crash", () => {
    const v = load(NIX_2_8, { "/u/u1.conf": "include u1.conf\n" });
    assert.ok(v.error instanceof NixError);
  });
});
