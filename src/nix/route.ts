/**
 * Nix's builder-selection decision, as a pure function, for Nix 2.8 and current Nix ("HEAD", 2.35).
 *
 * It models two programs:
 *   - the parent (the process that performs the build: nix-build, nix build or the daemon), which decides
 *     whether to ask the build hook at all and what happens after the hook declines;
 *   - the hook (`build-remote`), which picks a machine from the `builders` list given the live load.
 *
 * See docs/routing.md for the rules and the version differences. Nothing here does I/O.
 */

import { overlongSlotName, renderStoreUri } from "./store-uri.js";
import { NIX_2_8, NIX_LATEST, type NixVersion } from "./version.js";
import { NIX, since } from "./versions.js";

/** The machine fields the decision needs. Structurally compatible with `Machine` from machines.ts. */
export interface RouteMachine {
  readonly storeUri: string;
  readonly systemTypes: readonly string[];
  readonly maxJobs: number;
  readonly speedFactor: number;
  readonly supportedFeatures: readonly string[];
  readonly mandatoryFeatures: readonly string[];
}

export interface RouteDrv {
  /** Full store path of the .drv, e.g. /nix/store/…-x.drv. Used in messages only. */
  readonly path?: string;
  readonly system: string;
  /** Required features as Nix computes them (requiredSystemFeatures, plus ca-derivations for floating CA). */
  readonly requiredFeatures: readonly string[];
  readonly preferLocalBuild: boolean;
  /** The builder starts with `builtin:`. Defaults to `system === "builtin"`. */
  readonly isBuiltin?: boolean;
}

export interface RouteLocal {
  /** The `system` setting. */
  readonly system: string;
  readonly extraPlatforms: readonly string[];
  /** The `system-features` setting (the store adds features for experimental features, see below). */
  readonly systemFeatures: readonly string[];
  /** The `max-jobs` setting. */
  readonly maxJobs: number;
  readonly experimentalFeatures: readonly string[];
}

export type RouteFamily = "2.8" | "head";

export interface RouteInput {
  /** A Nix version, or one of the two modelled families. */
  readonly version: NixVersion | RouteFamily;
  readonly drv: RouteDrv;
  readonly machines: readonly RouteMachine[];
  /** Busy slots per store URI (slots 0…maxJobs-1 whose lock is held). Missing = 0. */
  readonly load?: ReadonlyMap<string, number>;
  readonly local: RouteLocal;
  /**
   * What the parent sends as `amWilling`: whether a local build slot is free right now
   * (number of running local builds < max-jobs). Defaults to `max-jobs > 0` (nothing running locally).
   */
  readonly amWilling?: boolean;
  /** Build mode; repair and check always build locally. Default "normal". */
  readonly buildMode?: "normal" | "repair" | "check";
  /** Store URIs the hook has disabled after a failed connection (in the same hook process). */
  readonly disabled?: ReadonlySet<string>;
  /** Nix's state directory, for the slot lock file paths in messages. Default /nix/var/nix. */
  readonly stateDir?: string;
}

export type DecisionKind = "remote" | "local" | "postpone" | "none";

export type HookReply = "accept" | "decline" | "decline-permanently" | "postpone";

export interface RouteDecision {
  readonly kind: DecisionKind;
  /** The chosen machine, when kind is "remote". */
  readonly storeUri?: string;
  /**
   * The chosen machine's URI as Nix prints it (`# accept`, `building '…' on '…'`): from 2.23 the rendered
   * reference (`/tmp/m` → `local:///tmp/m`, see `renderStoreUri`), before that the text as written.
   */
  readonly printedUri?: string;
  /**
   * What the user sees for this outcome: `waiting for a machine to build '…'` (postpone),
   * the local-fallback error or the stall error (none), or a note (local).
   */
  readonly message?: string;
}

export interface MachineRow {
  readonly storeUri: string;
  /** The machine can take the derivation now (right type and a free slot). */
  readonly eligible: boolean;
  /** Right system and features (Nix's `rightType`), regardless of slots. */
  readonly rightType: boolean;
  /** Every reason the machine is not eligible, in plain words. Empty when eligible. */
  readonly reasons: string[];
  readonly load: number;
  readonly freeSlots: number;
  /** load / speed as the version computes it (2.8: integer division). Null when not a candidate. */
  readonly score: number | null;
}

export interface LocalCapability {
  /** The parent could build it locally (platform, features, and max-jobs ≠ 0). */
  readonly capable: boolean;
  readonly reasons: string[];
}

