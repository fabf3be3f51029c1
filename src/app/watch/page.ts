// The status page of `nix-builders watch`: `/status.json` (the engine's snapshot as is) and `/`, an
// HTML page rendered on the server. The page has no JavaScript and loads nothing: one document with an
// inline style sheet, served under a Content-Security-Policy that forbids scripts. Every text that
// comes from the machines file or from a probe (store URIs, lines, messages, versions) is escaped.

import type {
  BuilderStatus,
  ProbePhase,
  ProbeRecord,
  Transition,
  WatchSnapshot,
  WatchState,
} from "./model.js";

const PHASES: readonly ProbePhase[] = ["dns", "tcp", "auth", "handshake", "query", "total"];

/** Transitions shown per builder, newest first. */
const SHOWN_TRANSITIONS = 20;
/** Recent builds shown. */
const SHOWN_BUILDS = 50;
/** Longest text shown from a machine line or a message; the rest is cut with an ellipsis. */
const MAX_TEXT = 2000;

/** The snapshot as `/status.json` serves it. */
export function renderStatusJson(snapshot: WatchSnapshot): string {
  return `${JSON.stringify(snapshot, null, 2)}\n`;
}

/**
 * HTML-escapes text for element content and quoted attribute values. Control characters (which a
 * machines file may hold) are shown as `\xNN` so that nothing invisible reaches the page.
 */
