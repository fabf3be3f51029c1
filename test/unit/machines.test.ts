/**
 * The acceptance table of the spec (§2.6, Nix's own unit tests, plus the additional observed 2.8 rows),
 * pinned for Nix 2.8 and for current Nix. Expectations come from the spec and Nix's tests, not from our output.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type BuildersResult,
  buildersFromNixRemoteSystems,
  formatNoMachineListing,
  type Machine,
  parseBuilders,
  type Reader,
} from "../../src/nix/machines.js";
import { NIX_2_8, NIX_LATEST, type NixVersion } from "../../src/nix/version.js";

const SYS = "TEST_ARCH-TEST_OS";
const B64 =
  "c3NoLXJzYSBBQUFBQjNOemFDMXljMkVBQUFBREFRQUJBQUFDQVFDWWV5R1laNTNzd1VjMUZNSHBWL1BCcXlKaFR5S1JoRkpWWVRpRHlQN2h5c1JGa0w4VDlLOGdhL2Y2L3c3QjN2SjNHSFRIUFkybENiUEdZbGNLd2h6M2ZRbFNNOEViNi95b3ZLajdvM1FsMEx5Y0dzdGJvRmcwWkZKNldncUxsR0ltS0NobUlxOGZ3TW5ZTWUxbnRQeTBUZFZjSU1tOTV3YzF3SjBMd2c3cEVMRmtHazdkeTVvYnM4a3lGZ0pORDVRSmFwQWJjeWp4Z1QzdzdMcktNZ2xzeWhhd01JNVpkMGZsQTVudW5OZ3pid3plYVhLaUsyTW0vdGJXYTU1YTd4QmNYdHpIZGlPSWdSajJlRWxaMGh5bk10YjBmcklsdmxIcEtLaVFaZ3pQdCtIVXQ2bXpRMkRVME52MGYyYnNSU0krOGpJU2pQcmdlcVVHRldMUzVIUTg2N2xSMlpiaWtyclhZNTdqbVFEZk5DRHY1VFBHZU9UekFEd2pjMDc2aFZ3VFJCd3VTZFhtaWNxTS95b3lrWitkV1dnZ25MenE5QU1tdlNZcDhmZkZDcS9CSDBZNUFXWTFHay9vS3hMVTNaOWt3ZDd2UWNFQWFCQ2dxdnVZRGdTaHE1RlhndDM3OVZESWtEL05ZSTg2QXVvajVDRmVNTzlRM2pJSlRadlh6c1VldjVoSnA2djcxSVh5ODVtbTY5R20zcXdicVE1SjVQZDU1Um56SitpaW5BNjZxTEFSc0Y4amNsSnd5ekFXclBoYU9DRVY2bjVMeVhVazhzMW9EVVR4V1pWN25rVkFTbHJ0MllGcjN5dzdjRTRXQVhsemhHcDhocmdLMVVkMUlyeDVnZWRaSnBWcy9uNWVybmJFMUxmb2x5UHUvRUFIWlh6VGd4dHVDUFNobXc9PQo=";
const VALID =
  "nix@scratchy.labs.cs.uu.nl  i686-linux      /home/nix/.ssh/id_scratchy_auto        8 1 kvm\n" +
  "nix@itchy.labs.cs.uu.nl     i686-linux      /home/nix/.ssh/id_scratchy_auto        8 2\n" +
  `nix@poochie.labs.cs.uu.nl   i686-linux      /home/nix/.ssh/id_scratchy_auto        1 2 kvm benchmark ${B64}\n`;
const BAD_FORMAT = "nix@scratchy.labs.cs.uu.nl - - eight\n";

/** An in-memory file system: a string is a file, a code is an error; anything else is ENOENT. */
function memFs(files: Record<string, string | { code: string }>): Reader & { reads: string[] } {
  const reads: string[] = [];
  return {
    reads,
    read(path: string) {
      reads.push(path);
      const f = files[path];
      if (f === undefined) return { ok: false, code: "ENOENT" };
      if (typeof f === "string") return { ok: true, text: f };
      return { ok: false, code: f.code };
    },
  };
}

