/**
 * The builder checks' verdicts: pure functions of the facts (builder-facts.ts) to an outcome, and the
 * pure helpers the stages share. Nothing here runs, reads or connects; test/unit/doctor-verdicts.test.ts
 * drives them with fixture facts.
 */
import { join } from "node:path";
import { sshAuthority } from "../../nix/store-uri.js";
import { matchUserList } from "../../nix/trust.js";
import type { NixVersion } from "../../nix/version.js";
import { NIX, since } from "../../nix/versions.js";
import { type NixSshArgv, shellEscape } from "../../remote/ssh-argv.js";
import type {
  ArgvFact,
  BuilderScope,
  ConfigFact,
  DnsFact,
  KeyFact,
  ProbeFact,
  Reach,
  RemoteConfig,
  RemoteConfigFact,
  RemoteRun,
  SshG,
  TcpFact,
} from "./builder-facts.js";
import { type Classification, FIXES, parseSshTrace } from "./classify.js";
import { type CheckOutcome, type Evidence, truncate } from "./types.js";

export function q(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : shellEscape(a))).join(" ");
}

/** The command part of a Nix ssh argv replaced by `command` (one string, sent to the remote shell). */
export function withCommand(a: NixSshArgv, version: NixVersion, command: string | null): string[] {
  // Before 2.20 the command is the last word; since, it is every word after the last `--`.
  const words = since(version, NIX.sshCommandWords);
  const dd = a.args.lastIndexOf("--");
  const head = words && dd >= 0 ? a.args.slice(0, dd) : a.args.slice(0, -1);
  if (command === null) return head;
  return words ? [...head, "--", command] : [...head, command];
}

export function parseSshG(text: string, home: string): SshG {
  const g: SshG = {
    hostname: "",
    port: 22,
    user: "",
    identityFiles: [],
    hostKeyAlias: null,
    proxy: null,
    strictHostKeyChecking: "ask",
    userKnownHostsFiles: [],
  };
  const tilde = (p: string) => (p.startsWith("~/") ? join(home, p.slice(2)) : p);
  for (const line of text.split("\n")) {
    const sp = line.indexOf(" ");
    if (sp < 0) continue;
    const k = line.slice(0, sp).toLowerCase();
    const v = line.slice(sp + 1).trim();
    if (k === "hostname") g.hostname = v;
    else if (k === "port") g.port = Number(v);
    else if (k === "user") g.user = v;
    else if (k === "identityfile") g.identityFiles.push(tilde(v));
    else if (k === "hostkeyalias") g.hostKeyAlias = v;
    else if ((k === "proxyjump" || k === "proxycommand") && v !== "none") g.proxy = `${k} ${v}`;
    else if (k === "stricthostkeychecking") g.strictHostKeyChecking = v;
    else if (k === "userknownhostsfile") g.userKnownHostsFiles = v.split(/\s+/).map(tilde);
  }
  return g;
}

/**
 * The first hop of an ssh `ProxyJump` value (`[user@]host[:port]` or `ssh://[user@]host[:port]`, hops
 * separated by commas; an IPv6 host in brackets): where ssh's own TCP connection goes. Null for `none`
 * or a value that does not parse.
 */
export function firstJumpHop(
  value: string,
): { user: string | null; host: string; port: number | null } | null {
  let v = value.split(",")[0]!.trim();
  if (v === "" || v === "none") return null;
  if (v.startsWith("ssh://")) v = v.slice(6).replace(/\/$/, "");
  let user: string | null = null;
  const at = v.lastIndexOf("@");
  if (at >= 0) {
    user = v.slice(0, at);
    v = v.slice(at + 1);
  }
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(v) ?? /^([^:]+)(?::(\d+))?$/.exec(v);
  if (!m) return null;
  const host = m[1]!;
  const port = m[2] === undefined ? null : Number(m[2]);
  if (host === "" || host.startsWith("-") || (port !== null && (port < 1 || port > 65535))) return null;
  return { user, host, port };
}

