/**
 * The one place where the doctor decides *why* an ssh probe failed. Pure: input is the probe result
 * (ssh run with `-v`, as Nix itself does at -vvv) and the output is the stage the connection reached
 * and the cause. The stage decides which check fails; the cause is the `doctor --json` contract.
 *
 * ssh's own debug lines tell how far the connection got (connected, host key accepted, authenticated,
 * command sent, exit status); what the remote side printed tells why the command did not speak the
 * protocol. Fix texts come from the explain knowledge base (src/nix/explain.ts) when it classifies
 * the same text the same way; otherwise from FIXES below.
 */
import { explainMessage } from "../../nix/explain.js";
import type { NixVersion } from "../../nix/version.js";
import type { ProbeResult } from "../../remote/probe.js";
import type { DoctorCause } from "./types.js";

export interface SshTrace {
  /** `debug1: Connection established.` */
  connected: boolean;
  /** ssh found the server's host key in the known_hosts file it was given. */
  hostKeyAccepted: boolean;
  /** `Authenticated to …` / `Authentication succeeded`. */
  authenticated: boolean;
  commandSent: boolean;
  /** The remote command's exit status (`debug1: Exit status N`). */
  exitStatus: number | null;
  /** stderr without ssh's debug chatter: what a user sees without -v (ssh's errors and the remote's stderr). */
  plain: string;
}

const SSH_NOISE = [
  /^debug\d: /,
  /^OpenSSH_/,
  /^Transferred: sent /,
  /^Bytes per second: /,
  /^Authenticated to /,
  /^Warning: Permanently added /,
  /^Pseudo-terminal will not be allocated/,
];

export function parseSshTrace(stderr: string): SshTrace {
  const lines = stderr.split(/\r?\n/);
  const t: SshTrace = {
    connected: false,
    hostKeyAccepted: false,
    authenticated: false,
    commandSent: false,
    exitStatus: null,
    plain: "",
  };
  const plain: string[] = [];
  for (const l of lines) {
    if (/^debug1: Connection established\./.test(l)) t.connected = true;
    else if (/^debug1: Host '.*' is known and matches the .* host key\./.test(l)) t.hostKeyAccepted = true;
    else if (/^debug1: Found key in /.test(l)) t.hostKeyAccepted = true;
    else if (/^debug1: Authentication succeeded/.test(l) || /^Authenticated to /.test(l))
      t.authenticated = true;
    else if (/^debug1: Sending command: /.test(l)) t.commandSent = true;
    else {
      const m = /^debug1: Exit status (-?\d+)/.exec(l);
      if (m) t.exitStatus = Number(m[1]);
    }
    if (l.trim() !== "" && !SSH_NOISE.some((re) => re.test(l))) plain.push(l);
  }
  if (t.authenticated) t.hostKeyAccepted = true;
  if (t.hostKeyAccepted) t.connected = true;
  t.plain = plain.join("\n");
  return t;
}

/** How far a connection got before it failed. Each stage is one check (see builder.ts). */
export type ProbeStage = "spawn" | "connect" | "host-key" | "auth" | "exec" | "handshake" | "store" | "ok";

export interface Classification {
  stage: ProbeStage;
  cause: DoctorCause | null;
  /** One line: what went wrong. */
  summary: string;
  fix: string | null;
}

