/**
 * `nix-builders report`: the support bundle (docs/report.md). It is the host snapshot of one user's view
 * (src/app/snapshot.ts), recorded while show, lint and route's context resolve it, plus the build slots
 * in use and, with `--agent`, what the agent selection found. `--from FILE` reads one back: the same
 * resolution then answers from the bundle instead of this machine.
 */
import { statSync } from "node:fs";
import { join } from "node:path";
import { isNixRelevantEnv } from "../agent/discover.js";
import { writePrivateFile } from "../host/cache.js";
import { type CurrentLoad, readCurrentLoad } from "../host/current-load.js";
import type { HostSnapshot } from "../nix/snapshot.js";
import { type AgentReport, agentCaches, agentReport, type MtimeOf } from "./agent-checks.js";
import { type AgentOptions, type AgentSelection, selectAgent } from "./agent-select.js";
import { Refusal, UsageError } from "./io.js";
import { lint } from "./lint.js";
import { routeContext } from "./route-context.js";
import { readBundle, readHostSnapshot } from "./snapshot.js";
import { bundleView, nixContext, type UserView, viewOf } from "./view.js";

export interface ReportOptions extends AgentOptions {
  user?: string;
  output?: string;
}

/** What `--agent` found, as kept in a bundle (no process environment, only Nix's variables). */
export interface BundleAgent {
  selection: Omit<AgentSelection, "runtime" | "config"> & {
    config: { file: string; format: string; config: unknown; findings: unknown[] } | null;
    runtime?: { pid: number | null; startedAt: string | null; findings: unknown[] };
  };
  caches: Awaited<ReturnType<typeof agentCaches>> | null;
  /** mtime (ms) of the files the restart check compares with the agent's start, by path. */
  mtimes: Record<string, number | null>;
}

function nixEnvOnly(env: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter(([k]) => isNixRelevantEnv(k)));
}

/** The selection as plain data: Dates as ISO text, no process environment, no config input or line map. */
function bundleSelection(sel: AgentSelection): BundleAgent["selection"] {
  const { runtime, config, ...rest } = sel;
  const environment = Object.fromEntries(
    Object.entries(sel.agent.environment).filter(([k]) => isNixRelevantEnv(k)),
  );
  return {
    ...rest,
    agent: { ...sel.agent, environment },
    userEnv: nixEnvOnly(sel.userEnv),
    config: config
      ? { file: config.file, format: config.format, config: config.config, findings: [...config.findings] }
      : null,
    ...(runtime
      ? {
          runtime: {
            pid: runtime.pid,
            startedAt: runtime.startedAt?.toISOString() ?? null,
            findings: [...runtime.findings],
          },
        }
      : {}),
  };
}

/** A bundle's selection back as the agent checks take it. */
export function selectionFromBundle(b: BundleAgent): AgentSelection {
  const { runtime, config, ...rest } = b.selection;
  return {
    ...rest,
    config: config
      ? ({ ...config, input: {}, keyLines: new Map() } as unknown as AgentSelection["config"])
      : null,
    ...(runtime
      ? {
          runtime: {
            pid: runtime.pid,
            environ: null,
            startedAt: runtime.startedAt === null ? null : new Date(runtime.startedAt),
            findings: runtime.findings as never[],
          },
        }
      : {}),
  } as AgentSelection;
}

/** Take the bundle of `opts.user`'s view (or the agent's) on this machine. */
export async function takeReport(opts: ReportOptions, env: NodeJS.ProcessEnv): Promise<HostSnapshot> {
  const sel = selectAgent(opts);
  if (sel && opts.user && opts.user !== sel.user)
    throw new UsageError(`--user ${opts.user} and --agent (user ${sel.user}) name different users`);
  const ctx = await nixContext(undefined);
  const snap = await readHostSnapshot(
    {
      user: sel ? sel.user : opts.user,
      env,
      ...(sel ? { userEnv: sel.userEnv, clientOverrides: sel.overrides } : {}),
    },
    ctx,
    { record: true },
  );
  const v = viewOf(snap, ctx);
  // lint reads what show does and more (conf files for syntax, the default machines file, key facts)
  await lint({}, env, v);
  snap.data.load = slotsInUse(v);
  if (sel) {
    const caches = (await agentCaches(sel)) ?? null;
    const mtimes: Record<string, number | null> = {};
    const root = sel.root ?? "/";
    const mtime: MtimeOf = (path) => {
      let m: number | null = null;
      try {
        m = statSync(join(root, path)).mtimeMs;
      } catch {
        m = null;
      }
      mtimes[path] = m;
      return m;
    };
    agentReport(v, sel, caches ?? undefined, mtime);
    const agent: BundleAgent = { selection: bundleSelection(sel), caches, mtimes };
    snap.data.agent = agent;
  }
  return snap.data;
}

/** The build slots in use now, for route (null when the store cannot be located). */
function slotsInUse(v: UserView): CurrentLoad | null {
  try {
    const rc = routeContext(v);
    return readCurrentLoad(rc.machines, { stateDir: rc.store.stateDir, version: rc.version });
  } catch {
    return null;
  }
}

/** Write the bundle privately (0600, a new file renamed into place: a link at `path` is replaced, never followed). */
export function writeReport(path: string, text: string): void {
  if (!writePrivateFile(path, text))
    throw new Refusal(`${path}: cannot write the report there (a missing or unwritable directory?)`, {
      path,
    });
}

/** `--from FILE`: what a command needs from a bundle, checked against its other flags. */
export interface FromBundle {
  data: HostSnapshot;
  view: UserView;
  /** The agent selection and report the bundle holds, when it was taken with `--agent`. */
  agent: { sel: AgentSelection; report: AgentReport } | null;
}

/** Read a bundle and resolve its view; `user`, when given, must be the bundle's user. */
export function fromBundle(
  path: string,
  opts: { user?: string; nixVersion?: string; builders?: string; agent?: boolean | string },
): FromBundle {
  if (opts.builders !== undefined)
    throw new UsageError(
      "--from: --builders cannot be used with a report (its files are those it was taken with)",
    );
  const data = readBundle(path);
  if (opts.user !== undefined && opts.user !== data.user.name && opts.user !== String(data.user.uid))
    throw new UsageError(`--from: the report is of user ${data.user.name}, not ${opts.user}`);
  const view = bundleView(data, opts.nixVersion);
  let agent: FromBundle["agent"] = null;
  if (opts.agent) {
    const b = data.agent as BundleAgent | undefined;
    if (!b) throw new UsageError("--from: the report was taken without --agent");
    const sel = selectionFromBundle(b);
    const report = agentReport(view, sel, b.caches ?? undefined, (p) => b.mtimes[p] ?? null);
    agent = { sel, report };
  }
  return { data, view, agent };
}
