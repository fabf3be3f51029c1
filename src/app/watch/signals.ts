/**
 * Live signals from the build hook (src/app/builds-store.ts writes them): one small JSON file per
 * `cannot build on '<uri>'` seen in a real build, in `<watch state dir>/signals/`. watch takes them
 * (reads, then deletes each) and probes at once; a signal is never a quarantine on its own (sshd's
 * MaxStartups drops connections under load, so one failed connect proves nothing).
 *
 * The directory is in root's state directory; a file is read only when it is a regular file owned
 * by root, not a symlink, at most 4 KiB. At most MAX_TAKEN files are taken per call; others wait.
 */
import { closeSync, constants, fstatSync, openSync, readdirSync, readSync, unlinkSync } from "node:fs";
import { join } from "node:path";

export interface Signal {
  builder: string;
  at: number;
  reason: string;
}

const MAX_BYTES = 4096;
const MAX_TAKEN = 64;

function readSmall(file: string): string | null {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.uid !== 0 || st.size > MAX_BYTES) return null;
    const buf = Buffer.alloc(MAX_BYTES);
    const n = readSync(fd, buf, 0, MAX_BYTES, 0);
    return buf.toString("utf8", 0, n);
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

/** Take the waiting signals: parsed, then deleted (a file that is not a signal is deleted too). */
export function takeSignals(dir: string): Signal[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith(".json"));
  } catch {
    return [];
  }
  const out: Signal[] = [];
  for (const name of names.sort().slice(0, MAX_TAKEN)) {
    const file = join(dir, name);
    const text = readSmall(file);
    try {
      unlinkSync(file);
    } catch {
      // gone already, or not ours to delete: either way it is not taken twice by this process
    }
    if (text === null) continue;
    try {
      const v = JSON.parse(text) as Partial<Signal>;
      if (typeof v.builder === "string" && v.builder !== "" && v.builder.length < 4096)
        out.push({
          builder: v.builder,
          at: typeof v.at === "number" ? v.at : 0,
          reason: typeof v.reason === "string" ? v.reason.slice(0, 500) : "",
        });
    } catch {
      // not a signal
    }
  }
  return out;
}
