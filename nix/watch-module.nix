# NixOS module: services.nix-builders.watch — run `nix-builders watch` as a hardened system service and
# point Nix's `builders` at the machines file it manages. See docs/watch-service.md.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    literalExpression
    mkEnableOption
    mkForce
    mkIf
    mkOption
    optional
    optionals
    types
    ;

  cfg = config.services.nix-builders.watch;

  runtimeDir = "/run/nix-builders";
  machinesFile = "${runtimeDir}/machines";
  stateDir = "/var/lib/nix-builders/watch";

  # One argument of an ExecStart= line: quoted as systemd's parser expects, with `%` doubled so that
  # systemd does not expand it as a specifier.
  execArg = arg: lib.replaceStrings [ "%" ] [ "%%" ] (lib.escapeShellArg (toString arg));
  execLine = args: lib.concatMapStringsSep " " execArg args;

  bin = lib.getExe' cfg.package "nix-builders";

  seconds =
    description: default: max:
    mkOption {
      type = types.ints.between 1 max;
      inherit default description;
    };

  watchArgs = [
    bin
    "watch"
    "--output"
    machinesFile
    "--state-dir"
    stateDir
    "--interval"
    cfg.interval
    "--timeout"
    cfg.timeout
    "--failure-threshold"
    cfg.failureThreshold
    "--success-threshold"
    cfg.successThreshold
    "--backoff-base"
    cfg.backoff.base
    "--backoff-factor"
    cfg.backoff.factor
    "--backoff-max"
    cfg.backoff.max
    "--backoff-jitter"
    cfg.backoff.jitter
    "--stable-after"
    cfg.stableAfter
    "--mode"
    cfg.quarantineMode
    "--max-quarantined-percent"
    cfg.guards.maxQuarantinedPercent
    "--jobs"
    cfg.jobs
  ]
  ++ optionals (cfg.source != null) [
    "--source"
    "${cfg.source}"
  ]
  ++ optionals (cfg.listenAddress != null) [
    "--listen"
    "${if lib.hasInfix ":" cfg.listenAddress then "[${cfg.listenAddress}]" else cfg.listenAddress}:${toString cfg.port}"
  ]
  ++ optionals (cfg.agent != null) (if cfg.agent == "" then [ "--agent" ] else [ "--agent" cfg.agent ])
  ++ optionals (cfg.agentConfig != null) [
    "--agent-config"
    cfg.agentConfig
  ]
  ++ cfg.extraArgs;
