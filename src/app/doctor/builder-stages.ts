/**
 * The builder checks' stages: everything that runs or reads something, each returning a typed fact
 * (builder-facts.ts). No verdicts here (builder-verdicts.ts).
 */
import { chownSync } from "node:fs";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runAs, runAsArgv, serviceEnv } from "../../host/run-as.js";
import { storeOpen, storeOpenError } from "../../nix/store-open.js";
import { sshAuthority } from "../../nix/store-uri.js";
import { probe } from "../../remote/probe.js";
import { MAX_CONTROL_PATH, probeSshArgv } from "../../remote/ssh-argv.js";
import type {
  ArgvFact,
  BuilderScope,
  ConfigFact,
  ConnectTarget,
  DnsFact,
  KeyFact,
  KeyRun,
  PathStat,
  ProbeFact,
  Reach,
  RemoteRun,
  SshPlan,
  TcpFact,
} from "./builder-facts.js";
import { firstJumpHop, parseSshG, remoteCommandText, withCommand } from "./builder-verdicts.js";
import { classifyProbe } from "./classify.js";
import { trackTempDir } from "./interrupt.js";
import { resolveHost, tcpConnect } from "./net.js";

const DUMMY_PATH = "/nix/store/00000000000000000000000000000000-nix-builders-doctor-probe";

function connectTimeoutSec(s: BuilderScope): number {
  return Math.max(1, Math.ceil(s.env.timeoutMs / 1000));
}

function envFor(s: BuilderScope, extra: Record<string, string> = {}): Record<string, string | undefined> {
  const e: Record<string, string | undefined> = { ...s.env.env, ...extra };
  e["SSH_AUTH_SOCK"] = undefined;
  e["DISPLAY"] = undefined;
  e["SSH_ASKPASS"] = undefined;
  return e;
}

function runAsIdentity(
  s: BuilderScope,
  argv: string[],
  extraEnv: Record<string, string> = {},
  timeoutMs = s.env.timeoutMs,
) {
  return runAs(s.env.identity, argv, { env: envFor(s, extraEnv), timeoutMs });
}

async function statPath(path: string): Promise<PathStat> {
  const st = await stat(path).catch((e: NodeJS.ErrnoException) => e.code ?? "error");
  return typeof st === "string"
    ? { path, error: st, isDirectory: false, isSocket: false }
    : { path, error: null, isDirectory: st.isDirectory(), isSocket: st.isSocket() };
}

/** builder.ssh-argv: what Nix would run for this store (nothing is run; a non-ssh store's path is stat'ed). */
export async function planStage(s: BuilderScope): Promise<ArgvFact> {
  const m = s.machine;
  const v = s.env.version;
  // What Nix cannot open, it never runs anything for: neither do we (no ssh, no DNS).
  const refused = storeOpenError(m.storeUri, v);
  if (refused !== null) return { kind: "refused", reason: refused };
  const open = storeOpen(m.storeUri, v);
  if (open.kind === "rejected") throw new Error(`storeOpen and storeOpenError disagree on '${m.storeUri}'`);
  if (open.kind !== "ssh") {
    let path: string | null = null;
    if (open.kind === "local") path = open.root;
    else if (open.kind === "daemon") {
      const env = s.env.env;
      path =
        open.socket ??
        env["NIX_DAEMON_SOCKET_PATH"] ??
        `${env["NIX_STATE_DIR"] ?? "/nix/var/nix"}/daemon-socket/socket`;
    }
    return { kind: "not-ssh", open, stat: path === null ? null : await statPath(path) };
  }
  const a = sshAuthority(m.storeUri, v);
  if ((a.host ?? "").startsWith("-") || (a.user ?? "").startsWith("-")) return { kind: "dash" };
  const input: SshPlan["input"] = {
    version: v,
    storeUri: m.storeUri,
    sshKey: m.sshKey,
    base64PublicHostKey: m.sshPublicHostKey,
  };
  const nixSshOpts = s.env.env["NIX_SSHOPTS"];
  if (nixSshOpts !== undefined) input.nixSshOpts = nixSshOpts;
  const argv = probeSshArgv(
    { ...input, hostKeyFile: "<tmp>/host-key" },
    { connectTimeoutSec: connectTimeoutSec(s) },
  );
  if (argv.error) return { kind: "argv-error", error: argv.error };
  return { kind: "ssh", plan: { input, argv }, nixSshOpts, localhost: a.host === "localhost" };
}