/** The fixed remote-config command: no machine field is interpolated except an escaped remote-program directory. */
export function remoteCommandText(storeUri: string): string {
  const qpos = storeUri.indexOf("?");
  let prefix = "";
  if (qpos >= 0) {
    const rp = new URLSearchParams(storeUri.slice(qpos + 1)).get("remote-program");
    if (rp?.includes("/")) prefix = shellEscape(rp.slice(0, rp.lastIndexOf("/") + 1));
  }
  const p = (name: string) => (prefix === "" ? name : `${prefix}${name}`);
  return `${p("nix-store")} --version && id -un && id -Gn && ${p("nix")} --extra-experimental-features nix-command show-config --json`;
}

function settingValue(s: Record<string, unknown> | null, name: string): unknown {
  const v = s?.[name];
  if (v && typeof v === "object" && "value" in (v as Record<string, unknown>))
    return (v as { value: unknown }).value;
  return undefined;
}

function strList(v: unknown): string[] {
  if (Array.isArray(v)) return v.map(String);
  if (typeof v === "string") return v.split(/\s+/).filter(Boolean);
  return [];
}

/** The remote-config command's output: `nix-store --version`, `id -un`, `id -Gn`, then show-config's JSON. */
export function parseRemoteConfig(r: RemoteRun): RemoteConfig {
  let out = r.stdout;
  if (r.expectStartedLine && out.startsWith("started\n")) out = out.slice(8);
  const lines = out.split("\n");
  let settings: Record<string, unknown> | null;
  try {
    settings = JSON.parse(lines.slice(3).join("\n")) as Record<string, unknown>;
  } catch {
    settings = null;
  }
  return {
    nixVersion: /\(Nix\) (\S+)/.exec(lines[0] ?? "")?.[1] ?? null,
    user: lines[1]?.trim() || null,
    groups: (lines[2] ?? "").trim().split(/\s+/).filter(Boolean),
    settings,
    raw: { stdout: truncate(r.stdout, 400), stderr: truncate(r.stderr.trim(), 800), code: r.code },
  };
}

function probeEvidence(p: ProbeFact): Evidence[] {
  const r = p.result;
  const trace = parseSshTrace(r.stderr);
  const ev: Evidence[] = [
    {
      what: `ran (as the identity that runs ssh for Nix): ${q(p.argv)}`,
      result:
        `${r.ok ? "handshake ok" : `failed: ${r.failure?.kind}: ${r.failure?.nixMessage}`}; ` +
        `exit ${r.exitCode ?? r.signal ?? "?"}${r.killed ? " (killed at the deadline)" : ""}; ` +
        `handshake ${r.timings.handshakeMs ?? "-"} ms, total ${r.timings.totalMs} ms`,
    },
  ];
  if (trace.plain.trim() !== "")
    ev.push({
      what: "stderr (ssh and the remote command, without -v lines)",
      result: truncate(trace.plain, 1500),
    });
  return ev;
}

function probeFail(p: ProbeFact, prefix: string): CheckOutcome {
  return {
    status: "fail",
    cause: p.cls.cause,
    message: `${prefix}${p.cls.summary}`,
    evidence: probeEvidence(p),
    fix: p.cls.fix,
  };
}

/** Stages in order; a check at stage S passes when the probe got past S. */
const STAGE_ORDER = ["spawn", "connect", "host-key", "auth", "exec", "handshake", "store", "ok"] as const;
function reached(cls: Classification, stage: (typeof STAGE_ORDER)[number]): boolean {
  return STAGE_ORDER.indexOf(cls.stage) > STAGE_ORDER.indexOf(stage);
}

/** For a store Nix reaches without ssh (localhost before 2.32…): "not applicable", else null. */
function notSsh(reach: Reach, s: BuilderScope): CheckOutcome | null {
  const a = reach.plan.argv;
  if (!a.fakeSsh) return null;
  return {
    status: "pass",
    message: `not applicable: for '${a.host}' Nix ${since(s.env.version, NIX.sshCommandWords) ? "runs the remote program directly" : "runs `bash -c` locally"}, without ssh`,
  };
}

/** The `ssh -G` answer of a check after ssh-config (null only for a store Nix reaches without ssh). */
function sshG(reach: Reach): SshG {
  if (reach.g === null) throw new Error("no ssh -G answer for an ssh store");
  return reach.g;
}

const ONLY_SSH = "the doctor checks only ssh:// and ssh-ng:// builders; nothing was run for it";

