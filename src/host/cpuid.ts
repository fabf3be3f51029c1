/**
 * The CPU's own CPUID answers, read the way Nix reads them (through libcpuid, i.e. the CPUID
 * instruction run by an ordinary process), not from /proc/cpuinfo. The two differ: the kernel hides
 * or adds flags (a VM or sandbox may answer a user process differently from the kernel), so a model
 * built on /proc/cpuinfo disagrees with Nix on such machines.
 *
 * Node cannot run CPUID, so a 132-byte static x86-64 program does: it runs CPUID for a fixed list
 * of leaves and writes the registers to stdout. It is written into a fresh private directory
 * (mkdtemp, 0700; O_EXCL, 0700) and run with a deadline. Its source (GNU as):
 *
 *   _start: lea table(%rip),%rsi; sub $128,%rsp; mov %rsp,%rdi
 *   1: mov (%rsi),%eax; mov 4(%rsi),%ecx; cmp $0xffffffff,%eax; je 2f
 *      push %rsi; push %rdi; cpuid; pop %rdi; pop %rsi
 *      mov %eax,(%rdi); mov %ebx,4(%rdi); mov %ecx,8(%rdi); mov %edx,12(%rdi)
 *      add $16,%rdi; add $8,%rsi; jmp 1b
 *   2: mov %rdi,%rdx; sub %rsp,%rdx; mov %rsp,%rsi; mov $1,%edi; mov $1,%eax; syscall   # write(1, buf, n)
 *      xor %edi,%edi; mov $60,%eax; syscall                                              # exit(0)
 *   table: .long 0,0, 1,0, 7,0, 0x80000000,0, 0x80000001,0, 0xffffffff,0
 */
import { closeSync, constants, openSync, writeSync } from "node:fs";
import { join } from "node:path";
import { runProc } from "../os/proc.js";
import { withPrivateDir } from "./nix.js";

/** The leaves the program asks for, in order (subleaf 0 each). */
export const CPUID_LEAVES = [0, 1, 7, 0x80000000, 0x80000001] as const;

const CODE =
  "488d354d0000004881ec800000004889e78b068b4e0483f8ff741b56570fa25f5e8907895f04894f0889570c" +
  "4883c7104883c608ebdb4889fa4829e24889e6bf01000000b8010000000f0531ffb83c0000000f0500000000" +
  "000000000100000000000000070000000000000000000080000000000100008000000000ffffffff00000000";

/** A minimal static ELF64 executable (one PT_LOAD segment, R+X) holding CODE. */
export function cpuidProgram(): Buffer {
  const code = Buffer.from(CODE, "hex");
  const base = 0x400000n;
  const off = 64 + 56;
  const b = Buffer.alloc(off + code.length);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0], 0); // \x7fELF, 64-bit, little-endian, version 1, SysV
  b.writeUInt16LE(2, 16); // ET_EXEC
  b.writeUInt16LE(0x3e, 18); // EM_X86_64
  b.writeUInt32LE(1, 20); // EV_CURRENT
  b.writeBigUInt64LE(base + BigInt(off), 24); // e_entry
  b.writeBigUInt64LE(64n, 32); // e_phoff
  b.writeUInt16LE(64, 52); // e_ehsize
  b.writeUInt16LE(56, 54); // e_phentsize
  b.writeUInt16LE(1, 56); // e_phnum
  b.writeUInt16LE(64, 58); // e_shentsize
  b.writeUInt32LE(1, 64); // PT_LOAD
  b.writeUInt32LE(5, 68); // PF_R | PF_X
  b.writeBigUInt64LE(0n, 72); // p_offset
  b.writeBigUInt64LE(base, 80); // p_vaddr
  b.writeBigUInt64LE(base, 88); // p_paddr
  b.writeBigUInt64LE(BigInt(b.length), 96); // p_filesz
  b.writeBigUInt64LE(BigInt(b.length), 104); // p_memsz
  b.writeBigUInt64LE(0x1000n, 112); // p_align
  code.copy(b, off);
  return b;
}

/** CPUID registers [eax, ebx, ecx, edx] per leaf. */
export type CpuidRegs = Record<number, readonly [number, number, number, number]>;

export function parseCpuidOutput(out: Buffer): CpuidRegs | null {
  if (out.length !== CPUID_LEAVES.length * 16) return null;
  const regs: CpuidRegs = {};
  CPUID_LEAVES.forEach((leaf, i) => {
    const at = i * 16;
    regs[leaf] = [
      out.readUInt32LE(at),
      out.readUInt32LE(at + 4),
      out.readUInt32LE(at + 8),
      out.readUInt32LE(at + 12),
    ];
  });
  return regs;
}

/** Run CPUID as an ordinary process does; null when this is not x86-64 Linux or it cannot run. */
export async function readCpuid(): Promise<CpuidRegs | null> {
  if (process.platform !== "linux" || process.arch !== "x64") return null;
  try {
    return await withPrivateDir("nix-builders-cpuid-", async (dir) => {
      const file = join(dir, "cpuid");
      const fd = openSync(
        file,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        0o700,
      );
      try {
        writeSync(fd, cpuidProgram());
      } finally {
        closeSync(fd);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      const r = await runProc([file], {
        env: {},
        deadlineMs: 5_000,
        killAfterMs: 0,
        onStdout: (b) => {
          if (size < 4096) chunks.push(b);
          size += b.length;
        },
      });
      if (r.code !== 0) return null;
      const out = Buffer.concat(chunks);
      return parseCpuidOutput(out);
    });
  } catch {
    return null; // e.g. a noexec /tmp
  }
}
