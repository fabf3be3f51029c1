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
import { readDerivation, readDerivationClosure } from "../../src/host/derivation-read.js";
import {
  type ParsedDerivation,
  parseDerivation,
  realPathOf,
  tryParseDerivation,
} from "../../src/nix/derivation.js";
import { NixError } from "../../src/nix/errors.js";

const HAVE_NIX = existsSync("/usr/bin/nix-instantiate") && existsSync("/bin/busybox");

/** The JSON `nix show-derivation` (2.8) prints for one derivation, rebuilt from our parse. */
function toShowJson(d: ParsedDerivation): unknown {
  const outputs: Record<string, Record<string, string>> = {};
  for (const [name, o] of d.outputs) {
    const j: Record<string, string> = {};
    if (o.path !== "") j.path = o.path;
    if (o.hashAlgo !== "") j.hashAlgo = o.hashAlgo;
    if (o.hash !== "") j.hash = o.hash;
    outputs[name] = j;
  }
  return {
    outputs,
    inputSrcs: [...d.inputSrcs],
    inputDrvs: Object.fromEntries([...d.inputDrvs].map(([k, v]) => [k, [...v]])),
    system: d.system,
    builder: d.builder,
    args: [...d.args],
    env: Object.fromEntries(d.env),
  };
}

describe("ATerm parsing (hand-written)", () => {
  const minimal = (env: string, outputs = '("out","/nix/store/a-x","","")') =>
    `Derive([${outputs}],[],[],"x86_64-linux","/bin/sh",[],[${env}])`;

  test('escapes: \\" \\\\ \\n \\r \\t and any other escaped char', () => {
    const d = parseDerivation(minimal('("k","a\\"b\\\\c\\nd\\re\\tf\\qg")'));
    assert.equal(d.env.get("k"), 'a"b\\c\nd\re\tfqg');
  });
  test("strings after an escaped one still take the fast path correctly", () => {
    const d = parseDerivation(minimal('("a","x\\ty"),("b","plain"),("c","\\\\"),("d","")'));
    assert.deepEqual(
      [...d.env],
      [
        ["a", "x\ty"],
        ["b", "plain"],
        ["c", "\\"],
        ["d", ""],
      ],
    );
  });
  test('non-structured facts: requiredSystemFeatures tokenized, preferLocalBuild = "1"', () => {
    const d = parseDerivation(
      minimal('("preferLocalBuild","1"),("requiredSystemFeatures"," kvm\\tbig-parallel\\nkvm ")'),
    );
    assert.deepEqual(d.facts.requiredSystemFeatures, ["big-parallel", "kvm"]);
    assert.equal(d.facts.preferLocalBuild, true);
    assert.equal(parseDerivation(minimal('("preferLocalBuild","true")')).facts.preferLocalBuild, false);
  });
  test("structured attrs: types are checked like Nix", () => {
    const sa = (json: string) => minimal(`("__json",${JSON.stringify(json)})`);
    const d = parseDerivation(sa('{"requiredSystemFeatures":["kvm"],"preferLocalBuild":true}'));
    assert.deepEqual(d.facts.requiredSystemFeatures, ["kvm"]);
    assert.equal(d.facts.preferLocalBuild, true);
    assert.throws(() => parseDerivation(sa('{"preferLocalBuild":"1"}')), /must be a Boolean/);
    assert.throws(() => parseDerivation(sa('{"requiredSystemFeatures":"kvm"}')), /must be a list of strings/);
    assert.throws(() => parseDerivation(sa("{bad")), /cannot process __json attribute/);
  });
  test("output kinds and derived type", () => {
    const f = (o: string) => parseDerivation(minimal("", o)).facts;
    assert.equal(f('("out","/nix/store/a-x","","")').type, "inputAddressed");
    assert.equal(f('("out","","","")').type, "deferred");
    assert.equal(f('("out","/nix/store/a-x","sha256","abcd")').type, "fixed");
    assert.equal(f('("out","/nix/store/a-x","sha256","abcd")').isFixedOutput, true);
    assert.equal(f('("out","","r:sha256","")').type, "floating");
    assert.equal(f('("out","","r:sha256","impure")').type, "impure");
    assert.deepEqual(f('("out","","r:sha256","")').requiredSystemFeatures, ["ca-derivations"]);
    assert.deepEqual(f('("out","","","")').requiredSystemFeatures, ["ca-derivations"]);
    assert.deepEqual(f('("out","/nix/store/a-x","sha256","abcd")').requiredSystemFeatures, []);
    assert.equal(f('("a","/nix/store/a-x","",""),("b","","r:sha256","")').type, "invalid");
  });
  test("builtin", () => {
    const d = parseDerivation(
      'Derive([("out","/nix/store/a-x","sha256","ab")],[],[],"builtin","builtin:fetchurl",[],[])',
    );
    assert.equal(d.facts.isBuiltin, true);
  });
  test("errors read like Nix's and are NixErrors", () => {
    const cases: [string, RegExp][] = [
      ["", /expected string 'Derive\(\['/],
      ["Derive([", /unexpected EOF/],
      ['Derive([("out","/nix/store/a-x","","")]', /unexpected EOF/],
      ['Derive([("out","/nix/store/a-x","","")];', /expected char ','/],
      ['Derive([],[],["relative"],"s","b",[],[])', /bad path 'relative' in derivation/],
      ['Derive([("out","/nix/store/a-x","","")],[],[],"s","b",[],[("k","unterminated', /unexpected EOF/],
      ['Derive([],[],[],"s","b",[],[("k","v\\', /unexpected EOF/],
      ['DrvWithVersion("xp-dyn-drv",[])', /not supported/],
    ];
    for (const [text, re] of cases) {
      const r = tryParseDerivation(text, "/nix/store/z-bad.drv");
      assert.equal(r.ok, false, text);
      if (!r.ok) {
        assert.ok(r.error instanceof NixError);
        assert.match(r.error.nixMessage, /^error parsing derivation '\/nix\/store\/z-bad\.drv': /);
        assert.match(r.error.nixMessage, re, text);
      }
    }
  });
  test("realPathOf maps a logical store path into a chroot store", () => {
    assert.equal(
      realPathOf("/nix/store/a-x.drv", { realStoreDir: "/tmp/s/nix/store" }),
      "/tmp/s/nix/store/a-x.drv",
    );
    assert.equal(realPathOf("/nix/store/a-x.drv"), "/nix/store/a-x.drv");
  });
});

