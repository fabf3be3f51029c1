/**
 * Issue 16 item 6: one bad line, its follow-on findings grouped. A `;` inside a comment makes Nix before
 * 2.29 read the rest of the comment as machines (the real 2.8 build hook lists one machine more than 2.30
 * for the same file), and lint used to report that machine's key and system as separate errors. Now the
 * `;` is reported once, and the findings about the bogus machine come under it (`causedBy` and
 * `consequences` in --json), while the real machine's own findings on the same line stay on their own.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, it } from "node:test";
import { parseNoMachineListing, runBuildRemote, scratchDir } from "../support/build-remote.js";
import { NIX28, NIX230 } from "../support/nix-versions.js";

const ROOT = resolve(import.meta.dirname, "../..");

interface Json {
  findings: {
    id: string;
    severity: string;
    line: number | null;
    message: string;
    causedBy?: { id: string; file: string | null; line: number | null };
    consequences?: number;
  }[];
  summary: { errors: number; warnings: number; infos: number };
}

function lint(file: string, version: string, json: boolean): { code: number | null; out: string } {
  const r = spawnSync(
    process.execPath,
    [
      "--import",
      "tsx",
      join(ROOT, "src/cli.ts"),
      "lint",
      ...(json ? ["--json"] : []),
      "--nix-version",
      version,
      "--machines",
      file,
    ],
    { env: { ...process.env, NIX_USER_CONF_FILES: "", NIX_CONFIG: "" }, encoding: "utf8", timeout: 60_000 },
  );
  return { code: r.status, out: r.stdout };
}

describe("lint: a `;` in a comment is reported once, its consequences under it", () => {
  const dir = mkdtempSync(join(scratchDir(), "cascade-"));
  // Line 1: a real machine (its key is missing: its own problem) and a comment with a `;`, whose tail
  // `arm builder x86` 2.8 reads as a machine with store `arm`, system `builder` and key `x86`.
  const line1 = `ssh://nix@b1.test x86_64-linux ${dir}/no-such-key 1 1 - - - # the fast one; arm builder x86`;
  const file = join(dir, "machines");
  writeFileSync(file, `${line1}\n`);

  for (const nix of [NIX28, NIX230]) {
    it(`the real ${nix.label} hook: ${nix.label === "2.8" ? "two machines (the tail is one)" : "one machine"}`, {
      skip: nix.skipReason,
    }, async () => {
      const real = await runBuildRemote({
        builders: `${line1}\n`,
        system: "riscv64-linux",
        hook: nix.buildRemote,
        store: join(dir, "store"),
        extraSettings: { "build-users-group": "", system: "x86_64-linux" },
      });
      assert.equal(real.reply, "decline", real.stderr);
      const raw = real.rawMessages.find((m) => m.includes("Failed to find a machine"));
      const listing = parseNoMachineListing(raw ?? "");
      assert.ok(listing, real.stderr);
      assert.equal(listing.count, nix.label === "2.8" ? 2 : 1);
      if (nix.label === "2.8") assert.deepEqual(listing.machines[1]!.systemTypes, ["builder"]);
    });
  }

  it("2.8 rules, --json: the cause carries `consequences`, the tail's findings `causedBy`; the real machine's key stays apart", () => {
    const r = lint(file, "2.8", true);
    const j = JSON.parse(r.out) as Json;
    const ids = j.findings.map((f) => `${f.id}${f.causedBy ? ` <- ${f.causedBy.id}` : ""}`);
    const cause = j.findings.findIndex((f) => f.id === "semicolon-in-comment");
    assert.ok(cause >= 0, ids.join("\n"));
    const c = j.findings[cause]!;
    assert.equal(c.consequences, 2, ids.join("\n"));
    const after = j.findings.slice(cause + 1, cause + 3);
    assert.deepEqual(after.map((f) => f.id).sort(), ["key-missing", "unknown-system"]);
    for (const f of after) assert.deepEqual(f.causedBy, { id: "semicolon-in-comment", file, line: 1 });
    assert.match(after.find((f) => f.id === "key-missing")!.message, /ssh key x86 /);
    assert.match(after.find((f) => f.id === "unknown-system")!.message, /'builder'/);
    // the real machine's missing key is its own finding, not a consequence
    const own = j.findings.filter((f) => f.id === "key-missing" && f.causedBy === undefined);
    assert.equal(own.length, 1);
    assert.match(own[0]!.message, /no-such-key/);
    assert.equal(j.findings.filter((f) => f.causedBy !== undefined).length, 2);
  });

  it("2.8 rules, text: the consequences are indented under the `;` finding", () => {
    const r = lint(file, "2.8", false);
    assert.equal(r.code, 2);
    assert.match(
      r.out,
      /a `;` inside a comment[^\n]*\n {2}fix: [^\n]*\n {2}2 findings below follow from this one[^\n]*\n {4}↳ because of it, (error: ssh key x86|warning: 'builder')[^\n]*\n(?: {6}Nix says: [^\n]*\n)? {4}↳ because of it, /,
    );
  });

  it("2.30 rules: the tail is a comment; no machine, no consequences", () => {
    const j = JSON.parse(lint(file, "2.30", true).out) as Json;
    assert.equal(
      j.findings.filter((f) => f.causedBy !== undefined || f.consequences !== undefined).length,
      0,
    );
    assert.equal(j.findings.filter((f) => f.id === "unknown-system").length, 0);
  });
});
