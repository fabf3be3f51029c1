/**
 * Checks for one builder, run as the identity that runs ssh for Nix (root under a daemon), with Nix's
 * exact ssh argv for the version in force (plus BatchMode, ConnectTimeout and -v), in dependency order:
 *
 *   ssh-argv → ssh-config → dns → tcp ─┐
 *                         └──── key ───┴→ host-key → auth → remote-command → handshake ─┬→ remote-config → trust → signatures
 *                                                                       └→ remote-daemon ─┘              ├→ systems
 *                                                                                                          └→ features
 *                                                   handshake → latency
 *
 * One ssh session (the "main probe": Nix's argv, the handshake of the store's protocol, one
 * QueryValidPaths so that the remote store is really opened) answers host-key … remote-daemon: the stage
 * it reached decides which of them fails (classify.ts). The probe's ssh is a connection master
 * (ControlMaster, a socket in a private temp dir): once the handshake passed, a fixed command reads the
 * builder's configuration over that same connection (remote-config), without a second key exchange.
 * See docs/doctor.md.
 */
import { chownSync } from "node:fs";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type RunAsIdentity, runAs, runAsArgv, serviceEnv } from "../../host/run-as.js";
import type { Machine } from "../../nix/machines.js";
import { type StoreOpen, storeOpen, storeOpenError } from "../../nix/store-open.js";
import { sshAuthority } from "../../nix/store-uri.js";
import { matchUserList } from "../../nix/trust.js";
import { atLeast, type NixVersion } from "../../nix/version.js";
import { type ProbeResult, probe } from "../../remote/probe.js";
import {
  MAX_CONTROL_PATH,
  type NixSshArgv,
  type NixSshArgvInput,
  probeSshArgv,
  shellEscape,
} from "../../remote/ssh-argv.js";
import { type Classification, classifyProbe, FIXES, parseSshTrace } from "./classify.js";
import { resolveHost, tcpConnect } from "./net.js";
import { type CheckDef, type CheckOutcome, type Evidence, truncate } from "./types.js";

/** What every builder check needs to know about this machine. */
export interface SshEnvironment {
  version: NixVersion;
  /** Who runs ssh (root under a daemon, the user without one); we run as it when we can. */
  identity: RunAsIdentity;
  /** The environment ssh gets (the daemon's, or the user's), before probe adjustments. */
  env: Record<string, string>;
  /** Absolute path of `ssh` on that PATH (null: the ssh-path check failed). */
  sshPath: string | null;
  /** Deadline for each network step and each ssh session. */
  timeoutMs: number;
  /** A handshake slower than this is reported as slow (warn). */
  slowMs: number;
  /**
   * `ssh-keygen -y` results per key file, shared by every builder of one run: builders usually share
   * one key, and the answer does not depend on the builder.
   */
  keyChecks?: Map<string, Promise<{ code: number | null; stderr: string }>>;
}

interface SshG {
  hostname: string;
  port: number;
  user: string;
  identityFiles: string[];
  hostKeyAlias: string | null;
  proxy: string | null;
  strictHostKeyChecking: string;
  userKnownHostsFiles: string[];
}

export interface RemoteConfig {
  nixVersion: string | null;
  user: string | null;
  groups: string[];
  settings: Record<string, unknown> | null;
  raw: { stdout: string; stderr: string; code: number | null };
}

export interface BuilderCtx {
  env: SshEnvironment;
  machine: Machine;
  input?: Omit<NixSshArgvInput, "hostKeyFile">;
  argv?: NixSshArgv;
  sshG?: SshG;
  probe?: Promise<{ result: ProbeResult; cls: Classification; argv: string[] }>;
  /** Where ssh's TCP connection goes, and its addresses (set by builder.dns). */
  resolved?: { host: string; port: number; via: string; addresses: string[] };
  /** The remote-config command's run, when it went over the main probe's connection. */
  remoteRun?: RemoteRun;
  remote?: RemoteConfig;
}

