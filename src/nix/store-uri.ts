/**
 * Store URIs as they appear in column 1 of a machines line: normalisation of bare hosts to `ssh://`,
 * the ssh authority Nix derives from them (and validates), and lock-file names.
 *
 * 2.8 parses URIs with a regular expression (`url.cc`/`url-parts.hh`); current Nix uses a lenient
 * URL parser (`store-reference.cc`). The 2.8 model here is exact for what the ssh store sees; the HEAD
 * model follows the source and was not executed.
 */
import type { NixVersion } from "./version.js";
import { NIX, since } from "./versions.js";

/**
 * What Nix does to column 1 of a machines line (same in 2.8 and HEAD): keep it when it contains `://`
 * or `/`, or is `auto`/`daemon`/`local`, or starts with `auto?`/`daemon?`/`local?`/`?`;
 * otherwise prepend `ssh://`.
 */
export function normaliseStoreUri(col0: string): string {
  const keep =
    col0.includes("://") ||
    col0.includes("/") ||
    col0 === "auto" ||
    col0 === "daemon" ||
    col0 === "local" ||
    col0.startsWith("auto?") ||
    col0.startsWith("daemon?") ||
    col0.startsWith("local?") ||
    col0.startsWith("?");
  return keep ? col0 : `ssh://${col0}`;
}

/** The name Nix gives a machine's slot lock files in `current-load`: the URI with every `/` replaced by `_`. */
export function lockFileName(storeUri: string): string {
  return storeUri.replaceAll("/", "_");
}

/** `<currentLoad>/<escaped uri>-<slot>`, the file build-remote flocks for one job slot. */
export function slotLockPath(currentLoadDir: string, storeUri: string, slot: number): string {
  return `${currentLoadDir}/${lockFileName(storeUri)}-${slot}`;
}

/* ---------- 2.8 URL regex (url-parts.hh), as ECMAScript ---------- */

const pctEncoded = "(?:%[0-9a-fA-F][0-9a-fA-F])";
const schemeRe = "(?:[a-z][a-z0-9+.-]*)";
const ipv6Seg = "[0-9a-fA-F:]+(?:%\\w+)?";
const ipv6Addr = `(?:\\[${ipv6Seg}\\]|${ipv6Seg})`;
const unreserved = "(?:[a-zA-Z0-9-._~])";
const subdelims = "(?:[!$&'\"()*+,;=])";
const hostname = `(?:(?:${unreserved}|${pctEncoded}|${subdelims})*)`;
const hostRe = `(?:${ipv6Addr}|${hostname})`;
const userRe = `(?:(?:${unreserved}|${pctEncoded}|${subdelims}|:)*)`;
const authorityRe = `(?:${userRe}@)?${hostRe}(?::[0-9]+)?`;
const pchar = `(?:${unreserved}|${pctEncoded}|${subdelims}|[:@])`;
const queryRe = `(?:${pchar}|[/? "])*`;
const segment = `(?:${pchar}*)`;
const absPath = `(?:(?:/${segment})*/?)`;
const pathRe = `(?:${segment}(?:/${segment})*/?)`;
const URI_2_8 = new RegExp(
  `^((${schemeRe}):(?:(?://(${authorityRe})(${absPath}))|(/?${pathRe})))(?:\\?(${queryRe}))?(?:#(${queryRe}))?$`,
);

export interface ParsedUrl28 {
  scheme: string;
  authority: string | null;
  path: string;
  query: Record<string, string>;
}

export function percentDecode28(s: string): string | null {
  let out = "";
  for (let i = 0; i < s.length; ) {
    if (s[i] === "%") {
      if (i + 2 >= s.length) return null;
      const hex = s.slice(i + 1, i + 3);
      // std::stoul parses a prefix of hex digits; "%g1" fails, "%1g" gives 1
      const m = /^[0-9a-fA-F]+/.exec(hex);
      if (!m) return null;
      out += String.fromCharCode(Number.parseInt(m[0], 16));
      i += 3;
    } else out += s[i++];
  }
  return out;
}

/**
 * 2.8's `decodeQuery` (in `parseURL` and again in `splitUriAndParams`): the first parameter value with a
 * bad `%` escape, which makes `openStore` fail with `invalid URI parameter '<value>'` for any scheme.
 */
export function badParam28(uri: string): string | null {
  const q = uri.indexOf("?");
  if (q < 0) return null;
  for (const part of uri.slice(q + 1).split("&")) {
    const e = part.indexOf("=");
    if (e < 0) continue;
    const v = part.slice(e + 1);
    if (percentDecode28(v) === null) return v;
  }
  return null;
}

