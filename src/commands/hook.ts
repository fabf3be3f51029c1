/**
 * `nix-builders hook install | uninstall | path`: the build-hook wrapper that records which builder built
 * what (docs/attribution.md). The wrapper itself is libexec/build-hook; Nix runs it, not this command.
 */
import type { Command } from "commander";
import {
  HookRefusal,
  type HookResult,
  installHook,
  uninstallHook,
  wrapperPath,
} from "../app/hook-install.js";
import { EXIT, type Io, json, Refusal } from "./io.js";

function render(r: HookResult, io: Io, asJson: boolean): void {
  if (asJson) {
    io.out(json(r));
    return;
  }
  const what = {
    installed: `${r.conf}: build-hook = ${r.wrapper}`,
    "already-installed": `${r.conf}: build-hook is already ${r.wrapper}; nothing changed`,
    uninstalled: `${r.conf}: the build-hook line of hook install removed`,
    "not-installed": `${r.conf}: hook install's lines are not there; nothing changed`,
  }[r.action];
  io.out(`${what}\n`);
  if (r.daemonEnvironment)
    io.out(
      `This Nix (2.25 or newer) replaces a build-hook of the system nix.conf with its own when it starts: give nix-daemon this environment too (a systemd drop-in's Environment=): ${r.daemonEnvironment}\n`,
    );
  if (r.restartNeeded)
    io.out("The Nix daemon reads nix.conf when it starts: restart it (systemctl restart nix-daemon).\n");
}

async function run(f: () => Promise<HookResult>, io: Io, asJson: boolean): Promise<number> {
  try {
    render(await f(), io, asJson);
    return EXIT.ok;
  } catch (e) {
    if (e instanceof HookRefusal) throw new Refusal(e.message, { path: e.path });
    throw e;
  }
}

export function register(program: Command, io: Io, exit: (code: number) => void): void {
  const hook = program
    .command("hook")
    .description("the build-hook wrapper that records which builder built what (install, uninstall, path)");
  hook
    .command("install")
    .description("set build-hook in the daemon's nix.conf to the wrapper (the daemon must restart)")
    .option("--json", "print one JSON document")
    .action(async (o: { json?: boolean }) => exit(await run(() => installHook(io.env), io, Boolean(o.json))));
  hook
    .command("uninstall")
    .description("remove what hook install added to the daemon's nix.conf")
    .option("--json", "print one JSON document")
    .action(async (o: { json?: boolean }) =>
      exit(await run(() => uninstallHook(io.env), io, Boolean(o.json))),
    );
  hook
    .command("path")
    .description(
      'print the wrapper\'s path (try it: nix-build --option build-hook "$(nix-builders hook path)")',
    )
    .option("--json", "print one JSON document")
    .action((o: { json?: boolean }) => {
      io.out(o.json ? json({ path: wrapperPath() }) : `${wrapperPath()}\n`);
      exit(EXIT.ok);
    });
}
