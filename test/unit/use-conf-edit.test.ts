import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { parseConfText } from "../../src/nix/conf.js";
import {
  assignedName,
  buildersEntries,
  DISABLED_PREFIX,
  machineNames,
  machineSourceText,
  machinesFileText,
  nixosSnippet,
  selectMachines,
  setConfSetting,
  unifiedDiff,
} from "../../src/nix/conf-edit.js";
import { parseBuilders } from "../../src/nix/machines.js";
import { NIX_2_8 } from "../../src/nix/version.js";

const VALUE = "@/var/lib/hercules-ci-agent/.config/nix/machines";

describe("setConfSetting: nix.conf editing keeps every other line", () => {
  test("replaces the last builders line in place, keeping indentation and its comment", () => {
    const text =
      "# mine\nbuilders = ssh://a x86_64-linux\n  builders = @/etc/nix/other # agent's\nmax-jobs = 0\n";
    const r = setConfSetting(text, "builders", VALUE);
    assert.equal(
      r.text,
      `# mine\nbuilders = ssh://a x86_64-linux\n  builders = ${VALUE} # agent's\nmax-jobs = 0\n`,
    );
    assert.deepEqual(r.changes, ["line 3: builders set"]);
  });

  test("appends with a comment when there is no builders line; adds the missing final newline", () => {
    const r = setConfSetting("substituters = https://c\nmax-jobs = 0", "builders", VALUE, {
      comment: "by us",
    });
    assert.equal(r.text, `substituters = https://c\nmax-jobs = 0\n# by us\nbuilders = ${VALUE}\n`);
    assert.equal(setConfSetting("", "builders", VALUE).text, `builders = ${VALUE}\n`);
  });

  test("keeps a file without final newline that way when it only replaces", () => {
    const r = setConfSetting("builders = x", "builders", VALUE);
    assert.equal(r.text, `builders = ${VALUE}`);
  });

  test("a name inside a comment or a longer name is not the setting", () => {
    const text = "# builders = old\nbuilders-use-substitutes = true\nextra-builders = ssh://b\n";
    const r = setConfSetting(text, "builders", VALUE, { disable: ["extra-builders"] });
    assert.equal(
      r.text,
      `# builders = old\nbuilders-use-substitutes = true\n${DISABLED_PREFIX}extra-builders = ssh://b\nbuilders = ${VALUE}\n`,
    );
    assert.deepEqual(r.changes, ["line 3: commented out 'extra-builders'", "line 4: builders added"]);
  });

  test("the result parses, and Nix applies our value", () => {
    const text = "builders = a\r\ninclude /etc/x\nbuilders = b\n";
    const r = setConfSetting(text, "builders", VALUE);
    const p = parseConfText(r.text, "/x/nix.conf", NIX_2_8);
    assert.equal(p.error, null);
    const sets = p.lines.flatMap((l) => (l.kind === "set" && l.name === "builders" ? [l.value] : []));
    assert.equal(sets.at(-1), VALUE);
    assert.deepEqual(r.laterIncludes, []);
    assert.deepEqual(setConfSetting("builders = a\ninclude /x\n", "builders", VALUE).laterIncludes, [2]);
  });

  const line = fc.oneof(
    fc.constantFrom(
      "",
      "# comment",
      "  # indented = comment",
      "max-jobs = 4",
      "extra-platforms = aarch64-linux",
    ),
    fc.constantFrom(
      "builders = ssh://x",
      "builders=@/etc/nix/machines",
      "\tbuilders = a # c",
      "builders =\r",
    ),
    fc.constantFrom("extra-builders = ssh://y", "include /etc/nix/other.conf", "sandbox = true\r"),
    fc
      .string({ maxLength: 30 })
      .filter((s) => !s.includes("\n"))
      .map((s) => `# ${s}`),
    fc.uint8Array({ maxLength: 12 }).map((b) => `# ${Buffer.from(b).toString("latin1").replace(/\n/g, "")}`),
  );

  test("property: every line not assigning builders / extra-builders is kept, in order, byte for byte", () => {
    fc.assert(
      fc.property(fc.array(line, { maxLength: 25 }), fc.boolean(), (lines, finalNl) => {
        const text = lines.join("\n") + (finalNl && lines.length ? "\n" : "");
        const r = setConfSetting(text, "builders", VALUE, { disable: ["extra-builders"] });
        const keep = (l: string) => assignedName(l) !== "builders" && assignedName(l) !== "extra-builders";
        const before = text.split("\n").filter(keep);
        const after = r.text
          .split("\n")
          .filter((l) => !l.startsWith(DISABLED_PREFIX) && !l.startsWith("# set by"))
          .filter(keep);
        // The appended line may add one trailing "" (final newline); compare without trailing blanks.
        const trim = (a: string[]) => {
          const c = [...a];
          while (c.length && c[c.length - 1] === "") c.pop();
          return c;
        };
        assert.deepEqual(trim(after), trim(before));
        // Exactly one effective builders value, ours.
        const effective = r.text
          .split("\n")
          .filter((l) => assignedName(l) === "builders")
          .at(-1);
        assert.ok(effective?.includes(`builders = ${VALUE}`));
        // Idempotent.
        assert.equal(setConfSetting(r.text, "builders", VALUE, { disable: ["extra-builders"] }).text, r.text);
      }),
      { numRuns: 400 },
    );
  });
});

