import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Origin } from "../../src/nix/origin.js";
import {
  applyClientSettings,
  daemonVerdict,
  defaultBuildUsersGroup,
  filterSubstituters,
  matchUserList,
  type OverriddenSetting,
  storeMode,
  type TrustSubject,
  untrustedAllowedSettings,
} from "../../src/nix/trust.js";
import { NIX_2_8, NIX_LATEST, type NixVersion } from "../../src/nix/version.js";

const v = (minor: number): NixVersion => ({ major: 2, minor, patch: 0 });

const alice: TrustSubject = {
  name: "alice",
  primaryGroup: "users",
  supplementaryGroups: ["wheel", "docker"],
};
const agent: TrustSubject = {
  name: "hercules-ci-agent",
  primaryGroup: "hercules-ci-agent",
  supplementaryGroups: [],
};
const root: TrustSubject = { name: "root", primaryGroup: "root", supplementaryGroups: [] };
const builder: TrustSubject = { name: "nixbld1", primaryGroup: "nixbld", supplementaryGroups: ["nixbld"] };

describe("matchUserList", () => {
  it("empty list matches nobody", () => {
    assert.deepEqual(matchUserList([], alice), { matched: false, by: null, entry: null });
  });
  it("* matches everyone and wins over later exact names", () => {
    assert.deepEqual(matchUserList(["alice", "*"], alice), { matched: true, by: "*", entry: "*" });
  });
  it("exact name", () => {
    assert.deepEqual(matchUserList(["bob", "alice"], alice), { matched: true, by: "name", entry: "alice" });
  });
  it("exact name wins over an earlier @group", () => {
    assert.deepEqual(matchUserList(["@wheel", "alice"], alice).by, "name");
  });
  it("names are case-sensitive and not prefixes", () => {
    assert.equal(matchUserList(["Alice", "ali", "alice2"], alice).matched, false);
  });
  it("@group via the primary gid's group name", () => {
    assert.deepEqual(matchUserList(["@users"], alice), {
      matched: true,
      by: "@group (primary gid)",
      entry: "@users",
    });
  });
  it("@group via /etc/group membership", () => {
    assert.deepEqual(matchUserList(["@docker"], alice), {
      matched: true,
      by: "@group (member)",
      entry: "@docker",
    });
  });
  it("@group entries are tried in list order", () => {
    assert.equal(matchUserList(["@docker", "@users"], alice).entry, "@docker");
  });
  it("a group name without @ is a user name, not a group", () => {
    assert.equal(matchUserList(["wheel", "users"], alice).matched, false);
  });
  it("@ alone or @unknown does not match", () => {
    assert.equal(matchUserList(["@", "@nogroup"], alice).matched, false);
  });
  it("decimal primary group (no group entry) matches @<gid>", () => {
    const u: TrustSubject = { name: "1234", primaryGroup: "4321", supplementaryGroups: [] };
    assert.equal(matchUserList(["@4321"], u).by, "@group (primary gid)");
    assert.equal(matchUserList(["1234"], u).by, "name");
  });
});

