/**
 * The README's status-page screenshot (docs/watch-status.png), taken from the lab, not from a fixture.
 *
 * Brings the lab up with 4 builders when it has fewer, switches the `down` fault on for b2, and runs the
 * built CLI on the agent machine as root:
 *
 *   node dist/cli.js watch --source <4 builders' machinesLine> --interval 2 --timeout 3 \
 *     --backoff-base 600 --backoff-jitter 0 --listen 127.0.0.1:0 …
 *
 * (a long first backoff, so that b2 is still quarantined when the page is taken). Once b2 is held and the
 * three others are up and have had their remote configuration read, headless Chromium (Debian's `chromium`)
 * takes the page at 1280×1100. It then heals b2, stops watch and leaves the lab up (the caller takes it
 * down). The remote Nix version, trust and latencies on the page are the lab's real ones.
 *
 *   bash -c 'npx tsx bench/watch-screenshot.ts [OUT.png]; test/lab/lab down'
 *
 * OUT defaults to docs/watch-status.png.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { controlRequest } from "../src/app/watch/control.js";
import type { WatchSnapshot } from "../src/app/watch/model.js";

const repo = resolve(import.meta.dirname, "..");
const LAB = `${repo}/test/lab/lab`;
const out = resolve(process.argv[2] ?? `${repo}/docs/watch-status.png`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface LabJson {
  up: boolean;
  agent: { exec: string[] };
  builders: { name: string; address: string; machinesLine: string }[];
}

function lab(args: string[]): string {
  const r = spawnSync(LAB, args, { encoding: "utf8", timeout: 300_000 });
  if (r.status !== 0) throw new Error(`lab ${args.join(" ")}: ${r.status}: ${r.stderr}`);
  return r.stdout;
}

function labStatus(): LabJson | null {
  const r = spawnSync(LAB, ["status", "--json"], { encoding: "utf8", timeout: 180_000 });
  if (r.status !== 0) return null;
  const j = JSON.parse(r.stdout) as LabJson;
  return j.up ? j : null;
}

async function main(): Promise<void> {
  let s = labStatus();
  if (!s || s.builders.length < 4) {
    lab(["up", "--builders", "4"]);
    s = labStatus()!;
  }
  for (const b of s.builders.slice(0, 4)) lab(["heal", b.name]);
  const dir = mkdtempSync(join(tmpdir(), "nb-watch-shot-"));
  chmodSync(dir, 0o755);
  const src = join(dir, "source");
  writeFileSync(
    src,
    `${s.builders
      .slice(0, 4)
      .map((b) => b.machinesLine)
      .join("\n")}\n`,
    { mode: 0o644 },
  );
  const stateDir = join(dir, "state");
  const x = s.agent.exec;
  const argv = [
    ...x.slice(0, -1),
    `--wd=${repo}`,
    x[x.length - 1]!,
    process.execPath,
    "dist/cli.js",
    "watch",
    ...["--source", src, "--output", join(dir, "out", "machines"), "--state-dir", stateDir],
    ...["--interval", "2", "--timeout", "3", "--backoff-base", "600", "--backoff-jitter", "0"],
    ...["--count-window", "0", "--min-write-interval", "0", "--full-every", "1"],
    ...["--listen", "127.0.0.1:0"],
  ];
  let log = "";
  const w: ChildProcess = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
  w.stderr!.on("data", (d: Buffer) => {
    log += d.toString();
  });
  const snap = async (): Promise<WatchSnapshot | null> => {
    try {
      const a = await controlRequest(stateDir, { op: "status" }, 10_000);
      return a.ok ? (a.result as WatchSnapshot) : null;
    } catch {
      return null;
    }
  };
  const until = async (what: string, ok: (x: WatchSnapshot) => boolean, ms: number) => {
    const end = Date.now() + ms;
    for (;;) {
      const v = await snap();
      if (v && ok(v)) return v;
      if (w.exitCode !== null || Date.now() > end)
        throw new Error(`${what}: not reached\n${log.slice(-3000)}`);
      await sleep(500);
    }
  };
  try {
    await until(
      "every builder up",
      (v) => v.builders.length === 4 && v.builders.every((b) => b.state === "up"),
      120_000,
    );
    const b2 = s.builders[1]!;
    lab(["fault", b2.name, "down"]);
    await until(
      "b2 quarantined",
      (v) => v.builders.some((b) => b.builder.includes(`@${b2.address}`) && b.state === "quarantined"),
      60_000,
    );
    const url = /listening on (http:\/\/\S+)/.exec(log)?.[1];
    if (!url) throw new Error(`no URL in watch's log:\n${log}`);
    const profile = join(dir, "chromium");
    const r = spawnSync(
      "chromium",
      [
        "--headless",
        ...(process.getuid?.() === 0 ? ["--no-sandbox"] : []),
        "--disable-gpu",
        `--user-data-dir=${profile}`,
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-breakpad",
        "--hide-scrollbars",
        "--virtual-time-budget=3000",
        "--window-size=1280,1100",
        `--screenshot=${out}`,
        `${url}/`,
      ],
      { encoding: "utf8", timeout: 60_000, env: { ...process.env, HOME: dir } },
    );
    if (r.status !== 0) throw new Error(`chromium: ${r.status}: ${r.stderr.slice(-2000)}`);
    const png = readFileSync(out);
    if (png.readUInt32BE(16) !== 1280) throw new Error("not a 1280-wide PNG");
    process.stderr.write(`watch-screenshot: ${out} (${png.length} bytes) from ${url}/\n`);
    lab(["heal", b2.name]);
  } finally {
    if (w.exitCode === null) {
      w.kill("SIGTERM");
      await Promise.race([new Promise((r) => w.once("exit", r)), sleep(10_000)]);
      if (w.exitCode === null) w.kill("SIGKILL");
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`watch-screenshot: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(2);
});
