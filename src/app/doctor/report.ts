/** The doctor's output: one JSON document, or plain text grouped by builder. */
import type { DoctorReport } from "./doctor.js";
import type { CheckResult } from "./types.js";

export function reportJson(r: DoctorReport): Record<string, unknown> {
  const bug = r.checks.find((c) => c.internal);
  return {
    // A check that threw: the same error object as every command's --json on an internal error.
    ...(bug
      ? { error: { kind: "internal", message: `${bug.id}: ${bug.message}`, exitCode: r.summary.exitCode } }
      : {}),
    checks: r.checks.map((c) => ({
      id: c.id,
      builder: c.builder,
      status: c.status,
      cause: c.cause,
      message: c.message,
      evidence: c.evidence,
      fix: c.fix,
      deps: c.deps,
      durationMs: c.durationMs,
    })),
    summary: r.summary,
  };
}

const LABEL: Record<CheckResult["status"], string> = {
  pass: "ok  ",
  warn: "WARN",
  fail: "FAIL",
  skip: "skip",
};

function line(c: CheckResult, indent: string, verbose: boolean): string {
  let out = `${indent}${LABEL[c.status]}  ${c.id}${c.cause ? ` [${c.cause}]` : ""}: ${c.message}\n`;
  if (c.status === "fail" || c.status === "warn" || verbose) {
    for (const e of c.evidence) {
      const res = e.result.includes("\n")
        ? `\n${e.result.replace(/^/gm, `${indent}        `)}`
        : ` ${e.result}`;
      out += `${indent}      · ${e.what}:${res}\n`;
    }
    if (c.fix) out += `${indent}      fix: ${c.fix}\n`;
  }
  return out;
}

/** What a fully passing builder shows without --verbose. */
const SUMMARY_CHECKS = ["builder.handshake", "builder.remote-config"];

/**
 * Plain text: the local checks, then each builder. A builder whose checks all pass is one headline plus
 * its handshake and configuration lines; a builder with a warning or failure lists every check, with
 * evidence and a fix for the ones that did not pass. `verbose` lists everything, with evidence.
 */
export function reportText(r: DoctorReport, opts: { verbose?: boolean } = {}): string {
  const s = r.summary;
  let out = `nix-builders doctor: user ${s.user} (${s.userSource}), Nix ${s.nixVersion} rules, ssh runs as ${s.sshIdentity}\n\n`;
  for (const c of r.checks.filter((x) => x.builder === null)) out += line(c, "", opts.verbose ?? false);
  const builders = [...new Set(r.checks.filter((x) => x.builder !== null).map((x) => x.builder!))];
  for (const b of builders) {
    const cs = r.checks.filter((x) => x.builder === b);
    const worst = cs.some((c) => c.status === "fail")
      ? "FAIL"
      : cs.some((c) => c.status === "warn")
        ? "WARN"
        : "ok";
    const ms = s.builderDurationsMs[b] ?? "?";
    if (worst === "ok" && !opts.verbose) {
      // A builder that passes everything: one headline and what it is (protocol, Nix, systems).
      out += `\n${b}  (ok, ${ms} ms): all ${cs.length} checks pass\n`;
      for (const c of cs) if (SUMMARY_CHECKS.includes(c.id)) out += line(c, "  ", false);
      continue;
    }
    out += `\n${b}  (${worst}, ${ms} ms)\n`;
    for (const c of cs) {
      // The chain up to a failure stays visible; failures and warnings get evidence and a fix.
      out += line(c, "  ", opts.verbose ?? false);
    }
  }
  out += `\n${s.pass} ok, ${s.warn} warning${s.warn === 1 ? "" : "s"}, ${s.fail} failed, ${s.skip} skipped; ${s.builders} builder${s.builders === 1 ? "" : "s"} in ${(s.durationMs / 1000).toFixed(1)} s\n`;
  return out;
}
