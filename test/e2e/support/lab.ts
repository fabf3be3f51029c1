// Helpers for end-to-end tests on the lab (test/lab/lab, docs/lab.md).
// The lab is brought up once and reused by every test file: `ensureLab()` checks `lab status --json`.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const LAB = path.join(REPO, "test/lab/lab");

export interface LabBuilder {
  name: string;
  address: string;
  hostAddress: string;
  sshUser: string;
  keyPath: string;
  storeUri: string;
  storeUriNg: string;
  /** storeUri with ?ssh-key=…&base64-ssh-public-host-key=… (usable with --store on the agent machine). */
  storeUriPinned: string;
  storeUriNgPinned: string;
  systems: string[];
  nativeSystem: string;
  features: string[];
  hostKey: string;
  hostKeyBase64: string;
  machinesLine: string;
  machinesLineNg: string;
  /** The Nix release this builder runs ("2.8" or "2.30"; absent from older labs = "2.8"). */
  nix?: string;
  netns: string;
  mountNs: string;
  faults: string[];
  /** argv prefix that runs a command on this builder, as root. */
  exec: string[];
}

export interface LabStatus {
  up: true;
  stateDir: string;
  busybox: string;
  faultsKnown: string[];
  agent: {
    user: string;
    home: string;
    /** The Nix release the agent machine runs ("2.8" or "2.30"). */
    nix?: string;
    /** argv prefix that runs a command on the agent machine, as root ([] would mean: the host itself). */
    exec: string[];
    /** argv prefix that runs a command on the agent machine as the agent user. */
    execAsUser: string[];
    system: string;
    trusted: boolean;
    systemBuilders: boolean;
    nixConf: string;
    machinesFile: string;
    keyPath: string;
    agentConfig: string;
    unit: string;
    mountNs: string;
    hostRoot: string;
  };
  builders: LabBuilder[];
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Why the lab cannot run here, or null when it can. Use as `{ skip: labSkipReason() }`. */
export function labSkipReason(): string | false {
  if (process.platform !== "linux") return "the lab needs Linux";
  if (process.getuid?.() !== 0) return "the lab needs root";
  for (const tool of ["nix-daemon", "sshd", "nsenter", "ip"]) {
    const r = spawnSync("sh", ["-c", `command -v ${tool} || test -x /usr/sbin/${tool}`]);
    if (r.status !== 0) return `the lab needs ${tool}`;
  }
  return false;
}

function run(argv: string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}) {
  const r = spawnSync(argv[0]!, argv.slice(1), {
    input: opts.input ?? "",
    encoding: "utf8",
    timeout: opts.timeoutMs ?? 120_000,
    maxBuffer: 64 * 1024 * 1024,
    env: opts.env ?? process.env,
  });
  if (r.error && (r.error as NodeJS.ErrnoException).code !== "ETIMEDOUT") throw r.error;
  return { code: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "" } satisfies RunResult;
}

/** Run `test/lab/lab ARGS…`; throws with its stderr unless it exits 0 (or `allowFail`). */
export function lab(args: string[], opts: { allowFail?: boolean; timeoutMs?: number } = {}): RunResult {
  const r = run([LAB, ...args], { timeoutMs: opts.timeoutMs ?? 180_000 });
  if (r.code !== 0 && !opts.allowFail) {
    throw new Error(`lab ${args.join(" ")} exited ${r.code}:\n${r.stderr}${r.stdout}`);
  }
  return r;
}

/** The running lab, or null when it is down. */
export function labStatus(): LabStatus | null {
  const r = lab(["status", "--json"], { allowFail: true });
  if (r.code !== 0) return null;
  const s = JSON.parse(r.stdout) as LabStatus | { up: false };
  return s.up ? s : null;
}

/**
 * The Nix releases a lab spec asks for: `2.8`, `2.30`, or `agent=V,builders=V` (the `--nix` of `lab up`).
 * Default: env NIX_BUILDERS_LAB_NIX, else 2.8.
 */
export function labNix(spec: string = process.env.NIX_BUILDERS_LAB_NIX || "2.8"): {
  agent: string;
  builders: string;
} {
  if (spec === "2.8" || spec === "2.30") return { agent: spec, builders: spec };
  const out = { agent: "2.8", builders: "2.8" };
  for (const part of spec.split(",")) {
    const [k, v] = part.split("=");
    if ((k === "agent" || k === "builders") && (v === "2.8" || v === "2.30")) out[k] = v;
    else throw new Error(`NIX_BUILDERS_LAB_NIX: not 2.8, 2.30 or agent=V,builders=V: ${spec}`);
  }
  return out;
}

/** Does the running lab run the releases `spec` asks for? */
export function labRuns(s: LabStatus, spec?: string): boolean {
  const want = labNix(spec);
  return (s.agent.nix ?? "2.8") === want.agent && s.builders.every((b) => (b.nix ?? "2.8") === want.builders);
}

