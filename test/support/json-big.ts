/**
 * A JSON parser that keeps integers beyond 2^53 exact (as bigint), for comparing `nix show-config --json`
 * / `nix config show --json` output (2.8's `max-free` is 2^64-1) with the model's JSON form.
 */
export function parseJsonBig(text: string): unknown {
  let i = 0;
  const ws = () => {
    while (i < text.length && /\s/.test(text[i]!)) i++;
  };
  const val = (): unknown => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const o: Record<string, unknown> = Object.create(null);
      ws();
      if (text[i] === "}") {
        i++;
        return o;
      }
      for (;;) {
        ws();
        const k = val() as string;
        ws();
        i++; // :
        o[k] = val();
        ws();
        if (text[i++] === "}") return o;
      }
    }
    if (c === "[") {
      i++;
      const a: unknown[] = [];
      ws();
      if (text[i] === "]") {
        i++;
        return a;
      }
      for (;;) {
        a.push(val());
        ws();
        if (text[i++] === "]") return a;
      }
    }
    if (c === '"') {
      const start = i;
      i++;
      while (text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
      i++;
      return JSON.parse(text.slice(start, i));
    }
    const m = /^(-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null)/.exec(text.slice(i, i + 64))!;
    i += m[0].length;
    const s = m[0];
    if (s === "true") return true;
    if (s === "false") return false;
    if (s === "null") return null;
    if (/^-?[0-9]+$/.test(s)) {
      const b = BigInt(s);
      return b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b;
    }
    return Number(s);
  };
  return val();
}
