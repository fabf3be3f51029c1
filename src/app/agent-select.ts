/**
 * `--agent` / `--agent-config FILE`: pick the hercules-ci-agent instance whose view a command shows,
 * and turn it into what the per-user view needs: the service user, the environment its unit gives it,
 * and its `nixSettings` as client overrides.
 */
import {
  type AgentConfigResult,
  type AgentFinding,
  agentEnvironment,
  agentNixOverrides,
  type DiscoveredAgent,
  discoverAgents,
  loadAgentConfig,
  manualAgent,
} from "../agent/index.js";
import type { Origin } from "../nix/origin.js";
import { UsageError } from "./io.js";

export interface AgentOptions {
  agent?: boolean | string;
  agentConfig?: string;
  /** Root directory for discovery (tests); default "/". */
  agentRoot?: string;
}

export interface AgentSelection {
  agent: DiscoveredAgent;
  config: AgentConfigResult | null;
  user: string;
  userEnv: Record<string, string>;
  overrides: { name: string; value: string; origin: Origin }[];
  findings: AgentFinding[];
  /** Other instances that were found but not chosen. */
  others: string[];
}

export const DEFAULT_AGENT_USER = "hercules-ci-agent";

/**
 * Resolve the agent the options name; null when neither --agent nor --agent-config was given, or (with
 * `orNone`) when a bare --agent finds no service definition at all.
 */
export function selectAgent(opts: AgentOptions, how: { orNone?: boolean } = {}): AgentSelection | null {
  if (!opts.agent && !opts.agentConfig) return null;
  const root = opts.agentRoot ?? "/";
  let agent: DiscoveredAgent;
  let others: string[] = [];
  if (opts.agentConfig) {
    agent = manualAgent(opts.agentConfig, {
      root,
      user: typeof opts.agent === "string" ? opts.agent : DEFAULT_AGENT_USER,
    });
  } else {
    const found = discoverAgents({ root });
    if (found.length === 0 && how.orNone && opts.agent === true) return null;
    if (found.length === 0)
      throw new UsageError(
        "no hercules-ci-agent service found (systemd units hercules-ci-agent*.service, launchd plists); " +
          "name the agent's configuration with --agent-config FILE",
      );
    const wanted = typeof opts.agent === "string" ? opts.agent : null;
    const pick =
      (wanted && found.find((a) => a.name === wanted || a.instance === wanted || a.user === wanted)) ||
      found.find((a) => a.instance === "") ||
      found[0]!;
    if (wanted && !(pick.name === wanted || pick.instance === wanted || pick.user === wanted))
      throw new UsageError(
        `no hercules-ci-agent instance named '${wanted}' (found: ${found.map((a) => a.name).join(", ")})`,
      );
    agent = pick;
    others = found.filter((a) => a !== pick).map((a) => a.name);
  }
  const findings: AgentFinding[] = [...agent.findings];
  let config: AgentConfigResult | null = null;
  if (agent.configFile) {
    try {
      config = loadAgentConfig(agent.configFile, { root });
      findings.push(...config.findings);
    } catch (e) {
      findings.push({
        id: "agent-config-unreadable",
        severity: "error",
        message: e instanceof Error ? e.message : String(e),
        fix: "fix the agent configuration file so that the agent can parse it",
        file: agent.configFile,
      } as AgentFinding);
    }
  }
  const nixSettings = config?.config?.nixSettings ?? {};
  const overrides = agentNixOverrides({ file: agent.configFile ?? "agent config", nixSettings }).map((o) => ({
    name: o.name,
    value: o.value,
    origin: o.origin as Origin,
  }));
  return {
    agent,
    config,
    user: agent.user ?? DEFAULT_AGENT_USER,
    userEnv: agentEnvironment(agent),
    overrides,
    findings,
    others,
  };
}
