// watch's /metrics as a real Prometheus sees it: Debian's `prometheus`, started here on 127.0.0.1 with
// a private config and data directory, scrapes the watch server (fixture snapshot), and its HTTP API
// answers the values; the example alert rules are loaded into it and select the right series.
// `promtool check metrics` lints the exposition and `promtool check rules` the rules file.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { startWatchServer, type WatchServer } from "../../src/app/watch/http.js";
import { createWatchMetrics } from "../../src/app/watch/metrics.js";
import type { BuilderStatus, WatchSnapshot } from "../../src/app/watch/model.js";
import { type Daemon, freePort, have, run, startDaemon, waitFor } from "../support/bounded.js";
import { fixtureSnapshot } from "../support/watch-snapshots.js";

const RULES = join(import.meta.dirname, "..", "..", "contrib", "prometheus", "nix-builders-alerts.yml");
const SKIP =
  !(have("prometheus") && have("promtool")) && "needs Debian's prometheus (scripts/provision installs it)";

/** A builder label with the characters the text format must escape: a quote and a backslash. */
const ODD = 'ssh://odd"host\\x';

function snapshotWithOdd(now: number): WatchSnapshot {
  const s = fixtureSnapshot(now);
  const b3 = s.builders[2]!;
  const odd: BuilderStatus = {
    ...b3,
    builder: ODD,
    line: `${ODD} x86_64-linux - 1`,
    index: 5,
    systems: ["x86_64-linux"],
    probeCounts: { ok: 9 },
    transitions: [],
    transitionCounts: {},
  };
  s.builders.push(odd);
  return s;
}

