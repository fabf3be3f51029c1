/**
 * File access under an injectable root directory, so discovery runs against fixture trees.
 * Paths in and out are host paths ("/etc/systemd/system/x.service"); the root is only a reading
 * prefix. Absolute symlink targets are resolved inside the root too (NixOS links
 * /etc/systemd/system/*.service into /nix/store).
 */

import { lstatSync, readdirSync, readFileSync, readlinkSync, type Stats, statSync } from "node:fs";
import { posix } from "node:path";
import { readBounded } from "../os/read.js";

export class FsRoot {
  readonly root: string;

  constructor(root = "/") {
    this.root = root === "" ? "/" : root.replace(/\/+$/, "") || "/";
  }

  /** The real path on this machine for a host path (no symlink resolution). */
  onDisk(hostPath: string): string {
    const p = posix.normalize(`/${hostPath}`);
    return this.root === "/" ? p : this.root + p;
  }

  /**
   * Resolve symlinks component by component, keeping absolute targets inside the root.
   * Returns the resolved host path, or null when a component is missing or links loop.
   */
  resolve(hostPath: string): string | null {
    let pending = posix.normalize(`/${hostPath}`).split("/").filter(Boolean);
    let done: string[] = [];
    let hops = 0;
    while (pending.length > 0) {
      const part = pending.shift()!;
      if (part === "..") {
        done.pop();
        continue;
      }
      if (part === ".") continue;
      const candidate = `/${[...done, part].join("/")}`;
      let st: Stats;
      try {
        st = lstatSync(this.onDisk(candidate));
      } catch {
        return null;
      }
      if (st.isSymbolicLink()) {
        if (++hops > 40) return null;
        const target = readlinkSync(this.onDisk(candidate));
        const parts = target.split("/").filter(Boolean);
        if (target.startsWith("/")) done = [];
        pending = [...parts, ...pending];
        continue;
      }
      done.push(part);
    }
    return `/${done.join("/")}`;
  }

  readText(hostPath: string): string | null {
    const r = this.resolve(hostPath);
    if (r === null) return null;
    // bounded: a FIFO or device planted at a unit's or config's path never blocks nor exhausts memory
    const b = readBounded(this.onDisk(r));
    return b.ok ? b.text : null;
  }

  readBytes(hostPath: string): Buffer | null {
    const r = this.resolve(hostPath);
    if (r === null) return null;
    try {
      return readFileSync(this.onDisk(r));
    } catch {
      return null;
    }
  }

  /** Target of a symlink, as written (host path semantics), or null if not a symlink. */
  linkTarget(hostPath: string): string | null {
    try {
      const p = this.onDisk(hostPath);
      return lstatSync(p).isSymbolicLink() ? readlinkSync(p) : null;
    } catch {
      return null;
    }
  }

  /** Entries of a directory (names), sorted; [] when absent. */
  list(hostPath: string): string[] {
    const r = this.resolve(hostPath);
    if (r === null) return [];
    try {
      return readdirSync(this.onDisk(r)).sort();
    } catch {
      return [];
    }
  }

  stat(hostPath: string): Stats | null {
    const r = this.resolve(hostPath);
    if (r === null) return null;
    try {
      return statSync(this.onDisk(r));
    } catch {
      return null;
    }
  }

  exists(hostPath: string): boolean {
    return this.stat(hostPath) !== null;
  }
}

export interface PasswdEntry {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly home: string;
  readonly shell: string;
}

/** Look a user up in <root>/etc/passwd. macOS keeps most users elsewhere (Directory Services): null there. */
export function lookupPasswd(fs: FsRoot, user: string): PasswdEntry | null {
  const text = fs.readText("/etc/passwd");
  if (text === null) return null;
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 7 || f[0] !== user) continue;
    return { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5]!, shell: f[6]! };
  }
  return null;
}