describe("daemonVerdict", () => {
  const base = { version: NIX_2_8 };
  it("root is trusted by default", () => {
    const r = daemonVerdict({ ...base, user: root });
    assert.equal(r.allowed, true);
    assert.equal(r.trusted, true);
    assert.equal(r.reason, "root is trusted by default");
    assert.equal(r.acceptLogLine, "accepted connection from pid <pid>, user root (trusted)");
    assert.equal(r.refusalMessage, undefined);
  });
  it("root is not trusted when trusted-users is set without it (still allowed by *)", () => {
    const r = daemonVerdict({ ...base, user: root, trustedUsers: ["alice"] });
    assert.equal(r.trusted, false);
    assert.equal(r.allowed, true);
    assert.equal(r.acceptLogLine, "accepted connection from pid <pid>, user root");
  });
  it("explicit root in trusted-users is reported as a listing, not a default", () => {
    const r = daemonVerdict({ ...base, user: root, trustedUsers: ["root"] });
    assert.equal(r.reason, "listed in trusted-users as root");
  });
  it("member of a listed group", () => {
    const r = daemonVerdict({ ...base, user: alice, trustedUsers: ["root", "@wheel"] });
    assert.equal(r.trusted, true);
    assert.equal(r.reason, "listed in trusted-users as @wheel (member of wheel in /etc/group)");
    assert.equal(r.allowedMatch, null);
  });
  it("primary group listed", () => {
    const r = daemonVerdict({ ...base, user: agent, trustedUsers: ["@hercules-ci-agent"] });
    assert.equal(r.trusted, true);
    assert.match(r.reason, /primary group/);
  });
  it("default: a normal user is allowed but not trusted", () => {
    const r = daemonVerdict({ ...base, user: agent });
    assert.equal(r.allowed, true);
    assert.equal(r.trusted, false);
    assert.equal(
      r.reason,
      "not trusted (trusted-users is the default: root); allowed by the default allowed-users = *",
    );
  });
  it("allowed by an explicit group in allowed-users", () => {
    const r = daemonVerdict({ ...base, user: alice, allowedUsers: ["@wheel"] });
    assert.equal(r.allowed, true);
    assert.equal(r.trusted, false);
    assert.equal(r.allowedMatch?.by, "@group (member)");
  });
  it("not allowed", () => {
    const r = daemonVerdict({ ...base, user: agent, allowedUsers: ["@wheel"] });
    assert.equal(r.allowed, false);
    assert.equal(r.trusted, false);
    assert.equal(r.refusalMessage, "user 'hercules-ci-agent' is not allowed to connect to the Nix daemon");
    assert.equal(
      r.refusalLogLine,
      "error: error processing connection: user 'hercules-ci-agent' is not allowed to connect to the Nix daemon",
    );
    assert.match(r.reason, /^refused: hercules-ci-agent is in neither/);
  });
  it("trusted users are allowed even when allowed-users excludes them", () => {
    const r = daemonVerdict({ ...base, user: agent, trustedUsers: ["hercules-ci-agent"], allowedUsers: [] });
    assert.equal(r.allowed, true);
    assert.equal(r.trusted, true);
  });
  it("primary group = build-users-group is refused, even when trusted", () => {
    const r = daemonVerdict({ ...base, user: builder, trustedUsers: ["*"] });
    assert.equal(r.allowed, false);
    assert.equal(r.trusted, false);
    assert.equal(r.reason, "refused: primary group nixbld is build-users-group");
    assert.equal(r.refusalMessage, "user 'nixbld1' is not allowed to connect to the Nix daemon");
  });
  it("build-users-group defaults to nixbld; an empty one refuses nobody", () => {
    assert.equal(daemonVerdict({ ...base, user: builder }).allowed, false);
    assert.equal(daemonVerdict({ ...base, user: builder, buildUsersGroup: "" }).allowed, true);
    assert.equal(defaultBuildUsersGroup(0), "nixbld");
    assert.equal(defaultBuildUsersGroup(1000), "");
  });
  it("supplementary membership in build-users-group is not a refusal", () => {
    const u: TrustSubject = { name: "carol", primaryGroup: "carol", supplementaryGroups: ["nixbld"] };
    assert.equal(daemonVerdict({ ...base, user: u }).allowed, true);
  });
  it("same rules for HEAD", () => {
    const r = daemonVerdict({ version: NIX_LATEST, user: alice, trustedUsers: ["@wheel"] });
    assert.equal(r.trusted, true);
  });
});

const o = (line: number): Origin => ({ kind: "file", file: "/home/u/.config/nix/nix.conf", line });
const s = (name: string, value: string, line = 1): OverriddenSetting => ({ name, value, origin: o(line) });
const daemonSettings = {
  substituters: ["https://cache.nixos.org/"],
  trustedSubstituters: ["https://trusted.example/", "https://noslash.example"],
};

