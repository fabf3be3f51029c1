/**
 * Nix's displayed form of a message (tabs expanded as its logger does) against real Nix 2.8: the
 * tool prints that form and keeps the raw message in JSON, and `explain` reads both forms.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { runConfig } from "../../src/commands/config.js";
import { renderText } from "../../src/commands/explain.js";
import { runShow } from "../../src/commands/show.js";
import { filterAnsiEscapes, nixErrorDisplay } from "../../src/nix/display.js";
import { explainLog, explainMessage } from "../../src/nix/explain.js";
import { captureIo } from "../support/capture-io.js";

const root = mkdtempSync(join(tmpdir(), "nb-display-"));
after(() => rmSync(root, { recursive: true, force: true }));
const conf = join(root, "conf");
mkdirSync(conf);
writeFileSync(join(conf, "nix.conf"), "build-users-group =\nsubstituters =\n");
const nixEnv = { PATH: process.env["PATH"], NIX_CONF_DIR: conf, NIX_USER_CONF_FILES: "", HOME: root };
const haveNix = spawnSync("nix-instantiate", ["--version"]).status === 0;

function nix(cmd: string, args: string[]): { code: number | null; stderr: string } {
  const r = spawnSync(cmd, args, { env: nixEnv, encoding: "utf8", timeout: 60_000 });
  return { code: r.status, stderr: r.stderr };
}

describe("Nix's displayed form of a message", () => {
  const messages = [
    "a\tb",
    "ab\tc é\td", // a 2-byte character takes one column
    "emoji 😀\tx", // so does a 4-byte one
    "a\nb\tc\nxxxxxxxxxxx\td", // columns run on across lines: Nix does not restart them after a newline
    "12345678\t|\t\t|",
    "bell\u0007 and cr\r and \u001b[35;1mcolour\u001b[0m\tend",
    "trailing tab\t\nnext",
    "row: '\t'",
  ];
  it("equals real Nix 2.8's error output, byte for byte", (t) => {
    if (!haveNix) return t.skip("Nix is not installed");
    for (const m of messages) {
      const r = nix("nix-instantiate", [
        "--eval",
        "-E",
        `throw (builtins.fromJSON ${JSON.stringify(JSON.stringify(m))})`,
      ]);
      assert.equal(r.code, 1);
      assert.equal(r.stderr, `${nixErrorDisplay(m)}\n`, JSON.stringify(m));
    }
  });

  it("expands a tab to the next multiple of 8 columns", () => {
    assert.equal(filterAnsiEscapes("error: '\t'"), `error: '${" ".repeat(8)}'`);
    assert.equal(filterAnsiEscapes("\t"), " ".repeat(8));
    assert.equal(filterAnsiEscapes("1234567\tx"), "1234567 x");
    assert.equal(filterAnsiEscapes("12345678\tx"), `12345678${" ".repeat(8)}x`);
  });
});

describe("a machines row starting with a tab", () => {
  const machines = join(root, "machines");
  writeFileSync(machines, "\t\n");
  const drv = 'derivation { name = "x"; system = "x86_64-linux"; builder = "/bin/sh"; }';
  const build = (extra: string[]) =>
    nix("nix-build", [
      "--store",
      join(root, "st"),
      "--max-jobs",
      "0",
      "--builders",
      `@${machines}`,
      ...extra,
      "-E",
      drv,
    ]);

  it("show prints the line real Nix 2.8 prints, and JSON keeps the raw row", async (t) => {
    if (!haveNix) return t.skip("Nix is not installed");
    const real = build([])
      .stderr.split("\n")
      .find((l) => l.startsWith("error: bad machine"))!;
    assert.equal(
      real,
      `error: bad machine specification: store URL was not found at the first column of a row: '${" ".repeat(7)}'`,
    );
    const dir = mkdtempSync(join(root, "show-"));
    mkdirSync(join(dir, "etc"));
    writeFileSync(join(dir, "etc", "nix.conf"), `builders = @${machines}\n`);
    const env = {
      PATH: process.env["PATH"],
      HOME: dir,
      NIX_CONF_DIR: join(dir, "etc"),
      NIX_USER_CONF_FILES: "",
      NIX_REMOTE: join(dir, "store"),
    };
    const text = captureIo(env);
    await runShow({}, text);
    assert.ok(text.stdout.includes(`\n  ${real}  (${machines}:1)\n`), text.stdout);
    assert.ok(!text.stdout.includes("\t"));
    const js = captureIo(env);
    await runShow({ json: true }, js);
    const e = JSON.parse(js.stdout).errors[0];
    assert.equal(
      e.message,
      "bad machine specification: store URL was not found at the first column of a row: '\t'",
    );
    assert.equal(e.displayed, real);
  });

  it("explain recognises Nix's displayed log, its internal-json log and the tool's raw JSON message alike", (t) => {
    if (!haveNix) return t.skip("Nix is not installed");
    const plain = build([]).stderr;
    const internal = build(["--log-format", "internal-json"]).stderr;
    assert.ok(internal.includes("'\\u001b[35;1m\\t\\u001b[0m'"), "internal-json carries the raw tab");
    const real = plain.split("\n").find((l) => l.startsWith("error: bad machine"))!;
    for (const log of [plain, internal]) {
      const r = explainLog(log, { version: "2.8" });
      const f = r.findings.find((x) => x.entryId === "machine-spec-url");
      assert.ok(f, log);
      assert.equal(f.displayed, real);
      assert.ok(renderText(r).includes(`> ${real}`), renderText(r));
      assert.ok(!renderText(r).includes("\t"), renderText(r));
    }
    const raw = "bad machine specification: store URL was not found at the first column of a row: '\t'";
    assert.equal(explainMessage(`error: ${raw}`)?.entryId, "machine-spec-url");
    assert.equal(explainMessage(`error: ${raw}`)?.displayed, real);
  });

  it("config shows Nix's displayed text and keeps the raw one in JSON", async () => {
    const dir = mkdtempSync(join(root, "conf-"));
    writeFileSync(join(dir, "nix.conf"), "extra-builders = a\tb\n");
    const env = { PATH: process.env["PATH"], HOME: dir, NIX_CONF_DIR: dir, NIX_USER_CONF_FILES: "" };
    const js = captureIo(env);
    await runConfig({ json: true }, js);
    const w = JSON.parse(js.stdout).warnings[0];
    assert.equal(w.text, `warning: ${w.message}`);
    assert.equal(w.displayed, filterAnsiEscapes(w.text));
  });
});
