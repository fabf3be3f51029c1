/**
 * The ssh command line Nix builds for `ssh://` and `ssh-ng://` stores (Nix 2.8.0 src/libstore/ssh.cc; docs/protocols.md), as a pure
 * function of the store URI, the machine columns and NIX_SSHOPTS. Two behaviour families:
 *
 *  - 2.8 (< 2.12 for `-a`, < 2.26 for NIX_SSHOPTS splitting, < 2.31 for ports):
 *      ssh <host> -x -a <NIX_SSHOPTS words> [-i key] [-oUserKnownHostsFile=F] [-C] [-v] <command string>
 *  - current Nix:
 *      ssh <user@host> -x <NIX_SSHOPTS shell words> [-i key] [-oUserKnownHostsFile=F] [-C] [-p<port>]
 *          -oPermitLocalCommand=yes -oLocalCommand=echo started [-v] -- <remote-program words> --serve --write [--store X]
 *
 * The result is always an argv array: nothing here is ever given to a shell on this machine.
 * (On the remote side ssh joins the words with spaces and the login shell re-splits them; that is
 * Nix's behaviour and we reproduce it, we do not fix it.)
 *
 * Not modelled: the ssh master connection (`-M -N -S`), which Nix only uses when
 * `max-connections` > 1; machines always force 1 for `ssh://`, and `ssh-ng://` defaults to 1.
 */
import type { NixVersion } from "../nix/version.js";
import { NIX, since } from "../nix/versions.js";

export interface NixSshArgvInput {
  /** The Nix whose behaviour to reproduce. */
  version: NixVersion;
  /** `ssh://[user@]host[:port][?params]` or `ssh-ng://…`; a bare `host` is treated as `ssh://host`. */
  storeUri: string;
  /** Machine column 3 (`ssh-key`); wins over the URI's `ssh-key` parameter. */
  sshKey?: string | null;
  /** Machine column 8 / `base64-ssh-public-host-key`; wins over the URI parameter. */
  base64PublicHostKey?: string | null;
  /**
   * Path where the caller will write `knownHostsContent` (Nix uses `<tmpdir>/host-key`).
   * Required when a public host key is set; the argv refers to it.
   */
  hostKeyFile?: string;
  /** The value of NIX_SSHOPTS (undefined = unset). */
  nixSshOpts?: string;
  /** `compress` store parameter; when undefined the URI parameter is used. */
  compress?: boolean;
  /** Nix's verbosity ≥ chatty (`-vvv`) adds `-v`. */
  verbose?: boolean;
  /** `remote-program`; when undefined the URI parameter or the default (`nix-store` / `nix-daemon`). */
  remoteProgram?: string;
  /** `remote-store`; when undefined the URI parameter is used. */
  remoteStore?: string;
}

export interface NixSshArgv {
  /** `ssh`, or for the local fake-ssh path `bash` (2.8) / the remote program (current Nix). */
  program: string;
  args: string[];
  /** True when Nix would not run ssh at all (host `localhost`: `fakeSSH` in src/libstore/ssh.cc). */
  fakeSsh: boolean;
  /** Which protocol the remote command speaks. */
  protocol: "serve" | "worker";
  /** The host string Nix uses in its messages (`cannot connect to '<host>'`). */
  host: string;
  /** The remote command as one string (what ssh sends to the remote shell). */
  remoteCommand: string;
  /** Content for `hostKeyFile`, when a public host key is pinned. Contains no secrets. */
  knownHostsContent?: string;
  /** Current Nix waits for the `started` line (from `-oLocalCommand`) on stdout before speaking. */
  expectStartedLine: boolean;
  /** Environment changes Nix applies to the ssh process (current Nix sets SHELL=/bin/sh). */
  env: Record<string, string>;
  /** Set when Nix would refuse this store before running anything; the other fields are then empty. */
  error?: string;
}

/** Store parameters decoded the way 2.8 does: split on `&`, values percent-decoded, first key wins. */
function parseParams(query: string): Map<string, string> {
  const params = new Map<string, string>();
  if (query === "") return params;
  for (const part of query.split("&")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    const k = part.slice(0, eq);
    let v = part.slice(eq + 1);
    try {
      v = decodeURIComponent(v);
    } catch {
      // leave undecodable values as they are
    }
    if (!params.has(k)) params.set(k, v);
  }
  return params;
}