describe("applyClientSettings: untrusted, 2.8", () => {
  const run = (...overridden: OverriddenSetting[]) =>
    applyClientSettings({ version: NIX_2_8, trusted: false, overridden, daemonSettings });

  it("allowed list of 2.8", () => {
    assert.deepEqual(untrustedAllowedSettings(NIX_2_8), ["timeout", "repeat", "connect-timeout"]);
  });
  it("timeout and repeat apply", () => {
    const r = run(s("timeout", "60"), s("repeat", "1"));
    assert.deepEqual(
      r.applied.map((a) => [a.setting, a.via, a.effective]),
      [
        ["timeout", "allowed for untrusted clients", true],
        ["repeat", "allowed for untrusted clients", true],
      ],
    );
    assert.equal(r.ignored.length, 0);
  });
  it("connect-timeout is accepted but has no effect in 2.8", () => {
    const r = run(s("connect-timeout", "5"));
    assert.equal(r.applied[0]?.effective, false);
    assert.match(r.applied[0]?.note ?? "", /2\.35/);
  });
  it("non-empty builders is dropped, with a debug-only message", () => {
    const r = run(s("builders", "ssh://b x86_64-linux"));
    assert.equal(r.applied.length, 0);
    const i = r.ignored[0]!;
    assert.equal(i.setting, "builders");
    assert.equal(
      i.nixMessage,
      "ignoring the client-specified setting 'builders', because it is a restricted setting and you are not a trusted user",
    );
    assert.equal(i.nixLogLevel, "debug");
    assert.equal(i.shownByDefault, false);
    assert.equal(i.notSent, false);
    assert.match(i.why, /debug/);
  });
  it("empty builders applies", () => {
    const r = run(s("builders", ""));
    assert.equal(r.applied[0]?.setting, "builders");
    assert.equal(r.applied[0]?.value, "");
    assert.equal(r.ignored.length, 0);
  });
  it("max-silent-time and build-poll-interval: max-silent-time is a fixed field, poll interval is restricted", () => {
    const r = run(s("max-silent-time", "30"), s("build-poll-interval", "1"));
    assert.equal(r.applied[0]?.via, "fixed field");
    assert.equal(r.ignored[0]?.setting, "build-poll-interval");
  });
  it("max-jobs, cores, keep-going are fixed fields, always applied", () => {
    const r = run(s("max-jobs", "0"), s("cores", "2"), s("keep-going", "true"), s("build-max-jobs", "1"));
    assert.deepEqual(
      r.applied.map((a) => a.via),
      ["fixed field", "fixed field", "fixed field", "fixed field"],
    );
    assert.equal(r.ignored.length, 0);
  });
  it("other restricted settings are ignored", () => {
    const r = run(s("builders-use-substitutes", "true"), s("system-features", "kvm"), s("sandbox", "false"));
    assert.deepEqual(
      r.ignored.map((i) => i.setting),
      ["builders-use-substitutes", "system-features", "sandbox"],
    );
    assert.equal(r.applied.length, 0);
  });
  it("experimental-features, show-trace are never sent; ssh-auth-sock is ignored silently", () => {
    const r = run(
      s("experimental-features", "nix-command"),
      s("show-trace", "true"),
      s("ssh-auth-sock", "/x"),
    );
    assert.deepEqual(
      r.ignored.map((i) => [i.setting, i.notSent, i.nixMessage]),
      [
        ["experimental-features", true, null],
        ["show-trace", true, null],
        ["ssh-auth-sock", false, null],
      ],
    );
  });
  it("substituters are filtered against trusted-substituters ∪ substituters, with the trailing-slash rule", () => {
    const r = run(
      s(
        "substituters",
        "https://cache.nixos.org https://trusted.example/ https://evil.example https://noslash.example/",
      ),
    );
    const a = r.applied[0]!;
    assert.equal(a.setting, "substituters");
    assert.equal(a.via, "substituter filter");
    // cache.nixos.org gains its slash; noslash.example/ does not lose its slash, so it is rejected.
    assert.equal(a.value, "https://cache.nixos.org/ https://trusted.example/");
    assert.deepEqual(
      r.ignored.map((i) => [i.value, i.nixMessage, i.nixLogLevel, i.shownByDefault]),
      [
        ["https://evil.example", "ignoring untrusted substituter 'https://evil.example'", "warning", true],
        [
          "https://noslash.example/",
          "ignoring untrusted substituter 'https://noslash.example/'",
          "warning",
          true,
        ],
      ],
    );
  });
  it("all substituters rejected leaves the connection with none", () => {
    const r = run(s("substituters", "https://evil.example"));
    assert.equal(r.applied[0]?.value, "");
    assert.match(r.applied[0]?.note ?? "", /no substituters at all/);
  });
  it("binary-caches alias is filtered the same way", () => {
    const r = run(s("binary-caches", "https://cache.nixos.org/"));
    assert.equal(r.applied[0]?.setting, "substituters");
    assert.equal(r.applied[0]?.value, "https://cache.nixos.org/");
  });
  it("plugin-files in 2.8 is just a restricted setting", () => {
    const r = run(s("plugin-files", "/x.so"));
    assert.equal(r.ignored[0]?.nixLogLevel, "debug");
    assert.match(r.ignored[0]?.nixMessage ?? "", /restricted setting/);
  });
  it("keeps origins", () => {
    const r = run(s("builders", "x", 7));
    assert.deepEqual(r.ignored[0]?.origin, o(7));
  });
});