export interface HookOutcome {
  /** Whether the parent asks the hook at all, and why (not). */
  readonly asked: boolean;
  readonly why: string;
  readonly reply: HookReply | null;
  /** The hook's own canBuildLocally (uses amWilling). */
  readonly canBuildLocally: boolean;
  /** The "Failed to find a machine" text, with the log level Nix prints it at. */
  readonly noMachineMessage: { readonly text: string; readonly level: "warn" | "chatty" } | null;
  /** The error the hook dies of before replying (then `reply` is null), e.g. a slot lock file name too long. */
  readonly died?: string;
}

export interface RouteResult {
  readonly decision: RouteDecision;
  readonly machines: MachineRow[];
  readonly local: LocalCapability;
  readonly hook: HookOutcome;
  readonly rules: RouteRules;
}

/** The version switches that matter for routing. */
export interface RouteRules {
  readonly family: RouteFamily;
  /** Speed factors are floats and load/speed is a float division (≥ 2.20). 2.8: integer division. */
  readonly floatSpeed: boolean;
  /** Machine systems print sorted (a set, ≥ 2.20); before, in file order. */
  readonly sortedSystems: boolean;
  /** "Failed to find a machine" lists are wrapped in brackets (≥ 2.12). */
  readonly bracketedMessage: boolean;
  /** The level of that message follows max-jobs > 0 (≥ 2.14); before, it follows amWilling. */
  readonly messageLevelFromMaxJobs: boolean;
  /** preferLocalBuild tries local first, then the hook; local capability rejects max-jobs = 0 (≥ 2.34). */
  readonly localFirstFlow: boolean;
  /** Local-fallback error text family. */
  readonly fallbackText: "2.8" | "2.30" | "2.34";
}

function versionOf(version: NixVersion | RouteFamily): NixVersion {
  return version === "2.8" ? NIX_2_8 : version === "head" ? NIX_LATEST : version;
}

export function routeRules(version: NixVersion | RouteFamily): RouteRules {
  const v = versionOf(version);
  return {
    family: since(v, NIX.machinesFloatSpeed) ? "head" : "2.8",
    floatSpeed: since(v, NIX.machinesFloatSpeed),
    sortedSystems: since(v, NIX.machinesFloatSpeed),
    bracketedMessage: since(v, NIX.listingBrackets),
    messageLevelFromMaxJobs: since(v, NIX.hookMessageLevel),
    localFirstFlow: since(v, NIX.localFirstFlow),
    fallbackText: since(v, NIX.localFirstFlow) ? "2.34" : since(v, NIX.localFallbackText230) ? "2.30" : "2.8",
  };
}

const byCodeUnit = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** A std::set<std::string> as Nix prints it: unique, sorted bytewise. */
function sortedSet(xs: Iterable<string>): string[] {
  return [...new Set(xs)].sort(byCodeUnit);
}

/** The feature set of the local store: system-features plus what experimental features add. */
export function storeSystemFeatures(local: RouteLocal): string[] {
  const s = new Set(local.systemFeatures);
  if (local.experimentalFeatures.includes("ca-derivations")) s.add("ca-derivations");
  if (local.experimentalFeatures.includes("recursive-nix")) s.add("recursive-nix");
  return sortedSet(s);
}

function drvBaseName(path: string | undefined): string {
  if (path === undefined) return "<unknown>";
  const i = path.lastIndexOf("/");
  return i >= 0 ? path.slice(i + 1) : path;
}

function bracketList(xs: readonly string[]): string {
  return `[${xs.join(", ")}]`;
}

/** The "Failed to find a machine for remote build!" text, exactly as the given version prints it. */
export function noMachineMessage(
  rules: RouteRules,
  drv: { path?: string; system: string; requiredFeatures: readonly string[] },
  machines: readonly RouteMachine[],
): string {
  const feats = sortedSet(drv.requiredFeatures).join(", ");
  const wrap = (s: string): string => (rules.bracketedMessage ? `[${s}]` : s);
  const lines = [
    "Failed to find a machine for remote build!",
    `derivation: ${drvBaseName(drv.path)}`,
    `required (system, features): (${drv.system}, ${wrap(feats)})`,
    `${machines.length} available machines:`,
    "(systems, maxjobs, supportedFeatures, mandatoryFeatures)",
  ];
  for (const m of machines) {
    const systems = rules.sortedSystems ? sortedSet(m.systemTypes) : [...m.systemTypes];
    lines.push(
      `(${wrap(systems.join(", "))}, ${m.maxJobs}, ${wrap(sortedSet(m.supportedFeatures).join(", "))}, ${wrap(
        sortedSet(m.mandatoryFeatures).join(", "),
      )})`,
    );
  }
  return lines.join("\n");
}

