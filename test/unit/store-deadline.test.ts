// Every subprocess has a deadline: `nix-daemon --stdio` that never answers the handshake is killed,
// and the caller gets a one-line StoreAccessError instead of waiting forever.
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { StoreAccessError, stdioValidity } from "../../src/app/store-validity.js";

describe("store access deadlines", () => {
  const dir = mkdtempSync(join(tmpdir(), "nb-store-deadline-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("a nix-daemon --stdio that never answers is killed at the deadline", async () => {
    const pidFile = join(dir, "pid");
    const fake = join(dir, "nix-daemon");
    // Answers nothing, and records its pid so that the test can see it is gone afterwards.
    writeFileSync(fake, `#!/bin/sh\necho $$ > '${pidFile}'\nexec sleep 60\n`);
    chmodSync(fake, 0o755);
    const target = {
      root: null,
      storeDir: "/nix/store",
      realStoreDir: "/nix/store",
      stateDir: "/nix/var/nix",
      socketPath: "/nix/var/nix/daemon-socket/socket",
      viaDaemon: false,
      nixArgs: [],
      description: "test",
    };
    await assert.rejects(stdioValidity(target, fake, 300), (e: unknown) => {
      assert.ok(e instanceof StoreAccessError);
      assert.match((e as Error).message, /no handshake within 0\.3 s/);
      assert.doesNotMatch((e as Error).message, /\n/);
      return true;
    });
    const pid = Number(readFileSync(pidFile, "utf8").trim());
    // SIGKILL is asynchronous: give the kernel a moment, then the process must be gone.
    let alive = true;
    for (let i = 0; i < 50 && alive; i++) {
      try {
        process.kill(pid, 0);
        await new Promise((r) => setTimeout(r, 20));
      } catch {
        alive = false;
      }
    }
    assert.equal(alive, false, "the child was killed");
  });
});
