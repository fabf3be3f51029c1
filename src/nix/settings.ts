/**
 * The registry of nix.conf settings, per Nix version: every setting that Nix 2.8 knows (91 on Linux) and
 * every setting that Nix 2.30 knows (122), with aliases, value type and default, and the version bounds
 * (`since`/`until`) in between. Names, aliases and defaults are facts from `nix show-config --json` of
 * Debian's nix-bin 2.8.0 and `nix config show --json` of Nix 2.30.5 (test/unit/settings-registry.test.ts
 * compares every setting with both binaries); value types and the versions in between come from the C++
 * declarations (Setting<T>) at each release tag (docs/nix-versions.md). Versions after 2.30 get 2.30's
 * table: modelled, not checked.
 *
 * A setting that is not in this table is "unknown": Nix only warns about it (`warning: unknown setting`).
 * The table must therefore be complete for the version in force, or the warnings diverge from Nix.
 *
 * Machine-dependent defaults (system, extra-platforms, system-features, cores, max-jobs auto, ...) are not
 * probed here: they come in as {@link MachineFacts}.
 */

import { atLeast, atLeastPatch, type NixVersion } from "./version.js";

/** Integer settings: the C++ type decides the accepted range and whether `-` is allowed. */
export type IntKind = "u32" | "u64" | "i64";

export type SettingType =
  | { readonly kind: "bool" }
  | { readonly kind: "int"; readonly int: IntKind }
  | { readonly kind: "string" }
  /** 2.8 `PathSetting`: canonicalised, empty only if allowed. */
  | { readonly kind: "path"; readonly allowEmpty: boolean }
  /** Ordered list, duplicates kept (`Strings`). Appendable. */
  | { readonly kind: "strings" }
  /** Sorted, de-duplicated set (`StringSet`). Appendable. */
  | { readonly kind: "stringSet" }
  /** `k=v` tokens; tokens without `=` dropped; first value of a key wins. Appendable. */
  | { readonly kind: "stringMap" }
  /** `max-jobs`: `auto` or an unsigned 32-bit integer. */
  | { readonly kind: "maxJobs" }
  /** `sandbox`: true / relaxed / false. */
  | { readonly kind: "sandbox" }
  /** `experimental-features`: a set of known feature names; unknown names only warn. Appendable. */
  | { readonly kind: "experimentalFeatures" }
  /** 2.17+ `OptionalPathSetting`: empty is null (JSON null), anything else is canonicalised. */
  | { readonly kind: "optionalPath" }
  /** `Setting<std::optional<Path>>`: empty is null, anything else kept as written. */
  | { readonly kind: "optionalString" }
  /** An enumeration such as `eval-profiler` (disabled / flamegraph). */
  | { readonly kind: "enum"; readonly values: readonly string[] };

/**
 * The parsed (internal) value of a setting. Integers are bigints (2.8 has 64-bit unsigned settings such as
 * `max-free` = 2^64-1); maps are arrays of [key, value] pairs sorted by key.
 */
export type SettingValue =
  | null
  | boolean
  | bigint
  | string
  | readonly string[]
  | readonly (readonly [string, string])[];

/** Facts about the machine that Nix computes at start-up. */
export interface MachineFacts {
  /** Compile-time platform, e.g. `x86_64-linux`. */
  system: string;
  /** Default of `extra-platforms` (i686-linux, x86_64-vN-linux ... as detected). */
  extraPlatforms: string[];
  /** Default of `system-features` (including `kvm` when /dev/kvm is usable). */
  systemFeatures: string[];
  /** Default of `cores` (2.8: hardware threads; HEAD: cgroup CPU limit if any). */
  cores: number;
  /** `std::thread::hardware_concurrency()`; `max-jobs = auto` resolves to max(1, this). */
  hardwareThreads: number;
  /** Whether Nix runs as root: `build-users-group` then defaults to `nixbld`. Default: false. */
  isRoot?: boolean;
  /** Default of `nix-path` (depends on which channel directories exist). Default: []. */
  nixPath?: string[];
  /** Default of `sandbox-paths` (`/bin/sh=<shell>` when Nix was built with a sandbox shell). Default: []. */
  sandboxPaths?: string[];
  /** `NIX_LIBEXEC_DIR` compile-time default (Debian: /usr/libexec). */
  libexecDir?: string;
  /** WSL1 disables `use-sqlite-wal`. Default: false. */
  wsl1?: boolean;
  /** The running `nix` binary, resolved (2.25+ sets `build-hook` to `[selfExe, "__build-remote"]`). */
  selfExe?: string;
  /** 2.15+ `ssl-cert-file` default: the first readable CA bundle Nix knows of, or "". Default: "". */
  sslCertFile?: string;
}

