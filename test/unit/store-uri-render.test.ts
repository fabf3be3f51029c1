/**
 * Differential test: the store URI as the real build hook renders it (`# accept`, `connecting to '…'`)
 * and the slot lock files it creates under `current-load`, against `renderStoreUri` / `slotStem` for
 * the same version. Run against real Nix 2.8 (text as written) and real Nix 2.30 (`StoreReference::render`).
 *
 * Every machine has 2 slots; the hook opens (creates) both slot files of every machine of the right type
 * before it connects. ssh machines go to a fake `ssh` on PATH that exits at once, so nothing leaves the box.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { machinesForPrintedUri, renderStoreUri, slotStem } from "../../src/nix/store-uri.js";
import { runBuildRemote, scratchDir } from "../support/build-remote.js";
import { REAL_NIXES, type RealNix } from "../support/nix-versions.js";

/** Column-1 forms (after `normaliseStoreUri`), `BASE` replaced by a scratch directory. */
const URIS = [
  "BASE/m0",
  "local://BASE/m1",
  "local?root=BASE/m2",
  "BASE/m3?root=BASE/m3r",
  "BASE/m4?b=1&a=2",
  "BASE//m5/",
  "BASE/./m6/../m7",
  "BASE/m%20z",
  "local",
  "daemon",
  "auto",
  "auto?root=BASE/m8",
  "file://BASE/bc",
  "unix://BASE/sock",
  "unix:///x?a=1",
  "ssh://h1",
  "ssh://u@h2",
  "ssh-ng://u@h3",
  "ssh://u@h:22",
  "ssh://[::1]",
  "ssh://H1/",
  "ssh://u%40x@h",
  "ssh://h4?remote-program=/x/y",
  "ssh-ng://h5?compress=true&remote-store=local",
  "ssh://h?b=1&a=2",
  "ssh://h?x=a%20b",
  "ssh://h?x=a+b",
  "ssh-ng://h?remote-program=/x%2Fy",
  "ssh://h?a=1&a=2",
  "ssh://h?=x",
  "ssh://h?a",
  "ssh://h?x=%C3%A9",
];

function describeRender(n: RealNix): void {
  describe(`store URI rendering: the real Nix ${n.label} build hook`, { skip: n.skipReason }, () => {
    const base = join(scratchDir(), `render-${n.label}`);
    const fakeBin = join(base, "bin");
    const store = join(base, "store");
    const currentLoad = join(store, "nix", "var", "nix", "current-load");
    for (const raw of URIS) {
      const uri = raw.replaceAll("BASE", base);
      test(`${raw}`, async () => {
        mkdirSync(fakeBin, { recursive: true });
        writeFileSync(join(fakeBin, "ssh"), "#!/bin/sh\nexit 1\n");
        chmodSync(join(fakeBin, "ssh"), 0o755);
        mkdirSync(currentLoad, { recursive: true });
        for (const f of readdirSync(currentLoad)) rmSync(join(currentLoad, f));
        const real = await runBuildRemote({
          hook: n.buildRemote,
          builders: `${uri} x86_64-linux - 2 1 - -`,
          system: "x86_64-linux",
          store,
          amWilling: false,
          extraSettings: { "build-users-group": "" },
          env: { PATH: `${fakeBin}:${process.env["PATH"]}` },
          timeoutMs: 15_000,
        });
        const rendered = renderStoreUri(uri, n.version!);
        const connecting = real.activities.find((a) => a.startsWith("connecting to '"));
        assert.equal(connecting, `connecting to '${rendered}'`, real.stderr);
        // verify maps what Nix printed back to the machines line
        const printed = connecting!.slice("connecting to '".length, -1);
        const rows = [{ storeUri: "ssh://other" }, { storeUri: uri }];
        assert.deepEqual(machinesForPrintedUri(printed, rows, n.version!), [{ storeUri: uri }]);
        if (real.reply === "accept") assert.equal(real.acceptedUri, rendered);
        const files = readdirSync(currentLoad)
          .filter((f) => f !== "main-lock")
          .sort();
        const stem = slotStem(uri, n.version!);
        assert.deepEqual(files, [`${stem}-0`, `${stem}-1`]);
      });
    }
  });
}

for (const n of REAL_NIXES) describeRender(n);
