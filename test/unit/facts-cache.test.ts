/**
 * plan's facts cache (src/host/facts-cache.ts): the file format round-trips, a damaged, foreign or
 * unsafe file is a miss and never an error, and plan answers exactly the same with and without the
 * cache on a real closure (nix-instantiate into a chroot store) that changes between runs, reading
 * only what changed and rewriting the cache only when it learnt something.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as v8 from "node:v8";
import fc from "fast-check";
import { closureExpression } from "../../bench/make-closure.js";
import { routeContext } from "../../src/app/route-context.js";
import { openValidity } from "../../src/app/store-validity.js";
import { userView } from "../../src/app/view.js";
import { type PlanResult, planClosure, runPlan } from "../../src/commands/plan.js";
import {
  type DrvFacts,
  decodeFacts,
  encodeFacts,
  FactsCache,
  factsParts,
} from "../../src/host/facts-cache.js";
import { captureIo } from "../support/capture-io.js";
import { type DrvStore, haveNix, makeDrvStore } from "../support/drv-store.js";

const STORE = "/nix/store";
const path = fc
  .string({ minLength: 1, maxLength: 12, unit: fc.constantFrom(..."abcdefghijklmnopqrstuvwxyz0123456789-") })
  .map((s) => `${STORE}/${s}.drv`);
const word = fc.string({ maxLength: 10 }).filter((s) => !s.includes("\0"));
const facts: fc.Arbitrary<DrvFacts> = fc
  .record({
    system: word,
    requiredFeatures: fc.array(word, { maxLength: 3 }),
    preferLocalBuild: fc.boolean(),
    isBuiltin: fc.boolean(),
    outs: fc.array(fc.tuple(word, fc.oneof(fc.constant(""), path)), { maxLength: 3 }),
    inputs: fc.array(fc.tuple(path, fc.array(word, { maxLength: 3 })), { maxLength: 4 }),
  })
  .map((r) => ({
    system: r.system,
    requiredFeatures: r.requiredFeatures,
    preferLocalBuild: r.preferLocalBuild,
    isBuiltin: r.isBuiltin,
    outputNames: r.outs.map((o) => o[0]),
    outputPaths: r.outs.map((o) => o[1]),
    inputDrvs: r.inputs.map((i) => i[0]),
    inputOutputs: r.inputs.map((i) => i[1]),
  }));

function plain(f: DrvFacts | undefined): unknown {
  return f === undefined ? undefined : JSON.parse(JSON.stringify(f));
}

describe("facts cache: the file", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "nb-facts-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("encode then decode gives back every derivation's facts", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.tuple(path, facts), { selector: (e) => e[0], maxLength: 20 }),
        (entries) => {
          const buf = encodeFacts(entries, STORE);
          const file = join(dir, "plan-facts-nix-store.bin");
          writeFileSync(file, buf, { mode: 0o600 });
          const c = new FactsCache({ storeDir: STORE, dir });
          assert.equal(c.stats.unusable, null);
          assert.equal(c.stats.loaded, entries.length);
          for (const [p, f] of entries) assert.deepEqual(plain(c.get(p)), plain(f));
          assert.equal(c.get(`${STORE}/not-there.drv`), undefined);
        },
      ),
      { numRuns: 60 },
    );
  });

  test("every truncation and many byte flips are a miss or a correct table, never an exception", () => {
    const entries: [string, DrvFacts][] = fc.sample(fc.tuple(path, facts), { numRuns: 8, seed: 7 });
    const good = encodeFacts(entries, STORE);
    for (let n = 0; n < good.length; n += Math.max(1, Math.floor(good.length / 200))) {
      const t = decodeFacts(good.subarray(0, n), STORE);
      assert.equal(typeof t, "string", `a file cut at ${n} of ${good.length} bytes must be a miss`);
    }
    fc.assert(
      fc.property(fc.nat(good.length - 1), fc.integer({ min: 1, max: 255 }), (at, x) => {
        const bad = Buffer.from(good);
        bad[at] = bad[at]! ^ x;
        decodeFacts(bad, STORE); // must not throw
      }),
      { numRuns: 300 },
    );
  });

  test("another format, another store, a symlink, a group-writable or foreign file: a miss that says why", () => {
    const buf = encodeFacts([[`${STORE}/a.drv`, fc.sample(facts, { numRuns: 1, seed: 1 })[0]!]], STORE);
    const file = join(dir, "plan-facts-nix-store.bin");
    const doc = factsParts(buf)!;
    const other = v8.serialize({ ...doc, header: { ...doc.header, format: 99 } });
    writeFileSync(file, other, { mode: 0o600 });
    assert.equal(new FactsCache({ storeDir: STORE, dir }).stats.unusable, "another format");
    writeFileSync(file, v8.serialize({ ...doc, magic: "something else" }), { mode: 0o600 });
    assert.equal(new FactsCache({ storeDir: STORE, dir }).stats.unusable, "not a facts file");
    writeFileSync(file, "NBFACTS\n{}\n", { mode: 0o600 });
    assert.equal(new FactsCache({ storeDir: STORE, dir }).stats.unusable, "not a facts file");
    writeFileSync(file, encodeFacts([], "/gnu/store"), { mode: 0o600 });
    assert.equal(new FactsCache({ storeDir: STORE, dir }).stats.unusable, "another store");
    writeFileSync(file, buf, { mode: 0o600 });
    chmodSync(file, 0o620);
    assert.match(new FactsCache({ storeDir: STORE, dir }).stats.unusable ?? "", /writable by others/);
    chmodSync(file, 0o600);
    if (process.getuid?.() === 0) {
      chownSync(file, 65534, 65534);
      assert.match(new FactsCache({ storeDir: STORE, dir }).stats.unusable ?? "", /not owned/);
      chownSync(file, 0, 0);
    }
    rmSync(file);
    writeFileSync(join(dir, "elsewhere"), buf, { mode: 0o600 });
    symlinkSync(join(dir, "elsewhere"), file);
    assert.equal(new FactsCache({ storeDir: STORE, dir }).stats.unusable, "unreadable");
    rmSync(file);
    assert.equal(new FactsCache({ storeDir: STORE, dir }).stats.unusable, "missing");
  });
});

describe("facts cache: plan on a closure that changes between runs", {
  skip: !haveNix() && "nix-instantiate or /bin/busybox is not installed",
}, () => {
  let s: DrvStore;
  let cacheDir: string;
  const roots: string[] = [];

  before(() => {
    s = makeDrvStore();
    cacheDir = mkdtempSync(join(tmpdir(), "nb-facts-plan-"));
    const env = { ...s.env };
    delete env["NIX_STATE_DIR"];
    for (const variant of [0, 1, 2]) {
      const file = join(s.dir, `closure-${variant}.nix`);
      writeFileSync(file, closureExpression(600, s.busybox, variant));
      roots.push(
        execFileSync("nix-instantiate", ["--store", s.store, file], {
          env,
          stdio: ["ignore", "pipe", "ignore"],
          timeout: 120_000,
        })
          .toString()
          .trim(),
      );
    }
  });
  after(() => {
    s?.cleanup();
    rmSync(cacheDir, { recursive: true, force: true });
  });

  async function plan(root: string, cache: FactsCache | null): Promise<PlanResult> {
    const v = await userView({ env: s.env, builders: `${s.dir}/m1 aarch64-linux,i686-linux - 2 1 kvm` });
    const ctx = routeContext(v, { store: s.store });
    const checker = await openValidity(ctx.store, "stdio");
    try {
      return await planClosure({
        roots: [root],
        ctx,
        valid: (p) => checker.valid(p),
        ...(cache ? { facts: cache } : {}),
      });
    } finally {
      await checker.close();
    }
  }
  const answer = (r: PlanResult) => ({ ...r, ms: null, cache: null });

  test("cold, warm, after a change: the same answer as without the cache, reading only what changed", async () => {
    const file = () => join(cacheDir, "plan-facts-nix-store.bin");
    // Cold: everything is read and the cache is written.
    const bare0 = await plan(roots[0]!, null);
    const c0 = new FactsCache({ storeDir: "/nix/store", dir: cacheDir });
    assert.equal(c0.stats.unusable, "missing");
    const cold = await plan(roots[0]!, c0);
    c0.save();
    assert.deepEqual(answer(cold), answer(bare0));
    assert.equal(cold.cache?.misses, bare0.closure);
    assert.equal(c0.stats.written, true);
    const mtime = statSync(file()).mtimeMs;
    const size = statSync(file()).size;

    // Warm, nothing changed: only the root is read, and the file is not rewritten.
    const c1 = new FactsCache({ storeDir: "/nix/store", dir: cacheDir });
    assert.equal(c1.stats.loaded, bare0.closure);
    const warm = await plan(roots[0]!, c1);
    c1.save();
    assert.deepEqual(answer(warm), answer(bare0));
    assert.equal(warm.cache?.misses, 1, "the root is always read from the store");
    assert.equal(warm.cache?.hits, bare0.closure - 1);
    assert.equal(c1.stats.written, false);
    assert.equal(statSync(file()).mtimeMs, mtime);

    // 1% of the derivations get a new leaf: the answer follows the change, only new paths are read.
    const bare1 = await plan(roots[1]!, null);
    const c2 = new FactsCache({ storeDir: "/nix/store", dir: cacheDir });
    const changed = await plan(roots[1]!, c2);
    c2.save();
    assert.deepEqual(answer(changed), answer(bare1));
    assert.ok(changed.cache!.misses < bare1.closure / 4, `read ${changed.cache!.misses} of ${bare1.closure}`);
    assert.ok(changed.cache!.hits > 0);
    assert.equal(c2.stats.written, true);
    assert.ok(statSync(file()).size > size, "the new derivations were added");

    // Both closures are now answered from the file, and a third variant still agrees.
    const c3 = new FactsCache({ storeDir: "/nix/store", dir: cacheDir });
    assert.deepEqual(answer(await plan(roots[0]!, c3)), answer(bare0));
    assert.deepEqual(answer(await plan(roots[1]!, c3)), answer(bare1));
    assert.equal(c3.stats.misses, 2);
    const bare2 = await plan(roots[2]!, null);
    assert.deepEqual(answer(await plan(roots[2]!, c3)), answer(bare2));

    // Over the size cap, the file keeps only the last run's derivations.
    const capped = mkdtempSync(join(tmpdir(), "nb-facts-cap-"));
    try {
      const k0 = new FactsCache({ storeDir: "/nix/store", dir: capped });
      await plan(roots[0]!, k0);
      k0.save();
      const k1 = new FactsCache({ storeDir: "/nix/store", dir: capped, maxEntries: bare1.closure + 10 });
      assert.deepEqual(answer(await plan(roots[1]!, k1)), answer(bare1));
      k1.save();
      assert.equal(k1.stats.written, true);
      assert.equal(new FactsCache({ storeDir: "/nix/store", dir: capped }).stats.loaded, bare1.closure);
    } finally {
      rmSync(capped, { recursive: true, force: true });
    }

    // A damaged file is rebuilt by the next run that reads.
    const bytes = readFileSync(file());
    writeFileSync(file(), bytes.subarray(0, bytes.length - 3), { mode: 0o600 });
    const c4 = new FactsCache({ storeDir: "/nix/store", dir: cacheDir });
    assert.equal(c4.stats.unusable, "not a facts file", "a truncated file does not deserialise");
    assert.deepEqual(answer(await plan(roots[0]!, c4)), answer(bare0));
    c4.save();
    assert.equal(new FactsCache({ storeDir: "/nix/store", dir: cacheDir }).stats.loaded, bare0.closure);
  });

  test("--cache-dir on a path others can write is refused (exit 2) before anything runs; a private one is used", async () => {
    const open = mkdtempSync(join(tmpdir(), "nb-facts-open-"));
    chmodSync(open, 0o777);
    try {
      const io = captureIo(s.env);
      await assert.rejects(
        runPlan({ builders: "", store: s.store, json: true, cacheDir: open }, [roots[0]!], io),
        (e: Error) => e.name === "Refusal" && /--cache-dir .*only this user and root/.test(e.message),
      );
      chmodSync(open, 0o700);
      const io2 = captureIo(s.env);
      await runPlan({ builders: "", store: s.store, json: true, cacheDir: open }, [roots[0]!], io2);
      const j = JSON.parse(io2.stdout);
      assert.equal(j.cache.misses, j.closure, "a cold cache: every derivation is read");
      assert.ok(
        readdirSync(open).some((f) => f.startsWith("plan-facts-")),
        "and the cache is written there",
      );
    } finally {
      rmSync(open, { recursive: true, force: true });
    }
  });

  test("--no-cache: the JSON says no cache was used", async () => {
    const io = captureIo(s.env);
    const code = await runPlan({ builders: "", store: s.store, json: true, cache: false }, [roots[0]!], io);
    assert.equal(code, 2, "the darwin derivations cannot be built here");
    assert.equal(JSON.parse(io.stdout).cache, null);
  });
});

describe("plan asks the store only about outputs on disk", {
  skip: !haveNix() && "nix-instantiate or /bin/busybox is not installed",
}, () => {
  test("built, never built, and a leftover that is on disk but not valid: the same answer as asking the store about every path", async () => {
    const s = makeDrvStore();
    try {
      const d = s.instantiate(`rec { a = mk "a" { }; b = dep [ a ] "b" { }; c = dep [ b ] "c" { }; }`, [
        "a",
        "b",
        "c",
      ]);
      s.build(d.a!);
      const v = await userView({ env: s.env, builders: "" });
      const ctx = routeContext(v, { store: s.store });
      // b's output path, on disk but never registered (what an interrupted build leaves).
      const show = execFileSync(
        "nix",
        ["--extra-experimental-features", "nix-command", "show-derivation", "--store", s.store, d.b!],
        { env: s.env, timeout: 60_000 },
      ).toString();
      const bOut = (Object.values(JSON.parse(show))[0] as { outputs: { out: { path: string } } }).outputs.out
        .path;
      writeFileSync(join(s.store, bOut), "leftover\n");
      const { pathsOnDisk } = await import("../../src/host/store.js");
      const checker = await openValidity(ctx.store, "stdio");
      const asked: string[][] = [];
      try {
        const all = await planClosure({ roots: [d.c!], ctx, valid: (p) => checker.valid(p) });
        const filtered = await planClosure({
          roots: [d.c!],
          ctx,
          valid: (p) => {
            const on = pathsOnDisk(p, ctx.store);
            asked.push(on);
            return checker.valid(on);
          },
        });
        assert.deepEqual({ ...filtered, ms: null }, { ...all, ms: null });
        assert.equal(all.valid, 1, "a is built");
        assert.equal(all.toBuild, 2, "b (a leftover on disk is not valid) and c");
        const askedPaths = asked.flat();
        assert.ok(askedPaths.includes(bOut), "the leftover on disk is asked about");
        assert.equal(askedPaths.length, 2, `only a's and b's outputs are on disk: ${askedPaths.join(" ")}`);
      } finally {
        await checker.close();
      }
    } finally {
      s.cleanup();
    }
  });
  test("top-down: a built derivation's inputs are never asked about; with and without the cache, before and after a change", async () => {
    const s = makeDrvStore();
    const dir = mkdtempSync(join(tmpdir(), "nb-facts-topdown-"));
    try {
      const d = s.instantiate(
        `rec { a = mk "a" { }; b = dep [ a ] "b" { }; c = dep [ b ] "c" { }; d = dep [ c ] "d" { };
          leaf = mk "leaf" { }; d2 = dep [ c leaf ] "d2" { }; }`,
        ["a", "b", "c", "d", "d2"],
      );
      s.build(d.c!);
      const v = await userView({ env: s.env, builders: "" });
      const ctx = routeContext(v, { store: s.store });
      const { isOnDisk } = await import("../../src/host/store.js");
      const checker = await openValidity(ctx.store, "stdio");
      try {
        const run = async (root: string, opts: { disk: boolean; cache: FactsCache | null }) => {
          const asked: string[] = [];
          const r = await planClosure({
            roots: [root],
            ctx,
            ...(opts.disk ? { onDisk: (p: string) => isOnDisk(p, ctx.store) } : {}),
            ...(opts.cache ? { facts: opts.cache } : {}),
            valid: (p) => {
              asked.push(...p);
              return checker.valid(p);
            },
          });
          opts.cache?.save();
          return { r: { ...r, ms: null, cache: null }, asked };
        };
        const cache = () => new FactsCache({ storeDir: "/nix/store", dir });
        const bare = await run(d.d!, { disk: false, cache: null });
        assert.equal(bare.r.closure, 2, "d and c are looked at; b and a, below a built c, are not read");
        assert.equal(bare.r.toBuild, 1, "d");
        assert.equal(bare.r.valid, 1, "c is built: b and a are not looked at");
        assert.equal(bare.asked.length, 2, `d's output, then c's: ${bare.asked.join(" ")}`);
        for (const c of [null, cache(), cache()]) {
          const x = await run(d.d!, { disk: true, cache: c });
          assert.deepEqual(x.r, bare.r);
          assert.equal(x.asked.length, 1, "only c's output is on disk, and only it is asked about");
          if (c) assert.equal(c.stats.hits + c.stats.misses, 2, "only d and c are read");
        }
        // A built root: only it is read, the file is neither needed nor rewritten.
        const file = join(dir, "plan-facts-nix-store.bin");
        const before = statSync(file).mtimeMs;
        const builtRoot = cache();
        const y = await run(d.c!, { disk: true, cache: builtRoot });
        assert.equal(y.r.valid, 1);
        assert.equal(y.r.toBuild, 0);
        assert.deepEqual(builtRoot.counts(), { hits: 0, misses: 1 });
        assert.equal(statSync(file).mtimeMs, before);
        const bare2 = await run(d.d2!, { disk: false, cache: null });
        assert.equal(bare2.r.toBuild, 2, "d2 and the new leaf");
        assert.equal(bare2.r.valid, 1);
        const warm2 = await run(d.d2!, { disk: true, cache: cache() });
        assert.deepEqual(warm2.r, bare2.r);
        assert.equal(warm2.asked.length, 1);
      } finally {
        await checker.close();
      }
    } finally {
      s.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