describe("applyClientSettings: untrusted, HEAD", () => {
  const run = (...overridden: OverriddenSetting[]) =>
    applyClientSettings({ version: NIX_LATEST, trusted: false, overridden, daemonSettings });

  it("allowed list of HEAD", () => {
    assert.deepEqual(untrustedAllowedSettings(NIX_LATEST), [
      "timeout",
      "max-silent-time",
      "build-poll-interval",
      "connect-timeout",
    ]);
  });
  it("build-poll-interval applies, repeat no longer does", () => {
    const r = run(s("build-poll-interval", "1"), s("repeat", "1"));
    assert.equal(r.applied[0]?.setting, "build-poll-interval");
    assert.equal(r.ignored[0]?.setting, "repeat");
  });
  it("connect-timeout has an effect from 2.35", () => {
    assert.equal(run(s("connect-timeout", "5")).applied[0]?.effective, true);
  });
  it("restricted settings warn visibly", () => {
    const i = run(s("builders", "@/etc/nix/machines")).ignored[0]!;
    assert.equal(i.nixLogLevel, "warning");
    assert.equal(i.shownByDefault, true);
    assert.equal(
      i.nixMessage,
      "ignoring the client-specified setting 'builders', because it is a restricted setting and you are not a trusted user",
    );
  });
  it("substituter warning has the HEAD wording", () => {
    const i = run(s("substituters", "https://evil.example")).ignored[0]!;
    assert.equal(
      i.nixMessage,
      "ignoring untrusted substituter 'https://evil.example', you are not a trusted user.\n" +
        "Run `man nix.conf` for more information on the `substituters` configuration option.",
    );
  });
  it("plugin-files is not sent by a HEAD client", () => {
    assert.equal(run(s("plugin-files", "/x.so")).ignored[0]?.notSent, true);
  });
});

describe("applyClientSettings: version thresholds", () => {
  const one = (version: NixVersion, st: OverriddenSetting) =>
    applyClientSettings({ version, trusted: false, overridden: [st], daemonSettings });
  it("max-silent-time / build-poll-interval allowed from 2.12", () => {
    assert.equal(one(v(11), s("build-poll-interval", "1")).applied.length, 0);
    assert.equal(one(v(12), s("build-poll-interval", "1")).applied.length, 1);
  });
  it("repeat allowed before 2.13 only", () => {
    assert.equal(one(v(12), s("repeat", "1")).applied.length, 1);
    assert.equal(one(v(13), s("repeat", "1")).applied.length, 0);
  });
  it("restricted message becomes a warning in 2.22", () => {
    assert.equal(one(v(21), s("sandbox", "false")).ignored[0]?.nixLogLevel, "debug");
    assert.equal(one(v(22), s("sandbox", "false")).ignored[0]?.nixLogLevel, "warning");
  });
  it("plugin-files: warning 2.14–2.23, not sent from 2.24", () => {
    const w = one(v(14), s("plugin-files", "/x.so")).ignored[0]!;
    assert.equal(w.nixLogLevel, "warning");
    assert.match(w.nixMessage ?? "", /^Ignoring the client-specified plugin-files\./);
    assert.equal(one(v(24), s("plugin-files", "/x.so")).ignored[0]?.notSent, true);
  });
  it("substituter wording changes in 2.14", () => {
    assert.equal(
      one(v(13), s("substituters", "https://e")).ignored[0]?.nixMessage,
      "ignoring untrusted substituter 'https://e'",
    );
    assert.match(
      one(v(14), s("substituters", "https://e")).ignored[0]?.nixMessage ?? "",
      /not a trusted user/,
    );
  });
});