/** One run of the fixed remote-config command. */
interface RemoteRun {
  argv: string[];
  /** "mux": over the main probe's ssh connection; "session": its own ssh session (or bash for localhost). */
  via: "mux" | "session";
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  expectStartedLine: boolean;
}

const DUMMY_PATH = "/nix/store/00000000000000000000000000000000-nix-builders-doctor-probe";

function q(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : shellEscape(a))).join(" ");
}

/** The command part of a Nix ssh argv replaced by `command` (one string, sent to the remote shell). */
function withCommand(a: NixSshArgv, version: NixVersion, command: string | null): string[] {
  // Before 2.20 the command is the last word; since, it is every word after the last `--`.
  const words = atLeast(version, 2, 20);
  const dd = a.args.lastIndexOf("--");
  const head = words && dd >= 0 ? a.args.slice(0, dd) : a.args.slice(0, -1);
  if (command === null) return head;
  return words ? [...head, "--", command] : [...head, command];
}

function envFor(ctx: BuilderCtx, extra: Record<string, string> = {}): Record<string, string | undefined> {
  const e: Record<string, string | undefined> = { ...ctx.env.env, ...extra };
  e["SSH_AUTH_SOCK"] = undefined;
  e["DISPLAY"] = undefined;
  e["SSH_ASKPASS"] = undefined;
  return e;
}

async function runAsIdentity(
  ctx: BuilderCtx,
  argv: string[],
  extraEnv: Record<string, string> = {},
  timeoutMs = ctx.env.timeoutMs,
) {
  return runAs(ctx.env.identity, argv, { env: envFor(ctx, extraEnv), timeoutMs });
}