const FS = memFs({
  "/data/machines.valid": VALID,
  "/data/machines.bad_format": BAD_FORMAT,
  "/dev/null": "",
  "/tmp/bh": { code: "EISDIR" },
  "/tmp/bh/mf": "/m3 - - 1 1\n",
  "/tmp/bh/mf2": "@/tmp/bh/mf\n/m4\n",
  "/tmp/bh/secret": { code: "EACCES" },
  "/tmp/crlf": "/m1 - - 1 1\r\n\r\n/m2\r\n",
  "/tmp/loop": "@/tmp/loop\n",
});

function parse(spec: string, v: NixVersion, fs: Reader = FS): BuildersResult {
  return parseBuilders({ spec, version: v, defaultSystem: SYS, fs });
}

const VERSIONS: [string, NixVersion][] = [
  ["2.8", NIX_2_8],
  ["HEAD", NIX_LATEST],
];

function shape(m: Machine) {
  return {
    storeUri: m.storeUri,
    systemTypes: m.systemTypes,
    sshKey: m.sshKey,
    maxJobs: m.maxJobs,
    speedFactor: m.speedFactor,
    supportedFeatures: m.supportedFeatures,
    mandatoryFeatures: m.mandatoryFeatures,
    sshPublicHostKey: m.sshPublicHostKey,
  };
}

const SCRATCHY_DEFAULTS = {
  storeUri: "ssh://nix@scratchy.labs.cs.uu.nl",
  systemTypes: [SYS],
  sshKey: null,
  maxJobs: 1,
  speedFactor: 1,
  supportedFeatures: [],
  mandatoryFeatures: [],
  sshPublicHostKey: null,
};

const COMPLETE = {
  storeUri: "ssh://nix@scratchy.labs.cs.uu.nl",
  systemTypes: ["i686-linux"],
  sshKey: "/home/nix/.ssh/id_scratchy_auto",
  maxJobs: 8,
  speedFactor: 3,
  supportedFeatures: ["kvm"],
  mandatoryFeatures: ["benchmark"],
  sshPublicHostKey: "SSH+HOST+PUBLIC+KEY+BASE64+ENCODED==",
};

const uris = (r: BuildersResult) => r.machines.map((m) => m.storeUri);