describe("applyClientSettings: trusted", () => {
  it("applies everything, including builders and substituters unfiltered", () => {
    const r = applyClientSettings({
      version: NIX_2_8,
      trusted: true,
      overridden: [
        s("builders", "ssh://b x86_64-linux"),
        s("substituters", "https://evil.example"),
        s("sandbox", "false"),
      ],
      daemonSettings,
    });
    assert.deepEqual(
      r.applied.map((a) => [a.setting, a.value, a.via]),
      [
        ["builders", "ssh://b x86_64-linux", "trusted client"],
        ["substituters", "https://evil.example", "trusted client"],
        ["sandbox", "false", "trusted client"],
      ],
    );
    assert.equal(r.ignored.length, 0);
  });
  it("still ignores experimental-features and ssh-auth-sock", () => {
    const r = applyClientSettings({
      version: NIX_LATEST,
      trusted: true,
      overridden: [s("experimental-features", "flakes"), s("ssh-auth-sock", "/tmp/a")],
      daemonSettings,
    });
    assert.equal(r.applied.length, 0);
    assert.equal(r.ignored.length, 2);
  });
  it("unknown settings are silently dropped when the daemon does not know them", () => {
    const r = applyClientSettings({
      version: NIX_2_8,
      trusted: true,
      overridden: [s("no-such-setting", "1"), s("builders", "")],
      daemonSettings: { ...daemonSettings, isKnownSetting: (n) => n !== "no-such-setting" },
    });
    assert.deepEqual(
      r.ignored.map((i) => [i.setting, i.nixMessage]),
      [["no-such-setting", null]],
    );
    assert.equal(r.applied[0]?.setting, "builders");
  });
  it("file-transfer settings have no effect on a 2.8 daemon even when trusted", () => {
    const r = applyClientSettings({
      version: NIX_2_8,
      trusted: true,
      overridden: [s("http-connections", "1")],
      daemonSettings,
    });
    assert.equal(r.applied[0]?.effective, false);
  });
});

describe("filterSubstituters", () => {
  it("adds a slash but never removes one", () => {
    assert.deepEqual(filterSubstituters(["a", "b/"], { substituters: ["a/"], trustedSubstituters: ["b"] }), {
      kept: ["a/"],
      rejected: ["b/"],
    });
  });
});

describe("storeMode", () => {
  it("auto: local when the state dir is writable", () => {
    assert.equal(
      storeMode({ storeSetting: "auto", uid: 1000, stateDirWritable: true, daemonSocketExists: true }),
      "local",
    );
  });
  it("auto: daemon when not writable and the socket exists", () => {
    assert.equal(
      storeMode({ storeSetting: "", uid: 1000, stateDirWritable: false, daemonSocketExists: true }),
      "daemon",
    );
  });
  it("auto: local when neither (Nix then fails or uses a chroot store)", () => {
    assert.equal(
      storeMode({ storeSetting: "auto", uid: 1000, stateDirWritable: false, daemonSocketExists: false }),
      "local",
    );
  });
  it("auto: root defaults to writable", () => {
    assert.equal(storeMode({ storeSetting: "auto", uid: 0, daemonSocketExists: true }), "local");
    assert.equal(storeMode({ storeSetting: "auto", uid: 5, daemonSocketExists: true }), "daemon");
  });
  it("explicit values", () => {
    const m = (storeSetting: string) =>
      storeMode({ storeSetting, uid: 1000, stateDirWritable: true, daemonSocketExists: false });
    assert.equal(m("daemon"), "daemon");
    assert.equal(m("unix:///tmp/sock"), "daemon");
    assert.equal(m("local"), "local");
    assert.equal(m("/tmp/chroot"), "local");
    assert.equal(m("ssh-ng://host"), "other");
    assert.equal(m("auto?root=/x"), "local");
  });
});