function machinesOf(text: string) {
  return parseBuilders({
    spec: "@/etc/nix/machines",
    version: NIX_2_8,
    defaultSystem: "x86_64-linux",
    fs: { read: (p) => (p === "/etc/nix/machines" ? { ok: true, text } : { ok: false, code: "ENOENT" }) },
  }).machines;
}

const MACHINES =
  "# system builders\n" +
  "ssh://nix@b1.example aarch64-linux /root/.ssh/k 2 1 big-parallel\n" +
  "ssh-ng://nix@B2.example:2222 aarch64-linux - 4 2   # fast one\r\n" +
  "b3 x86_64-darwin\n" +
  "ssh://other@b1.example?ssh-key=/k aarch64-linux\n";

describe("machine selection by name, host, URI", () => {
  const ms = machinesOf(MACHINES);

  test("names of a machine", () => {
    assert.deepEqual(machineNames(ms[1]!).sort(), [
      "B2.example",
      "B2.example:2222",
      "nix@B2.example:2222",
      "ssh-ng://nix@B2.example:2222",
    ]);
    assert.ok(machineNames(ms[2]!).includes("b3"), "a bare host is a name (Nix makes it ssh://b3)");
    assert.ok(machineNames(ms[3]!).includes("ssh://other@b1.example"), "URI without its parameters");
  });

  test("by host (case-insensitive), by user@host, by full URI", () => {
    assert.deepEqual(
      selectMachines(ms, ["b2.example"]).chosen.map((m) => m.storeUri),
      ["ssh-ng://nix@B2.example:2222"],
    );
    assert.deepEqual(
      selectMachines(ms, ["nix@b1.example"]).chosen.map((m) => m.storeUri),
      ["ssh://nix@b1.example"],
    );
    assert.deepEqual(
      selectMachines(ms, ["ssh://other@b1.example?ssh-key=/k"]).chosen.map((m) => m.storeUri),
      ["ssh://other@b1.example?ssh-key=/k"],
    );
    assert.deepEqual(selectMachines(ms, ["b3"]).chosen.length, 1);
  });

  test("a host that two lines use matches both (reported as ambiguous); unknown names are reported", () => {
    const s = selectMachines(ms, ["b1.example", "nope", "b3"]);
    assert.deepEqual(
      s.chosen.map((m) => m.storeUri),
      ["ssh://nix@b1.example", "ssh://b3", "ssh://other@b1.example?ssh-key=/k"],
    );
    assert.deepEqual(s.unmatched, ["nope"]);
    assert.deepEqual(s.ambiguous, [{ name: "b1.example", count: 2 }]);
  });

  test("the line is copied byte for byte from its machines file (comment, CR and all)", () => {
    const bytes = Buffer.from(MACHINES.replace("fast one", "schnell \xfc"), "latin1").toString("latin1");
    const m = machinesOf(bytes)[1]!;
    assert.equal(
      machineSourceText(m, bytes, 1),
      "ssh-ng://nix@B2.example:2222 aarch64-linux - 4 2   # schnell \xfc\r",
    );
    // Two machines on one line (2.8 splits on ';'): only this machine's row.
    assert.equal(machineSourceText(m, bytes, 2), m.row.trim());
    // Inline builders value (no file): the row.
    assert.equal(machineSourceText(m, null, 1), m.row.trim());
  });
});