export const FIXES: Record<DoctorCause, string> = {
  unreachable:
    "Check the address, that sshd runs on the builder, and that no firewall drops the port (test: `ssh -G HOST` for the effective HostName/Port, then `nc -vz HOST PORT`).",
  timeout:
    "Packets go unanswered: a firewall drops them, the host is down, or the route is wrong. Nix has no connect timeout of its own: set `ConnectTimeout` in the ssh config of the identity that runs ssh, and remove the builder until it answers.",
  "host-key":
    "Pin the builder's host key in the machines line (8th column: `base64 -w0 /etc/ssh/ssh_host_ed25519_key.pub` on the builder), or add it to the known_hosts of the identity that runs ssh (root under a daemon). If ssh_config rewrites the HostName, add `HostKeyAlias` with the name Nix writes.",
  auth: "Use a key without a passphrase, readable by the identity that runs ssh (mode 0600, owned by it), named in the machines line's 3rd column, and listed in the builder user's authorized_keys. The daemon has no ssh-agent.",
  "remote-nix-missing":
    "Non-login ssh commands do not read profile files: put Nix on the builder's non-login PATH (sshd `SetEnv PATH=…`, `/etc/environment`, or the installer's zshenv/bashrc hook), or set the store parameter `remote-program=/absolute/path/to/nix-store` (nix-daemon for ssh-ng).",
  "remote-shell":
    "The builder user's shell must run commands silently: give it a real shell (not nologin), and make shell start-up files print nothing on stdout for non-interactive shells.",
  protocol:
    "The remote command did not speak the protocol Nix expects: `ssh://` needs `nix-store --serve`, `ssh-ng://` needs `nix-daemon --stdio`. Check forced commands (`command=` in authorized_keys, `ForceCommand` in sshd_config) and the `remote-program` parameter.",
  "remote-untrusted":
    "Add the ssh user to `trusted-users` in the builder's nix.conf and restart its nix-daemon; or sign paths with a key in the builder's `trusted-public-keys` (input-addressed derivations still need a trusted user).",
  "remote-daemon-down":
    "Start the builder's nix-daemon (`systemctl restart nix-daemon` on the builder) and check that the ssh user can reach its socket.",
  "system-mismatch":
    "Declare only systems the builder has (its `system` and `extra-platforms`) in the machines line's 2nd column, or configure the builder (binfmt emulation + `extra-platforms`).",
  "feature-mismatch":
    "Declare only features in the builder's `system-features` (5th/6th columns), or add the feature on the builder (e.g. kvm needs /dev/kvm).",
  signature:
    "Make the builder trust the ssh user, or sign the paths you upload with a key whose public half is in the builder's `trusted-public-keys`.",
  "local-config":
    "Fix the configuration named in the message; `nix-builders show` prints the builders and where they come from.",
  "local-untrusted":
    "Add the user to `trusted-users` in the daemon's nix.conf (one `trusted-users` line; later lines replace earlier ones) and restart nix-daemon, or move the setting into the daemon's configuration.",
  "daemon-unreachable":
    "Start nix-daemon and let the user reach its socket (Debian: add the user to the `nix-users` group, then restart the user's service or log in again).",
  "ssh-missing":
    "Install OpenSSH's client where the daemon looks for it (its PATH), e.g. `apt install openssh-client`.",
  slow: "The builder answers, but slowly: expect long waits for every build sent there. Check the network path.",
};

