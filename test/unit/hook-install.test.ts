/**
 * `hook install / uninstall / path` on real files: the daemon's nix.conf (NIX_CONF_DIR) gains the
 * build-hook line, a second install changes nothing, uninstall gives the file back byte for byte, and
 * another build-hook is refused (exit 2, one line naming the file).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { CLI_NODE_ARGS } from "../support/cli.js";
import { NIX230 } from "../support/nix-versions.js";

const WRAPPER = resolve(import.meta.dirname, "..", "..", "libexec", "build-hook");

function cli(args: string[], env: Record<string, string>) {
  const r = spawnSync(process.execPath, [...CLI_NODE_ARGS, ...args], {
    env: { ...process.env, ...env },
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test("install, install again, uninstall: byte for byte; path; a foreign build-hook is refused", () => {
  const dir = mkdtempSync(join(tmpdir(), "nb-hookinst-"));
  try {
    const conf = join(dir, "etc");
    const state = join(dir, "state");
    mkdirSync(conf);
    mkdirSync(state);
    chmodSync(state, 0o755);
    const original = "trusted-users = root\r\nmax-jobs = 4 # no newline at the end";
    writeFileSync(join(conf, "nix.conf"), original, "latin1");
    const env = { NIX_CONF_DIR: conf, NIX_BUILDERS_STATE_DIR: state };
    const a = cli(["hook", "install"], env);
    assert.equal(a.code, 0, a.err);
    assert.match(a.out, /restart/);
    const text = readFileSync(join(conf, "nix.conf"), "latin1");
    assert.ok(text.startsWith(`${original}\n`));
    assert.match(text, new RegExp(`^build-hook = ${WRAPPER.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}$`, "m"));
    const b = cli(["hook", "install", "--json"], env);
    assert.equal(JSON.parse(b.out).action, "already-installed");
    const u = cli(["hook", "uninstall"], env);
    assert.equal(u.code, 0, u.err);
    assert.equal(readFileSync(join(conf, "nix.conf"), "latin1"), original);
    assert.equal(cli(["hook", "path"], env).out, `${WRAPPER}\n`);
    writeFileSync(join(conf, "nix.conf"), "build-hook = /my/hook\n");
    const c = cli(["hook", "install"], env);
    assert.equal(c.code, 2);
    assert.match(c.err, /nix\.conf:1: sets build-hook to '\/my\/hook'/);
    assert.equal(readFileSync(join(conf, "nix.conf"), "utf8"), "build-hook = /my/hook\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the saved original is never written or read through a link planted in its place", () => {
  const dir = mkdtempSync(join(tmpdir(), "nb-hookinst-"));
  try {
    const conf = join(dir, "etc");
    const state = join(dir, "state");
    mkdirSync(conf);
    mkdirSync(join(state, "hook"), { recursive: true, mode: 0o700 });
    chmodSync(state, 0o755);
    const victim = join(dir, "victim");
    writeFileSync(victim, "do not touch\n");
    symlinkSync(victim, join(state, "hook", "nix.conf.orig"));
    writeFileSync(join(conf, "nix.conf"), "max-jobs = 4\n");
    const env = { NIX_CONF_DIR: conf, NIX_BUILDERS_STATE_DIR: state };
    const a = cli(["hook", "install"], env);
    assert.equal(a.code, 0, a.err);
    assert.equal(readFileSync(victim, "utf8"), "do not touch\n", "the link's target is untouched");
    assert.ok(lstatSync(join(state, "hook", "nix.conf.orig")).isFile(), "the link was replaced by a file");
    const u = cli(["hook", "uninstall"], env);
    assert.equal(u.code, 0, u.err);
    assert.equal(readFileSync(join(conf, "nix.conf"), "utf8"), "max-jobs = 4\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("with Nix 2.30 installed: nix.conf's build-hook is replaced at start-up, so install names the daemon's NIX_CONFIG line", {
  skip: NIX230.skipReason,
}, () => {
  const dir = mkdtempSync(join(tmpdir(), "nb-hookinst230-"));
  try {
    const conf = join(dir, "etc");
    const state = join(dir, "state");
    mkdirSync(conf);
    mkdirSync(state);
    chmodSync(state, 0o755);
    const env = {
      NIX_CONF_DIR: conf,
      NIX_BUILDERS_STATE_DIR: state,
      PATH: `${NIX230.bin}:${process.env["PATH"]}`,
      NIX_USER_CONF_FILES: "",
    };
    const a = cli(["hook", "install", "--json"], env);
    assert.equal(a.code, 0, a.err);
    const r = JSON.parse(a.out) as { daemonEnvironment?: string };
    assert.equal(r.daemonEnvironment, `NIX_CONFIG=build-hook = ${WRAPPER} ${NIX230.nix} __build-remote`);
    // The real 2.30: the nix.conf line alone is replaced; the printed environment is what it uses.
    const show = (extra: Record<string, string>) =>
      spawnSync(
        NIX230.nix,
        ["--extra-experimental-features", "nix-command", "config", "show", "build-hook"],
        {
          env: { PATH: "/usr/bin:/bin", NIX_CONF_DIR: conf, NIX_USER_CONF_FILES: "", HOME: dir, ...extra },
          encoding: "utf8",
        },
      ).stdout.trim();
    assert.equal(show({}), `${NIX230.nix} __build-remote`);
    assert.equal(
      show({ NIX_CONFIG: r.daemonEnvironment!.slice("NIX_CONFIG=".length) }),
      `${WRAPPER} ${NIX230.nix} __build-remote`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
