/**
 * The direction of imports in src/, read from the import lines of every file (static `import … from`,
 * `export … from` and dynamic `import("…")`):
 *
 * - src/nix is the pure core: it imports only src/nix, and no Node module that reaches the outside world
 *   (files, processes, network, the OS).
 * - src/os (process-level primitives: the bounded read, the subprocess helper) imports only src/nix.
 * - src/host, src/agent and src/remote are the edges: each imports itself, src/nix and src/os, never
 *   another edge, src/app or src/commands.
 * - src/app composes the edges; it never imports src/commands.
 * - A command (a module of src/commands other than its I/O support, io.ts and render.ts) never imports
 *   another command.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, it } from "node:test";

const SRC = resolve(import.meta.dirname, "..", "..", "src");

/** Node modules that do I/O: forbidden in the pure core. */
const IO_MODULES = new Set([
  "fs",
  "fs/promises",
  "child_process",
  "net",
  "dgram",
  "dns",
  "dns/promises",
  "http",
  "https",
  "http2",
  "tls",
  "os",
  "process",
  "worker_threads",
  "cluster",
  "readline",
  "tty",
  "v8",
  "vm",
]);

/** Folders of src/ whose modules are edges. */
const EDGES = new Set(["host", "agent", "remote"]);

/** Modules of src/commands that are the commands' shared I/O, not commands. */
const COMMAND_SUPPORT = new Set(["commands/io.ts", "commands/render.ts"]);

function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...tsFiles(p));
    else if (e.name.endsWith(".ts")) out.push(p);
  }
  return out.sort();
}

/** The module specifiers a file imports (comments are not import lines: each match starts a statement). */
export function importsOf(text: string): string[] {
  const specs: string[] = [];
  const stmt = /^\s*(?:import|export)\b[^;]*?\bfrom\s*"([^"]+)"/gms;
  const bare = /^\s*import\s*"([^"]+)"/gm;
  const dynamic = /\bimport\(\s*"([^"]+)"\s*\)/g;
  for (const re of [stmt, bare, dynamic]) for (const m of text.matchAll(re)) specs.push(m[1]!);
  return specs;
}

interface Edge {
  /** Importing file, relative to src/ ("app/view.ts"). */
  from: string;
  /** The specifier as written. */
  spec: string;
  /** The imported file relative to src/ for a relative import, else null. */
  to: string | null;
}

function edgesOf(file: string): Edge[] {
  const from = relative(SRC, file);
  return importsOf(readFileSync(file, "utf8")).map((spec) => ({
    from,
    spec,
    to: spec.startsWith(".") ? relative(SRC, resolve(dirname(file), spec)).replace(/\.js$/, ".ts") : null,
  }));
}

/** The top folder of a path relative to src/ ("nix", "app", …, or "" for src/cli.ts). */
function area(rel: string): string {
  const i = rel.indexOf("/");
  return i < 0 ? "" : rel.slice(0, i);
}

function isCommand(rel: string): boolean {
  return area(rel) === "commands" && !COMMAND_SUPPORT.has(rel);
}

/** Every import that breaks a rule, as "from → spec: why". */
export function violations(edges: readonly Edge[]): string[] {
  const bad: string[] = [];
  for (const e of edges) {
    const a = area(e.from);
    const say = (why: string) => bad.push(`${e.from} → ${e.spec}: ${why}`);
    if (e.to === null) {
      const mod = e.spec.replace(/^node:/, "");
      if (a === "nix" && IO_MODULES.has(mod)) say("src/nix does no I/O");
      continue;
    }
    const b = area(e.to);
    if (b === a && !(a === "commands" && isCommand(e.from) && isCommand(e.to))) continue;
    if (a === "nix") say("src/nix imports only src/nix");
    else if (a === "os" && b !== "nix") say("src/os imports only src/nix");
    else if (EDGES.has(a) && b !== "nix" && b !== "os")
      say(`an edge (src/${a}) imports only itself, src/nix and src/os`);
    else if (a === "app" && (b === "commands" || b === "")) say("src/app never imports a command");
    else if (isCommand(e.from) && isCommand(e.to)) say("a command never imports another command");
  }
  return bad;
}

describe("import direction", () => {
  const files = tsFiles(SRC);
  const all = files.flatMap(edgesOf);

  it("reads the import lines of every file in src/", () => {
    assert.ok(files.length > 50, `only ${files.length} files`);
    // every file but the barrel-free leaves imports something; the reader must see imports at all
    assert.ok(all.length > 300, `only ${all.length} imports read`);
    assert.ok(
      all.some((e) => e.from === "cli.ts" && e.spec === "./commands/show.js"),
      "cli's dynamic imports",
    );
  });

  it("no import breaks the direction", () => {
    assert.deepEqual(violations(all), []);
  });

  it("the rules catch what they forbid", () => {
    const e = (from: string, spec: string): Edge => ({
      from,
      spec,
      to: spec.startsWith(".")
        ? relative(SRC, resolve(SRC, dirname(from), spec)).replace(/\.js$/, ".ts")
        : null,
    });
    const cases: [Edge, RegExp][] = [
      [e("nix/conf.ts", "node:fs"), /does no I\/O/],
      [e("nix/conf.ts", "node:child_process"), /does no I\/O/],
      [e("nix/conf.ts", "../host/users.js"), /imports only src\/nix/],
      [e("host/store.ts", "../remote/worker.js"), /an edge/],
      [e("agent/caches.ts", "../host/run-as.js"), /an edge/],
      [e("remote/probe.ts", "../app/view.js"), /an edge/],
      [e("host/x.ts", "../commands/io.js"), /an edge/],
      [e("os/read.ts", "../host/users.js"), /src\/os imports only/],
      [e("app/view.ts", "../commands/io.js"), /never imports a command/],
      [e("commands/plan.ts", "./route.js"), /another command/],
      [e("commands/verify.ts", "./use.js"), /another command/],
    ];
    for (const [edge, why] of cases) {
      const v = violations([edge]);
      assert.equal(v.length, 1, `${edge.from} → ${edge.spec}`);
      assert.match(v[0]!, why);
    }
    // and what they allow
    const ok = [
      e("nix/conf.ts", "./errors.js"),
      e("host/users.ts", "node:fs"),
      e("host/store.ts", "../nix/version.js"),
      e("agent/config.ts", "../os/read.js"),
      e("app/view.ts", "../host/users.js"),
      e("app/doctor/doctor.ts", "../../remote/probe.js"),
      e("commands/plan.ts", "./io.js"),
      e("commands/plan.ts", "../app/view.js"),
      e("cli.ts", "./commands/show.js"),
    ];
    assert.deepEqual(violations(ok), []);
  });

  it("reads multi-line, type-only, re-export and dynamic imports", () => {
    const text = [
      'import {\n  a,\n  type B,\n} from "./x.js";',
      'import type { C } from "../y.js";',
      'export * from "../z.js";',
      'export { d } from "./w.js";',
      'const m = await import("../v.js");',
      'import "./side.js";',
      '// a comment: see import from "nowhere" is not at a statement start',
    ].join("\n");
    assert.deepEqual(importsOf(text).sort(), [
      "../v.js",
      "../y.js",
      "../z.js",
      "./side.js",
      "./w.js",
      "./x.js",
    ]);
  });
});