/** builder.ssh-config: `ssh -G` as the identity, with Nix's options. */
export async function sshConfigStage(plan: ArgvFact, s: BuilderScope): Promise<ConfigFact> {
  if (plan.kind !== "ssh") return { kind: "not-ssh" };
  if (plan.plan.argv.fakeSsh) return { kind: "fake", reach: { plan: plan.plan, g: null } };
  const argv = [s.env.sshPath ?? "ssh", "-G", ...withCommand(plan.plan.argv, s.env.version, null)];
  const r = await runAsIdentity(s, argv);
  return {
    kind: "ran",
    reach: { plan: plan.plan, g: parseSshG(r.stdout, s.env.identity.home) },
    argv,
    code: r.code,
    stdout: r.stdout,
    stderr: r.stderr,
  };
}

/** Where the checks after ssh-config go (they run only when ssh-config passed: never "not-ssh"). */
export function reachOf(c: ConfigFact): Reach {
  if (c.kind === "not-ssh") throw new Error("builder.ssh-config did not pass, yet a check after it ran");
  return c.reach;
}

/**
 * Where ssh's own TCP connection goes: the builder, or with ProxyJump the first jump host (resolved
 * through `ssh -G` as the identity, so that its own Host block's HostName and Port apply). Null with a
 * ProxyCommand (anything may happen there) or a jump host we cannot resolve.
 */
async function connectTarget(reach: Reach, s: BuilderScope): Promise<ConnectTarget | null> {
  const g = reach.g;
  if (g === null) return null;
  if (!g.proxy) return { host: g.hostname, port: g.port, via: "" };
  if (!g.proxy.startsWith("proxyjump ")) return null;
  const hop = firstJumpHop(g.proxy.slice("proxyjump ".length));
  if (!hop) return null;
  const argv = [
    s.env.sshPath ?? "ssh",
    "-G",
    ...(hop.port !== null ? ["-p", String(hop.port)] : []),
    ...(hop.user !== null ? ["-l", hop.user] : []),
    "--",
    hop.host,
  ];
  const r = await runAsIdentity(s, argv);
  if (r.code !== 0) return null;
  const j = parseSshG(r.stdout, s.env.identity.home);
  return { host: j.hostname, port: j.port, via: ` (first hop: jump host ${hop.host}, ProxyJump)` };
}

/** builder.dns. */
export async function dnsStage(reach: Reach, s: BuilderScope): Promise<DnsFact> {
  if (reach.g === null) return { reach, target: null, resolved: null };
  const target = await connectTarget(reach, s);
  return { reach, target, resolved: target ? await resolveHost(target.host, s.env.timeoutMs) : null };
}

/** builder.tcp: each resolved address in turn, until one accepts. */
export async function tcpStage(dns: DnsFact, s: BuilderScope): Promise<TcpFact> {
  const attempts: TcpFact["attempts"] = [];
  const { reach, target, resolved } = dns;
  if (reach.g !== null && target && resolved?.ok)
    for (const address of resolved.addresses) {
      const result = await tcpConnect(address, target.port, s.env.timeoutMs);
      attempts.push({ address, result });
      if (result.ok) break;
    }
  return { reach, target: resolved?.ok ? target : null, attempts };
}

/** builder.key: `ssh-keygen -y` as the identity on each key ssh would try (answers shared per run). */
export async function keyStage(reach: Reach, s: BuilderScope): Promise<KeyFact> {
  const explicit = s.machine.sshKey ?? null;
  if (reach.g === null) return { reach, explicit, candidates: [], runs: [] };
  const candidates = explicit ? [explicit] : reach.g.identityFiles;
  const runs: KeyRun[] = [];
  for (const file of candidates) {
    // Reads the key like ssh does (permissions, passphrase). The public key it prints is discarded.
    const argv = ["ssh-keygen", "-y", "-P", "", "-f", file];
    const cache = s.env.keyChecks;
    let pending = cache?.get(file);
    if (!pending) {
      pending = runAsIdentity(s, argv, {}, Math.min(s.env.timeoutMs, 10_000)).then((x) => ({
        code: x.code,
        stderr: x.stderr,
      }));
      cache?.set(file, pending);
    }
    const r = await pending;
    runs.push({ file, argv, code: r.code, stderr: r.stderr });
    // With the machines line's key, its first failure is the verdict.
    if (explicit && r.code !== 0) break;
  }
  return { reach, explicit, candidates, runs };
}