/**
 * The verdict on a machine whose store is not reached over ssh, from this machine alone (a stat, no
 * connection, nothing run): which store the build hook would open instead, and whether it is there.
 */
function nonSshVerdict(f: Extract<ArgvFact, { kind: "not-ssh" }>, s: BuilderScope): CheckOutcome {
  const { open, stat } = f;
  const uri = s.machine.storeUri;
  const who = s.env.identity.name;
  const warn = (message: string, evidence: Evidence[] = []): CheckOutcome => ({
    status: "warn",
    cause: "local-config",
    message: `'${uri}' is not a remote builder: ${message}; ${ONLY_SSH}`,
    evidence,
    fix: "For a remote builder, use an ssh://[user@]host or ssh-ng://[user@]host store URI in the machines line.",
  });
  switch (open.kind) {
    case "auto":
      return warn(
        "it is this machine's own store (local, or through its daemon): builds sent there run here",
      );
    case "local": {
      if (open.root === null || stat === null)
        return warn("it is this machine's system store: builds sent there run here");
      const ev = [
        {
          what: `stat ${stat.path}`,
          result: stat.error ?? (stat.isDirectory ? "a directory" : "not a directory"),
        },
      ];
      return warn(
        `it is a chroot store on this machine (${open.root}${stat.error !== null ? ", not there yet: Nix creates it" : ""}); builds sent there run here, as ${who}`,
        ev,
      );
    }
    case "daemon": {
      const socket = stat?.path ?? "";
      const ev = [
        { what: `stat ${socket}`, result: stat?.error ?? (stat?.isSocket ? "a socket" : "not a socket") },
      ];
      if (!stat || stat.error !== null || !stat.isSocket)
        return {
          status: "fail",
          cause: "daemon-unreachable",
          message: `'${uri}' is the Nix daemon at ${socket} on this machine, and Nix cannot connect to it: cannot connect to socket at '${socket}': ${stat?.error != null ? (stat.error === "ENOENT" ? "No such file or directory" : stat.error) : "Connection refused"}`,
          evidence: ev,
          fix: "Remove this line, or start the daemon it names. A remote builder needs an ssh:// or ssh-ng:// store URI.",
        };
      return warn(`it is the Nix daemon at ${socket} on this machine: builds sent there run here`, ev);
    }
    case "binary-cache":
      return {
        status: "fail",
        cause: "local-config",
        message: `'${uri}' is a binary cache (${open.scheme}), not a builder: every build sent there fails (Nix 2.8: "build of '…' on '${uri}' failed: error: unable to build with a primary store that isn't a local store"); ${ONLY_SSH}`,
        fix: "Remove this line from the machines list (binary caches belong in `substituters`).",
      };
    case "dummy":
      return {
        status: "fail",
        cause: "local-config",
        message: `'${uri}' is Nix's dummy store, which holds nothing and builds nothing; ${ONLY_SSH}`,
        fix: "Remove this line from the machines list.",
      };
    case "unknown":
      return {
        status: "warn",
        cause: "local-config",
        message: `'${uri}' is a ${open.scheme} store, not an ssh builder; ${ONLY_SSH}`,
      };
  }
}

export function sshArgvVerdict(f: ArgvFact, s: BuilderScope): CheckOutcome {
  const uri = s.machine.storeUri;
  const v = s.env.version;
  switch (f.kind) {
    case "refused":
      return {
        status: "fail",
        cause: "local-config",
        message: `Nix ${v.major}.${v.minor} cannot open this store: ${f.reason}. The build hook prints "cannot build on '${uri}': ${f.reason}" and never uses this machine (nothing was run for it)`,
        fix: "Fix the store URI in column 1 of the machines line.",
      };
    case "not-ssh":
      return nonSshVerdict(f, s);
    case "dash":
      return {
        status: "fail",
        cause: "local-config",
        message: `refusing to run ssh for '${uri}': the user or host starts with '-' (it would be read as an option)`,
        fix: "Fix the store URI in the machines line.",
      };
    case "argv-error":
      return {
        status: "fail",
        cause: "local-config",
        message: `Nix refuses this store before running anything: ${f.error}`,
        fix: FIXES["local-config"],
      };
    case "ssh": {
      const argv = f.plan.argv;
      const local = argv.fakeSsh
        ? ` Nix does not use ssh for it: it runs '${argv.remoteCommand}' on this machine as ${s.env.identity.name}.`
        : f.localhost
          ? ` (host localhost with a user: Nix ${since(v, NIX.sshAuthorityLocalhost) ? "≥2.32 connects with real ssh" : "2.8 uses real ssh for 'user@localhost', 2.31 would not"})`
          : "";
      return {
        status: "pass",
        message: `Nix ${v.major}.${v.minor} runs: ${q([argv.program, ...argv.args])}${local}`,
        evidence: [
          {
            what: "NIX_SSHOPTS in the environment of the identity that runs ssh",
            result: f.nixSshOpts === undefined ? "(unset)" : f.nixSshOpts,
          },
        ],
      };
    }
  }
}