/** What defaults may depend on besides the machine. */
export interface DefaultContext {
  readonly version: NixVersion;
  readonly machine: MachineFacts;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** The canonical configuration directory (NIX_CONF_DIR or the compile-time /etc/nix). */
  readonly confDir: string;
}

export interface SettingDef {
  readonly name: string;
  readonly aliases: readonly string[];
  readonly type: SettingType;
  /** A fixed default, or one computed from the machine and environment. */
  readonly default: SettingValue | ((ctx: DefaultContext) => SettingValue);
  /** First version that has the setting (inclusive), when later than 2.8. */
  readonly since?: readonly [number, number];
  /** First version that no longer has the setting. */
  readonly until?: readonly [number, number];
  /**
   * The experimental feature the setting needs (2.16+): setting it while the feature is off only warns
   * `Ignoring setting '…' because experimental feature '…' is not enabled`.
   */
  readonly xp?: string;
}

const T = {
  bool: { kind: "bool" },
  u32: { kind: "int", int: "u32" },
  u64: { kind: "int", int: "u64" },
  i64: { kind: "int", int: "i64" },
  string: { kind: "string" },
  strings: { kind: "strings" },
  stringSet: { kind: "stringSet" },
  stringMap: { kind: "stringMap" },
  pathOrEmpty: { kind: "path", allowEmpty: true },
} as const satisfies Record<string, SettingType>;

function def(
  name: string,
  type: SettingType,
  dflt: SettingDef["default"],
  aliases: readonly string[] = [],
  extra: Partial<Pick<SettingDef, "since" | "until" | "xp">> = {},
): SettingDef {
  return { name, aliases, type, default: dflt, ...extra };
}

/** Compare strings the way std::string's operator< does on UTF-8 bytes, i.e. by code point. */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const ca = a.codePointAt(i)!;
    const cb = b.codePointAt(i)!;
    if (ca !== cb) return ca < cb ? -1 : 1;
    if (ca > 0xffff) i++;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

/** A std::set<std::string>: sorted by code point, without duplicates. */
export function toStringSet(items: Iterable<string>): string[] {
  return [...new Set(items)].sort(compareCodePoints);
}

/** The 2.8 experimental features in enum order; `nix show-config --json` prints their indices. */
export const EXPERIMENTAL_FEATURES_2_8: readonly string[] = [
  "ca-derivations",
  "impure-derivations",
  "flakes",
  "nix-command",
  "recursive-nix",
  "no-url-literals",
  "fetch-closure",
];

/**
 * Experimental features of current Nix (2.35) in enum order (JSON lists a set in this order). Source reading
 * only; HEAD prints names, not numbers, in JSON.
 * `no-url-literals` was stabilised (it only warns); `flakes` implies `fetch-tree`.
 */
export const EXPERIMENTAL_FEATURES_HEAD: readonly string[] = [
  "ca-derivations",
  "impure-derivations",
  "flakes",
  "fetch-tree",
  "nix-command",
  "git-hashing",
  "recursive-nix",
  "fetch-closure",
  "auto-allocate-uids",
  "cgroups",
  "daemon-trust-override",
  "dynamic-derivations",
  "parse-toml-timestamps",
  "read-only-local-store",
  "local-overlay-store",
  "configurable-impure-env",
  "mounted-ssh-store",
  "verified-fetches",
  "pipe-operators",
  "external-builders",
  "blake3-hashes",
];

