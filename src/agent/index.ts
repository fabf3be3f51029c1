/** Everything nix-builders knows about hercules-ci-agent. See docs/agent.md. */
export * from "./advertise.js";
export * from "./caches.js";
export * from "./checks.js";
export * from "./config.js";
export * from "./discover.js";
export * from "./findings.js";
export { FsRoot, lookupPasswd, type PasswdEntry } from "./fsroot.js";
export * from "./install.js";
export { PlistError, type PlistValue, parsePlist, splitShellCommands } from "./launchd.js";
export * from "./native-offload.js";
export * from "./nix-settings.js";
export {
  type ExecCommand,
  parseEnvironmentFile,
  parseExecCommand,
  parseUnitText,
  type ServiceSettings,
  type UnitEntry,
} from "./systemd.js";
