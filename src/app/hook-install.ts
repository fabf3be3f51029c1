/**
 * `nix-builders hook install | uninstall | path`: point the daemon's `build-hook` at the wrapper
 * (libexec/build-hook), keep the original file in the state directory, and undo it.
 */
import { closeSync, constants, existsSync, fstatSync, mkdirSync, openSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { atomicWrite, readAll } from "../host/atomic.js";
import { writePrivateFile } from "../host/cache.js";
import { probeNix } from "../host/nix.js";
import { planInstall, planUninstall } from "../nix/hook-conf.js";
import { NIX, since } from "../nix/versions.js";
import { stateDir, untrustedDir } from "./builds-store.js";

/**
 * The wrapper shipped with this package: `<package>/libexec/build-hook`. This module runs from
 * src/app (tests), dist/ or dist/chunks (the bundle): the package is the nearest directory above it
 * that holds libexec/build-hook.
 */
export function wrapperPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    dir = resolve(dir, "..");
    const candidate = join(dir, "libexec", "build-hook");
    if (existsSync(candidate)) return candidate;
  }
  return resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "libexec", "build-hook");
}

/** The daemon's nix.conf: `$NIX_CONF_DIR/nix.conf`, default /etc/nix/nix.conf. */
export function daemonConf(env: NodeJS.ProcessEnv): string {
  return join(env["NIX_CONF_DIR"] ?? "/etc/nix", "nix.conf");
}

export class HookRefusal extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message);
  }
}

function readConf(file: string): string {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return "";
    throw new HookRefusal(file, `${file}: cannot be read (${code})`);
  }
  try {
    if (!fstatSync(fd).isFile()) throw new HookRefusal(file, `${file}: not a regular file`);
    const b = readAll(fd, 1 << 20);
    if (b === null) throw new HookRefusal(file, `${file}: larger than 1 MiB`);
    return b.toString("latin1");
  } finally {
    closeSync(fd);
  }
}

/** The saved original: a regular file, never through a link, at most 1 MiB; null otherwise. */
function readOrig(file: string): string | null {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    if (!fstatSync(fd).isFile()) return null;
    const b = readAll(fd, 1 << 20);
    return b === null ? null : b.toString("latin1");
  } finally {
    closeSync(fd);
  }
}

function origFile(state: string): string {
  return join(state, "hook", "nix.conf.orig");
}

export interface HookResult {
  action: "installed" | "already-installed" | "uninstalled" | "not-installed";
  conf: string;
  wrapper: string;
  restartNeeded: boolean;
  /**
   * Nix 2.25 and newer replace a `build-hook` of the system nix.conf at start-up with their own hook
   * (`2.30.5:src/nix/main.cc`); a value from `NIX_CONFIG` stays. When the installed Nix is one of those,
   * the line the daemon's environment needs (e.g. a systemd drop-in's `Environment=`).
   */
  daemonEnvironment?: string;
}

/** For Nix ≥ 2.25: `NIX_CONFIG=build-hook = <wrapper> <nix> __build-remote`; undefined otherwise. */
async function daemonEnvironment(env: NodeJS.ProcessEnv, wrapper: string): Promise<string | undefined> {
  const p = await probeNix(env["PATH"]);
  if (!p.install || !since(p.install.version, NIX.buildHookSelf)) return undefined;
  return `NIX_CONFIG=build-hook = ${wrapper} ${join(p.install.binDir, "nix")} __build-remote`;
}

export async function installHook(env: NodeJS.ProcessEnv, wrapper = wrapperPath()): Promise<HookResult> {
  const conf = daemonConf(env);
  if (!existsSync(wrapper))
    throw new HookRefusal(wrapper, `${wrapper}: the wrapper is missing from this installation`);
  // Nix 2.30 splits build-hook into words: a path with white space would not name the wrapper.
  if (/\s/.test(wrapper))
    throw new HookRefusal(wrapper, `${wrapper}: contains white space, which build-hook cannot hold`);
  const text = readConf(conf);
  const plan = planInstall(text, wrapper);
  const envLine = await daemonEnvironment(env, wrapper);
  const extra = envLine ? { daemonEnvironment: envLine } : {};
  if (plan.kind === "already")
    return { action: "already-installed", conf, wrapper, restartNeeded: false, ...extra };
  if (plan.kind === "conflict")
    throw new HookRefusal(
      conf,
      `${conf}:${plan.line}: sets build-hook to '${plan.value}'; the wrapper only wraps Nix's default hook, so nothing was changed`,
    );
  const state = stateDir(env);
  const dir = join(state, "hook");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const bad = untrustedDir(dir);
  if (bad !== null) throw new HookRefusal(dir, `${dir}: ${bad}`);
  // A new private file renamed into place (O_EXCL, O_NOFOLLOW, 0600): never through a planted link.
  if (!writePrivateFile(origFile(state), Buffer.from(text, "latin1")))
    throw new HookRefusal(dir, `${origFile(state)}: cannot be written`);
  if (!existsSync(dirname(conf))) mkdirSync(dirname(conf), { recursive: true, mode: 0o755 });
  await atomicWrite(conf, Buffer.from(plan.text, "latin1"), { backup: false });
  return { action: "installed", conf, wrapper, restartNeeded: true, ...extra };
}

export async function uninstallHook(env: NodeJS.ProcessEnv, wrapper = wrapperPath()): Promise<HookResult> {
  const conf = daemonConf(env);
  const text = readConf(conf);
  const state = stateDir(env);
  let original: string | null = null;
  if (untrustedDir(join(state, "hook")) === null) {
    original = readOrig(origFile(state));
  }
  const plan = planUninstall(text, wrapper, original);
  if (plan.kind === "not-installed") return { action: "not-installed", conf, wrapper, restartNeeded: false };
  if (plan.kind === "changed")
    throw new HookRefusal(
      conf,
      `${conf}:${plan.line}: the lines hook install added were changed since; edit them by hand`,
    );
  await atomicWrite(conf, Buffer.from(plan.text, "latin1"), { backup: false });
  return { action: "uninstalled", conf, wrapper, restartNeeded: true };
}