/** Nix 2.30's experimental features in enum order (checked: `nix config show --json` lists names). */
export const EXPERIMENTAL_FEATURES_2_30: readonly string[] = [
  "ca-derivations",
  "impure-derivations",
  "flakes",
  "fetch-tree",
  "nix-command",
  "git-hashing",
  "recursive-nix",
  "no-url-literals",
  "fetch-closure",
  "auto-allocate-uids",
  "cgroups",
  "daemon-trust-override",
  "dynamic-derivations",
  "parse-toml-timestamps",
  "read-only-local-store",
  "local-overlay-store",
  "configurable-impure-env",
  "mounted-ssh-store",
  "verified-fetches",
  "pipe-operators",
  "blake3-hashes",
];

/**
 * The known experimental features: 2.8's list before 2.9, 2.30's from 2.9 to 2.33 (exact for 2.30 only:
 * earlier releases knew fewer), current Nix's from 2.34 (modelled).
 */
export function experimentalFeatureNames(version: NixVersion): readonly string[] {
  if (!atLeast(version, 2, 9)) return EXPERIMENTAL_FEATURES_2_8;
  return atLeast(version, 2, 34) ? EXPERIMENTAL_FEATURES_HEAD : EXPERIMENTAL_FEATURES_2_30;
}

/**
 * `connect-timeout`: 0 until 2.29, then 5; 15 from 2.30.4, 2.31.2 and 2.32 (the change was backported to
 * patch releases, so the patch level matters).
 */
function connectTimeoutDefault(c: DefaultContext): bigint {
  const v = c.version;
  if (atLeast(v, 2, 32) || atLeastPatch(v, 2, 31, 2) || (v.major === 2 && v.minor === 30 && v.patch >= 4))
    return 15n;
  return atLeast(v, 2, 29) ? 5n : 0n;
}

/** `ssl-cert-file`: NIX_SSL_CERT_FILE, else SSL_CERT_FILE (the first that is set wins, even if empty). */
function sslCertFileDefault(c: DefaultContext): string {
  const o = c.env["NIX_SSL_CERT_FILE"] ?? c.env["SSL_CERT_FILE"] ?? "";
  return o !== "" ? o : (c.machine.sslCertFile ?? "");
}

const NIXPKGS_FALLBACK_PATHS =
  "https://github.com/NixOS/nixpkgs/raw/master/nixos/modules/installer/tools/nix-fallback-paths.nix";

/**
 * The settings of Nix on Linux: 2.8's 91 and 2.30's 122, with version bounds (`since` inclusive, `until`
 * exclusive) where a release added, removed or retyped one. A setting whose type changed has one entry
 * per type, with disjoint bounds.
 */
