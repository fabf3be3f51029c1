/**
 * A real OpenSSH server on 127.0.0.1 for unit tests of the ssh edge (probe, doctor): temp host key,
 * temp authorized keys, root login by key only, a free port. Needs root and /usr/sbin/sshd.
 *
 * The far side is a clean builder, whatever this host's state: sshd runs in a private mount namespace
 * in which root's home (from passwd) is an empty tmpfs, so root's dotfiles never run or count there
 * (bash started by sshd sources ~/.bashrc; sshd runs ~/.ssh/rc; Nix reads ~/.config/nix/nix.conf),
 * and the far side's Nix reads only the fixture's nix.conf (NIX_CONF_DIR, `build-users-group =`: no
 * nixbld group needed), never /etc/nix.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { userInfo } from "node:os";
import { join } from "node:path";

export const SSHD = "/usr/sbin/sshd";

/** Why the loopback sshd tests cannot run here, or false. */
export function sshdSkipReason(): string | false {
  if (process.getuid?.() !== 0) return "needs root";
  if (!existsSync(SSHD)) return "no /usr/sbin/sshd";
  try {
    execFileSync("nix-store", ["--version"], { stdio: "ignore" });
    execFileSync("ssh-keygen", ["-?"], { stdio: "ignore" });
    execFileSync("unshare", ["--version"], { stdio: "ignore" });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return "nix-store, ssh-keygen or unshare missing";
  }
  return false;
}

/** A new ed25519 key pair `dir/name` (+ `.pub`). */
export function keygen(dir: string, name: string, passphrase = ""): { priv: string; pub: string } {
  const priv = join(dir, name);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", passphrase, "-C", `${name}@test`, "-f", priv]);
  return { priv, pub: readFileSync(`${priv}.pub`, "utf8") };
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const p = typeof a === "object" && a ? a.port : 0;
      s.close(() => resolve(p));
    });
  });
}

export interface LoopbackSshd {
  port: number;
  /** Everything sshd wrote to stderr so far (`-e`: its log). */
  log(): string;
  stop(): Promise<void>;
}

/**
 * Start `sshd -D -e` on 127.0.0.1 with `hostKey` (private key path) and `authorizedKeys` (text),
 * both kept under `dir`. Retries on another port when the one picked was taken meanwhile.
 */
export async function startLoopbackSshd(opts: {
  dir: string;
  hostKey: string;
  authorizedKeys: string;
  extraConfig?: string[];
}): Promise<LoopbackSshd> {
  const ak = join(opts.dir, "authorized_keys");
  writeFileSync(ak, opts.authorizedKeys, { mode: 0o600 });
  // sshd's privilege-separation directory; its systemd unit normally creates it. Left in place.
  if (!existsSync("/run/sshd")) mkdirSync("/run/sshd", { mode: 0o755 });
  // The far side's Nix configuration: only this file (no /etc/nix, no nixbld group on a fresh host).
  const nixConf = join(opts.dir, "builder-nix-conf");
  mkdirSync(nixConf, { recursive: true });
  writeFileSync(join(nixConf, "nix.conf"), "build-users-group =\nsandbox = false\n");
  const conf = join(opts.dir, "sshd_config");
  writeFileSync(
    conf,
    [
      "ListenAddress 127.0.0.1",
      `HostKey ${opts.hostKey}`,
      `AuthorizedKeysFile ${ak}`,
      "PidFile none",
      "StrictModes no",
      "UsePAM no",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PermitRootLogin prohibit-password",
      "PermitUserRC no",
      `SetEnv NIX_CONF_DIR=${nixConf}`,
      ...(opts.extraConfig ?? []),
      "",
    ].join("\n"),
  );
  let log = "";
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    log = "";
    // unshare execs sh, which execs sshd: the child's pid is sshd's. Paths reach sh as arguments only.
    const proc: ChildProcess = spawn(
      "unshare",
      [
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        'mount -t tmpfs -o mode=0700,size=16m nb-sshd-home "$1" && shift && exec "$@"',
        "sh",
        userInfo().homedir,
        SSHD,
        "-D",
        "-e",
        "-f",
        conf,
        "-p",
        String(port),
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    const up = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 5000);
      proc.stderr?.on("data", (b: Buffer) => {
        log += b.toString();
        if (log.includes("Server listening")) {
          clearTimeout(t);
          resolve(true);
        }
      });
      proc.once("exit", () => {
        clearTimeout(t);
        resolve(false);
      });
    });
    if (up)
      return {
        port,
        log: () => log,
        stop: async () => {
          if (proc.exitCode !== null || proc.signalCode !== null) return;
          const gone = new Promise((r) => proc.once("exit", r));
          proc.kill("SIGTERM");
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([gone, new Promise((r) => (timer = setTimeout(r, 2000)))]);
          clearTimeout(timer);
          if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
        },
      };
    proc.kill("SIGKILL");
  }
  throw new Error(`sshd did not start: ${log}`);
}