/** `waiting for a machine to build '<drv>'` (2.8 repeats it on every retry; HEAD prints it once). */
export function waitingMessage(drvPath: string | undefined): string {
  return `waiting for a machine to build '${drvPath ?? "<unknown>"}'`;
}

/** The stall error when max-jobs = 0 and nothing can run. Without the `error: ` prefix. */
export function stallMessage(rules: RouteRules, haveMachines: boolean): string {
  if (rules.family === "2.8") {
    const first = haveMachines
      ? "unable to start any build; remote machines may not have all required system features."
      : "unable to start any build; either increase '--max-jobs' or enable remote builds.";
    return `${first}\nhttps://nixos.org/manual/nix/stable/advanced-topics/distributed-builds.html`;
  }
  const first = haveMachines
    ? "Unable to start any build; remote machines may not have all required system features."
    : "Unable to start any build; either increase '--max-jobs' or enable remote builds.";
  return `${first}\n\nFor more information run 'man nix.conf' and search for '/machines'.`;
}

interface LocalCheck {
  platformOk: boolean;
  missingFeatures: string[];
  maxJobsZero: boolean;
}

function checkLocal(drv: RouteDrv, local: RouteLocal, storeFeatures: readonly string[]): LocalCheck {
  const builtin = drv.isBuiltin ?? drv.system === "builtin";
  const platformOk = drv.system === local.system || local.extraPlatforms.includes(drv.system) || builtin;
  const have = new Set(storeFeatures);
  const missingFeatures = sortedSet(drv.requiredFeatures).filter((f) => !have.has(f));
  return { platformOk, missingFeatures, maxJobsZero: local.maxJobs === 0 };
}

/** The local-fallback error (build refused locally), without `error: `, for the version's text family. */
export function localFallbackMessage(
  rules: RouteRules,
  drv: RouteDrv,
  local: RouteLocal,
  check?: { platformOk: boolean; missingFeatures: readonly string[]; maxJobsZero: boolean },
): string {
  const storeFeatures = storeSystemFeatures(local);
  const c = check ?? checkLocal(drv, local, storeFeatures);
  const drvPath = drv.path ?? "<unknown>";
  const required = sortedSet(drv.requiredFeatures).join(", ");
  const available = storeFeatures.join(", ");
  if (rules.fallbackText === "2.8") {
    return `a '${drv.system}' with features {${required}} is required to build '${drvPath}', but I am a '${local.system}' with features {${available}}`;
  }
  if (rules.fallbackText === "2.30") {
    return [
      `Cannot build '${drvPath}'.`,
      "Reason: required system or feature not available",
      `Required system: '${drv.system}' with features {${required}}`,
      `Current system: '${local.system}' with features {${available}}`,
    ].join("\n");
  }
  let msg = `Cannot build '${drvPath}'.`;
  if (c.maxJobsZero) {
    msg +=
      "\nReason: local builds are disabled (max-jobs = 0)" +
      "\nHint: set 'max-jobs' to a non-zero value to enable local builds, or configure remote builders via 'builders'";
  }
  if (!c.platformOk) {
    msg += `\nReason: platform mismatch\nRequired system: '${drv.system}'\nCurrent system: '${local.system}'`;
  }
  if (c.missingFeatures.length > 0) {
    msg += `\nReason: missing system features\nRequired features: {${required}}\nAvailable features: {${available}}`;
  }
  if (!c.platformOk && drv.system === "x86_64-darwin" && local.system === "aarch64-darwin") {
    msg +=
      "\nNote: run `/usr/sbin/softwareupdate --install-rosetta && launchctl stop org.nixos.nix-daemon` to run programs for x86_64-darwin";
  }
  return msg;
}

function score(rules: RouteRules, load: number, speed: number): number {
  if (rules.floatSpeed) {
    // HEAD: `load / m.speedFactor` with a float speed factor: single-precision division.
    const s = Math.fround(speed > 0 ? speed : 1);
    return Math.fround(Math.fround(load) / s);
  }
  // 2.8: unsigned integers, truncating division.
  const s = Math.max(1, Math.trunc(speed));
  return Math.trunc(load / s);
}

interface HookRun {
  rows: MachineRow[];
  best: RouteMachine | null;
  rightType: boolean;
  /** The error the hook dies of while weighing the machines (it opens each candidate's slot lock files). */
  died: string | null;
}

