/**
 * Differential test: generate many nix.conf trees, run the real `nix show-config --json` (Nix 2.8) and
 * `nix config show --json` (Nix 2.30) on each, and compare every value, every warning and the error text
 * with loadConfig() set to that version's rules.
 *
 * Each version is skipped (with a message) only when its binary is absent (test/support/nix-versions.ts).
 */

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { cpus, tmpdir, userInfo } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { MODELLED_SETTINGS } from "../../src/commands/config.js";
import { nodeFileReader } from "../../src/host/fs-reader.js";
import { type ConfigFlag, type FileReader, loadConfig, type MachineFacts } from "../../src/nix/conf.js";
import { nixErrorDisplay, nixWarningDisplay } from "../../src/nix/display.js";
import { SettingRegistry, type SettingType } from "../../src/nix/settings.js";
import { NIX_2_8, type NixVersion } from "../../src/nix/version.js";
import { parseJsonBig } from "../support/json-big.js";
import { REAL_NIXES, type RealNix } from "../support/nix-versions.js";
import { mulberry32 as rng } from "../support/random.js";

const CASES = 240;
const XP_FLAG: ConfigFlag = { name: "extra-experimental-features", value: "nix-command" };

// ---------------------------------------------------------------------------------------------------------
// Helpers. Nix's stderr is compared with the model's messages as Nix displays them (src/nix/display.ts:
// tabs expanded, CR dropped), so the display rules are checked against both versions too.

const OFFLINE = "warning: you don't have Internet access; disabling some network-dependent features";

interface NixRun {
  code: number;
  stdout: string;
  stderr: string;
}

function runNix(n: RealNix, env: Record<string, string>, cwd: string): Promise<NixRun> {
  return new Promise((res) => {
    const p = spawn(n.nix, [...n.configShowJson, "--extra-experimental-features", "nix-command"], {
      env,
      cwd,
      timeout: 60_000,
    });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => {
      stdout += d;
    });
    p.stderr.on("data", (d) => {
      stderr += d;
    });
    p.on("close", (code) => res({ code: code ?? -1, stdout, stderr }));
  });
}

async function pool<T, R>(items: T[], n: number, f: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      for (;;) {
        const k = next++;
        if (k >= items.length) return;
        out[k] = await f(items[k]!);
      }
    }),
  );
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// The generator (seeded, deterministic)

/** The settings `config` always shows (the brief names them); they get most of the traffic. */
const CORE: readonly string[] = MODELLED_SETTINGS;
/** Never set these to something real: Nix would act on them (load plugins). */
const AVOID = new Set(["plugin-files"]);

interface Case {
  id: number;
  dir: string;
  files: Map<string, string>;
  links: [string, string][];
  env: Record<string, string>;
}

