/**
 * Property tests: random configuration texts, trees and environments never make the engine throw; errors
 * are always a structured NixError, and some structural invariants hold.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { type FileReader, loadConfig, parseConfText } from "../../src/nix/conf.js";
import { NixError } from "../../src/nix/errors.js";
import { NIX_2_8, NIX_LATEST, type NixVersion } from "../../src/nix/version.js";

/** The rules of 2.8 and 2.30 (both checked against the binaries) and of current Nix (modelled). */
const VERSION = fc.constantFrom<NixVersion>(NIX_2_8, { major: 2, minor: 30, patch: 5 }, NIX_LATEST);

const MACHINE = {
  system: "x86_64-linux",
  extraPlatforms: ["i686-linux"],
  systemFeatures: ["benchmark", "big-parallel", "nixos-test"],
  cores: 4,
  hardwareThreads: 4,
};

/** Fragments that make random lines hit interesting paths. */
const fragment = fc.oneof(
  fc.constantFrom(
    "include",
    "!include",
    "=",
    "==",
    "#",
    " ",
    "\t",
    "\r",
    "\n",
    "extra-",
    "max-jobs",
    "cores",
    "sandbox",
    "substituters",
    "experimental-features",
    "access-tokens",
    "build-hook",
    "auto",
    "relaxed",
    "true",
    "1K",
    "-1",
    "+5",
    "a=b",
    "../x.conf",
    "/f1",
    "/f2",
    "f1",
    "18446744073709551616",
  ),
  fc.string({ maxLength: 6 }),
  fc.string({ unit: "grapheme", maxLength: 4 }),
);
const text = fc.array(fragment, { maxLength: 40 }).map((xs) => xs.join(""));

function fsOf(files: Record<string, string>): FileReader {
  return {
    read: (p) => (p in files ? { ok: true, text: files[p]! } : { ok: false, code: "ENOENT" }),
    exists: (p) => ({ ok: true, exists: p in files }),
  };
}

describe("conf property tests", () => {
  test("parseConfText never throws and reports errors as NixError", () => {
    fc.assert(
      fc.property(text, VERSION, (t, version) => {
        const r = parseConfText(t, "/etc/nix/nix.conf", version);
        if (r.error !== null) assert.ok(r.error instanceof NixError);
        for (const l of r.lines) {
          if (l.kind === "set") {
            assert.ok(!/[ \t\r\n#]/.test(l.name));
            assert.ok(!l.value.includes("#") && !/^\s|\s$|\s\s/.test(l.value));
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  test("loadConfig never throws, whatever the files, environment and flags", () => {
    const env = fc.record(
      {
        NIX_CONF_DIR: fc.constantFrom("/etc/nix", "", "rel", "/etc/../etc/nix/"),
        NIX_USER_CONF_FILES: fc.constantFrom("/f1:/f2", "", "::/f2", "f1"),
        NIX_CONFIG: text,
        NIX_REMOTE_SYSTEMS: fc.constantFrom("/m", "/a:/b", ""),
        XDG_CONFIG_HOME: fc.constantFrom("", "/x"),
        HOME: fc.constantFrom("/root", ""),
      },
      { requiredKeys: [] },
    );
    const flag = fc.record({
      name: fc.constantFrom("max-jobs", "extra-substituters", "keep-going", "no-sandbox", "bogus", "cores"),
      value: fc.option(fc.constantFrom("3", "x", "auto", ""), { nil: undefined }),
      via: fc.constantFrom("flag" as const, "option" as const),
    });
    fc.assert(
      fc.property(
        text,
        text,
        text,
        env,
        fc.array(flag, { maxLength: 3 }),
        VERSION,
        (sys, f1, f2, e, flags, version) => {
          const files = { "/etc/nix/nix.conf": sys, "/f1": f1, "/f2": f2, "/x.conf": "cores = 1\n" };
          let view: ReturnType<typeof loadConfig> | undefined;
          assert.doesNotThrow(() => {
            view = loadConfig({
              version,
              env: e,
              passwdHome: "/root",
              fs: fsOf(files),
              machine: MACHINE,
              flags,
            });
          });
          const v = view!;
          if (v.error !== null) assert.ok(v.error instanceof NixError);
          assert.ok(v.settings.size >= 90);
          for (const s of v.settings.values()) assert.ok(s.origin.length >= 1);
          for (const a of v.assignments) assert.ok(a.setting === null || v.settings.has(a.setting));
        },
      ),
      { numRuns: 1500 },
    );
  });
});
