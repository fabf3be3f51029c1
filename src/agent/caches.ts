/**
 * binary-caches.json, and the Nix settings every task of the agent really runs with.
 *
 * hercules-ci-agent 0.10.8 (`037a7f91`), see docs/agent.md §3a:
 * - At start-up the agent parses binary-caches.json (`Hercules/Agent/Config/BinaryCaches.hs`): a
 *   missing file or a decode error is fatal. Entries are claimed by `kind`: `CachixCache`,
 *   `NixCache`; any other kind is logged as unknown. An empty set of caches is only warned about.
 * - For every task (`Hercules/Agent.hs` `launchTask'`: `Netrc.withNixNetrc $ Cache.withCaches`) it
 *   appends three settings after the `nixSettings` pairs (`Hercules/Agent/Cache.hs` `withCaches`,
 *   `Hercules/Agent/Nix.hs` `withExtraOptions`):
 *     netrc-file          = a fresh file in <workDirectory>/secure holding the agent's own netrc-file
 *                           lines plus one line per Cachix cache with an auth token;
 *     substituters        = NixCache storeURIs ++ the agent's own substituters ++ https://<name>.cachix.org;
 *     trusted-public-keys = NixCache publicKeys ++ the agent's own trusted-public-keys ++ Cachix publicKeys.
 *   Caches come in name order (Haskell `Data.Map`). "The agent's own" is its process's view after
 *   nixSettings (`EnvironmentInfo.getNixInfo`); substituters there are rendered by Nix as store URIs,
 *   de-duplicated, and those containing `@` are replaced by a placeholder (`cleanUrl`).
 * - Workers apply the pairs in order with Nix's setter (`Worker.hs` `setOptions`), so these three
 *   replace whatever nixSettings said for the same names.
 * - The worker talks to the nix-daemon as the agent user. A trusted user's settings all apply. For an
 *   untrusted user the daemon keeps only substituters it already lists in substituters or
 *   trusted-substituters, and ignores trusted-public-keys and netrc-file (Nix daemon `setOptions`,
 *   modelled in src/nix/trust.ts). That is what the agent's start-up warning means by "ensures that
 *   your cache configuration is compatible with the system" (`Hercules/Agent.hs` `configChecks`).
 *
 * Never returns key material: authToken and signingKeys are counted, not kept; URIs with user info are
 * redacted for display.
 */

import { applyClientSettings, filterSubstituters, type OverriddenSetting } from "../nix/trust.js";
import type { NixVersion } from "../nix/version.js";
import { type AgentFinding, finding } from "./findings.js";

export interface NixCacheEntry {
  readonly name: string;
  readonly storeURI: string;
  readonly publicKeys: readonly string[];
}

export interface CachixCacheEntry {
  readonly name: string;
  readonly publicKeys: readonly string[];
  /** An authToken is present: the agent writes a netrc line for `<name>.cachix.org`. */
  readonly hasAuthToken: boolean;
}

export interface BinaryCaches {
  readonly file: string;
  /** In the agent's order: by name (code points). */
  readonly nixCaches: readonly NixCacheEntry[];
  readonly cachixCaches: readonly CachixCacheEntry[];
  readonly unknownKinds: readonly { readonly name: string; readonly kind: string }[];
}

export interface BinaryCachesResult {
  /** null when the agent would refuse to start (or the file could not be read). */
  readonly caches: BinaryCaches | null;
  readonly findings: readonly AgentFinding[];
}

/** Code-point order, as Haskell's `Ord Text`. */
function byCodePoints(a: string, b: string): number {
  const aa = Array.from(a);
  const bb = Array.from(b);
  for (let i = 0; i < Math.min(aa.length, bb.length); i++) {
    const d = aa[i]!.codePointAt(0)! - bb[i]!.codePointAt(0)!;
    if (d !== 0) return d;
  }
  return aa.length - bb.length;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isTextList(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === "string");
}

/** Replace the user-info part of a URI (`https://user:pass@host` → `https://<redacted>@host`). */
export function redactUri(uri: string): string {
  return uri.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/?#@]*@/, "$1<redacted>@");
}

/**
 * Decode binary-caches.json text as the agent does. Errors never quote the file (it holds secrets).
 */
