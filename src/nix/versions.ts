/**
 * One table of the Nix version thresholds that the machines parser, routing, lint, the ssh argv and the
 * doctor share: the first release with the current behaviour, what changed, and where in Nix's source
 * it is (a path in NixOS/nix, at the tag of `since`). docs/nix-versions.md lists each by its name here, with whether it was
 * checked against a real Nix; test/unit/versions.test.ts keeps the two in step.
 *
 * A rule asks `since(version, NIX.name)`; it never writes the numbers again.
 */
import { atLeast, type NixVersion } from "./version.js";

export interface Threshold {
  /** First release with the behaviour (major, minor). */
  readonly since: readonly [number, number];
  /** What changed, in one line. */
  readonly what: string;
  /** Where, in Nix's source (NixOS/nix), at the tag of `since`. */
  readonly source: string;
}

export const NIX = {
  listingBrackets: {
    since: [2, 12],
    what: 'the "Failed to find a machine" listing wraps its lists in brackets',
    source: "src/build-remote/build-remote.cc",
  },
  sshNoAgentFlag: {
    since: [2, 12],
    what: "ssh is no longer passed `-a`",
    source: "src/libstore/ssh.cc",
  },
  hookMessageLevel: {
    since: [2, 14],
    what: "the level of the hook's decline message follows max-jobs > 0, not amWilling",
    source: "src/build-remote/build-remote.cc",
  },
  sshStartedLine: {
    since: [2, 15],
    what: "Nix reads a `started` line that ssh's LocalCommand prints before the protocol",
    source: "src/libstore/ssh.cc",
  },
  machinesFloatSpeed: {
    since: [2, 20],
    what: "the speed factor is a float (negative is an error) and the systems column a sorted set",
    source: "src/libstore/machines.cc",
  },
  sshCommandWords: {
    since: [2, 20],
    what: "the remote command is every word after the last `--`, no longer one last word",
    source: "src/libstore/ssh.cc",
  },
  base64Trace: {
    since: [2, 26],
    what: "a bad base64 host key is raised as the decoder's own error with a trace line",
    source: "src/libstore/machines.cc",
  },
  sshShellSplitOptions: {
    since: [2, 26],
    what: "NIX_SSHOPTS is split like a shell would, not on whitespace",
    source: "src/libstore/ssh.cc",
  },
  machinesSplitFix: {
    since: [2, 29],
    what: "machines text: `#` is cut per line before splitting on `;`, entries are trimmed, blank ones skipped",
    source: "src/libstore/machines.cc",
  },
  localFallbackText230: {
    since: [2, 30],
    what: "the local-fallback error text takes its 2.30 form",
    source: "src/libstore/build/ (the local-build capability check)",
  },
  sshPorts: {
    since: [2, 31],
    what: "a port in the store URI's authority is passed to ssh with `-p`",
    source: "src/libstore/ssh.cc",
  },
  sshAuthorityLocalhost: {
    since: [2, 32],
    what: "only the bare host `localhost` skips ssh; `user@localhost` connects",
    source: "src/libstore/ssh.cc",
  },
  localFirstFlow: {
    since: [2, 34],
    what: "preferLocalBuild tries local first, then the hook; local capability rejects max-jobs = 0",
    source: "src/libstore/build/ (the local-build capability check)",
  },
  readErrorHead: {
    since: [2, 34],
    what: 'the machines file read errors say `opening file "<p>"` and `read of N bytes`',
    source: "src/libutil/ (readFile)",
  },
  sshAbsoluteKey: {
    since: [2, 34],
    what: "the ssh key column must be an absolute path",
    source: "src/libstore/ssh.cc",
  },
  xpFeaturesJsonNames: {
    since: [2, 9],
    what: "`experimental-features` prints as feature names in JSON, no longer enum indices",
    source: "src/libutil/experimental-features.cc",
  },
  storeUriParser29: {
    since: [2, 9],
    what: "a machine's store URI is no longer opened by 2.8's `openStore` rules (bad `%` escape, 2.8's URL regex)",
    source: "src/libstore/store-api.cc",
  },
  uidRangeFeature: {
    since: [2, 12],
    what: "`system-features` includes `uid-range` on Linux by default",
    source: "src/libstore/globals.cc",
  },
  untrustedSilentTime: {
    since: [2, 12],
    what: "an untrusted client may set `max-silent-time` and `build-poll-interval`",
    source: "src/libstore/daemon.cc",
  },
  repeatRemoved: {
    since: [2, 13],
    what: "the `repeat` setting is gone, so an untrusted client can no longer set it",
    source: "src/libstore/globals.hh",
  },
  untrustedSubstituterText: {
    since: [2, 14],
    what: "the untrusted-substituter warning points to `man nix.conf`",
    source: "src/libstore/daemon.cc",
  },
  clientPluginFilesIgnored: {
    since: [2, 14],
    what: "the daemon ignores a client's `plugin-files` with a warning",
    source: "src/libstore/daemon.cc",
  },
  confParseThenApply: {
    since: [2, 16],
    what: "a nix.conf file is parsed whole first, `experimental-features` applied before the rest",
    source: "src/libutil/config.cc",
  },
  settingXpGate: {
    since: [2, 16],
    what: "setting a feature-gated setting while its feature is off only warns",
    source: "src/libutil/config-impl.hh",
  },
  emptyConfDirUnset: {
    since: [2, 16],
    what: "an empty `NIX_CONF_DIR` counts as unset (getEnvNonEmpty)",
    source: "src/libstore/globals.cc",
  },
  configShowCommand: {
    since: [2, 20],
    what: "`nix config show` replaces `nix show-config` (kept as a deprecated alias)",
    source: "src/nix/config.cc",
  },
  restrictedSettingWarning: {
    since: [2, 22],
    what: 'the daemon\'s "restricted setting" message is a warning, no longer debug-level',
    source: "src/libstore/daemon.cc",
  },
  intUnitSuffix: {
    since: [2, 23],
    what: "integer settings accept a final K/M/G/T multiplier",
    source: "src/libutil/config-impl.hh",
  },
  storeReferenceRender: {
    since: [2, 23],
    what: "a machine's store URI is a parsed StoreReference and Nix prints its rendering",
    source: "src/libstore/store-reference.cc",
  },
  confSyntaxErrorText: {
    since: [2, 24],
    what: "a broken nix.conf line is a `syntax error in configuration line`, no longer `illegal configuration line`",
    source: "src/libutil/config.cc",
  },
  remoteSystemsNewline: {
    since: [2, 24],
    what: "`builders` from NIX_REMOTE_SYSTEMS joins the files with a newline, not a space",
    source: "src/libstore/globals.cc",
  },
  clientSkipsPluginFiles: {
    since: [2, 24],
    what: "the client no longer sends `plugin-files` to the daemon",
    source: "src/libstore/daemon.cc",
  },
  buildHookSelf: {
    since: [2, 25],
    what: "`nix` points `build-hook` at itself at start-up unless set outside the system file",
    source: "src/nix/main.cc",
  },
  nixConfigHome: {
    since: [2, 25],
    what: "`NIX_CONFIG_HOME` replaces `$XDG_CONFIG_HOME/nix`",
    source: "src/libutil/users.cc",
  },
  hookInMemoryDrv: {
    since: [2, 30],
    what: "an in-memory derivation is offered to the build hook when its .drv is valid in the store",
    source: "src/libstore/build/ (the derivation goal)",
  },
  localStoreBigLockText: {
    since: [2, 30],
    what: "a user without write access to the local store fails on the big lock, not on profiles/per-user",
    source: "src/libstore/local-store.cc",
  },
  storeUriNamedRender: {
    since: [2, 32],
    what: "`local` and `daemon` render by their names again",
    source: "src/libstore/store-reference.cc",
  },
  pathFmtQuotes: {
    since: [2, 34],
    what: "paths in messages are double-quoted (PathFmt), no longer single-quoted",
    source: "src/libutil/configuration.cc",
  },
  noUrlLiteralsWarning: {
    since: [2, 34],
    what: "the `no-url-literals` feature is stabilised as the `lint-url-literals` setting; naming it warns",
    source: "src/libutil/experimental-features.cc",
  },
  fsPathJoin: {
    since: [2, 34],
    what: "user config paths are joined with std::filesystem::path, not string concatenation",
    source: "src/libutil/users.cc",
  },
  userConfFilesEmptyDot: {
    since: [2, 34],
    what: "empty `NIX_USER_CONF_FILES` components become `.` (ExecutablePath::parse), no longer dropped",
    source: "src/libstore/globals.cc",
  },
  clientFileTransferSettings: {
    since: [2, 35],
    what: "file-transfer settings sent by a client take effect in the daemon",
    source: "src/libstore/daemon.cc",
  },
} as const satisfies Record<string, Threshold>;

export type ThresholdName = keyof typeof NIX;

/** Does `version` have the behaviour that `t` introduced? */
export function since(version: NixVersion, t: Threshold): boolean {
  return atLeast(version, t.since[0], t.since[1]);
}
