/**
 * watch's source: the machines a user's Nix would use, as `show` computes them (the daemon's `builders`,
 * or an agent's), or a file named with `--source`. Read afresh every round, so an edit of the source is
 * picked up without a restart. Each line is kept byte for byte; the machines on it are parsed with the
 * installed Nix's rules (src/nix/machines.ts).
 */
import { statSync } from "node:fs";
import { parseBuilders, type Reader } from "../../nix/machines.js";
import { sshAuthority } from "../../nix/store-uri.js";
import type { NixVersion } from "../../nix/version.js";
import { readBounded } from "../../os/read.js";
import type { Source, SourceMachine, SourceProvider } from "./engine.js";
import type { SourceLine, SourceText } from "./writer.js";
import { sameFile } from "./writer.js";

/** Includes are not followed inside a watched file: such a line is copied as is and not watched. */
const NO_INCLUDES: Reader = { read: () => ({ ok: false, code: "ENOENT" }) };

/** Split a machines text into lines and the machines each defines. */
export function parseSourceText(
  text: string,
  version: NixVersion,
  defaultSystem: string,
  file: string | null,
): { text: SourceText; machines: SourceMachine[] } {
  const trailingNewline = text.endsWith("\n");
  const raws = text === "" ? [] : (trailingNewline ? text.slice(0, -1) : text).split("\n");
  const lines: SourceLine[] = [];
  const machines: SourceMachine[] = [];
  const seen = new Set<string>();
  raws.forEach((raw, i) => {
    const r =
      raw.trimStart().startsWith("@") || raw.trim() === ""
        ? null
        : parseBuilders({
            spec: raw,
            version,
            defaultSystem,
            fs: NO_INCLUDES,
            cwd: "/",
            origin: { file, line: i + 1 },
          });
    const ok = r !== null && r.error === null ? r.machines : [];
    const builders: string[] = [];
    for (const m of ok) {
      // A second line for the same store URI is copied as is: the state is per store URI.
      if (seen.has(m.storeUri)) continue;
      seen.add(m.storeUri);
      builders.push(m.storeUri);
      const a = sshAuthority(m.storeUri, version);
      const aliases = [
        a.host,
        a.sshTarget,
        a.user !== null && a.host !== null ? `${a.user}@${a.host}` : null,
      ].filter((x): x is string => typeof x === "string" && x !== "");
      machines.push({
        storeUri: m.storeUri,
        line: raw,
        index: i,
        systems: [...m.systemTypes],
        supportedFeatures: [...m.supportedFeatures],
        mandatoryFeatures: [...m.mandatoryFeatures],
        maxJobs: m.maxJobs,
        aliases,
      });
    }
    // Keep line ↔ machine positions aligned for holdLine: a line whose machines did not all register is
    // copied as is.
    lines.push({ raw, builders: builders.length === ok.length ? builders : [] });
  });
  return { text: { lines, trailingNewline }, machines };
}

/** A refusal-shaped error: one line naming the file. */
export class SourceError extends Error {
  constructor(
    readonly path: string,
    reason: string,
  ) {
    super(`${path}: ${reason}`);
    this.name = "SourceError";
  }
}

/**
 * The source file must be ours (root's) and writable by nobody else: its lines become root's machines
 * file. Returns the reason when it is not, or null.
 */
export function unsafeSource(file: string): string | null {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(file);
  } catch (e) {
    return `cannot be read (${(e as NodeJS.ErrnoException).code ?? "error"})`;
  }
  const me = process.geteuid?.() ?? 0;
  if (!st.isFile()) return "is not a regular file";
  if (st.uid !== 0 && st.uid !== me)
    return `is owned by uid ${st.uid}; watch only uses a source owned by root`;
  if ((Number(st.mode) & 0o022) !== 0)
    return `is writable by group or others (mode ${(Number(st.mode) & 0o7777).toString(8)}); watch refuses it`;
  return null;
}

/** A machines file, read every round. */
export function fileSource(
  file: string,
  output: string,
  version: NixVersion,
  defaultSystem: string,
): SourceProvider {
  return {
    async read(): Promise<Source> {
      if (sameFile(file, output))
        throw new SourceError(file, `is the output (${output}); watch would read its own output`);
      const why = unsafeSource(file);
      if (why) throw new SourceError(file, why);
      const r = readBounded(file);
      if (!r.ok) throw new SourceError(file, `cannot be read (${r.code}${r.detail ? `: ${r.detail}` : ""})`);
      const p = parseSourceText(r.text, version, defaultSystem, file);
      return { path: file, ...p };
    },
  };
}