export function parseBinaryCaches(text: string, file: string): BinaryCachesResult {
  const fatal = (why: string): BinaryCachesResult => ({
    caches: null,
    findings: [
      finding(
        "agent-binary-caches-invalid",
        "error",
        `${file}: ${why}; the agent refuses to start when it cannot decode binary-caches.json.`,
        "Fix the file; see https://docs.hercules-ci.com/hercules-ci/reference/binary-caches-json/",
        { file },
      ),
    ],
  });
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch {
    return fatal("not valid JSON");
  }
  if (!isObject(root)) return fatal("the top level is not a JSON object");
  const nixCaches: NixCacheEntry[] = [];
  const cachixCaches: CachixCacheEntry[] = [];
  const unknownKinds: { name: string; kind: string }[] = [];
  for (const name of Object.keys(root).sort(byCodePoints)) {
    const v = root[name];
    const kind = isObject(v) ? v.kind : undefined;
    if (isObject(v) && (kind === "CachixCache" || kind === "NixCache")) {
      if ("apiVersion" in v) return fatal(`entry ${JSON.stringify(name)} has an apiVersion field`);
      if (!isTextList(v.publicKeys))
        return fatal(`entry ${JSON.stringify(name)}: publicKeys must be a list of strings`);
      if (kind === "CachixCache") {
        if (v.signingKeys !== undefined && v.signingKeys !== null && !isTextList(v.signingKeys))
          return fatal(`entry ${JSON.stringify(name)}: signingKeys must be a list of strings`);
        if (v.authToken !== undefined && v.authToken !== null && typeof v.authToken !== "string")
          return fatal(`entry ${JSON.stringify(name)}: authToken must be a string`);
        cachixCaches.push({ name, publicKeys: v.publicKeys, hasAuthToken: typeof v.authToken === "string" });
      } else {
        if (typeof v.storeURI !== "string")
          return fatal(`entry ${JSON.stringify(name)}: storeURI must be a string`);
        if (!isTextList(v.signingKeys))
          return fatal(`entry ${JSON.stringify(name)}: signingKeys must be a list of strings`);
        nixCaches.push({ name, storeURI: v.storeURI, publicKeys: v.publicKeys });
      }
      continue;
    }
    if (!isObject(v) || typeof kind !== "string")
      return fatal(`entry ${JSON.stringify(name)} is not an object with a string "kind"`);
    unknownKinds.push({ name, kind });
  }
  const findings: AgentFinding[] = [];
  if (nixCaches.length === 0 && cachixCaches.length === 0) {
    findings.push(
      finding(
        "agent-binary-caches-none",
        "info",
        `${file} configures no caches; the agent warns that a cache is required for more than one agent and across garbage collection.`,
        null,
        { file },
      ),
    );
  }
  for (const u of unknownKinds) {
    findings.push(
      finding(
        "agent-binary-caches-unknown-kind",
        "warning",
        `${file}: entry ${u.name} has kind ${JSON.stringify(u.kind)}, which the agent does not know; it warns at start-up and ignores the entry.`,
        'Use kind "CachixCache" or "NixCache".',
        { file },
      ),
    );
  }
  return { caches: { file, nixCaches, cachixCaches, unknownKinds }, findings };
}

/**
 * Nix's rendering of a substituter as a store URI, as the agent reports its own substituters
 * (`EnvironmentInfo.cleanUrl`: anything with `@` becomes a placeholder; otherwise the store's URI,
 * which drops `?parameters`, and for HTTP(S) caches also trailing slashes). Approximate for
 * store types other than http(s) and file.
 */
export const CENSORED_URI = "<URI censored; might contain secret>";
export function agentCleanSubstituter(s: string): string {
  if (s.includes("@")) return CENSORED_URI;
  const noQuery = s.split("?")[0]!;
  return /^https?:\/\//.test(noQuery) ? noQuery.replace(/\/+$/, "") : noQuery;
}

export interface TaskNixSettingsInput {
  readonly version: NixVersion;
  /** The agent's nixSettings, in the order it applies them (agentNixOverrides). */
  readonly nixSettings: readonly { readonly name: string; readonly value: string }[];
  /** The agent process's own view after nixSettings. */
  readonly agent: {
    readonly substituters: readonly string[];
    readonly trustedPublicKeys: readonly string[];
    readonly netrcFile: string | null;
  };
  /** null when binary-caches.json could not be read: then only what is certain is given. */
  readonly caches: BinaryCaches | null;
  readonly workDirectory: string;
  /** How the worker reaches the store. */
  readonly store: "trusted" | "untrusted" | "local";
  /** The daemon's own settings (ignored for a local store). */
  readonly daemon: {
    readonly substituters: readonly string[];
    readonly trustedSubstituters: readonly string[];
    readonly trustedPublicKeys: readonly string[];
    readonly netrcFile: string;
  };
  /** Everything else the agent user's client sends (user nix.conf, NIX_CONFIG, nixSettings), for the ignored list. */
  readonly overridden?: readonly OverriddenSetting[];
}

