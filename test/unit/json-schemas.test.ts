/**
 * The `--json` outputs keep their fields: each output of the samples in scripts/json-schemas.ts is
 * checked against its schema in docs/schemas/ (written by that script), so a renamed or removed field
 * fails here. A new field fails too, until the schema is written again (`node --import tsx
 * scripts/json-schemas.ts`): adding is allowed, but it is done on purpose.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { runSample, SAMPLES, type Schema, schemaFile, validate } from "../../scripts/json-schemas.js";

describe("JSON outputs against docs/schemas", () => {
  for (const [name, samples] of Object.entries(SAMPLES)) {
    it(`${name} --json has the fields of docs/schemas/${name}.schema.json`, () => {
      const schema = JSON.parse(readFileSync(schemaFile(name), "utf8")) as Schema;
      assert.ok((schema.required ?? []).length > 0, "the schema requires fields");
      for (const args of samples) assert.deepEqual(validate(runSample(args), schema), [], args.join(" "));
    });
  }

  it("a renamed field fails validation (what the tests above would report)", () => {
    const schema = JSON.parse(readFileSync(schemaFile("lint"), "utf8")) as Schema;
    const out = runSample(SAMPLES["lint"]![0]!) as { findings: Record<string, unknown>[] };
    assert.deepEqual(validate(out, schema), []);
    const f = out.findings[0]!;
    f["severityLevel"] = f["severity"];
    delete f["severity"];
    assert.deepEqual(validate(out, schema), [
      "$.findings[0].severity: missing",
      "$.findings[0].severityLevel: not in the schema",
    ]);
  });

  it("doctor: a renamed check field fails validation", () => {
    const schema = JSON.parse(readFileSync(schemaFile("doctor"), "utf8")) as Schema;
    const out = runSample(SAMPLES["doctor"]![0]!) as { checks: Record<string, unknown>[] };
    assert.deepEqual(validate(out, schema), []);
    const c = out.checks[0]!;
    c["state"] = c["status"];
    delete c["status"];
    assert.deepEqual(validate(out, schema), [
      "$.checks[0].status: missing",
      "$.checks[0].state: not in the schema",
    ]);
  });
});
