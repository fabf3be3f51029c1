/**
 * The duplicate-machine lint follows the slot files the version's hook uses: from 2.23 two spellings of
 * one store (rendered alike, see store-uri-render.test.ts) share their slots, so they are duplicates.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { lintDuplicates } from "../../src/nix/lint.js";
import { parseBuilders } from "../../src/nix/machines.js";

const fs = { read: () => ({ ok: false as const, code: "ENOENT" }) };
const v28 = { major: 2, minor: 8, patch: 0 };
const v230 = { major: 2, minor: 30, patch: 5 };

function dups(spec: string, v: typeof v28): string[] {
  const r = parseBuilders({ spec, version: v, defaultSystem: "x86_64-linux", fs });
  return lintDuplicates(r.machines, v).map((f) => f.message);
}

describe("duplicate machines by rendered URI", () => {
  test("/tmp/m and /tmp//m/: two machines on 2.8, one set of slots on 2.30", () => {
    assert.deepEqual(dups("/tmp/m x86_64-linux\n/tmp//m/ x86_64-linux", v28), []);
    const m = dups("/tmp/m x86_64-linux\n/tmp//m/ x86_64-linux", v230);
    assert.equal(m.length, 1);
    assert.match(m[0]!, /Nix 2\.30 reads both as local:\/\/\/tmp\/m/);
    assert.match(m[0]!, /current-load\/local:___tmp_m-N/);
  });
  test("parameters in another order are the same store on 2.30", () => {
    assert.deepEqual(dups("ssh://h?a=1&b=2 x86_64-linux\nssh://h?b=2&a=1 x86_64-linux", v28), []);
    assert.equal(dups("ssh://h?a=1&b=2 x86_64-linux\nssh://h?b=2&a=1 x86_64-linux", v230).length, 1);
  });
  test("the same text twice is a duplicate on both", () => {
    assert.equal(dups("ssh://h x86_64-linux\nssh://h x86_64-linux", v28).length, 1);
    assert.equal(dups("ssh://h x86_64-linux\nssh://h x86_64-linux", v230).length, 1);
  });
});
