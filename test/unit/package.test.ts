/**
 * The package (issue 16 item 17): what `npm pack` ships and what installing it prints, and the shell
 * completions.
 *
 *  - `npm pack`, then `npm install -g --prefix <empty dir> <tarball>`: no warning on stderr (a `prepare`
 *    script made npm 11 warn on every install; `prepack` builds only when packing), the binary runs, and
 *    the tarball holds LICENSE, CHANGELOG.md, docs/ and completions/. Dependencies come from npm's cache or
 *    registry (skipped when npm is absent).
 *  - completions/ is what scripts/gen-completions.mjs writes from the CLI's own help (so it lists every
 *    command and option commander knows), and the bash completion completes subcommands and options.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, describe, it } from "node:test";

const ROOT = resolve(import.meta.dirname, "../..");
const tmp = mkdtempSync(join(tmpdir(), "nb-package-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const haveNpm = spawnSync("npm", ["--version"], { timeout: 20_000 }).status === 0;
const haveDist = existsSync(join(ROOT, "dist", "cli.js"));

function bashComplete(words: string[]): string[] {
  const script = `source ${JSON.stringify(join(ROOT, "completions", "nix-builders.bash"))}; COMP_WORDS=(${words
    .map((w) => `'${w}'`)
    .join(" ")}); COMP_CWORD=${words.length - 1}; _nix_builders; echo "\${COMPREPLY[@]}"`;
  const r = spawnSync("bash", ["-c", script], { encoding: "utf8", timeout: 10_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split(/\s+/).filter(Boolean);
}

describe("shell completions", () => {
  it("bash completes subcommands", () => {
    assert.deepEqual(bashComplete(["nix-builders", "l"]), ["lint"]);
    assert.deepEqual(bashComplete(["nix-builders", "re"]).sort(), ["report", "reset"]);
    const all = bashComplete(["nix-builders", ""]);
    for (const c of [
      "config",
      "show",
      "lint",
      "route",
      "plan",
      "doctor",
      "verify",
      "use",
      "reset",
      "explain",
    ])
      assert.ok(all.includes(c), `${c} in ${all.join(" ")}`);
  });
  it("bash completes a command's options", () => {
    assert.deepEqual(bashComplete(["nix-builders", "use", "--dr"]), ["--dry-run"]);
    assert.ok(bashComplete(["nix-builders", "lint", "--"]).includes("--machines"));
  });
  it("the files are what the generator writes from the CLI's help", {
    skip: !haveDist && "needs dist/ (npm run build)",
  }, async () => {
    const gen = (await import(join(ROOT, "scripts", "gen-completions.mjs"))) as {
      spec: () => unknown;
      render: (s: unknown) => Record<string, string>;
    };
    const files = gen.render(gen.spec());
    assert.deepEqual(Object.keys(files).sort(), readdirSync(join(ROOT, "completions")).sort());
    for (const [f, text] of Object.entries(files))
      assert.equal(readFileSync(join(ROOT, "completions", f), "utf8"), text, `completions/${f} is stale`);
  });
});

describe("npm pack, then install into an empty prefix", { skip: !haveNpm && "npm is not installed" }, () => {
  it("prints no warning, runs, and ships LICENSE, CHANGELOG.md, docs and completions", () => {
    const packDir = join(tmp, "pack");
    mkdirSync(packDir);
    execFileSync("npm", ["pack", "--silent", "--pack-destination", packDir], {
      cwd: ROOT,
      timeout: 180_000,
      stdio: ["ignore", "ignore", "pipe"],
    });
    const tgz = readdirSync(packDir).find((f) => f.endsWith(".tgz"))!;
    const listing = execFileSync("tar", ["tzf", join(packDir, tgz)], { encoding: "utf8" }).split("\n");
    for (const f of [
      "package/LICENSE",
      "package/CHANGELOG.md",
      "package/docs/lint.md",
      "package/completions/nix-builders.bash",
      "package/completions/_nix-builders",
      "package/completions/nix-builders.fish",
    ])
      assert.ok(listing.includes(f), `${f} in the tarball`);
    const pkg = JSON.parse(
      execFileSync("tar", ["xzOf", join(packDir, tgz), "package/package.json"], { encoding: "utf8" }),
    ) as { scripts: Record<string, string> };
    assert.equal(pkg.scripts["prepare"], undefined);
    const prefix = join(tmp, "prefix");
    const r = spawnSync(
      "npm",
      [
        "install",
        "-g",
        "--prefix",
        prefix,
        "--prefer-offline",
        "--no-audit",
        "--no-fund",
        join(packDir, tgz),
      ],
      { encoding: "utf8", timeout: 180_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /warn/i, r.stderr);
    const v = spawnSync(join(prefix, "bin", "nix-builders"), ["--version"], {
      encoding: "utf8",
      timeout: 20_000,
    });
    assert.equal(v.stdout.trim(), JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version);
  });
});
