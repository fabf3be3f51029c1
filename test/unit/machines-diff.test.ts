/**
 * Differential test: generated `builders` specs go through the real build hooks of Nix 2.8 and Nix 2.30
 * and through our parser set to that version's rules, and the results must agree: the error text when the hook dies, `decline-permanently` for zero
 * machines, otherwise the "Failed to find a machine" listing (systems, max-jobs, features, count) for a
 * system no machine offers, requested with amWilling = 0.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { formatNoMachineListing, parseBuilders } from "../../src/nix/machines.js";
import { NIX_2_8, type NixVersion } from "../../src/nix/version.js";
import {
  haveBuildRemote,
  nodeFsReader,
  parseNoMachineListing,
  type RunBuildRemoteOptions,
  runBuildRemoteMany,
  scratchDir,
} from "../support/build-remote.js";
import { REAL_NIXES, type RealNix } from "../support/nix-versions.js";
import { mulberry32 as rng } from "../support/random.js";

const CASES = 260;
const ASKED_SYSTEM = "mips64el-netbsd"; // never generated below
const THIS_SYSTEM = "x86_64-linux";

interface Gen {
  r: () => number;
  dir: string;
  files: number;
}

const pick = <T>(g: Gen, xs: readonly T[]): T => xs[Math.floor(g.r() * xs.length)]!;
const chance = (g: Gen, p: number): boolean => g.r() < p;

const SYSTEMS = [
  "x86_64-linux",
  "aarch64-linux",
  "i686-linux",
  "x86_64-darwin",
  "armv7l-linux",
  "riscv64-linux",
];
const FEATURES = ["kvm", "big-parallel", "benchmark", "nixos-test", "uid-range", "gccarch-znver3"];
const B64_OK = [
  "SSH+HOST+PUBLIC+KEY+BASE64+ENCODED==",
  Buffer.from("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk root@h\n").toString("base64"),
  "c3No",
  "YQ",
  "=",
];
const B64_BAD = ["BAD_BASE64", "a-b", "abc*", "ab.c", "%%"];
const NUM_OK = ["1", "2", "8", "+4", "08", "0", "4294967295", "16"];
const NUM_BAD = ["eight", "-1", "4.0", "0x10", "1e3", "4294967296", "1.5", "+", "++1", "1a", "-0", " "];

function uri(g: Gen): string {
  return pick(g, [
    `/tmp/nb-diff-none/m${Math.floor(g.r() * 9)}`,
    `ssh://nix@h${Math.floor(g.r() * 9)}`,
    `nix@h${Math.floor(g.r() * 9)}`,
    "localhost",
    `ssh-ng://builder${Math.floor(g.r() * 3)}`,
    "ssh://[::1]",
    "h:2222",
    "-",
  ]);
}

function list(g: Gen, xs: readonly string[]): string {
  const n = 1 + Math.floor(g.r() * 3);
  const parts: string[] = [];
  for (let i = 0; i < n; i++) parts.push(pick(g, xs));
  if (chance(g, 0.15)) parts.splice(1, 0, "");
  return parts.join(",");
}

function field(g: Gen, good: () => string): string {
  return chance(g, 0.25) ? "-" : good();
}

function row(g: Gen): string {
  const n = Math.floor(g.r() * 10); // number of columns after the first
  const cols = [uri(g)];
  const gens: (() => string)[] = [
    () => field(g, () => list(g, SYSTEMS)),
    () => field(g, () => pick(g, ["/root/.ssh/id_ed25519", "relative/key"])),
    () => field(g, () => (chance(g, 0.1) ? pick(g, NUM_BAD) : pick(g, NUM_OK))),
    () => field(g, () => (chance(g, 0.1) ? pick(g, NUM_BAD) : pick(g, NUM_OK))),
    () => field(g, () => list(g, FEATURES)),
    () => field(g, () => list(g, FEATURES)),
    () => field(g, () => (chance(g, 0.15) ? pick(g, B64_BAD) : pick(g, B64_OK))),
    () => pick(g, ["extra", "fields", "here"]),
    () => pick(g, ["x", "y"]),
  ];
  for (let i = 0; i < n && i < gens.length; i++) {
    const v = gens[i]!();
    if (v.trim() === "") continue; // a blank column would shift the others; that is a different row
    cols.push(v);
  }
  const sep = () => pick(g, [" ", "  ", "\t", " \t "]);
  let s = cols[0]!;
  for (const c of cols.slice(1)) s += sep() + c;
  if (chance(g, 0.1)) s = pick(g, [" ", "  ", "\t"]) + s;
  if (chance(g, 0.1)) s += pick(g, [" ", "\t"]);
  return s;
}

function comment(g: Gen): string {
  return pick(g, ["# a comment", "#", "# a ; b", "# x ; nix@c - - 2", "  # indented", "#;"]);
}

function includeFile(g: Gen, depth: number): string {
  const name = `f${g.files++}`;
  const path = join(g.dir, name);
  const content = body(g, depth + 1, true);
  writeFileSync(path, content);
  const rel = chance(g, 0.25);
  const shown = rel ? path.slice(1) : path; // relative paths are resolved from `/`
  return `@${pick(g, ["", " ", "  "])}${shown}${pick(g, ["", " ", "\t"])}`;
}

function entry(g: Gen, depth: number): string {
  const k = g.r();
  if (k < 0.55) return row(g) + (chance(g, 0.15) ? ` ${comment(g)}` : "");
  if (k < 0.65) return comment(g);
  if (k < 0.72) return pick(g, ["", " ", "   ", "\t", "\r"]);
  if (k < 0.85 && depth < 2) return includeFile(g, depth);
  if (k < 0.9) return `@${join(g.dir, "missing")}`;
  if (k < 0.92) return `@${g.dir}`; // a directory: read error
  if (k < 0.95) return ` @${join(g.dir, "missing2")}`;
  return row(g);
}

function body(g: Gen, depth: number, isFile: boolean): string {
  const n = Math.floor(g.r() * (isFile ? 4 : 5));
  const parts: string[] = [];
  for (let i = 0; i < n; i++) parts.push(entry(g, depth));
  const seps = isFile ? ["\n", "\n", "\r\n", ";", " ; "] : [";", " ; ", "\n", "\r\n", ";;"];
  let s = parts[0] ?? "";
  for (const p of parts.slice(1)) s += pick(g, seps) + p;
  if (chance(g, 0.3)) s += pick(g, seps);
  return s;
}

for (const n of REAL_NIXES) describeDiff(n);

function describeDiff(n: RealNix): void {
  describe(`machines: differential against the real Nix ${n.label} build hook`, {
    skip: n.skipReason || (haveBuildRemote(n.buildRemote) ? false : `${n.buildRemote} is absent`),
  }, () => {
    const version: NixVersion = n.version ?? NIX_2_8;
    let root = "";
    before(() => {
      root = mkdtempSync(join(tmpdir(), "nb-diff-"));
    });
    after(() => {
      rmSync(root, { recursive: true, force: true });
    });

    it(`agrees on ${CASES} generated specs`, { timeout: 240_000 }, async () => {
      const specs: { spec: string; dir: string }[] = [];
      for (let i = 0; i < CASES; i++) {
        const dir = join(root, `c${i}`);
        mkdirSync(dir);
        const g: Gen = { r: rng(1000 + i), dir, files: 0 };
        specs.push({ spec: body(g, 0, false), dir });
      }
      const store = join(scratchDir(), "diff-store");
      const opts: RunBuildRemoteOptions[] = specs.map(({ spec }) => ({
        builders: spec,
        system: ASKED_SYSTEM,
        features: [],
        amWilling: false,
        store,
        hook: n.buildRemote,
        extraSettings: { system: THIS_SYSTEM, "build-users-group": "" },
      }));
      const t0 = Date.now();
      const results = await runBuildRemoteMany(opts, 4);
      const elapsed = Date.now() - t0;

      const kinds = { error: 0, none: 0, listing: 0 };
      const failures: string[] = [];
      results.forEach((real, i) => {
        const { spec } = specs[i]!;
        const ours = parseBuilders({
          spec,
          version,
          defaultSystem: THIS_SYSTEM,
          fs: nodeFsReader,
          cwd: "/",
        });
        const where = `case ${i} ${JSON.stringify(spec)}`;
        try {
          if (ours.error) {
            kinds.error++;
            assert.equal(real.reply, null, "the hook should have died");
            assert.equal(real.error, ours.error.message);
          } else if (ours.machines.length === 0) {
            kinds.none++;
            assert.equal(real.reply, "decline-permanently", real.stderr);
          } else {
            kinds.listing++;
            assert.equal(real.reply, "decline", real.stderr);
            const raw = real.rawMessages.find((m) => m.includes("Failed to find a machine"));
            assert.ok(raw, "no listing");
            const listing = parseNoMachineListing(raw);
            assert.ok(listing);
            assert.equal(listing.count, ours.machines.length);
            assert.deepEqual(
              listing.machines,
              ours.machines.map((m) => ({
                systemTypes: m.systemTypes,
                maxJobs: m.maxJobs,
                supportedFeatures: m.supportedFeatures,
                mandatoryFeatures: m.mandatoryFeatures,
              })),
            );
            const text = real.messages.find((m) => m.startsWith("Failed to find a machine"));
            assert.equal(
              text,
              formatNoMachineListing({
                version,
                drvPath: opts[i]!.drvPath ?? "/nix/store/fjym90m5r8qrc51g6cxblkdf7z4jk19s-x.drv",
                system: ASKED_SYSTEM,
                requiredFeatures: [],
                machines: ours.machines,
              }),
            );
          }
        } catch (e) {
          failures.push(`${where}: ${(e as Error).message}`);
        }
      });
      assert.deepEqual(failures, [], failures.slice(0, 5).join("\n\n"));
      // the generator must exercise all three outcomes
      assert.ok(kinds.error >= 20 && kinds.none >= 10 && kinds.listing >= 60, JSON.stringify(kinds));
      // A guard against a hang, not a benchmark: the CI host may be shared and loaded.
      assert.ok(elapsed < 180_000, `took ${elapsed} ms`);
      console.log(`# differential (${n.label}): ${CASES} cases in ${elapsed} ms: ${JSON.stringify(kinds)}`);
    });
  });
}