export const SETTINGS: readonly SettingDef[] = [
  def("abort-on-warn", T.bool, false, [], { since: [2, 23] }),
  def("accept-flake-config", T.bool, false, [], { xp: "flakes" }),
  def("access-tokens", T.stringMap, []),
  def("allow-dirty", T.bool, true),
  def("allow-dirty-locks", T.bool, false, [], { since: [2, 26], xp: "flakes" }),
  def("allow-import-from-derivation", T.bool, true),
  def("allow-new-privileges", T.bool, false),
  def("allow-symlinked-store", T.bool, (c) => c.env["NIX_IGNORE_SYMLINK_STORE"] === "1"),
  def("allow-unsafe-native-code-during-evaluation", T.bool, false),
  def("allowed-impure-host-deps", T.stringSet, []),
  def("allowed-uris", T.strings, []),
  def("allowed-users", T.strings, ["*"]),
  def("always-allow-substitutes", T.bool, false, [], { since: [2, 19] }),
  def("auto-allocate-uids", T.bool, false, [], { since: [2, 12], xp: "auto-allocate-uids" }),
  def("auto-optimise-store", T.bool, false),
  def("bash-prompt", T.string, ""),
  def("bash-prompt-prefix", T.string, "", [], { since: [2, 9] }),
  def("bash-prompt-suffix", T.string, ""),
  def("build-dir", { kind: "optionalString" }, null, [], { since: [2, 22] }),
  def("build-hook", T.pathOrEmpty, (c) => `${libexecDir(c)}/nix/build-remote`, [], { until: [2, 10] }),
  def("build-hook", T.pathOrEmpty, "", [], { since: [2, 10], until: [2, 17] }),
  def("build-hook", T.strings, [], [], { since: [2, 17], until: [2, 25] }),
  // 2.25+: after loading the files, `nix` sets the value to [its own binary, "__build-remote"] unless a
  // user file or NIX_CONFIG set it (conf.ts, buildHookSelfDefault).
  def("build-hook", T.strings, ["nix", "__build-remote"], [], { since: [2, 25] }),
  def("build-poll-interval", T.u32, 5n),
  def("build-users-group", T.string, (c) => (c.machine.isRoot ? "nixbld" : "")),
  def("builders", T.string, defaultBuilders),
  def("builders-use-substitutes", T.bool, false),
  def("commit-lockfile-summary", T.string, "", [], { until: [2, 23], xp: "flakes" }),
  def("commit-lock-file-summary", T.string, "", ["commit-lockfile-summary"], {
    since: [2, 23],
    xp: "flakes",
  }),
  def("compress-build-log", T.bool, true, ["build-compress-log"]),
  def("connect-timeout", T.u64, connectTimeoutDefault),
  def("cores", T.u32, (c) => BigInt(c.machine.cores), ["build-cores"]),
  def("debugger-on-trace", T.bool, false, [], { since: [2, 21] }),
  def("debugger-on-warn", T.bool, false, [], { since: [2, 23] }),
  def("diff-hook", T.pathOrEmpty, "", [], { until: [2, 17] }),
  def("diff-hook", { kind: "optionalPath" }, null, [], { since: [2, 17] }),
  def("download-attempts", T.u32, 5n),
  def("download-buffer-size", T.u64, 67108864n, [], { since: [2, 24] }),
  def("download-speed", T.u32, 0n, [], { since: [2, 11] }),
  def("enforce-determinism", T.bool, true, [], { until: [2, 13] }),
  def("eval-cache", T.bool, true),
  def("eval-profile-file", T.string, "nix.profile", [], { since: [2, 30] }),
  def("eval-profiler", { kind: "enum", values: ["disabled", "flamegraph"] }, "disabled", [], {
    since: [2, 30],
  }),
  def("eval-profiler-frequency", T.u32, 99n, [], { since: [2, 30] }),
  def("eval-system", T.string, "", [], { since: [2, 20] }),
  def("experimental-features", { kind: "experimentalFeatures" }, []),
  def("extra-platforms", T.stringSet, (c) => toStringSet(c.machine.extraPlatforms)),
  def("fallback", T.bool, false, ["build-fallback"]),
  def("filter-syscalls", T.bool, true),
  def(
    "flake-registry",
    T.string,
    (c) =>
      atLeast(c.version, 2, 10)
        ? "https://channels.nixos.org/flake-registry.json"
        : "https://github.com/NixOS/flake-registry/raw/master/flake-registry.json",
    [],
    { xp: "flakes" },
  ),
  def("fsync-metadata", T.bool, true),
  def("fsync-store-paths", T.bool, false, [], { since: [2, 25] }),
  def("gc-reserved-space", T.i64, 8388608n),
  def("hashed-mirrors", T.strings, []),
  def("http-connections", T.u64, 25n, ["binary-caches-parallel-connections"]),
  def("http2", T.bool, true),
  def("id-count", T.u32, 8388608n, [], { since: [2, 12] }),
  def("ignore-try", T.bool, false, [], { since: [2, 10] }),
  def("ignored-acls", T.stringSet, (c) =>
    atLeast(c.version, 2, 10)
      ? ["security.csm", "security.selinux", "system.nfs4_acl"]
      : ["security.selinux", "system.nfs4_acl"],
  ),
  def("impersonate-linux-26", T.bool, false, ["build-impersonate-linux-26"]),
  def("impure-env", T.stringMap, [], [], { since: [2, 19], xp: "configurable-impure-env" }),
  def("json-log-path", T.string, "", [], { since: [2, 30] }),
  def("keep-build-log", T.bool, true, ["build-keep-log"]),
  def("keep-derivations", T.bool, true, ["gc-keep-derivations"]),
  def("keep-env-derivations", T.bool, false, ["env-keep-derivations"]),
  def("keep-failed", T.bool, false),
  def("keep-going", T.bool, false),
  def("keep-outputs", T.bool, false, ["gc-keep-outputs"]),
  def("log-lines", T.u64, (c) => (atLeast(c.version, 2, 20) ? 25n : 10n)),
  def("max-build-log-size", T.u64, 0n, ["build-max-log-size"]),
  def("max-call-depth", T.u32, 10000n, [], { since: [2, 20] }),
  // 2.25+: int64 max, so that the value survives the Nix language's JSON parser.
  def("max-free", T.u64, (c) => (atLeast(c.version, 2, 25) ? 9223372036854775807n : 18446744073709551615n)),
  def("max-jobs", { kind: "maxJobs" }, 1n, ["build-max-jobs"]),
  def("max-silent-time", T.i64, 0n, ["build-max-silent-time"]),
  def("max-substitution-jobs", T.u32, 16n, ["substitution-max-jobs"], { since: [2, 16] }),
  def("min-free", T.u64, 0n),
  def("min-free-check-interval", T.u64, 5n),
  def("nar-buffer-size", T.u64, 33554432n),
  def("narinfo-cache-negative-ttl", T.u32, 3600n),
  def("narinfo-cache-positive-ttl", T.u32, 2592000n),
  def("netrc-file", T.string, (c) => `${c.confDir}/netrc`),
  def("nix-path", T.strings, (c) => c.machine.nixPath ?? []),
  def("nix-shell-always-looks-for-shell-nix", T.bool, true, [], { since: [2, 24] }),
  def("nix-shell-shebang-arguments-relative-to-script", T.bool, true, [], { since: [2, 24] }),
  def("plugin-files", T.strings, []),
  def("post-build-hook", T.string, ""),
  def("pre-build-hook", T.string, ""),
  def("preallocate-contents", T.bool, false),
  def("print-missing", T.bool, true),
  def("pure-eval", T.bool, false),
  def("repeat", T.u64, 0n, ["build-repeat"], { until: [2, 13] }),
  def("require-drop-supplementary-groups", T.bool, (c) => c.machine.isRoot === true, [], { since: [2, 17] }),
  def("require-sigs", T.bool, true),
  def("restrict-eval", T.bool, false),
  def("run-diff-hook", T.bool, false),
  def("sandbox", { kind: "sandbox" }, true, ["build-use-chroot", "build-use-sandbox"]),
  def("sandbox-build-dir", T.string, "/build"),
  def("sandbox-dev-shm-size", T.string, "50%"),
  def("sandbox-fallback", T.bool, true),
  def("sandbox-paths", T.stringSet, (c) => toStringSet(c.machine.sandboxPaths ?? []), [
    "build-chroot-dirs",
    "build-sandbox-paths",
  ]),
  def("secret-key-files", T.strings, []),
  def("show-trace", T.bool, false),
  def("ssl-cert-file", T.string, sslCertFileDefault, [], { since: [2, 15] }),
  def("stalled-download-timeout", T.u64, 300n),
  def("start-id", T.u32, 872415232n, [], { since: [2, 12] }),
  def("store", T.string, (c) => c.env["NIX_REMOTE"] ?? "auto"),
  def("substitute", T.bool, true, ["build-use-substitutes"]),
  def("substituters", T.strings, ["https://cache.nixos.org/"], ["binary-caches"]),
  def("sync-before-registering", T.bool, false),
  def("system", T.string, (c) => c.machine.system),
  def("system-features", T.stringSet, (c) => toStringSet(c.machine.systemFeatures)),
  def("tarball-ttl", T.u32, 3600n),
  def("timeout", T.i64, 0n, ["build-timeout"]),
  def("trace-function-calls", T.bool, false),
  def("trace-import-from-derivation", T.bool, false, [], { since: [2, 30] }),
  def("trace-verbose", T.bool, false, [], { since: [2, 10] }),
  def("trust-tarballs-from-git-forges", T.bool, true, [], { since: [2, 22] }),
  def(
    "trusted-public-keys",
    T.strings,
    ["cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="],
    ["binary-cache-public-keys"],
  ),
  def("trusted-substituters", T.stringSet, [], ["trusted-binary-caches"]),
  def("trusted-users", T.strings, ["root"]),
  def("upgrade-nix-store-path-url", T.string, NIXPKGS_FALLBACK_PATHS, [], { since: [2, 19] }),
  def("use-case-hack", T.bool, false),
  def("use-cgroups", T.bool, false, [], { since: [2, 12] }),
  def("use-registries", T.bool, true, [], { xp: "flakes" }),
  def("use-sqlite-wal", T.bool, (c) => !c.machine.wsl1),
  def("use-xdg-base-directories", T.bool, false, [], { since: [2, 14] }),
  def("user-agent-suffix", T.string, ""),
  def("warn-dirty", T.bool, true),
  def("warn-large-path-threshold", T.u64, 0n, [], { since: [2, 23] }),
];