export interface TaskSettingPair {
  readonly name: string;
  readonly value: string;
  readonly from: "nixSettings" | "caches";
}

export interface TaskNixSettings {
  /** binary-caches.json was read; when false, substituters/keys show only the agent's own part. */
  readonly cachesKnown: boolean;
  /** What a worker applies, in order (later pairs win). */
  readonly pairs: readonly TaskSettingPair[];
  /** The result in the worker's own process. */
  readonly task: {
    readonly substituters: readonly string[];
    readonly trustedPublicKeys: readonly string[];
    readonly netrcFile: string;
  };
  /** What the store really uses for the task's builds and substitutions. */
  readonly daemon: {
    readonly store: "trusted" | "untrusted" | "local";
    readonly substituters: readonly string[];
    readonly trustedPublicKeys: readonly string[];
    readonly netrcFile: string;
    /** Substituters of the task that the daemon drops (untrusted only). */
    readonly droppedSubstituters: readonly string[];
    /** Settings the client sends that the store applies for the task (last value per name). */
    readonly applied: readonly { readonly setting: string; readonly value: string }[];
    /** Settings of the task that the daemon ignores for this user, with Nix's reason. */
    readonly ignored: readonly { readonly setting: string; readonly why: string }[];
  };
  readonly findings: readonly AgentFinding[];
}

/** The result with every URI's user info redacted (the model works on the real values). */
function redacted(t: TaskNixSettings): TaskNixSettings {
  const r = (xs: readonly string[]): string[] => xs.map(redactUri);
  return {
    ...t,
    pairs: t.pairs.map((p) =>
      p.name === "substituters" || p.name === "extra-substituters"
        ? { ...p, value: r(p.value.split(" ")).join(" ") }
        : p,
    ),
    task: { ...t.task, substituters: r(t.task.substituters) },
    daemon: {
      ...t.daemon,
      substituters: r(t.daemon.substituters),
      droppedSubstituters: r(t.daemon.droppedSubstituters),
      applied: t.daemon.applied.map((a) =>
        a.setting === "substituters" ? { ...a, value: r(a.value.split(" ")).join(" ") } : a,
      ),
    },
  };
}

function ordNub(xs: readonly string[]): string[] {
  return [...new Set(xs)];
}

