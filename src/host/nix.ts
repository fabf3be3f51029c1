/**
 * The installed Nix: where its binaries are and which version it is.
 * Nix is looked up the way a user's shell would (PATH), then in the usual install locations.
 */
import { execFile } from "node:child_process";
import { accessSync, constants, realpathSync, statSync } from "node:fs";
import { join } from "node:path";
import { type NixVersion, parseNixVersion } from "../nix/version.js";
import { readCache, writeCache } from "./cache.js";

export interface NixInstall {
  /** Absolute path of the `nix` binary. */
  nixPath: string;
  /** Directory holding nix-store, nix-daemon, nix-build. */
  binDir: string;
  version: NixVersion;
  versionText: string;
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

/** Find Nix and read its version (`nix --version`). Returns null when Nix is not installed. */
export async function findNix(): Promise<NixInstall | null> {
  const nixPath = findNixBinary();
  if (!nixPath) return null;
  const st = statSync(nixPath);
  const key = `${nixPath}:${st.ino}:${st.mtimeMs}`;
  let text = readCache<string>("nix-version", key) ?? "";
  if (!text) {
    text = await new Promise<string>((resolve) => {
      execFile(nixPath, ["--version"], { timeout: 10_000 }, (err, stdout) => resolve(err ? "" : stdout));
    });
    if (text) writeCache("nix-version", key, text);
  }
  const version = parseNixVersion(text);
  if (!version) return null;
  let binDir = nixPath.slice(0, nixPath.lastIndexOf("/"));
  try {
    const real = realpathSync(nixPath);
    binDir = real.slice(0, real.lastIndexOf("/"));
  } catch {
    // keep the PATH directory
  }
  return { nixPath, binDir, version, versionText: text.trim() };
}
