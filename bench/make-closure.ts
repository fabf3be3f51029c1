/**
 * Generate a closure of N derivations in a (chroot) Nix store with the real `nix-instantiate`,
 * for the `plan` benchmark. No nixpkgs: every derivation uses a static busybox as its builder.
 *
 *   node --import tsx bench/make-closure.ts --store /tmp/bench/st --n 20000 [--busybox /bin/busybox] [--fsync]
 *
 * Prints one JSON line: { n, store, root, fsync, seconds: { add, eval } }.
 *
 * Shape (deterministic, see bench/fixtures/README.md):
 *   - derivation i depends on 2i+1 and 2i+2 (a binary heap, depth log2 N) plus one pseudo-random
 *     later derivation, so the graph is a DAG with shared nodes; derivation 0 is the root and its
 *     closure is all N derivations;
 *   - systems: 60% x86_64-linux, 20% aarch64-linux, 10% i686-linux, 10% x86_64-darwin;
 *   - requiredSystemFeatures: kvm (i%7==0), big-parallel (i%11==0), benchmark+kvm (i%13==0);
 *   - preferLocalBuild (i%17==0), structured attrs (i%19==0), fixed-output leaves (i%23==0, no deps).
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

export interface MakeClosureOptions {
  /** Chroot store root (the `--store` argument), e.g. /tmp/bench/st. */
  store: string;
  n: number;
  busybox?: string;
  /**
   * Keep Nix's SQLite durability (`fsync-metadata = true`, Nix's default). Off by default: the store is
   * scratch, and without the fsyncs generation is about twice as fast. It is still the real nix-instantiate.
   */
  fsync?: boolean;
  /**
   * 0 (default): the closure above. K > 0: the same closure after a change: every derivation i with
   * i % 100 == 0 (1%) gets one new leaf input named after K, so those derivations and everything above
   * them get new store paths, and the rest are the same files (the warm-plan benchmark).
   */
  variant?: number;
}

export interface MakeClosureResult {
  n: number;
  store: string;
  root: string;
  fsync: boolean;
  seconds: { add: number; eval: number };
}

/** The Nix expression; `bb` is the busybox store path. */
export function closureExpression(n: number, bb: string, variant = 0): string {
  return `
let
  bb = builtins.storePath "${bb}";
  n = ${n};
  variant = ${variant};
  mod = a: b: a - (a / b) * b;
  systems = [ "x86_64-linux" "x86_64-linux" "x86_64-linux" "x86_64-linux" "x86_64-linux" "x86_64-linux"
              "aarch64-linux" "aarch64-linux" "i686-linux" "x86_64-darwin" ];
  features = i:
    (if mod i 13 == 0 then [ "benchmark" "kvm" ] else if mod i 7 == 0 then [ "kvm" ] else [ ])
    ++ (if mod i 11 == 0 then [ "big-parallel" ] else [ ]);
  dep = j: if j < n then [ "\${builtins.elemAt drvs j}" ] else [ ];
  extra = i: let r = n - i - 1; in if r > 2 then [ (i + 1 + mod (i * 7919 + 13) r) ] else [ ];
  fod = i: mod i 23 == 0 && 2 * i + 1 >= n;
  leaf = i: if variant > 0 && mod i 100 == 0 then [ "\${derivation {
    name = "leaf-\${toString variant}-\${toString i}"; system = builtins.elemAt systems (mod i 10);
    builder = bb; args = [ "sh" "-c" "echo leaf > $out" ]; }}" ] else [ ];
  mk = i: derivation ({
    name = "n-\${toString i}";
    system = builtins.elemAt systems (mod i 10);
    builder = bb;
    args = [ "sh" "-c" "echo \\"node \${toString i}\\" > $out" ]
      ++ (if fod i then [ ] else dep (2 * i + 1) ++ dep (2 * i + 2) ++ builtins.concatMap dep (extra i) ++ leaf i);
  }
  // (if features i != [ ] then { requiredSystemFeatures = features i; } else { })
  // (if mod i 17 == 0 then { preferLocalBuild = true; } else { })
  // (if mod i 19 == 0 then { __structuredAttrs = true; idx = i; } else { })
  // (if fod i then {
       outputHashMode = "flat"; outputHashAlgo = "sha256";
       outputHash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; } else { }));
  drvs = builtins.genList mk n;
in builtins.elemAt drvs 0
`;
}

export function makeClosure(opts: MakeClosureOptions): MakeClosureResult {
  const store = resolve(opts.store);
  mkdirSync(store, { recursive: true });
  const conf = ["experimental-features = nix-command"];
  if (!opts.fsync) conf.push("fsync-metadata = false");
  const env = { ...process.env, NIX_CONFIG: conf.join("\n") };
  const t0 = performance.now();
  const bb = execFileSync("nix-store", ["--store", store, "--add", opts.busybox ?? "/bin/busybox"], { env })
    .toString()
    .trim();
  const t1 = performance.now();
  const variant = opts.variant ?? 0;
  const exprFile = join(dirname(store), `closure-${opts.n}${variant ? `-v${variant}` : ""}.nix`);
  writeFileSync(exprFile, closureExpression(opts.n, bb, variant));
  const root = execFileSync("nix-instantiate", ["--store", store, exprFile], {
    env,
    stdio: ["ignore", "pipe", "ignore"],
    maxBuffer: 1 << 24,
  })
    .toString()
    .trim();
  const t2 = performance.now();
  return {
    n: opts.n,
    store,
    root,
    fsync: opts.fsync ?? false,
    seconds: { add: (t1 - t0) / 1000, eval: (t2 - t1) / 1000 },
  };
}

function main(argv: string[]): void {
  const arg = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const store = arg("--store");
  const n = Number(arg("--n") ?? "2000");
  if (!store || !Number.isInteger(n) || n < 1) {
    process.stderr.write("usage: make-closure.ts --store DIR --n N [--busybox PATH]\n");
    process.exit(2);
  }
  const busybox = arg("--busybox");
  const fsync = argv.includes("--fsync");
  const variant = Number(arg("--variant") ?? "0");
  const r = makeClosure(
    busybox === undefined ? { store, n, fsync, variant } : { store, n, fsync, busybox, variant },
  );
  process.stdout.write(`${JSON.stringify(r)}\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) main(process.argv.slice(2));
