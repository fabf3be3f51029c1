/**
 * The machine-dependent defaults of Nix settings (`system`, `extra-platforms`, `system-features`,
 * `cores`, and the thread count behind `max-jobs = auto`).
 *
 * Preferred source: the installed Nix itself (`nix show-config --json`, from 2.20 `nix config show
 * --json`, run with an empty configuration, reading each setting's `value`: what Nix runs with, which
 * for `sandbox-paths` and `build-hook` is not the declared `defaultValue` from 2.25 on), cached per Nix
 * binary so that commands start fast. Fallback when no Nix is installed: computed here the way Nix
 * computes them. Checked against real 2.8 and real 2.30 (`test/unit/machine-facts.test.ts`).
 */
import { accessSync, constants, readFileSync } from "node:fs";
import { cpus } from "node:os";
import type { NixVersion } from "../nix/version.js";
import { NIX, since } from "../nix/versions.js";
import { fileIdentity, readCache, writeCache } from "./cache.js";
import { type CpuidRegs, readCpuid } from "./cpuid.js";
import { emptyNixEnv, type NixInstall, runWithDeadline, withPrivateDir } from "./nix.js";

export interface MachineFacts {
  system: string;
  extraPlatforms: string[];
  systemFeatures: string[];
  cores: number;
  hardwareThreads: number;
  /** Where the facts came from: "nix" (asked the installed Nix) or "computed". */
  source: "nix" | "computed";
  /** `sandbox-paths` as Nix runs with it (2.30: `/bin/sh=<sandbox shell>`); from Nix only. */
  sandboxPaths?: string[];
  /** The `nix` that 2.25+ puts first in `build-hook` (`[<self>, "__build-remote"]`); from Nix only. */
  selfExe?: string;
}

/**
 * The CPU features Nix 2.8's x86-64 level detection looks at, by their /proc/cpuinfo names, and
 * the CPU vendor string. Nix asks libcpuid (`cpu_identify`), so these are the features libcpuid
 * 0.6 (Debian 12's, which its Nix 2.8 links) reports, not the kernel's list.
 */
export interface CpuFeatures {
  vendor: string;
  flags: ReadonlySet<string>;
}

/**
 * Nix 2.8's `computeLevels()` (src/libutil/compute-levels.cc): each level needs all of its flags
 * and every lower level. libcpuid 0.6 reports the AVX-512 flags only for Intel CPUs, and refuses
 * (no levels at all) a CPU whose vendor it does not know.
 */