/**
 * Nix's `<tmp>/host-key` for a pinned key (mode 0600), in a private dir that the identity running ssh
 * owns (ssh refuses a known_hosts file it cannot read; its control socket goes there too).
 */
async function writeHostKeyFile(
  s: BuilderScope,
  dir: string,
  file: string,
  content: string | undefined,
): Promise<void> {
  const id = s.env.identity;
  if (content !== undefined) await writeFile(file, content, { mode: 0o600 });
  if (process.getuid?.() === 0 && id.uid !== 0) {
    chownSync(dir, id.uid, id.gid);
    if (content !== undefined) chownSync(file, id.uid, id.gid);
  }
}

/** A private temp dir for one ssh session, removed afterwards (and on SIGINT/SIGTERM: interrupt.ts). */
async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "nix-builders-doctor-"));
  const untrack = trackTempDir(dir);
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
    untrack();
  }
}

/**
 * The main probe: Nix's argv, the store protocol's handshake and one QueryValidPaths. Its ssh is a
 * connection master when the control path fits; the remote-config command then runs over it.
 */
export function probeStage(reach: Reach, s: BuilderScope): Promise<ProbeFact> {
  return withTempDir(async (dir) => {
    const env = s.env;
    const { input, argv } = reach.plan;
    const file = join(dir, "host-key");
    // The remote-config command later runs over this connection (no second key exchange: with the
    // default post-quantum key exchange that is most of an ssh connection's CPU). ssh exits when it
    // cannot bind a control socket, so a long TMPDIR gets no master (the command gets its own session).
    const controlPath = join(dir, "cm");
    const mux = !argv.fakeSsh && Buffer.byteLength(controlPath) <= MAX_CONTROL_PATH;
    const a = probeSshArgv(
      { ...input, hostKeyFile: file, verbose: !argv.fakeSsh },
      { connectTimeoutSec: connectTimeoutSec(s), ...(mux ? { controlPath } : {}) },
    );
    await writeHostKeyFile(s, dir, file, a.knownHostsContent);
    const program = a.program === "ssh" ? (env.sshPath ?? "ssh") : a.program;
    const full = runAsArgv(env.identity, [program, ...a.args]);
    let remoteRun: RemoteRun | null = null;
    const result = await probe({
      program: full[0]!,
      args: full.slice(1),
      env: serviceEnv(env.identity, envFor(s, a.env)),
      cwd: "/",
      protocol: a.protocol,
      host: a.host,
      storeUri: s.machine.storeUri.split("?")[0]!,
      expectStartedLine: a.expectStartedLine,
      timeoutMs: env.timeoutMs,
      queryValidPaths: [DUMMY_PATH],
      ...(mux
        ? {
            whileOpen: async () => {
              remoteRun = await runRemoteConfig(reach.plan, s, file, controlPath);
            },
          }
        : {}),
    });
    const cls = classifyProbe(result, env.version, { fakeSsh: a.fakeSsh });
    return { reach, result, cls, argv: [program, ...a.args], remoteRun };
  });
}

/**
 * Run the fixed remote-config command as the identity, with Nix's argv for this store (host key file
 * `hostKeyFile`, already written). With `controlPath`, ssh first tries that master's socket
 * (`-oControlMaster=no`: without a master there it connects on its own, as a second session would).
 */
async function runRemoteConfig(
  plan: SshPlan,
  s: BuilderScope,
  hostKeyFile: string,
  controlPath: string | null,
): Promise<RemoteRun> {
  const env = s.env;
  const cmd = remoteCommandText(s.machine.storeUri);
  const a = probeSshArgv({ ...plan.input, hostKeyFile }, { connectTimeoutSec: connectTimeoutSec(s) });
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
  const r = await runAsIdentity(s, argv, a.env);
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

/** builder.remote-config's run: over the probe's connection, or in its own session (no master, localhost). */
export function remoteConfigRun(p: ProbeFact, s: BuilderScope): Promise<RemoteRun> {
  if (p.remoteRun) return Promise.resolve(p.remoteRun);
  return withTempDir(async (dir) => {
    const file = join(dir, "host-key");
    const a = probeSshArgv({ ...p.reach.plan.input, hostKeyFile: file });
    await writeHostKeyFile(s, dir, file, a.knownHostsContent);
    return runRemoteConfig(p.reach.plan, s, file, null);
  });
}