/** 2.8's `parseURL`. Returns null where 2.8 throws `BadURL`. */
export function parseUrl28(url: string): ParsedUrl28 | null {
  let m: RegExpExecArray | null;
  try {
    m = URI_2_8.exec(url);
  } catch (e) {
    // A URI of megabytes overflows the regular expression engine's stack (as std::regex overflows
    // Nix's): we answer "not a URI" instead of dying.
    if (e instanceof RangeError) return null;
    throw e;
  }
  if (!m) return null;
  const scheme = m[2]!;
  const authority = m[3] !== undefined ? m[3] : null;
  let path = m[3] !== undefined ? (m[4] ?? "") : (m[5] ?? "");
  const isFile = scheme.includes("file");
  if (authority !== null && authority !== "" && isFile) return null;
  if (isFile && path === "") path = "/";
  const query: Record<string, string> = {};
  for (const part of (m[6] ?? "").split("&")) {
    if (part === "") continue;
    const e = part.indexOf("=");
    if (e < 0) continue;
    const v = percentDecode28(part.slice(e + 1));
    if (v === null) return null;
    const k = part.slice(0, e);
    if (!(k in query)) query[k] = v;
  }
  return { scheme, authority, path, query };
}

export interface SshAuthority {
  /** `ssh`, `ssh-ng`, or another scheme (then `valid` says nothing about ssh). */
  scheme: string | null;
  user: string | null;
  /** The host as Nix hands it on: 2.8 keeps any `:port` in it (2.8 has no port support). */
  host: string | null;
  /** HEAD only; 2.8 never parses a port out of the host. */
  port: number | null;
  /** The name Nix writes in front of a pinned host key (2.8: after the last `@`, port kept; HEAD: bare host). */
  hostForKnownHosts: string | null;
  /** 2.8: the host string passed to ssh (`user@host[:port]`, IPv6 brackets removed). */
  sshTarget: string | null;
  valid: boolean;
  /** Nix's error text when not valid. */
  error?: string;
}

/** Longer store URIs are not parsed (a host name has at most 253 characters). */
const MAX_URI = 8192;

function isSshScheme(s: string): boolean {
  return s === "ssh" || s === "ssh-ng";
}

/**
 * The ssh target Nix derives from an `ssh://` / `ssh-ng://` store URI, and whether Nix accepts it.
 * 2.8: `invalid SSH host name '<host>'` when the target is empty or starts with `-` (the whole
 * `user@host` string is checked, so `nix@-x` passes). HEAD: `invalid SSH authority: '<auth>': <reason>`.
 */
export function sshAuthority(storeUri: string, version: NixVersion): SshAuthority {
  const none: SshAuthority = {
    scheme: null,
    user: null,
    host: null,
    port: null,
    hostForKnownHosts: null,
    sshTarget: null,
    valid: true,
  };
  const schemeEnd = storeUri.indexOf("://");
  if (schemeEnd < 0) return none;
  const scheme = storeUri.slice(0, schemeEnd);
  if (!isSshScheme(scheme)) return { ...none, scheme };
  // bounded input: a megabytes-long URI (a 15 MB machines line) overflows the regex engine's stack
  if (storeUri.length > MAX_URI)
    return {
      ...none,
      scheme,
      valid: false,
      error: `the store URI is ${storeUri.length} characters long: not a host`,
    };
  return since(version, NIX.sshPorts) ? sshAuthorityHead(storeUri, scheme) : sshAuthority28(storeUri, scheme);
}

function sshAuthority28(storeUri: string, scheme: string): SshAuthority {
  const parsed = parseUrl28(storeUri);
  if (parsed === null) {
    return {
      scheme,
      user: null,
      host: null,
      port: null,
      hostForKnownHosts: null,
      sshTarget: null,
      valid: false,
      error:
        badParam28(storeUri) !== null
          ? `invalid URI parameter '${badParam28(storeUri)}'`
          : `don't know how to open Nix store '${storeUri}'`,
    };
  }
  let conn = (parsed.authority ?? "") + parsed.path;
  const v6 = /^((.*)@)?\[(.*)\]$/s.exec(conn);
  if (v6) conn = v6[1] !== undefined ? `${v6[1]}${v6[3]}` : v6[3]!;
  const at = conn.lastIndexOf("@");
  const user = at >= 0 ? conn.slice(0, at) : null;
  const host = at >= 0 ? conn.slice(at + 1) : conn;
  const valid = !(conn === "" || conn.startsWith("-"));
  const out: SshAuthority = {
    scheme,
    user,
    host,
    port: null,
    hostForKnownHosts: host,
    sshTarget: conn,
    valid,
  };
  if (!valid) out.error = `invalid SSH host name '${conn}'`;
  return out;
}

