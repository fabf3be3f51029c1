/**
 * The §2.6 acceptance rows replayed through the real build hooks of Nix 2.8 and Nix 2.30, with the
 * expectations written down from the spec (so both the spec and our parser, set to that version's rules,
 * are checked against each binary).
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parseBuilders } from "../../src/nix/machines.js";
import { NIX_2_8, type NixVersion } from "../../src/nix/version.js";
import {
  haveBuildRemote,
  nodeFsReader,
  parseNoMachineListing,
  type RunBuildRemoteResult,
  runBuildRemote,
  runBuildRemoteMany,
  scratchDir,
} from "../support/build-remote.js";
import { REAL_NIXES, type RealNix } from "../support/nix-versions.js";

const SYS = "TEST_ARCH-TEST_OS";
const VALID =
  "nix@scratchy.labs.cs.uu.nl  i686-linux      /home/nix/.ssh/id_scratchy_auto        8 1 kvm\n" +
  "nix@itchy.labs.cs.uu.nl     i686-linux      /home/nix/.ssh/id_scratchy_auto        8 2\n" +
  "nix@poochie.labs.cs.uu.nl   i686-linux      /home/nix/.ssh/id_scratchy_auto        1 2 kvm benchmark c3NoLXJzYSBBQUFBQjNOemFDMXljMkVBQUFBREFRQUJBQUFDQVFDWWV5R1laNTNzd1VjMUZNSHBWL1BCcXlKaFR5S1JoRkpWWVRpRHlQN2h5c1JGa0w4VDlLOGdhL2Y2L3c3QjN2SjNHSFRIUFkybENiUEdZbGNLd2h6M2ZRbFNNOEViNi95b3ZLajdvM1FsMEx5Y0dzdGJvRmcwWkZKNldncUxsR0ltS0NobUlxOGZ3TW5ZTWUxbnRQeTBUZFZjSU1tOTV3YzF3SjBMd2c3cEVMRmtHazdkeTVvYnM4a3lGZ0pORDVRSmFwQWJjeWp4Z1QzdzdMcktNZ2xzeWhhd01JNVpkMGZsQTVudW5OZ3pid3plYVhLaUsyTW0vdGJXYTU1YTd4QmNYdHpIZGlPSWdSajJlRWxaMGh5bk10YjBmcklsdmxIcEtLaVFaZ3pQdCtIVXQ2bXpRMkRVME52MGYyYnNSU0krOGpJU2pQcmdlcVVHRldMUzVIUTg2N2xSMlpiaWtyclhZNTdqbVFEZk5DRHY1VFBHZU9UekFEd2pjMDc2aFZ3VFJCd3VTZFhtaWNxTS95b3lrWitkV1dnZ25MenE5QU1tdlNZcDhmZkZDcS9CSDBZNUFXWTFHay9vS3hMVTNaOWt3ZDd2UWNFQWFCQ2dxdnVZRGdTaHE1RlhndDM3OVZESWtEL05ZSTg2QXVvajVDRmVNTzlRM2pJSlRadlh6c1VldjVoSnA2djcxSVh5ODVtbTY5R20zcXdicVE1SjVQZDU1Um56SitpaW5BNjZxTEFSc0Y4amNsSnd5ekFXclBoYU9DRVY2bjVMeVhVazhzMW9EVVR4V1pWN25rVkFTbHJ0MllGcjN5dzdjRTRXQVhsemhHcDhocmdLMVVkMUlyeDVnZWRaSnBWcy9uNWVybmJFMUxmb2x5UHUvRUFIWlh6VGd4dHVDUFNobXc9PQo=\n";

type Expect =
  | { reply: "decline-permanently" }
  | { error: string }
  | { listing: [string[], number, string[], string[]][] };

for (const n of REAL_NIXES) describeRows(n);

function describeRows(n: RealNix): void {
  describe(`machines §2.6 against the real ${n.label} build hook`, {
    skip: n.skipReason || (haveBuildRemote(n.buildRemote) ? false : `${n.buildRemote} is absent`),
  }, () => {
    const version: NixVersion = n.version ?? NIX_2_8;
    const hook = n.buildRemote;
    let dir = "";
    before(() => {
      dir = mkdtempSync(join(tmpdir(), "nb-rows-"));
      writeFileSync(join(dir, "valid"), VALID);
      writeFileSync(join(dir, "bad_format"), "nix@scratchy.labs.cs.uu.nl - - eight\n");
      writeFileSync(join(dir, "crlf"), "/m1 - - 1 1\r\n\r\n/m2\r\n");
      mkdirSync(join(dir, "sub"));
      writeFileSync(join(dir, "sub", "mf"), "/m3 x86_64-linux - 3\n");
      writeFileSync(join(dir, "mf2"), `@${join(dir, "sub", "mf")}\n/m4\n`);
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    const r = "nix@scratchy.labs.cs.uu.nl";
    /** [spec, what 2.8 does, what 2.30 does when that differs] */
    const cases = (): [string, Expect, Expect?][] => [
      ["", { reply: "decline-permanently" }],
      [r, { listing: [[[SYS], 1, [], []]] }],
      [`${r} - - - - - - -`, { listing: [[[SYS], 1, [], []]] }],
      [
        `${r}\nnix@itchy.labs.cs.uu.nl`,
        {
          listing: [
            [[SYS], 1, [], []],
            [[SYS], 1, [], []],
          ],
        },
      ],
      [
        `${r} ; nix@itchy.labs.cs.uu.nl`,
        {
          listing: [
            [[SYS], 1, [], []],
            [[SYS], 1, [], []],
          ],
        },
      ],
      [
        "# This is a comment ; this is still that comment\n" + `${r} ; nix@itchy.labs.cs.uu.nl\n`,
        {
          error:
            "bad machine specification: failed to convert column #3 in a row: ' this is still that comment' to 'unsigned int'",
        },
        // 2.29+: `#` cuts the line before the split on `;`
        {
          listing: [
            [[SYS], 1, [], []],
            [[SYS], 1, [], []],
          ],
        },
      ],
      [
        `        # comment ; comment\n   ${r} ; nix@itchy.labs.cs.uu.nl   \n`,
        {
          error:
            "bad machine specification: store URL was not found at the first column of a row: '        '",
        },
        // 2.29+: entries are trimmed and blank ones skipped
        {
          listing: [
            [[SYS], 1, [], []],
            [[SYS], 1, [], []],
          ],
        },
      ],
      [
        `${r}     i686-linux      /home/nix/.ssh/id_scratchy_auto        8 3 kvm benchmark SSH+HOST+PUBLIC+KEY+BASE64+ENCODED==`,
        { listing: [[["i686-linux"], 8, ["kvm"], ["benchmark"]]] },
      ],
      [
        `${r} Arch1,Arch2 - - - SupportedFeature1,SupportedFeature2 MandatoryFeature1,MandatoryFeature2`,
        {
          listing: [
            [
              ["Arch1", "Arch2"],
              1,
              ["SupportedFeature1", "SupportedFeature2"],
              ["MandatoryFeature1", "MandatoryFeature2"],
            ],
          ],
        },
      ],
      [
        `${r} - - eight`,
        {
          error: `bad machine specification: failed to convert column #3 in a row: '${r} - - eight' to 'unsigned int'`,
        },
      ],
      [
        `${r} - - -1`,
        {
          error: `bad machine specification: failed to convert column #3 in a row: '${r} - - -1' to 'unsigned int'`,
        },
      ],
      [
        `${r} - - 8 three`,
        {
          error: `bad machine specification: failed to convert column #4 in a row: '${r} - - 8 three' to 'unsigned int'`,
        },
        // 2.20+: the speed factor is a float
        {
          error: `bad machine specification: failed to convert column #4 in a row: '${r} - - 8 three' to 'float'`,
        },
      ],
      [
        `${r} - - 8 -3`,
        {
          error: `bad machine specification: failed to convert column #4 in a row: '${r} - - 8 -3' to 'unsigned int'`,
        },
        { error: "speed factor must be >= 0" },
      ],
      [
        `${r} - - 8 3 - - BAD_BASE64`,
        {
          error: `bad machine specification: a column #7 in a row: '${r} - - 8 3 - - BAD_BASE64' is not valid base64 string: error: invalid character in Base64 string: '\x1b'`,
        },
        // 2.26+: the decoder's own error, under a trace line naming the column and the row
        { error: "invalid character in Base64 string: '\x1b'" },
      ],
      [
        `@${join(dir, "valid")}`,
        {
          listing: [
            [["i686-linux"], 8, ["kvm"], []],
            [["i686-linux"], 8, [], []],
            [["i686-linux"], 1, ["kvm"], ["benchmark"]],
          ],
        },
      ],
      ["@/dev/null", { reply: "decline-permanently" }],
      ["@/not/a/file", { reply: "decline-permanently" }],
      [
        `@${join(dir, "bad_format")}`,
        {
          error:
            "bad machine specification: failed to convert column #3 in a row: 'nix@scratchy.labs.cs.uu.nl - - eight' to 'unsigned int'",
        },
      ],
      // additional observed 2.8 rows
      [
        "/a; ;/b",
        { error: "bad machine specification: store URL was not found at the first column of a row: ' '" },
        {
          listing: [
            [[SYS], 1, [], []],
            [[SYS], 1, [], []],
          ],
        },
      ],
      [
        "/a\n   \n/b",
        { error: "bad machine specification: store URL was not found at the first column of a row: '   '" },
        {
          listing: [
            [[SYS], 1, [], []],
            [[SYS], 1, [], []],
          ],
        },
      ],
      [
        "- x86_64-linux",
        {
          error:
            "bad machine specification: store URL was not found at the first column of a row: '- x86_64-linux'",
        },
      ],
      ["nix@h1 - - +4 08", { listing: [[[SYS], 4, [], []]] }],
      [
        "nix@h1 - - 4294967296",
        {
          error:
            "bad machine specification: failed to convert column #3 in a row: 'nix@h1 - - 4294967296' to 'unsigned int'",
        },
      ],
      [
        "/x - - 1 1.5",
        {
          error:
            "bad machine specification: failed to convert column #4 in a row: '/x - - 1 1.5' to 'unsigned int'",
        },
        { listing: [[[SYS], 1, [], []]] },
      ],
      ["nix@h1 - - 1 1 - - - extra fields here", { listing: [[[SYS], 1, [], []]] }],
      ["/x ,,x86_64-linux,, - 1", { listing: [[["x86_64-linux"], 1, [], []]] }],
      [`@${dir}`, { error: "reading from file: Is a directory" }],
      [
        `@${join(dir, "crlf")}`,
        { error: "bad machine specification: store URL was not found at the first column of a row: '\r'" },
        {
          listing: [
            [[SYS], 1, [], []],
            [[SYS], 1, [], []],
          ],
        },
      ],
      [
        "/m1 - - 1 1 # c; /m2 - - 2 9",
        {
          listing: [
            [[SYS], 1, [], []],
            [[SYS], 2, [], []],
          ],
        },
        // 2.29+: the comment runs to the end of the line, `; /m2 …` included
        { listing: [[[SYS], 1, [], []]] },
      ],
      [`@${join(dir, "sub", "mf").slice(1)}`, { listing: [[["x86_64-linux"], 3, [], []]] }],
      [`@ ${join(dir, "sub", "mf")}`, { listing: [[["x86_64-linux"], 3, [], []]] }],
      [
        `@${join(dir, "mf2")}`,
        {
          listing: [
            [["x86_64-linux"], 3, [], []],
            [[SYS], 1, [], []],
          ],
        },
      ],
      [`@${join(dir, "sub", "mf")} @${join(dir, "valid")}`, { reply: "decline-permanently" }],
    ];

    it("each row gives the spec's result, and our parser agrees", { timeout: 30_000 }, async () => {
      const cs = cases();
      const store = join(scratchDir(), "rows-store");
      const results = await runBuildRemoteMany(
        cs.map(([builders]) => ({
          builders,
          system: "aarch64-none",
          amWilling: false,
          store,
          hook,
          extraSettings: { system: SYS, "build-users-group": "" },
        })),
        4,
      );
      const failures: string[] = [];
      cs.forEach(([spec, expect28, expect230], i) => {
        const expect = n.label === "2.30" && expect230 ? expect230 : expect28;
        try {
          checkRow(spec, expect, results[i]!);
        } catch (e) {
          failures.push((e as Error).message);
        }
      });
      assert.deepEqual(failures, [], `${failures.length} of ${cs.length} rows differ`);
    });

    function checkRow(spec: string, expect: Expect, real: RunBuildRemoteResult): void {
      {
        const ours = parseBuilders({ spec, version, defaultSystem: SYS, fs: nodeFsReader });
        const msg = `${JSON.stringify(spec)}: ${real.stderr}`;
        if ("reply" in expect) {
          assert.equal(real.reply, expect.reply, msg);
          assert.equal(ours.machines.length, 0, msg);
          assert.equal(ours.error, null, msg);
        } else if ("error" in expect) {
          assert.equal(real.reply, null, msg);
          assert.equal(real.error, expect.error, msg);
          assert.equal(ours.error?.message, expect.error, msg);
        } else {
          assert.equal(real.reply, "decline", msg);
          const l = parseNoMachineListing(real.rawMessages.find((m) => m.includes("Failed to find"))!);
          const want = expect.listing.map(([systemTypes, maxJobs, supportedFeatures, mandatoryFeatures]) => ({
            systemTypes,
            maxJobs,
            supportedFeatures,
            mandatoryFeatures,
          }));
          assert.deepEqual(l?.machines, want, msg);
          assert.deepEqual(
            ours.machines.map(({ systemTypes, maxJobs, supportedFeatures, mandatoryFeatures }) => ({
              systemTypes,
              maxJobs,
              supportedFeatures,
              mandatoryFeatures,
            })),
            want,
            msg,
          );
        }
      }
    }

    it("the hook accepts a local-store machine and names it by its URI", async () => {
      const m = join(dir, "store-m1");
      const res = await runBuildRemote({
        builders: `${m} aarch64-none - 1 1`,
        system: "aarch64-none",
        amWilling: false,
        store: join(scratchDir(), "rows-store"),
        hook,
        extraSettings: { "build-users-group": "" },
      });
      assert.equal(res.reply, "accept", res.stderr);
      // 2.30 answers with the store URI as it renders it (`local://` + the path); 2.8 with the column as
      // written. The tool's routing does not model 2.30's form yet (slot files and logs use it too).
      assert.equal(res.acceptedUri, n.label === "2.30" ? `local://${m}` : m);
    });
  });
}
