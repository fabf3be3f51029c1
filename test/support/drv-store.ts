/**
 * Small real closures for the route and plan tests: a temporary chroot store, a controlled Nix
 * configuration, and derivations written by the real `nix-instantiate` (busybox as the builder, no nixpkgs).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const BUSYBOX = "/bin/busybox";

export function haveNix(): boolean {
  return spawnSync("nix-instantiate", ["--version"]).status === 0 && existsSync(BUSYBOX);
}

export interface DrvStore {
  /** Scratch directory (removed by cleanup()). */
  dir: string;
  /** The chroot store root (`--store`). */
  store: string;
  /** The environment a command should see: our nix.conf only, a writable state dir. */
  env: NodeJS.ProcessEnv;
  busybox: string;
  /** Instantiate `attrs` of the expression (a function of `mk` and `bb`), in order. */
  instantiate(expr: string, attrs: string[]): Record<string, string>;
  /** Build a derivation in the chroot store (real nix-store --realise, local). */
  build(drv: string): void;
  cleanup(): void;
}

/** The helpers every expression gets: `mk name attrs` makes an x86_64-linux busybox derivation. */
export const PRELUDE = (bb: string) => `
  bb = builtins.storePath "${bb}";
  mk = name: attrs: derivation ({
    inherit name;
    system = "x86_64-linux";
    builder = "\${bb}/busybox";
    args = [ "sh" "-c" "echo \${name} > $out" ];
  } // attrs);
  dep = ds: name: attrs: mk name ({ args = [ "sh" "-c" "echo \${builtins.concatStringsSep " " (map toString ds)} > $out" ]; } // attrs);
`;

export function makeDrvStore(conf: string[] = []): DrvStore {
  const dir = mkdtempSync(join(tmpdir(), "nb-drv-"));
  const store = join(dir, "store");
  const confDir = join(dir, "conf");
  const state = join(dir, "state");
  mkdirSync(confDir);
  mkdirSync(state);
  mkdirSync(store);
  writeFileSync(
    join(confDir, "nix.conf"),
    [
      "sandbox = false",
      "fsync-metadata = false",
      "system = x86_64-linux",
      "extra-platforms = i686-linux",
      "system-features = kvm",
      "max-jobs = 1",
      "substituters =",
      // No build users: a fresh machine has no nixbld group, and the test must not need one.
      "build-users-group =",
      ...conf,
      "",
    ].join("\n"),
  );
  const env: NodeJS.ProcessEnv = {
    PATH: process.env["PATH"] ?? "/usr/bin:/bin",
    HOME: dir,
    NIX_CONF_DIR: confDir,
    NIX_USER_CONF_FILES: "",
    NIX_STATE_DIR: state,
  };
  const nixEnv = { ...env };
  delete nixEnv["NIX_STATE_DIR"];
  // A directory holding `busybox`, so that argv[0] ends in "busybox" and busybox runs its applets.
  mkdirSync(join(dir, "bb"));
  copyFileSync(BUSYBOX, join(dir, "bb", "busybox"));
  const busybox = execFileSync("nix-store", ["--store", store, "--add", join(dir, "bb")], { env: nixEnv })
    .toString()
    .trim();
  return {
    dir,
    store,
    env,
    busybox,
    instantiate(expr, attrs) {
      const file = join(dir, `expr-${Math.random().toString(36).slice(2)}.nix`);
      writeFileSync(file, `let ${PRELUDE(busybox)} in ${expr}`);
      const args = ["--store", store, file];
      for (const a of attrs) args.push("-A", a);
      const out = execFileSync("nix-instantiate", args, { env: nixEnv, stdio: ["ignore", "pipe", "pipe"] })
        .toString()
        .trim()
        .split("\n");
      if (out.length !== attrs.length)
        throw new Error(`nix-instantiate gave ${out.length} paths for ${attrs.length} attributes`);
      return Object.fromEntries(attrs.map((a, i) => [a, out[i]!.split("!")[0]!]));
    },
    build(drv) {
      execFileSync("nix-store", ["--store", store, "--realise", drv], {
        env: nixEnv,
        stdio: ["ignore", "ignore", "pipe"],
      });
    },
    cleanup() {
      // A nix process that has just finished may still be removing its temp files: retry ENOTEMPTY.
      rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    },
  };
}
