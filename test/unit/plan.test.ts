/**
 * `nix-builders plan` on real closures written by nix-instantiate into a temporary chroot store:
 * validity from the store (nix-daemon --stdio and nix-store --check-validity agree), unbuildable
 * derivations named with their reason, postponed-forever cases, installables through nix-instantiate.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { routeContext } from "../../src/app/route-context.js";
import { openValidity } from "../../src/app/store-validity.js";
import { userView } from "../../src/app/view.js";
import { planClosure, runPlan } from "../../src/commands/plan.js";
import { isStorePath, resolveStore } from "../../src/host/store.js";
import { captureIo } from "../support/capture-io.js";
import { type DrvStore, haveNix, makeDrvStore, PRELUDE } from "../support/drv-store.js";

// biome-ignore lint/suspicious/noExplicitAny: the JSON document under test
type Json = any;

const SKIP = !haveNix() && "nix-instantiate or /bin/busybox is not installed";

// root ─┬─ cuda (needs cuda) ── base
//       ├─ arm (aarch64-linux) ── base
//       ├─ pl (preferLocalBuild)
//       └─ mid ── base
const CLOSURE = `rec {
  base = mk "base" { };
  cuda = dep [ base ] "cuda" { requiredSystemFeatures = [ "cuda" ]; };
  arm = dep [ base ] "arm" { system = "aarch64-linux"; };
  pl = mk "pl" { preferLocalBuild = true; };
  mid = dep [ base ] "mid" { };
  root = dep [ cuda arm pl mid ] "root" { };
  top = dep [ root ] "top" { };
}`;

describe("plan", { skip: SKIP }, () => {
  let s: DrvStore;
  let d: Record<string, string>;
  let m1: string;

  before(() => {
    s = makeDrvStore();
    m1 = `${s.dir}/m1`;
    d = s.instantiate(CLOSURE, ["base", "cuda", "arm", "pl", "mid", "root", "top"]);
  });
  after(() => s?.cleanup());

  async function plan(args: string[], builders: string, extra: Record<string, unknown> = {}) {
    const io = captureIo(s.env);
    const code = await runPlan({ builders, store: s.store, json: true, ...extra }, args, io);
    return { code, json: JSON.parse(io.stdout) as Json, io };
  }

  test("a derivation needing a feature no builder has: exit 2, named with the reason", async () => {
    const { code, json } = await plan([d.root!], `${m1} aarch64-linux - 2 1 kvm`);
    assert.equal(code, 2);
    assert.equal(json.closure, 6);
    assert.equal(json.toBuild, 6);
    assert.equal(json.valid, 0);
    assert.equal(json.routingIgnoresLoad, true);
    assert.equal(json.unbuildable.length, 1);
    const u = json.unbuildable[0];
    assert.equal(u.drvPath, d.cuda);
    assert.equal(u.kind, "none");
    assert.deepEqual(u.requiredFeatures, ["cuda"]);
    assert.equal(
      u.reason,
      `${m1}: system x86_64-linux not in [aarch64-linux], feature cuda not supported; local: feature cuda not in system-features [kvm]`,
    );
    assert.equal(
      u.message,
      `a 'x86_64-linux' with features {cuda} is required to build '${d.cuda}', but I am a 'x86_64-linux' with features {kvm}`,
    );
    // root depends on it.
    assert.equal(json.blocked, 1);
    const by = Object.fromEntries(json.builders.map((b: Json) => [b.builder, b]));
    assert.deepEqual(by[m1], { builder: m1, count: 1, systems: { "aarch64-linux": 1 }, features: {} });
    assert.equal(by.local.count, 4);
    assert.deepEqual(by.local.systems, { "x86_64-linux": 4 });
  });

  test("everything buildable: exit 0, text summary", async () => {
    const io = captureIo(s.env);
    const code = await runPlan(
      { builders: `${m1} aarch64-linux,x86_64-linux - 2 1 cuda`, store: s.store },
      [d.root!],
      io,
    );
    assert.equal(code, 0);
    assert.match(io.stdout, /6 derivations looked at from 1 root: 0 already built, 6 to build\./);
    assert.match(io.stdout, /Every derivation to build has a builder\./);
    assert.match(io.stdout, /Routing ignores load/);
  });

  test("maxJobs 0 as the only machine that could take it: postponed forever, unbuildable", async () => {
    const { code, json } = await plan([d.cuda!], `${m1} x86_64-linux - 0 1 cuda`);
    assert.equal(code, 2);
    assert.equal(json.unbuildable.length, 1);
    assert.equal(json.unbuildable[0].kind, "postponed-forever");
    assert.equal(json.unbuildable[0].message, `waiting for a machine to build '${d.cuda}'`);
    assert.match(
      json.unbuildable[0].reason,
      /^postponed forever: only .*m1 can take it and it has maxJobs 0/,
    );
  });

  test("local max-jobs = 0 and no builder: Nix's stall error", async () => {
    const t = makeDrvStore(["max-jobs = 0"]);
    try {
      const x = t.instantiate(`{ a = mk "a" { }; }`, ["a"]);
      const io = captureIo(t.env);
      const code = await runPlan({ builders: "", store: t.store, json: true }, [x.a!], io);
      assert.equal(code, 2);
      const u = JSON.parse(io.stdout).unbuildable[0];
      assert.equal(u.drvPath, x.a);
      assert.match(
        u.message,
        /^unable to start any build; either increase '--max-jobs' or enable remote builds\./,
      );
      assert.match(u.reason, /no remote builders are configured; local: max-jobs is 0/);
    } finally {
      t.cleanup();
    }
  });

  test("valid outputs prune the closure: a built input and its inputs are not routed", async () => {
    const t = makeDrvStore();
    try {
      const x = t.instantiate(CLOSURE, ["base", "mid", "root"]);
      t.build(x.mid!); // builds base and mid locally with the real nix-store --realise
      const io = captureIo(t.env);
      const code = await runPlan({ builders: "", store: t.store, json: true }, [x.root!], io);
      const json = JSON.parse(io.stdout);
      assert.equal(json.closure, 6);
      // mid is valid; base is valid too but still reached through cuda and arm.
      assert.equal(json.valid, 2);
      assert.equal(json.toBuild, 4); // root, cuda, arm, pl
      assert.equal(code, 2); // cuda and arm: nowhere
      assert.deepEqual(json.unbuildable.map((u: Json) => u.drvPath.replace(/^.*-/, "")).sort(), [
        "arm.drv",
        "cuda.drv",
      ]);

      // Both validity methods give the same answer on the same store.
      const v = await userView({ env: t.env });
      const target = routeContext(v, { store: t.store }).store;
      const outs = [`${t.store}/x`, x.base!, x.mid!];
      const all = new Set<string>();
      for (const m of ["stdio", "nix-store"] as const) {
        const c = await openValidity(target, m);
        try {
          const got = await c.valid(outs);
          all.add(JSON.stringify([...got].sort()));
        } finally {
          await c.close();
        }
      }
      assert.equal(all.size, 1);
    } finally {
      t.cleanup();
    }
  });

  test("installables: a .nix file goes through nix-instantiate", async () => {
    const file = `${s.dir}/one.nix`;
    writeFileSync(file, `let ${PRELUDE(s.busybox)} in mk "from-file" { system = "aarch64-linux"; }`);
    const { code, json } = await plan([file], `${m1} aarch64-linux - 1 1`);
    assert.equal(code, 0);
    assert.equal(json.roots.length, 1);
    assert.match(json.roots[0], /-from-file\.drv$/);
    assert.equal(json.builders[0].builder, m1);
  });

  test("a GC root, a symlink or a chain of links to a .drv is that derivation, as for nix show-derivation", async () => {
    const dir = mkdtempSync(join(s.dir, "links-"));
    const nixEnv = { ...s.env };
    delete nixEnv["NIX_STATE_DIR"];
    // A real GC root made by Nix 2.8 (no .drv suffix), a link, a relative chain, a `..` in the argument.
    execFileSync(
      "nix-instantiate",
      [
        "--store",
        s.store,
        "--add-root",
        join(dir, "gcroot"),
        "-E",
        `let ${PRELUDE(s.busybox)} in mk "rooted" { system = "aarch64-linux"; }`,
      ],
      { env: nixEnv, stdio: ["ignore", "pipe", "pipe"], timeout: 60_000 },
    );
    symlinkSync(d.mid!, join(dir, "link.drv"));
    mkdirSync(join(dir, "sub"));
    symlinkSync("../link.drv", join(dir, "sub", "rel"));
    const args = [
      join(dir, "gcroot"),
      join(dir, "link.drv"),
      join(dir, "sub", "rel"),
      join(dir, "sub", "..", "sub", "rel"),
    ];
    // What real Nix 2.8 says each argument is.
    const nixSays = args.map((a) => {
      const out = execFileSync(
        "nix",
        ["--extra-experimental-features", "nix-command", "--store", s.store, "show-derivation", a],
        {
          env: nixEnv,
          encoding: "utf8",
          timeout: 60_000,
        },
      );
      return Object.keys(JSON.parse(out))[0];
    });
    assert.match(nixSays[0]!, /-rooted\.drv$/);
    assert.equal(nixSays[1], d.mid);
    const { code, json } = await plan(args, `${m1} aarch64-linux,x86_64-linux - 1 1`);
    assert.equal(code, 0);
    assert.deepEqual(json.roots, [...new Set(nixSays)]);
    // A link that leaves the store still goes to nix-instantiate (here: a file that is an expression).
    writeFileSync(join(dir, "expr.nix"), `let ${PRELUDE(s.busybox)} in mk "via-expr" { }`);
    symlinkSync("expr.nix", join(dir, "expr-link.drv"));
    const viaExpr = await plan([join(dir, "expr-link.drv")], `${m1} x86_64-linux - 1 1`);
    assert.match(viaExpr.json.roots[0], /-via-expr\.drv$/);
  });

  test("a missing .drv is Nix's error, exit 2", async () => {
    const io = captureIo(s.env);
    const missing = d.base!.replace(/\/[0-9a-z]{32}-/, "/00000000000000000000000000000000-");
    const code = await runPlan({ builders: "", store: s.store }, [missing], io);
    assert.equal(code, 2);
    assert.match(io.stderr, /^error: getting status of '.*00000000000000000000000000000000-base\.drv'/);
  });

  test("planClosure with injected validity: wanted outputs only", async () => {
    const v = await userView({ env: s.env, builders: "" });
    const ctx = routeContext(v, { store: s.store });
    const r = await planClosure({ roots: [d.top!], ctx, valid: async () => new Set() });
    assert.equal(r.closure, 7);
    assert.equal(r.toBuild, 7);
    assert.equal(r.blocked, 2); // root and top wait on cuda/arm
  });
});

describe("store paths", () => {
  test("only well-formed store paths are sent to a daemon", () => {
    assert.equal(isStorePath("/nix/store/fjym90m5r8qrc51g6cxblkdf7z4jk19s-x.drv", "/nix/store"), true);
    assert.equal(isStorePath("/nix/store/fjym90m5r8qrc51g6cxblkdf7z4jk19s-", "/nix/store"), false);
    assert.equal(isStorePath("/nix/store/fjym90m5r8qrc51g6cxblkdf7z4jk19e-x", "/nix/store"), false);
    assert.equal(isStorePath("/tmp/fjym90m5r8qrc51g6cxblkdf7z4jk19s-x", "/nix/store"), false);
    assert.equal(isStorePath("/nix/store/fjym90m5r8qrc51g6cxblkdf7z4jk19s-x/y", "/nix/store"), false);
  });
  test("--store DIR is a chroot store: logical /nix/store, files and state under DIR", () => {
    const t = resolveStore({ store: "/tmp/s", storeMode: "daemon", env: {} });
    assert.equal(t.storeDir, "/nix/store");
    assert.equal(t.realStoreDir, "/tmp/s/nix/store");
    assert.equal(t.stateDir, "/tmp/s/nix/var/nix");
    assert.equal(t.viaDaemon, false);
    const u = resolveStore({
      storeMode: "local",
      env: { NIX_STORE_DIR: "/x/store", NIX_STATE_DIR: "/x/var" },
    });
    assert.equal(u.realStoreDir, "/x/store");
    assert.equal(u.stateDir, "/x/var");
    const w = resolveStore({ store: "local?root=/r", storeMode: "local", env: {} });
    assert.equal(w.root, "/r");
    assert.throws(() => resolveStore({ store: "ssh://x", storeMode: "local", env: {} }));
  });
});
