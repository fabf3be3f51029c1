import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  findGroup,
  findPasswd,
  groupNameOf,
  memberGroups,
  parseGroup,
  parsePasswd,
  peerIdentity,
  resolveUser,
  userNameOf,
} from "../../src/host/users.js";

const PASSWD = [
  "root:x:0:0:root:/root:/bin/bash",
  "# a comment line",
  "",
  "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin",
  "hercules-ci-agent:x:998:997:Hercules CI Agent:/var/lib/hercules-ci-agent:/usr/sbin/nologin",
  "alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\r",
  "orphan:x:1001:4242::/home/orphan:/bin/sh",
  "broken:x:notanumber:1:::",
  "short:x:5:5",
  "+nisuser::::::",
  "alice:x:2000:2000:duplicate, ignored:/elsewhere:/bin/false",
  "builder1:x:30001:30000:Nix build user 1:/var/empty:/usr/sbin/nologin",
].join("\n");

const GROUP = [
  "root:x:0:",
  "daemon:x:1:",
  "wheel:x:10:alice,bob",
  "hercules-ci-agent:x:997:",
  "alice:x:1000:",
  "nixtrust:x:1500: hercules-ci-agent , carol",
  "dup:x:1600:bob",
  "dup:x:1601:alice",
  "bad:x:gid:alice",
  "nixbld:x:30000:builder1",
  "",
].join("\n");

const db = { passwd: parsePasswd(PASSWD), groups: parseGroup(GROUP) };

describe("parsePasswd", () => {
  it("keeps well-formed entries in order and skips comments, blanks, NIS and malformed lines", () => {
    assert.deepEqual(
      db.passwd.map((p) => p.name),
      ["root", "daemon", "hercules-ci-agent", "alice", "orphan", "alice", "builder1"],
    );
  });
  it("parses every field and strips a CR", () => {
    assert.deepEqual(db.passwd[3], {
      name: "alice",
      uid: 1000,
      gid: 1000,
      gecos: "Alice,,,",
      home: "/home/alice",
      shell: "/bin/bash",
    });
  });
  it("accepts an empty gecos", () => {
    assert.equal(db.passwd[4]?.gecos, "");
    assert.equal(db.passwd[4]?.home, "/home/orphan");
  });
});

describe("parseGroup", () => {
  it("parses members, trims them and drops empty ones", () => {
    assert.deepEqual(findGroup(db.groups, "nixtrust")?.members, ["hercules-ci-agent", "carol"]);
    assert.deepEqual(findGroup(db.groups, "root")?.members, []);
    assert.deepEqual(findGroup(db.groups, "wheel"), { name: "wheel", gid: 10, members: ["alice", "bob"] });
  });
  it("skips a non-numeric gid", () => {
    assert.equal(findGroup(db.groups, "bad"), null);
  });
});

describe("lookups", () => {
  it("first entry wins for duplicate names", () => {
    assert.equal(findPasswd(db.passwd, "alice")?.uid, 1000);
    assert.equal(findGroup(db.groups, "dup")?.gid, 1600);
  });
  it("by id, as a number or an all-digit string", () => {
    assert.equal(findPasswd(db.passwd, 998)?.name, "hercules-ci-agent");
    assert.equal(findPasswd(db.passwd, "998")?.name, "hercules-ci-agent");
    assert.equal(findGroup(db.groups, 30000)?.name, "nixbld");
    assert.equal(findPasswd(db.passwd, 4242), null);
    assert.equal(findPasswd(db.passwd, "nobody-here"), null);
  });
  it("names fall back to decimal ids like Nix", () => {
    assert.equal(groupNameOf(db.groups, 4242), "4242");
    assert.equal(userNameOf(db.passwd, 12345), "12345");
    assert.equal(groupNameOf(db.groups, 997), "hercules-ci-agent");
  });
  it("member groups use only the first entry of a group name (getgrnam semantics)", () => {
    assert.deepEqual(memberGroups(db.groups, "alice"), ["wheel"]);
    assert.deepEqual(memberGroups(db.groups, "bob"), ["wheel", "dup"]);
    assert.deepEqual(memberGroups(db.groups, "hercules-ci-agent"), ["nixtrust"]);
  });
});

describe("resolveUser", () => {
  it("returns the full record", () => {
    assert.deepEqual(resolveUser(db, "hercules-ci-agent"), {
      name: "hercules-ci-agent",
      uid: 998,
      gid: 997,
      home: "/var/lib/hercules-ci-agent",
      shell: "/usr/sbin/nologin",
      primaryGroup: "hercules-ci-agent",
      supplementaryGroups: ["nixtrust"],
      source: "files",
    });
  });
  it("uses the decimal gid as primaryGroup when the gid has no group", () => {
    const u = resolveUser(db, "orphan");
    assert.equal(u?.primaryGroup, "4242");
    assert.deepEqual(u?.supplementaryGroups, []);
  });
  it("root by uid 0", () => {
    assert.equal(resolveUser(db, 0)?.name, "root");
    assert.equal(resolveUser(db, 0)?.primaryGroup, "root");
  });
  it("is null for unknown users", () => {
    assert.equal(resolveUser(db, "mallory"), null);
    assert.equal(resolveUser(db, 4321), null);
  });
});

describe("peerIdentity", () => {
  it("derives names from the peer's uid and gid, with decimal fallbacks", () => {
    assert.deepEqual(peerIdentity(db, 1000, 10), {
      name: "alice",
      primaryGroup: "wheel",
      supplementaryGroups: ["wheel"],
    });
    assert.deepEqual(peerIdentity(db, 777, 888), {
      name: "777",
      primaryGroup: "888",
      supplementaryGroups: [],
    });
  });
  it("uses the process gid, not the passwd gid", () => {
    assert.equal(peerIdentity(db, 30001, 0).primaryGroup, "root");
    assert.equal(peerIdentity(db, 30001, 30000).primaryGroup, "nixbld");
  });
});
