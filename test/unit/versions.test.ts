/** src/nix/versions.ts: one table of thresholds, each documented in docs/nix-versions.md and used. */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { NIX_2_8, NIX_LATEST } from "../../src/nix/version.js";
import { NIX, since } from "../../src/nix/versions.js";

const REPO = join(import.meta.dirname, "..", "..");

function srcText(): string {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".ts") && !p.endsWith("versions.ts")) out.push(readFileSync(p, "utf8"));
    }
  };
  walk(join(REPO, "src"));
  return out.join("\n");
}

describe("version thresholds", () => {
  const doc = readFileSync(join(REPO, "docs", "nix-versions.md"), "utf8");
  const src = srcText();

  it("every threshold is in docs/nix-versions.md with its release, and used by a rule", () => {
    for (const [name, t] of Object.entries(NIX)) {
      const row = doc.split("\n").find((l) => l.startsWith(`| \`${name}\` |`));
      assert.ok(row, `${name} is not in docs/nix-versions.md`);
      assert.equal(row.split("|")[2]!.trim(), t.since.join("."), `${name}: the release differs`);
      assert.ok(src.includes(`NIX.${name}`), `${name} is used nowhere`);
    }
  });

  it("since: 2.8 has none of the changes, the newest modelled Nix has all", () => {
    for (const t of Object.values(NIX)) {
      assert.equal(since(NIX_2_8, t), false);
      assert.equal(since(NIX_LATEST, t), true);
      assert.equal(since({ major: t.since[0], minor: t.since[1], patch: 0 }, t), true);
      assert.equal(since({ major: t.since[0], minor: t.since[1] - 1, patch: 9 }, t), false);
    }
  });
});
