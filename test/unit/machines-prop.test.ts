/** Property tests: on any input the parser returns a result (never throws), and the result is coherent. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { nixBase64Decode } from "../../src/nix/base64.js";
import { parseBuilders, type Reader } from "../../src/nix/machines.js";
import { normaliseStoreUri, sshAuthority } from "../../src/nix/store-uri.js";
import { NIX_2_8, NIX_LATEST } from "../../src/nix/version.js";

const CHARS = [
  " ",
  "\t",
  "\n",
  "\r",
  ";",
  "#",
  "@",
  ",",
  "-",
  "/",
  "=",
  "a",
  "1",
  "+",
  ".",
  "_",
  "é",
  "x",
  "0",
];
const specArb = fc.oneof(
  fc.string({ maxLength: 80 }),
  fc
    .array(
      fc.constantFrom(...CHARS, "nix@h", "@/f1", "@/f2", "@/dir", "@f1", "4294967296", "SSH+KEY==", "BAD_"),
      {
        maxLength: 30,
      },
    )
    .map((xs) => xs.join("")),
);

function fsFrom(files: Record<string, string>): Reader {
  return {
    read(path) {
      if (path === "/dir") return { ok: false, code: "EISDIR" };
      if (path === "/denied") return { ok: false, code: "EACCES" };
      const t = files[path];
      return t === undefined ? { ok: false, code: "ENOENT" } : { ok: true, text: t };
    },
  };
}

describe("machines: properties", () => {
  it("never throws; error is the first problem; every machine is well formed", () => {
    fc.assert(
      fc.property(specArb, specArb, specArb, fc.boolean(), (spec, f1, f2, head) => {
        const fs = fsFrom({ "/f1": f1, "/f2": f2 });
        const r = parseBuilders({
          spec,
          version: head ? NIX_LATEST : NIX_2_8,
          defaultSystem: "x86_64-linux",
          fs,
        });
        if (r.problems.length === 0) assert.equal(r.error, null);
        else assert.ok(r.problems.includes(r.error!));
        for (const m of r.machines) {
          assert.ok(m.storeUri.length > 0 && !/[ \t\r\n]/.test(m.storeUri));
          assert.ok(Number.isInteger(m.maxJobs) && m.maxJobs >= 0 && m.maxJobs <= 0xffffffff);
          assert.ok(Number.isNaN(m.speedFactor) || m.speedFactor > 0);
          assert.deepEqual(m.supportedFeatures, [...new Set(m.supportedFeatures)].sort());
          for (const s of m.systemTypes) assert.ok(s !== "" && !s.includes(","));
        }
        for (const p of r.problems) assert.equal(typeof p.message, "string");
      }),
      { numRuns: 2000 },
    );
  });

  it("HEAD ignores whitespace-only and comment-only lines", () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(" ", "\t", "\r", "\n", ";", "# c ; d"), { maxLength: 20 }),
        (xs) => {
          const r = parseBuilders({
            spec: xs.join(""),
            version: NIX_LATEST,
            defaultSystem: "s",
            fs: fsFrom({}),
          });
          assert.equal(r.error, null);
          assert.equal(r.machines.length, 0);
        },
      ),
    );
  });

  it("the base64 decoder agrees with Node's on canonical input and never throws", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        const enc = Buffer.from(bytes).toString("base64");
        const d = nixBase64Decode(enc);
        assert.ok(d.ok);
        assert.deepEqual([...d.bytes], [...bytes]);
      }),
    );
    fc.assert(fc.property(fc.string(), (s) => void nixBase64Decode(s)));
  });

  it("store URI helpers never throw", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), (s) => {
        const u = normaliseStoreUri(s);
        sshAuthority(u, NIX_2_8);
        sshAuthority(u, NIX_LATEST);
      }),
    );
  });
});