for (const [label, v] of VERSIONS) {
  describe(`machines §2.6 (${label})`, () => {
    it("1 empty builders: no machines", () => {
      const r = parse("", v);
      assert.equal(r.error, null);
      assert.equal(r.machines.length, 0);
    });
    it("2 URI only: defaults", () => {
      const r = parse("nix@scratchy.labs.cs.uu.nl", v);
      assert.deepEqual(r.machines.map(shape), [SCRATCHY_DEFAULTS]);
    });
    it("3 all columns '-': same defaults", () => {
      const r = parse("nix@scratchy.labs.cs.uu.nl - - - - - - -", v);
      assert.deepEqual(r.machines.map(shape), [SCRATCHY_DEFAULTS]);
    });
    it("4 URI with port keeps the port in the URI", () => {
      assert.deepEqual(uris(parse("nix@scratchy.labs.cs.uu.nl:2222", v)), [
        "ssh://nix@scratchy.labs.cs.uu.nl:2222",
      ]);
    });
    it("5 newline separator", () => {
      assert.deepEqual(uris(parse("nix@scratchy.labs.cs.uu.nl\nnix@itchy.labs.cs.uu.nl", v)), [
        "ssh://nix@scratchy.labs.cs.uu.nl",
        "ssh://nix@itchy.labs.cs.uu.nl",
      ]);
    });
    it("6 semicolon separator", () => {
      assert.deepEqual(uris(parse("nix@scratchy.labs.cs.uu.nl ; nix@itchy.labs.cs.uu.nl", v)), [
        "ssh://nix@scratchy.labs.cs.uu.nl",
        "ssh://nix@itchy.labs.cs.uu.nl",
      ]);
    });
    it("7 comments containing ';'", () => {
      const r = parse(
        "# This is a comment ; this is still that comment\n" +
          "nix@scratchy.labs.cs.uu.nl ; nix@itchy.labs.cs.uu.nl\n" +
          "# This is also a comment ; this also is still that comment\n" +
          "nix@scabby.labs.cs.uu.nl\n",
        v,
      );
      if (v === NIX_2_8) {
        assert.equal(
          r.error?.message,
          "bad machine specification: failed to convert column #3 in a row: ' this is still that comment' to 'unsigned int'",
        );
        assert.equal(r.error?.line, null);
      } else {
        assert.equal(r.error, null);
        assert.deepEqual(uris(r), [
          "ssh://nix@scratchy.labs.cs.uu.nl",
          "ssh://nix@itchy.labs.cs.uu.nl",
          "ssh://nix@scabby.labs.cs.uu.nl",
        ]);
      }
    });
    it("8 funny whitespace", () => {
      const r = parse(
        "        # comment ; comment\n   nix@scratchy.labs.cs.uu.nl ; nix@itchy.labs.cs.uu.nl   \n\n    \n\n ;;; \n\n ; ; \nnix@scabby.labs.cs.uu.nl\n\n",
        v,
      );
      if (v === NIX_2_8) {
        assert.equal(
          r.error?.message,
          "bad machine specification: store URL was not found at the first column of a row: '        '",
        );
      } else {
        assert.equal(r.error, null);
        assert.equal(r.machines.length, 3);
      }
    });
    it("9 complete single builder", () => {
      const r = parse(
        "nix@scratchy.labs.cs.uu.nl     i686-linux      /home/nix/.ssh/id_scratchy_auto        8 3 kvm benchmark SSH+HOST+PUBLIC+KEY+BASE64+ENCODED==",
        v,
      );
      assert.deepEqual(r.machines.map(shape), [COMPLETE]);
    });
    it("10 tab delimiters", () => {
      const r = parse(
        "nix@scratchy.labs.cs.uu.nl\ti686-linux\t/home/nix/.ssh/id_scratchy_auto\t8\t3\tkvm\tbenchmark\tSSH+HOST+PUBLIC+KEY+BASE64+ENCODED==",
        v,
      );
      assert.deepEqual(r.machines.map(shape), [COMPLETE]);
    });
    it("11 multiple systems and features", () => {
      const r = parse(
        "nix@scratchy.labs.cs.uu.nl Arch1,Arch2 - - - SupportedFeature1,SupportedFeature2 MandatoryFeature1,MandatoryFeature2",
        v,
      );
      assert.deepEqual(r.machines.map(shape), [
        {
          ...SCRATCHY_DEFAULTS,
          systemTypes: ["Arch1", "Arch2"],
          supportedFeatures: ["SupportedFeature1", "SupportedFeature2"],
          mandatoryFeatures: ["MandatoryFeature1", "MandatoryFeature2"],
        },
      ]);
    });
    const row = "nix@scratchy.labs.cs.uu.nl";
    it("12 max-jobs 'eight'", () => {
      const r = parse(`${row} - - eight`, v);
      assert.equal(
        r.error?.message,
        `bad machine specification: failed to convert column #3 in a row: '${row} - - eight' to 'unsigned int'`,
      );
      assert.equal(r.error?.kind, "FormatError");
    });
    it("13 max-jobs -1", () => {
      assert.match(parse(`${row} - - -1`, v).error?.message ?? "", /column #3 .* to 'unsigned int'$/);
    });
    it("14 speed 'three'", () => {
      const t = v === NIX_2_8 ? "unsigned int" : "float";
      assert.equal(
        parse(`${row} - - 8 three`, v).error?.message,
        `bad machine specification: failed to convert column #4 in a row: '${row} - - 8 three' to '${t}'`,
      );
    });
    it("15 speed -3", () => {
      const e = parse(`${row} - - 8 -3`, v).error;
      if (v === NIX_2_8) {
        assert.equal(e?.kind, "FormatError");
        assert.match(e?.message ?? "", /column #4 .* to 'unsigned int'$/);
      } else {
        assert.equal(e?.kind, "UsageError");
        assert.equal(e?.message, "speed factor must be >= 0");
      }
    });
    it("16 bad base64", () => {
      const e = parse(`${row} - - 8 3 - - BAD_BASE64`, v).error;
      assert.equal(e?.kind, "FormatError");
      const r = `${row} - - 8 3 - - BAD_BASE64`;
      if (v === NIX_2_8) {
        assert.equal(
          e?.message,
          `bad machine specification: a column #7 in a row: '${r}' is not valid base64 string: error: invalid character in Base64 string: '\x1b'`,
        );
      } else {
        assert.match(e?.message ?? "", /^invalid character in Base64 string: '.'$/);
        assert.deepEqual(e?.trace, [`while parsing machine specification at a column #7 in a row: '${r}'`]);
      }
    });
    it("17 file reference", () => {
      const r = parse("@/data/machines.valid", v);
      assert.equal(r.error, null);
      assert.deepEqual(
        r.machines.map((m) => [
          m.storeUri,
          m.systemTypes,
          m.sshKey,
          m.maxJobs,
          m.speedFactor,
          m.supportedFeatures,
          m.mandatoryFeatures,
        ]),
        [
          [
            "ssh://nix@scratchy.labs.cs.uu.nl",
            ["i686-linux"],
            "/home/nix/.ssh/id_scratchy_auto",
            8,
            1,
            ["kvm"],
            [],
          ],
          ["ssh://nix@itchy.labs.cs.uu.nl", ["i686-linux"], "/home/nix/.ssh/id_scratchy_auto", 8, 2, [], []],
          [
            "ssh://nix@poochie.labs.cs.uu.nl",
            ["i686-linux"],
            "/home/nix/.ssh/id_scratchy_auto",
            1,
            2,
            ["kvm"],
            ["benchmark"],
          ],
        ],
      );
      assert.equal(r.machines[2]!.sshPublicHostKey, B64);
      assert.deepEqual(
        r.machines.map((m) => m.origin),
        [1, 2, 3].map((line) => ({ file: "/data/machines.valid", line })),
      );
      assert.deepEqual(r.includes, [
        {
          path: "/data/machines.valid",
          resolved: "/data/machines.valid",
          found: true,
          from: { file: null, line: null },
        },
      ]);
      // the poochie key decodes to an RSA public key line: no lint finding
      assert.equal(r.warnings.filter((w) => w.code === "host-key-not-public-key").length, 0);
    });
    it("18 reference to an empty file", () => {
      const r = parse("@/dev/null", v);
      assert.equal(r.error, null);
      assert.equal(r.machines.length, 0);
    });
    it("19 reference to a missing file is ignored", () => {
      const r = parse("@/not/a/file", v);
      assert.equal(r.error, null);
      assert.equal(r.machines.length, 0);
      assert.deepEqual(
        r.includes.map((i) => i.found),
        [false],
      );
    });
    it("20 reference to a bad file: error with that file's line", () => {
      const r = parse("@/data/machines.bad_format", v);
      assert.equal(r.error?.kind, "FormatError");
      assert.equal(r.error?.file, "/data/machines.bad_format");
      assert.equal(r.error?.line, 1);
      assert.equal(r.error?.row, "nix@scratchy.labs.cs.uu.nl - - eight");
    });

    // Additional observed 2.8 cases (and what current Nix does with them)
    it("a; ;b", () => {
      const r = parse("/a; ;/b", v);
      if (v === NIX_2_8) {
        assert.equal(
          r.error?.message,
          "bad machine specification: store URL was not found at the first column of a row: ' '",
        );
      } else assert.deepEqual(uris(r), ["/a", "/b"]);
    });
    it("a, blank line, b", () => {
      const r = parse("/a\n   \n/b", v);
      if (v === NIX_2_8) {
        assert.equal(r.error?.row, "   ");
        assert.equal(r.error?.line, null);
      } else assert.deepEqual(uris(r), ["/a", "/b"]);
    });
    it("indented comment", () => {
      const r = parse("  # comment\nfoo", v);
      if (v === NIX_2_8) assert.equal(r.error?.row, "  ");
      else assert.deepEqual(uris(r), ["ssh://foo"]);
    });
    it("'-' as the URI", () => {
      assert.equal(
        parse("- x86_64-linux", v).error?.message,
        "bad machine specification: store URL was not found at the first column of a row: '- x86_64-linux'",
      );
    });
    it("+4 and 08", () => {
      const m = parse("nix@h1 - - +4 08", v).machines[0]!;
      assert.equal(m.maxJobs, 4);
      assert.equal(m.speedFactor, 8);
    });
    for (const bad of ["4294967296", "4.0", "0x10", "1e3"]) {
      it(`max-jobs ${bad} is rejected`, () => {
        assert.match(parse(`nix@h1 - - ${bad}`, v).error?.message ?? "", /column #3/);
      });
    }
    it("speed 1.5", () => {
      const r = parse("/x - - 1 1.5", v);
      if (v === NIX_2_8)
        assert.match(r.error?.message ?? "", /column #4 in a row: '\/x - - 1 1.5' to 'unsigned int'/);
      else assert.equal(r.machines[0]!.speedFactor, 1.5);
    });
    it("speed 0 becomes 1", () => {
      assert.equal(parse("nix@h1 - - 1 0", v).machines[0]!.speedFactor, 1);
    });
    it("extra fields are ignored (and linted)", () => {
      const r = parse("nix@h1 - - 1 1 - - - extra fields here", v);
      assert.equal(r.error, null);
      assert.equal(r.machines.length, 1);
      assert.ok(r.warnings.some((w) => w.code === "extra-fields"));
    });
    it("empty system items are dropped", () => {
      assert.deepEqual(parse("/x ,,x86_64-linux,, - 1", v).machines[0]!.systemTypes, ["x86_64-linux"]);
    });
    it("missing include: 0 machines", () => {
      assert.equal(parse("@/tmp/bh/nonexist", v).machines.length, 0);
    });
    it("include of a directory is fatal", () => {
      const e = parse("@/tmp/bh", v).error;
      assert.equal(e?.kind, "SysError");
      assert.equal(
        e?.message,
        v === NIX_2_8 ? "reading from file: Is a directory" : "read of 65536 bytes: Is a directory",
      );
    });
    it("unreadable include is fatal", () => {
      const e = parse("@/tmp/bh/secret", v).error;
      assert.equal(
        e?.message,
        v === NIX_2_8
          ? "opening file '/tmp/bh/secret': Permission denied"
          : 'opening file "/tmp/bh/secret": Permission denied',
      );
    });
    it("CRLF file with a blank line", () => {
      const r = parse("@/tmp/crlf", v);
      if (v === NIX_2_8) {
        assert.equal(r.error?.row, "\r");
        assert.equal(r.error?.line, 2);
        assert.equal(r.error?.file, "/tmp/crlf");
      } else assert.deepEqual(uris(r), ["/m1", "/m2"]);
    });
    it("leading space before @", () => {
      const r = parse(" @/tmp/nonexist", v);
      if (v === NIX_2_8) {
        assert.deepEqual(uris(r), [" @/tmp/nonexist".trim()]);
        assert.ok(r.warnings.some((w) => w.code === "not-an-include"));
      } else {
        assert.equal(r.machines.length, 0);
        assert.deepEqual(
          r.includes.map((i) => i.path),
          ["/tmp/nonexist"],
        );
      }
    });
    it("'# c;' inside a row", () => {
      const r = parse("/m1 - - 1 1 # c; /m2 - - 1 9", v);
      if (v === NIX_2_8) {
        assert.deepEqual(uris(r), ["/m1", "/m2"]);
        assert.ok(r.warnings.some((w) => w.code === "semicolon-in-comment"));
      } else assert.deepEqual(uris(r), ["/m1"]);
    });
    it("relative @ path is read from /", () => {
      const fs = memFs({ "/tmp/bh/mf": "/m3\n" });
      const r = parseBuilders({ spec: "@tmp/bh/mf", version: v, defaultSystem: SYS, fs, cwd: "/" });
      assert.deepEqual(fs.reads, ["/tmp/bh/mf"]);
      assert.deepEqual(uris(r), ["/m3"]);
      assert.equal(r.includes[0]!.path, "tmp/bh/mf");
    });
    it("'@ /path' works (trimmed)", () => {
      assert.deepEqual(uris(parse("@ /tmp/bh/mf", v)), ["/m3"]);
    });
    it("nested include", () => {
      const r = parse("@/tmp/bh/mf2", v);
      assert.deepEqual(uris(r), ["/m3", "/m4"]);
      assert.deepEqual(
        r.machines.map((m) => m.origin),
        [
          { file: "/tmp/bh/mf", line: 1 },
          { file: "/tmp/bh/mf2", line: 2 },
        ],
      );
      assert.deepEqual(
        r.includes.map((i) => [i.path, i.from]),
        [
          ["/tmp/bh/mf2", { file: null, line: null }],
          ["/tmp/bh/mf", { file: "/tmp/bh/mf2", line: 1 }],
        ],
      );
    });
    it("NIX_REMOTE_SYSTEMS with two files", () => {
      const spec = buildersFromNixRemoteSystems("/tmp/bh/mf:/data/machines.valid", v);
      const r = parse(spec, v);
      if (v === NIX_2_8) {
        assert.equal(spec, "@/tmp/bh/mf @/data/machines.valid");
        assert.equal(r.machines.length, 0);
        assert.equal(r.includes[0]!.path, "/tmp/bh/mf @/data/machines.valid");
      } else assert.equal(r.machines.length, 4);
    });
    it("an include cycle is reported (Nix would recurse until it crashes)", () => {
      const r = parse("@/tmp/loop", v);
      assert.equal(r.error?.nix, false);
      assert.match(r.error?.message ?? "", /includes itself/);
    });
  });
}

describe("machines: errors, problems and origins", () => {
  it("a read error wins over an earlier bad row (Nix expands before parsing)", () => {
    const r = parse("nix@h - - x ;@/tmp/bh", NIX_2_8);
    assert.equal(r.error?.message, "reading from file: Is a directory");
    assert.equal(r.problems.length, 2);
    assert.match(r.problems[1]!.message, /column #3/);
  });
  it("problems lists every bad row with file and line; the good rows still parse", () => {
    const fs = memFs({ "/etc/nix/machines": "/a - - 1 1\n/b - - x\n/c\n/d - - 1 y\n" });
    const r = parseBuilders({
      spec: "@/etc/nix/machines",
      version: NIX_LATEST,
      defaultSystem: "x86_64-linux",
      fs,
      origin: { file: "/etc/nix/nix.conf", line: 7 },
    });
    assert.match(r.error?.message ?? "", /column #3 in a row: '\/b - - x'/);
    assert.deepEqual(
      r.problems.map((p) => [p.file, p.line]),
      [
        ["/etc/nix/machines", 2],
        ["/etc/nix/machines", 4],
      ],
    );
    assert.deepEqual(uris(r), ["/a", "/c"]);
    assert.deepEqual(r.includes[0]!.from, { file: "/etc/nix/nix.conf", line: 7 });
  });
  it("inline rows carry the nix.conf origin; ';'-separated rows share the line", () => {
    const r = parseBuilders({
      spec: "/a ; /b",
      version: NIX_2_8,
      defaultSystem: "x86_64-linux",
      fs: memFs({}),
      origin: { file: "/etc/nix/nix.conf", line: 3 },
    });
    assert.deepEqual(
      r.machines.map((m) => m.origin),
      [
        { file: "/etc/nix/nix.conf", line: 3 },
        { file: "/etc/nix/nix.conf", line: 3 },
      ],
    );
  });
  it("line numbers in a file count newlines, also for ';'-joined rows", () => {
    const fs = memFs({ "/m": "# head\n/a;/b\n\n/c\n" });
    const r = parse("@/m", NIX_2_8, fs);
    assert.deepEqual(
      r.machines.map((m) => [m.storeUri, m.origin.line]),
      [
        ["/a", 2],
        ["/b", 2],
        ["/c", 4],
      ],
    );
  });
  it("2.8 keeps system order and duplicates; HEAD sorts and de-duplicates", () => {
    assert.deepEqual(parse("/x b,a,b", NIX_2_8).machines[0]!.systemTypes, ["b", "a", "b"]);
    assert.deepEqual(parse("/x b,a,b", NIX_LATEST).machines[0]!.systemTypes, ["a", "b"]);
  });
  it("a host key that decodes to something other than a public key line is a lint finding, not an error", () => {
    const r = parse("nix@h - - 1 1 - - SSH+HOST+PUBLIC+KEY+BASE64+ENCODED==", NIX_2_8);
    assert.equal(r.error, null);
    assert.deepEqual(
      r.warnings.filter((w) => w.code === "host-key-not-public-key").map((w) => w.row),
      ["nix@h - - 1 1 - - SSH+HOST+PUBLIC+KEY+BASE64+ENCODED=="],
    );
  });
  it("lints unknown systems with a suggestion", () => {
    const w = parse("nix@h x86_64,linux-aarch64", NIX_2_8).warnings.filter(
      (x) => x.code === "unknown-system",
    );
    assert.deepEqual(
      w.map((x) => x.suggestion),
      ["x86_64-linux", "aarch64-linux"],
    );
  });
  it("lints ports for 2.8, an invalid ssh host, and max-jobs 0", () => {
    const codes = (s: string, v: NixVersion) => parse(s, v).warnings.map((w) => w.code);
    assert.ok(codes("nix@h:2222", NIX_2_8).includes("port-unsupported"));
    assert.ok(!codes("nix@h:2222", NIX_LATEST).includes("port-unsupported"));
    assert.ok(codes("ssh://-oProxyCommand=x", NIX_2_8).includes("invalid-ssh-host"));
    assert.ok(codes("/x - - 0", NIX_2_8).includes("max-jobs-zero"));
    assert.ok(codes("nix@h - key", NIX_LATEST).includes("relative-ssh-key"));
    assert.ok(!codes("nix@h - key", NIX_2_8).includes("relative-ssh-key"));
  });
});

describe("formatNoMachineListing", () => {
  const machines = [
    {
      systemTypes: ["x86_64-linux", "i686-linux"],
      maxJobs: 2,
      supportedFeatures: ["kvm", "big"],
      mandatoryFeatures: [],
    },
    { systemTypes: ["riscv64-linux"], maxJobs: 1, supportedFeatures: [], mandatoryFeatures: ["bench"] },
  ];
  it("2.8", () => {
    assert.equal(
      formatNoMachineListing({
        version: NIX_2_8,
        drvPath: "/nix/store/fjym90m5r8qrc51g6cxblkdf7z4jk19s-x.drv",
        system: "aarch64-linux",
        requiredFeatures: ["kvm", "big"],
        machines,
      }),
      "Failed to find a machine for remote build!\n" +
        "derivation: fjym90m5r8qrc51g6cxblkdf7z4jk19s-x.drv\n" +
        "required (system, features): (aarch64-linux, big, kvm)\n" +
        "2 available machines:\n" +
        "(systems, maxjobs, supportedFeatures, mandatoryFeatures)\n" +
        "(x86_64-linux, i686-linux, 2, big, kvm, )\n" +
        "(riscv64-linux, 1, , bench)",
    );
  });
  it("HEAD", () => {
    assert.equal(
      formatNoMachineListing({
        version: NIX_LATEST,
        drvPath: null,
        system: "aarch64-linux",
        requiredFeatures: [],
        machines,
      }),
      "Failed to find a machine for remote build!\n" +
        "derivation: <unknown>\n" +
        "required (system, features): (aarch64-linux, [])\n" +
        "2 available machines:\n" +
        "(systems, maxjobs, supportedFeatures, mandatoryFeatures)\n" +
        "([i686-linux, x86_64-linux], 2, [big, kvm], [])\n" +
        "([riscv64-linux], 1, [], [bench])",
    );
  });
});
