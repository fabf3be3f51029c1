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

/** The C library's text for an errno code, as Nix prints it after a path (glibc wording). */
const STRERROR: Record<string, string> = {
  ENOENT: "No such file or directory",
  EACCES: "Permission denied",
  EPERM: "Operation not permitted",
  EISDIR: "Is a directory",
  ENOTDIR: "Not a directory",
  ELOOP: "Too many levels of symbolic links",
  ENAMETOOLONG: "File name too long",
  EIO: "Input/output error",
  EMFILE: "Too many open files",
  ENFILE: "Too many open files in system",
  ENXIO: "No such device or address",
  ENODEV: "No such device",
  EINVAL: "Invalid argument",
  EBUSY: "Device or resource busy",
  ETXTBSY: "Text file busy",
  EOVERFLOW: "Value too large for defined data type",
};

export function strerror(code: string): string {
  return STRERROR[code] ?? code;
}
