/**
 * The settings registry against the real binaries: every setting that `nix show-config --json` (2.8) and
 * `nix config show --json` (2.30) print, compared whole with the registry for that version: the name,
 * the aliases, the declared default (`defaultValue`), the value in force with no configuration (`value`,
 * in its JSON form) and, from 2.16, the experimental feature that gates it.
 *
 * Nix runs with a private empty NIX_CONF_DIR, HOME and XDG directories, NIX_USER_CONF_FILES empty and
 * NIX_CONFIG unset. Machine-dependent defaults are inputs of the model: they are taken from Nix's own
 * values (as in conf-diff.test.ts) and listed in MACHINE_DEPENDENT, so any other setting must match.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { nodeFileReader } from "../../src/host/fs-reader.js";
import { loadConfig, type MachineFacts, settingValueToJson } from "../../src/nix/conf.js";
import { SettingRegistry } from "../../src/nix/settings.js";
import { atLeast, NIX_2_8, type NixVersion, parseNixVersion } from "../../src/nix/version.js";
import { parseJsonBig } from "../support/json-big.js";
import { REAL_NIXES, type RealNix } from "../support/nix-versions.js";

interface JsonSetting {
  aliases: string[];
  defaultValue: unknown;
  value: unknown;
  experimentalFeature?: string | null;
}

/** Settings whose default Nix computes from the machine: the model takes these as inputs. */
const MACHINE_DEPENDENT = [
  "system",
  "extra-platforms",
  "system-features",
  "cores",
  "nix-path",
  "sandbox-paths",
] as const;

/**
 * Settings whose value with no configuration is not their declared default, and why (the model must
 * give the value; the declared default is checked where the registry holds a fixed one).
 */
const START_UP_VALUES: Record<string, string> = {
  "build-users-group": "nixbld when Nix runs as root (set in the Settings constructor)",
  "sandbox-paths": "2.30 assigns /bin/sh=<sandbox shell> in the Settings constructor",
  "build-hook": "2.25+ `nix` points it at its own binary after loading the files",
  "experimental-features": "the test's --extra-experimental-features nix-command",
  "pure-eval": "the `nix` command turns pure evaluation on",
};

const XP_FLAG = { name: "extra-experimental-features", value: "nix-command" };

for (const n of REAL_NIXES) describeRegistry(n);