export function sshConfigVerdict(f: ConfigFact, s: BuilderScope): CheckOutcome {
  // builder.ssh-argv warned about a store that is not reached over ssh: nothing below applies.
  if (f.kind === "not-ssh")
    return { status: "skip", message: "not applicable: not an ssh store (see builder.ssh-argv)" };
  const na = notSsh(f.reach, s);
  if (na || f.kind !== "ran") return na ?? { status: "skip", message: "not applicable" };
  const ev = { what: `ran: ${q(f.argv)}`, result: f.code === 0 ? "ok" : truncate(f.stderr.trim(), 800) };
  if (f.code !== 0)
    return {
      status: "fail",
      cause: "local-config",
      message: `ssh rejects its options or configuration: ${f.stderr.trim().split("\n").pop() ?? ""}`,
      evidence: [ev],
      fix: "Fix NIX_SSHOPTS or the ssh_config of the identity that runs ssh.",
    };
  const g = sshG(f.reach);
  const via = g.proxy ? `, via ${g.proxy}` : "";
  return {
    status: "pass",
    message: `as ${s.env.identity.name}: ${g.user}@${g.hostname} port ${g.port}${via}; keys tried: ${g.identityFiles.join(", ") || "(none)"}; known_hosts: ${g.userKnownHostsFiles.join(" ")}${g.hostKeyAlias ? `; HostKeyAlias ${g.hostKeyAlias}` : ""}`,
    evidence: [ev],
  };
}

export function dnsVerdict(f: DnsFact, s: BuilderScope): CheckOutcome {
  const na = notSsh(f.reach, s);
  if (na) return na;
  const t = f.target;
  const r = f.resolved;
  if (!t || !r) return { status: "pass", message: `not tested: ssh connects through ${sshG(f.reach).proxy}` };
  const ev = [{ what: `getaddrinfo(${t.host})`, result: r.ok ? r.addresses.join(" ") : (r.error ?? "") }];
  if (!r.ok)
    return {
      status: "fail",
      cause: r.error?.includes("no answer") ? "timeout" : "unreachable",
      message: `cannot resolve ${t.host}${t.via}: ${r.error}`,
      evidence: ev,
      fix: "Fix the host name (machines line or ssh_config HostName) or the resolver (/etc/hosts, DNS) of this machine.",
    };
  return {
    status: "pass",
    message: `${t.host}${t.via} → ${r.addresses.join(", ")} (${r.ms} ms)`,
    evidence: ev,
  };
}

export function tcpVerdict(f: TcpFact, s: BuilderScope): CheckOutcome {
  const na = notSsh(f.reach, s);
  if (na) return na;
  // builder.dns resolved the target (it passed, or said why it could not test).
  const t = f.target;
  if (!t) return { status: "pass", message: `not tested: ssh connects through ${sshG(f.reach).proxy}` };
  const ev: Evidence[] = f.attempts.map(({ address, result: r }) => ({
    what: `TCP connect ${address} port ${t.port}`,
    result: r.ok ? `connected in ${r.ms} ms` : `${r.error}: ${r.message}`,
  }));
  const ok = f.attempts.find((a) => a.result.ok);
  if (ok)
    return {
      status: "pass",
      message: `${ok.address} port ${t.port}${t.via} accepts connections (${ok.result.ms} ms)`,
      evidence: ev,
    };
  const last = f.attempts[f.attempts.length - 1]?.result ?? null;
  const timeout = last?.error === "timeout";
  return {
    status: "fail",
    cause: timeout ? "timeout" : "unreachable",
    message: timeout
      ? `no answer from ${t.host} port ${t.port}${t.via} within ${s.env.timeoutMs} ms (packets dropped?)`
      : `${t.host} port ${t.port}${t.via}: ${last?.message ?? "no address"}`,
    evidence: ev,
    fix: FIXES[timeout ? "timeout" : "unreachable"],
  };
}