export function escapeHtml(text: string): string {
  const cut = text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT)}…` : text;
  return cut
    .replace(
      /[\u0000-\u0008\u000b-\u001f\u007f\u2028\u2029]/g,
      (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
    )
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

const h = escapeHtml;

export interface StatusPageOptions {
  /** The time the page is rendered at (ms), for "3 min ago". */
  now?: number;
  /** Seconds between automatic reloads (a meta refresh, not a script); 0 for none. Default 30. */
  refreshSeconds?: number;
}

/** The status page, one self-contained HTML document. */
export function renderStatusPage(s: WatchSnapshot, options: StatusPageOptions = {}): string {
  const now = options.now ?? Date.now();
  const refresh = options.refreshSeconds ?? 30;
  const held = s.builders.filter((b) => b.disposition !== "listed").length;
  const parts: string[] = [];
  parts.push(
    "<!DOCTYPE html>",
    '<html lang="en">',
    "<head>",
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    refresh > 0 ? `<meta http-equiv="refresh" content="${Math.floor(refresh)}">` : "",
    `<title>nix-builders watch: ${s.builders.length - held} of ${s.builders.length} builders in use</title>`,
    `<style>${STYLE}</style>`,
    "</head>",
    "<body>",
    "<header>",
    "<h1>nix-builders watch</h1>",
    `<p class="sub">${s.builders.length - held} of ${s.builders.length} builders in use · last round ${when(s.lastRoundAt, now)} · page rendered ${stamp(now)}</p>`,
    "</header>",
  );

  parts.push(alerts(s, now));
  parts.push(summary(s, now));
  parts.push(routing(s));
  parts.push(diff(s));
  parts.push(buildersTable(s, now));
  for (const b of s.builders) parts.push(builderDetails(b, now));
  if (s.recentBuilds) parts.push(recentBuilds(s.recentBuilds, now));
  parts.push(
    '<footer><p>Also: <a href="/status.json">/status.json</a> (this data as JSON) · <a href="/metrics">/metrics</a> (Prometheus) · <a href="/healthz">/healthz</a></p></footer>',
    "</body>",
    "</html>",
    "",
  );
  return parts.filter((p) => p !== "").join("\n");
}

function alerts(s: WatchSnapshot, now: number): string {
  const out: string[] = [];
  if (s.localFault) {
    out.push(
      `<div class="alert bad" id="local-fault"><strong>Local fault: ${h(s.localFault.cause)}</strong> (since ${when(s.localFault.since, now)}). ${h(s.localFault.message)} The machines file is frozen until it clears.</div>`,
    );
  }
  if (s.source.error)
    out.push(
      `<div class="alert bad" id="source-error"><strong>Source unreadable:</strong> ${h(s.source.error)}</div>`,
    );
  if (s.guards.length > 0) {
    out.push(
      `<div class="alert warn" id="guards"><strong>Guards active:</strong> ${s.guards.map((g) => `<span class="guard">${h(g)}</span>`).join(" ")}. ${GUARD_TEXT}</div>`,
    );
  }
  return out.join("\n");
}

const GUARD_TEXT = "A guard keeps builders listed that the policy would take out (see docs/watch.md).";

function summary(s: WatchSnapshot, now: number): string {
  const rows: [string, string][] = [
    [
      "Source",
      `<code>${h(s.source.path)}</code>: ${s.source.lines} machine line${s.source.lines === 1 ? "" : "s"}, read ${when(s.source.readAt, now)}`,
    ],
    [
      "Output",
      `<code>${h(s.output.path)}</code>: ${s.output.content.length} line${s.output.content.length === 1 ? "" : "s"}, written ${s.output.writes} time${s.output.writes === 1 ? "" : "s"}, last ${when(s.output.lastWriteAt, now)}${s.output.hash ? `, sha256 <code title="${h(s.output.hash)}">${h(s.output.hash.slice(0, 16))}…</code>` : ""}`,
    ],
    ["Started", when(s.startedAt, now)],
    ["Guards", s.guards.length === 0 ? "none active" : s.guards.map((g) => h(g)).join(", ")],
    ["Local fault", s.localFault ? `${h(s.localFault.cause)}: ${h(s.localFault.message)}` : "none"],
  ];
  return `<section id="summary"><h2>Summary</h2><dl>${rows.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}</dl></section>`;
}

function routing(s: WatchSnapshot): string {
  const bySystem = new Map<string, number>();
  for (const b of s.builders)
    for (const sys of new Set(b.systems)) bySystem.set(sys, (bySystem.get(sys) ?? 0) + 1);
  const routed = new Map(s.routing.map((r) => [r.system, r.builders]));
  const systems = [...new Set([...s.routing.map((r) => r.system), ...bySystem.keys()])];
  if (systems.length === 0)
    return '<section id="routing"><h2>Where builds go now</h2><p>No systems: the source has no machines.</p></section>';
  const rows = systems.map((sys) => {
    const to = routed.get(sys) ?? [];
    const total = bySystem.get(sys) ?? 0;
    const out = total === 1 ? "its only builder is" : `all ${total} of its builders are`;
    const cell =
      to.length === 0
        ? `<td class="bad">nowhere: ${out} held, removed or drained</td>`
        : `<td>${to.map((b, i) => `${i === 0 ? "<strong>" : ""}<code>${h(b)}</code>${i === 0 ? "</strong>" : ""}`).join(", ")}</td>`;
    return `<tr><th scope="row"><code>${h(sys)}</code></th>${cell}<td class="num">${to.length} of ${total}</td></tr>`;
  });
  return `<section id="routing"><h2>Where builds go now</h2><p class="sub">The builders that accept each system's builds now, in Nix's order of preference.</p><table><thead><tr><th>System</th><th>Builders</th><th>In use</th></tr></thead><tbody>${rows.join("")}</tbody></table></section>`;
}

function diff(s: WatchSnapshot): string {
  if (s.diff.length === 0) {
    return '<section id="diff"><h2>Source vs output</h2><p>The output lists every source line as is.</p></section>';
  }
  const rows = s.diff.map(
    (d) =>
      `<tr><td><code>${h(d.builder)}</code></td><td>${disposition(d.disposition)}</td><td>${badge(d.state)}</td></tr>`,
  );
  return `<section id="diff"><h2>Source vs output</h2><p class="sub">Source lines that the output does not list as is: held lines keep their place with maxJobs 0, so Nix never connects to them; removed lines are left out.</p><table><thead><tr><th>Builder</th><th>In the output</th><th>State</th></tr></thead><tbody>${rows.join("")}</tbody></table></section>`;
}

function buildersTable(s: WatchSnapshot, now: number): string {
  if (s.builders.length === 0) return '<section id="builders"><h2>Builders</h2><p>No builders.</p></section>';
  const rows = s.builders.map((b) => {
    const p = b.lastProbe;
    const slots = b.slots ?? b.maxJobs;
    return [
      `<tr id="row-${b.index}" class="state-${b.state}">`,
      `<td><a href="#builder-${b.index}"><code>${h(b.builder)}</code></a><div class="sub">${b.systems.map((x) => h(x)).join(", ")}</div></td>`,
      `<td>${badge(b.state)}<div class="sub">since ${when(b.since, now)}</div></td>`,
      `<td>${disposition(b.disposition)}</td>`,
      `<td>${b.quarantinedUntil !== null ? `re-probe ${when(b.quarantinedUntil, now)}` : when(b.nextProbeAt, now)}</td>`,
      `<td class="num">${b.consecutiveFailures}</td>`,
      `<td>${p ? probeResult(p) : "not probed yet"}</td>`,
      `<td class="num">${p?.phases.total !== undefined ? ms(p.phases.total) : "–"}</td>`,
      `<td>${p?.remoteNixVersion ? h(p.remoteNixVersion) : "–"}${p?.protocol ? `<div class="sub">protocol ${h(p.protocol)}</div>` : ""}</td>`,
      `<td>${trust(p)}</td>`,
      `<td class="num">${b.slotsBusy ?? "?"} / ${slots}</td>`,
      "</tr>",
    ].join("");
  });
  return `<section id="builders"><h2>Builders</h2><table><thead><tr><th>Builder</th><th>State</th><th>In the output</th><th>Next probe</th><th>Failures in a row</th><th>Last probe</th><th>Probe time</th><th>Remote Nix</th><th>Trusted</th><th>Slots busy</th></tr></thead><tbody>${rows.join("")}</tbody></table></section>`;
}

function builderDetails(b: BuilderStatus, now: number): string {
  const parts: string[] = [];
  parts.push(`<section class="builder state-${b.state}" id="builder-${b.index}">`);
  parts.push(`<h3><code>${h(b.builder)}</code> ${badge(b.state)}</h3>`);
  parts.push(`<p class="line">Line ${b.index + 1} of the source: <code>${h(b.line)}</code></p>`);
  const facts: [string, string][] = [
    ["State", `${badge(b.state)} since ${when(b.since, now)}`],
    ["In the output", disposition(b.disposition)],
    [
      "Next probe",
      b.quarantinedUntil !== null
        ? `${when(b.quarantinedUntil, now)} (quarantine backoff, level ${b.backoffLevel})`
        : when(b.nextProbeAt, now),
    ],
    ["Last success", when(b.lastSuccessAt, now)],
    ["Failures in a row", String(b.consecutiveFailures)],
    ["Systems", b.systems.map((x) => `<code>${h(x)}</code>`).join(", ") || "–"],
    [
      "Features",
      [
        ...b.supportedFeatures.map((x) => h(x)),
        ...b.mandatoryFeatures.map((x) => `${h(x)} (mandatory)`),
      ].join(", ") || "none",
    ],
  ];
  if (b.lastProbe) {
    facts.push(["Last probe", `${probeResult(b.lastProbe)}, ${when(b.lastProbe.at, now)}`]);
    facts.push(["Latency", phases(b.lastProbe)]);
    const p = b.lastProbe;
    facts.push([
      "Remote Nix",
      p.remoteNixVersion === undefined && p.remoteTrusted === undefined
        ? "not known: the last probe did not reach the remote Nix"
        : `${p.remoteNixVersion ? h(p.remoteNixVersion) : "version unknown"}${p.protocol ? `, protocol ${h(p.protocol)}` : ""}, ${trust(p)}`,
    ]);
  }
  parts.push(`<dl>${facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}</dl>`);
  const failure = b.lastProbe && !b.lastProbe.ok ? b.lastProbe : b.lastFailure;
  if (failure) {
    const current = failure === b.lastProbe;
    parts.push(
      `<div class="cause ${current ? "bad" : "old"}"><p><strong>${current ? "Cause" : "Last failure"}: ${h(failure.cause ?? "unknown")}</strong> (${when(failure.at, now)})</p>${failure.message ? `<p class="message">${h(failure.message)}</p>` : ""}${failure.fix ? `<p class="fix"><strong>Fix:</strong> ${h(failure.fix)}</p>` : ""}</div>`,
    );
  }
  parts.push(transitions(b.transitions, now));
  parts.push("</section>");
  return parts.join("\n");
}

function transitions(list: Transition[], now: number): string {
  if (list.length === 0) return '<p class="sub">No transitions yet.</p>';
  const shown = list.slice(-SHOWN_TRANSITIONS).reverse();
  const rows = shown.map(
    (t) =>
      `<tr><td>${when(t.at, now)}</td><td>${badge(t.from)} → ${badge(t.to)}</td><td>${h(t.reason)}</td></tr>`,
  );
  return `<details open><summary>Recent transitions (${shown.length}${list.length > shown.length ? ` of ${list.length}` : ""}, newest first)</summary><table class="transitions"><thead><tr><th>When</th><th>Change</th><th>Why</th></tr></thead><tbody>${rows.join("")}</tbody></table></details>`;
}

function recentBuilds(list: NonNullable<WatchSnapshot["recentBuilds"]>, now: number): string {
  if (list.length === 0)
    return '<section id="recent-builds"><h2>Recent builds</h2><p>None recorded yet.</p></section>';
  const rows = list.slice(0, SHOWN_BUILDS).map((r) => {
    const took = r.endedAt === null ? "running" : ms((r.endedAt - r.startedAt) / 1000);
    return `<tr><td><code>${h(r.drv)}</code></td><td><code>${h(r.system)}</code></td><td>${r.machine === null ? "local" : `<code>${h(r.machine)}</code>`}</td><td>${when(r.startedAt, now)}</td><td class="num">${took}</td><td>${h(r.result)}</td></tr>`;
  });
  return `<section id="recent-builds"><h2>Recent builds</h2><table><thead><tr><th>Derivation</th><th>System</th><th>Built on</th><th>Started</th><th>Took</th><th>Result</th></tr></thead><tbody>${rows.join("")}</tbody></table></section>`;
}

// --- small pieces -----------------------------------------------------------------------------------

const STATE_CLASS: Record<WatchState, string> = {
  unknown: "neutral",
  up: "good",
  suspect: "warn",
  quarantined: "bad",
  misconfigured: "bad",
  probation: "warn",
  kept: "warn",
  drained: "neutral",
};

function badge(state: WatchState): string {
  const cls = STATE_CLASS[state] ?? "neutral";
  return `<span class="badge ${cls}">${h(state)}</span>`;
}

function disposition(d: string): string {
  if (d === "held") return '<span class="badge bad">held (maxJobs 0)</span>';
  if (d === "removed") return '<span class="badge bad">removed</span>';
  return '<span class="badge good">listed</span>';
}

function probeResult(p: ProbeRecord): string {
  if (p.ok) return p.cause === "slow" ? '<span class="warn-text">passed, slow</span>' : "passed";
  return `<span class="bad-text">failed: ${h(p.cause ?? "unknown")}</span>`;
}

function trust(p: ProbeRecord | null): string {
  if (!p || p.remoteTrusted === undefined) return "unknown";
  return p.remoteTrusted ? "trusted" : '<span class="bad-text">not trusted</span>';
}

function phases(p: ProbeRecord): string {
  const shown = PHASES.filter((ph) => typeof p.phases[ph] === "number");
  if (shown.length === 0) return "–";
  return `<table class="phases"><tr>${shown.map((ph) => `<th>${ph}</th>`).join("")}</tr><tr>${shown.map((ph) => `<td class="num">${ms(p.phases[ph] as number)}</td>`).join("")}</tr></table>`;
}

/** Seconds as "12 ms", "1.25 s" or "3 min 5 s". */
function ms(sec: number): string {
  if (!Number.isFinite(sec)) return "–";
  if (sec < 1) return `${Math.round(sec * 1000)} ms`;
  if (sec < 60) return `${sec.toFixed(2)} s`;
  const m = Math.floor(sec / 60);
  return `${m} min ${Math.round(sec - m * 60)} s`;
}

function stamp(at: number): string {
  return `${new Date(at).toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

/** An absolute time with how long ago or from now, or "never". */
function when(at: number | null, now: number): string {
  if (at === null || !Number.isFinite(at)) return "never";
  return `<time datetime="${new Date(at).toISOString()}" title="${stamp(at)}">${relative(at - now)}</time>`;
}

function relative(deltaMs: number): string {
  const future = deltaMs > 0;
  const s = Math.round(Math.abs(deltaMs) / 1000);
  let text: string;
  if (s < 1) return "now";
  if (s < 90) text = `${s} s`;
  else if (s < 90 * 60) text = `${Math.round(s / 60)} min`;
  else if (s < 36 * 3600) text = `${Math.round(s / 3600)} h`;
  else text = `${Math.round(s / 86400)} d`;
  return future ? `in ${text}` : `${text} ago`;
}

const STYLE = `
:root{color-scheme:light dark;--bad:#c62828;--warn:#b26a00;--good:#2e7d32;--neutral:#607d8b;--line:#8884}
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;padding:1em 1.5em;max-width:80em}
h1{margin:.2em 0;font-size:1.5em}h2{margin-top:1.6em;font-size:1.2em}h3{font-size:1.05em;margin:.4em 0}
.sub{color:#777;font-size:.9em;margin:.1em 0}
table{border-collapse:collapse;width:100%;margin:.4em 0}
th,td{border-bottom:1px solid var(--line);padding:.3em .5em;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font:12.5px ui-monospace,monospace;word-break:break-all}
.badge{display:inline-block;padding:0 .45em;border-radius:.6em;color:#fff;font-size:.85em;white-space:nowrap}
.badge.good{background:var(--good)}.badge.bad{background:var(--bad)}.badge.warn{background:var(--warn)}.badge.neutral{background:var(--neutral)}
.bad-text,td.bad{color:var(--bad)}.warn-text{color:var(--warn)}
.alert{border-left:4px solid;padding:.5em .8em;margin:.6em 0;background:#8881}
.alert.bad{border-color:var(--bad)}.alert.warn{border-color:var(--warn)}
.guard{font-family:ui-monospace,monospace}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:.4em 0}dt{font-weight:600}dd{margin:0}
section.builder{border:1px solid var(--line);border-radius:.4em;padding:.5em 1em;margin:1em 0}
section.builder.state-quarantined,section.builder.state-misconfigured{border-color:var(--bad)}
.cause{border-left:4px solid var(--bad);padding:.1em .8em;margin:.5em 0}.cause.old{border-color:var(--neutral)}
.cause p{margin:.3em 0}
table.phases{width:auto}table.phases th,table.phases td{border:0;padding:0 .6em 0 0;font-size:.9em}
tr.state-quarantined td,tr.state-misconfigured td{background:#c6282812}
footer{margin-top:2em;color:#777}
`.trim();