/** The Nix settings every task of the agent runs with, and what the store keeps of them. */
export function taskNixSettings(input: TaskNixSettingsInput): TaskNixSettings {
  const caches = input.caches;
  const own = ordNub(input.agent.substituters.map(agentCleanSubstituter));
  const substituters = [
    ...(caches?.nixCaches.map((c) => c.storeURI) ?? []),
    ...own,
    ...(caches?.cachixCaches.map((c) => `https://${c.name}.cachix.org`) ?? []),
  ];
  const trustedPublicKeys = [
    ...(caches?.nixCaches.flatMap((c) => c.publicKeys) ?? []),
    ...input.agent.trustedPublicKeys,
    ...(caches?.cachixCaches.flatMap((c) => c.publicKeys) ?? []),
  ];
  const netrcFile = `${input.workDirectory.replace(/\/+$/, "")}/secure/tmp-netrc<random>.key`;
  const pairs: TaskSettingPair[] = [
    ...input.nixSettings.map((p) => ({ name: p.name, value: p.value, from: "nixSettings" as const })),
    { name: "netrc-file", value: netrcFile, from: "caches" },
    { name: "substituters", value: substituters.join(" "), from: "caches" },
    { name: "trusted-public-keys", value: trustedPublicKeys.join(" "), from: "caches" },
  ];
  const task = { substituters, trustedPublicKeys, netrcFile };
  const findings: AgentFinding[] = [];

  if (input.store !== "untrusted") {
    return redacted({
      cachesKnown: caches !== null,
      pairs,
      task,
      daemon: {
        store: input.store,
        ...task,
        droppedSubstituters: [],
        applied: [...new Map(pairs.map((p) => [p.name, p.value])).entries()].map(([setting, value]) => ({
          setting,
          value,
        })),
        ignored: [],
      },
      findings,
    });
  }

  // Untrusted: what the daemon does with what the worker sends (the three cache settings replace
  // any earlier value of the same name, as in the worker).
  const origin = { kind: "agent", file: caches?.file ?? "binary-caches.json", key: "caches" } as const;
  const mine = new Set(["substituters", "trusted-public-keys", "netrc-file"]);
  const overridden: OverriddenSetting[] = [
    ...(input.overridden ?? []).filter((s) => !mine.has(s.name) && s.name !== "extra-substituters"),
    { name: "netrc-file", value: netrcFile, origin },
    { name: "substituters", value: substituters.join(" "), origin },
    { name: "trusted-public-keys", value: trustedPublicKeys.join(" "), origin },
  ];
  const result = applyClientSettings({
    version: input.version,
    trusted: false,
    overridden,
    daemonSettings: {
      substituters: input.daemon.substituters,
      trustedSubstituters: input.daemon.trustedSubstituters,
    },
  });
  const { kept, rejected } = filterSubstituters(substituters, input.daemon);
  const ignored = result.ignored
    .filter((i) => i.setting !== "substituters")
    .map((i) => ({ setting: i.setting, why: i.why }));
  const daemon = {
    store: input.store,
    substituters: kept,
    trustedPublicKeys: [...input.daemon.trustedPublicKeys],
    netrcFile: input.daemon.netrcFile,
    droppedSubstituters: rejected,
    applied: result.applied.map((a) => ({ setting: a.setting, value: a.value })),
    ignored,
  };

  const cacheSubs = [
    ...(caches?.nixCaches.map((c) => c.storeURI) ?? []),
    ...(caches?.cachixCaches.map((c) => `https://${c.name}.cachix.org`) ?? []),
  ];
  const droppedCaches = cacheSubs.filter((s) => rejected.includes(s));
  const daemonKeys = new Set(input.daemon.trustedPublicKeys);
  const keptWithoutKey = [
    ...(caches?.nixCaches.map((c) => ({ uri: c.storeURI, keys: c.publicKeys })) ?? []),
    ...(caches?.cachixCaches.map((c) => ({ uri: `https://${c.name}.cachix.org`, keys: c.publicKeys })) ?? []),
  ].filter((c) => !rejected.includes(c.uri) && c.keys.length > 0 && !c.keys.some((k) => daemonKeys.has(k)));
  const private_ =
    caches?.cachixCaches.filter((c) => c.hasAuthToken).map((c) => `${c.name}.cachix.org`) ?? [];

  findings.push(
    finding(
      "agent-caches-untrusted",
      droppedCaches.length > 0 || keptWithoutKey.length > 0 || private_.length > 0 ? "warning" : "info",
      "For every task the agent sets substituters, trusted-public-keys and netrc-file from binary-caches.json and Cachix, after nixSettings. " +
        "The agent user is not trusted, so the nix-daemon keeps only substituters it already lists, and ignores the task's trusted-public-keys and netrc-file" +
        (droppedCaches.length > 0
          ? `: it drops ${droppedCaches.map(redactUri).join(", ")}, so the task's builds do not substitute from ${droppedCaches.length === 1 ? "it" : "them"}`
          : caches === null
            ? " (binary-caches.json was not read here, so which caches are affected is unknown)"
            : "") +
        (keptWithoutKey.length > 0
          ? `; ${keptWithoutKey.map((c) => redactUri(c.uri)).join(", ")} ${keptWithoutKey.length === 1 ? "is" : "are"} kept, but the daemon does not trust ${keptWithoutKey.length === 1 ? "its" : "their"} public key, so paths from ${keptWithoutKey.length === 1 ? "it" : "them"} are refused as unsigned`
          : "") +
        (private_.length > 0 ? `; the auth tokens for ${private_.join(", ")} never reach the daemon` : "") +
        '. The agent warns about this at start-up ("cache configuration is compatible with the system").',
      "Add the agent user to trusted-users in /etc/nix/nix.conf and set nixUserIsTrusted = true (the NixOS and nix-darwin modules do both), or list the caches in the daemon's trusted-substituters and their keys in its trusted-public-keys (private caches also need the daemon's netrc-file).",
    ),
  );
  return redacted({ cachesKnown: caches !== null, pairs, task, daemon, findings });
}

// ---------------------------------------------------------------------------------------------
// Reading binary-caches.json (edge)