function keyProblem(err: string, missing: boolean, who: string): string {
  return /incorrect passphrase|passphrase/.test(err)
    ? "has a passphrase (the daemon cannot type it, and has no agent)"
    : /UNPROTECTED|bad permissions/.test(err)
      ? "is readable by others, so ssh refuses it"
      : missing
        ? "does not exist"
        : /Permission denied/.test(err)
          ? `is not readable by ${who}`
          : `cannot be loaded (${err.split("\n").pop()})`;
}

export function keyVerdict(f: KeyFact, s: BuilderScope): CheckOutcome {
  const na = notSsh(f.reach, s);
  if (na) return na;
  const who = s.env.identity.name;
  const ev: Evidence[] = [];
  const usable: string[] = [];
  for (const r of f.runs) {
    const err = r.stderr.trim();
    const what = `ran: ${q(r.argv)} (output discarded)`;
    if (r.code === 0) {
      usable.push(r.file);
      ev.push({ what, result: "readable, no passphrase" });
      continue;
    }
    const missing = /No such file or directory/.test(err);
    if (!f.explicit && missing) continue;
    ev.push({ what, result: truncate(err, 400) });
    if (!f.explicit) continue;
    return {
      status: "fail",
      cause: "auth",
      message: `the key ${r.file} ${keyProblem(err, missing, who)}`,
      evidence: ev,
      fix: FIXES.auth,
    };
  }
  if (usable.length === 0)
    return {
      status: "warn",
      cause: "auth",
      message: `no usable key file for ${who} (${f.candidates.join(", ")}); ssh could only use an agent, and the daemon has none`,
      evidence: ev,
      fix: FIXES.auth,
    };
  return {
    status: "pass",
    message: `key ${usable.join(", ")}: readable by ${who}, no passphrase`,
    evidence: ev,
  };
}

export function hostKeyVerdict(p: ProbeFact, s: BuilderScope): CheckOutcome {
  const na = notSsh(p.reach, s);
  if (na) return na;
  const g = sshG(p.reach);
  const who = s.env.identity.name;
  const pinned = s.machine.sshPublicHostKey !== null || p.reach.plan.argv.knownHostsContent !== undefined;
  const a = sshAuthority(s.machine.storeUri, s.env.version);
  const pinnedName = (a.hostForKnownHosts ?? "").replace(/:\d+$/, "");
  let rewrite = "";
  if (pinned && g.hostname !== pinnedName && (g.hostKeyAlias === null || g.hostKeyAlias !== pinnedName))
    rewrite = ` ssh_config rewrites the host '${pinnedName}' to HostName ${g.hostname}, and ssh looks the pinned key up under ${g.hostname}: add \`HostKeyAlias ${pinnedName}\` for that Host.`;
  if (!reached(p.cls, "host-key")) {
    const out = probeFail(
      p,
      pinned ? "with the pinned host key: " : "with the known_hosts of the identity: ",
    );
    if (rewrite) out.message += rewrite;
    if (g.proxy?.startsWith("proxyjump "))
      // Measured (OpenSSH 9.2): the ssh that -J starts for the jump host gets neither -i nor
      // -oUserKnownHostsFile, so the pin and the machines line's key do not apply to it.
      out.message += ` The connection goes through ${g.proxy.slice(10)} (ProxyJump): ssh checks that jump host's key against ${who}'s own known_hosts and logs in with ${who}'s own keys (ssh passes neither the pinned key file nor -i to the jump), so the failure may be the jump host's: add its key to ${s.env.identity.home}/.ssh/known_hosts (or /etc/ssh/ssh_known_hosts).`;
    return out;
  }
  if (!pinned && g.strictHostKeyChecking === "false")
    return {
      status: "warn",
      cause: "host-key",
      message: `StrictHostKeyChecking is off for ${g.hostname} in ${who}'s ssh_config: any host key is accepted`,
      evidence: probeEvidence(p),
      fix: FIXES["host-key"],
    };
  const where = pinned
    ? "the host key pinned in the machines line matches"
    : `the host key is in the known_hosts of ${who}`;
  return { status: "pass", message: where, evidence: probeEvidence(p).slice(0, 1) };
}

