/**
 * The agent's `nixSettings` as client overrides for the config engine.
 *
 * The agent applies each entry with Nix's global config setter in its own process, before it
 * computes what it advertises (`Hercules/Agent/Nix/Init.hs`), and passes the same pairs to workers
 * and to the effect daemon proxy. The map is a Haskell `Data.Map`, so the entries are applied in
 * ascending key order (code-point order), not in file order. The agent's docs call the map
 * unordered; we report the order the current code uses, and warn when it matters.
 *
 * Layering: these come after the agent user's nix.conf files and NIX_CONFIG, like `--option`
 * flags. As with any client-side override, they reach the nix-daemon only if the agent user is
 * trusted (except the few settings the daemon accepts from anyone).
 */

import type { Origin } from "../nix/origin.js";
import { type AgentFinding, finding } from "./findings.js";

export type AgentOrigin = Extract<Origin, { kind: "agent" }>;

export interface AgentNixOverride {
  readonly name: string;
  readonly value: string;
  readonly origin: AgentOrigin;
}

/** Code-point order, as Haskell's `Ord Text`. */
function compareCodePoints(a: string, b: string): number {
  const aa = Array.from(a);
  const bb = Array.from(b);
  for (let i = 0; i < Math.min(aa.length, bb.length); i++) {
    const x = aa[i]!.codePointAt(0)!;
    const y = bb[i]!.codePointAt(0)!;
    if (x !== y) return x - y;
  }
  return aa.length - bb.length;
}

/** The agent's `nixSettings` as overrides, in the order the agent applies them. */
export function agentNixOverrides(config: {
  readonly file: string;
  readonly nixSettings: Readonly<Record<string, string>>;
}): AgentNixOverride[] {
  return Object.keys(config.nixSettings)
    .sort(compareCodePoints)
    .map((name) => ({
      name,
      value: config.nixSettings[name]!,
      origin: { kind: "agent", file: config.file, key: `nixSettings.${name}` },
    }));
}

/**
 * Findings about `nixSettings` itself: `x` together with `extra-x` (order-dependent result), and,
 * when a list of known Nix settings is given, names Nix would not recognise (the agent does not
 * check the setter's result, so these are ignored silently).
 */
export function agentNixSettingsFindings(
  nixSettings: Readonly<Record<string, string>>,
  file: string,
  lineOf: (path: string) => number | null = () => null,
  knownNixSettings?: ReadonlySet<string>,
): AgentFinding[] {
  const out: AgentFinding[] = [];
  const names = Object.keys(nixSettings);
  for (const name of names) {
    if (!name.startsWith("extra-")) continue;
    const base = name.slice("extra-".length);
    if (!(base in nixSettings)) continue;
    const extraFirst = compareCodePoints(name, base) < 0;
    const effect = extraFirst
      ? `the current agent applies ${name} before ${base}, so ${base} replaces the value and ${name} has no effect`
      : `the current agent applies ${base} before ${name}, so the result is ${base} followed by ${name}`;
    out.push(
      finding(
        "agent-nix-settings-extra-and-plain",
        "warning",
        `nixSettings sets both ${base} and ${name}. The agent documents nixSettings as unordered, so the result is not specified; ${effect}.`,
        `Use one key: put the complete value in ${base}, or only add to the system value with ${name}.`,
        { file, line: lineOf(`nixSettings.${name}`) ?? lineOf("nixSettings") },
      ),
    );
  }
  if (knownNixSettings) {
    for (const name of names) {
      const base = name.replace(/^extra-/, "");
      if (!knownNixSettings.has(base)) {
        out.push(
          finding(
            "agent-nix-settings-unknown",
            "warning",
            `nixSettings.${name} is not a Nix setting known to this Nix version; the agent ignores unknown settings without warning.`,
            "Check the spelling against `nix config show`, or remove it.",
            { file, line: lineOf(`nixSettings.${name}`) ?? lineOf("nixSettings") },
          ),
        );
      }
    }
  }
  return out;
}
