// The status page in a real browser: Debian's headless Chromium loads it from the watch server (a
// fixture snapshot with one quarantined builder and a machine line that carries HTML), dumps the DOM it
// built, and takes a screenshot. The page has no script, the hostile line is text, and the server's
// Content-Security-Policy stops a script that would get in anyway (checked against a control page).
//
// WATCH_SCREENSHOT=FILE also writes the fixture page's image there. The README's screenshot is the lab's
// (bench/watch-screenshot.ts).
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { SECURITY_HEADERS, startWatchServer, type WatchServer } from "../../src/app/watch/http.js";
import type { WatchSnapshot } from "../../src/app/watch/model.js";
import { have, run } from "../support/bounded.js";
import { FIXTURE_NOW, fixtureSnapshot, hostileBuilder } from "../support/watch-snapshots.js";

const SKIP = !have("chromium") && "needs Debian's chromium (scripts/provision installs it)";

describe("status page in headless Chromium", { skip: SKIP }, () => {
  let dir: string;
  let server: WatchServer;
  let snapshot: WatchSnapshot = fixtureSnapshot(FIXTURE_NOW, { extraBuilder: hostileBuilder() });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "nb-chromium-"));
    server = await startWatchServer({
      listen: "127.0.0.1:0",
      snapshot: () => snapshot,
      now: () => FIXTURE_NOW,
      defaultMetrics: false,
    });
  });
  after(async () => {
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Chromium, headless, with a private profile, no network but loopback, a 60 s deadline. */
  async function chromium(args: string[]): Promise<string> {
    const r = await run(
      "chromium",
      [
        "--headless",
        // As root Chromium refuses to start with its sandbox; the page is our own fixture on loopback.
        ...(process.getuid?.() === 0 ? ["--no-sandbox"] : []),
        "--disable-gpu",
        `--user-data-dir=${join(dir, "profile")}`,
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-breakpad",
        "--disable-crash-reporter",
        "--virtual-time-budget=3000",
        ...args,
      ],
      { timeoutMs: 60_000, env: { ...process.env, HOME: dir } },
    );
    assert.ok(!r.timedOut, `chromium hit its deadline: ${r.stderr.slice(-1000)}`);
    assert.equal(r.code, 0, r.stderr.slice(-2000));
    return r.stdout;
  }

  test("--dump-dom: the builders, the quarantined one with its cause and fix, routing, transitions", async () => {
    const dom = await chromium(["--dump-dom", `${server.url}/`]);
    assert.match(dom, /<title>nix-builders watch: 4 of 6 builders in use<\/title>/);
    // The quarantined builder: its row and its section with state, since, next probe, cause, message, fix.
    const row = dom.slice(dom.indexOf('id="row-1"'), dom.indexOf('id="row-2"'));
    assert.match(row, /ssh:\/\/nix@b2\.lab/);
    assert.match(row, /badge bad">quarantined<\/span><div class="sub">since <time[^>]*>2 min ago<\/time>/);
    assert.match(row, /held \(maxJobs 0\)/);
    assert.match(row, /re-probe <time[^>]*>in 3 min<\/time>/);
    assert.match(row, /failed: timeout/);
    const section = dom.slice(dom.indexOf('id="builder-1"'), dom.indexOf('id="builder-2"'));
    assert.match(section, /Cause: timeout<\/strong>/);
    assert.match(section, /ssh to b2\.lab did not connect within 10 s/);
    assert.match(section, /<strong>Fix:<\/strong> check that b2\.lab is up/);
    assert.match(section, /quarantine backoff, level 2/);
    assert.match(section, /Recent transitions \(7, newest first\)/);
    // Per-phase latency and the remote Nix and trust of the others.
    const b1 = dom.slice(dom.indexOf('id="builder-0"'), dom.indexOf('id="builder-1"'));
    assert.match(b1, /<th>handshake<\/th>/);
    assert.match(b1, /2\.30\.5, protocol 1\.38, trusted/);
    assert.match(dom, /2\.24\.9, protocol 1\.37, <span class="bad-text">not trusted<\/span>/);
    // Globals: the diff, the guard, where each system goes.
    assert.match(dom, /id="diff"[\s\S]*ssh:\/\/nix@b2\.lab[\s\S]*held \(maxJobs 0\)/);
    assert.match(dom, /id="guards"[\s\S]*max-quarantined-share/);
    assert.match(
      dom,
      /<code>aarch64-linux<\/code><\/th><td><strong><code>ssh-ng:\/\/b3\.lab<\/code><\/strong><\/td>/,
    );
    assert.match(dom, /riscv64-linux<\/code><\/th><td class="bad">nowhere: its only builder is held/);
    assert.match(dom, /id="recent-builds"/);
  });

  test("no script element, and the machine line with <script> is text", async () => {
    const dom = await chromium(["--dump-dom", `${server.url}/`]);
    assert.ok(!/<script/i.test(dom), "the DOM has no script element");
    assert.ok(!/<img/i.test(dom), "the DOM has no img element");
    assert.ok(!/<[a-zA-Z][^>]*[\s/]on[a-z]+\s*=/i.test(dom), "no event handler attribute");
    assert.ok(dom.includes('ssh://x&lt;script&gt;alert("owned")&lt;/script&gt;'), "the URI is shown as text");
    assert.ok(dom.includes("&lt;img/src/onerror=alert(1)&gt;"));
  });

  test("the server's Content-Security-Policy stops a script (control: without it, the script runs)", async () => {
    const page =
      '<!DOCTYPE html><html><head><title>t</title></head><body><p id="p">static</p><script>document.getElementById("p").textContent = "script ran";</script></body></html>';
    const servePage = (headers: Record<string, string>): Promise<Server> =>
      new Promise((resolve) => {
        const s = createServer((_req, res) => {
          res.writeHead(200, { ...headers, "Content-Type": "text/html; charset=utf-8" });
          res.end(page);
        });
        s.listen(0, "127.0.0.1", () => resolve(s));
      });
    const url = (s: Server) => {
      const a = s.address();
      return `http://127.0.0.1:${typeof a === "object" && a ? a.port : 0}/`;
    };
    const withCsp = await servePage({ ...SECURITY_HEADERS });
    const without = await servePage({});
    try {
      assert.match(await chromium(["--dump-dom", url(without)]), /<p id="p">script ran<\/p>/);
      assert.match(await chromium(["--dump-dom", url(withCsp)]), /<p id="p">static<\/p>/);
    } finally {
      withCsp.close();
      without.close();
    }
  });

  test("--screenshot: a PNG of the page", async () => {
    snapshot = fixtureSnapshot(FIXTURE_NOW);
    const png = join(dir, "watch-status.png");
    await chromium(["--hide-scrollbars", "--window-size=1280,1500", `--screenshot=${png}`, `${server.url}/`]);
    const bytes = readFileSync(png);
    assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    assert.equal(bytes.readUInt32BE(16), 1280, "width");
    assert.equal(bytes.readUInt32BE(20), 1500, "height");
    assert.ok(bytes.length > 50_000, "not a blank page");
    const out = process.env.WATCH_SCREENSHOT;
    if (out) copyFileSync(png, out);
  });
});