function describeRegistry(n: RealNix): void {
  describe(`settings registry against the real Nix ${n.label}`, { skip: n.skipReason }, () => {
    let root = "";
    let env: Record<string, string> = {};
    let real: Record<string, JsonSetting> = {};
    const version: NixVersion = n.version ?? NIX_2_8;

    before(() => {
      root = mkdtempSync(join(tmpdir(), "nb-registry-"));
      for (const d of ["conf", "home", "xdg"]) mkdirSync(join(root, d));
      env = {
        PATH: "/usr/bin:/bin",
        HOME: join(root, "home"),
        NIX_CONF_DIR: join(root, "conf"),
        NIX_USER_CONF_FILES: "",
        XDG_CONFIG_HOME: join(root, "xdg"),
        XDG_CONFIG_DIRS: join(root, "xdg"),
      };
      const r = spawnSync(n.nix, [...n.configShowJson, "--extra-experimental-features", "nix-command"], {
        env,
        cwd: root,
        encoding: "utf8",
        timeout: 60_000,
      });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, "", "no warning with an empty configuration");
      real = parseJsonBig(r.stdout) as Record<string, JsonSetting>;
    });

    after(() => {
      if (root) rmSync(root, { recursive: true, force: true });
    });

    test("the binary is the version the registry is checked for", () => {
      const r = spawnSync(n.nix, ["--version"], { encoding: "utf8", timeout: 10_000 });
      assert.deepEqual(parseNixVersion(r.stdout), version);
    });

    test("the registry has exactly the binary's settings, with the same aliases", () => {
      const reg = new SettingRegistry(version);
      assert.deepEqual(reg.settings.map((d) => d.name).sort(), Object.keys(real).sort());
      assert.equal(reg.settings.length, { "2.8": 91, "2.30": 122 }[n.label]);
      for (const d of reg.settings)
        assert.deepEqual([...d.aliases].sort(), [...real[d.name]!.aliases].sort(), `aliases of ${d.name}`);
    });

    test("every fixed default is Nix's declared default, in its JSON form", () => {
      const reg = new SettingRegistry(version);
      let fixed = 0;
      for (const d of reg.settings) {
        if (typeof d.default === "function") continue;
        fixed++;
        assert.deepEqual(
          settingValueToJson(d, d.default, version),
          real[d.name]!.defaultValue,
          `default of ${d.name}`,
        );
      }
      assert.ok(fixed > 60, `${fixed} fixed defaults`);
    });

    test("with no configuration, every setting has Nix's value, in its JSON form", () => {
      const v = (k: string) => real[k]!.value;
      const machine: MachineFacts = {
        system: v("system") as string,
        extraPlatforms: v("extra-platforms") as string[],
        systemFeatures: v("system-features") as string[],
        cores: v("cores") as number,
        hardwareThreads: cpus().length,
        isRoot: process.getuid?.() === 0,
        nixPath: v("nix-path") as string[],
        sandboxPaths: v("sandbox-paths") as string[],
        libexecDir: "/usr/libexec",
        selfExe: realpathSync(n.nix),
        sslCertFile:
          [
            "/etc/ssl/certs/ca-certificates.crt",
            "/nix/var/nix/profiles/default/etc/ssl/certs/ca-bundle.crt",
          ].find((f) => existsSync(f)) ?? "",
      };
      const view = loadConfig({
        version,
        env,
        passwdHome: env["HOME"]!,
        fs: nodeFileReader,
        machine,
        flags: [XP_FLAG],
      });
      assert.equal(view.error, null);
      assert.deepEqual(view.warnings, []);
      const machineDependent = new Set<string>(MACHINE_DEPENDENT);
      let compared = 0;
      for (const [name, s] of Object.entries(real)) {
        if (name === "pure-eval") {
          assert.equal(s.value, true);
          continue;
        }
        assert.deepEqual(view.settings.get(name)?.value, s.value, `value of ${name}`);
        compared++;
        if (!machineDependent.has(name) && !(name in START_UP_VALUES))
          assert.deepEqual(s.defaultValue, s.value, `${name}: Nix changed its value at start-up`);
      }
      assert.equal(compared, Object.keys(real).length - 1);
    });

    test("the experimental feature that gates a setting is Nix's (2.16+)", (t) => {
      if (!atLeast(version, 2, 16)) return t.skip("Nix before 2.16 does not gate settings");
      const reg = new SettingRegistry(version);
      for (const d of reg.settings)
        assert.equal(d.xp ?? null, real[d.name]!.experimentalFeature ?? null, `feature of ${d.name}`);
    });
  });
}

describe("settings registry: version-dependent defaults (pure)", () => {
  const connectTimeout = (v: string): unknown => {
    const version = parseNixVersion(v)!;
    const view = loadConfig({
      version,
      env: {},
      passwdHome: "/nonexistent",
      fs: { read: () => ({ ok: false, code: "ENOENT" }), exists: () => ({ ok: true, exists: false }) },
      machine: {
        system: "x86_64-linux",
        extraPlatforms: [],
        systemFeatures: [],
        cores: 1,
        hardwareThreads: 1,
      },
    });
    return view.settings.get("connect-timeout")?.value;
  };

  test("connect-timeout follows the patch releases that changed it", () => {
    assert.equal(connectTimeout("2.8.0"), 0);
    assert.equal(connectTimeout("2.28.7"), 0);
    assert.equal(connectTimeout("2.29.0"), 5);
    assert.equal(connectTimeout("2.30.3"), 5);
    assert.equal(connectTimeout("2.30.4"), 15);
    assert.equal(connectTimeout("2.31.1"), 5);
    assert.equal(connectTimeout("2.31.2"), 15);
    assert.equal(connectTimeout("2.32.0"), 15);
  });

  test("a setting retyped between versions has one definition per version", () => {
    for (const v of ["2.8.0", "2.12.0", "2.17.0", "2.25.0", "2.30.5", "2.35.2"]) {
      const reg = new SettingRegistry(parseNixVersion(v)!);
      const names = reg.settings.map((d) => d.name);
      assert.equal(new Set(names).size, names.length, `duplicate names in ${v}`);
    }
    assert.equal(new SettingRegistry(parseNixVersion("2.8.0")!).get("build-hook")?.type.kind, "path");
    assert.equal(new SettingRegistry(parseNixVersion("2.30.5")!).get("build-hook")?.type.kind, "strings");
    assert.equal(new SettingRegistry(parseNixVersion("2.30.5")!).get("diff-hook")?.type.kind, "optionalPath");
  });
});
