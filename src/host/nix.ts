/**
 * The installed Nix: where its binaries are and which version it is.
 * Nix is looked up the way a user's shell would (PATH), then in the usual install locations.
 *
 * Every Nix command reads nix.conf first and stops on a bad line, even `nix --version`. So Nix is
 * always asked with a configuration that cannot fail: a private, empty NIX_CONF_DIR (mkdtemp, 0700),
 * no NIX_CONFIG, no user files, HOME and XDG_* pointing into that empty directory.
 */
import { accessSync, constants, mkdtempSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type NixVersion, parseNixVersion } from "../nix/version.js";
import { failureText, runProc } from "../os/proc.js";
import { fileIdentity, readCache, writeCache } from "./cache.js";

export interface NixInstall {
  /** Absolute path of the `nix` binary. */
  nixPath: string;
  /** Directory holding nix-store, nix-daemon, nix-build. */
  binDir: string;
  version: NixVersion;
  versionText: string;
}

/** What looking for Nix found: the install, or a binary whose version could not be read, or nothing. */
export interface NixProbe {
  install: NixInstall | null;
  /** The `nix` binary found, even when its version could not be read. */
  nixPath: string | null;
  /** Why the version could not be read (set when nixPath is set and install is null). */
  problem?: string;
}

const WELL_KNOWN = [
  "/nix/var/nix/profiles/default/bin",
  "/run/current-system/sw/bin",
  "/usr/bin",
  "/usr/local/bin",
];

function isExecutable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function findNixBinary(path: string | undefined = process.env["PATH"]): string | null {
  const dirs = [...(path ?? "").split(":").filter(Boolean), ...WELL_KNOWN];
  for (const d of dirs) {
    const p = join(d, "nix");
    if (isExecutable(p)) return p;
  }
  return null;
}

/**
 * Run `fn` with a fresh private directory (mkdtemp: a new random name, mode 0700, never a directory
 * someone made beforehand), removed afterwards.
 */
export async function withPrivateDir<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  try {
    return await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The environment for asking Nix about itself: only PATH from ours, and a configuration that cannot
 * fail or be chosen by anyone else. `empty` must be a private, empty directory.
 */
export function emptyNixEnv(empty: string, path = process.env["PATH"]): NodeJS.ProcessEnv {
  return {
    PATH: path ?? "/usr/bin:/bin",
    NIX_CONF_DIR: empty,
    // No user configuration files: a path inside the private directory that does not exist.
    NIX_USER_CONF_FILES: join(empty, "none.conf"),
    HOME: empty,
    XDG_CONFIG_HOME: empty,
    XDG_CONFIG_DIRS: empty,
    XDG_CACHE_HOME: empty,
    XDG_DATA_HOME: empty,
    XDG_STATE_HOME: empty,
    NIX_CONFIG_HOME: empty,
  };
}

/** Run a program with a deadline; resolves with stdout, or rejects with a one-line reason. */
export async function runWithDeadline(
  argv: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 10_000,
  maxBuffer = 16 << 20,
): Promise<string> {
  const r = await runProc(argv, {
    env,
    cwd: process.cwd(),
    deadlineMs: timeoutMs,
    maxOutputBytes: maxBuffer,
  });
  if (r.truncated.stdout > 0) throw new Error(`more than ${maxBuffer} bytes of output`);
  const why = failureText(r);
  if (why !== null) throw new Error(r.timedOut ? `no answer within ${timeoutMs / 1000} s` : why);
  return r.stdout;
}

/** A cached version text must look like what `nix --version` prints. */
export function validVersionText(v: unknown): string | undefined {
  if (typeof v !== "string" || v.length > 200) return undefined;
  if (!/^nix \([^()\n]{1,60}\) \d+\.\d+(\.\d+)?[0-9A-Za-z.+_-]*\n?$/.test(v)) return undefined;
  return versionOfText(v) ? v : undefined;
}

/** The version in `nix --version`'s text: the number after the "(…)" (which may hold numbers itself). */
export function versionOfText(text: string): NixVersion | null {
  return parseNixVersion(text.slice(text.lastIndexOf(")") + 1));
}

/** Find Nix and read its version, saying why when the version cannot be read. */
export async function probeNix(path: string | undefined = process.env["PATH"]): Promise<NixProbe> {
  const nixPath = findNixBinary(path);
  if (!nixPath) return { install: null, nixPath: null };
  const key = fileIdentity(nixPath);
  let text = key ? (readCache("nix-version", key, validVersionText) ?? "") : "";
  if (!text) {
    try {
      text = await withPrivateDir("nix-builders-conf-", (empty) =>
        runWithDeadline([nixPath, "--version"], emptyNixEnv(empty, path)),
      );
    } catch (e) {
      return { install: null, nixPath, problem: `'${nixPath} --version' failed (${(e as Error).message})` };
    }
    if (!validVersionText(text))
      return {
        install: null,
        nixPath,
        problem: `'${nixPath} --version' printed no Nix version: '${text.trim().slice(0, 100)}'`,
      };
    if (key) writeCache("nix-version", key, text);
  }
  const version = versionOfText(text)!;
  let binDir = nixPath.slice(0, nixPath.lastIndexOf("/"));
  try {
    const real = realpathSync(nixPath);
    binDir = real.slice(0, real.lastIndexOf("/"));
  } catch {
    // keep the PATH directory
  }
  return { install: { nixPath, binDir, version, versionText: text.trim() }, nixPath };
}

/** Find Nix and read its version (`nix --version`). Returns null when Nix is not installed or says no version. */
export async function findNix(): Promise<NixInstall | null> {
  return (await probeNix()).install;
}