function runHookSelection(input: RouteInput, rules: RouteRules): HookRun {
  const { drv } = input;
  const required = new Set(drv.requiredFeatures);
  const rows: MachineRow[] = [];
  let best: RouteMachine | null = null;
  let bestLoad = 0;
  let bestScore = 0;
  let rightType = false;
  let died: string | null = null;
  const version = versionOf(input.version);
  for (const m of input.machines) {
    const reasons: string[] = [];
    if (input.disabled?.has(m.storeUri))
      reasons.push("disabled after a failed connection in this hook process");
    if (drv.system !== "builtin" && !m.systemTypes.includes(drv.system)) {
      reasons.push(`system ${drv.system} not in ${bracketList(m.systemTypes)}`);
    }
    const offered = new Set([...m.supportedFeatures, ...m.mandatoryFeatures]);
    for (const f of sortedSet(required)) if (!offered.has(f)) reasons.push(`feature ${f} not supported`);
    for (const f of sortedSet(m.mandatoryFeatures)) {
      if (!required.has(f)) reasons.push(`mandatory feature ${f} not required by the derivation`);
    }
    const typeOk = reasons.length === 0;
    const maxJobs = Math.max(0, Math.trunc(m.maxJobs));
    const load = Math.min(Math.max(0, Math.trunc(input.load?.get(m.storeUri) ?? 0)), maxJobs);
    const freeSlots = maxJobs - load;
    // The hook opens the slot lock files of every machine of the right type (2.8 and 2.30
    // build-remote.cc): a name over NAME_MAX bytes throws, and the hook dies without replying.
    const overlong = typeOk && maxJobs > 0 ? overlongSlotName(m.storeUri, version) : null;
    if (overlong !== null) {
      reasons.push(
        `its slot lock file name is ${new TextEncoder().encode(overlong).length} bytes, over the 255 a file name may have: the hook dies opening it`,
      );
      died ??= `opening lock file '${input.stateDir ?? "/nix/var/nix"}/current-load/${overlong}': File name too long`;
    }
    if (maxJobs === 0) reasons.push("maxJobs is 0: never chosen");
    else if (freeSlots === 0) reasons.push(`no free slot (${load}/${maxJobs} busy)`);
    let sc: number | null = null;
    if (typeOk) {
      rightType = true;
      if (freeSlots > 0 && overlong === null) {
        sc = score(rules, load, m.speedFactor);
        let better = false;
        if (best === null) better = true;
        else if (sc < bestScore) better = true;
        else if (sc === bestScore) {
          const sp = rules.floatSpeed ? Math.fround(m.speedFactor) : Math.trunc(m.speedFactor);
          const bsp = rules.floatSpeed ? Math.fround(best.speedFactor) : Math.trunc(best.speedFactor);
          if (sp > bsp) better = true;
          else if (sp === bsp && load < bestLoad) better = true;
        }
        if (better) {
          best = m;
          bestLoad = load;
          bestScore = sc;
        }
      }
    }
    rows.push({
      storeUri: m.storeUri,
      eligible: typeOk && freeSlots > 0 && overlong === null,
      rightType: typeOk,
      reasons,
      load,
      freeSlots,
      score: sc,
    });
  }
  return { rows, best, rightType, died };
}