const RE = {
  resolve: /Could not resolve hostname|Name or service not known|Temporary failure in name resolution/,
  connTimeout:
    /connect to host .* port \d+: (?:Connection|Operation) timed out|Connection timed out during banner exchange/,
  connRefused:
    /connect to host .* port \d+: (?:Connection refused|No route to host|Network is unreachable)|kex_exchange_identification: (?:Connection closed|read: Connection reset)|Connection closed by remote host|Connection reset by peer/,
  hostKey:
    /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No \S+ host key is known for|Host key for .* has changed|host key mismatch/i,
  auth: /Permission denied \(|Too many authentication failures|UNPROTECTED PRIVATE KEY FILE|bad permissions|read_passphrase: can't open|incorrect passphrase|Load key .*: invalid format|no such identity/,
  nologin: /This account is currently not available|This service allows sftp connections only|nologin/,
  daemonDown:
    /cannot connect to socket at|cannot connect to daemon at|Nix daemon disconnected unexpectedly|error: connecting to '.*daemon-socket/,
  notFound:
    /(?:nix-store|nix-daemon|nix)\b[^\n]*(?:command not found|not found)|(?:command not found|No such file or directory)[^\n]*(?:nix-store|nix-daemon)/,
  protocolMismatch: /protocol mismatch|unsupported .* protocol version|not a valid .* protocol/,
};

function explained(text: string, cause: DoctorCause, version: NixVersion | undefined): string | null {
  try {
    const f = explainMessage(text, { version: version ?? null, remote: true });
    if (f && f.cause === cause && f.fix.length) return f.fix.join(" ");
  } catch {
    // the knowledge base is optional for the doctor
  }
  return null;
}

function mk(
  stage: ProbeStage,
  cause: DoctorCause,
  summary: string,
  text: string,
  version: NixVersion | undefined,
): Classification {
  return { stage, cause, summary, fix: explained(text, cause, version) ?? FIXES[cause] };
}

/** Classify a finished probe (see the module comment). */
export function classifyProbe(
  p: ProbeResult,
  version?: NixVersion,
  opts: { fakeSsh?: boolean } = {},
): Classification {
  const trace = parseSshTrace(p.stderr);
  // No ssh for `localhost` (spec §4.4): the command runs here, as if authenticated.
  if (opts.fakeSsh) trace.authenticated = trace.hostKeyAccepted = trace.connected = true;
  if (p.ok) return { stage: "ok", cause: null, summary: "the handshake succeeded", fix: null };
  const kind = p.failure?.kind ?? "io";
  const nixMsg = p.failure?.nixMessage ?? "";
  const seen = p.serve && !p.serve.ok ? p.serve.textSeen : p.worker && !p.worker.ok ? p.worker.textSeen : "";
  const all = `${trace.plain}\n${nixMsg}\n${seen}`;
  const plainLast = trace.plain.split("\n").filter(Boolean).slice(-3).join(" / ");

  if (kind === "spawn") return mk("spawn", "ssh-missing", nixMsg, all, version);

  if (!trace.authenticated) {
    if (RE.resolve.test(trace.plain)) return mk("connect", "unreachable", plainLast, all, version);
    if (RE.connTimeout.test(trace.plain)) return mk("connect", "timeout", plainLast, all, version);
    if (RE.hostKey.test(trace.plain))
      // ssh's host-key warning is a banner of a dozen lines: keep the ones that say what happened.
      return mk("host-key", "host-key", matchingLines(trace.plain, RE.hostKey) || plainLast, all, version);
    if (RE.auth.test(trace.plain)) return mk("auth", "auth", plainLast, all, version);
    if (kind === "timeout") {
      if (!trace.connected)
        return mk("connect", "timeout", `no answer within the deadline (${nixMsg})`, all, version);
      if (!trace.hostKeyAccepted)
        return mk(
          "connect",
          "timeout",
          `connected, but the key exchange did not finish in time`,
          all,
          version,
        );
      return mk("auth", "timeout", "authentication did not finish in time", all, version);
    }
    if (RE.connRefused.test(trace.plain) || !trace.connected)
      return mk("connect", "unreachable", plainLast || nixMsg, all, version);
    if (!trace.hostKeyAccepted) return mk("host-key", "host-key", plainLast || nixMsg, all, version);
    return mk("auth", "auth", plainLast || `ssh did not authenticate (${nixMsg})`, all, version);
  }

  // Authenticated: the remote command ran (or the remote shell refused to run it).
  const remoteText = `${trace.plain}\n${seen}`;
  if (RE.nologin.test(remoteText))
    return mk(
      "exec",
      "remote-shell",
      `the builder user's shell does not run commands: ${firstMatchLine(remoteText, RE.nologin)}`,
      all,
      version,
    );
  if (RE.daemonDown.test(trace.plain))
    return mk("store", "remote-daemon-down", firstMatchLine(trace.plain, RE.daemonDown), all, version);
  if (RE.notFound.test(trace.plain) || (trace.exitStatus === 127 && kind !== "timeout"))
    return mk(
      "exec",
      "remote-nix-missing",
      firstMatchLine(trace.plain, RE.notFound) || `exit status 127 (command not found)`,
      all,
      version,
    );
  if (kind === "garbage" || (kind === "ssh-start" && seen !== ""))
    return mk("exec", "remote-shell", `text on stdout before the protocol: ${nixMsg}`, all, version);
  if (RE.protocolMismatch.test(trace.plain) || kind === "bad-magic" || kind === "bad-version")
    return mk(
      "handshake",
      "protocol",
      firstMatchLine(trace.plain, RE.protocolMismatch) || nixMsg,
      all,
      version,
    );
  if (kind === "timeout")
    return mk(
      "handshake",
      "timeout",
      `the remote command did not answer the handshake in time (${nixMsg})`,
      all,
      version,
    );
  if (kind === "query" || kind === "daemon-error")
    return mk("store", "protocol", `the remote store failed: ${nixMsg}`, all, version);
  const status = trace.exitStatus === null ? "" : ` (remote exit status ${trace.exitStatus})`;
  return mk(
    "handshake",
    "protocol",
    `${nixMsg}${status}: the remote command ended without speaking the protocol`,
    all,
    version,
  );
}

/** Every line of `text` that matches `re`, trimmed and joined with " / ". */
function matchingLines(text: string, re: RegExp): string {
  return (
    text
      .split("\n")
      // ssh frames its warnings in `@` borders
      .map((l) => l.replace(/^[\s@]+|[\s@]+$/g, ""))
      .filter((l) => l !== "" && re.test(l))
      .join(" / ")
  );
}

function firstMatchLine(text: string, re: RegExp): string {
  for (const l of text.split("\n")) if (re.test(l)) return l.trim();
  return "";
}
