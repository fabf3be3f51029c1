/**
 * Nix versions and the behaviour switches that depend on them.
 *
 * The tool follows the installed Nix by default; `--nix-version X.Y[.Z]` overrides it (the patch level
 * matters for a few rules, e.g. `connect-timeout`). Two releases are checked by tests against the real
 * binaries: 2.8 (Debian 12) and 2.30 (2.30.5); everything else is mapped by the version thresholds
 * recorded, with their sources, in docs/nix-versions.md, and rules after 2.30 are modelled.
 */

export interface NixVersion {
  readonly major: number;
  readonly minor: number;
  readonly patch: number;
}

/** The newest Nix whose rules we model; used when no Nix is installed. */
export const NIX_LATEST: NixVersion = { major: 2, minor: 35, patch: 2 };
export const NIX_2_8: NixVersion = { major: 2, minor: 8, patch: 0 };

/** Parse "2.8", "2.8.0", "nix (Nix) 2.8.0", "2.24.0pre2024". Returns null when no version is found. */
export function parseNixVersion(text: string): NixVersion | null {
  const m = /(\d+)\.(\d+)(?:\.(\d+))?/.exec(text);
  if (!m) return null;
  return { major: Number(m[1]), minor: Number(m[2]), patch: m[3] === undefined ? 0 : Number(m[3]) };
}

/** True when `v` is at least major.minor. */
export function atLeast(v: NixVersion, major: number, minor: number): boolean {
  return v.major > major || (v.major === major && v.minor >= minor);
}

/** True when `v` is at least major.minor.patch. */
export function atLeastPatch(v: NixVersion, major: number, minor: number, patch: number): boolean {
  if (v.major !== major) return v.major > major;
  if (v.minor !== minor) return v.minor > minor;
  return v.patch >= patch;
}

export function formatNixVersion(v: NixVersion): string {
  return `${v.major}.${v.minor}.${v.patch}`;
}

/** The oldest Nix whose rules we model (Debian 12's nix-bin). */
export const NIX_OLDEST: NixVersion = { major: 2, minor: 8, patch: 0 };

/**
 * A `--nix-version` we can follow: before 2.8 is refused (`error`; nothing older is modelled, and Nix 1.x
 * had no `builders` setting); after the newest modelled release it is followed with a `note` (its rules are
 * those of the newest modelled release, which may be wrong).
 */
export function modelledVersion(v: NixVersion): { error?: string; note?: string } {
  if (!atLeast(v, NIX_OLDEST.major, NIX_OLDEST.minor))
    return {
      error: `--nix-version ${formatNixVersion(v)}: Nix before ${NIX_OLDEST.major}.${NIX_OLDEST.minor} is not modelled (choose ${NIX_OLDEST.major}.${NIX_OLDEST.minor} or later)`,
    };
  if (atLeast(v, NIX_LATEST.major, NIX_LATEST.minor + 1))
    return {
      note: `Nix ${formatNixVersion(v)} is newer than the newest modelled release: following Nix ${NIX_LATEST.major}.${NIX_LATEST.minor}'s rules, which may differ`,
    };
  return {};
}