/**
 * Bring the lab up once and reuse it across test files. A running lab with at least `builders`
 * builders (default: env NIX_BUILDERS_LAB_BUILDERS, else 2) that runs the Nix releases asked for
 * (env NIX_BUILDERS_LAB_NIX, see `labNix`) is reused after healing every fault and resetting the agent
 * machine's nix.conf (trusted user, system builders); otherwise `lab up` makes one.
 */
export function ensureLab(opts: { builders?: number; nix?: string } = {}): LabStatus {
  const want = opts.builders ?? Number(process.env.NIX_BUILDERS_LAB_BUILDERS ?? 2);
  const nix = opts.nix ?? (process.env.NIX_BUILDERS_LAB_NIX || "2.8");
  labNix(nix);
  let s = labStatus();
  if (s && !labRuns(s, nix)) s = null;
  if (s && s.builders.length >= want) {
    for (const b of s.builders) if (b.faults.length > 0) lab(["heal", b.name]);
    if (!s.agent.trusted || !s.agent.systemBuilders) {
      lab(["agent-conf", "--trusted", "yes", "--system-builders", "yes"]);
    }
    s = labStatus();
  }
  if (!s || s.builders.length < want) {
    lab(["up", "--builders", String(want), "--nix", nix]);
    s = labStatus();
  }
  if (!s) throw new Error("lab up succeeded but lab status says the lab is down");
  return s;
}

let agentExec: string[] | undefined;

/**
 * Run argv on the agent machine, as root or as `user` (with that user's HOME, USER, PATH, groups).
 * The working directory is / unless `cwd` is given (a path as the agent machine sees it).
 */
export function labExec(
  argv: string[],
  opts: { user?: string; input?: string; timeoutMs?: number; cwd?: string } = {},
): RunResult {
  if (!agentExec) {
    const s = labStatus();
    if (!s) throw new Error("the lab is down");
    agentExec = s.agent.exec; // the same for every lab (a fixed path under the state dir)
  }
  const prefix = [...agentExec];
  if (opts.cwd) prefix.splice(prefix.length - 1, 0, `--wd=${opts.cwd}`);
  if (opts.user && opts.user !== "root") {
    prefix.push(
      "setpriv",
      `--reuid=${opts.user}`,
      `--regid=${opts.user}`,
      "--init-groups",
      "--reset-env",
      "--",
    );
  }
  return run([...prefix, ...argv], { input: opts.input, timeoutMs: opts.timeoutMs });
}

/** Run argv on a builder, as root (for inspecting it; tests of the tool should go through ssh). */
export function builderExec(b: LabBuilder, argv: string[], opts: { timeoutMs?: number } = {}): RunResult {
  return run([...b.exec, ...argv], { timeoutMs: opts.timeoutMs });
}

/**
 * Plain ssh from the agent machine's root to a builder, as the machines line says: its user, key and
 * pinned host key (8th column, as a throwaway known_hosts file). No StrictHostKeyChecking=no.
 */
export function rawSsh(
  b: LabBuilder,
  command: string,
  opts: { connectTimeoutSec?: number; timeoutMs?: number; machinesLine?: string } = {},
): RunResult {
  const cols = (opts.machinesLine ?? b.machinesLine).split(/\s+/);
  const pinned = Buffer.from(cols[7]!, "base64").toString("utf8").trim();
  // /tmp is shared by the host and the agent machine.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "lab-ssh-"));
  const kh = path.join(dir, "known_hosts");
  try {
    fs.writeFileSync(kh, `${b.address} ${pinned}\n`);
    return labExec(
      [
        "ssh",
        "-i",
        cols[2]!,
        "-o",
        "BatchMode=yes",
        "-o",
        `ConnectTimeout=${opts.connectTimeoutSec ?? 5}`,
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        `UserKnownHostsFile=${kh}`,
        `${b.sshUser}@${b.address}`,
        command,
      ],
      { timeoutMs: opts.timeoutMs ?? 60_000 },
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A Nix expression for a derivation that nobody has built before, built with the lab's static busybox. */
export function nonceDrvExpr(
  s: LabStatus,
  opts: { system?: string; requiredSystemFeatures?: string[]; script?: string } = {},
): { expr: string; nonce: string } {
  const nonce = randomBytes(8).toString("hex");
  const script = opts.script ?? `echo ${nonce} > $out`;
  const features = opts.requiredSystemFeatures
    ? ` requiredSystemFeatures = ${JSON.stringify(opts.requiredSystemFeatures).replace(/,/g, " ")};`
    : "";
  const expr =
    `derivation { name = "lab-nonce-${nonce}"; system = ${JSON.stringify(opts.system ?? "aarch64-linux")};` +
    ` builder = "\${builtins.storePath ${JSON.stringify(s.busybox)}}/busybox";` +
    ` args = [ "sh" "-c" ${JSON.stringify(script).replace(/\$\{/g, "\\${")} ];${features} }`;
  return { expr, nonce };
}

/** Nix's own "building '<drv>' on '<uri>'" lines from a build log. */
export function remoteBuildLines(log: string): { drv: string; uri: string }[] {
  return [...log.matchAll(/building '([^']+)' on '([^']+)'/g)].map((m) => ({ drv: m[1]!, uri: m[2]! }));
}
