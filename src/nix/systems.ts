/**
 * Nix system doubles (`<cpu>-<kernel>`), as used in `system`, `extra-platforms`, a derivation's
 * `system` and the systems column of a machines line. The lists follow nixpkgs' `lib.systems.doubles`
 * plus what Nix itself produces (`x86_64-v1-linux` … `x86_64-v4-linux` in `extra-platforms`) and the
 * pseudo-system `builtin`.
 */

export const KNOWN_CPUS: readonly string[] = [
  "x86_64",
  "x86_64-v1",
  "x86_64-v2",
  "x86_64-v3",
  "x86_64-v4",
  "i686",
  "aarch64",
  "aarch64_be",
  "armv5tel",
  "armv6l",
  "armv7a",
  "armv7l",
  "arm",
  "loongarch64",
  "m68k",
  "microblaze",
  "microblazeel",
  "mips",
  "mipsel",
  "mips64",
  "mips64el",
  "mmix",
  "msp430",
  "or1k",
  "powerpc",
  "powerpc64",
  "powerpc64le",
  "powerpcle",
  "riscv32",
  "riscv64",
  "rx",
  "s390",
  "s390x",
  "vc4",
  "wasm32",
  "wasm64",
  "avr",
  "javascript",
];

export const KNOWN_KERNELS: readonly string[] = [
  "linux",
  "darwin",
  "freebsd",
  "netbsd",
  "openbsd",
  "cygwin",
  "windows",
  "solaris",
  "illumos",
  "redox",
  "genode",
  "wasi",
  "none",
  "ghcjs",
  "uefi",
];

/** The doubles users meet in practice (for listings and suggestions). */
export const COMMON_SYSTEMS: readonly string[] = [
  "x86_64-linux",
  "aarch64-linux",
  "i686-linux",
  "armv6l-linux",
  "armv7l-linux",
  "riscv64-linux",
  "powerpc64le-linux",
  "x86_64-darwin",
  "aarch64-darwin",
  "x86_64-freebsd",
];

/** The pseudo-system of `builtin:fetchurl` and friends; any machine takes such derivations. */
export const BUILTIN_SYSTEM = "builtin";

const CPUS = new Set(KNOWN_CPUS);
const KERNELS = new Set(KNOWN_KERNELS);

/** Split a double into cpu and kernel: the kernel is the part after the last `-`. */
export function splitSystem(s: string): { cpu: string; kernel: string } | null {
  const i = s.lastIndexOf("-");
  if (i <= 0 || i === s.length - 1) return null;
  return { cpu: s.slice(0, i), kernel: s.slice(i + 1) };
}

/** Is `s` a system double Nix users write (or `builtin`)? `x86_64` and `linux-x86_64` are not. */
export function isKnownSystem(s: string): boolean {
  if (s === BUILTIN_SYSTEM) return true;
  const p = splitSystem(s);
  return p !== null && CPUS.has(p.cpu) && KERNELS.has(p.kernel);
}

const CPU_ALIASES: Record<string, string> = {
  amd64: "x86_64",
  x64: "x86_64",
  "x86-64": "x86_64",
  x86: "i686",
  i386: "i686",
  i486: "i686",
  i586: "i686",
  arm64: "aarch64",
  armhf: "armv7l",
  armv7: "armv7l",
  armv7hl: "armv7l",
  armv6: "armv6l",
  ppc64le: "powerpc64le",
  ppc64el: "powerpc64le",
  ppc64: "powerpc64",
  ppc: "powerpc",
  riscv: "riscv64",
  rv64: "riscv64",
  loong64: "loongarch64",
};

const KERNEL_ALIASES: Record<string, string> = {
  macos: "darwin",
  osx: "darwin",
  macosx: "darwin",
  apple: "darwin",
  mac: "darwin",
  gnu: "linux",
  win32: "windows",
  win64: "windows",
  mingw32: "windows",
  w64: "windows",
};

function normCpu(c: string): string | null {
  if (CPUS.has(c)) return c;
  return CPU_ALIASES[c] ?? null;
}

function normKernel(k: string): string | null {
  if (KERNELS.has(k)) return k;
  return KERNEL_ALIASES[k] ?? null;
}

/**
 * A likely intended system double for something that is not one, or null when we have no guess.
 * `x86_64` → `x86_64-linux`, `linux-x86_64` → `x86_64-linux`, `arm64-darwin` → `aarch64-darwin`,
 * `x86_64-unknown-linux-gnu` → `x86_64-linux`, `X86_64-Linux` → `x86_64-linux`.
 */
export function suggestSystem(s: string): string | null {
  if (isKnownSystem(s)) return null;
  // `x86-64` / `x86_64` / `x8664` is one CPU name (else `x86` alone reads as i686)
  const lower = s
    .trim()
    .toLowerCase()
    .replace(/^x86[-_]?64(?=$|[-_])/, "x86_64");
  if (lower !== s && isKnownSystem(lower)) return lower;
  const parts = lower.split(/[-_]/).filter((x) => x !== "");
  // keep x86_64 / aarch64_be together: re-split on '-' only, but try both
  const dashParts = lower.split("-").filter((x) => x !== "");
  for (const ps of [dashParts, parts]) {
    let cpu: string | null = null;
    let kernel: string | null = null;
    for (const p of ps) {
      if (cpu === null) {
        const c = normCpu(p);
        if (c !== null) {
          cpu = c;
          continue;
        }
      }
      if (kernel === null) {
        const k = normKernel(p);
        if (k !== null) kernel = k;
      }
    }
    if (cpu === null && ps.includes("x86") && ps.includes("64")) cpu = "x86_64";
    if (cpu !== null && kernel === null && ps.length === 1) kernel = "linux";
    if (cpu !== null && kernel !== null) {
      const cand = `${cpu}-${kernel}`;
      if (isKnownSystem(cand)) return cand;
    }
    if (cpu === null && kernel !== null && ps.length === 1) {
      // a bare kernel ("linux", "darwin"): the common 64-bit double
      return kernel === "darwin" ? "aarch64-darwin" : `x86_64-${kernel}`;
    }
  }
  return null;
}