/** Nix's decision for one derivation. */
export function route(input: RouteInput): RouteResult {
  const rules = routeRules(input.version);
  const { drv, local } = input;
  const storeFeatures = storeSystemFeatures(local);
  const check = checkLocal(drv, local, storeFeatures);
  const builtin = drv.isBuiltin ?? drv.system === "builtin";
  const amWilling = input.amWilling ?? local.maxJobs > 0;
  const mode = input.buildMode ?? "normal";

  // Local capability as the parent sees it.
  const localReasons: string[] = [];
  if (!check.platformOk) {
    localReasons.push(
      `system ${drv.system} is not ${local.system} and not in extra-platforms ${bracketList(sortedSet(local.extraPlatforms))}`,
    );
  }
  for (const f of check.missingFeatures) {
    localReasons.push(`feature ${f} not in system-features ${bracketList(storeFeatures)}`);
  }
  // 2.8 lets builtin derivations through with max-jobs = 0 in canBuildLocally; HEAD rejects outright.
  const maxJobsBlocks = check.maxJobsZero && (rules.localFirstFlow || !builtin);
  if (maxJobsBlocks) localReasons.push("max-jobs is 0: local builds are disabled");
  const localCapable = localReasons.length === 0;
  const localCap: LocalCapability = { capable: localCapable, reasons: localReasons };

  // The hook's own view of local capability (no builtin clause in the hook).
  const hookPlatformOk = drv.system === local.system || local.extraPlatforms.includes(drv.system);
  const couldBuildLocally = local.maxJobs > 0 && hookPlatformOk && check.missingFeatures.length === 0;
  const hookCanBuildLocally = amWilling && hookPlatformOk && check.missingFeatures.length === 0;

  const runHook = (): {
    reply: HookReply | null;
    sel: HookRun;
    noMachine: HookOutcome["noMachineMessage"];
  } => {
    const sel = runHookSelection(input, rules);
    if (input.machines.length === 0) return { reply: "decline-permanently", sel, noMachine: null };
    if (sel.died !== null) return { reply: null, sel, noMachine: null };
    if (sel.best !== null) return { reply: "accept", sel, noMachine: null };
    if (sel.rightType && !hookCanBuildLocally) return { reply: "postpone", sel, noMachine: null };
    const quiet = rules.messageLevelFromMaxJobs ? couldBuildLocally : hookCanBuildLocally;
    return {
      reply: "decline",
      sel,
      noMachine: { text: noMachineMessage(rules, drv, input.machines), level: quiet ? "chatty" : "warn" },
    };
  };

  const noHook = (why: string): HookOutcome => ({
    asked: false,
    why,
    reply: null,
    canBuildLocally: hookCanBuildLocally,
    noMachineMessage: null,
  });
  const idleRows = (): MachineRow[] => runHookSelection(input, rules).rows;

  const result = (decision: RouteDecision, hook: HookOutcome, rows: MachineRow[]): RouteResult => ({
    decision,
    machines: rows,
    local: localCap,
    hook,
    rules,
  });

  const afterHook = (
    h: ReturnType<typeof runHook>,
    why: string,
    onDecline: () => RouteDecision,
  ): RouteResult => {
    const hook: HookOutcome = {
      asked: true,
      why,
      reply: h.reply,
      canBuildLocally: hookCanBuildLocally,
      noMachineMessage: h.noMachine,
      ...(h.sel.died !== null ? { died: h.sel.died } : {}),
    };
    // The hook died: the parent reads EOF instead of a reply and the build fails (no local fallback).
    if (h.reply === null) return result({ kind: "none", message: h.sel.died ?? "" }, hook, h.sel.rows);
    if (h.reply === "accept") {
      const uri = h.sel.best!.storeUri;
      const printed = renderStoreUri(uri, versionOf(input.version)) ?? uri;
      return result({ kind: "remote", storeUri: uri, printedUri: printed }, hook, h.sel.rows);
    }
    if (h.reply === "postpone") {
      return result({ kind: "postpone", message: waitingMessage(drv.path) }, hook, h.sel.rows);
    }
    return result(onDecline(), hook, h.sel.rows);
  };

  if (!rules.localFirstFlow) {
    // 2.8 – 2.33: derivation-goal.cc tryToBuild.
    const willBuildLocally = drv.preferLocalBuild && localCapable;
    const buildLocally = (mode !== "normal" || willBuildLocally) && local.maxJobs !== 0;
    const localAttempt = (): RouteDecision => {
      if (local.maxJobs === 0) {
        // tryLocalBuild waits for a slot that never comes; the worker reports the stall.
        return { kind: "none", message: stallMessage(rules, input.machines.length > 0) };
      }
      if (!localCapable) return { kind: "none", message: localFallbackMessage(rules, drv, local, check) };
      return amWilling
        ? { kind: "local" }
        : { kind: "local", message: "waits for a local build slot, then asks the hook again" };
    };
    if (buildLocally) {
      const why =
        mode !== "normal" ? `${mode} mode builds locally` : "preferLocalBuild and buildable locally";
      return result(localAttempt(), noHook(why), idleRows());
    }
    const why =
      local.maxJobs === 0 && drv.preferLocalBuild
        ? "max-jobs = 0: even preferLocalBuild derivations go to the hook"
        : drv.preferLocalBuild
          ? "preferLocalBuild, but not buildable locally"
          : "not preferLocalBuild";
    return afterHook(runHook(), why, localAttempt);
  }

  // 2.34+: derivation-building-goal.cc tryToBuild.
  const refused = (): RouteDecision => ({
    kind: "none",
    message: localFallbackMessage(rules, drv, local, check),
  });
  const localOk = (): RouteDecision =>
    amWilling ? { kind: "local" } : { kind: "local", message: "waits for a local build slot" };
  if (mode !== "normal") {
    return result(
      localCapable ? localOk() : refused(),
      noHook(`${mode} mode builds locally only`),
      idleRows(),
    );
  }
  if (drv.preferLocalBuild && localCapable) {
    return result(localOk(), noHook("preferLocalBuild: local first"), idleRows());
  }
  const why = drv.preferLocalBuild ? "preferLocalBuild, but local building is rejected" : "hook first";
  return afterHook(runHook(), why, () => (localCapable ? localOk() : refused()));
}