const X86_LEVELS: { level: number; flags: string[] }[] = [
  { level: 1, flags: ["cmov", "cx8", "fpu", "fxsr", "mmx", "sse", "sse2"] },
  { level: 2, flags: ["cx16", "lahf_lm", "popcnt", "pni", "ssse3", "sse4_1", "sse4_2"] },
  { level: 3, flags: ["avx", "avx2", "f16c", "fma", "abm", "movbe"] },
  { level: 4, flags: ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"] },
];

/** The vendor strings libcpuid 0.6 knows (`cpuid_vendor_identify`). */
const LIBCPUID_VENDORS = new Set([
  "GenuineIntel",
  "AuthenticAMD",
  "CyrixInstead",
  "NexGenDriven",
  "GenuineTMx86",
  "UMC UMC UMC ",
  "CentaurHauls",
  "RiseRiseRise",
  "SiS SiS SiS ",
  "Geode by NSC",
  "HygonGenuine",
]);

/** The x86-64 micro-architecture levels Nix 2.8 computes for this CPU (possibly none). */
export function x86Levels(cpu: CpuFeatures): number[] {
  if (!LIBCPUID_VENDORS.has(cpu.vendor)) return [];
  const levels: number[] = [];
  for (const { level, flags } of X86_LEVELS) {
    if (level === 4 && cpu.vendor !== "GenuineIntel") break; // libcpuid 0.6: AVX-512 flags only for Intel
    if (!flags.every((f) => cpu.flags.has(f))) break;
    levels.push(level);
  }
  return levels;
}

/** CPUID bits → the /proc/cpuinfo names above, decoded as libcpuid 0.6 does (including its leaf limits). */
export function featuresFromCpuid(regs: CpuidRegs): CpuFeatures | null {
  const l0 = regs[0];
  if (!l0) return null;
  const vendor = [l0[1], l0[3], l0[2]]
    .map((r) => Buffer.from(Uint32Array.of(r).buffer).toString("latin1"))
    .join("");
  const flags = new Set<string>();
  const bits = (reg: number | undefined, table: Record<number, string>) => {
    if (reg === undefined) return;
    for (const [bit, name] of Object.entries(table)) if ((reg >>> Number(bit)) & 1) flags.add(name);
  };
  const maxBasic = l0[0];
  const maxExt = regs[0x80000000]?.[0] ?? 0;
  if (maxBasic >= 1) {
    bits(regs[1]?.[3], { 0: "fpu", 8: "cx8", 15: "cmov", 23: "mmx", 24: "fxsr", 25: "sse", 26: "sse2" });
    bits(regs[1]?.[2], {
      0: "pni",
      9: "ssse3",
      12: "fma",
      13: "cx16",
      19: "sse4_1",
      20: "sse4_2",
      22: "movbe",
      23: "popcnt",
      28: "avx",
      29: "f16c",
    });
  }
  if (maxBasic >= 7) {
    bits(regs[7]?.[1], { 5: "avx2" });
    if (vendor === "GenuineIntel")
      bits(regs[7]?.[1], { 16: "avx512f", 17: "avx512dq", 28: "avx512cd", 30: "avx512bw", 31: "avx512vl" });
  }
  if (maxExt >= 0x80000001) bits(regs[0x80000001]?.[2], { 0: "lahf_lm", 5: "abm" });
  return { vendor, flags };
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
  cpu: CpuFeatures;
  kvmAccessible: boolean;
  hardwareThreads: number;
  /** Linux Nix 2.12+ adds `uid-range` to the default system features. Default: false (2.8). */
  uidRange?: boolean;
}): MachineFacts {
  const system = nixSystemFor(input.platform, input.arch);
  const extra: string[] = [];
  if (system === "x86_64-linux") {
    extra.push("i686-linux");
    for (const l of x86Levels(input.cpu)) extra.push(`x86_64-v${l}-linux`);
  }
  const features = ["benchmark", "big-parallel", "nixos-test"];
  if (input.platform === "linux" && input.kvmAccessible) features.push("kvm");
  if (input.platform === "linux" && input.uidRange) features.push("uid-range");
  return {
    system,
    extraPlatforms: [...new Set(extra)].sort(),
    systemFeatures: [...new Set(features)].sort(),
    cores: input.hardwareThreads,
    hardwareThreads: input.hardwareThreads,
    source: "computed",
  };
}

/** The kernel's view of the CPU (/proc/cpuinfo): only when CPUID cannot be run. */
function cpuinfoFeatures(): CpuFeatures {
  try {
    const text = readFileSync("/proc/cpuinfo", "utf8").slice(0, 1 << 20);
    const field = (name: string) =>
      text
        .split("\n")
        .find((l) => l.startsWith(name))
        ?.split(":")[1]
        ?.trim() ?? "";
    return { vendor: field("vendor_id"), flags: new Set(field("flags").split(/\s+/)) };
  } catch {
    return { vendor: "", flags: new Set() };
  }
}

/** The CPU as Nix sees it: CPUID run by a process, or /proc/cpuinfo when that cannot run. */
export async function localCpuFeatures(): Promise<CpuFeatures> {
  const regs = await readCpuid();
  return (regs && featuresFromCpuid(regs)) ?? cpuinfoFeatures();
}