function parseSshG(text: string, home: string): SshG {
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

/**
 * Where ssh's own TCP connection goes: the builder, or with ProxyJump the first jump host (resolved
 * through `ssh -G` as the identity, so that its own Host block's HostName and Port apply). Null with a
 * ProxyCommand (anything may happen there) or a jump host we cannot resolve.
 */
async function connectTarget(ctx: BuilderCtx): Promise<{ host: string; port: number; via: string } | null> {
  const g = ctx.sshG!;
  if (!g.proxy) return { host: g.hostname, port: g.port, via: "" };
  if (!g.proxy.startsWith("proxyjump ")) return null;
  const hop = firstJumpHop(g.proxy.slice("proxyjump ".length));
  if (!hop) return null;
  const argv = [
    ctx.env.sshPath ?? "ssh",
    "-G",
    ...(hop.port !== null ? ["-p", String(hop.port)] : []),
    ...(hop.user !== null ? ["-l", hop.user] : []),
    "--",
    hop.host,
  ];
  const r = await runAsIdentity(ctx, argv);
  if (r.code !== 0) return null;
  const j = parseSshG(r.stdout, ctx.env.identity.home);
  return { host: j.hostname, port: j.port, via: ` (first hop: jump host ${hop.host}, ProxyJump)` };
}

/**
 * Nix's `<tmp>/host-key` for a pinned key (mode 0600), in a private dir that the identity running ssh
 * owns (ssh refuses a known_hosts file it cannot read; its control socket goes there too).
 */
async function writeHostKeyFile(
  ctx: BuilderCtx,
  dir: string,
  file: string,
  content: string | undefined,
): Promise<void> {
  const id = ctx.env.identity;
  if (content !== undefined) await writeFile(file, content, { mode: 0o600 });
  if (process.getuid?.() === 0 && id.uid !== 0) {
    chownSync(dir, id.uid, id.gid);
    if (content !== undefined) chownSync(file, id.uid, id.gid);
  }
}

/** The main probe, run once per builder (memoised on the context). */
function mainProbe(ctx: BuilderCtx): Promise<{ result: ProbeResult; cls: Classification; argv: string[] }> {
  if (ctx.probe) return ctx.probe;
  ctx.probe = (async () => {
    const env = ctx.env;
    const dir = await mkdtemp(join(tmpdir(), "nix-builders-doctor-"));
    try {
      const file = join(dir, "host-key");
      // The remote-config command later runs over this connection (no second key exchange: with the
      // default post-quantum key exchange that is most of an ssh connection's CPU). ssh exits when it
      // cannot bind a control socket, so a long TMPDIR gets no master (the command gets its own session).
      const controlPath = join(dir, "cm");
      const mux = !ctx.argv!.fakeSsh && Buffer.byteLength(controlPath) <= MAX_CONTROL_PATH;
      const a = probeSshArgv(
        { ...ctx.input!, hostKeyFile: file, verbose: !ctx.argv!.fakeSsh },
        {
          connectTimeoutSec: Math.max(1, Math.ceil(env.timeoutMs / 1000)),
          ...(mux ? { controlPath } : {}),
        },
      );
      await writeHostKeyFile(ctx, dir, file, a.knownHostsContent);
      const program = a.program === "ssh" ? (env.sshPath ?? "ssh") : a.program;
      const full = runAsArgv(env.identity, [program, ...a.args]);
      const e = serviceEnv(env.identity, envFor(ctx, a.env));
      const result = await probe({
        program: full[0]!,
        args: full.slice(1),
        env: e,
        cwd: "/",
        protocol: a.protocol,
        host: a.host,
        storeUri: ctx.machine.storeUri.split("?")[0]!,
        expectStartedLine: a.expectStartedLine,
        timeoutMs: env.timeoutMs,
        queryValidPaths: [DUMMY_PATH],
        ...(mux
          ? {
              whileOpen: async () => {
                ctx.remoteRun = await runRemoteConfig(ctx, file, controlPath);
              },
            }
          : {}),
      });
      const cls = classifyProbe(result, env.version, { fakeSsh: a.fakeSsh });
      return { result, cls, argv: [program, ...a.args] };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  })();
  return ctx.probe;
}

function probeEvidence(p: { result: ProbeResult; argv: string[] }): Evidence[] {
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

function probeFail(
  p: { result: ProbeResult; cls: Classification; argv: string[] },
  prefix: string,
): CheckOutcome {
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

function notSsh(ctx: BuilderCtx): CheckOutcome | null {
  if (!ctx.argv?.fakeSsh) return null;
  return {
    status: "pass",
    message: `not applicable: for '${ctx.argv.host}' Nix ${atLeast(ctx.env.version, 2, 20) ? "runs the remote program directly" : "runs `bash -c` locally"}, without ssh`,
  };
}

function remoteCommandText(ctx: BuilderCtx): string {
  const uri = ctx.machine.storeUri;
  const qpos = uri.indexOf("?");
  let prefix = "";
  if (qpos >= 0) {
    const rp = new URLSearchParams(uri.slice(qpos + 1)).get("remote-program");
    if (rp?.includes("/")) prefix = shellEscape(rp.slice(0, rp.lastIndexOf("/") + 1));
  }
  const p = (name: string) => (prefix === "" ? name : `${prefix}${name}`);
  // A fixed command: no machine field is interpolated except an escaped remote-program directory.
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

/**
 * Run the fixed remote-config command as the identity, with Nix's argv for this store (host key file
 * `hostKeyFile`, already written). With `controlPath`, ssh first tries that master's socket
 * (`-oControlMaster=no`: without a master there it connects on its own, as a second session would).
 */
async function runRemoteConfig(
  ctx: BuilderCtx,
  hostKeyFile: string,
  controlPath: string | null,
): Promise<RemoteRun> {
  const env = ctx.env;
  const cmd = remoteCommandText(ctx);
  const a = probeSshArgv(
    { ...ctx.input!, hostKeyFile },
    { connectTimeoutSec: Math.max(1, Math.ceil(env.timeoutMs / 1000)) },
  );
  let argv: string[];
  if (a.fakeSsh) argv = ["bash", "-c", cmd];
  else {
    const words = withCommand(a, env.version, cmd);
    const muxOpts =
      controlPath === null
        ? []
        : [`-oControlPath=${controlPath.replaceAll("%", "%%")}`, "-oControlMaster=no"];
    argv = [env.sshPath ?? "ssh", words[0]!, ...muxOpts, ...words.slice(1)];
  }
  const r = await runAsIdentity(ctx, argv, a.env);
  return {
    argv,
    via: controlPath === null || a.fakeSsh ? "session" : "mux",
    code: r.code,
    signal: r.signal,
    stdout: r.stdout,
    stderr: r.stderr,
    timedOut: r.timedOut,
    expectStartedLine: a.expectStartedLine,
  };
}

/** The remote-config command in its own session (no master to share, or localhost). */
async function runRemoteConfigSession(ctx: BuilderCtx): Promise<RemoteRun> {
  const dir = await mkdtemp(join(tmpdir(), "nix-builders-doctor-"));
  try {
    const file = join(dir, "host-key");
    const a = probeSshArgv({ ...ctx.input!, hostKeyFile: file });
    await writeHostKeyFile(ctx, dir, file, a.knownHostsContent);
    return await runRemoteConfig(ctx, file, null);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const ONLY_SSH = "the doctor checks only ssh:// and ssh-ng:// builders; nothing was run for it";

/**
 * The verdict on a machine whose store is not reached over ssh, from this machine alone (a stat, no
 * connection, nothing run): which store the build hook would open instead, and whether it is there.
 */
async function nonSshVerdict(
  open: Exclude<StoreOpen, { kind: "ssh" } | { kind: "rejected" }>,
  ctx: BuilderCtx,
): Promise<CheckOutcome> {
  const uri = ctx.machine.storeUri;
  const who = ctx.env.identity.name;
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
      if (open.root === null) return warn("it is this machine's system store: builds sent there run here");
      const st = await stat(open.root).catch((e: NodeJS.ErrnoException) => e.code ?? "error");
      const ev = [
        {
          what: `stat ${open.root}`,
          result: typeof st === "string" ? st : st.isDirectory() ? "a directory" : "not a directory",
        },
      ];
      return warn(
        `it is a chroot store on this machine (${open.root}${typeof st === "string" ? ", not there yet: Nix creates it" : ""}); builds sent there run here, as ${who}`,
        ev,
      );
    }
    case "daemon": {
      const env = ctx.env.env;
      const socket =
        open.socket ??
        env["NIX_DAEMON_SOCKET_PATH"] ??
        `${env["NIX_STATE_DIR"] ?? "/nix/var/nix"}/daemon-socket/socket`;
      const st = await stat(socket).catch((e: NodeJS.ErrnoException) => e.code ?? "error");
      const ev = [
        {
          what: `stat ${socket}`,
          result: typeof st === "string" ? st : st.isSocket() ? "a socket" : "not a socket",
        },
      ];
      if (typeof st === "string" || !st.isSocket())
        return {
          status: "fail",
          cause: "daemon-unreachable",
          message: `'${uri}' is the Nix daemon at ${socket} on this machine, and Nix cannot connect to it: cannot connect to socket at '${socket}': ${typeof st === "string" ? (st === "ENOENT" ? "No such file or directory" : st) : "Connection refused"}`,
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

export function builderChecks(): CheckDef<BuilderCtx>[] {
  return [
    {
      id: "builder.ssh-argv",
      deps: ["ssh-path"],
      async run(ctx) {
        const m = ctx.machine;
        const v = ctx.env.version;
        // What Nix cannot open, it never runs anything for: neither do we (no ssh, no DNS).
        const refused = storeOpenError(m.storeUri, v);
        if (refused !== null)
          return {
            status: "fail",
            cause: "local-config",
            message: `Nix ${v.major}.${v.minor} cannot open this store: ${refused}. The build hook prints "cannot build on '${m.storeUri}': ${refused}" and never uses this machine (nothing was run for it)`,
            fix: "Fix the store URI in column 1 of the machines line.",
          };
        const open = storeOpen(m.storeUri, v);
        if (open.kind === "rejected")
          throw new Error(`storeOpen and storeOpenError disagree on '${m.storeUri}'`);
        if (open.kind !== "ssh") return nonSshVerdict(open, ctx);
        const a = sshAuthority(m.storeUri, v);
        if ((a.host ?? "").startsWith("-") || (a.user ?? "").startsWith("-"))
          return {
            status: "fail",
            cause: "local-config",
            message: `refusing to run ssh for '${m.storeUri}': the user or host starts with '-' (it would be read as an option)`,
            fix: "Fix the store URI in the machines line.",
          };
        const input: Omit<NixSshArgvInput, "hostKeyFile"> = {
          version: ctx.env.version,
          storeUri: m.storeUri,
          sshKey: m.sshKey,
          base64PublicHostKey: m.sshPublicHostKey,
        };
        const opts = ctx.env.env["NIX_SSHOPTS"];
        if (opts !== undefined) input.nixSshOpts = opts;
        const argv = probeSshArgv(
          { ...input, hostKeyFile: "<tmp>/host-key" },
          { connectTimeoutSec: Math.max(1, Math.ceil(ctx.env.timeoutMs / 1000)) },
        );
        if (argv.error)
          return {
            status: "fail",
            cause: "local-config",
            message: `Nix refuses this store before running anything: ${argv.error}`,
            fix: FIXES["local-config"],
          };
        ctx.input = input;
        ctx.argv = argv;
        const local = argv.fakeSsh
          ? ` Nix does not use ssh for it: it runs '${argv.remoteCommand}' on this machine as ${ctx.env.identity.name}.`
          : a.host === "localhost"
            ? ` (host localhost with a user: Nix ${atLeast(ctx.env.version, 2, 32) ? "≥2.32 connects with real ssh" : "2.8 uses real ssh for 'user@localhost', 2.31 would not"})`
            : "";
        return {
          status: "pass",
          message: `Nix ${ctx.env.version.major}.${ctx.env.version.minor} runs: ${q([argv.program, ...argv.args])}${local}`,
          evidence: [
            {
              what: "NIX_SSHOPTS in the environment of the identity that runs ssh",
              result: opts === undefined ? "(unset)" : opts,
            },
          ],
        };
      },
    },
    {
      id: "builder.ssh-config",
      deps: ["builder.ssh-argv", "ssh-identity"],
      async run(ctx) {
        // builder.ssh-argv warned about a store that is not reached over ssh: nothing below applies.
        if (!ctx.argv)
          return { status: "skip", message: "not applicable: not an ssh store (see builder.ssh-argv)" };
        const na = notSsh(ctx);
        if (na) return na;
        const argv = [ctx.env.sshPath ?? "ssh", "-G", ...withCommand(ctx.argv!, ctx.env.version, null)];
        const r = await runAsIdentity(ctx, argv);
        const ev = { what: `ran: ${q(argv)}`, result: r.code === 0 ? "ok" : truncate(r.stderr.trim(), 800) };
        if (r.code !== 0)
          return {
            status: "fail",
            cause: "local-config",
            message: `ssh rejects its options or configuration: ${r.stderr.trim().split("\n").pop() ?? ""}`,
            evidence: [ev],
            fix: "Fix NIX_SSHOPTS or the ssh_config of the identity that runs ssh.",
          };
        const g = parseSshG(r.stdout, ctx.env.identity.home);
        ctx.sshG = g;
        const via = g.proxy ? `, via ${g.proxy}` : "";
        return {
          status: "pass",
          message: `as ${ctx.env.identity.name}: ${g.user}@${g.hostname} port ${g.port}${via}; keys tried: ${g.identityFiles.join(", ") || "(none)"}; known_hosts: ${g.userKnownHostsFiles.join(" ")}${g.hostKeyAlias ? `; HostKeyAlias ${g.hostKeyAlias}` : ""}`,
          evidence: [ev],
        };
      },
    },
    {
      id: "builder.dns",
      deps: ["builder.ssh-config"],
      async run(ctx) {
        const na = notSsh(ctx);
        if (na) return na;
        const t = await connectTarget(ctx);
        if (!t) return { status: "pass", message: `not tested: ssh connects through ${ctx.sshG!.proxy}` };
        const r = await resolveHost(t.host, ctx.env.timeoutMs);
        if (r.ok) ctx.resolved = { ...t, addresses: r.addresses };
        const ev = [
          { what: `getaddrinfo(${t.host})`, result: r.ok ? r.addresses.join(" ") : (r.error ?? "") },
        ];
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
      },
    },
    {
      id: "builder.tcp",
      deps: ["builder.dns"],
      async run(ctx) {
        const na = notSsh(ctx);
        if (na) return na;
        // builder.dns resolved the target (it passed, or said why it could not test).
        const t = ctx.resolved;
        if (!t) return { status: "pass", message: `not tested: ssh connects through ${ctx.sshG!.proxy}` };
        const ev: Evidence[] = [];
        let last = null;
        for (const addr of t.addresses) {
          const r = await tcpConnect(addr, t.port, ctx.env.timeoutMs);
          ev.push({
            what: `TCP connect ${addr} port ${t.port}`,
            result: r.ok ? `connected in ${r.ms} ms` : `${r.error}: ${r.message}`,
          });
          last = r;
          if (r.ok)
            return {
              status: "pass",
              message: `${addr} port ${t.port}${t.via} accepts connections (${r.ms} ms)`,
              evidence: ev,
            };
        }
        const timeout = last?.error === "timeout";
        return {
          status: "fail",
          cause: timeout ? "timeout" : "unreachable",
          message: timeout
            ? `no answer from ${t.host} port ${t.port}${t.via} within ${ctx.env.timeoutMs} ms (packets dropped?)`
            : `${t.host} port ${t.port}${t.via}: ${last?.message ?? "no address"}`,
          evidence: ev,
          fix: FIXES[timeout ? "timeout" : "unreachable"],
        };
      },
    },
    {
      id: "builder.key",
      deps: ["builder.ssh-config"],
      async run(ctx) {
        const na = notSsh(ctx);
        if (na) return na;
        const explicit = ctx.machine.sshKey ?? null;
        const candidates = explicit ? [explicit] : ctx.sshG!.identityFiles;
        const ev: Evidence[] = [];
        const usable: string[] = [];
        for (const f of candidates) {
          // `ssh-keygen -y` as the identity: reads the key like ssh does (permissions, passphrase). The
          // public key it prints is discarded.
          const argv = ["ssh-keygen", "-y", "-P", "", "-f", f];
          const cache = ctx.env.keyChecks;
          let pending = cache?.get(f);
          if (!pending) {
            pending = runAsIdentity(ctx, argv, {}, Math.min(ctx.env.timeoutMs, 10_000)).then((x) => ({
              code: x.code,
              stderr: x.stderr,
            }));
            cache?.set(f, pending);
          }
          const r = await pending;
          const err = r.stderr.trim();
          if (r.code === 0) {
            usable.push(f);
            ev.push({ what: `ran: ${q(argv)} (output discarded)`, result: "readable, no passphrase" });
            continue;
          }
          const missing = /No such file or directory/.test(err);
          if (!explicit && missing) continue;
          ev.push({ what: `ran: ${q(argv)} (output discarded)`, result: truncate(err, 400) });
          if (!explicit) continue;
          const why = /incorrect passphrase|passphrase/.test(err)
            ? "has a passphrase (the daemon cannot type it, and has no agent)"
            : /UNPROTECTED|bad permissions/.test(err)
              ? "is readable by others, so ssh refuses it"
              : missing
                ? "does not exist"
                : /Permission denied/.test(err)
                  ? `is not readable by ${ctx.env.identity.name}`
                  : `cannot be loaded (${err.split("\n").pop()})`;
          return {
            status: "fail",
            cause: "auth",
            message: `the key ${f} ${why}`,
            evidence: ev,
            fix: FIXES.auth,
          };
        }
        if (usable.length === 0)
          return {
            status: "warn",
            cause: "auth",
            message: `no usable key file for ${ctx.env.identity.name} (${candidates.join(", ")}); ssh could only use an agent, and the daemon has none`,
            evidence: ev,
            fix: FIXES.auth,
          };
        return {
          status: "pass",
          message: `key ${usable.join(", ")}: readable by ${ctx.env.identity.name}, no passphrase`,
          evidence: ev,
        };
      },
    },
    {
      id: "builder.host-key",
      deps: ["builder.tcp", "builder.key"],
      async run(ctx) {
        const p = await mainProbe(ctx);
        const na = notSsh(ctx);
        if (na) return na;
        const g = ctx.sshG!;
        const pinned = ctx.machine.sshPublicHostKey !== null || ctx.argv?.knownHostsContent !== undefined;
        const a = sshAuthority(ctx.machine.storeUri, ctx.env.version);
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
            out.message += ` The connection goes through ${g.proxy.slice(10)} (ProxyJump): ssh checks that jump host's key against ${ctx.env.identity.name}'s own known_hosts and logs in with ${ctx.env.identity.name}'s own keys (ssh passes neither the pinned key file nor -i to the jump), so the failure may be the jump host's: add its key to ${ctx.env.identity.home}/.ssh/known_hosts (or /etc/ssh/ssh_known_hosts).`;
          return out;
        }
        const where = pinned
          ? "the host key pinned in the machines line matches"
          : `the host key is in the known_hosts of ${ctx.env.identity.name}`;
        if (!pinned && g.strictHostKeyChecking === "false")
          return {
            status: "warn",
            cause: "host-key",
            message: `StrictHostKeyChecking is off for ${g.hostname} in ${ctx.env.identity.name}'s ssh_config: any host key is accepted`,
            evidence: probeEvidence(p),
            fix: FIXES["host-key"],
          };
        return { status: "pass", message: where, evidence: probeEvidence(p).slice(0, 1) };
      },
    },
    {
      id: "builder.auth",
      deps: ["builder.host-key"],
      async run(ctx) {
        const na = notSsh(ctx);
        if (na) return na;
        const p = await mainProbe(ctx);
        if (!reached(p.cls, "auth")) return probeFail(p, "");
        return { status: "pass", message: `authenticated as ${ctx.sshG?.user ?? "?"}` };
      },
    },
    {
      id: "builder.remote-command",
      deps: ["builder.auth"],
      async run(ctx) {
        const p = await mainProbe(ctx);
        if (!reached(p.cls, "exec")) return probeFail(p, `'${ctx.argv!.remoteCommand}': `);
        return { status: "pass", message: `'${ctx.argv!.remoteCommand}' started without output on stdout` };
      },
    },
    {
      id: "builder.handshake",
      deps: ["builder.remote-command"],
      async run(ctx) {
        const p = await mainProbe(ctx);
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
      },
    },
    {
      id: "builder.remote-daemon",
      deps: ["builder.remote-command"],
      async run(ctx) {
        const p = await mainProbe(ctx);
        if (p.cls.stage === "handshake")
          return { status: "skip", message: "not reached: the handshake failed (see builder.handshake)" };
        if (!reached(p.cls, "store")) return probeFail(p, "the builder's store: ");
        return {
          status: "pass",
          message: `the builder's store answers a query (QueryValidPaths of one absent path, ${p.result.timings.queryMs} ms)`,
        };
      },
    },
    {
      id: "builder.latency",
      deps: ["builder.handshake"],
      async run(ctx) {
        const p = await mainProbe(ctx);
        const ms = p.result.timings.handshakeMs ?? 0;
        if (ms > ctx.env.slowMs)
          return {
            status: "warn",
            cause: "slow",
            message: `ssh + handshake took ${ms} ms (more than ${ctx.env.slowMs} ms)`,
            fix: FIXES.slow,
          };
        return { status: "pass", message: `ssh + handshake in ${ms} ms` };
      },
    },
    {
      id: "builder.remote-config",
      deps: ["builder.handshake", "builder.remote-daemon"],
      async run(ctx) {
        await mainProbe(ctx);
        const r = ctx.remoteRun ?? (await runRemoteConfigSession(ctx));
        let out = r.stdout;
        if (r.expectStartedLine && out.startsWith("started\n")) out = out.slice(8);
        const lines = out.split("\n");
        const rc: RemoteConfig = {
          nixVersion: /\(Nix\) (\S+)/.exec(lines[0] ?? "")?.[1] ?? null,
          user: lines[1]?.trim() || null,
          groups: (lines[2] ?? "").trim().split(/\s+/).filter(Boolean),
          settings: null,
          raw: { stdout: truncate(r.stdout, 400), stderr: truncate(r.stderr.trim(), 800), code: r.code },
        };
        try {
          rc.settings = JSON.parse(lines.slice(3).join("\n")) as Record<string, unknown>;
        } catch {
          rc.settings = null;
        }
        ctx.remote = rc;
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
      },
    },
    {
      id: "builder.trust",
      deps: ["builder.remote-config"],
      async run(ctx) {
        const p = await mainProbe(ctx);
        const flag = p.result.worker?.ok ? p.result.worker.trusted : null;
        const rc = ctx.remote;
        if (flag === "trusted")
          return { status: "pass", message: "the builder's daemon says: trusted (protocol trust flag)" };
        if (flag === "not-trusted")
          return {
            status: "fail",
            cause: "remote-untrusted",
            message: `the builder's daemon does not trust ${rc?.user ?? "the ssh user"} (protocol trust flag)`,
            fix: FIXES["remote-untrusted"],
          };
        if (!rc?.settings || !rc.user)
          return { status: "skip", message: "the builder's configuration is unknown" };
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
      },
    },
    {
      id: "builder.systems",
      deps: ["builder.remote-config"],
      async run(ctx) {
        const s = ctx.remote?.settings ?? null;
        if (!s) return { status: "skip", message: "the builder's configuration is unknown" };
        const have = [
          String(settingValue(s, "system") ?? ""),
          ...strList(settingValue(s, "extra-platforms")),
        ].filter(Boolean);
        const declared = ctx.machine.systemTypes;
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
        return {
          status: "pass",
          message: `declared systems ${declared.join(" ")} ⊆ builder's ${have.join(" ")}`,
        };
      },
    },
    {
      id: "builder.features",
      deps: ["builder.remote-config"],
      async run(ctx) {
        const s = ctx.remote?.settings ?? null;
        if (!s) return { status: "skip", message: "the builder's configuration is unknown" };
        const have = strList(settingValue(s, "system-features"));
        const declared = [...new Set([...ctx.machine.supportedFeatures, ...ctx.machine.mandatoryFeatures])];
        const missing = declared.filter((x) => !have.includes(x));
        const evidence = [
          { what: "builder's system-features (nix show-config --json)", result: have.join(" ") },
        ];
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
      },
    },
    {
      id: "builder.signatures",
      deps: ["builder.trust"],
      async run(ctx) {
        return {
          status: "pass",
          message: `the builder trusts ${ctx.remote?.user ?? "the ssh user"}, so it imports our unsigned paths; outputs come back through the build hook without signature checks (build-remote copies with NoCheckSigs)`,
        };
      },
    },
  ];
}
