// The Nix packaging (flake.nix, nix/package.nix, nix/source.nix) without the network: nixpkgs is not
// here, so the flake is called with a stand-in nixpkgs (the vendored real lib, and a buildNpmPackage that
// records its arguments; test/fixtures/watch-module/fake-nixpkgs.nix). What is real: Nix 2.30 evaluates
// the flake (`nix eval` with `--override-input`, in a private chroot store), the package's source is
// made by lib.fileset into that store, and `npm pack --dry-run --json` gives the files that
// buildNpmPackage's install step copies (it runs the same command): the two are compared.
import assert from "node:assert/strict";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, test } from "node:test";
import { have, run } from "../support/bounded.js";

const REPO = join(import.meta.dirname, "..", "..");
const NIX = "/opt/nix-current/bin/nix";
const NIX_INSTANTIATE = "/opt/nix-current/bin/nix-instantiate";
// lib.fileset needs builtins.readFileType (Nix 2.14): Debian's 2.8 cannot evaluate the package's source.
const SKIP =
  !(have(NIX) && have(NIX_INSTANTIATE)) && "needs Nix 2.30 at /opt/nix-current (scripts/provision)";

const packageJson = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as {
  name: string;
  version: string;
  description: string;
  bin: Record<string, string>;
  files: string[];
};

/** What buildNpmPackage's npmInstallHook copies: `npm pack --json --dry-run`'s `.[0].files[].path`. */
async function npmPackFiles(): Promise<string[]> {
  const r = await run("npm", ["pack", "--dry-run", "--json", "--ignore-scripts", "--loglevel=error"], {
    timeoutMs: 120_000,
    cwd: REPO,
  });
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { files: { path: string }[] }[];
  return out[0]!.files.map((f) => f.path).sort();
}

function walk(dir: string, root = dir): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p, root));
    else out.push(relative(root, p));
  }
  return out.sort();
}

