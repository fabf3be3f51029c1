/** Where a value came from: a file and line, the NIX_CONFIG variable, a command-line flag, or a default. */
export type Origin =
  | { readonly kind: "file"; readonly file: string; readonly line: number }
  | { readonly kind: "env"; readonly name: string }
  | { readonly kind: "flag"; readonly flag: string }
  | { readonly kind: "agent"; readonly file: string; readonly key: string }
  | { readonly kind: "default" };

export function formatOrigin(o: Origin): string {
  switch (o.kind) {
    case "file":
      return `${o.file}:${o.line}`;
    case "env":
      return `$${o.name}`;
    case "flag":
      return o.flag;
    case "agent":
      return `${o.file} (${o.key})`;
    case "default":
      return "default";
  }
}