function libexecDir(c: DefaultContext): string {
  return c.env["NIX_LIBEXEC_DIR"] ?? c.machine.libexecDir ?? "/usr/libexec";
}

/**
 * `builders` defaults to `@$NIX_CONF_DIR/machines`; the legacy NIX_REMOTE_SYSTEMS (colon-separated machines
 * files) replaces that. Up to 2.23 Nix joins the entries with a space (a bug: two files become one bogus
 * path); 2.24+ with a newline.
 */
function defaultBuilders(c: DefaultContext): string {
  const legacy = c.env["NIX_REMOTE_SYSTEMS"];
  if (legacy !== undefined) {
    const parts = legacy
      .split(":")
      .filter((p) => p !== "")
      .map((p) => `@${p}`);
    return parts.join(atLeast(c.version, 2, 24) ? "\n" : " ");
  }
  return `@${c.confDir}/machines`;
}

/** True when `def` exists in `version`. */
export function settingExists(d: SettingDef, version: NixVersion): boolean {
  if (d.since && !atLeast(version, d.since[0], d.since[1])) return false;
  if (d.until && atLeast(version, d.until[0], d.until[1])) return false;
  return true;
}

/** Settings whose values can be extended with `extra-NAME`. */
export function isAppendable(t: SettingType): boolean {
  return (
    t.kind === "strings" ||
    t.kind === "stringSet" ||
    t.kind === "stringMap" ||
    t.kind === "experimentalFeatures"
  );
}

