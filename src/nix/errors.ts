/**
 * A structured error that carries the exact text Nix would print (without the `error: ` prefix),
 * plus where we found the problem. Parsers in src/nix never throw anything else.
 */
export type NixErrorKind = "usage" | "format" | "system";

export class NixError extends Error {
  readonly kind: NixErrorKind;
  /** Nix's own message, exactly as Nix prints it after `error: `. */
  readonly nixMessage: string;
  readonly file: string | null;
  readonly line: number | null;

  constructor(
    kind: NixErrorKind,
    nixMessage: string,
    where: { file?: string | null; line?: number | null } = {},
  ) {
    super(nixMessage);
    this.name = "NixError";
    this.kind = kind;
    this.nixMessage = nixMessage;
    this.file = where.file ?? null;
    this.line = where.line ?? null;
  }

  toJSON(): { message: string; kind: NixErrorKind; file: string | null; line: number | null } {
    return { message: this.nixMessage, kind: this.kind, file: this.file, line: this.line };
  }
}
