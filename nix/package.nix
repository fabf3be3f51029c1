# The nix-builders package: the npm package built with nixpkgs' buildNpmPackage, plus watch's systemd
# unit in lib/systemd/system. The npm dependencies come from package-lock.json through importNpmLock
# (each tarball fetched by the lock file's own integrity hash), so there is no npmDepsHash to update.
# A lock file written with npm's `omit-lockfile-registry-resolved` has no `resolved` URLs, and
# importNpmLock fetches only what has one: the registry's tarball URL is filled in for those entries,
# as npm itself would resolve them against registry.npmjs.org.
{
  lib,
  buildNpmPackage,
  importNpmLock,
  nodejs,
}:

let
  packageJson = lib.importJSON ../package.json;
  lock = lib.importJSON ../package-lock.json;
  # "node_modules/@scope/name" (possibly nested) -> registry tarball URL of that name at its version.
  registryUrl =
    path: entry:
    let
      name = entry.name or (lib.last (lib.splitString "node_modules/" path));
      base = lib.last (lib.splitString "/" name);
    in
    "https://registry.npmjs.org/${name}/-/${base}-${entry.version}.tgz";
  packageLock = lock // {
    packages = lib.mapAttrs (
      path: entry:
      if path == "" || entry ? resolved || entry.link or false || !(entry ? integrity) then
        entry
      else
        entry // { resolved = registryUrl path entry; }
    ) lock.packages;
  };
  src = lib.fileset.toSource {
    root = ../.;
    fileset = import ./source.nix { inherit lib; };
  };
in
buildNpmPackage {
  pname = packageJson.name;
  inherit (packageJson) version;
  inherit src nodejs;

  npmDeps = importNpmLock {
    npmRoot = src;
    inherit packageLock;
  };
  npmConfigHook = importNpmLock.npmConfigHook;

  # `npm run build` (scripts/bundle.mjs, esbuild) makes dist/; the install copies what `npm pack` would ship, links the `bin`
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
