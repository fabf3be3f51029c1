/**
 * The machine-dependent defaults of Nix settings (`system`, `extra-platforms`, `system-features`,
 * `cores`, and the thread count behind `max-jobs = auto`).
 *
 * Preferred source: the installed Nix itself (`nix show-config --json` run with an empty
 * configuration, reading each setting's `defaultValue`), cached per Nix binary so that commands
 * start fast. Fallback when no Nix is installed: computed here the way Nix computes them.
 */
import { execFile } from "node:child_process";
import { accessSync, constants, mkdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { readCache, writeCache } from "./cache.js";
import type { NixInstall } from "./nix.js";

export interface MachineFacts {
  system: string;
  extraPlatforms: string[];
  systemFeatures: string[];
  cores: number;
  hardwareThreads: number;
  /** Where the facts came from: "nix" (asked the installed Nix) or "computed". */
  source: "nix" | "computed";
}

const X86_LEVELS: { level: number; flags: string[] }[] = [
  { level: 2, flags: ["cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"] },
  { level: 3, flags: ["avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"] },
  { level: 4, flags: ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"] },
];

/** The x86-64 micro-architecture levels a CPU with these /proc/cpuinfo flags supports (1 always). */
export function x86Levels(flags: ReadonlySet<string>): number[] {
  const levels = [1];
  for (const { level, flags: need } of X86_LEVELS) {
    if (need.every((f) => flags.has(f))) levels.push(level);
    else break;
  }
  return levels;
}

/** Nix's `system` double for a Node platform/arch pair. */
export function nixSystemFor(platform: string, arch: string): string {
  const cpu =
    (
      {
        x64: "x86_64",
        arm64: "aarch64",
        ia32: "i686",
        arm: "armv7l",
        riscv64: "riscv64",
        ppc64: "powerpc64le",
      } as Record<string, string>
    )[arch] ?? arch;
  const os = platform === "darwin" ? "darwin" : platform;
  return `${cpu}-${os}`;
}

/** Compute the defaults without asking Nix (used only when Nix is not installed). */
export function computeFacts(input: {
  platform: string;
  arch: string;
  cpuFlags: ReadonlySet<string>;
  kvmAccessible: boolean;
  hardwareThreads: number;
}): MachineFacts {
  const system = nixSystemFor(input.platform, input.arch);
  const extra: string[] = [];
  if (system === "x86_64-linux") {
    extra.push("i686-linux");
    for (const l of x86Levels(input.cpuFlags)) extra.push(`x86_64-v${l}-linux`);
  }
  const features = ["benchmark", "big-parallel", "nixos-test"];
  if (input.platform === "linux" && input.kvmAccessible) features.push("kvm");
  return {
    system,
    extraPlatforms: [...new Set(extra)].sort(),
    systemFeatures: [...new Set(features)].sort(),
    cores: input.hardwareThreads,
    hardwareThreads: input.hardwareThreads,
    source: "computed",
  };
}

function readCpuFlags(): Set<string> {
  try {
    const text = readFileSync("/proc/cpuinfo", "utf8");
    const line = text.split("\n").find((l) => l.startsWith("flags"));
    return new Set((line?.split(":")[1] ?? "").trim().split(/\s+/));
  } catch {
    return new Set();
  }
}

function kvmAccessible(): boolean {
  try {
    accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

export function computeLocalFacts(): MachineFacts {
  return computeFacts({
    platform: process.platform,
    arch: process.arch,
    cpuFlags: readCpuFlags(),
    kvmAccessible: kvmAccessible(),
    hardwareThreads: Math.max(1, cpus().length),
  });
}

/** Turn `nix show-config --json` output (run with an empty configuration) into facts. */
export function factsFromShowConfig(
  json: Record<string, { defaultValue?: unknown; value?: unknown }>,
): MachineFacts {
  const get = (k: string): unknown => json[k]?.defaultValue ?? json[k]?.value;
  const strings = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : []);
  const cores = Number(get("cores"));
  return {
    system: String(get("system")),
    extraPlatforms: strings(get("extra-platforms")),
    systemFeatures: strings(get("system-features")),
    cores: Number.isFinite(cores) && cores > 0 ? cores : Math.max(1, cpus().length),
    hardwareThreads: Math.max(1, cpus().length),
    source: "nix",
  };
}

function run(argv: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(argv[0]!, argv.slice(1), { env, timeout: 10_000, maxBuffer: 16 << 20 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout),
    );
  });
}

/**
 * Ask the installed Nix for its machine defaults, with an empty configuration so that no config
 * file (or a broken one) can interfere. The answer is cached per Nix binary (path, inode, mtime)
 * and per /dev/kvm access, since `kvm` detection depends on the calling process.
 */
export async function machineFacts(nix: NixInstall | null): Promise<MachineFacts> {
  if (!nix) return computeLocalFacts();
  const st = statSync(nix.nixPath);
  const key = `${nix.nixPath}:${st.ino}:${st.mtimeMs}:${kvmAccessible() ? "kvm" : "nokvm"}:${process.getuid?.() ?? 0}`;
  const cached = readCache<MachineFacts>("machine-facts", key);
  if (cached) return cached;
  const empty = join(tmpdir(), `nix-builders-empty-conf-${process.pid}`);
  mkdirSync(empty, { recursive: true });
  let facts: MachineFacts;
  try {
    const out = await run(
      [nix.nixPath, "--extra-experimental-features", "nix-command", "show-config", "--json"],
      {
        PATH: process.env["PATH"] ?? "/usr/bin:/bin",
        NIX_CONF_DIR: empty,
        NIX_USER_CONF_FILES: "",
        HOME: empty,
      },
    );
    facts = factsFromShowConfig(JSON.parse(out));
  } catch {
    return computeLocalFacts();
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
  writeCache("machine-facts", key, facts);
  return facts;
}
