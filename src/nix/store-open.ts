/**
 * What kind of store the build hook opens for a machine's store URI (column 1, normalised), and whether
 * Nix can open it at all: `openStore` in 2.8's `store-api.cc`. The hook opens every machine it picks
 * this way; when that throws, it prints `cannot build on '<uri>': <error>` and disables the machine.
 *
 * 2.8 (measured with `nix store ping --store URI`, Debian's Nix 2.8.0):
 *  - a query value with a bad `%` escape: `invalid URI parameter '<value>'`, whatever the scheme;
 *  - a URI its URL regex accepts, with a scheme a store registers (ssh, ssh-ng, unix, file, http, https,
 *    dummy; s3 only in builds with S3 support): that store;
 *  - otherwise, after cutting `?params`: `auto` or empty (this machine's store: local, or its daemon),
 *    `daemon` (the daemon socket), `local` (the system store, or `root=`), a string with a `/` and no
 *    `://` (a local chroot store, relative to the hook's cwd `/`);
 *  - anything else: `don't know how to open Nix store '<uri>'` (e.g. `local:///x`, `foo://x`,
 *    `ssh://h^st`, `ssh://h|x`, `file://host/x`).
 * Later versions are not modelled here beyond the scheme names: for them only `kind` is meaningful, and
 * a URI is never called rejected.
 */
import { badParam28, parseUrl28, percentDecode28, sshAuthority } from "./store-uri.js";
import type { NixVersion } from "./version.js";
import { NIX, since } from "./versions.js";

export type StoreOpen =
  | { kind: "ssh"; scheme: "ssh" | "ssh-ng" }
  /** This machine's own store: `root` is a chroot directory, or null for the system store. */
  | { kind: "local"; root: string | null; uri: string }
  /** `auto`: this machine's store, local or through its daemon, whichever Nix finds. */
  | { kind: "auto" }
  /** A daemon socket on this machine; null: the default socket (`daemon`). */
  | { kind: "daemon"; socket: string | null }
  /** A binary cache (`file://`, `http(s)://`, `s3://`): paths can be copied there, nothing is built. */
  | { kind: "binary-cache"; scheme: string }
  /** `dummy://`: a store that holds nothing. */
  | { kind: "dummy" }
  /** Nix cannot open it; `error` is Nix's text (after `error: `). */
  | { kind: "rejected"; error: string }
  /** A later Nix, a scheme this module does not know: no verdict. */
  | { kind: "unknown"; scheme: string };

const BINARY_CACHE = new Set(["file", "http", "https", "s3"]);

export function storeOpen(uri: string, version: NixVersion): StoreOpen {
  const v28 = !since(version, NIX.storeUriParser29);
  if (v28) {
    const bad = badParam28(uri);
    if (bad !== null) return { kind: "rejected", error: `invalid URI parameter '${bad}'` };
  }
  const parsed = parseUrl28(uri);
  const scheme = parsed?.scheme ?? /^([a-z][a-z0-9+.-]*):\/\//.exec(uri)?.[1] ?? null;
  if (parsed !== null || (!v28 && scheme !== null)) {
    const s = scheme!;
    if (s === "ssh" || s === "ssh-ng") return { kind: "ssh", scheme: s };
    if (s === "unix")
      return { kind: "daemon", socket: parsed ? (parsed.authority ?? "") + parsed.path : null };
    if (BINARY_CACHE.has(s)) return { kind: "binary-cache", scheme: s };
    if (s === "dummy") return { kind: "dummy" };
    if (!v28) return s === "local" ? { kind: "local", root: null, uri } : { kind: "unknown", scheme: s };
  }
  const q = uri.indexOf("?");
  const base = q < 0 ? uri : uri.slice(0, q);
  if (base === "" || base === "auto") return { kind: "auto" };
  if (base === "daemon") return { kind: "daemon", socket: null };
  if (base === "local") {
    // `root=` as 2.8 decodes it: split on `&`, first value wins, `%XX` decoded, `+` kept.
    let root: string | null = null;
    for (const part of q < 0 ? [] : uri.slice(q + 1).split("&"))
      if (root === null && part.startsWith("root=")) root = percentDecode28(part.slice(5));
    return { kind: "local", root, uri };
  }
  if (!base.includes("://") && base.includes("/"))
    return { kind: "local", root: base.startsWith("/") ? base : `/${base}`, uri };
  if (v28) return { kind: "rejected", error: `don't know how to open Nix store '${uri}'` };
  return { kind: "unknown", scheme: scheme ?? base };
}

/**
 * Nix's error when it cannot open this machine's store at all (so the hook never uses the machine and
 * nothing is run for it), or null. Adds the ssh host check (`invalid SSH host name`) to `storeOpen`.
 */
export function storeOpenError(uri: string, version: NixVersion): string | null {
  const o = storeOpen(uri, version);
  if (o.kind === "rejected") return o.error;
  if (o.kind !== "ssh") return null;
  const a = sshAuthority(uri, version);
  return a.valid ? null : (a.error ?? "invalid SSH host");
}
