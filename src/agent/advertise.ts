/**
 * What the agent advertises to hercules-ci.com (`Hercules/Agent/EnvironmentInfo.hs`):
 *
 * - platforms: the set {system} ∪ extra-platforms (a Haskell `Data.Set` of ByteString,
 *   `EnvironmentInfo.hs:75`, so sorted byte-wise and de-duplicated),
 *   then `remotePlatformsWithSameFeatures` appended as written (no de-duplication);
 * - systemFeatures: the set `system-features` (sorted, de-duplicated); one list for all platforms.
 *
 * Computed once at agent start-up from the Nix settings the agent's process sees, after
 * `nixSettings` are applied. The input is that effective view, as plain data.
 */

export interface AgentNixView {
  readonly system: string;
  readonly extraPlatforms: readonly string[];
  readonly systemFeatures: readonly string[];
}

export interface AgentAdvertisement {
  /** Exactly the list the agent sends, in its order. */
  readonly platforms: readonly string[];
  readonly systemFeatures: readonly string[];
  /** The local part: {system} ∪ extra-platforms. */
  readonly localPlatforms: readonly string[];
  /** The remotePlatformsWithSameFeatures part. */
  readonly remotePlatforms: readonly string[];
}

/** Byte-wise order, as `Data.Set ByteString` (ASCII names: same as UTF-16 order). */
function sortedSet(xs: Iterable<string>): string[] {
  return [...new Set(xs)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

export function agentAdvertisement(
  view: AgentNixView,
  remotePlatformsWithSameFeatures: readonly string[] | null | undefined,
): AgentAdvertisement {
  const localPlatforms = sortedSet([view.system, ...view.extraPlatforms]);
  const remotePlatforms = [...(remotePlatformsWithSameFeatures ?? [])];
  return {
    platforms: [...localPlatforms, ...remotePlatforms],
    systemFeatures: sortedSet(view.systemFeatures),
    localPlatforms,
    remotePlatforms,
  };
}