function kvmAccessible(): boolean {
  try {
    accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** The defaults computed for `version` (default 2.8's rules), as a libcpuid-linked Nix would. */
export async function computeLocalFacts(version?: NixVersion): Promise<MachineFacts> {
  return computeFacts({
    platform: process.platform,
    arch: process.arch,
    cpu: await localCpuFeatures(),
    kvmAccessible: kvmAccessible(),
    hardwareThreads: Math.max(1, cpus().length),
    uidRange: version !== undefined && since(version, NIX.uidRangeFeature),
  });
}

/** Turn `nix show-config --json` output (run with an empty configuration) into facts. */
export function factsFromShowConfig(
  json: Record<string, { defaultValue?: unknown; value?: unknown }>,
): MachineFacts {
  // `value`: what Nix runs with when nothing is configured (the run used an empty configuration)
  const get = (k: string): unknown => json[k]?.value ?? json[k]?.defaultValue;
  const strings = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : []);
  const cores = Number(get("cores"));
  const facts: MachineFacts = {
    system: String(get("system")),
    extraPlatforms: strings(get("extra-platforms")),
    systemFeatures: strings(get("system-features")),
    cores: Number.isFinite(cores) && cores > 0 ? cores : Math.max(1, cpus().length),
    hardwareThreads: Math.max(1, cpus().length),
    source: "nix",
  };
  const sandbox = json["sandbox-paths"]?.value;
  if (Array.isArray(sandbox) && sandbox.length > 0) facts.sandboxPaths = sandbox.map(String);
  const hook = json["build-hook"]?.value;
  if (Array.isArray(hook) && hook.length === 2 && hook[1] === "__build-remote" && typeof hook[0] === "string")
    facts.selfExe = hook[0];
  return facts;
}

/** A cached facts value must have exactly the shape Nix's answer gives; anything else is a miss. */
export function validFacts(v: unknown): MachineFacts | undefined {
  if (!v || typeof v !== "object") return undefined;
  const f = v as Record<string, unknown>;
  const strings = (x: unknown, re: RegExp) =>
    Array.isArray(x) && x.length <= 64 && x.every((s) => typeof s === "string" && re.test(s));
  const count = (x: unknown) => typeof x === "number" && Number.isSafeInteger(x) && x > 0 && x < 1 << 20;
  if (typeof f["system"] !== "string" || !SYSTEM.test(f["system"])) return undefined;
  if (!strings(f["extraPlatforms"], SYSTEM) || !strings(f["systemFeatures"], FEATURE)) return undefined;
  if (!count(f["cores"]) || !count(f["hardwareThreads"]) || f["source"] !== "nix") return undefined;
  let n = 6;
  if (f["sandboxPaths"] !== undefined) {
    if (!strings(f["sandboxPaths"], /^[^\0\n]{1,4096}$/)) return undefined;
    n++;
  }
  if (f["selfExe"] !== undefined) {
    if (typeof f["selfExe"] !== "string" || !/^\/[^\0\n]{0,4095}$/.test(f["selfExe"])) return undefined;
    n++;
  }
  if (Object.keys(f).length !== n) return undefined;
  return f as unknown as MachineFacts;
}
const SYSTEM = /^[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+){1,3}$/;
const FEATURE = /^[A-Za-z0-9_.+-]{1,100}$/;

/** `show-config --json` up to 2.19; `config show --json` from 2.20 (where `show-config` is a deprecated alias). */
export function configShowArgs(version: NixVersion): string[] {
  return since(version, NIX.configShowCommand) ? ["config", "show", "--json"] : ["show-config", "--json"];
}

/**
 * Ask the installed Nix for its machine defaults, with an empty configuration so that no config
 * file (or a broken one) can interfere: a fresh private NIX_CONF_DIR (mkdtemp), never a directory
 * someone could have made beforehand. The answer is cached per Nix binary (real path, device,
 * inode, size, mtime, ctime) and per /dev/kvm access, since `kvm` detection depends on the calling
 * process; the cache is the running user's own (see cache.ts).
 */
export async function machineFacts(nix: NixInstall | null, version?: NixVersion): Promise<MachineFacts> {
  if (!nix) return computeLocalFacts(version);
  const id = fileIdentity(nix.nixPath);
  const key = id ? `${id}:${kvmAccessible() ? "kvm" : "nokvm"}` : null;
  const cached = key ? readCache("machine-facts-v2", key, validFacts) : undefined;
  if (cached) return cached;
  let facts: MachineFacts;
  try {
    const out = await withPrivateDir("nix-builders-conf-", (empty) =>
      runWithDeadline(
        [nix.nixPath, "--extra-experimental-features", "nix-command", ...configShowArgs(nix.version)],
        emptyNixEnv(empty),
      ),
    );
    facts = factsFromShowConfig(JSON.parse(out));
    if (!validFacts(facts)) return computeLocalFacts(nix.version);
  } catch {
    return computeLocalFacts(nix.version);
  }
  if (key) writeCache("machine-facts-v2", key, facts);
  return facts;
}