function parseBool(s: string | undefined): boolean | undefined {
  if (s === undefined) return undefined;
  if (s === "true" || s === "1" || s === "yes") return true;
  if (s === "false" || s === "0" || s === "no") return false;
  return undefined;
}

/** The lenient base64 decoder of both versions: standard alphabet, stops at `=`, skips `\n`, no length check. */
export function nixBase64Decode(s: string): { ok: true; bytes: Buffer } | { ok: false; error: string } {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const out: number[] = [];
  let bits = 0;
  let acc = 0;
  for (const c of s) {
    if (c === "=") break;
    if (c === "\n") continue;
    const d = alphabet.indexOf(c);
    if (d < 0 || c.length !== 1) return { ok: false, error: `invalid character in Base64 string: '${c}'` };
    acc = ((acc << 6) | d) & 0xffff;
    bits += 6;
    if (bits >= 8) {
      out.push((acc >> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return { ok: true, bytes: Buffer.from(out) };
}

/** POSIX-ish word splitting as current Nix does it for NIX_SSHOPTS (`shellSplitString`). */
export function shellSplit(s: string): { ok: true; words: string[] } | { ok: false; error: string } {
  const words: string[] = [];
  let cur = "";
  let started = false;
  let i = 0;
  const push = () => {
    if (started) words.push(cur);
    cur = "";
    started = false;
  };
  while (i < s.length) {
    const c = s[i++]!;
    if (c === "\\") {
      if (i < s.length) {
        cur += s[i++];
        started = true;
      }
    } else if (c === " " || c === "\t") {
      push();
    } else if (c === '"') {
      started = true;
      let closed = false;
      while (i < s.length) {
        const d = s[i++]!;
        if (d === "\\" && i < s.length) {
          const e = s[i++]!;
          cur += e === "$" || e === "`" || e === '"' || e === "\\" ? e : `\\${e}`;
        } else if (d === "\\") {
          // a trailing backslash inside quotes: the quote is unterminated anyway
        } else if (d === '"') {
          closed = true;
          break;
        } else cur += d;
      }
      if (!closed) return { ok: false, error: "unterminated double quote" };
    } else if (c === "'") {
      started = true;
      const end = s.indexOf("'", i);
      if (end < 0) return { ok: false, error: "unterminated single quote" };
      cur += s.slice(i, end);
      i = end + 1;
    } else {
      cur += c;
      started = true;
    }
  }
  push();
  return { ok: true, words };
}

/** Nix's `shellEscape`: single quotes, `'` → `'\''`. */
export function shellEscape(s: string): string {
  return `'${s.replace(/'/g, "'\\''")}'`;
}

interface ParsedStore {
  scheme: "ssh" | "ssh-ng";
  /** Everything between `://` and `?`. */
  authority: string;
  params: Map<string, string>;
}

function parseStoreUri(uri: string): ParsedStore | { error: string } {
  let rest: string;
  let scheme: "ssh" | "ssh-ng";
  if (uri.startsWith("ssh://")) {
    scheme = "ssh";
    rest = uri.slice(6);
  } else if (uri.startsWith("ssh-ng://")) {
    scheme = "ssh-ng";
    rest = uri.slice(9);
  } else if (
    !uri.includes("://") &&
    !uri.includes("/") &&
    !/^(auto|daemon|local)(\?|$)/.test(uri) &&
    !uri.startsWith("?")
  ) {
    scheme = "ssh";
    rest = uri;
  } else {
    return { error: `not an ssh store URI: '${uri}'` };
  }
  const q = rest.indexOf("?");
  const authority = q < 0 ? rest : rest.slice(0, q);
  const params = parseParams(q < 0 ? "" : rest.slice(q + 1));
  return { scheme, authority, params };
}

/** 2.8: the host string is the authority as written, with `[v6]` brackets removed. */
function host28(authority: string): string {
  const at = authority.lastIndexOf("@");
  const user = at < 0 ? "" : authority.slice(0, at + 1);
  const h = at < 0 ? authority : authority.slice(at + 1);
  const m = /^\[([^\]]*)\]$/.exec(h);
  return m ? user + m[1] : authority;
}

interface AuthorityHead {
  user: string | null;
  host: string;
  port: number | null;
}

/** Current Nix: `[user@]host[:port]`, IPv6 with or without brackets. */
function parseAuthorityHead(authority: string): AuthorityHead | { error: string } {
  const at = authority.lastIndexOf("@");
  const user = at < 0 ? null : authority.slice(0, at);
  let hp = at < 0 ? authority : authority.slice(at + 1);
  let port: number | null = null;
  let host: string;
  const br = /^\[([^\]]*)\](?::(\d*))?$/.exec(hp);
  if (br) {
    host = br[1]!;
    if (br[2]) port = Number(br[2]);
  } else if ((hp.match(/:/g) ?? []).length > 1) {
    host = hp; // unbracketed IPv6, accepted for back-compat
  } else {
    const m = /^(.*):(\d*)$/.exec(hp);
    if (m) {
      hp = m[1]!;
      if (m[2]) port = Number(m[2]);
    }
    host = hp;
  }
  if (port !== null && (port < 1 || port > 65535)) return { error: `Cannot parse Nix store '${authority}'` };
  return { user, host, port };
}

function authorityErrorHead(authority: string, a: AuthorityHead): string | null {
  const prefix = `invalid SSH authority: '${authority}': `;
  if (a.user !== null) {
    if (a.user === "") return `${prefix}user name must not be empty`;
    if (a.user.startsWith("-")) return `${prefix}user name '${a.user}' must not start with '-'`;
  }
  if (a.host === "") return `${prefix}host name must not be empty`;
  if (a.host.startsWith("-")) return `${prefix}host name '${a.host}' must not start with '-'`;
  return null;
}

function failure(error: string, protocol: "serve" | "worker", host: string): NixSshArgv {
  return {
    program: "ssh",
    args: [],
    fakeSsh: false,
    protocol,
    host,
    remoteCommand: "",
    expectStartedLine: false,
    env: {},
    error,
  };
}

interface SshTarget {
  host: string; // as in Nix's messages
  sshHost: string; // the argv word
  knownHostsName: string;
  portArg: string[];
  isLocalhost: boolean;
}

/** The host of the store URI as the version's Nix validates and passes it to ssh. */
function sshTarget(
  authority: string,
  version: NixSshArgvInput["version"],
): SshTarget | { error: string; host: string } {
  if (!since(version, NIX.sshPorts)) {
    const host = host28(authority);
    if (host === "" || host.startsWith("-")) return { error: `invalid SSH host name '${host}'`, host };
    const at = host.lastIndexOf("@");
    // knownHostsName keeps any ":port"
    const knownHostsName = at < 0 ? host : host.slice(at + 1);
    return { host, sshHost: host, knownHostsName, portArg: [], isLocalhost: host === "localhost" };
  }
  const a = parseAuthorityHead(authority);
  if ("error" in a) return { error: a.error, host: authority };
  const err = authorityErrorHead(authority, a);
  if (err) return { error: err, host: a.host };
  return {
    host: a.host,
    sshHost: a.user !== null ? `${a.user}@${a.host}` : a.host,
    knownHostsName: a.host,
    portArg: a.port !== null ? [`-p${a.port}`] : [],
    isLocalhost: since(version, NIX.sshAuthorityLocalhost)
      ? authority === "localhost"
      : a.host === "localhost",
  };
}

/** The remote command: one string before 2.20, separate words (after `--`) since. */
function remoteCommandWords(
  wordCommand: boolean,
  protocol: "serve" | "worker",
  remoteProgram: string,
  remoteStore: string,
): { commandWords: string[]; remoteCommand: string } {
  if (!wordCommand) {
    const remoteCommand =
      `${remoteProgram} ${protocol === "serve" ? "--serve --write" : "--stdio"}` +
      (remoteStore === "" ? "" : ` --store ${shellEscape(remoteStore)}`);
    return { commandWords: [remoteCommand], remoteCommand };
  }
  const commandWords = [
    ...remoteProgram.split(/[ \t\n\r]+/).filter((w) => w !== ""),
    ...(protocol === "serve" ? ["--serve", "--write"] : ["--stdio"]),
    ...(remoteStore === "" ? [] : ["--store", remoteStore]),
  ];
  return { commandWords, remoteCommand: commandWords.join(" ") };
}

/** localhost: no ssh at all (`fakeSSH`). */
function fakeSshArgv(
  wordCommand: boolean,
  protocol: "serve" | "worker",
  host: string,
  cmd: { commandWords: string[]; remoteCommand: string },
  remoteProgram: string,
): NixSshArgv {
  const common = {
    fakeSsh: true,
    protocol,
    host,
    remoteCommand: cmd.remoteCommand,
    expectStartedLine: false,
  };
  if (!wordCommand) return { program: "bash", args: ["-c", cmd.remoteCommand], ...common, env: {} };
  return {
    program: cmd.commandWords[0] ?? remoteProgram,
    args: cmd.commandWords.slice(1),
    ...common,
    env: { SHELL: "/bin/sh" },
  };
}

/** Build the exact argv Nix would run for this store (see the module comment). */
export function nixSshArgv(input: NixSshArgvInput): NixSshArgv {
  const parsed = parseStoreUri(input.storeUri);
  if ("error" in parsed) return failure(parsed.error, "serve", "");
  const protocol = parsed.scheme === "ssh" ? "serve" : "worker";
  const p = parsed.params;
  const sshKey = input.sshKey ?? p.get("ssh-key") ?? "";
  const hostKeyB64 = input.base64PublicHostKey ?? p.get("base64-ssh-public-host-key") ?? "";
  const compress = input.compress ?? parseBool(p.get("compress")) ?? false;
  const remoteProgram =
    input.remoteProgram ?? p.get("remote-program") ?? (protocol === "serve" ? "nix-store" : "nix-daemon");
  const remoteStore = input.remoteStore ?? p.get("remote-store") ?? "";
  const startedLine = since(input.version, NIX.sshStartedLine);
  const wordCommand = since(input.version, NIX.sshCommandWords);

  const target = sshTarget(parsed.authority, input.version);
  if ("error" in target) return failure(target.error, protocol, target.host);
  const { host } = target;
  const cmd = remoteCommandWords(wordCommand, protocol, remoteProgram, remoteStore);
  if (target.isLocalhost) return fakeSshArgv(wordCommand, protocol, host, cmd, remoteProgram);

  // ---- common options
  const args: string[] = [target.sshHost, "-x"];
  if (!since(input.version, NIX.sshNoAgentFlag)) args.push("-a");
  const opts = input.nixSshOpts ?? "";
  if (since(input.version, NIX.sshShellSplitOptions)) {
    const split = shellSplit(opts);
    if (!split.ok) return failure(`${split.error}\n… while splitting NIX_SSHOPTS '${opts}'`, protocol, host);
    args.push(...split.words);
  } else {
    args.push(...opts.split(/[ \t\n\r]+/).filter((w) => w !== ""));
  }
  if (sshKey !== "") {
    if (since(input.version, NIX.sshAbsoluteKey) && !sshKey.startsWith("/"))
      return failure(`not an absolute path: '${sshKey}'`, protocol, host);
    args.push("-i", sshKey);
  }
  let knownHostsContent: string | undefined;
  if (hostKeyB64 !== "") {
    const dec = nixBase64Decode(hostKeyB64);
    if (!dec.ok) {
      const msg = since(input.version, NIX.sshPorts)
        ? `${dec.error}\n… while decoding ssh public host key for host '${host}'`
        : dec.error;
      return failure(msg, protocol, host);
    }
    if (!input.hostKeyFile)
      return failure("internal: hostKeyFile is required to pin a host key", protocol, host);
    knownHostsContent = `${target.knownHostsName} ${dec.bytes.toString("latin1")}\n`;
    args.push(`-oUserKnownHostsFile=${input.hostKeyFile}`);
  }
  if (compress) args.push("-C");
  args.push(...target.portArg);
  if (startedLine) args.push("-oPermitLocalCommand=yes", "-oLocalCommand=echo started");
  if (input.verbose) args.push("-v");
  if (wordCommand) args.push("--");
  args.push(...cmd.commandWords);

  const out: NixSshArgv = {
    program: "ssh",
    args,
    fakeSsh: false,
    protocol,
    host,
    remoteCommand: cmd.remoteCommand,
    expectStartedLine: startedLine,
    env: startedLine ? { SHELL: "/bin/sh" } : {},
  };
  if (knownHostsContent !== undefined) out.knownHostsContent = knownHostsContent;
  return out;
}

export interface ProbeSshOptions {
  /** ssh's own connect timeout in seconds (`-oConnectTimeout=N`), default 10. */
  connectTimeoutSec?: number;
  /**
   * Add `-oIdentityAgent=none`. Off by default: we prefer to reproduce the daemon's situation by
   * running ssh without SSH_AUTH_SOCK (see `probeSshEnv`), which keeps an `IdentityAgent` that the
   * daemon user's own ssh_config sets. Turn it on when the environment cannot be controlled.
   */
  noAgent?: boolean;
  /**
   * Make this ssh a connection master listening on this socket (`-oControlMaster=yes
   * -oControlPath=… -oControlPersist=no`), so that a second command can run over the same authenticated connection
   * (`ssh -oControlPath=… -oControlMaster=no`) without a second key exchange. The connection itself is
   * unchanged. ssh exits (255) if it cannot bind the socket: keep the path within MAX_CONTROL_PATH.
   */
  controlPath?: string;
}

/**
 * The longest ControlPath a master can listen on (OpenSSH 9.2, Linux, measured): ssh binds
 * `<path>.<16 random characters>` first and renames it, and a socket path holds 107 bytes, so 90. At 91
 * ssh prints `unix_listener: path "…" too long for Unix domain socket` and exits 255.
 */
export const MAX_CONTROL_PATH = 90;

/**
 * Nix's argv plus the options that make a probe non-interactive and bounded:
 * `-oBatchMode=yes` (the daemon has no terminal, so any prompt fails there too) and
 * `-oConnectTimeout=N`. They are inserted right after the host word, before NIX_SSHOPTS:
 * ssh uses the first value it sees for an option, so ours cannot be overridden into a hang;
 * all authentication and host-key options stay exactly as Nix passes them.
 */
export function probeSshArgv(input: NixSshArgvInput, opts: ProbeSshOptions = {}): NixSshArgv {
  const base = nixSshArgv(input);
  if (base.error) return base;
  // Nix gives 2.8's local `bash -c` a pipe on stdin; Node's stdio "pipes" are socket pairs, and bash
  // with a socket on stdin believes rshd/sshd started it and sources ~/.bashrc (measured: root's took
  // 3-10 s here, and Nix never runs it). A nested shell (SHLVL ≥ 1) never does that.
  if (base.fakeSsh) return base.program === "bash" ? { ...base, env: { ...base.env, SHLVL: "1" } } : base;
  // Ours, stricter than Nix: 2.8 checks only that the whole `user@host` word does not start with `-`,
  // so it runs ssh for `nix@-oProxyCommand=…`. We never hand ssh a user or host that starts with `-`.
  const target = base.args[0] ?? "";
  const at = target.lastIndexOf("@");
  if (target.startsWith("-") || target.slice(at + 1).startsWith("-"))
    return {
      ...base,
      args: [],
      error: `refusing to run ssh for '${target}': the user or host starts with '-' (ssh could read it as an option)`,
    };
  const extra = ["-oBatchMode=yes", `-oConnectTimeout=${opts.connectTimeoutSec ?? 10}`];
  if (opts.noAgent) extra.push("-oIdentityAgent=none");
  if (opts.controlPath !== undefined)
    extra.push(
      "-oControlMaster=yes",
      `-oControlPath=${opts.controlPath.replaceAll("%", "%%")}`,
      // An ssh_config ControlPersist would leave a master running after the probe.
      "-oControlPersist=no",
    );
  return { ...base, args: [base.args[0]!, ...extra, ...base.args.slice(1)] };
}

/**
 * The environment for a probe's ssh: like the build hook, no DISPLAY / SSH_ASKPASS (no dialogs);
 * like a daemon started by the service manager, no SSH_AUTH_SOCK (no agent); plus what Nix sets.
 */
export function probeSshEnv(base: NodeJS.ProcessEnv, argv: NixSshArgv): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) {
    if (v === undefined) continue;
    if (k === "DISPLAY" || k === "SSH_ASKPASS" || k === "SSH_AUTH_SOCK") continue;
    env[k] = v;
  }
  return { ...env, ...argv.env };
}
