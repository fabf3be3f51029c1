// The NixOS module services.nix-builders.watch (nix/watch-module.nix), evaluated by the real Nix
// (Debian's 2.8 and Nix 2.30) with nixpkgs' lib.evalModules (vendored under test/fixtures/nixpkgs-lib)
// and minimal stubs of the NixOS options it sets (test/fixtures/watch-module/eval.nix). Checked: the
// option types and defaults, the generated unit (also through `systemd-analyze verify`), nix.settings,
// the assertions, and that a bad value fails.
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { have, run } from "../support/bounded.js";

const REPO = join(import.meta.dirname, "..", "..");
const EVAL = join(REPO, "test", "fixtures", "watch-module", "eval.nix");
const UNIT_FILE = join(REPO, "contrib", "systemd", "nix-builders-watch.service");

const NIXES = [
  { label: "2.8", bin: "/usr/bin/nix-instantiate" },
  { label: "2.30", bin: "/opt/nix-current/bin/nix-instantiate" },
].map((n) => ({ ...n, skip: !have(n.bin) && `needs ${n.bin}` }));

interface Evaluated {
  failedAssertions: string[];
  nixSettings: Record<string, unknown>;
  tmpfiles: string[];
  firewall: number[];
  systemPackages: string[];
  service: null | {
    description: string;
    wantedBy: string[];
    after: string[];
    wants: string[];
    path: string[];
    serviceConfig: Record<string, string>;
  };
  machinesFile: string;
  docs: null | { name: string; type: string; readOnly: boolean; default: string | null }[];
}

let confDir: string;
before(() => {
  // A private nix.conf: the host has no nixbld group, and Nix would warn about its default.
  confDir = mkdtempSync(join(tmpdir(), "nb-nixos-"));
  writeFileSync(join(confDir, "nix.conf"), "build-users-group =\n");
});
after(() => {
  if (confDir) rmSync(confDir, { recursive: true, force: true });
});

async function evaluate(
  bin: string,
  settings: string,
  extra: string[] = [],
): Promise<{ value?: Evaluated; stderr: string; code: number | null }> {
  const r = await run(bin, ["--eval", "--strict", "--json", EVAL, "--arg", "settings", settings, ...extra], {
    timeoutMs: 60_000,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: confDir, NIX_CONF_DIR: confDir },
  });
  return {
    value: r.code === 0 ? (JSON.parse(r.stdout) as Evaluated) : undefined,
    stderr: r.stderr,
    code: r.code,
  };
}

const ENABLED = "{ services.nix-builders.watch.enable = true; nix.distributedBuilds = true; }";

