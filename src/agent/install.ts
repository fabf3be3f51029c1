/**
 * Users, homes and file locations per install method (docs/agent.md), and where the
 * agent user's Nix reads its per-user nix.conf (Nix `users.cc`, `globals.cc`).
 */

export type AgentInstallMethod =
  /** Agent flake NixOS module, unnamed instance (also `services.hercules-ci-agent`). */
  | "nixos-flake"
  /** Agent flake NixOS module, named instance `hercules-ci-agents.<name>`. */
  | "nixos-flake-instance"
  /** nixpkgs' own NixOS module (TOML config). */
  | "nixos-nixpkgs"
  /** nix-darwin (upstream module or the agent flake's darwin module). */
  | "nix-darwin"
  /** Hand-written config under some supervisor. */
  | "manual"
  | "unknown";

export interface AgentInstallDefaults {
  readonly method: AgentInstallMethod;
  readonly service: string;
  readonly user: string;
  /** The user's home, which the modules make equal to baseDirectory. */
  readonly home: string;
  readonly baseDirectory: string;
  readonly configFormat: "json" | "toml" | null;
  readonly notes: readonly string[];
}

export function agentInstallDefaults(method: AgentInstallMethod, instanceName = ""): AgentInstallDefaults {
  switch (method) {
    case "nixos-flake":
    case "nixos-flake-instance": {
      const named = method === "nixos-flake-instance" && instanceName !== "";
      const base = named ? `/var/lib/hercules-ci-agent-${instanceName}` : "/var/lib/hercules-ci-agent";
      return {
        method,
        service: named ? `hercules-ci-agent-${instanceName}.service` : "hercules-ci-agent.service",
        user: named ? `hci-${instanceName}` : "hercules-ci-agent",
        home: base,
        baseDirectory: base,
        configFormat: "json",
        notes: [
          "trusted-users gets the service user and nixUserIsTrusted = true",
          "hardened unit (0.10.1+): PrivateDevices, ProtectHome, ProtectSystem=full",
          "the restarter path unit restarts the agent on token/binary-caches changes only, not on nix.conf changes",
        ],
      };
    }
    case "nixos-nixpkgs":
      return {
        method,
        service: "hercules-ci-agent.service",
        user: "hercules-ci-agent",
        home: "/var/lib/hercules-ci-agent",
        baseDirectory: "/var/lib/hercules-ci-agent",
        configFormat: "toml",
        notes: [
          "home = settings.baseDirectory",
          "trusted-users gets hercules-ci-agent, nixUserIsTrusted = true",
        ],
      };
    case "nix-darwin":
      return {
        method,
        service: "org.nixos.hercules-ci-agent",
        user: "_hercules-ci-agent",
        home: "/var/lib/hercules-ci-agent",
        baseDirectory: "/var/lib/hercules-ci-agent",
        configFormat: null,
        notes: [
          "launchd daemon hercules-ci-agent (KeepAlive, RunAtLoad); log /var/log/hercules-ci-agent.log",
          "uid 399 / gid 32001 by default; older setups used the user hercules-ci-agent",
          "the agent flake's darwin module writes JSON, upstream nix-darwin TOML",
        ],
      };
    case "manual":
    case "unknown":
      return {
        method,
        service: "",
        user: "hercules-ci-agent",
        home: "/var/lib/hercules-ci-agent",
        baseDirectory: "/var/lib/hercules-ci-agent",
        configFormat: "json",
        notes: ["nixUserIsTrusted defaults to false", "must not run as root if effects are used"],
      };
  }
}

