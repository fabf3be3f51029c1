/**
 * src/os/owner.ts, the one "only root (or this user) may change this" check, on real files: one table,
 * each row naming which components its caller checks (the path itself, one lstat, or every directory
 * from `/`). Needs root (chown).
 */
import assert from "node:assert/strict";
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { untrustedChain, untrustedDir, untrustedEntry } from "../../src/os/owner.js";

const root = process.getuid?.() === 0;
const tmp = mkdtempSync("/tmp/nb-owner-");
const p = (name: string) => join(tmp, name);

before(() => {
  if (!root) return;
  chmodSync(tmp, 0o700);
  mkdirSync(p("mine"), { mode: 0o700 });
  mkdirSync(p("open"));
  chmodSync(p("open"), 0o777);
  mkdirSync(p("sticky"));
  chmodSync(p("sticky"), 0o1777);
  mkdirSync(p("sticky/inner"), { mode: 0o700 });
  mkdirSync(p("nobody"), { mode: 0o700 });
  chownSync(p("nobody"), 65534, 65534);
  mkdirSync(p("nobody/inner"), { mode: 0o700 });
  writeFileSync(p("file"), "x", { mode: 0o600 });
  symlinkSync(p("mine"), p("link"));
});

after(() => rmSync(tmp, { recursive: true, force: true }));

type Row = [caller: string, name: string, got: () => string | null, want: RegExp | null];

const rows: Row[] = [
  // builds-store (and hook install): the path itself, owned by us, a link is refused.
  ["path itself", "our 0700 directory", () => untrustedDir(p("mine")), null],
  [
    "path itself",
    "a 0777 directory",
    () => untrustedDir(p("open")),
    /^writable by group or others \(mode 777\)$/,
  ],
  ["path itself", "another user's directory", () => untrustedDir(p("nobody")), /^owned by uid 65534, not 0$/],
  ["path itself", "a link to our directory", () => untrustedDir(p("link")), /^not a directory$/],
  ["path itself", "missing", () => untrustedDir(p("absent")), /^ENOENT$/],
  ["path itself", "a file where a directory is wanted", () => untrustedDir(p("file")), /^not a directory$/],
  ["path itself", "a file, as a file", () => untrustedDir(p("file"), { kind: "file" }), null],
  [
    "path itself",
    "a sticky 1777 directory (not allowed here)",
    () => untrustedDir(p("sticky")),
    /^writable by group or others \(mode 1777\)$/,
  ],
  [
    "path itself",
    "another user's, when they are an owner",
    () => untrustedDir(p("nobody"), { owners: [0, 65534] }),
    null,
  ],
  // watch's state: one component already lstat'ed, a directory or a regular file.
  ["one lstat", "state dir", () => untrustedEntry(lstatSync(p("mine")), true), null],
  ["one lstat", "state file", () => untrustedEntry(lstatSync(p("file")), false), null],
  [
    "one lstat",
    "a directory as the state file",
    () => untrustedEntry(lstatSync(p("mine")), false),
    /^not a regular file$/,
  ],
  [
    "one lstat",
    "a link as the state dir",
    () => untrustedEntry(lstatSync(p("link")), true),
    /^not a directory$/,
  ],
  // caches and plan --cache-dir: every directory from /, root or the user, sticky allowed above.
  ["whole chain", "under a root-owned sticky directory", () => untrustedChain(p("sticky/inner"), 0), null],
  [
    "whole chain",
    "ending in the sticky directory",
    () => untrustedChain(p("sticky"), 0),
    /sticky: writable by group or others \(mode 1777\)$/,
  ],
  [
    "whole chain",
    "through another user's directory",
    () => untrustedChain(p("nobody/inner"), 0),
    /nobody: owned by uid 65534, not 0$/,
  ],
  ["whole chain", "through the user's own directory", () => untrustedChain(p("nobody/inner"), 65534), null],
  [
    "whole chain",
    "through a 0777 directory",
    () => untrustedChain(join(p("open"), "x"), 0),
    /open: writable by group or others/,
  ],
  ["whole chain", "through a link", () => untrustedChain(p("link"), 0), /link: not a directory$/],
  ["whole chain", "a relative path", () => untrustedChain("tmp/x", 0), /^not an absolute path$/],
];

describe("os/owner: who may change this path", { skip: root ? false : "needs root (chown)" }, () => {
  for (const [caller, name, got, want] of rows)
    it(`${caller}: ${name}`, () => {
      const why = got();
      if (want === null) assert.equal(why, null);
      else assert.match(why ?? "(null)", want);
    });
});