for (const nix of NIXES) {
  describe(`NixOS module with lib.evalModules under Nix ${nix.label}`, { skip: nix.skip }, () => {
    test("option types and defaults", async () => {
      const r = await evaluate(nix.bin, "{ }", ["--arg", "withDocs", "true"]);
      assert.equal(r.code, 0, r.stderr);
      const docs = new Map(
        r.value!.docs!.map((d) => [d.name.replace("services.nix-builders.watch.", ""), d]),
      );
      const expect: [string, string, string | null][] = [
        ["enable", "boolean", "false"],
        ["package", "package", "pkgs.callPackage ./package.nix { }"],
        ["source", "null or absolute path", '"/etc/nix/machines"'],
        ["machinesFile", "absolute path", '"/run/nix-builders/machines"'],
        ["setBuilders", "boolean", "true"],
        ["interval", "integer between 1 and 86400 (both inclusive)", "30"],
        ["timeout", "integer between 1 and 3600 (both inclusive)", "10"],
        ["failureThreshold", "integer between 1 and 1000 (both inclusive)", "2"],
        ["successThreshold", "integer between 1 and 1000 (both inclusive)", "2"],
        ["backoff.base", "integer between 1 and 86400 (both inclusive)", "60"],
        ["backoff.factor", "integer between 1 and 100 (both inclusive)", "3"],
        ["backoff.max", "integer between 1 and 604800 (both inclusive)", "1620"],
        ["backoff.jitter", "integer between 0 and 86400 (both inclusive)", "30"],
        ["stableAfter", "integer between 0 and 2592000 (both inclusive)", "600"],
        ["quarantineMode", 'one of "hold", "remove"', '"hold"'],
        ["guards.maxQuarantinedPercent", "integer between 0 and 100 (both inclusive)", "50"],
        ["listenAddress", "null or string", '"127.0.0.1"'],
        ["port", "16 bit unsigned integer; between 0 and 65535 (both inclusive)", "9478"],
        ["openFirewall", "boolean", "false"],
        ["agent", "null or string", "null"],
      ];
      for (const [name, type, dflt] of expect) {
        const d = docs.get(name);
        assert.ok(d, `option ${name}`);
        assert.equal(d.type, type, name);
        assert.equal(d.default, dflt, name);
      }
      assert.equal(docs.get("machinesFile")!.readOnly, true);
    });

    test("disabled: nothing is set", async () => {
      const r = await evaluate(nix.bin, "{ nix.distributedBuilds = true; }");
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.value!.service, null);
      assert.deepEqual(r.value!.nixSettings, {});
      assert.deepEqual(r.value!.tmpfiles, []);
    });

    test("enabled with defaults: nix.settings.builders points at the managed file, and the unit", async () => {
      const r = await evaluate(nix.bin, ENABLED);
      assert.equal(r.code, 0, r.stderr);
      const v = r.value!;
      assert.deepEqual(v.failedAssertions, []);
      assert.deepEqual(v.nixSettings, { builders: "@/run/nix-builders/machines" });
      assert.deepEqual(v.tmpfiles, ["C /run/nix-builders/machines - - - - /etc/nix/machines"]);
      assert.deepEqual(v.firewall, []);
      const s = v.service!;
      assert.deepEqual(s.wantedBy, ["multi-user.target"]);
      assert.ok(s.after.includes("nix-daemon.service"));
      assert.deepEqual(s.path, ["nix-2.30.5", "openssh-10.0p2", "util-linux-2.41"]);
      const start = s.serviceConfig.ExecStart!;
      assert.match(start, /^\/nix\/store\/0{32}-nix-builders-from-callPackage\/bin\/nix-builders watch /);
      for (const part of [
        "--output /run/nix-builders/machines",
        "--state-dir /var/lib/nix-builders/watch",
        "--interval 30",
        "--timeout 10",
        "--failure-threshold 2",
        "--backoff-base 60 --backoff-factor 3 --backoff-max 1620 --backoff-jitter 30",
        "--mode hold",
        "--max-quarantined-percent 50",
        "--source /etc/nix/machines",
        "--listen 127.0.0.1:9478",
      ]) {
        assert.ok(start.includes(part), `${part} in ${start}`);
      }
      assert.match(
        s.serviceConfig.ExecStartPost!,
        / watch --wait-ready --state-dir \/var\/lib\/nix-builders\/watch/,
      );
    });

    test("the module's unit has the shipped unit's settings", async () => {
      const r = await evaluate(nix.bin, ENABLED);
      const sc = r.value!.service!.serviceConfig;
      const shipped = new Map<string, string>();
      let inService = false;
      for (const line of readFileSync(UNIT_FILE, "utf8").split("\n")) {
        if (/^\[/.test(line)) inService = line === "[Service]";
        const m = /^([A-Za-z]+)=(.*)$/.exec(line);
        if (inService && m) shipped.set(m[1]!, m[2]!);
      }
      for (const [k, v] of shipped) {
        if (k === "ExecStart" || k === "ExecStartPost") continue;
        assert.equal(sc[k], v, k);
      }
      assert.deepEqual(Object.keys(sc).sort(), [...shipped.keys()].sort());
    });

    test("options reach the command line; quoting and % are safe for systemd", async () => {
      const r = await evaluate(
        nix.bin,
        `{ services.nix-builders.watch = { enable = true; setBuilders = false; interval = 5; quarantineMode = "remove";
             backoff.max = 900; guards.maxQuarantinedPercent = 25; listenAddress = "::1"; port = 9100; openFirewall = true;
             agent = ""; source = "/etc/nix/my machines%i"; extraArgs = [ "--full-every" "20" ]; }; }`,
      );
      assert.equal(r.code, 0, r.stderr);
      const v = r.value!;
      assert.deepEqual(v.nixSettings, { builders: null }, "setBuilders = false leaves NixOS's own value");
      assert.deepEqual(v.failedAssertions, []);
      assert.deepEqual(v.firewall, [9100]);
      const start = v.service!.serviceConfig.ExecStart!;
      for (const part of [
        "--interval 5",
        "--mode remove",
        "--backoff-max 900",
        "--max-quarantined-percent 25",
        "--listen '[::1]:9100'",
        "--full-every 20",
      ]) {
        assert.ok(start.includes(part), `${part} in ${start}`);
      }
      assert.match(start, / --agent --/);
      assert.ok(start.includes("--source '/etc/nix/my machines%%i'"), start);
      assert.deepEqual(v.tmpfiles, ["C /run/nix-builders/machines - - - - /etc/nix/my machines%%i"]);
    });

    test("assertions: distributed builds off, source missing, source = the output", async () => {
      const off = await evaluate(nix.bin, "{ services.nix-builders.watch.enable = true; }");
      assert.deepEqual(off.value!.failedAssertions, [
        "services.nix-builders.watch.setBuilders needs nix.distributedBuilds = true.",
      ]);
      const noSource = await evaluate(
        nix.bin,
        "{ services.nix-builders.watch = { enable = true; source = null; }; nix.distributedBuilds = true; }",
      );
      assert.match(noSource.value!.failedAssertions.join("\n"), /set source/);
      assert.deepEqual(noSource.value!.tmpfiles, []);
      const self = await evaluate(
        nix.bin,
        '{ services.nix-builders.watch = { enable = true; source = "/run/nix-builders/machines"; }; nix.distributedBuilds = true; }',
      );
      assert.match(self.value!.failedAssertions.join("\n"), /would read its own output/);
    });

    test("a bad value fails the evaluation, naming the option", async () => {
      for (const [settings, option] of [
        ["{ services.nix-builders.watch = { enable = true; port = 70000; }; }", "port"],
        [
          '{ services.nix-builders.watch = { enable = true; quarantineMode = "delete"; }; }',
          "quarantineMode",
        ],
        ["{ services.nix-builders.watch = { enable = true; interval = 0; }; }", "interval"],
        ['{ services.nix-builders.watch = { enable = true; source = "machines"; }; }', "source"],
        ['{ services.nix-builders.watch.machinesFile = "/tmp/x"; }', "machinesFile"],
      ] as const) {
        const r = await evaluate(nix.bin, settings);
        assert.notEqual(r.code, 0, settings);
        assert.ok(
          r.stderr.includes(`services.nix-builders.watch.${option}'`),
          `${option}: ${r.stderr.slice(-400)}`,
        );
      }
    });

    test("systemd-analyze verify accepts the generated unit", {
      skip: !have("systemd-analyze") && "needs systemd-analyze",
    }, async () => {
      const r = await evaluate(nix.bin, ENABLED);
      const s = r.value!.service!;
      const dir = mkdtempSync(join(tmpdir(), "nb-nixos-unit-"));
      try {
        const bin = join(dir, "bin", "nix-builders");
        mkdirSync(join(dir, "bin"));
        writeFileSync(bin, "#!/bin/sh\nexit 0\n");
        chmodSync(bin, 0o755);
        const lines = [
          "[Unit]",
          `Description=${s.description}`,
          `After=${s.after.join(" ")}`,
          `Wants=${s.wants.join(" ")}`,
          "[Service]",
          ...Object.entries(s.serviceConfig).map(
            ([k, v]) => `${k}=${v.replace(/\/nix\/store\/[^/]+\/bin\/nix-builders/g, bin)}`,
          ),
          "[Install]",
          `WantedBy=${s.wantedBy.join(" ")}`,
          "",
        ];
        const unit = join(dir, "nix-builders-watch.service");
        writeFileSync(unit, lines.join("\n"));
        const v = await run("systemd-analyze", ["verify", unit], { timeoutMs: 60_000 });
        assert.equal(v.code, 0, v.stderr);
        assert.equal(`${v.stdout}${v.stderr}`.trim(), "");
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}