describe("watch metrics with a real Prometheus", { skip: SKIP }, () => {
  let dir: string;
  let server: WatchServer;
  let prom: Daemon;
  let api: string;
  const now = Date.now();
  let snapshot = snapshotWithOdd(now);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nb-prom-"));
    server = await startWatchServer({ listen: "127.0.0.1:0", snapshot: () => snapshot });
    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    writeFileSync(
      join(dir, "prometheus.yml"),
      [
        "global:",
        "  scrape_interval: 1s",
        "  evaluation_interval: 1s",
        "rule_files:",
        `  - ${JSON.stringify(RULES)}`,
        "scrape_configs:",
        "  - job_name: nix-builders-watch",
        "    static_configs:",
        `      - targets: ["127.0.0.1:${server.address.port}"]`,
        "",
      ].join("\n"),
    );
    prom = startDaemon(
      "prometheus",
      [
        `--config.file=${join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
        "--log.level=warn",
      ],
      { deadlineMs: 120_000, cwd: dir },
    );
    await waitFor(
      "prometheus to be ready",
      async () => {
        const r = await fetch(`${api}/-/ready`, { signal: AbortSignal.timeout(2_000) });
        return r.ok ? true : undefined;
      },
      { timeoutMs: 40_000 },
    ).catch((e: Error) => {
      throw new Error(`${e.message}\nprometheus said:\n${prom.output().slice(-2000)}`);
    });
  });

  after(async () => {
    await prom?.stop();
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** An instant query; the result vector (waits until it is not empty). */
  async function query(q: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
    return waitFor(
      `a result for ${q}`,
      async () => {
        const r = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(q)}`, {
          signal: AbortSignal.timeout(5_000),
        });
        const body = (await r.json()) as {
          status: string;
          data: { result: { metric: Record<string, string>; value: [number, string] }[] };
        };
        assert.equal(body.status, "success");
        return body.data.result.length > 0 ? body.data.result : undefined;
      },
      { timeoutMs: 30_000 },
    );
  }

  async function value(q: string): Promise<number> {
    const r = await query(q);
    assert.equal(r.length, 1, `${q}: ${JSON.stringify(r)}`);
    return Number(r[0]!.value[1]);
  }

  test("the target is up and scraped without error", async () => {
    const targets = await waitFor("an active target that was scraped", async () => {
      const r = await fetch(`${api}/api/v1/targets`, { signal: AbortSignal.timeout(5_000) });
      const body = (await r.json()) as {
        data: { activeTargets: { health: string; lastError: string; scrapeUrl: string }[] };
      };
      const t = body.data.activeTargets;
      return t.length > 0 && t[0]!.health !== "unknown" ? t : undefined;
    });
    assert.equal(targets[0]!.health, "up", targets[0]!.lastError);
    assert.equal(targets[0]!.lastError, "");
    assert.equal(targets[0]!.scrapeUrl, `${server.url}/metrics`);
    assert.equal(await value('up{job="nix-builders-watch"}'), 1);
  });

  test("per-builder series carry the snapshot's values", async () => {
    const b = (builder: string) => `builder=${JSON.stringify(builder)}`;
    assert.equal(await value(`nix_builders_builder_state{${b("ssh://nix@b2.lab")},state="quarantined"}`), 1);
    assert.equal(await value(`nix_builders_builder_state{${b("ssh://nix@b2.lab")},state="up"}`), 0);
    assert.equal(await value(`sum(nix_builders_builder_state{${b("ssh-ng://nix@b1.lab")}})`), 1);
    assert.equal(
      await value(`nix_builders_builder_disposition{${b("ssh://nix@b2.lab")},disposition="held"}`),
      1,
    );
    assert.equal(await value(`nix_builders_consecutive_failures{${b("ssh://nix@b2.lab")}}`), 3);
    assert.equal(await value(`nix_builders_probe_success{${b("ssh://nix@b2.lab")}}`), 0);
    assert.equal(await value(`nix_builders_probe_success{${b("ssh-ng://b3.lab")}}`), 1);
    assert.equal(
      await value(`nix_builders_probe_duration_seconds{${b("ssh://nix@b2.lab")},phase="tcp"}`),
      10,
    );
    assert.equal(await value(`nix_builders_probes_total{${b("ssh://nix@b2.lab")},result="timeout"}`), 5);
    assert.equal(
      await value(
        `nix_builders_state_transitions_total{${b("ssh://nix@b2.lab")},from="suspect",to="quarantined"}`,
      ),
      2,
    );
    const b2 = snapshot.builders[1]!;
    assert.equal(
      await value(`nix_builders_quarantined_until_timestamp_seconds{${b("ssh://nix@b2.lab")}}`),
      b2.quarantinedUntil! / 1000,
    );
    assert.equal(
      await value(`nix_builders_last_success_timestamp_seconds{${b("ssh://nix@b2.lab")}}`),
      b2.lastSuccessAt! / 1000,
    );
    assert.equal(await value(`nix_builders_slots{${b("ssh-ng://nix@b1.lab")}}`), 4);
    assert.equal(await value(`nix_builders_slots_busy{${b("ssh-ng://nix@b1.lab")}}`), 3);
    const info = await query(`nix_builders_builder_info{${b("ssh-ng://nix@b4.lab")}}`);
    assert.deepEqual(
      { v: info[0]!.metric.nix_version, p: info[0]!.metric.protocol, t: info[0]!.metric.trusted },
      { v: "2.24.9", p: "1.37", t: "false" },
    );
    // No label is per derivation: no series has a drv label.
    assert.equal(
      ((await fetch(`${api}/api/v1/label/drv/values`).then((r) => r.json())) as { data: string[] }).data
        .length,
      0,
    );
  });

  test("a store URI with a quote and a backslash survives as the builder label", async () => {
    const r = await query(`nix_builders_probes_total{result="ok",builder=${JSON.stringify(ODD)}}`);
    assert.equal(r[0]!.metric.builder, ODD);
    assert.equal(Number(r[0]!.value[1]), 9);
  });

  test("global series: writes, guards, local fault, routing per system, process metrics", async () => {
    assert.equal(await value("nix_builders_machines_file_writes_total"), 7);
    assert.equal(await value('nix_builders_guard_active{guard="max-quarantined-share"}'), 1);
    assert.equal(await value('nix_builders_guard_active{guard="all-failed"}'), 0);
    assert.equal(await value("nix_builders_local_fault"), 0);
    assert.equal(await value('nix_builders_machines{disposition="held"}'), 2);
    assert.equal(await value('nix_builders_system_available_builders{system="riscv64-linux"}'), 0);
    assert.equal(await value('nix_builders_system_available_builders{system="aarch64-linux"}'), 1);
    assert.ok((await value('process_resident_memory_bytes{job="nix-builders-watch"}')) > 10_000_000);
    assert.ok((await value('nodejs_heap_size_total_bytes{job="nix-builders-watch"}')) > 0);
  });

  test("attribution counters from the recent builds", async () => {
    assert.equal(await value('nix_builders_builds_total{builder="ssh-ng://b3.lab",result="built"}'), 1);
    assert.equal(await value('nix_builders_builds_in_progress{builder="ssh-ng://nix@b1.lab"}'), 1);
    assert.equal(await value('nix_builders_build_duration_seconds_sum{builder="local"}'), 120);
  });

  test("a change in the snapshot shows in the next scrape (a local fault)", async () => {
    snapshot = snapshotWithOdd(now);
    snapshot.localFault = {
      cause: "daemon-unreachable",
      message: "nix-daemon is not running",
      since: Date.now(),
    };
    snapshot.guards = ["local-fault"];
    await query("nix_builders_local_fault == 1");
    await query('nix_builders_guard_active{guard="local-fault"} == 1');
  });

  test("the example alert rules select the held builders and the system nothing serves", async () => {
    const alerts = await waitFor("the rules' pending alerts", async () => {
      const r = await fetch(`${api}/api/v1/alerts`, { signal: AbortSignal.timeout(5_000) });
      const body = (await r.json()) as {
        data: { alerts: { labels: Record<string, string>; state: string }[] };
      };
      const a = body.data.alerts;
      const names = new Set(a.map((x) => x.labels.alertname));
      return names.has("NixBuilderHeld") &&
        names.has("NixBuildersSystemUnavailable") &&
        names.has("NixBuildersWatchLocalFault")
        ? a
        : undefined;
    });
    const held = alerts
      .filter((a) => a.labels.alertname === "NixBuilderHeld")
      .map((a) => a.labels.builder)
      .sort();
    assert.deepEqual(held, ["ssh-ng://nix@b4.lab", "ssh://nix@b2.lab"]);
    const systems = alerts
      .filter((a) => a.labels.alertname === "NixBuildersSystemUnavailable")
      .map((a) => a.labels.system);
    assert.deepEqual(systems, ["riscv64-linux"]);
    // Their `for:` has not elapsed: pending, not firing. The stale-round rule stays silent.
    for (const a of alerts) assert.equal(a.state, "pending", JSON.stringify(a.labels));
    assert.ok(!alerts.some((a) => a.labels.alertname === "NixBuildersWatchStale"));
  });
});

describe("promtool", { skip: SKIP }, () => {
  test("check metrics: the exposition passes the linter (with and without attribution)", async () => {
    for (const recentBuilds of [true, false]) {
      const m = createWatchMetrics({ snapshot: () => fixtureSnapshot(Date.now(), { recentBuilds }) });
      const text = await m.render();
      const r = await run("promtool", ["check", "metrics"], { input: text, timeoutMs: 30_000 });
      assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
      assert.equal(`${r.stdout}${r.stderr}`.trim(), "", "no lint findings");
      assert.equal(text.includes("nix_builders_builds_total"), recentBuilds);
      assert.match(text, /^nodejs_active_handles\{type="/m, "the per-type handle gauges stay");
    }
  });

  test("check metrics fails on a broken exposition (the check can fail)", async () => {
    const r = await run("promtool", ["check", "metrics"], {
      input: "# TYPE nix_builders_x counter\nnix_builders_x 1\n",
      timeoutMs: 30_000,
    });
    assert.notEqual(`${r.stdout}${r.stderr}`.trim(), "");
  });

  test("check rules: the example alert rules are valid", async () => {
    const r = await run("promtool", ["check", "rules", RULES], { timeoutMs: 30_000 });
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /SUCCESS: 4 rules found/);
  });
});
