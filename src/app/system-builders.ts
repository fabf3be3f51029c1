/**
 * The builders the system gives every user (the daemon's own view, or without a daemon the system
 * nix.conf): what `use` picks from and what `verify` checks against.
 */
import { nodeFileReader } from "../host/fs-reader.js";
import { type BuildersResult, parseBuilders } from "../nix/machines.js";
import type { Origin } from "../nix/origin.js";
import { loadUserConfig, settingText, type UserView } from "./view.js";

/** The builders the system gives every user: the daemon's own view, or (no daemon) the system nix.conf. */
export function systemBuilders(v: UserView): {
  value: string;
  origin: Origin[];
  result: BuildersResult;
  where: string;
} {
  let setting = v.daemon?.settings.get("builders");
  let where = "the nix-daemon's configuration";
  if (v.storeMode !== "daemon") {
    const sys = loadUserConfig(v, v.user, { ...v.env, NIX_USER_CONF_FILES: "", NIX_CONFIG: undefined });
    setting = sys.settings.get("builders");
    where = "the system nix.conf";
  }
  const value = settingText(setting?.value ?? "");
  const origin = setting?.origin ?? [{ kind: "default" as const }];
  const last = origin[origin.length - 1];
  const result = parseBuilders({
    spec: value,
    version: v.version,
    defaultSystem: v.hookSystem,
    fs: nodeFileReader,
    cwd: "/",
    origin: last && last.kind === "file" ? { file: last.file, line: last.line } : { file: null, line: null },
  });
  return { value, origin, result, where };
}
