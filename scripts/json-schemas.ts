/**
 * The JSON Schemas of the commands' `--json` outputs, written into docs/schemas/. Each schema is taken
 * from real runs of src/cli.ts on inputs that exercise the output's fields (the SAMPLES below): every
 * key seen becomes a required property with the JSON type(s) seen, arrays take the union of their items.
 * Fields are only ever added, never renamed: test/unit/json-schemas.test.ts runs the same samples and
 * fails when an output no longer has a field its schema requires (a rename), or has one it does not know.
 *
 *   node --import tsx scripts/json-schemas.ts          write docs/schemas/*.schema.json (then `npx biome
 *                                                      format --write docs/schemas`)
 *   node --import tsx scripts/json-schemas.ts --check  compare, write nothing (exit 1 on a difference)
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CLI_NODE_ARGS } from "../test/support/cli.js";

const REPO = join(import.meta.dirname, "..");
export const SCHEMA_DIR = join(REPO, "docs", "schemas");

const ROUTE_MACHINES = "ssh://b1 x86_64-linux - 2 1 kvm; ssh://b2 aarch64-linux - 0 1";
const LONG_URI = `ssh://b3?remote-program=${"x".repeat(300)} aarch64-linux - 1 1`;

/** One sample run per output: the command's arguments (after `nix-builders`). */
export const SAMPLES: Record<string, string[][]> = {
  explain: [
    ["explain", "--json", "test/fixtures/logs/ssh-host-key.log"],
    ["explain", "--json", "test/fixtures/logs/bad-machine-speed.log"],
  ],
  lint: [
    ["lint", "--json", "--nix-version", "2.8", "--machines", "test/fixtures/schemas/machines"],
    ["lint", "--json", "--nix-version", "2.30", "--conf", "test/fixtures/schemas/nix.conf"],
  ],
  // Builders that fail, warn and are refused without a connection (test/fixtures/schemas/doctor):
  // passing, warning, failing and skipped checks, with and without evidence, and no network.
  doctor: [["doctor", "--json", "--nix-version", "2.8", "--timeout", "2"]],
  // Machines given on the command line (test/fixtures/schemas/machines: valid and broken lines).
  show: [
    ["show", "--json", "--nix-version", "2.8"],
    ["show", "--json", "--nix-version", "2.30", "--builders", "@test/fixtures/schemas/machines"],
  ],
  // A machine that takes the build, none that does, and a store URI the hook dies on.
  route: [
    ["route", "--json", "--nix-version", "2.8", "--system", "x86_64-linux", "--builders", ROUTE_MACHINES],
    ["route", "--json", "--nix-version", "2.30", "--system", "sparc-linux", "--builders", ROUTE_MACHINES],
    ["route", "--json", "--nix-version", "2.8", "--system", "aarch64-linux", "--builders", LONG_URI],
  ],
  config: [["config", "--json", "--nix-version", "2.8"]],
};

/** Objects that are maps (their keys are data, not field names): path from the top → what they map. */
const MAPS: Record<string, Record<string, string>> = {
  doctor: { "summary.builderDurationsMs": "store URI → milliseconds its checks took" },
  config: { settings: "setting name → { value, origin, layer, overridden }" },
};

/** Fields no sample can fill (null in every sample): path → the types they have otherwise. */
const NULLABLE: Record<string, Record<string, string[]>> = {
  route: { drvPath: ["null", "string"] },
  config: { error: ["null", "object"] },
};

/** The configuration directory of a command's samples (default test/fixtures/schemas). */
const SAMPLE_CONF: Record<string, string> = { doctor: "test/fixtures/schemas/doctor" };

export type Schema = {
  description?: string;
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean;
  items?: Schema;
};

/** Run one sample through the CLI (dist/cli.js when it is up to date, test/support/cli.ts); its stdout as JSON (exit codes 0-2 are all answers). */
export function runSample(args: string[]): unknown {
  let out: string;
  try {
    out = execFileSync(process.execPath, [...CLI_NODE_ARGS, ...args], {
      cwd: REPO,
      encoding: "utf8",
      timeout: 60_000,
      env: {
        ...process.env,
        NIX_USER_CONF_FILES: "",
        NIX_CONF_DIR: join(REPO, SAMPLE_CONF[args[0]!] ?? "test/fixtures/schemas"),
      },
    });
  } catch (e) {
    const err = e as { status?: number; stdout?: string };
    if (err.status === undefined || err.status > 2 || !err.stdout) throw e;
    out = err.stdout;
  }
  return JSON.parse(out);
}

function typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

function mergeTypes(a: Schema["type"], b: string): string | string[] {
  const all = new Set([...(a === undefined ? [] : Array.isArray(a) ? a : [a]), b]);
  if (all.has("number")) all.delete("integer");
  const list = [...all].sort();
  return list.length === 1 ? list[0]! : list;
}

/** Widen `s` so that it describes `v` too. Keys seen in one object but not another are not required. */
export function infer(v: unknown, s: Schema | undefined): Schema {
  const t = typeOf(v);
  const out: Schema = { ...(s ?? {}), type: mergeTypes(s?.type, t) };
  if (t === "object") {
    const obj = v as Record<string, unknown>;
    const props = { ...(s?.properties ?? {}) };
    for (const [k, x] of Object.entries(obj)) props[k] = infer(x, props[k]);
    out.properties = Object.fromEntries(Object.entries(props).sort(([a], [b]) => (a < b ? -1 : 1)));
    const keys = Object.keys(obj);
    out.required = (s?.properties === undefined ? keys : (s.required ?? []))
      .filter((k) => keys.includes(k))
      .sort();
    out.additionalProperties = false;
  }
  if (t === "array") {
    let items = s?.items;
    for (const x of v as unknown[]) items = infer(x, items);
    if (items) out.items = items;
  }
  return out;
}

/** The schema of one output, from all its samples. */
export function schemaFor(name: string): Schema & { $schema: string; title: string } {
  let s: Schema | undefined;
  for (const args of SAMPLES[name]!) s = infer(runSample(args), s);
  for (const [path, description] of Object.entries(MAPS[name] ?? {})) {
    const keys = path.split(".");
    let parent = s;
    for (const k of keys.slice(0, -1)) parent = parent?.properties?.[k];
    if (parent?.properties) parent.properties[keys[keys.length - 1]!] = { description, type: "object" };
  }
  for (const [path, types] of Object.entries(NULLABLE[name] ?? {})) {
    const keys = path.split(".");
    let parent = s;
    for (const k of keys.slice(0, -1)) parent = parent?.properties?.[k];
    const field = parent?.properties?.[keys[keys.length - 1]!];
    if (field) field.type = types;
  }
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    title: `nix-builders ${name} --json`,
    ...s!,
  };
}

/** Problems of `v` against `s`: missing required fields, unknown fields, wrong types. */
export function validate(v: unknown, s: Schema, at = "$"): string[] {
  const t = typeOf(v);
  const types = s.type === undefined ? [] : Array.isArray(s.type) ? s.type : [s.type];
  if (types.length > 0 && !types.includes(t) && !(t === "integer" && types.includes("number")))
    return [`${at}: ${t}, expected ${types.join(" or ")}`];
  const out: string[] = [];
  if (t === "object" && s.properties) {
    const obj = v as Record<string, unknown>;
    for (const k of s.required ?? []) if (!(k in obj)) out.push(`${at}.${k}: missing`);
    for (const [k, x] of Object.entries(obj)) {
      const p = s.properties[k];
      if (!p) {
        if (s.additionalProperties === false) out.push(`${at}.${k}: not in the schema`);
      } else out.push(...validate(x, p, `${at}.${k}`));
    }
  }
  if (t === "array" && s.items) {
    const items = s.items;
    (v as unknown[]).forEach((x, i) => {
      out.push(...validate(x, items, `${at}[${i}]`));
    });
  }
  return out;
}

export function schemaFile(name: string): string {
  return join(SCHEMA_DIR, `${name}.schema.json`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const check = process.argv.includes("--check");
  let differ = false;
  mkdirSync(SCHEMA_DIR, { recursive: true });
  for (const name of Object.keys(SAMPLES)) {
    const text = `${JSON.stringify(schemaFor(name), null, 2)}\n`;
    let old = "";
    try {
      old = readFileSync(schemaFile(name), "utf8");
    } catch {
      // new
    }
    // compare as data: the files are formatted by Biome after they are written
    if (old === "" || JSON.stringify(JSON.parse(old)) !== JSON.stringify(JSON.parse(text))) {
      differ = true;
      process.stdout.write(`${check ? "differs" : "wrote"}: ${schemaFile(name)}\n`);
      if (!check) writeFileSync(schemaFile(name), text);
    }
  }
  if (check && differ) process.exitCode = 1;
}