describe("machines file, builders entries, NixOS options", () => {
  test("--append keeps the system's entries first", () => {
    assert.deepEqual(buildersEntries("@/etc/nix/machines ; ssh://a x86_64-linux # c\n@rel"), [
      "@/etc/nix/machines",
      "ssh://a x86_64-linux",
      "@/rel",
    ]);
    const t = machinesFileText({
      user: "u",
      keep: ["@/etc/nix/machines"],
      lines: [],
      given: ["ssh://x aarch64-linux"],
    });
    assert.match(t, /\n@\/etc\/nix\/machines\n# Given on the command line:\nssh:\/\/x aarch64-linux\n$/);
    const m = machinesOf(t.replace("@/etc/nix/machines", ""));
    assert.equal(m.length, 1, "comment lines are not machines");
  });

  test("lines given on the command line are labelled as such, not as copied from the system's builders (issue 16 item 15)", () => {
    const t = machinesFileText({
      user: "u",
      keep: [],
      lines: ["ssh://a x86_64-linux"],
      given: ["ssh://b aarch64-linux"],
    });
    assert.match(
      t,
      /# Copied from the system's builders:\nssh:\/\/a x86_64-linux\n# Given on the command line:\nssh:\/\/b aarch64-linux\n$/,
    );
    const only = machinesFileText({ user: "u", keep: [], lines: [], given: ["ssh://b aarch64-linux"] });
    assert.doesNotMatch(only, /Copied from/);
    assert.match(only, /# Given on the command line:\nssh:\/\/b aarch64-linux\n$/);
  });

  test("the machines file parses to exactly the chosen machines, with Nix 2.8's ';'-before-'#' splitting too", () => {
    const lines = [
      "ssh://nix@b1.example aarch64-linux - 2 1 - - -",
      "ssh://nix@b2.example aarch64-linux # fast",
    ];
    const t = machinesFileText({ user: "hercules-ci-agent", keep: [], lines });
    for (const version of [NIX_2_8, { major: 2, minor: 35, patch: 0 }]) {
      const r = parseBuilders({
        spec: "@/m",
        version,
        defaultSystem: "x86_64-linux",
        fs: { read: () => ({ ok: true, text: t }) },
      });
      assert.equal(r.error, null);
      assert.deepEqual(
        r.machines.map((m) => m.storeUri),
        ["ssh://nix@b1.example", "ssh://nix@b2.example"],
      );
    }
  });

  test("NixOS snippet names the agent's nixSettings and nix.buildMachines", () => {
    const ms = machinesOf(MACHINES);
    const s = nixosSnippet({ machines: [ms[1]!], lines: [ms[1]!.row.trim()], agent: true, append: false });
    assert.match(s, /services\.hercules-ci-agent\.settings\.nixSettings\.builders = "ssh-ng:\/\/nix@B2/);
    assert.match(s, /hostName = "B2\.example:2222";/);
    assert.match(s, /sshUser = "nix";/);
    assert.match(s, /protocol = "ssh-ng";/);
    assert.match(s, /maxJobs = 4;/);
  });
});

describe("unifiedDiff", () => {
  test("equal texts give nothing", () => {
    assert.equal(unifiedDiff("a\n", "a\n", { old: "x", new: "x" }), "");
  });

  test("a changed line with context, deletions before additions", () => {
    const d = unifiedDiff("1\n2\n3\nbuilders = a\n5\n", "1\n2\n3\nbuilders = b\n5\n", { old: "f", new: "f" });
    assert.equal(d, "--- f\n+++ f\n@@ -1,5 +1,5 @@\n 1\n 2\n 3\n-builders = a\n+builders = b\n 5\n");
  });

  test("creation and removal use /dev/null", () => {
    assert.equal(
      unifiedDiff(null, "x\n", { old: "f", new: "f" }),
      "--- /dev/null\n+++ f\n@@ -0,0 +1,1 @@\n+x\n",
    );
    assert.equal(
      unifiedDiff("x\n", null, { old: "f", new: "f" }),
      "--- f\n+++ /dev/null\n@@ -1,1 +0,0 @@\n-x\n",
    );
  });

  test("far apart changes make two hunks", () => {
    const a = Array.from({ length: 20 }, (_, i) => `l${i}`).join("\n") + "\n";
    const b = a.replace("l1\n", "L1\n").replace("l18\n", "L18\n");
    const d = unifiedDiff(a, b, { old: "f", new: "f" });
    assert.equal(d.match(/^@@/gm)?.length, 2);
    assert.match(d, /@@ -1,5 \+1,5 @@/);
    assert.match(d, /@@ -16,5 \+16,5 @@/);
  });
});
