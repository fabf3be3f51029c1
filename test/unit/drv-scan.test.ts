/**
 * The facts-only scanner (src/nix/drv-scan.ts) must agree exactly with parseDerivation: the same
 * outputs, input derivations, system and facts, or both an error (with the same message).
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { closureExpression } from "../../bench/make-closure.js";
import { readClosure, readScan } from "../../src/host/closure.js";
import { parseDerivation } from "../../src/nix/derivation.js";
import { scanDerivation } from "../../src/nix/drv-scan.js";
import { NixError } from "../../src/nix/errors.js";

const HAVE_NIX = existsSync("/bin/busybox") && spawnSync("nix-instantiate", ["--version"]).status === 0;

type Outcome =
  | { ok: true; value: Record<string, unknown> }
  | { ok: false; kind: string; message: string; file: string | null };

function failure(e: unknown): Outcome {
  if (!(e instanceof NixError)) throw e;
  return { ok: false, kind: e.kind, message: e.nixMessage, file: e.file };
}

function viaParse(bytes: Buffer, path?: string): Outcome {
  try {
    const d = parseDerivation(bytes.toString("utf8"), path);
    const outs = [...d.outputs];
    return {
      ok: true,
      value: {
        outputNames: outs.map(([n]) => n),
        outputPaths: outs.map(([, o]) => o.path),
        outputHashAlgos: outs.map(([, o]) => o.hashAlgo),
        outputHashes: outs.map(([, o]) => o.hash),
        inputDrvs: [...d.inputDrvs.keys()],
        inputOutputs: [...d.inputDrvs.values()].map((v) => [...v]),
        system: d.system,
        facts: { ...d.facts, requiredSystemFeatures: [...d.facts.requiredSystemFeatures] },
      },
    };
  } catch (e) {
    return failure(e);
  }
}

function viaScan(bytes: Buffer, path?: string): Outcome {
  // Scan a copy inside a larger buffer, so that offsets other than 0 are exercised too.
  const pad = Buffer.alloc(bytes.length + 7, 0x22);
  bytes.copy(pad, 3);
  try {
    const s = scanDerivation(pad, 3, 3 + bytes.length, path);
    return {
      ok: true,
      value: {
        outputNames: [...s.outputNames],
        outputPaths: [...s.outputPaths],
        outputHashAlgos: [...s.outputHashAlgos],
        outputHashes: [...s.outputHashes],
        inputDrvs: [...s.inputDrvs],
        inputOutputs: s.inputOutputs.map((v) => [...v]),
        system: s.system,
        facts: { ...s.facts, requiredSystemFeatures: [...s.facts.requiredSystemFeatures] },
      },
    };
  } catch (e) {
    return failure(e);
  }
}

function agree(bytes: Buffer | string, path?: string): Outcome {
  const b = typeof bytes === "string" ? Buffer.from(bytes, "utf8") : bytes;
  const p = viaParse(b, path);
  assert.deepEqual(viaScan(b, path), p, b.toString("utf8"));
  return p;
}

const minimal = (env: string, outputs = '("out","/nix/store/a-x","","")', inputs = "") =>
  `Derive([${outputs}],[${inputs}],[],"x86_64-linux","/bin/sh",[],[${env}])`;

const SAMPLE =
  'Derive([("dev","/nix/store/w-sa-dev","",""),("out","/nix/store/v-sa","","")],[("/nix/store/i-dep.drv",["out"]),("/nix/store/j-dep.drv",["dev","out"])],["/nix/store/b-busybox"],"aarch64-linux","/nix/store/b-busybox",["-c","echo \\"hi\\\\\\n\\""],[("__json","{\\"requiredSystemFeatures\\":[\\"kvm\\"],\\"preferLocalBuild\\":true}"),("out","/nix/store/v-sa")])';

describe("drv-scan agrees with parseDerivation: hand-written cases", () => {
  test("the cases of the derivation tests", () => {
    const cases = [
      minimal('("k","a\\"b\\\\c\\nd\\re\\tf\\qg")'),
      minimal('("a","x\\ty"),("b","plain"),("c","\\\\"),("d","")'),
      minimal('("preferLocalBuild","1"),("requiredSystemFeatures"," kvm\\tbig-parallel\\nkvm ")'),
      minimal('("preferLocalBuild","true")'),
      minimal('("preferLocalBuild","\\1"),("required\\SystemFeatures","a b")'),
      minimal('("preferLocalBuild","1"),("preferLocalBuild","0")'),
      minimal('("requiredSystemFeatures","x"),("requiredSystemFeatures","y z")'),
      minimal(`("__json",${JSON.stringify('{"requiredSystemFeatures":["kvm"],"preferLocalBuild":true}')})`),
      minimal(`("__json",${JSON.stringify('{"preferLocalBuild":"1"}')})`),
      minimal(`("__json",${JSON.stringify('{"requiredSystemFeatures":"kvm"}')})`),
      minimal(`("__json",${JSON.stringify("{bad")})`),
      minimal(`("__json",${JSON.stringify("[1]")})`),
      minimal(`("__json",${JSON.stringify('{"__proto__":{"preferLocalBuild":true}}')})`),
      minimal("", '("out","/nix/store/a-x","","")'),
      minimal("", '("out","","","")'),
      minimal("", '("out","/nix/store/a-x","sha256","abcd")'),
      minimal("", '("dev","/nix/store/a-x","sha256","abcd")'),
      minimal("", '("out","","r:sha256","")'),
      minimal("", '("out","","r:sha256","impure")'),
      minimal("", '("out","","r:sha256","imp\\ure")'),
      minimal("", '("a","/nix/store/a-x","",""),("b","","r:sha256","")'),
      minimal("", '("out","/nix/store/a-x","",""),("out","","","")'),
      minimal("", '("out","relative","","")'),
      minimal("", '("out","\\/nix/store/a-x","","")'),
      minimal("", ""),
      minimal(
        "",
        undefined,
        '("/nix/store/b.drv",["out"]),("/nix/store/a.drv",["dev"]),("/nix/store/b.drv",["x"])',
      ),
      minimal("", undefined, '("/nix/store/a.drv",[]),("/nix/store/a.drv",["out","dev"])'),
      minimal("", undefined, '("\\/nix/store/a.drv",["o\\ut"])'),
      minimal("", undefined, '("rel.drv",["out"])'),
      'Derive([("out","/nix/store/a-x","sha256","ab")],[],[],"builtin","builtin:fetchurl",[],[])',
      'Derive([("out","/nix/store/a-x","sha256","ab")],[],[],"builtin","built\\in:fetchurl",[],[])',
      'Derive([("out","/nix/store/a-x","sha256","ab")],[],[],"builtin","builtin",[],[])',
      'Derive([("out","/nix/store/a-x","","")],[],[],"x86_64-linux","/bin/sh",[],[]) trailing junk',
      'Derive([("out","/nix/store/a-é","","")],[],[],"x86_64-☃","/bin/sh",["\\é"],[("k","\\☃")])',
      "",
      "Derive([",
      'Derive([("out","/nix/store/a-x","","")]',
      'Derive([("out","/nix/store/a-x","","")];',
      'Derive([],[],["relative"],"s","b",[],[])',
      'Derive([],[],["\\/abs"],"s","b",[],[])',
      'Derive([("out","/nix/store/a-x","","")],[],[],"s","b",[],[("k","unterminated',
      'Derive([],[],[],"s","b",[],[("k","v\\',
      'DrvWithVersion("xp-dyn-drv",[])',
      '\uFEFFDerive([],[],[],"s","b",[],[])',
      SAMPLE,
    ];
    for (const c of cases) {
      agree(c);
      agree(c, "/nix/store/z-bad.drv");
    }
    // Invalid UTF-8 in strings and around escapes.
    const bad = (s: string, ...bytes: number[]) => {
      const [a, b] = s.split("@");
      return Buffer.concat([Buffer.from(a!, "latin1"), Buffer.from(bytes), Buffer.from(b!, "latin1")]);
    };
    agree(bad('Derive([("out","/nix/store/a-x","","")],[],[],"x@","/bin/sh",[],[])', 0xe2, 0x82));
    agree(bad('Derive([("out","/nix/store/a-x","","")],[],[],"x\\@","/bin/sh",[],[])', 0xff));
    agree(bad('Derive([("out","/nix/store/a-x","","")],[],[],"x\\@\\n","/bin/sh",[],[])', 0xe2, 0x82));
    agree(bad('Derive([("out","/nix/store/a-@","","")],[],[],"x","/bin/sh",[],[])', 0xf0, 0x9f, 0x98));
  });
});

describe("drv-scan agrees with parseDerivation: fast-check", () => {
  test("mutations of a real derivation: truncation, deletion, insertion, replacement", () => {
    fc.assert(
      fc.property(
        fc.nat(SAMPLE.length),
        fc.nat(SAMPLE.length),
        fc.constantFrom('"', "\\", ",", "(", ")", "[", "]", "x", "{", "/", "é", "\n", "1"),
        (a, b, ch) => {
          agree(SAMPLE.slice(0, a));
          agree(SAMPLE.slice(0, a) + SAMPLE.slice(Math.min(SAMPLE.length, a + 1 + (b % 5))));
          agree(SAMPLE.slice(0, a) + ch + SAMPLE.slice(a));
          agree(SAMPLE.slice(0, a) + ch + SAMPLE.slice(a + 1), "/nix/store/z-m.drv");
        },
      ),
      { numRuns: 2000 },
    );
  });
  test("strings over the ATerm alphabet", () => {
    const alphabet = fc.constantFrom(...'Derive([]()",\\/abnrt01{}:out'.split(""));
    fc.assert(
      fc.property(fc.array(alphabet, { maxLength: 200 }), (cs) => {
        agree(`Derive([${cs.join("")}`);
      }),
      { numRuns: 2000 },
    );
  });
  test("random bytes after a valid prefix", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(SAMPLE.length), (bytes, a) => {
        agree(Buffer.concat([Buffer.from(SAMPLE.slice(0, a), "utf8"), bytes]));
      }),
      { numRuns: 2000 },
    );
  });
  test("generated derivations: outputs, inputs, env keys and structured attrs", () => {
    const str = fc.string({ maxLength: 12 });
    const q = (s: string) => `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
    const key = fc.constantFrom(
      "requiredSystemFeatures",
      "preferLocalBuild",
      "__json",
      "builder",
      "out",
      "x",
    );
    const value = fc.oneof(
      str,
      fc.constantFrom("1", "0", " kvm big-parallel ", "kvm\tkvm"),
      fc
        .record({
          requiredSystemFeatures: fc.option(fc.oneof(fc.array(str, { maxLength: 3 }), str), {
            nil: undefined,
          }),
          preferLocalBuild: fc.option(fc.oneof(fc.boolean(), str), { nil: undefined }),
        })
        .map((o) => JSON.stringify(o)),
    );
    const output = fc.tuple(
      fc.constantFrom("out", "dev", "lib"),
      fc.constantFrom("", "/nix/store/p-x", "rel"),
      fc.constantFrom("", "sha256", "r:sha256"),
      fc.constantFrom("", "abcd", "impure"),
    );
    const input = fc.tuple(
      fc.constantFrom("/nix/store/a.drv", "/nix/store/b.drv", "/nix/store/c.drv"),
      fc.array(fc.constantFrom("out", "dev"), { maxLength: 2 }),
    );
    fc.assert(
      fc.property(
        fc.array(output, { maxLength: 3 }),
        fc.array(input, { maxLength: 4 }),
        fc.constantFrom("x86_64-linux", "aarch64-linux", "builtin"),
        fc.constantFrom("/bin/sh", "builtin:fetchurl"),
        fc.array(fc.tuple(key, value), { maxLength: 5 }),
        (outs, ins, system, builder, env) => {
          const text = `Derive([${outs.map((o) => `(${o.map(q).join(",")})`).join(",")}],[${ins
            .map(([p, os]) => `(${q(p)},[${os.map(q).join(",")}])`)
            .join(",")}],["/nix/store/s"],${q(system)},${q(builder)},["-c","x"],[${env
            .map(([k, v]) => `(${q(k)},${q(v)})`)
            .join(",")}])`;
          agree(text);
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe("drv-scan agrees with parseDerivation on real .drv files", { skip: !HAVE_NIX }, () => {
  let dir = "";
  let storeReal = "";
  let root = "";
  const env = { ...process.env, NIX_CONFIG: "experimental-features = nix-command ca-derivations" };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "nb-scan-"));
    mkdirSync(join(dir, "conf"));
    writeFileSync(join(dir, "conf", "nix.conf"), "fsync-metadata = false\n");
    Object.assign(env, { NIX_CONF_DIR: join(dir, "conf"), NIX_USER_CONF_FILES: "" });
    const store = join(dir, "st");
    storeReal = join(store, "nix", "store");
    const bb = execFileSync("nix-store", ["--store", store, "--add", "/bin/busybox"], { env })
      .toString()
      .trim();
    // A generated closure like the benchmark's (mixed systems, features, structured attrs, fixed outputs).
    writeFileSync(join(dir, "closure.nix"), closureExpression(300, bb));
    root = execFileSync("nix-instantiate", ["--store", store, join(dir, "closure.nix")], {
      env,
      stdio: ["ignore", "pipe", "ignore"],
    })
      .toString()
      .trim();
    // The derivations of the derivation tests (CA, escapes, structured attrs, fixed, builtin, deferred).
    const expr = `
let
  bb = builtins.storePath "${bb}";
  mk = a: derivation ({ system = "x86_64-linux"; builder = bb; } // a);
  ca = mk { name = "ca"; __contentAddressed = true; outputHashMode = "recursive"; outputHashAlgo = "sha256"; args = ["sh" "-c" "echo > $out"]; };
  plain = mk { name = "plain"; args = ["sh" "-c" "echo \\"q\\" '\\\\' \\n\\t\\r > $out"]; weird = "a\\"b\\\\c\\nd\\te\\rf \${"é"} ☃"; };
in {
  inherit ca plain;
  features = mk { name = "features"; requiredSystemFeatures = [ "kvm" "big-parallel" ]; preferLocalBuild = true; };
  structured = mk { name = "structured"; system = "aarch64-linux"; __structuredAttrs = true; requiredSystemFeatures = [ "kvm" ];
    preferLocalBuild = true; outputs = [ "out" "dev" ]; nested = { a = [ 1 2.5 true null "s\\"q\\n" ]; }; };
  fixed = mk { name = "fixed"; outputHash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; outputHashMode = "flat"; outputHashAlgo = "sha256"; };
  fixedRec = mk { name = "fixed-rec"; outputHash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; outputHashMode = "recursive"; outputHashAlgo = "sha256"; };
  fetch = derivation { name = "fetch"; system = "builtin"; builder = "builtin:fetchurl"; url = "http://example.invalid/x";
    outputHash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; outputHashMode = "flat"; outputHashAlgo = "sha256"; };
  deferred = mk { name = "deferred"; args = [ "\${ca}" ]; };
  depends = mk { name = "depends"; args = [ "\${plain}" ]; multi = [ "a" "b" ]; };
}`;
    writeFileSync(join(dir, "e.nix"), expr);
    execFileSync("nix-instantiate", ["--store", store, join(dir, "e.nix")], {
      env,
      stdio: ["ignore", "pipe", "ignore"],
    });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("every drv in the store: scan = parse, and readScan = scan of the file", () => {
    const drvs = readdirSync(storeReal).filter((f) => f.endsWith(".drv"));
    assert.ok(drvs.length >= 309, `only ${drvs.length} drvs`);
    for (const f of drvs) {
      const p = `/nix/store/${f}`;
      const bytes = readFileSync(join(storeReal, f));
      const r = agree(bytes, p);
      assert.equal(r.ok, true, p);
      assert.deepEqual(
        { ...readScan(p, { realStoreDir: storeReal }) },
        { ...scanDerivation(bytes, 0, bytes.length, p) },
      );
    }
  });

  test("the closure read by scanning matches a walk with parseDerivation", async () => {
    const loc = { realStoreDir: storeReal };
    for (const mode of ["sync", "pool"] as const) {
      const c = await readClosure([root], { loc, mode, batchSize: 50, onBatch: () => {} });
      assert.equal(c.size, 300);
      for (const node of c.nodes) {
        const d = parseDerivation(readFileSync(join(storeReal, node.path.slice(11)), "utf8"), node.path);
        assert.equal(node.system, d.system);
        assert.deepEqual([...node.requiredFeatures], [...d.facts.requiredSystemFeatures]);
        assert.equal(node.preferLocalBuild, d.facts.preferLocalBuild);
        assert.equal(node.isBuiltin, d.facts.isBuiltin);
        assert.deepEqual([...node.outputNames], [...d.outputs.keys()]);
        assert.deepEqual(
          [...node.outputPaths],
          [...d.outputs.values()].map((o) => o.path),
        );
        const deps = [...d.inputDrvs];
        assert.deepEqual(
          c.inputsOf(node).map((id) => c.nodes[id]!.path),
          deps.map(([p]) => p),
        );
        assert.deepEqual(
          c.inputOutputsOf(node).map((o) => [...o]),
          deps.map(([, o]) => [...o]),
        );
      }
    }
  });

  test("errors: a missing drv, and a truncated one, read like readDerivation's", () => {
    const loc = { realStoreDir: storeReal };
    assert.throws(
      () => readScan("/nix/store/00000000000000000000000000000000-no.drv", loc),
      (e: unknown) =>
        e instanceof NixError &&
        e.kind === "system" &&
        /^getting status of '.*-no\.drv': /.test(e.nixMessage),
    );
    const f = join(storeReal, "11111111111111111111111111111111-cut.drv");
    writeFileSync(f, readFileSync(join(storeReal, root.slice(11))).subarray(0, 100));
    assert.throws(
      () => readScan("/nix/store/11111111111111111111111111111111-cut.drv", loc),
      (e: unknown) => e instanceof NixError && e.kind === "format" && /unexpected EOF/.test(e.nixMessage),
    );
    rmSync(f);
  });
});
