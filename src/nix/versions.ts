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
} as const satisfies Record<string, Threshold>;

export type ThresholdName = keyof typeof NIX;

/** Does `version` have the behaviour that `t` introduced? */
export function since(version: NixVersion, t: Threshold): boolean {
  return atLeast(version, t.since[0], t.since[1]);
}
