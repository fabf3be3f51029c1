/** Small rendering helpers shared by the commands' human-readable output. */
import { formatOrigin, type Origin } from "../nix/origin.js";

export function originJson(o: Origin): Record<string, unknown> {
  switch (o.kind) {
    case "file":
      return { kind: "file", file: o.file, line: o.line, text: formatOrigin(o) };
    case "env":
      return { kind: "env", name: o.name, text: formatOrigin(o) };
    case "flag":
      return { kind: "flag", flag: o.flag, text: formatOrigin(o) };
    case "agent":
      return { kind: "agent", file: o.file, key: o.key, text: formatOrigin(o) };
    case "default":
      return { kind: "default", text: "default" };
  }
}

export function originsText(os: readonly Origin[]): string {
  if (os.length === 0) return "default";
  return os.map(formatOrigin).join(" + ");
}

/** Left-aligned columns; the last column is not padded. */
export function table(rows: string[][], indent = "  "): string {
  if (rows.length === 0) return "";
  const widths: number[] = [];
  for (const r of rows) {
    r.forEach((c, i) => {
      widths[i] = Math.max(widths[i] ?? 0, c.length);
    });
  }
  return rows
    .map(
      (r) =>
        indent +
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
          .join("  ")
          .trimEnd(),
    )
    .join("\n")
    .concat("\n");
}

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}
