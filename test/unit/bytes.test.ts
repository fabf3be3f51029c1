/**
 * Issue 16 item 10: bytes that are not UTF-8. Nix keeps configuration text as bytes, so two machines
 * whose features differ only in such a byte are different machines to it. The tool used to decode files
 * as UTF-8 with replacement, so both features became `f\uFFFD` and routing picked the wrong machine.
 * Now files decode losslessly (src/nix/bytes.ts); compared with the real build hooks of Nix 2.8 and 2.30.
 */
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { decodeBytes, encodeBytes } from "../../src/nix/bytes.js";
import { byteCompare, parseBuilders } from "../../src/nix/machines.js";
import { route } from "../../src/nix/route.js";
import { readBounded } from "../../src/os/read.js";
import { DEFAULT_DRV_PATH, runBuildRemote, scratchDir } from "../support/build-remote.js";
import { REAL_NIXES } from "../support/nix-versions.js";
import { mulberry32 } from "../support/random.js";

describe("decodeBytes / encodeBytes", () => {
  test("round trip of random bytes is exact, and distinct bytes give distinct strings", () => {
    const rnd = mulberry32(0xb17e5);
    const seen = new Map<string, string>();
    for (let n = 0; n < 3000; n++) {
      const len = Math.floor(rnd() * 12);
      // mostly high bytes and UTF-8 lead/continuation bytes, where decoders go wrong
      const pool = [
        0x41, 0x66, 0x80, 0xbf, 0xc2, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xed, 0xa0, 0xf0, 0x9f, 0xff, 0xfe,
      ];
      const b = Buffer.from(Array.from({ length: len }, () => pool[Math.floor(rnd() * pool.length)]!));
      const s = decodeBytes(b);
      assert.ok(encodeBytes(s).equals(b), `round trip of ${b.toString("hex")}`);
      const prev = seen.get(s);
      assert.ok(prev === undefined || prev === b.toString("hex"), `${prev} and ${b.toString("hex")} collide`);
      seen.set(s, b.toString("hex"));
    }
  });

  test("valid UTF-8 decodes as usual; invalid bytes are escaped, not replaced", () => {
    assert.equal(decodeBytes(Buffer.from("été ✓ 🐧", "utf8")), "été ✓ 🐧");
    assert.equal(decodeBytes(Buffer.from([0x66, 0xff])), "f\udcff");
    assert.equal(
      decodeBytes(Buffer.from([0xed, 0xa0, 0x80])),
      "\udced\udca0\udc80",
      "an encoded surrogate is not UTF-8",
    );
    assert.notEqual(decodeBytes(Buffer.from([0x66, 0xfe])), decodeBytes(Buffer.from([0x66, 0xff])));
    // byte order, as std::set<std::string> sorts: 0xc3 0xa9 (é) < 0xfe < 0xff
    const sorted = ["f\udcff", "fé", "f\udcfe"].sort(byteCompare);
    assert.deepEqual(sorted, ["fé", "f\udcfe", "f\udcff"]);
  });
});

for (const n of REAL_NIXES) {
  describe(`features differing in one invalid byte stay distinct: real ${n.label} build-remote`, {
    skip: n.skipReason,
  }, () => {
    test("the derivation needs f\\xff: both Nix and route() choose the machine that has f\\xff, not the faster f\\xfe one", async () => {
      const base = join(scratchDir(), `bytes-${n.label}`);
      const store = join(base, "store");
      mkdirSync(join(store, "nix", "var", "nix", "current-load"), { recursive: true });
      const file = join(base, "machines");
      writeFileSync(
        file,
        Buffer.concat([
          Buffer.from(`${base}/fast x86_64-linux - 1 9 f`),
          Buffer.from([0xfe]),
          Buffer.from(`\n${base}/right x86_64-linux - 1 1 f`),
          Buffer.from([0xff, 0x0a]),
        ]),
      );
      const need = Buffer.from([0x66, 0xff]);
      const real = await runBuildRemote({
        builders: `@${file}`,
        system: "x86_64-linux",
        features: [need],
        store,
        hook: n.buildRemote,
        extraSettings: { "build-users-group": "", system: "x86_64-linux" },
      });
      assert.equal(real.reply, "accept", real.stderr);
      assert.match(real.acceptedUri ?? "", /\/right$/, "Nix tells the two features apart");

      const parsed = parseBuilders({
        spec: `@${file}`,
        version: n.version!,
        defaultSystem: "x86_64-linux",
        fs: { read: (p) => readBounded(p) },
      });
      assert.equal(parsed.error, null);
      const [fast, right] = parsed.machines;
      assert.notDeepEqual(fast!.supportedFeatures, right!.supportedFeatures, "distinct features");
      assert.ok(encodeBytes(right!.supportedFeatures[0]!).equals(need), "the bytes are kept");
      const ours = route({
        version: n.version!,
        drv: {
          path: DEFAULT_DRV_PATH,
          system: "x86_64-linux",
          requiredFeatures: [decodeBytes(need)],
          preferLocalBuild: false,
        },
        machines: parsed.machines,
        local: {
          system: "x86_64-linux",
          extraPlatforms: [],
          systemFeatures: [],
          maxJobs: 1,
          experimentalFeatures: [],
        },
        amWilling: false,
      });
      assert.equal(ours.decision.kind, "remote");
      assert.equal(ours.decision.printedUri, real.acceptedUri);
    });
  });
}