function genCase(id: number, root: string, reg: SettingRegistry): Case {
  const r = rng(id * 7919 + 17);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const chance = (p: number) => r() < p;
  const dir = join(root, `c${id}`);
  const files = new Map<string, string>();
  const links: [string, string][] = [];
  const errRate = chance(0.35) ? 0.04 : 0;

  const tokenPool = [
    "a",
    "b",
    "c",
    "z",
    "m",
    "ssh://h1",
    "https://x.org/",
    "@/etc/nix/machines",
    "é",
    "x;y",
    "k=v",
  ];
  const valueFor = (t: SettingType, name: string): string => {
    switch (t.kind) {
      case "bool":
        return pick([
          "true",
          "false",
          "yes",
          "no",
          "1",
          "0",
          "true",
          "false",
          ...(chance(errRate * 5) ? ["True", "1 2", "", "on"] : []),
        ]);
      case "int":
        return pick([
          "0",
          "5",
          "+5",
          "42",
          "007",
          "3600",
          ...(chance(errRate * 5)
            ? ["-1", "0x10", "1K", "", "4294967296", "18446744073709551616", "-0", "+", "1 2"]
            : ["4294967295", "18446744073709551615"]),
        ]);
      case "maxJobs":
        return pick([
          "auto",
          "0",
          "4",
          "+2",
          ...(chance(errRate * 5) ? ["-1", "x", "4294967296", ""] : ["4294967295"]),
        ]);
      case "sandbox":
        return pick(["true", "false", "relaxed", ...(chance(errRate * 5) ? ["yes", "1", "Relaxed"] : [])]);
      case "experimentalFeatures":
        return Array.from({ length: Math.floor(r() * 3) }, () =>
          pick([
            "nix-command",
            "flakes",
            "ca-derivations",
            "recursive-nix",
            "bogus-feature",
            "fetch-closure",
            "configurable-impure-env",
            "auto-allocate-uids",
          ]),
        ).join(" ");
      case "stringMap":
        return Array.from({ length: Math.floor(r() * 4) }, () =>
          pick(["a=1", "b=2", "a=3", "noeq", "=x", "c=d=e", "ü=1"]),
        ).join(" ");
      case "enum":
        return pick([...t.values, ...(chance(errRate * 5) ? ["Disabled", "x"] : [])]);
      case "optionalString":
        return pick(["", "/tmp/b", "rel/dir"]);
      case "optionalPath":
      case "path":
        return pick([
          "/usr/bin/true",
          "/a/../b//c/",
          "",
          "/x/./y",
          ...(chance(errRate * 5) ? ["rel/path"] : []),
        ]);
      case "strings":
      case "stringSet":
        return Array.from({ length: Math.floor(r() * 4) }, () => pick(tokenPool)).join(
          pick([" ", "  ", "\t"]),
        );
      case "string":
        if (name === "builders")
          return pick(["", "ssh://h1 x86_64-linux", "@/x  ; y", "a b   c", "ssh://a - - 2 1 big-parallel"]);
        return Array.from({ length: Math.floor(r() * 3) }, () => pick(tokenPool)).join(" ");
    }
  };

  const line = (self: string, includable: string[]): string => {
    const sp = () => pick([" ", " ", "  ", "\t", " \t "]);
    if (chance(errRate)) {
      return pick([
        "max-jobs=4",
        "= x",
        "lonely",
        "value == key",
        "include",
        "include a b",
        "key= value",
        "!include x y",
      ]);
    }
    const roll = r();
    if (roll < 0.08) return pick(["", "   ", "# comment", "   # indented comment", "\t"]);
    if (roll < 0.16 && includable.length > 0) {
      const target = pick(includable);
      const rel = relativeFrom(self, target, r);
      const missing = chance(0.2);
      const kw = missing ? pick(["!include", "!include", "include"]) : pick(["include", "!include"]);
      return `${kw}${sp()}${missing ? (chance(errRate * 10) ? "nope.conf" : "gone/none.conf") : rel}`.replace(
        /^include(\s+)gone\/none\.conf$/,
        "!include$1gone/none.conf",
      );
    }
    let name: string;
    const r2 = r();
    if (r2 < 0.6) name = pick(CORE);
    else if (r2 < 0.8) name = pick(reg.settings.filter((d) => !AVOID.has(d.name))).name;
    else if (r2 < 0.9) name = pick(reg.settings.flatMap((d) => d.aliases));
    else
      name = pick([
        "unknown-thing",
        "extra-builders",
        "extra-cores",
        "extra-extra-platforms",
        "extra-extra-extra-platforms",
        "build-max-jobs",
        "binary-caches",
        "extra-binary-caches",
        "verbose-build",
        "foo-bar",
        // Version-dependent: gated by an experimental feature in 2.30, retyped, renamed, or new.
        "accept-flake-config",
        "flake-registry",
        "build-hook",
        "extra-build-hook",
        "commit-lockfile-summary",
        "connect-timeout",
        "eval-profiler",
        "diff-hook",
        "build-dir",
        "impure-env",
        "extra-impure-env",
        "repeat",
        "substitution-max-jobs",
      ]);
    let op = name;
    const res = reg.resolve(name);
    if (
      res &&
      !res.append &&
      chance(0.3) &&
      ["strings", "stringSet", "stringMap", "experimentalFeatures"].includes(res.def.type.kind)
    )
      op = `extra-${name}`;
    const def = reg.resolve(op)?.def;
    const value = def ? valueFor(def.type, def.name) : pick(["1", "x y", ""]);
    const comment = chance(0.15) ? `${sp()}# trailing ${pick(["comment", "a = b", "#"])}` : "";
    return `${pick(["", "", " ", "\t"])}${op}${sp()}=${value === "" ? pick(["", " "]) : sp() + value}${comment}`;
  };

  const eol = () => (chance(0.15) ? "\r\n" : "\n");
  const body = (self: string, includable: string[], n: number): string => {
    let s = "";
    for (let k = 0; k < n; k++) s += line(self, includable) + eol();
    if (chance(0.2)) s = s.replace(/\r?\n$/, "");
    return s;
  };

  // Include DAG: a file may include only files later in this list (no cycles).
  const incFiles = [
    "inc/a.conf",
    "inc/sub/b.conf",
    "c.conf",
    "links/l.conf",
    "inc/real.conf",
    "links/rel-target.conf",
    "inc/rel-target.conf",
  ];
  for (let k = 0; k < incFiles.length; k++) {
    const f = incFiles[k]!;
    if (f === "links/l.conf") continue; // the symlink
    files.set(
      f,
      body(
        f,
        incFiles.slice(k + 1).filter((x) => x !== "links/l.conf" || k < 3),
        1 + Math.floor(r() * 4),
      ),
    );
  }
  // links/l.conf -> ../inc/real.conf; real.conf includes "rel-target.conf", which resolves next to the link.
  links.push(["links/l.conf", "../inc/real.conf"]);
  files.set("inc/real.conf", `${files.get("inc/real.conf")}include rel-target.conf\n`);
  files.set("links/rel-target.conf", "cores = 11\n");
  files.set("inc/rel-target.conf", "cores = 22\n");

  // A relative trap in the working directory: with XDG_CONFIG_HOME empty, Nix up to 2.33 looks for
  // "/nix/nix.conf" (string concatenation), 2.34+ for "nix/nix.conf" (a relative fs::path).
  files.set("nix/nix.conf", "cores = 3\n");
  const top = ["inc/a.conf", "c.conf", "links/l.conf", "inc/sub/b.conf"];
  const env: Record<string, string> = {
    PATH: process.env["PATH"] ?? "/usr/bin:/bin",
    HOME: join(dir, "home"),
  };
  if (chance(0.85)) {
    env["NIX_CONF_DIR"] = chance(0.2) ? `${dir}/etc/../etc/` : `${dir}/etc`;
    if (chance(0.9)) files.set("etc/nix.conf", body("etc/nix.conf", top, 2 + Math.floor(r() * 6)));
  } else env["NIX_CONF_DIR"] = `${dir}/no-such-dir`;

  const mode = r();
  if (mode < 0.55) {
    const names = ["u1.conf", "u2.conf", "missing.conf", "u3.conf"].filter(() => chance(0.7));
    for (const n of names) if (n !== "missing.conf") files.set(n, body(n, top, 1 + Math.floor(r() * 6)));
    if (chance(0.1)) {
      files.set("udir/x", "");
      names.push("udir"); // a directory: read fails with EISDIR, silently skipped
    }
    env["NIX_USER_CONF_FILES"] =
      (chance(0.2) ? ":" : "") +
      names.map((n) => (chance(0.1) ? n : `${dir}/${n}`)).join(chance(0.2) ? "::" : ":");
  } else {
    // XDG lookup.
    const home = r();
    if (home < 0.4) env["XDG_CONFIG_HOME"] = `${dir}/xdg-home`;
    else if (home < 0.5) env["XDG_CONFIG_HOME"] = "";
    const dirs = r();
    if (dirs < 0.5) env["XDG_CONFIG_DIRS"] = `${dir}/xdg1:${dir}/xdg2`;
    else if (dirs < 0.6) env["XDG_CONFIG_DIRS"] = "";
    else if (dirs < 0.7) env["XDG_CONFIG_DIRS"] = `:${dir}/xdg2:`;
    else env["XDG_CONFIG_DIRS"] = `${dir}/no-xdg`;
    for (const f of [
      "xdg-home/nix/nix.conf",
      "home/.config/nix/nix.conf",
      "xdg1/nix/nix.conf",
      "xdg2/nix/nix.conf",
    ])
      if (chance(0.7)) files.set(f, body(f, top, 1 + Math.floor(r() * 5)));
  }
  if (chance(0.3)) {
    const lines = [
      `cores = ${Math.floor(r() * 40)}`,
      "extra-substituters = https://env.example/",
      "keep-going = yes",
    ];
    if (chance(0.3)) lines.push(`include ${dir}/c.conf`);
    if (chance(0.1))
      lines.push(pick(["!include rel.conf", "bad line here", `include ${dir}/c.conf/x`, "sandbox = maybe"]));
    env["NIX_CONFIG"] = lines.filter(() => chance(0.8)).join(pick(["\n", "\r\n"]));
  }
  if (chance(0.05)) env["NIX_REMOTE"] = "daemon";
  if (chance(0.05)) env["NIX_REMOTE_SYSTEMS"] = `${dir}/m1`;
  return { id, dir, files, links, env };
}