export function authVerdict(p: ProbeFact, s: BuilderScope): CheckOutcome {
  const na = notSsh(p.reach, s);
  if (na) return na;
  if (!reached(p.cls, "auth")) return probeFail(p, "");
  return { status: "pass", message: `authenticated as ${p.reach.g?.user ?? "?"}` };
}

export function remoteCommandVerdict(p: ProbeFact): CheckOutcome {
  const cmd = p.reach.plan.argv.remoteCommand;
  if (!reached(p.cls, "exec")) return probeFail(p, `'${cmd}': `);
  return { status: "pass", message: `'${cmd}' started without output on stdout` };
}

export function handshakeVerdict(p: ProbeFact): CheckOutcome {
  if (p.cls.stage === "store" && !p.result.serve?.ok && !p.result.worker?.ok)
    return {
      status: "skip",
      message: "not reached: the remote command could not open its store (see builder.remote-daemon)",
    };
  if (!reached(p.cls, "handshake")) return probeFail(p, "");
  const r = p.result;
  const proto = r.serve?.ok
    ? `nix-store --serve protocol ${r.serve.serverVersion}`
    : r.worker?.ok
      ? `worker protocol ${r.worker.protocolVersion}, Nix ${r.worker.daemonNixVersion ?? "?"}${r.worker.trusted ? `, trust flag: ${r.worker.trusted}` : ""}`
      : "?";
  return {
    status: "pass",
    message: `${proto} (handshake after ${r.timings.handshakeMs} ms)`,
    evidence: probeEvidence(p).slice(0, 1),
  };
}

export function remoteDaemonVerdict(p: ProbeFact): CheckOutcome {
  if (p.cls.stage === "handshake")
    return { status: "skip", message: "not reached: the handshake failed (see builder.handshake)" };
  if (!reached(p.cls, "store")) return probeFail(p, "the builder's store: ");
  return {
    status: "pass",
    message: `the builder's store answers a query (QueryValidPaths of one absent path, ${p.result.timings.queryMs} ms)`,
  };
}

export function latencyVerdict(p: ProbeFact, s: BuilderScope): CheckOutcome {
  const ms = p.result.timings.handshakeMs ?? 0;
  if (ms > s.env.slowMs)
    return {
      status: "warn",
      cause: "slow",
      message: `ssh + handshake took ${ms} ms (more than ${s.env.slowMs} ms)`,
      fix: FIXES.slow,
    };
  return { status: "pass", message: `ssh + handshake in ${ms} ms` };
}

export function remoteConfigVerdict(f: RemoteConfigFact): CheckOutcome {
  const { run: r, rc } = f;
  const how =
    r.via === "mux"
      ? "over the main probe's ssh connection (its control socket: no second key exchange), fixed command"
      : "second ssh session, fixed command";
  const ev: Evidence[] = [
    {
      what: `ran (${how}): ${q(r.argv)}`,
      result: `exit ${r.code ?? r.signal}${r.timedOut ? " (timed out)" : ""}${rc.raw.stderr ? `; stderr: ${rc.raw.stderr}` : ""}`,
    },
  ];
  if (!rc.settings)
    return {
      status: "warn",
      cause: null,
      message: `could not read the builder's configuration (${rc.raw.stderr.split("\n").pop() || `exit ${r.code}`}); systems, features and trust are not checked`,
      evidence: ev,
      fix: "Make `nix` (2.4 or later) available next to nix-store on the builder's non-login PATH.",
    };
  const sys = String(settingValue(rc.settings, "system") ?? "?");
  return {
    status: "pass",
    message: `builder runs Nix ${rc.nixVersion ?? "?"} as ${rc.user ?? "?"}; system ${sys}, extra-platforms ${strList(settingValue(rc.settings, "extra-platforms")).join(" ") || "(none)"}; system-features ${strList(settingValue(rc.settings, "system-features")).join(" ")}`,
    evidence: ev,
  };
}