/** A lookup table for one Nix version: names and aliases to definitions. */
export class SettingRegistry {
  readonly version: NixVersion;
  readonly settings: readonly SettingDef[];
  private readonly byName = new Map<string, { def: SettingDef; isAlias: boolean }>();

  constructor(version: NixVersion, settings: readonly SettingDef[] = SETTINGS) {
    this.version = version;
    this.settings = settings.filter((d) => settingExists(d, version));
    for (const d of this.settings) {
      this.byName.set(d.name, { def: d, isAlias: false });
      for (const a of d.aliases) this.byName.set(a, { def: d, isAlias: true });
    }
  }

  /** Exact name or alias. */
  get(name: string): SettingDef | undefined {
    return this.byName.get(name)?.def;
  }

  /**
   * Resolve a name as `Config::set` does: exact name or alias first; else `extra-X` where X (name or
   * alias) is appendable. Returns null for unknown names (including `extra-` of a non-appendable setting).
   */
  resolve(name: string): { def: SettingDef; append: boolean } | null {
    const direct = this.byName.get(name);
    if (direct) return { def: direct.def, append: false };
    if (name.startsWith("extra-")) {
      const base = this.byName.get(name.slice(6));
      if (base && isAppendable(base.def.type)) return { def: base.def, append: true };
    }
    return null;
  }
}