/** Guess how an agent was installed from what discovery found. */
export function guessInstallMethod(a: {
  readonly kind: "systemd" | "launchd" | "manual";
  readonly instance: string | null;
  readonly configFile: string | null;
  readonly agentExecutable: string | null;
  readonly user: string | null;
}): AgentInstallMethod {
  if (a.kind === "manual") return "manual";
  const inStore = (p: string | null): boolean => p?.startsWith("/nix/store/") ?? false;
  if (a.kind === "launchd")
    return inStore(a.configFile) || inStore(a.agentExecutable) ? "nix-darwin" : "manual";
  if (!inStore(a.configFile)) return a.configFile === null ? "unknown" : "manual";
  if (a.configFile!.endsWith(".toml")) return "nixos-nixpkgs";
  return a.instance ? "nixos-flake-instance" : "nixos-flake";
}

export interface AgentNixConfPaths {
  /** `$NIX_CONF_DIR/nix.conf`, default /etc/nix/nix.conf. */
  readonly systemFile: string;
  /** User files in the order Nix applies them (lowest priority first). */
  readonly userFiles: readonly string[];
  /** The file that takes priority, where per-agent settings belong. */
  readonly primaryUserFile: string | null;
  /** The machines file the guide's "non-default builders" example uses, next to the primary file. */
  readonly suggestedMachinesFile: string | null;
  readonly home: string | null;
  readonly homeSource: "HOME" | "passwd" | null;
  /** NIX_CONFIG from the environment, applied after all files. */
  readonly nixConfigEnv: string | null;
  readonly notes: readonly string[];
}

/**
 * Where the agent user's Nix reads configuration, from its environment and passwd home.
 * Nix uses $HOME only when it is owned by the user (or missing); otherwise the passwd home.
 */
export function agentNixConfPaths(input: {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly passwdHome: string | null;
  /** Whether $HOME is owned by the agent user; null/undefined when unknown (assumed yes). */
  readonly homeOwnedByUser?: boolean | null;
}): AgentNixConfPaths {
  const env = input.env;
  const notes: string[] = [];
  let home: string | null = null;
  let homeSource: AgentNixConfPaths["homeSource"] = null;
  if (env.HOME !== undefined && env.HOME !== "" && input.homeOwnedByUser !== false) {
    home = env.HOME;
    homeSource = "HOME";
    if (input.passwdHome && input.passwdHome !== env.HOME)
      notes.push(`HOME (${env.HOME}) differs from the passwd home (${input.passwdHome}); Nix uses HOME`);
  } else if (input.passwdHome) {
    home = input.passwdHome;
    homeSource = "passwd";
    if (env.HOME && input.homeOwnedByUser === false)
      notes.push(`HOME (${env.HOME}) is not owned by the agent user, so Nix warns and uses the passwd home`);
  }
  const systemFile = `${env.NIX_CONF_DIR ?? "/etc/nix"}/nix.conf`;
  let highFirst: string[];
  if (env.NIX_USER_CONF_FILES !== undefined) {
    highFirst = env.NIX_USER_CONF_FILES.split(":").filter((x) => x !== "");
    notes.push("NIX_USER_CONF_FILES is set: Nix reads exactly these files, the first one wins");
  } else {
    const configHome = env.XDG_CONFIG_HOME ?? (home !== null ? `${home}/.config` : null);
    const dirs = (env.XDG_CONFIG_DIRS ?? "/etc/xdg").split(":").filter((x) => x !== "");
    highFirst = [...(configHome !== null ? [configHome] : []), ...dirs].map((d) => `${d}/nix/nix.conf`);
  }
  if (env.NIX_CONFIG_HOME !== undefined)
    notes.push("NIX_CONFIG_HOME is set: newer Nix versions use it instead of XDG_CONFIG_HOME/nix");
  if (env.NIX_CONFIG !== undefined) notes.push("NIX_CONFIG is set: applied after all files");
  const primary = highFirst[0] ?? null;
  return {
    systemFile,
    userFiles: [...highFirst].reverse(),
    primaryUserFile: primary,
    suggestedMachinesFile: primary ? `${primary.slice(0, primary.lastIndexOf("/"))}/machines` : null,
    home,
    homeSource,
    nixConfigEnv: env.NIX_CONFIG ?? null,
    notes,
  };
}
