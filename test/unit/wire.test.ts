/** Wire encoding round trips, truncation, budgets, deadlines, and a property test on random bytes. */
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  chomp,
  encodeString,
  encodeStrings,
  encodeU64,
  WireError,
  WireReader,
  WireWriter,
} from "../../src/remote/wire.js";

function readerOf(bytes: Buffer, opts: ConstructorParameters<typeof WireReader>[1] = {}, end = true) {
  const s = new PassThrough();
  const r = new WireReader(s, { timeoutMs: 1000, ...opts });
  s.write(bytes);
  if (end) s.end();
  return { r, s };
}

describe("encoding", () => {
  it("u64 is 8 bytes little-endian", () => {
    assert.equal(encodeU64(0x6e697863).toString("hex"), "6378696e00000000");
    assert.equal(encodeU64(0xffff_ffff_ffff_ffffn).toString("hex"), "ffffffffffffffff");
    assert.throws(() => encodeU64(-1));
  });
  it("strings are padded to 8", () => {
    assert.equal(encodeString("").toString("hex"), "0000000000000000");
    assert.equal(encodeString("abc").toString("hex"), "0300000000000000" + "6162630000000000");
    assert.equal(encodeString("12345678").length, 16);
    assert.equal(encodeString("123456789").length, 24);
    assert.equal(encodeString("é").readBigUInt64LE(0), 2n, "length in UTF-8 bytes");
  });
  it("string lists", () => {
    assert.equal(encodeStrings([]).toString("hex"), "0000000000000000");
    assert.equal(encodeStrings(["a", "bc"]).length, 8 + 16 + 16);
  });
  it("writer accumulates", () => {
    const w = new WireWriter().u64(1).bool(true).string("x").strings(["y"]);
    assert.equal(w.length, 8 + 8 + 16 + 24);
    assert.equal(w.take().length, 56);
    assert.equal(w.length, 0);
  });
});

describe("WireReader", () => {
  it("round trips", async () => {
    const w = new WireWriter()
      .u64(42)
      .u64(0xffff_ffff_ffffn)
      .string("héllo")
      .strings(["/nix/store/a", "", "b"]);
    const { r } = readerOf(w.take());
    assert.equal(await r.u32(), 42);
    assert.equal(await r.u64(), 0xffff_ffff_ffffn);
    assert.equal(await r.string(), "héllo");
    assert.deepEqual(await r.strings(), ["/nix/store/a", "", "b"]);
    assert.equal(r.offset, 8 + 8 + 16 + 8 + 24 + 8 + 16);
  });
  it("reads across chunk boundaries, byte by byte", async () => {
    const s = new PassThrough();
    const r = new WireReader(s, { timeoutMs: 1000 });
    const data = new WireWriter().string("abcdefghij").u64(7).take();
    const p = (async () => [await r.string(), await r.u32()])();
    for (const b of data) {
      s.write(Buffer.from([b]));
      await new Promise((res) => setImmediate(res));
    }
    assert.deepEqual(await p, ["abcdefghij", 7]);
  });
  it("truncated input is an eof WireError", async () => {
    const full = encodeString("hello world");
    for (let cut = 0; cut < full.length; cut++) {
      const { r } = readerOf(full.subarray(0, cut));
      await assert.rejects(r.string(), (e: unknown) => e instanceof WireError && e.kind === "eof");
    }
  });
  it("u32 rejects values ≥ 2^32 like Nix's readInt", async () => {
    const { r } = readerOf(Buffer.from("banner\n\xeb", "latin1"));
    await assert.rejects(
      r.u32(),
      (e: unknown) => e instanceof WireError && e.kind === "too-large" && /type 'j'/.test(e.message),
    );
  });
  it("a huge length fails at once against the budget instead of waiting", async () => {
    const { r } = readerOf(encodeU64(1n << 40n), { budget: 1 << 20 }, false);
    const t = Date.now();
    await assert.rejects(r.string(), (e: unknown) => e instanceof WireError && e.kind === "budget");
    assert.ok(Date.now() - t < 200);
    const { r: r2 } = readerOf(encodeU64(1n << 40n), { budget: 1 << 20 }, false);
    await assert.rejects(r2.strings(), (e: unknown) => e instanceof WireError && e.kind === "budget");
  });
  it("maxLen bounds a string", async () => {
    const { r } = readerOf(encodeString("x".repeat(100)));
    await assert.rejects(r.string(10), (e: unknown) => e instanceof WireError && e.kind === "budget");
  });
  it("a silent peer times out", async () => {
    const { r } = readerOf(Buffer.from([1, 2, 3]), { timeoutMs: 100 }, false);
    const t = Date.now();
    await assert.rejects(r.u64(), (e: unknown) => e instanceof WireError && e.kind === "timeout");
    assert.ok(Date.now() - t < 1000);
  });
  it("an absolute deadline wins over a longer per-read timeout", async () => {
    const { r } = readerOf(Buffer.alloc(0), { timeoutMs: 10_000, deadline: Date.now() + 80 }, false);
    const t = Date.now();
    await assert.rejects(r.u64(), (e: unknown) => e instanceof WireError && e.kind === "timeout");
    assert.ok(Date.now() - t < 1000);
  });
  it("abort rejects a pending read", async () => {
    const ac = new AbortController();
    const { r } = readerOf(Buffer.alloc(0), { signal: ac.signal, timeoutMs: 10_000 }, false);
    const p = r.u64();
    setTimeout(() => ac.abort(), 20);
    await assert.rejects(p, (e: unknown) => e instanceof WireError && e.kind === "aborted");
  });
  it("line() and drain()", async () => {
    const { r } = readerOf(Buffer.from("started\nrest of it"));
    assert.equal(await r.line(), "started");
    assert.equal((await r.drain(100, 500)).toString(), "rest of it");
    assert.equal(r.seen().toString(), "started\nrest of it");
  });
  it("drain stops at the deadline when the peer never closes", async () => {
    const { r } = readerOf(Buffer.from("abc"), {}, false);
    const t = Date.now();
    assert.equal((await r.drain(100, 100)).toString(), "abc");
    assert.ok(Date.now() - t < 1000);
  });
  it("chomp", () => {
    assert.equal(chomp("a b \n\r\t "), "a b");
  });
});

describe("property: random bytes never throw anything but WireError, never hang", () => {
  it("mixed reads over random input", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 200 }),
        fc.array(fc.constantFrom("u64", "u32", "num", "string", "strings", "line", "bool"), {
          minLength: 1,
          maxLength: 8,
        }),
        fc.boolean(),
        async (bytes, ops, end) => {
          const { r } = readerOf(Buffer.from(bytes), { budget: 4096, timeoutMs: 30 }, end);
          const t = Date.now();
          try {
            for (const op of ops) {
              if (op === "u64") await r.u64();
              else if (op === "u32") await r.u32();
              else if (op === "num") await r.num();
              else if (op === "string") await r.string();
              else if (op === "strings") await r.strings();
              else if (op === "line") await r.line(64);
              else await r.bool();
            }
          } catch (e) {
            if (!(e instanceof WireError)) throw e;
            if (end && e.kind === "timeout") throw new Error("timed out although the input had ended");
          } finally {
            r.detach();
          }
          assert.ok(Date.now() - t < 500, "bounded time");
        },
      ),
      { numRuns: 300 },
    );
  });
  it("well-formed lists of random strings round trip", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.string({ unit: "binary" }), { maxLength: 30 }), async (list) => {
        const { r } = readerOf(encodeStrings(list));
        assert.deepEqual(await r.strings(), list);
      }),
      { numRuns: 200 },
    );
  });
});
