# The nix-builders package: the npm package built with nixpkgs' buildNpmPackage, plus watch's systemd
# unit in lib/systemd/system. The npm dependencies come from package-lock.json through importNpmLock
# (each tarball fetched by the lock file's own integrity hash), so there is no npmDepsHash to update.
{
  lib,
  buildNpmPackage,
  importNpmLock,
  nodejs,
}:

let
  packageJson = lib.importJSON ../package.json;
  src = lib.fileset.toSource {
    root = ../.;
    fileset = import ./source.nix { inherit lib; };
  };
in
buildNpmPackage {
  pname = packageJson.name;
  inherit (packageJson) version;
  inherit src nodejs;

  npmDeps = importNpmLock { npmRoot = src; };
  npmConfigHook = importNpmLock.npmConfigHook;

  # `npm run build` (tsc) makes dist/; the install copies what `npm pack` would ship, links the `bin`
  # entries to $out/bin and keeps only the runtime dependencies.

  postInstall = ''
    unit=$out/lib/node_modules/nix-builders/contrib/systemd/nix-builders-watch.service
    install -Dm644 "$unit" $out/lib/systemd/system/nix-builders-watch.service
    substituteInPlace $out/lib/systemd/system/nix-builders-watch.service \
      --replace-fail /usr/local/bin/nix-builders $out/bin/nix-builders
    install -Dm644 $out/lib/node_modules/nix-builders/contrib/prometheus/nix-builders-alerts.yml \
      $out/share/nix-builders/prometheus/nix-builders-alerts.yml
  '';

  meta = {
    inherit (packageJson) description;
    license = lib.licenses.mit;
    mainProgram = "nix-builders";
    platforms = lib.platforms.linux;
  };
}