describe("Nix package and flake", { skip: SKIP }, () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "nb-flake-"));
    mkdirSync(join(dir, "conf"));
    writeFileSync(
      join(dir, "conf", "nix.conf"),
      "build-users-group =\nexperimental-features = nix-command flakes\nsubstituters =\n",
    );
    env = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: dir,
      NIX_CONF_DIR: join(dir, "conf"),
      XDG_CACHE_HOME: join(dir, "cache"),
    };
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("flake outputs: packages.<system>.default, the overlay, nixosModules.watch; the package's arguments", async () => {
    const r = await run(
      NIX_INSTANTIATE,
      [
        "--eval",
        "--strict",
        "--json",
        join(REPO, "test", "fixtures", "watch-module", "eval.nix"),
        "--arg",
        "useFlake",
        "true",
        "--arg",
        "settings",
        "{ services.nix-builders.watch.enable = true; nix.distributedBuilds = true; }",
      ],
      { timeoutMs: 60_000, env },
    );
    assert.equal(r.code, 0, r.stderr);
    const v = JSON.parse(r.stdout) as {
      flake: {
        outputs: string[];
        packages: Record<string, string[]>;
        nixosModules: string[];
        defaultIsNixBuilders: boolean;
        overlay: string;
        nixpkgsUrl: string;
        package: {
          pname: string;
          version: string;
          postInstall: string;
          meta: { description: string; mainProgram: string; license: string; platforms: string[] };
          npmConfigHook: string;
          npmDeps: { npmRootGiven: boolean; resolved: Record<string, string | null> };
          hasNpmDepsHash: boolean;
        };
      };
      service: { serviceConfig: Record<string, string> };
      failedAssertions: string[];
    };
    const f = v.flake;
    assert.deepEqual(f.outputs, ["nixosModules", "overlays", "packages"]);
    assert.deepEqual(f.packages, {
      "aarch64-linux": ["default", "nix-builders"],
      "x86_64-linux": ["default", "nix-builders"],
    });
    assert.ok(f.defaultIsNixBuilders);
    assert.deepEqual(f.nixosModules, ["default", "watch"]);
    assert.equal(f.overlay, `${packageJson.name}-${packageJson.version}-aarch64-linux`);
    assert.equal(f.nixpkgsUrl, "github:NixOS/nixpkgs/nixos-unstable");
    const p = f.package;
    assert.equal(p.pname, packageJson.name);
    assert.equal(p.version, packageJson.version);
    assert.equal(p.meta.description, packageJson.description);
    assert.deepEqual(Object.keys(packageJson.bin), [p.meta.mainProgram]);
    assert.equal(p.meta.license, "MIT");
    assert.ok(p.meta.platforms.includes("x86_64-linux") && !p.meta.platforms.includes("x86_64-darwin"));
    // npm dependencies from the lock file (importNpmLock), so no npmDepsHash to keep up to date.
    assert.equal(p.npmConfigHook, "npm-config-hook");
    assert.equal(p.npmDeps.npmRootGiven, true);
    // Every locked package gets a tarball URL (the lock file may omit them: omit-lockfile-registry-resolved).
    const lock = JSON.parse(readFileSync(join(REPO, "package-lock.json"), "utf8")) as {
      packages: Record<string, { version: string; resolved?: string; name?: string; link?: boolean }>;
    };
    for (const [path, entry] of Object.entries(lock.packages)) {
      if (path === "" || entry.link) continue;
      const name = entry.name ?? path.slice(path.lastIndexOf("node_modules/") + "node_modules/".length);
      const url =
        entry.resolved ??
        `https://registry.npmjs.org/${name}/-/${name.split("/").pop()}-${entry.version}.tgz`;
      assert.equal(p.npmDeps.resolved[path], url, path);
    }
    // Two checked by hand against the registry (npm view NAME@VERSION dist.tarball):
    assert.equal(
      p.npmDeps.resolved["node_modules/@biomejs/biome"],
      "https://registry.npmjs.org/@biomejs/biome/-/biome-2.6.8.tgz",
    );
    assert.equal(
      p.npmDeps.resolved["node_modules/prom-client"],
      "https://registry.npmjs.org/prom-client/-/prom-client-15.1.3.tgz",
    );
    assert.equal(p.hasNpmDepsHash, false);
    // The flake's module uses the flake's package.
    assert.deepEqual(v.failedAssertions, []);
    assert.match(
      v.service.serviceConfig.ExecStart!,
      /-nix-builders-0\.1\.0-x86_64-linux\/bin\/nix-builders watch /,
    );
  });

  test("nix eval of the flake (Nix 2.30, private store, nixpkgs overridden): the package source in the store", async () => {
    // The flake from a copy of what it reads (a `path:` flake copies its whole directory into the store).
    const repo = join(dir, "repo");
    mkdirSync(repo);
    for (const p of [
      "flake.nix",
      "nix",
      "package.json",
      "package-lock.json",
      "tsconfig.json",
      "scripts",
      "src",
      ...packageJson.files,
      "README.md",
      "LICENSE",
    ]) {
      if (p !== "dist" && existsSync(join(REPO, p)))
        cpSync(join(REPO, p), join(repo, p), { recursive: true });
    }
    const fake = join(dir, "fake-nixpkgs");
    mkdirSync(fake);
    cpSync(join(REPO, "test", "fixtures", "nixpkgs-lib", "lib"), join(fake, "lib"), { recursive: true });
    cpSync(
      join(REPO, "test", "fixtures", "watch-module", "fake-nixpkgs.nix"),
      join(fake, "fake-nixpkgs.nix"),
    );
    writeFileSync(
      join(fake, "flake.nix"),
      "{ outputs = _: import ./fake-nixpkgs.nix { lib = import ./lib; }; }\n",
    );
    const store = join(dir, "store");
    const nixEval = (attr: string, apply: string) =>
      run(
        NIX,
        [
          "--store",
          store,
          "eval",
          "--json",
          `path:${repo}#${attr}`,
          "--apply",
          apply,
          "--override-input",
          "nixpkgs",
          `path:${fake}`,
          "--no-write-lock-file",
        ],
        { timeoutMs: 120_000, env },
      );
    const names = await nixEval("nixosModules", "builtins.attrNames");
    assert.equal(names.code, 0, names.stderr);
    assert.deepEqual(JSON.parse(names.stdout), ["default", "watch"]);
    const pkg = await nixEval(
      "packages.x86_64-linux.default",
      "p: { inherit (p.args) pname version; src = toString p.args.src; }",
    );
    assert.equal(pkg.code, 0, pkg.stderr);
    const v = JSON.parse(pkg.stdout) as { pname: string; version: string; src: string };
    assert.deepEqual([v.pname, v.version], [packageJson.name, packageJson.version]);
    assert.match(v.src, /^\/nix\/store\/[a-z0-9]{32}-source$/);
    const srcFiles = walk(join(store, v.src));
    // The build's inputs are there…
    for (const f of [
      "package.json",
      "package-lock.json",
      "tsconfig.json",
      "scripts/bundle.mjs",
      "src/cli.ts",
      "contrib/systemd/nix-builders-watch.service",
    ]) {
      assert.ok(srcFiles.includes(f), `${f} in the package source`);
    }
    // …and nothing else: no tests, no node_modules, no dist.
    assert.ok(
      !srcFiles.some((f) => /^(test|node_modules|dist|bench)\//.test(f)),
      srcFiles.filter((f) => /^(test|node_modules|dist|bench)\//.test(f)).join(" "),
    );
    // What `npm pack` ships, other than the build's dist/, comes from that source.
    const packed = await npmPackFiles();
    const missing = packed.filter((f) => !f.startsWith("dist/") && !srcFiles.includes(f));
    assert.deepEqual(missing, [], "files npm pack ships that the Nix source lacks");
    // dist/ is built in the derivation (npm run build): every file the bundler reads from the
    // repository must be in the Nix source. (The local dist/ may be stale; the Nix build starts without one.)
    const bundler = await run(process.execPath, [join(REPO, "scripts", "bundle.mjs"), "--list-inputs"], {
      timeoutMs: 120_000,
      cwd: REPO,
    });
    assert.equal(bundler.code, 0, bundler.stderr);
    const inputs = bundler.stdout.split("\n").filter((f) => f !== "");
    assert.ok(inputs.includes("src/cli.ts"), inputs.slice(0, 5).join(" "));
    assert.deepEqual(
      inputs.filter((f) => !srcFiles.includes(f)),
      [],
      "bundler inputs the Nix source lacks",
    );
  });

  test("npm pack ships what the Nix install links and copies: the bin, the unit, the alert rules", async () => {
    const packed = await npmPackFiles();
    assert.ok(packed.includes("package.json"));
    for (const target of Object.values(packageJson.bin))
      assert.ok(packed.includes(target.replace(/^\.\//, "")), `bin ${target}`);
    // Every file postInstall takes from the installed package ($out/lib/node_modules/<name>/…) is packed.
    const postInstall = readFileSync(join(REPO, "nix", "package.nix"), "utf8");
    const used = [...postInstall.matchAll(/\$out\/lib\/node_modules\/nix-builders\/(\S+?)["\s]/g)].map(
      (m) => m[1]!,
    );
    assert.ok(used.length >= 2, used.join(" "));
    for (const f of used) assert.ok(packed.includes(f), `${f} is in npm pack's list`);
    assert.ok(
      !packed.some((f) => f.startsWith("test/") || f.startsWith("src/")),
      "no tests or TypeScript sources",
    );
  });

  test("package-lock.json has what importNpmLock needs: an integrity hash and a version per package", () => {
    const lock = JSON.parse(readFileSync(join(REPO, "package-lock.json"), "utf8")) as {
      lockfileVersion: number;
      packages: Record<string, { resolved?: string; integrity?: string; version?: string; link?: boolean }>;
    };
    assert.ok(lock.lockfileVersion >= 2);
    const entries = Object.entries(lock.packages).filter(([k, p]) => k !== "" && !p.link);
    assert.ok(entries.length > 10);
    for (const [name, p] of entries) {
      if (p.resolved !== undefined) assert.match(p.resolved, /^https:\/\/registry\.npmjs\.org\//, name);
      assert.match(p.integrity ?? "", /^sha(512|256|1)-/, name);
      assert.match(p.version ?? "", /^\d+\.\d+\.\d+/, name);
    }
    assert.ok(statSync(join(REPO, "nix", "package.nix")).isFile());
  });
});