describe("fuzz: anything in, a result or a NixError out", () => {
  const sample =
    'Derive([("dev","/nix/store/w-sa-dev","",""),("out","/nix/store/v-sa","","")],[("/nix/store/i-dep.drv",["out"])],["/nix/store/b-busybox"],"aarch64-linux","/nix/store/b-busybox",["-c","echo \\"hi\\\\\\n\\""],[("__json","{\\"requiredSystemFeatures\\":[\\"kvm\\"],\\"preferLocalBuild\\":true}"),("out","/nix/store/v-sa")])';
  const check = (text: string): void => {
    try {
      parseDerivation(text);
    } catch (e) {
      if (!(e instanceof NixError)) throw e;
      // A bug (TypeError etc.) would be wrapped as an internal error; the fuzzer must not find any.
      if (e.nixMessage.includes("internal parser error")) throw e;
    }
  };
  test("the sample parses", () => {
    const d = parseDerivation(sample);
    assert.deepEqual(d.args, ["-c", 'echo "hi\\\n"']);
    assert.deepEqual(d.facts.requiredSystemFeatures, ["kvm"]);
  });
  test("random strings", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 300 }), (s) => check(s)),
      { numRuns: 3000 },
    );
  });
  test("strings over the ATerm alphabet", () => {
    const alphabet = fc.constantFrom(...'Derive([]()",\\/abnrt01{}:'.split(""));
    fc.assert(
      fc.property(fc.array(alphabet, { maxLength: 200 }), (cs) => check(`Derive([${cs.join("")}`)),
      { numRuns: 3000 },
    );
  });
  test("mutations of a real derivation: truncation, deletion, insertion", () => {
    fc.assert(
      fc.property(
        fc.nat(sample.length),
        fc.nat(sample.length),
        fc.constantFrom('"', "\\", ",", "(", ")", "[", "]", "x", "{"),
        (a, b, ch) => {
          check(sample.slice(0, a));
          check(sample.slice(0, a) + sample.slice(Math.min(sample.length, a + 1 + (b % 5))));
          check(sample.slice(0, a) + ch + sample.slice(a));
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe("real .drv files from nix-instantiate, checked against nix show-derivation", {
  skip: !HAVE_NIX,
}, () => {
  let root = "";
  let storeReal = "";
  let drvs: string[] = [];
  let shown: Record<string, unknown> = {};
  const byName = new Map<string, string>();
  const env = { ...process.env, NIX_CONFIG: "experimental-features = nix-command ca-derivations" };

  before(() => {
    root = mkdtempSync(join(tmpdir(), "nb-drv-"));
    mkdirSync(join(root, "conf"));
    writeFileSync(join(root, "conf", "nix.conf"), "");
    Object.assign(env, { NIX_CONF_DIR: join(root, "conf"), NIX_USER_CONF_FILES: "" });
    const store = join(root, "st");
    storeReal = join(store, "nix", "store");
    const bb = execFileSync("nix-store", ["--store", store, "--add", "/bin/busybox"], { env })
      .toString()
      .trim();
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
    writeFileSync(join(root, "e.nix"), expr);
    const out = execFileSync("nix-instantiate", ["--store", store, join(root, "e.nix")], {
      env,
      stdio: ["ignore", "pipe", "ignore"],
    });
    const tops = out.toString().trim().split("\n");
    const r = spawnSync("nix", ["show-derivation", "--store", store, "-r", ...tops], {
      env,
      maxBuffer: 1 << 26,
    });
    assert.equal(r.status, 0, r.stderr.toString());
    shown = JSON.parse(r.stdout.toString()) as Record<string, unknown>;
    drvs = readdirSync(storeReal)
      .filter((f) => f.endsWith(".drv"))
      .map((f) => `/nix/store/${f}`);
    for (const d of drvs) byName.set(d.replace(/^\/nix\/store\/[a-z0-9]{32}-/, "").replace(/\.drv$/, ""), d);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  const get = (name: string): ParsedDerivation =>
    readDerivation(byName.get(name)!, { realStoreDir: storeReal });

  test("every drv in the store equals nix show-derivation", () => {
    assert.ok(drvs.length >= 9, `only ${drvs.length} drvs`);
    assert.deepEqual(new Set(Object.keys(shown)), new Set(drvs));
    for (const p of drvs)
      assert.deepEqual(toShowJson(readDerivation(p, { realStoreDir: storeReal })), shown[p], p);
  });
  test("escapes survive: env and args", () => {
    const d = get("plain");
    assert.equal(d.env.get("weird"), 'a"b\\c\nd\te\rf é ☃');
    assert.deepEqual(d.args, ["sh", "-c", "echo \"q\" '\\' \n\t\r > $out"]);
  });
  test("requiredSystemFeatures and preferLocalBuild (non-structured)", () => {
    const f = get("features").facts;
    assert.deepEqual(f.requiredSystemFeatures, ["big-parallel", "kvm"]);
    assert.equal(f.preferLocalBuild, true);
    assert.equal(get("plain").facts.preferLocalBuild, false);
  });
  test("structured attrs", () => {
    const d = get("structured");
    assert.ok(d.structuredAttrs !== null);
    assert.deepEqual((d.structuredAttrs as { nested: unknown }).nested, { a: [1, 2.5, true, null, 's"q\n'] });
    assert.deepEqual(d.facts.requiredSystemFeatures, ["kvm"]);
    assert.equal(d.facts.preferLocalBuild, true);
    assert.deepEqual([...d.outputs.keys()], ["dev", "out"]);
    assert.equal(d.system, "aarch64-linux");
  });
  test("fixed-output, flat and recursive", () => {
    assert.equal(get("fixed").facts.isFixedOutput, true);
    assert.equal(get("fixed-rec").facts.isFixedOutput, true);
    assert.equal(get("fixed-rec").outputs.get("out")!.hashAlgo, "r:sha256");
    assert.equal(get("plain").facts.isFixedOutput, false);
  });
  test("floating CA and deferred derivations require ca-derivations", () => {
    assert.equal(get("ca").facts.type, "floating");
    assert.deepEqual(get("ca").facts.requiredSystemFeatures, ["ca-derivations"]);
    assert.equal(get("deferred").facts.type, "deferred");
    assert.deepEqual(get("deferred").facts.requiredSystemFeatures, ["ca-derivations"]);
  });
  test("builtin:fetchurl", () => {
    const f = get("fetch").facts;
    assert.equal(f.isBuiltin, true);
    assert.equal(f.isFixedOutput, true);
    assert.equal(get("fetch").system, "builtin");
  });
  test("closure walk", () => {
    const c = readDerivationClosure([byName.get("depends")!], { realStoreDir: storeReal });
    assert.deepEqual(new Set(c.keys()), new Set([byName.get("depends")!, byName.get("plain")!]));
    assert.deepEqual([...c.get(byName.get("depends")!)!.inputDrvs.values()], [["out"]]);
  });
  test("a missing drv is a NixError", () => {
    assert.throws(
      () => readDerivation("/nix/store/00000000000000000000000000000000-no.drv", { realStoreDir: storeReal }),
      (e: unknown) => e instanceof NixError && e.kind === "system",
    );
  });
  test("files are read straight from the store directory (no Nix process)", () => {
    const p = byName.get("plain")!;
    assert.equal(
      readFileSync(realPathOf(p, { realStoreDir: storeReal }), "utf8").startsWith("Derive(["),
      true,
    );
  });
});
