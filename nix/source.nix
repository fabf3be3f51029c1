# The files the Nix package builds from: what `npm pack` ships (package.json's `files`, less the `dist/`
# the build makes, plus what npm always adds) and what the build reads (the lock file, the bundler
# script, the sources). test/unit/watch-package.test.ts checks this against `npm pack --dry-run`.
{ lib }:
let
  root = ../.;
  packageJson = lib.importJSON ../package.json;
  shipped = lib.filter (f: f != "dist" && f != "dist/") packageJson.files;
in
lib.fileset.unions (
  [
    ../package.json
    ../package-lock.json
    ../tsconfig.json
    ../scripts/bundle.mjs
    ../src
    (lib.fileset.maybeMissing ../README.md)
    (lib.fileset.maybeMissing ../LICENSE)
  ]
  ++ map (f: lib.fileset.maybeMissing (root + "/${f}")) shipped
)
