// The watch HTTP edge on a real socket: the four paths, what else it refuses, its bounds and headers,
// and that the page and JSON show the fixture snapshot (escaped). Prometheus and Chromium look at the
// same server in watch-prometheus.test.ts and watch-chromium.test.ts.
import assert from "node:assert/strict";
import { request } from "node:http";
import { connect } from "node:net";
import { after, before, describe, test } from "node:test";
import {
  DEFAULT_WATCH_PORT,
  parseListen,
  startWatchServer,
  WatchListenError,
  type WatchServer,
} from "../../src/app/watch/http.js";
import type { WatchSnapshot } from "../../src/app/watch/model.js";
import { escapeHtml, renderStatusPage } from "../../src/app/watch/page.js";
import { FIXTURE_NOW, fixtureSnapshot, hostileBuilder } from "../support/watch-snapshots.js";

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One HTTP request with raw control over method, path and headers; 5 s deadline. */
function get(
  server: WatchServer,
  path: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: server.address.host,
        port: server.address.port,
        path,
        method: opts.method ?? "GET",
        headers: opts.headers,
        timeout: 5_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString("utf8"),
          }),
        );
      },
    );
    req.on("timeout", () => req.destroy(new Error(`request to ${path} timed out`)));
    req.on("error", reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

describe("watch HTTP server", () => {
  let server: WatchServer;
  let current: WatchSnapshot = fixtureSnapshot();
  let failing = false;
  before(async () => {
    server = await startWatchServer({
      listen: "127.0.0.1:0",
      snapshot: () => {
        if (failing) throw new Error("secret engine detail /root/.ssh/id_builders");
        return current;
      },
      now: () => FIXTURE_NOW,
      defaultMetrics: false,
    });
  });
  after(async () => {
    await server.close();
  });

  test("binds the address asked, on a real port", () => {
    assert.equal(server.address.host, "127.0.0.1");
    assert.ok(server.address.port > 0);
    assert.equal(server.url, `http://127.0.0.1:${server.address.port}`);
  });

  test("/status.json is the snapshot, byte for byte as JSON", async () => {
    const r = await get(server, "/status.json");
    assert.equal(r.status, 200);
    assert.match(String(r.headers["content-type"]), /^application\/json/);
    assert.deepEqual(JSON.parse(r.body), current);
  });

  test("/ is HTML with every builder, its state, cause, fix, and the routing", async () => {
    const r = await get(server, "/");
    assert.equal(r.status, 200);
    assert.match(String(r.headers["content-type"]), /^text\/html; charset=utf-8/);
    for (const b of current.builders) assert.ok(r.body.includes(escapeHtml(b.builder)), b.builder);
    assert.match(r.body, /id="builder-1"[\s\S]*?badge bad">quarantined</);
    assert.ok(r.body.includes("ssh to b2.lab did not connect within 10 s"));
    assert.ok(r.body.includes("<strong>Fix:</strong> check that b2.lab is up"));
    assert.match(r.body, /<code>riscv64-linux<\/code><\/th><td class="bad">nowhere/);
    assert.ok(!/<script/i.test(r.body), "no script element");
  });

  test("every response forbids scripts and caching, and does not sniff", async () => {
    for (const path of ["/", "/status.json", "/metrics", "/healthz", "/nope"]) {
      const r = await get(server, path);
      const csp = String(r.headers["content-security-policy"]);
      assert.match(csp, /default-src 'none'/, path);
      assert.ok(!csp.includes("script-src"), path);
      assert.equal(r.headers["x-content-type-options"], "nosniff");
      assert.equal(r.headers["cache-control"], "no-store");
    }
  });

  test("/metrics is the Prometheus text format", async () => {
    const r = await get(server, "/metrics");
    assert.equal(r.status, 200);
    assert.match(String(r.headers["content-type"]), /^text\/plain; version=0\.0\.4/);
    assert.match(
      r.body,
      /^nix_builders_builder_state\{builder="ssh:\/\/nix@b2\.lab",state="quarantined"\} 1$/m,
    );
  });

  test("/healthz: 503 before the first round, 200 after", async () => {
    current = { ...fixtureSnapshot(), lastRoundAt: null };
    const before = await get(server, "/healthz");
    assert.equal(before.status, 503);
    assert.equal(before.body, "starting\n");
    current = fixtureSnapshot();
    const afterRound = await get(server, "/healthz");
    assert.equal(afterRound.status, 200);
    assert.equal(afterRound.body, "ok\n");
  });

  test("HEAD answers the headers without a body", async () => {
    const r = await get(server, "/status.json", { method: "HEAD" });
    assert.equal(r.status, 200);
    assert.equal(r.body, "");
    assert.ok(Number(r.headers["content-length"]) > 100);
  });

  test("other paths are 404, other methods 405 with Allow, a body 400", async () => {
    assert.equal((await get(server, "/index.html")).status, 404);
    assert.equal((await get(server, "/status.json/../metrics")).status, 404);
    assert.equal((await get(server, "//metrics")).status, 404);
    const post = await get(server, "/metrics", { method: "POST", body: "x" });
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, "GET, HEAD");
    assert.equal((await get(server, "/", { method: "DELETE" })).status, 405);
    assert.equal((await get(server, "/", { headers: { "content-length": "3" }, body: "abc" })).status, 400);
    // A query string is ignored (Prometheus may add one).
    assert.equal((await get(server, "/metrics?x=1")).status, 200);
  });

  test("a non-loopback Host header is refused (DNS rebinding), loopback names pass", async () => {
    assert.equal((await get(server, "/status.json", { headers: { host: "evil.example:9478" } })).status, 421);
    assert.equal(
      (await get(server, "/status.json", { headers: { host: "127.0.0.1.evil.example" } })).status,
      421,
    );
    for (const host of ["localhost:1", "127.0.0.1", "[::1]:9478", "LOCALHOST"]) {
      assert.equal((await get(server, "/status.json", { headers: { host } })).status, 200, host);
    }
  });

  test("a renderer that throws gives 500 without its message", async () => {
    failing = true;
    try {
      for (const path of ["/", "/status.json", "/metrics", "/healthz"]) {
        const r = await get(server, path);
        assert.equal(r.status, 500, path);
        assert.equal(r.body, "internal error\n");
      }
    } finally {
      failing = false;
    }
  });

  test("headers over the limit get 400 and the connection closes", async () => {
    const r = await get(server, "/", { headers: { "x-big": "a".repeat(20_000) } }).catch((e: Error) => e);
    if (r instanceof Error) assert.match(r.message, /socket hang up|ECONNRESET/);
    else assert.ok([400, 431].includes(r.status), String(r.status));
  });

  test("a client that sends nothing is dropped by the headers deadline, not kept forever", {
    timeout: 20_000,
  }, async () => {
    const t0 = Date.now();
    await new Promise<void>((resolve, reject) => {
      const s = connect(server.address.port, "127.0.0.1");
      s.resume(); // read the 400 the server sends, so that the close comes
      s.on("error", () => resolve());
      s.on("close", () => resolve());
      s.setTimeout(15_000, () => {
        s.destroy();
        reject(new Error("the server kept an idle connection open for 15 s"));
      });
      s.write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"); // never finishes the headers
    });
    assert.ok(Date.now() - t0 < 15_000);
  });
});

describe("startWatchServer", () => {
  test("binds 127.0.0.1 by default and its port is the default", () => {
    assert.deepEqual(parseListen(":9478"), { host: "127.0.0.1", port: DEFAULT_WATCH_PORT });
  });

  test("refuses an address it cannot bind, and close() frees the port", async () => {
    const a = await startWatchServer({
      listen: "127.0.0.1:0",
      snapshot: () => fixtureSnapshot(),
      defaultMetrics: false,
    });
    await assert.rejects(
      startWatchServer({
        listen: { host: "127.0.0.1", port: a.address.port },
        snapshot: () => fixtureSnapshot(),
        defaultMetrics: false,
      }),
      (e: unknown) =>
        e instanceof WatchListenError &&
        e.code === "EADDRINUSE" &&
        e.message ===
          `--listen 127.0.0.1:${a.address.port}: cannot listen: the address is in use (EADDRINUSE)`,
    );
    await a.close();
    const b = await startWatchServer({
      listen: { host: "127.0.0.1", port: a.address.port },
      snapshot: () => fixtureSnapshot(),
      defaultMetrics: false,
    });
    await b.close();
  });

  test("on a non-loopback bind any Host header is answered (Prometheus scrapes by name)", async () => {
    const s = await startWatchServer({
      listen: "0.0.0.0:0",
      snapshot: () => fixtureSnapshot(),
      defaultMetrics: false,
    });
    try {
      const r = await get({ ...s, address: { host: "127.0.0.1", port: s.address.port } }, "/healthz", {
        headers: { host: "agent1.example:9478" },
      });
      assert.equal(r.status, 200);
    } finally {
      await s.close();
    }
  });

  test("parseListen accepts HOST:PORT, [v6]:PORT, :PORT and refuses the rest", () => {
    assert.deepEqual(parseListen("127.0.0.1:9478"), { host: "127.0.0.1", port: 9478 });
    assert.deepEqual(parseListen("[::1]:80"), { host: "::1", port: 80 });
    assert.deepEqual(parseListen("localhost:0"), { host: "localhost", port: 0 });
    assert.deepEqual(parseListen("0.0.0.0:9478"), { host: "0.0.0.0", port: 9478 });
    for (const bad of [
      "9478",
      "127.0.0.1",
      "127.0.0.1:70000",
      "example.com:80",
      "::1:80",
      "[127.0.0.1]:80",
      "-x:1",
      "1.2.3.4:9x",
    ]) {
      assert.throws(
        () => parseListen(bad),
        (e: unknown) => e instanceof WatchListenError && /^--listen /.test(e.message),
        bad,
      );
    }
  });
});

describe("status page", () => {
  test("a machine line with HTML is shown as text, everywhere", () => {
    const html = renderStatusPage(fixtureSnapshot(FIXTURE_NOW, { extraBuilder: hostileBuilder() }), {
      now: FIXTURE_NOW,
    });
    assert.ok(!/<script/i.test(html));
    assert.ok(!/<img/i.test(html));
    assert.ok(html.includes("ssh://x&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;"));
    assert.ok(html.includes("&lt;/p&gt;&lt;script&gt;alert(2)&lt;/script&gt;"));
  });

  test("escapeHtml escapes markup and shows control characters", () => {
    assert.equal(escapeHtml(`<a href='x'>&"`), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;");
    assert.equal(escapeHtml("a\u0000b\u001bc\td"), "a\\x00b\\x1bc\td");
    assert.equal(escapeHtml("x".repeat(3000)).length, 2001);
  });

  test("a local fault and an unreadable source are shown first", () => {
    const s = fixtureSnapshot();
    s.localFault = {
      cause: "daemon-unreachable",
      message: "cannot connect to /nix/var/nix/daemon-socket/socket",
      since: FIXTURE_NOW - 60_000,
    };
    s.source.error = "/etc/nix/machines: Permission denied";
    s.guards = ["local-fault", "never-empty"];
    const html = renderStatusPage(s, { now: FIXTURE_NOW });
    assert.match(
      html,
      /id="local-fault"><strong>Local fault: daemon-unreachable<\/strong> \(since <time[^>]*>60 s ago<\/time>\)/,
    );
    assert.match(
      html,
      /id="source-error"><strong>Source unreadable:<\/strong> \/etc\/nix\/machines: Permission denied/,
    );
    assert.match(html, /<span class="guard">local-fault<\/span> <span class="guard">never-empty<\/span>/);
  });

  test("without attribution records there is no recent-builds section; with them, the builds", () => {
    const without = renderStatusPage(fixtureSnapshot(FIXTURE_NOW, { recentBuilds: false }), {
      now: FIXTURE_NOW,
    });
    assert.ok(!without.includes('id="recent-builds"'));
    const withBuilds = renderStatusPage(fixtureSnapshot(), { now: FIXTURE_NOW });
    assert.match(
      withBuilds,
      /id="recent-builds"[\s\S]*openssl-3\.0\.13\.drv[\s\S]*ssh-ng:\/\/b3\.lab[\s\S]*5 min 0 s/,
    );
  });

  test("transitions are newest first and bounded to 20", () => {
    const s = fixtureSnapshot();
    const b = s.builders[1]!;
    b.transitions = Array.from({ length: 30 }, (_, i) => ({
      at: FIXTURE_NOW - (30 - i) * 60_000,
      from: "up" as const,
      to: "suspect" as const,
      reason: `r${i}`,
    }));
    const html = renderStatusPage(s, { now: FIXTURE_NOW });
    const section = html.slice(html.indexOf('id="builder-1"'), html.indexOf('id="builder-2"'));
    assert.match(section, /Recent transitions \(20 of 30, newest first\)/);
    assert.ok(section.indexOf(">r29<") < section.indexOf(">r10<"));
    assert.ok(!section.includes(">r9<"));
  });
});
