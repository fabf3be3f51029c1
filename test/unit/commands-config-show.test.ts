import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { runConfig } from "../../src/commands/config.js";
import { runShow } from "../../src/commands/show.js";
import { captureIo } from "../support/capture-io.js";

const root = mkdtempSync(join(tmpdir(), "nb-cmd-"));
after(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
/** A config tree: NIX_CONF_DIR with nix.conf, one user file, and any extra files. */
function tree(systemConf: string, userConf: string, files: Record<string, string> = {}): NodeJS.ProcessEnv {
  const dir = join(root, `t${n++}`);
  mkdirSync(join(dir, "etc"), { recursive: true });
  writeFileSync(join(dir, "etc", "nix.conf"), systemConf);
  writeFileSync(join(dir, "user.conf"), userConf);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return {
    PATH: process.env["PATH"],
    HOME: dir,
    NIX_CONF_DIR: join(dir, "etc"),
    NIX_USER_CONF_FILES: join(dir, "user.conf"),
    // Keep the view on this process's side: a local store under the tree, no daemon.
    NIX_REMOTE: join(dir, "store"),
    DIR: dir,
  };
}

describe("config command", () => {
  it("gives values with origins, and warns about extra-builders like Nix", async () => {
    const env = tree(
      "max-jobs = 4\nbuilders = @/etc/nix/machines\n",
      "extra-builders = ssh://a x86_64-linux\ncores = 3\n",
    );
    const io = captureIo(env);
    const code = await runConfig({ json: true }, io);
    assert.equal(code, 0);
    const out = JSON.parse(io.stdout);
    assert.equal(out.settings["max-jobs"].value, 4);
    assert.equal(out.settings["max-jobs"].origin[0].file, join(env["DIR"]!, "etc", "nix.conf"));
    assert.equal(out.settings["max-jobs"].origin[0].line, 1);
    assert.equal(out.settings.cores.value, 3);
    assert.equal(out.settings.cores.overridden, true);
    assert.equal(out.settings["max-jobs"].overridden, false);
    assert.ok(
      out.warnings.some((w: { message: string }) => w.message === "unknown setting 'extra-builders'"),
    );
    assert.deepEqual(
      out.files.map((f: { role: string; exists: boolean }) => [f.role, f.exists]),
      [
        ["system", true],
        ["user", true],
      ],
    );
  });

  it("exits 2 with Nix's own text on a bad line", async () => {
    const env = tree("max-jobs=4\n", "");
    const io = captureIo(env);
    const code = await runConfig({ json: true }, io);
    assert.equal(code, 2);
    const out = JSON.parse(io.stdout);
    assert.equal(
      out.error.message,
      `illegal configuration line 'max-jobs=4' in '${join(env["DIR"]!, "etc", "nix.conf")}'`,
    );
  });

  it("agrees with nix show-config --json on the modelled settings", async (t) => {
    if (!existsSync("/usr/bin/nix")) return t.skip("Nix is not installed");
    const env = tree(
      "substituters = a\nextra-substituters = b\nsystem-features = z a\nbuild-max-jobs = 7\n",
      "extra-system-features = m a\nkeep-going = yes\ntrusted-users = root @wheel\nextra-extra-platforms = riscv64-linux\n",
    );
    const io = captureIo(env);
    assert.equal(await runConfig({ json: true }, io), 0);
    const ours = JSON.parse(io.stdout).settings;
    const nix = JSON.parse(
      execFileSync(
        "/usr/bin/nix",
        ["--extra-experimental-features", "nix-command", "show-config", "--json"],
        {
          env,
          encoding: "utf8",
        },
      ),
    );
    for (const name of [
      "substituters",
      "system-features",
      "max-jobs",
      "keep-going",
      "trusted-users",
      "extra-platforms",
      "builders",
      "cores",
    ]) {
      assert.deepEqual(ours[name].value, nix[name].value, name);
    }
  });
});

describe("show command", () => {
  it("lists machines with origins, nulls for unset fields", async () => {
    const env = tree("", "");
    const machines = join(env["DIR"]!, "machines");
    writeFileSync(machines, "# builders\nnix@b1 aarch64-linux /k 2 3 big-parallel kvm\nb2\n");
    writeFileSync(env["NIX_USER_CONF_FILES"]!, `builders = @${machines}\n`);
    const io = captureIo(env);
    assert.equal(await runShow({ json: true }, io), 0);
    const out = JSON.parse(io.stdout);
    assert.equal(out.machines.length, 2);
    assert.deepEqual(out.machines[0], {
      storeUri: "ssh://nix@b1",
      systemTypes: ["aarch64-linux"],
      sshKey: "/k",
      maxJobs: 2,
      speedFactor: 3,
      supportedFeatures: ["big-parallel"],
      mandatoryFeatures: ["kvm"],
      sshPublicHostKey: null,
      origin: { file: machines, line: 2 },
    });
    assert.equal(out.machines[1].sshKey, null);
    assert.equal(out.machines[1].origin.line, 3);
    assert.deepEqual(out.errors, []);
  });

  it("exits 2 with Nix's exact machines error (2.8 splits on ';' inside comments)", async () => {
    const env = tree("", "");
    const machines = join(env["DIR"]!, "machines");
    writeFileSync(machines, "# a comment ; this is still that comment\nnix@b1\n");
    writeFileSync(env["NIX_USER_CONF_FILES"]!, `builders = @${machines}\n`);
    const io28 = captureIo(env);
    assert.equal(await runShow({ json: true, nixVersion: "2.8" }, io28), 2);
    const out = JSON.parse(io28.stdout);
    assert.equal(
      out.errors[0].message,
      "bad machine specification: failed to convert column #3 in a row: ' this is still that comment' to 'unsigned int'",
    );
    assert.equal(out.errors[0].file, machines);
    const ioHead = captureIo(env);
    assert.equal(await runShow({ json: true, nixVersion: "2.35" }, ioHead), 0);
    assert.equal(JSON.parse(ioHead.stdout).machines.length, 1);
  });
});