export function trustVerdict(f: RemoteConfigFact): CheckOutcome {
  const w = f.probe.result.worker;
  const flag = w?.ok ? w.trusted : null;
  const rc = f.rc;
  if (flag === "trusted")
    return { status: "pass", message: "the builder's daemon says: trusted (protocol trust flag)" };
  if (flag === "not-trusted")
    return {
      status: "fail",
      cause: "remote-untrusted",
      message: `the builder's daemon does not trust ${rc.user ?? "the ssh user"} (protocol trust flag)`,
      fix: FIXES["remote-untrusted"],
    };
  if (!rc.settings || !rc.user) return { status: "skip", message: "the builder's configuration is unknown" };
  const list = strList(settingValue(rc.settings, "trusted-users"));
  const m = matchUserList(list, {
    name: rc.user,
    primaryGroup: rc.groups[0] ?? rc.user,
    supplementaryGroups: rc.groups.slice(1),
  });
  const ev = [
    {
      what: "builder's trusted-users (nix show-config --json, as the ssh user) and `id -un`/`id -Gn`",
      result: `trusted-users = ${list.join(" ") || "(empty)"}; user ${rc.user}; groups ${rc.groups.join(" ")}`,
    },
  ];
  if (!m.matched)
    return {
      status: "fail",
      cause: "remote-untrusted",
      message: `the builder does not trust ${rc.user}: trusted-users = ${list.join(" ") || "(empty)"}; it will refuse unsigned paths and input-addressed derivations`,
      evidence: ev,
      fix: FIXES["remote-untrusted"],
    };
  return {
    status: "pass",
    message: `${rc.user} is trusted on the builder (${m.by} ${m.entry})`,
    evidence: ev,
  };
}

export function systemsVerdict(f: RemoteConfigFact, s: BuilderScope): CheckOutcome {
  const st = f.rc.settings;
  if (!st) return { status: "skip", message: "the builder's configuration is unknown" };
  const have = [
    String(settingValue(st, "system") ?? ""),
    ...strList(settingValue(st, "extra-platforms")),
  ].filter(Boolean);
  const declared = s.machine.systemTypes;
  const missing = declared.filter((x) => !have.includes(x));
  const evidence = [
    { what: "builder's system + extra-platforms (nix show-config --json)", result: have.join(" ") },
  ];
  if (missing.length)
    return {
      status: "fail",
      cause: "system-mismatch",
      evidence,
      message: `declared ${missing.join(", ")}, but the builder only has ${have.join(" ")}: builds for ${missing.join(", ")} sent there fail`,
      fix: FIXES["system-mismatch"],
    };
  return { status: "pass", message: `declared systems ${declared.join(" ")} ⊆ builder's ${have.join(" ")}` };
}

export function featuresVerdict(f: RemoteConfigFact, s: BuilderScope): CheckOutcome {
  const st = f.rc.settings;
  if (!st) return { status: "skip", message: "the builder's configuration is unknown" };
  const have = strList(settingValue(st, "system-features"));
  const declared = [...new Set([...s.machine.supportedFeatures, ...s.machine.mandatoryFeatures])];
  const missing = declared.filter((x) => !have.includes(x));
  const evidence = [{ what: "builder's system-features (nix show-config --json)", result: have.join(" ") }];
  if (missing.length)
    return {
      status: "fail",
      cause: "feature-mismatch",
      evidence,
      message: `declared feature${missing.length > 1 ? "s" : ""} ${missing.join(", ")}, but the builder's system-features are ${have.join(" ")}`,
      fix: FIXES["feature-mismatch"],
    };
  return {
    status: "pass",
    message: `declared features ${declared.join(" ") || "(none)"} ⊆ builder's ${have.join(" ")}`,
  };
}

export function signaturesVerdict(f: RemoteConfigFact): CheckOutcome {
  return {
    status: "pass",
    message: `the builder trusts ${f.rc.user ?? "the ssh user"}, so it imports our unsigned paths; outputs come back through the build hook without signature checks (build-remote copies with NoCheckSigs)`,
  };
}