function relativeFrom(self: string, target: string, r: () => number): string {
  const from = dirname(self)
    .split("/")
    .filter((s) => s !== "" && s !== ".");
  const to = target.split("/");
  if (r() < 0.15) return `/ABSROOT/${target}`;
  return [...from.map(() => ".."), ...to].join("/") || target;
}

function materialise(c: Case): void {
  for (const [rel, text] of c.files) {
    const p = join(c.dir, rel);
    mkdirSync(dirname(p), { recursive: true });
    if (rel === "udir/x") continue;
    writeFileSync(p, text.replaceAll("/ABSROOT/", `${c.dir}/`));
  }
  for (const [rel, target] of c.links) {
    const p = join(c.dir, rel);
    mkdirSync(dirname(p), { recursive: true });
    symlinkSync(target, p);
  }
}

// ---------------------------------------------------------------------------------------------------------

for (const n of REAL_NIXES) describeDiff(n);

function describeDiff(n: RealNix): void {
  describe(`nix.conf differential test against the real Nix ${n.label}`, {
    skip: n.skipReason,
  }, () => {
    let root = "";
    let machine: MachineFacts;
    const version: NixVersion = n.version ?? NIX_2_8;
    const TRY = `Try '${n.nix} --help' for more information.`;

    before(async () => {
      root = mkdtempSync(join(tmpdir(), "nix-conf-diff-"));
      // Machine facts are inputs: take them from the values Nix shows with no configuration, and the OS.
      mkdirSync(join(root, "empty"));
      const base = await runNix(
        n,
        {
          PATH: "/usr/bin:/bin",
          HOME: join(root, "empty"),
          NIX_CONF_DIR: join(root, "empty"),
          NIX_USER_CONF_FILES: "",
        },
        root,
      );
      assert.equal(base.code, 0, base.stderr);
      const j = parseJsonBig(base.stdout) as Record<string, { value: unknown }>;
      machine = {
        system: j["system"]!.value as string,
        extraPlatforms: j["extra-platforms"]!.value as string[],
        systemFeatures: j["system-features"]!.value as string[],
        cores: j["cores"]!.value as number,
        hardwareThreads: cpus().length,
        isRoot: process.getuid?.() === 0,
        nixPath: j["nix-path"]!.value as string[],
        sandboxPaths: j["sandbox-paths"]!.value as string[],
        libexecDir: "/usr/libexec",
        // What 2.25+ puts in build-hook: the running binary (/proc/self/exe), and the CA bundle 2.15+
        // finds readable.
        selfExe: realpathSync(n.nix),
        sslCertFile:
          [
            "/etc/ssl/certs/ca-certificates.crt",
            "/nix/var/nix/profiles/default/etc/ssl/certs/ca-bundle.crt",
          ].find((f) => existsSync(f)) ?? "",
      };
    });

    after(() => {
      if (root) rmSync(root, { recursive: true, force: true });
    });

    test(`${CASES} generated config trees give identical values, warnings and errors`, async () => {
      const cases = Array.from({ length: CASES }, (_, k) =>
        genCase(k + 1, root, new SettingRegistry(version)),
      );
      for (const c of cases) materialise(c);
      const t0 = Date.now();
      const runs = await pool(cases, Math.max(2, Math.min(8, cpus().length * 2)), (c) =>
        runNix(n, c.env, c.dir),
      );
      const elapsed = Date.now() - t0;
      let errors = 0;
      const kinds = new Map<string, number>();
      const failures: string[] = [];
      for (let k = 0; k < cases.length; k++) {
        const c = cases[k]!;
        const run = runs[k]!;
        const fs: FileReader = {
          read: (p) => nodeFileReader.read(resolve(c.dir, p)),
          exists: (p) => nodeFileReader.exists(resolve(c.dir, p)),
        };
        const view = loadConfig({
          version,
          env: c.env,
          passwdHome: userInfo().homedir,
          fs,
          machine,
          flags: [XP_FLAG],
        });
        try {
          let stderrLines = run.stderr.split("\n").filter((l) => l !== "");
          const offline = stderrLines.includes(OFFLINE);
          stderrLines = stderrLines.filter((l) => l !== OFFLINE);
          if (run.code !== 0) {
            errors++;
            const kind = (view.error?.nixMessage ?? "?").replace(/'.*$/s, "").trim();
            kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
            assert.ok(view.error, `nix failed but we did not: ${run.stderr}`);
            const expected = [
              ...view.warnings.map((w) => nixWarningDisplay(w.message)),
              nixErrorDisplay(view.error.nixMessage),
            ];
            if (view.error.kind === "usage") expected.push(TRY);
            assert.deepEqual(stderrLines, expected);
            assert.equal(run.code, 1);
            continue;
          }
          assert.equal(view.error, null, `we failed but nix did not: ${view.error?.nixMessage}`);
          assert.deepEqual(
            stderrLines,
            view.warnings.map((w) => nixWarningDisplay(w.message)),
          );
          const j = parseJsonBig(run.stdout) as Record<string, { value: unknown }>;
          assert.deepEqual(Object.keys(j).sort(), [...view.settings.keys()].sort());
          for (const [name, { value }] of Object.entries(j)) {
            // The `nix` command forces pure-eval on after loading the configuration.
            if (name === "pure-eval") {
              assert.equal(value, true);
              continue;
            }
            if (
              offline &&
              ["substitute", "tarball-ttl", "download-attempts", "connect-timeout"].includes(name)
            )
              continue;
            assert.deepEqual(view.settings.get(name)!.value, value, `setting ${name}`);
          }
        } catch (e) {
          const dump = [...c.files].map(([f, t]) => `--- ${f}\n${t}`).join("\n");
          failures.push(
            `case ${c.id} (${c.dir}) env=${JSON.stringify(c.env)}\n${(e as Error).message}\n${dump}`,
          );
        }
      }
      console.log(
        `# differential: ${CASES} cases (${errors} ending in a Nix error), nix runs took ${elapsed} ms`,
      );
      console.log(`# error kinds: ${JSON.stringify(Object.fromEntries(kinds))}`);
      assert.ok(errors > 20 && errors < CASES - 100, `generator balance: ${errors} error cases`);
      if (process.env["CONF_DIFF_SUMMARY"])
        for (const f of failures) console.log(f.split("\n").slice(0, 12).join("\n"));
      assert.deepEqual(failures.slice(0, 3), [], `${failures.length} of ${CASES} cases diverge`);
    });
  });
}
