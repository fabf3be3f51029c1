{
  description = "nix-builders: make a machine a correct, verified client of Nix remote builders";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        nix-builders = pkgs.callPackage ./nix/package.nix { };
        default = nix-builders;
      });

      overlays.default = final: _prev: { nix-builders = final.callPackage ./nix/package.nix { }; };

      # services.nix-builders.watch, with this flake's package as the default.
      nixosModules.watch =
        { lib, pkgs, ... }:
        {
          imports = [ ./nix/watch-module.nix ];
          services.nix-builders.watch.package =
            lib.mkDefault
              self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
      nixosModules.default = self.nixosModules.watch;
    };
}
