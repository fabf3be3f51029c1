/**
 * Pure edits of the daemon's nix.conf for `nix-builders hook install / uninstall`. Byte strings as in
 * conf-edit.ts (one char per byte), so every line we do not add comes back exactly as it was.
 */
import { assignedName } from "./conf-edit.js";

export const HOOK_COMMENT = "# added by nix-builders hook install (remove with: nix-builders hook uninstall)";

/** The lines `install` adds, and the separator it needs when the file does not end in a newline. */
export function hookBlock(wrapper: string): string {
  return `${HOOK_COMMENT}\nbuild-hook = ${wrapper}\n`;
}

export type InstallPlan =
  | { kind: "install"; text: string }
  | { kind: "already"; line: number }
  /** Another `build-hook` is set: the wrapper only wraps Nix's default hook. */
  | { kind: "conflict"; line: number; value: string };

function lines(text: string): string[] {
  const ls = text.split("\n");
  if (ls[ls.length - 1] === "") ls.pop();
  return ls;
}

/** The value a line assigns (after `=`, trimmed, without a trailing comment). */
function assignedValue(line: string): string {
  const hash = line.indexOf("#");
  const code = hash >= 0 ? line.slice(0, hash) : line;
  return code.slice(code.indexOf("=") + 1).trim();
}

export function planInstall(text: string, wrapper: string): InstallPlan {
  const ls = lines(text);
  for (let i = ls.length - 1; i >= 0; i--) {
    if (assignedName(ls[i]!) !== "build-hook") continue;
    const value = assignedValue(ls[i]!);
    if (value.split(/[ \t]+/)[0] === wrapper) return { kind: "already", line: i + 1 };
    return { kind: "conflict", line: i + 1, value };
  }
  const sep = text === "" || text.endsWith("\n") ? "" : "\n";
  return { kind: "install", text: text + sep + hookBlock(wrapper) };
}

export type UninstallPlan =
  | { kind: "restore"; text: string }
  | { kind: "not-installed" }
  /** Our lines are there but were changed (we never guess at someone else's edit). */
  | { kind: "changed"; line: number };

/**
 * Undo `install`: the file without our two lines. When the file is exactly what install wrote, the
 * result is the original, byte for byte (including a missing final newline, which `original` tells).
 */
export function planUninstall(text: string, wrapper: string, original: string | null): UninstallPlan {
  const block = hookBlock(wrapper);
  if (original !== null) {
    const sep = original === "" || original.endsWith("\n") ? "" : "\n";
    if (text === original + sep + block) return { kind: "restore", text: original };
  }
  const at = text.indexOf(block);
  if (at >= 0 && (at === 0 || text[at - 1] === "\n")) {
    return { kind: "restore", text: text.slice(0, at) + text.slice(at + block.length) };
  }
  const ls = lines(text);
  const i = ls.indexOf(HOOK_COMMENT);
  if (i >= 0) return { kind: "changed", line: i + 1 };
  return { kind: "not-installed" };
}