function sshAuthorityHead(storeUri: string, scheme: string): SshAuthority {
  let rest = storeUri.slice(scheme.length + 3);
  const q = rest.search(/[?#]/);
  if (q >= 0) rest = rest.slice(0, q);
  const slash = rest.indexOf("/");
  const authority = slash >= 0 ? rest.slice(0, slash) : rest;
  const at = authority.lastIndexOf("@");
  const user = at >= 0 ? authority.slice(0, at) : null;
  let hostPort = at >= 0 ? authority.slice(at + 1) : authority;
  let port: number | null = null;
  let host: string;
  if (hostPort.startsWith("[")) {
    const close = hostPort.indexOf("]");
    host = close >= 0 ? hostPort.slice(1, close) : hostPort.slice(1);
    const after = close >= 0 ? hostPort.slice(close + 1) : "";
    if (/^:\d+$/.test(after)) port = Number(after.slice(1));
  } else if ((hostPort.match(/:/g) ?? []).length > 1) {
    // unbracketed IPv6 (accepted for back-compatibility, no port possible)
    host = hostPort;
  } else {
    const m = /^(.*):(\d*)$/.exec(hostPort);
    if (m) {
      hostPort = m[1]!;
      if (m[2] !== "") port = Number(m[2]);
    }
    host = hostPort;
  }
  const out: SshAuthority = {
    scheme,
    user,
    host,
    port,
    hostForKnownHosts: host,
    sshTarget: user !== null ? `${user}@${host}` : host,
    valid: true,
  };
  const fail = (reason: string): SshAuthority => ({
    ...out,
    valid: false,
    error: `invalid SSH authority: '${authority}': ${reason}`,
  });
  if (user !== null) {
    if (user === "") return fail("user name must not be empty");
    if (user.startsWith("-")) return fail(`user name '${user}' must not start with '-'`);
  }
  if (host === "") return fail("host name must not be empty");
  if (host.startsWith("-")) return fail(`host name '${host}' must not start with '-'`);
  return out;
}

/** True when Nix will not run ssh for this URI at all (2.8: host string exactly `localhost`). */
export function isFakeSsh(storeUri: string, version: NixVersion): boolean {
  const a = sshAuthority(storeUri, version);
  if (!a.valid || a.scheme === null || !isSshScheme(a.scheme)) return false;
  if (since(version, NIX.sshAuthorityLocalhost))
    return a.user === null && a.host === "localhost" && a.port === null;
  if (since(version, NIX.sshPorts)) return a.host === "localhost";
  return a.sshTarget === "localhost";
}

/* ---------- the store URI as the build hook renders it (2.23+) ---------- */

/** `canonPath(absPath(p))` with the working directory `/` (the daemon's, so the hook's). */
function canonAbs(p: string): string {
  const out: string[] = [];
  for (const seg of p.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") out.pop();
    else out.push(seg);
  }
  return `/${out.join("/")}`;
}

/** Nix's `percentEncode(s, ":@/?")` (2.30.5 src/libutil/url.cc): unreserved characters and `:@/?` stay. */
function percentEncodeQuery(s: string): string {
  let res = "";
  for (const byte of Buffer.from(s, "latin1")) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-._~:@/?]/.test(c)) res += c;
    else res += `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return res;
}

/** `decodeQuery` into a std::map: first value wins, a part without `=` is dropped. Null on a bad escape. */
function decodeQueryMap(query: string): Map<string, string> | null {
  const m = new Map<string, string>();
  for (const part of query.split("&")) {
    if (part === "") continue;
    const e = part.indexOf("=");
    if (e < 0) continue;
    const v = percentDecode28(part.slice(e + 1));
    if (v === null) return null;
    const k = part.slice(0, e);
    if (!m.has(k)) m.set(k, v);
  }
  return m;
}

function encodeQueryMap(params: Map<string, string>): string {
  const keys = [...params.keys()].sort(byteOrder);
  return keys.map((k) => `${percentEncodeQuery(k)}=${percentEncodeQuery(params.get(k)!)}`).join("&");
}

function byteOrder(a: string, b: string): number {
  const x = Buffer.from(a, "latin1");
  const y = Buffer.from(b, "latin1");
  return Buffer.compare(x, y);
}

/**
 * The store URI of a machine as the build hook prints and uses it: in `# accept`, in
 * `connecting to '…'`, in the parent's `building '…' on '…'`, and (with `/` as `_`) in the names of the
 * slot lock files under `current-load`. `uri` is column 1 after `normaliseStoreUri`.
 *
 * Up to 2.22 the hook uses the text as written. From 2.23 (`Machine` holds a `StoreReference`,
 * `2.23.0:src/libstore/machines.cc`) it is `StoreReference::render()` of the parsed reference
 * (`2.30.5:src/libstore/store-reference.cc`, `src/libutil/url.cc`):
 * * a path (`/tmp/m`, with a `/` but no `://`) becomes `local://` + the canonical absolute path
 *   (`//`, `.`, `..` and a final `/` go);
 * * `local` → `local://`, `daemon` → `unix://` (2.32 renders them `local` and `daemon` again: modelled);
 * * parameters are decoded, kept in a sorted map (first of two equal names wins; a name without `=` is
 *   dropped) and encoded again: `+` becomes `%2B`, `%2F` becomes `/`;
 * * the path part of a URL is percent-decoded; the authority is kept as written.
 * Checked on real 2.8 and real 2.30 (`test/unit/store-uri-render.test.ts`); 2.32+ modelled.
 * Returns null where Nix cannot parse the reference (it fails before choosing a machine).
 */
export function renderStoreUri(uri: string, version: NixVersion): string | null {
  if (!since(version, NIX.storeReferenceRender)) return uri;
  if (uri.length > MAX_URI) return null;
  const m = URI_2_8.exec(uri);
  if (m) {
    const scheme = m[2]!;
    const authority = m[3] !== undefined ? m[3] : null;
    let path = authority !== null ? (m[4] ?? "") : (m[5] ?? "");
    const plus = scheme.indexOf("+");
    const isFile = (plus >= 0 ? scheme.slice(plus + 1) : scheme) === "file";
    if (authority !== null && authority !== "" && isFile) return fallbackRender(uri, version);
    if (isFile && path === "") path = "/";
    const decodedPath = percentDecode28(path);
    const params = decodeQueryMap(m[6] ?? "");
    if (decodedPath === null || params === null) return fallbackRender(uri, version);
    const q = params.size > 0 ? `?${encodeQueryMap(params)}` : "";
    return `${scheme}://${authority ?? ""}${decodedPath}${q}`;
  }
  return fallbackRender(uri, version);
}

function fallbackRender(uri: string, version: NixVersion): string | null {
  const qi = uri.indexOf("?");
  const base = qi >= 0 ? uri.slice(0, qi) : uri;
  const params = qi >= 0 ? decodeQueryMap(uri.slice(qi + 1)) : new Map<string, string>();
  if (params === null) return null;
  const q = params.size > 0 ? `?${encodeQueryMap(params)}` : "";
  const named = since(version, NIX.storeUriNamedRender);
  if (base === "" || base === "auto") return `auto${q}`;
  if (base === "daemon") return `${named ? "daemon" : "unix://"}${q}`;
  if (base === "local") return `${named ? "local" : "local://"}${q}`;
  if (!base.includes("://") && base.includes("/")) return `local://${canonAbs(base)}${q}`;
  return null;
}

/** The slot lock file name stem for a machine (`lockFileName` of the rendered URI), or null when unparseable. */
export function slotStem(uri: string, version: NixVersion): string | null {
  const r = renderStoreUri(uri, version);
  return r === null ? null : lockFileName(r);
}

/** Longest file name (bytes) Linux file systems take (NAME_MAX); a longer one fails with ENAMETOOLONG. */
export const NAME_MAX = 255;

/**
 * The name of a machine's first slot lock file (`<stem>-0`) when it is longer than a file name may be,
 * else null. The hook opens that file for every machine of the right type with a slot, so it dies with
 * `opening lock file '…': File name too long`. The threshold depends on the version: 2.23+ names the
 * file after the rendered URI (parameters sorted and re-encoded). Null too when the version cannot parse
 * the URI (its hook never gets to the lock).
 */
export function overlongSlotName(uri: string, version: NixVersion): string | null {
  const stem = slotStem(uri, version);
  if (stem === null) return null;
  const name = `${stem}-0`;
  return new TextEncoder().encode(name).length > NAME_MAX ? name : null;
}

/**
 * The machines-file URIs that Nix prints as `printed` (in `building '…' on '…'`, `# accept`,
 * `cannot build on '…'`): the ones written that way, or (2.23+) rendered that way. Several rows can
 * share one printed URI (`/tmp/m` and `local:///tmp/m`); they come back in file order.
 */
export function machinesForPrintedUri<M extends { readonly storeUri: string }>(
  printed: string,
  machines: readonly M[],
  version: NixVersion,
): M[] {
  const exact = machines.filter((m) => m.storeUri === printed);
  if (exact.length > 0 || !since(version, NIX.storeReferenceRender)) return exact;
  return machines.filter((m) => renderStoreUri(m.storeUri, version) === printed);
}

/** True when Nix prints `storeUri` (a machines-file URI) as `printed`. */
export function printsAs(storeUri: string, printed: string, version: NixVersion): boolean {
  return storeUri === printed || renderStoreUri(storeUri, version) === printed;
}