in
{
  options.services.nix-builders.watch = {
    enable = mkEnableOption "nix-builders watch, which keeps Nix's builds off dead remote builders";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = literalExpression "pkgs.callPackage ./package.nix { }";
      description = "The nix-builders package.";
    };

    source = mkOption {
      type = types.nullOr types.path;
      default = "/etc/nix/machines";
      description = ''
        The machines file watch reads the builders from (what `nix.buildMachines` renders by default).
        null: the builders Nix itself would use for root, or for `agent` when that is set; with
        `setBuilders` and no `agent` that would be the managed file itself, which watch refuses.
      '';
    };

    machinesFile = mkOption {
      type = types.path;
      default = machinesFile;
      readOnly = true;
      description = "The machines file watch writes; Nix reads it through `builders = @<this file>`.";
    };

    setBuilders = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Set `nix.settings.builders` to `@''${machinesFile}`, so that the daemon's builds use the
        managed file. Needs `nix.distributedBuilds`.
      '';
    };

    interval = seconds "Seconds between probe rounds." 30 86400;
    timeout = seconds "Deadline of each probe step, in seconds." 10 3600;

    failureThreshold = mkOption {
      type = types.ints.between 1 1000;
      default = 2;
      description = "Failed probes in a row (with a network cause) before a builder is quarantined.";
    };
    successThreshold = mkOption {
      type = types.ints.between 1 1000;
      default = 2;
      description = "Passed probes in a row on probation before a builder is up again.";
    };

    backoff = {
      base = seconds "First re-probe delay of a quarantined builder, in seconds." 60 86400;
      factor = mkOption {
        type = types.ints.between 1 100;
        default = 3;
        description = "Factor of the re-probe delay per backoff level.";
      };
      max = seconds "Longest re-probe delay, in seconds." 1620 604800;
      jitter = mkOption {
        type = types.ints.between 0 86400;
        default = 30;
        description = "Up to this many random seconds added to each re-probe delay.";
      };
    };

    stableAfter = mkOption {
      type = types.ints.between 0 2592000;
      default = 600;
      description = "Seconds a builder must stay up before its backoff level decays.";
    };

    quarantineMode = mkOption {
      type = types.enum [
        "hold"
        "remove"
      ];
      default = "hold";
      description = ''
        What a quarantined builder's line becomes: `hold` keeps it with maxJobs 0 (Nix never connects
        to it, and a build only it could take waits), `remove` leaves it out (such a build fails).
      '';
    };

    guards.maxQuarantinedPercent = mkOption {
      type = types.ints.between 0 100;
      default = 50;
      description = ''
        Never hold or remove more than this share of the builders. The other guards are always on:
        when every builder fails at once the local side is suspected and the file is kept, and the file
        is never emptied while the source has lines.
      '';
    };

    jobs = mkOption {
      type = types.ints.between 1 1024;
      default = 16;
      description = "Builders probed at once.";
    };

    listenAddress = mkOption {
      type = types.nullOr types.str;
      default = "127.0.0.1";
      description = "Address of the status page, /status.json and /metrics; null for no HTTP server.";
    };
    port = mkOption {
      type = types.port;
      default = 9478;
      description = "Port of the status page and /metrics.";
    };
    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open `port` in the firewall (for a Prometheus on another machine).";
    };

    agent = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "";
      description = ''
        Watch the builders of this hercules-ci-agent instance (its effective builders, as its user's
        Nix sees them). "" is the default instance.
      '';
    };
    agentConfig = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "The hercules-ci-agent configuration file, when it is not where the service says.";
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "--full-every"
        "20"
      ];
      description = "More arguments for `nix-builders watch`.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = !cfg.setBuilders || config.nix.distributedBuilds;
        message = "services.nix-builders.watch.setBuilders needs nix.distributedBuilds = true.";
      }
      {
        assertion = !(cfg.setBuilders && cfg.source == null && cfg.agent == null);
        message = "services.nix-builders.watch: with setBuilders, set source (root's Nix would read the managed file itself).";
      }
      {
        assertion = cfg.source != machinesFile;
        message = "services.nix-builders.watch.source is the managed file ${machinesFile}; watch would read its own output.";
      }
    ];

    nix.settings.builders = mkIf cfg.setBuilders (mkForce "@${machinesFile}");

    # Nix finds a file at boot, before watch's first round (and if watch never starts): a copy of the source.
    # (tmpfiles expands % specifiers in the argument too.)
    systemd.tmpfiles.rules = optional (
      cfg.source != null
    ) "C ${machinesFile} - - - - ${lib.replaceStrings [ "%" ] [ "%%" ] "${cfg.source}"}";

    networking.firewall.allowedTCPPorts = optional (cfg.openFirewall && cfg.listenAddress != null) cfg.port;

    environment.systemPackages = [ cfg.package ];

    systemd.services.nix-builders-watch = {
      description = "nix-builders watch: keep Nix builds off dead remote builders";
      wantedBy = [ "multi-user.target" ];
      after = [
        "network-online.target"
        "nix-daemon.service"
      ];
      wants = [ "network-online.target" ];
      # ssh as the daemon's build hook runs it, setpriv to read users' files as them, Nix for its version.
      path = [
        config.nix.package
        config.programs.ssh.package
        pkgs.util-linux
      ];
      serviceConfig = {
        Type = "exec";
        # V8's young generation at 1 MB semi-spaces (default 16): less RSS at 200 builders
        # (bench/RESULTS.md, "watch at scale"). As in the shipped unit.
        Environment = "NODE_OPTIONS=--max-semi-space-size=1";
        ExecStart = execLine watchArgs;
        ExecStartPost = execLine [
          bin
          "watch"
          "--wait-ready"
          "--state-dir"
          stateDir
          "--wait-timeout"
          300
        ];
        Restart = "always";
        RestartSec = "5s";
        RestartPreventExitStatus = "64";
        TimeoutStartSec = "330s";
        TimeoutStopSec = "30s";
        User = "root";
        RuntimeDirectory = "nix-builders";
        RuntimeDirectoryMode = "0755";
        RuntimeDirectoryPreserve = "yes";
        StateDirectory = "nix-builders/watch";
        StateDirectoryMode = "0700";
        UMask = "0022";
        ProtectSystem = "strict";
        ProtectHome = "read-only";
        PrivateTmp = "yes";
        PrivateDevices = "yes";
        ProtectKernelTunables = "yes";
        ProtectKernelModules = "yes";
        ProtectKernelLogs = "yes";
        ProtectControlGroups = "yes";
        ProtectClock = "yes";
        ProtectHostname = "yes";
        NoNewPrivileges = "yes";
        RestrictSUIDSGID = "yes";
        LockPersonality = "yes";
        RestrictRealtime = "yes";
        RestrictNamespaces = "yes";
        RestrictAddressFamilies = "AF_UNIX AF_INET AF_INET6 AF_NETLINK";
        SystemCallArchitectures = "native";
        SystemCallFilter = "@system-service";
        SystemCallErrorNumber = "EPERM";
        # V8's JIT needs writable and executable memory.
        MemoryDenyWriteExecute = "no";
        CapabilityBoundingSet = "CAP_SETUID CAP_SETGID CAP_KILL CAP_DAC_READ_SEARCH CAP_SYS_PTRACE";
      };
    };
  };
}
