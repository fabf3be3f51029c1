/**
 * Live signals from the build hook (src/app/builds-store.ts writes them): one small JSON file per
 * `cannot build on '<uri>'` seen in a real build, in `<watch state dir>/signals/`. watch takes them
 * (reads, then deletes each) and probes at once; a signal is never a quarantine on its own (sshd's
 * MaxStartups drops connections under load, so one failed connect proves nothing).
 *
 * The directory is in root's state directory; a file is read only when it is a regular file owned
 * by root, not a symlink, at most 4 KiB. At most MAX_TAKEN files are taken per call; others wait.
 */
import { readdirSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { readOwnFile } from "../../os/read.js";

export interface Signal {
  builder: string;
  at: number;
  reason: string;
}

const MAX_BYTES = 4096;
const MAX_TAKEN = 64;

/** A signal file: root's, at most MAX_BYTES, never through a link. */
function readSmall(file: string): string | null {
  const r = readOwnFile(file, MAX_BYTES, (st) => st.uid === 0 && st.size <= MAX_BYTES);
  return r === null ? null : r.data.toString("utf8");
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
