/**
 * The real Nix installations the differential tests compare with: Debian's Nix 2.8 (/usr/bin) and a
 * Nix 2.30 at /opt/nix-current (scripts/provision installs it from a local build tarball when one is there;
 * NIX_BUILDERS_NIX_230 names another bin directory). A test that needs one skips with `skipReason`.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { type NixVersion, parseNixVersion } from "../../src/nix/version.js";

export interface RealNix {
  /** `2.8` or `2.30`: used in test names. */
  label: string;
  /** The bin directory holding `nix`. */
  bin: string;
  /** The `nix` binary. */
  nix: string;
  /** The build hook binary (started with argv0 `build-remote`). */
  buildRemote: string;
  /** The version the binary reports (null when it is absent or does not run). */
  version: NixVersion | null;
  /** Arguments that print the configuration as JSON. */
  configShowJson: string[];
  /** Why tests against this Nix are skipped, or false when it is there. */
  skipReason: string | false;
}

function probe(label: string, bin: string, buildRemote: string, configShowJson: string[]): RealNix {
  const nix = join(bin, "nix");
  let version: NixVersion | null = null;
  let skipReason: string | false = false;
  if (!existsSync(nix)) skipReason = `real Nix ${label} is absent (${nix}): differential test skipped`;
  else {
    const r = spawnSync(nix, ["--version"], { encoding: "utf8", timeout: 10_000 });
    version = r.status === 0 ? parseNixVersion(r.stdout) : null;
    if (version === null)
      skipReason = `real Nix ${label} at ${nix} does not run (${r.stderr || r.error}): skipped`;
    else if (`${version.major}.${version.minor}` !== label)
      skipReason = `${nix} is Nix ${version.major}.${version.minor}, not ${label}: skipped`;
  }
  return { label, bin, nix, buildRemote, version, configShowJson, skipReason };
}

/** Debian's nix-bin 2.8. */
export const NIX28: RealNix = probe("2.8", "/usr/bin", "/usr/libexec/nix/build-remote", [
  "show-config",
  "--json",
]);

const bin230 = process.env["NIX_BUILDERS_NIX_230"] || "/opt/nix-current/bin";

/** Nix 2.30 built for Debian 12 (no seccomp: builds need `filter-syscalls = false`). */
export const NIX230: RealNix = probe("2.30", bin230, join(dirname(bin230), "libexec/nix/build-remote"), [
  "config",
  "show",
  "--json",
]);

export const REAL_NIXES: readonly RealNix[] = [NIX28, NIX230];
